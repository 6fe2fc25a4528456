"""The console in a real browser: Playwright driving Debian's Chromium against a real
``govern serve``. One server and one browser for the module; the steps run in order, as a
steward's first five minutes would (docs/console.md): sign in, read the matrix, run a dry run,
filter the audit, accept a classification suggestion, look at budgets, fleet and monitoring.

Screenshots of each page go to ``$GOVERN_CONSOLE_SCREENSHOTS`` (docs/console/ when regenerating
the documentation's images) or a temporary folder. No browser is ever downloaded: Chromium is
``/usr/bin/chromium`` (``make install`` installs the Debian package)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.conftest import edit
from tests.gateway import World, start_server, stop_server
from tests.leaks import Leaks

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("console-browser")]  # one browser, steps in order

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

if not CHROMIUM.exists():  # pragma: no cover - make install provides it
    pytest.skip("Debian's chromium is not installed (make install installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def world(demo_world, tmp_path_factory) -> World:
    d = tmp_path_factory.mktemp("console-browser") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    return World(d, json.loads((d / "keys.json").read_text()))


@pytest.fixture(scope="module")
def server(world):
    s = start_server(world, "--pg-port", "0", "--flight-port", "0")
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("GOVERN_CONSOLE_SCREENSHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1360, "height": 860}, base_url=server.url)
        tab = context.new_page()
        tab.csp_errors = []  # type: ignore[attr-defined]
        tab.on("console", lambda m: tab.csp_errors.append(m.text)  # type: ignore[attr-defined]
               if "Content Security Policy" in m.text or "Refused to" in m.text else None)
        tab.on("dialog", lambda d: d.accept())  # the Accept button asks first
        tab.history = []  # type: ignore[attr-defined]  # what the tab did, for a failure's message
        tab.on("framenavigated", lambda f: tab.history.append(f.url) if f == tab.main_frame else None)  # type: ignore[attr-defined]
        tab.on("crash", lambda _: tab.history.append("renderer crashed"))  # type: ignore[attr-defined]
        yield tab
        context.close()
        browser.close()


def _open(page, path: str) -> None:
    """Start a step at its page's address, as a bookmark would. Steps share the signed-in tab
    (its session cookie), not the page the last step left: CI once found the tab on about:blank
    between two steps, and a step then failed for what the step before it had left behind."""
    page.goto(path)
    assert page.url.endswith(path) and page.locator("header .who .principal").count() == 1, (
        f"{path}: the tab is at {page.url}, not a signed-in console page; its navigations: {page.history}")


def _shot(page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def _traffic(server, world: World) -> None:
    """What a morning at the gateway leaves in the audit log and the budget ledger."""
    alice = {**world.auth("alice"), "X-Purpose": "analytics"}
    bob = {**world.auth("bob"), "X-Purpose": "research"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(3):
            assert c.get("/v1/datasets/patients/rows", params={"limit": 20, "columns": "zip,region,diagnosis"},
                         headers=alice).status_code == 200
        assert c.get("/v1/datasets/encounters/rows", params={"limit": 20}, headers=bob).status_code == 200
        assert c.get("/v1/datasets/patients/rows", params={"limit": 5}, headers={
            **world.auth("alice"), "X-Purpose": "treatment"}).status_code == 403
        for eps in (0.2, 0.3, 0.1):
            assert c.post("/v1/datasets/patients/dp", json={"aggregates": [{"function": "count"}], "epsilon": eps},
                          headers=bob).status_code == 200


def test_1_sign_in(page, server, world, shots) -> None:
    _traffic(server, world)
    page.goto("/console")
    _shot(page, shots, "signin")
    page.fill("input[name=token]", world.keys["carol"])
    page.fill("input[name=purpose]", "governance")
    page.click("#signin button[type=submit]")
    page.wait_for_url("**/console/catalog")
    assert page.inner_text(".who .principal") == "carol"
    cookie = next(c for c in page.context.cookies() if c["name"] == "govern_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the session
    row = page.locator("tr.unclassified", has_text="phone")
    assert row.count() == 1 and "phone number" in row.inner_text()
    _shot(page, shots, "catalog")


def test_2_read_the_matrix(page, shots) -> None:
    _open(page, "/console/catalog")
    page.click("nav >> text=Effective access")
    page.wait_for_url("**/console/access")
    table = page.locator("table.matrix[data-dataset=patients]")
    alice = table.locator("tr", has=page.locator("th", has_text="alice")).first
    cells = alice.locator("td.cell")
    headers = table.locator("thead th.col").all_inner_texts()
    ssn = cells.nth(headers.index("ssn"))
    assert "withhold" in (ssn.get_attribute("class") or "")
    assert "catalog.yaml:" in (ssn.get_attribute("title") or "") or "policy.csv:" in (ssn.get_attribute("title") or "")
    assert "region" in alice.locator("td.rows").inner_text()
    page.select_option("select[name=for_purpose]", "analytics")  # the select applies at once (console.js)
    page.wait_for_url(re.compile(r".*for_purpose=analytics.*"))
    assert page.locator("table.matrix[data-dataset=patients] tbody tr").count() >= 1
    page.goto("/console/access")
    _shot(page, shots, "access")


def test_3_run_a_dry_run(page, world, shots) -> None:
    proposed = world.directory / "proposed"
    shutil.copytree(world.directory / "policies", proposed)
    edit(proposed / "policy.csv", "p, analyst, group:clinical, read, analytics, allow",
         "p, analyst, dataset:encounters, read, analytics, allow")
    _open(page, "/console/access")
    page.click("nav >> text=Policy dry run")
    page.fill("input[name=folder]", "proposed")
    page.click("#dry-run button[type=submit]")
    summary = page.locator("#dry-run-summary")
    summary.wait_for()
    assert "Pipelines that would break: alice" in summary.inner_text()
    refused = page.locator("section", has=page.locator("h2", has_text="Requests that would be refused"))
    assert "alice" in refused.inner_text() and "patients" in refused.inner_text()
    _shot(page, shots, "dry-run")


def test_4_filter_the_audit(page, shots) -> None:
    _open(page, "/console/dry-run")
    page.click("nav >> text=Audit")
    assert "Hash chain verified" in page.inner_text("#chain")
    page.fill("#audit-filters input[name=principal]", "alice")
    page.select_option("#audit-filters select[name=outcome]", "denied")
    page.wait_for_url(re.compile(r".*outcome=denied.*"))
    rows = page.locator("#audit-records tbody tr")
    assert rows.count() >= 1
    for text in rows.all_inner_texts():
        assert "alice" in text and "denied" in text
    _shot(page, shots, "audit")


def test_5_accept_a_classification_suggestion(page, world, shots) -> None:
    _open(page, "/console/audit")
    page.click("nav >> text=Catalog")
    version = page.inner_text(".who .version")
    page.locator("tr.unclassified", has_text="phone").locator("form.accept button").click()
    page.wait_for_url(re.compile(r".*accepted=patients\.phone.*"))
    assert page.locator("tr.unclassified", has_text="phone").count() == 0
    assert "contact" in page.locator("tr", has=page.locator("code", has_text=re.compile("^phone$"))).inner_text()
    assert page.inner_text(".who .version") != version  # the gateway serves the edited catalog
    assert "phone: {tags: [contact]" in (world.directory / "policies" / "catalog.yaml").read_text()


def test_6_budgets_fleet_and_monitoring(page, world, shots) -> None:
    _open(page, "/console/catalog")
    page.click("nav >> text=Budgets")
    assert "bob" in page.inner_text("#budgets") and page.locator("svg.plot").count() >= 1
    _shot(page, shots, "budgets")
    page.click("nav >> text=Fleet")
    assert "this one" in page.inner_text("#fleet")
    _shot(page, shots, "fleet")
    page.click("nav >> text=Monitoring")
    with page.expect_navigation():
        page.select_option("select[name=dataset]", "patients")  # applies at once (console.js)
    with page.expect_navigation():
        page.click("#profile-now button")
    path = world.directory / "data" / "patients.parquet"
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.not_equal(table.column("region"), "EU")), path)  # a new data version
    with page.expect_navigation():
        page.click("#profile-now button")
    assert re.search(r"/console/monitoring\?dataset=patients$", page.url)
    assert "Drift against the baseline version" in page.inner_text("main")
    assert page.locator("svg.plot").count() >= 4
    _shot(page, shots, "monitoring")


def test_7_no_page_broke_the_csp_or_showed_a_raw_value(page, world) -> None:
    assert page.csp_errors == []  # type: ignore[attr-defined]
    leaks = Leaks.from_world(world.directory)
    for name in ("catalog", "access", "dry-run", "audit", "budgets", "fleet", "monitoring"):
        page.goto(f"/console/{name}")
        assert leaks.found_in(page.content()) == [], name
    page.click("header form button.link")  # sign out
    page.wait_for_url("**/console")
    assert page.locator("input[name=token]").count() == 1
