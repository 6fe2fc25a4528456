"""The console over a real app (in process): sign-in, sessions, CSRF, the headers, scope, and
that every page view and action is one audit record. Browser tests are in test_browser.py."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.conftest import edit
from tests.console.helpers import PAGES, form_token, records, sign_in
from tests.gateway import make_client


@pytest.fixture
def console(world):
    with make_client(world) as client:
        yield client, world


def test_sign_in_gives_a_signed_http_only_strict_session_and_every_page_a_strict_csp(console) -> None:
    client, world = console
    page = client.get("/console")
    assert page.status_code == 401 and 'name="token"' in page.text  # the sign-in form
    pre = page.headers["set-cookie"]
    assert "HttpOnly" in pre and "SameSite=strict" in pre and "Path=/console" in pre
    r = client.post("/console/signin", data={"token": world.keys["carol"], "purpose": "governance",
                                             "csrf": form_token(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/catalog"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("govern_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert world.keys["carol"] not in value and re.fullmatch(r"[\w-]+\.[0-9a-f]{64}", value)  # an id and its MAC
    [signin] = records(client, r.headers["x-request-id"])
    assert (signin.action, signin.outcome, signin.principal, signin.purpose) == ("console_signin", "ok", "carol",
                                                                                 "governance")
    assert world.keys["carol"] not in str(signin)
    for name in PAGES:
        r = client.get(f"/console/{name}")
        assert r.status_code == 200, (name, r.text[:500])
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
        # nothing a strict CSP would block, and nothing from another origin
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), name
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", r.text), name
        assert not re.search(r"(src|href)=\"(https?:)?//", r.text), name
        [record] = records(client, r.headers["x-request-id"])
        assert (record.action, record.outcome, record.principal, record.extra["route"]) == (
            "console_view", "ok", "carol", f"console.{name}")
    for path in ("/console/static/console.css", "/console/static/console.js"):
        r = client.get(path)
        assert r.status_code == 200 and r.content and records(client, r.headers["x-request-id"]) == []


def test_a_forged_or_altered_session_cookie_is_no_session(console) -> None:
    client, world = console
    sign_in(client, world)
    good = client.cookies.get("govern_console")
    sid, mac = good.split(".")
    for forged in (f"{sid}.{'0' * 64}", f"{sid[:-1]}x.{mac}", sid, "x" * 20):
        client.cookies.set("govern_console", forged, path="/console")
        r = client.get("/console/catalog")
        assert r.status_code == 401 and 'name="token"' in r.text
        assert records(client, r.headers["x-request-id"])[0].outcome == "denied"
    client.cookies.set("govern_console", good, path="/console")
    assert client.get("/console/catalog").status_code == 200


def test_posts_without_the_session_csrf_token_are_refused_and_audited(console) -> None:
    client, world = console
    csrf = sign_in(client, world)
    catalog = (world.directory / "policies" / "catalog.yaml").read_text()
    for form in ({"dataset": "patients", "column": "phone"}, {"dataset": "patients", "column": "phone", "csrf": "x"}):
        r = client.post("/console/catalog/accept", data=form, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
        [record] = records(client, r.headers["x-request-id"])
        assert (record.action, record.outcome, record.status) == ("console_accept", "denied", 403)
    for path in ("/console/dry-run", "/console/monitoring/profile", "/console/signout"):
        assert client.post(path, data={"folder": "policies", "dataset": "patients"}).status_code == 403
    assert (world.directory / "policies" / "catalog.yaml").read_text() == catalog
    assert client.post("/console/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.get("/console/catalog").status_code == 401  # the session is gone


def test_the_sign_in_form_needs_its_own_double_submit_token(console) -> None:
    client, world = console
    client.get("/console")
    r = client.post("/console/signin", data={"token": world.keys["carol"], "purpose": "governance", "csrf": "forged"},
                    follow_redirects=False)
    assert r.status_code == 403 and "govern_console=" not in r.headers.get("set-cookie", "")
    client.cookies.clear()
    r = client.post("/console/signin", data={"token": world.keys["carol"], "purpose": "governance", "csrf": "x"})
    assert r.status_code == 403


@pytest.mark.parametrize(("who", "purpose", "status"), [("alice", "analytics", 403), ("eve", "governance", 403),
                                                         ("carol", "analytics", 403)])
def test_only_principals_who_administer_get_in(console, who: str, purpose: str, status: int) -> None:
    client, world = console
    page = client.get("/console")
    r = client.post("/console/signin", data={"token": world.keys[who], "purpose": purpose,
                                             "csrf": form_token(page.text)}, follow_redirects=False)
    assert r.status_code == status and "govern_console=" not in r.headers.get("set-cookie", "")
    [record] = records(client, r.headers["x-request-id"])
    assert (record.principal, record.outcome) == (who, "denied")
    r = client.get("/console/catalog", headers={**world.auth(who), "X-Purpose": purpose})
    assert r.status_code == 403


def test_a_revoked_key_ends_its_console_sessions_at_the_next_click(console) -> None:
    client, world = console
    sign_in(client, world)
    path = world.directory / "policies" / "principals.yaml"
    text = path.read_text()
    start = text.index("  carol:")
    block = text[start:text.index("\n  dave:")]
    path.write_text(text.replace(block, re.sub(r"\n    api_keys:\n(    - .*\n?|      .*\n?)+", "\n", block + "\n")
                                 .rstrip("\n")))
    assert client.app.state.gateway.reloader.check_now().ok
    r = client.get("/console/catalog")
    assert r.status_code == 401 and "invalid API key" in r.text


def test_a_steward_sees_only_the_datasets_it_administers(console) -> None:
    client, world = console
    edit(world.directory / "policies" / "policy.csv", "p, steward, group:clinical, administer, governance, allow",
         "p, steward, dataset:patients, administer, governance, allow")
    gw = client.app.state.gateway
    assert gw.reloader.check_now().ok
    alice = {**world.auth("alice"), "X-Purpose": "analytics"}
    assert client.get("/v1/datasets/encounters/rows", params={"limit": 3, "format": "csv"}, headers=alice).status_code == 200
    sign_in(client, world)
    for name in PAGES:
        text = client.get(f"/console/{name}").text
        assert "encounters" not in text, name
    r = client.get("/console/audit", params={"dataset": "encounters"})
    assert r.status_code == 400 and "encounters" in r.text  # it names what you asked for, nothing else
    r = client.get("/console/monitoring", params={"dataset": "encounters"})
    assert r.status_code == 400


def test_the_matrix_is_the_plan_compilers_answer(console) -> None:
    client, world = console
    gw = client.app.state.gateway
    from govern.policy.model import local_principal

    sign_in(client, world)
    text = client.get("/console/access", params={"dataset": "patients", "for_purpose": "analytics"}).text
    alice = gw.governor.plan(local_principal(gw.governor.state.policy, "alice"), "patients", "analytics")
    row = re.search(r"<th scope=\"row\">alice</th><td>analytics</td>(.*?)</tr>", text, re.S).group(1)
    cells = re.findall(r'<td class="cell (\w+)" title="([^"]*)">([^<]*)</td>', row)
    assert len(cells) == len(alice.columns)
    for (action, title, label), col in zip(cells, alice.columns, strict=True):
        assert action == col.action
        assert label == (col.mask.function if col.mask else col.action)
        assert str(col.reason.source or "") in title.replace("&#39;", "'")
    assert "region IN" in row or "region" in row  # alice's row filter, her attribute bound
    roles = client.get("/console/access", params={"kind": "roles", "clearance": "restricted"}).text
    assert "role:analyst" in roles and "role:steward" in roles


def test_a_dry_run_diffs_the_matrix_and_replays_recent_requests(console) -> None:
    client, world = console
    alice = {**world.auth("alice"), "X-Purpose": "analytics"}
    bob = {**world.auth("bob"), "X-Purpose": "research"}
    for _ in range(3):
        assert client.get("/v1/datasets/patients/rows", params={"limit": 5, "columns": "zip,region"},
                          headers=alice).status_code == 200
    assert client.get("/v1/datasets/patients/rows", params={"limit": 5, "columns": "zip,charges"},
                      headers=bob).status_code == 200
    proposed = world.directory / "proposed"
    shutil.copytree(world.directory / "policies", proposed)
    edit(proposed / "policy.csv", "p, analyst, group:clinical, read, analytics, allow",
         "p, analyst, dataset:encounters, read, analytics, allow")
    edit(proposed / "policy.csv", "p, data-scientist, tag:phi, read, research, deny",
         "p, data-scientist, tag:phi, read, research, deny\np, data-scientist, tag:financial, unmask, research, allow")
    csrf = sign_in(client, world)
    r = client.post("/console/dry-run", data={"folder": "proposed", "csrf": csrf})
    assert r.status_code == 200, r.text
    text = r.text
    summary = re.search(r'id="dry-run-summary">(.*?)</section>', text, re.S).group(1)
    assert "Pipelines that would break: alice" in summary
    refused = re.search(r"Requests that would be refused</h2>(.*?)</section>", text, re.S).group(1)
    assert re.search(r"<td>alice</td><td>analytics</td><td>patients</td><td>read</td><td>3</td>", refused)
    changed = re.search(r"Requests that would get other columns</h2>(.*?)</section>", text, re.S).group(1)
    assert "<td>bob</td>" in changed and "<code>charges</code>" in changed and 'class="change gain"' in changed
    diff = re.search(r"Matrix diff</h2>(.*?)</section>", text, re.S).group(1)
    assert re.search(r'<tr class="loss"><td>alice</td><td>analytics</td><td>patients</td><td><code>\(dataset\)</code>'
                     r"</td><td>granted</td><td>denied</td>", diff)
    [record] = records(client, r.headers["x-request-id"])
    assert record.action == "console_dry_run" and record.extra["would_refuse"] >= 1
    assert client.app.state.gateway.governor.state.policy.version == record.policy_version  # nothing installed
    for outside in ("/etc", "../..", "policies/../../..", "nope"):
        r = client.post("/console/dry-run", data={"folder": outside, "csrf": csrf})
        assert r.status_code == 400, outside
    edit(proposed / "policy.csv", "p, analyst", "p, analyst, broken")
    r = client.post("/console/dry-run", data={"folder": "proposed", "csrf": csrf})
    assert r.status_code == 200 and "does not load" in r.text


def test_accepting_a_suggestion_writes_catalog_yaml_and_installs_it(console) -> None:
    client, world = console
    gw = client.app.state.gateway
    before = gw.governor.state.policy.version
    csrf = sign_in(client, world)
    page = client.get("/console/catalog").text
    row = re.search(r'<tr class="unclassified">\s*<td><code>phone</code>(.*?)</tr>', page, re.S).group(1)
    assert "phone number" in row and "Accept" in row
    r = client.post("/console/catalog/accept", data={"dataset": "patients", "column": "phone", "csrf": csrf},
                    follow_redirects=False)
    assert r.status_code == 303
    catalog = (world.directory / "policies" / "catalog.yaml").read_text()
    assert re.search(r"\n      phone: \{tags: \[contact\], level: confidential\}  # govern classify", catalog)
    assert gw.governor.state.policy.version != before
    [record] = records(client, r.headers["x-request-id"])
    assert (record.action, record.dataset, record.extra["column"]) == ("console_accept", "patients", "phone")
    assert "+      phone:" in record.extra["catalog_patch"]
    assert '<tr class="unclassified">' not in client.get("/console/catalog").text
    r = client.post("/console/catalog/accept", data={"dataset": "patients", "column": "phone", "csrf": csrf})
    assert r.status_code == 400 and "already in the catalog" in r.text


def test_profiles_drift_plots_and_the_gateways_metrics(console) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    client, world = console
    csrf = sign_in(client, world)
    assert "No profile" in client.get("/console/monitoring").text
    r = client.post("/console/monitoring/profile", data={"dataset": "patients", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    [record] = records(client, r.headers["x-request-id"])
    assert record.action == "console_profile" and record.rows and record.extra["data_version"]
    path = world.directory / "data" / "patients.parquet"
    table = pq.read_table(path)
    charges = table.column("charges").to_numpy(zero_copy_only=False)
    shifted = np.where(np.isnan(charges), charges, charges * 2 + 1_000)
    pq.write_table(table.set_column(table.schema.get_field_index("charges"), "charges", pa.array(shifted)), path)
    assert client.post("/console/monitoring/profile", data={"dataset": "patients", "csrf": csrf}).status_code == 200
    page = client.get("/console/monitoring", params={"dataset": "patients"}).text
    assert "Drift against the baseline version" in page and page.count("<svg") >= 4
    drift = re.search(r"Columns against the baseline.*?</table>", page, re.S).group(0)
    assert re.search(r'<tr class="loss"><td><code>charges</code>', drift)
    metrics = client.get("/metrics").text
    assert re.search(r'govern_drift_column\{against="baseline",column="charges",dataset="patients",view="\w+"\} 1.0',
                     metrics)
    # make the latest version the baseline of the alerts: nothing left to compare against it
    latest = re.findall(r'name="data_version" value="(\w+)"', page)
    assert len(latest) == 1  # the one that is not the baseline yet
    r = client.post("/console/monitoring/baseline", data={"dataset": "patients", "data_version": latest[0],
                                                          "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert records(client, r.headers["x-request-id"])[0].action == "console_baseline"
    assert 'against="baseline"' not in client.get("/metrics").text
    assert "Drift against the baseline version" not in client.get("/console/monitoring",
                                                                   params={"dataset": "patients"}).text
    r = client.post("/console/monitoring/baseline", data={"dataset": "patients", "data_version": "0" * 16,
                                                          "csrf": csrf})
    assert r.status_code == 404


def test_an_oidc_bearer_signs_in_and_its_expiry_ends_the_session(world) -> None:
    import json
    import time

    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.identity.conftest import public_jwk
    from tests.server.test_oidc import AUDIENCE, ISSUER, token

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (world.directory / "jwks.json").write_text(json.dumps({"keys": [public_jwk(key, "k-1", use="sig")]}))
    with (world.directory / "govern.yaml").open("a") as fh:
        fh.write(f"oidc:\n  issuer: '{ISSUER}'\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n"
                 "  roles_claim: groups\n  attribute_claims: {clearance: clearance}\n  leeway_seconds: 0\n")
    with make_client(world) as client:
        bearer = token(key, groups=["steward"], clearance="confidential", exp=int(time.time()) + 3)
        page = client.get("/console")
        r = client.post("/console/signin", data={"token": bearer, "purpose": "governance",
                                                 "csrf": form_token(page.text)}, follow_redirects=False)
        assert r.status_code == 303, r.text
        r = client.get("/console/access", params={"dataset": "patients"})
        assert r.status_code == 200 and "carol" in r.text
        [record] = records(client, r.headers["x-request-id"])
        assert record.principal.endswith(":frank") and bearer not in str(record)
        time.sleep(4)
        r = client.get("/console/catalog")
        assert r.status_code == 401 and "expired" in r.text


def test_markup_in_what_callers_send_is_shown_as_text(console) -> None:
    """A caller controls text that lands in audit records (an unknown column's name is echoed in
    the refusal, a purpose is recorded as declared): the audit page must render it inert."""
    client, world = console
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    r = client.get("/v1/datasets/patients/rows", params={"columns": f"zip,{evil}", "limit": 1},
                   headers={**world.auth("alice"), "X-Purpose": "analytics"})
    assert r.status_code in (400, 403, 404)
    r = client.get("/v1/datasets", headers={**world.auth("alice"), "X-Purpose": evil})
    assert r.status_code == 403
    sign_in(client, world)
    recorded = [r for r in client.app.state.gateway.audit.latest(50) if evil in (r.detail or "") or evil == r.purpose]
    assert any(r.dataset == "patients" for r in recorded)  # the attacker's text is in the log, on your dataset
    page = client.get("/console/audit", params={"principal": "alice"}).text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text


def test_a_dry_run_cannot_read_another_datasets_schema_through_a_moved_location(console) -> None:
    """A steward of patients only proposes a policy whose ``patients`` reads encounters' file:
    the dry run must not show encounters' columns (nor anything computed from that file)."""
    client, world = console
    edit(world.directory / "policies" / "policy.csv", "p, steward, group:clinical, administer, governance, allow",
         "p, steward, dataset:patients, administer, governance, allow")
    assert client.app.state.gateway.reloader.check_now().ok
    proposed = world.directory / "proposed"
    shutil.copytree(world.directory / "policies", proposed)
    edit(proposed / "catalog.yaml", "    location: patients.parquet", "    location: encounters.parquet")
    csrf = sign_in(client, world)
    r = client.post("/console/dry-run", data={"folder": "proposed", "csrf": csrf})
    assert r.status_code == 200, r.text[:500]
    assert "department" not in r.text and "encounters" not in r.text, r.text[:3000]
