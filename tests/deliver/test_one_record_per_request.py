"""The lifecycle's structural promise, checked on every surface: each refusal and each data
response leaves exactly one audit record.

HTTP: every route the app registers is walked (a route without an example here fails the
test, so a new route cannot skip it): refused before authentication, refused after it, and
served — each response's request id must name exactly one record, with the outcome its status
implies. The PostgreSQL wire: every message type the server handles is sent as a refusal and as
a success.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from govern.client import Client
from govern.server.exchange import OPERATIONAL
from tests.gateway import World, make_client
from tests.pgwire.raw import Raw, bind, cstr, execute, fields, parse
from tests.privacy.synthetic.conftest import fitted_world  # noqa: F401  (fixture)

Route = tuple[str, str]


def registered_routes(app: Any) -> set[Route]:
    """(method, path) of every route the app serves, HEAD aside."""
    out: set[Route] = set()
    for path, item in app.openapi()["paths"].items():
        out |= {(method.upper(), path) for method in item}
    for route in app.routes:  # routes left out of the schema (FastAPI ≥ 0.165 nests included routers)
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for ctx in contexts:
            for method in getattr(ctx, "methods", None) or ():
                if method != "HEAD":
                    out.add((method, ctx.path))
    return out


class Recorder(httpx.BaseTransport):
    """Every response that went through, with the request id the gateway gave it."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str, str, int, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.seen.append((request.method, request.url.path, response.status_code,
                          response.headers.get("x-request-id", "")))
        return response


@dataclass
class Example:
    served: Callable[[Client, TestClient, World], None]
    path: dict[str, str] = field(default_factory=dict)  # path parameters for the refusals
    body: dict[str, Any] | None = None  # a body for the refusals (POST)
    query: dict[str, str] = field(default_factory=dict)  # query parameters for the refusals
    # the refusals' statuses: nobody, then alice under a purpose she does not have (a route that
    # authenticates by a ticket answers 401 without one, whoever asks)
    refusals: tuple[int, int] = (401, 403)


def _rows(c: Client, _t: TestClient, _w: World) -> None:
    assert c.read("patients", columns=["zip"], limit=5).num_rows == 5


def _reidentify(c: Client, t: TestClient, w: World) -> None:
    carol = Client("http://testserver", w.keys["carol"], "governance", transport=c._http._transport)
    token = carol.read("patients", columns=["patient_id"], limit=1).column(0)[0].as_py()
    carol.send("POST", "/v1/datasets/patients/reidentify", json={"tokens": [token]}, idempotent=False)


def _scan(c: Client, _t: TestClient, _w: World) -> None:
    manifest = c.send("POST", "/v1/datasets/patients/scan", json={"columns": ["zip"]}, idempotent=False).json()
    first = manifest["fragments"][0]
    holder = Client("http://testserver", first["ticket"], transport=c._http._transport)  # the ticket only
    assert holder.send("GET", first["url"]).content


def _he_view(c: Client, _t: TestClient, _w: World) -> None:
    c.encrypted_view("patients", ["charges"], limit=50)


def _he_release(c: Client, _t: TestClient, _w: World) -> None:
    view = c.encrypted_view("patients", ["charges"], limit=50)
    c.he_release(view, {"op": "sum", "column": "charges"}, 0.1)


def _he_query(c: Client, _t: TestClient, _w: World) -> None:
    c.encrypted_query("patients", {"charges": 0.001}, epsilon=0.1, limit=50)


def _synthetic(c: Client, _t: TestClient, _w: World) -> None:
    assert c.synthetic("patients", rows=10, seed=1).num_rows > 0


def _synthetic_report(c: Client, _t: TestClient, _w: World) -> None:
    table = c.synthetic("patients", rows=10, seed=1)
    report = json.loads(table.schema.metadata[b"govern.synthetic.report"])
    c.send("GET", f"/v1/datasets/patients/synthetic/reports/{report['id']}")


def _steward(c: Client, w: World) -> httpx.Client:
    """carol (governance) on the console, with a bearer header, through the recording transport."""
    return httpx.Client(base_url="http://testserver", transport=c._http._transport, follow_redirects=False,
                        headers={**w.auth("carol"), "X-Purpose": "governance"})


def _page(path: str) -> Callable[[Client, TestClient, World], None]:
    def served(c: Client, _t: TestClient, w: World) -> None:
        assert _steward(c, w).get(path).status_code == 200
    return served


def _console_post(path: str, form: dict[str, str], status: int = 303) -> Callable[[Client, TestClient, World], None]:
    def served(c: Client, _t: TestClient, w: World) -> None:
        r = _steward(c, w).post(path, data=form)
        assert r.status_code == status, r.text
    return served


def _console_baseline(c: Client, _t: TestClient, w: World) -> None:
    steward = _steward(c, w)
    assert steward.post("/console/monitoring/profile", data={"dataset": "patients"}).status_code == 303
    import re

    version = re.search(r'name="data_version" value="(\w+)"', steward.get("/console/monitoring",
                                                                       params={"dataset": "patients"}).text)
    if version is None:  # the only version is the baseline already: make it so again through the form's twin
        version = re.search(r"<code>(\w{16})</code>", steward.get("/console/monitoring",
                                                                 params={"dataset": "patients"}).text)
    r = steward.post("/console/monitoring/baseline", data={"dataset": "patients", "data_version": version.group(1)})
    assert r.status_code == 303, r.text


def _console_signin(c: Client, _t: TestClient, w: World) -> None:
    """The browser's way: the sign-in page (a 401), then the form with its double-submit token."""
    import re

    browser = httpx.Client(base_url="http://testserver", transport=c._http._transport, follow_redirects=False)
    page = browser.get("/console")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = browser.post("/console/signin", data={"token": w.keys["carol"], "purpose": "governance", "csrf": token})
    assert r.status_code == 303 and "govern_console" in r.cookies
    assert browser.get("/console/fleet").status_code == 200


_TABLE = "/delta-sharing/shares/analytics/schemas/default/tables/patients"
_SHARE = {"share": "astrology", "schema": "default", "table": "patients"}


def _share_query(c: Client) -> str:
    """The query's file URL, as path and query string."""
    lines = c.send("POST", f"{_TABLE}/query", json={}, idempotent=False).text.splitlines()
    return json.loads(lines[2])["file"]["url"].removeprefix("http://testserver")


def _share_file(c: Client, _t: TestClient, _w: World) -> None:
    path, _, query = _share_query(c).partition("?ticket=")
    assert c.send("GET", path, params={"ticket": query}).content.startswith(b"PAR1")


def _share_file_head(c: Client, _t: TestClient, _w: World) -> None:
    path, _, query = _share_query(c).partition("?ticket=")
    assert int(c.send("HEAD", path, params={"ticket": query}).headers["content-length"]) > 0


def _head(path: str, steward: bool = False, **params: str) -> Callable[[Client, TestClient, World], None]:
    """HEAD answers with a read's checks and headers and no body: one record all the same."""
    def served(c: Client, _t: TestClient, w: World) -> None:
        who = Client("http://testserver", w.keys["carol"], "governance", transport=c._http._transport) if steward else c
        assert who.send("HEAD", path, params=params or None).status_code == 200
    return served


def _synthetic_report_head(c: Client, _t: TestClient, _w: World) -> None:
    table = c.synthetic("patients", rows=10, seed=1)
    report = json.loads(table.schema.metadata[b"govern.synthetic.report"])
    assert c.send("HEAD", f"/v1/datasets/patients/synthetic/reports/{report['id']}").status_code == 200


EXAMPLES: dict[Route, Example] = {
    ("GET", "/v1/datasets"): Example(lambda c, t, w: c.datasets()),
    ("GET", "/v1/datasets/{name}"): Example(lambda c, t, w: c.describe("patients"), {"name": "patients"}),
    ("GET", "/v1/datasets/{name}/rows"): Example(_rows, {"name": "patients"}),
    ("POST", "/v1/datasets/{name}/reidentify"): Example(_reidentify, {"name": "patients"}, {"tokens": ["k1:00"]}),
    ("POST", "/v1/datasets/{name}/scan"): Example(_scan, {"name": "patients"}, {}),
    ("GET", "/v1/fragments/{fragment_id}"): Example(_scan, {"fragment_id": "0"}, refusals=(401, 401)),
    ("POST", "/v1/sql"): Example(lambda c, t, w: c.sql("select count(*) from patients"),
                                 body={"sql": "select 1"}),
    ("POST", "/v1/datasets/{name}/dp"): Example(
        lambda c, t, w: c.dp("patients", [{"function": "count"}], epsilon=0.1), {"name": "patients"},
        {"aggregates": [{"function": "count"}], "epsilon": 0.1}),
    ("GET", "/v1/budget"): Example(lambda c, t, w: c.budget()),
    ("GET", "/v1/audit"): Example(lambda c, t, w: Client("http://testserver", w.keys["carol"], "governance",
                                                         transport=c._http._transport).audit()),
    ("GET", "/v1/policy/explain"): Example(lambda c, t, w: Client(
        "http://testserver", w.keys["carol"], "governance", transport=c._http._transport).explain(
        "alice", "patients", "analytics"), query={"principal": "alice", "dataset": "patients",
                                                  "for_purpose": "analytics"}),
    ("POST", "/v1/datasets/{name}/encrypted"): Example(_he_view, {"name": "patients"}, {"columns": ["charges"]}),
    ("POST", "/v1/he/release"): Example(_he_release, body={"view_token": "x", "computation": {}, "epsilon": 0.1}),
    ("POST", "/v1/datasets/{name}/encrypted-query"): Example(_he_query, {"name": "patients"}, {"epsilon": 0.1}),
    ("POST", "/v1/datasets/{name}/synthetic"): Example(_synthetic, {"name": "patients"}, {"rows": 10}),
    ("GET", "/v1/datasets/{name}/synthetic/status"): Example(lambda c, t, w: c.synthetic_status("patients"),
                                                             {"name": "patients"}),
    ("POST", "/v1/datasets/{name}/synthetic/fit"): Example(
        lambda c, t, w: c.send("POST", "/v1/datasets/patients/synthetic/fit", json={}, idempotent=False),
        {"name": "patients"}, {}),
    ("GET", "/v1/datasets/{name}/synthetic/reports/{report_id}"): Example(
        _synthetic_report, {"name": "patients", "report_id": "nope"}),
    # HEAD: the same checks and headers as GET, without a body
    ("HEAD", "/v1/datasets"): Example(_head("/v1/datasets")),
    ("HEAD", "/v1/datasets/{name}"): Example(_head("/v1/datasets/patients"), {"name": "patients"}),
    ("HEAD", "/v1/datasets/{name}/rows"): Example(_head("/v1/datasets/patients/rows"), {"name": "patients"}),
    ("HEAD", "/v1/budget"): Example(_head("/v1/budget")),
    ("HEAD", "/v1/audit"): Example(_head("/v1/audit", steward=True)),
    ("HEAD", "/v1/policy/explain"): Example(
        _head("/v1/policy/explain", steward=True, principal="alice", dataset="patients", for_purpose="analytics"),
        query={"principal": "alice", "dataset": "patients", "for_purpose": "analytics"}),
    ("HEAD", "/v1/datasets/{name}/synthetic/status"): Example(_head("/v1/datasets/patients/synthetic/status"),
                                                              {"name": "patients"}),
    ("HEAD", "/v1/datasets/{name}/synthetic/reports/{report_id}"): Example(
        _synthetic_report_head, {"name": "patients", "report_id": "nope"}),
    # the steward console (govern.console): every page view and action, one record each
    ("GET", "/console"): Example(lambda c, t, w: _steward(c, w).get("/console")),
    ("POST", "/console/signin"): Example(_console_signin, body={}),
    ("POST", "/console/signout"): Example(_console_post("/console/signout", {}), body={}),
    ("GET", "/console/catalog"): Example(_page("/console/catalog")),
    ("GET", "/console/access"): Example(_page("/console/access")),
    ("GET", "/console/dry-run"): Example(_page("/console/dry-run")),
    ("POST", "/console/dry-run"): Example(_console_post("/console/dry-run", {"folder": "policies"}, 200), body={}),
    ("GET", "/console/audit"): Example(_page("/console/audit")),
    ("GET", "/console/budgets"): Example(_page("/console/budgets")),
    ("GET", "/console/fleet"): Example(_page("/console/fleet")),
    ("GET", "/console/monitoring"): Example(_page("/console/monitoring")),
    ("POST", "/console/monitoring/profile"): Example(
        _console_post("/console/monitoring/profile", {"dataset": "patients"}), body={}),
    ("POST", "/console/monitoring/baseline"): Example(_console_baseline, body={}),
    ("POST", "/console/catalog/accept"): Example(
        _console_post("/console/catalog/accept", {"dataset": "patients", "column": "phone"}), body={}),
    ("GET", "/delta-sharing/shares"): Example(lambda c, t, w: c.send("GET", "/delta-sharing/shares")),
    ("GET", "/delta-sharing/shares/{share}"): Example(
        lambda c, t, w: c.send("GET", "/delta-sharing/shares/analytics"), _SHARE),
    ("GET", "/delta-sharing/shares/{share}/schemas"): Example(
        lambda c, t, w: c.send("GET", "/delta-sharing/shares/analytics/schemas"), _SHARE),
    ("GET", "/delta-sharing/shares/{share}/schemas/{schema}/tables"): Example(
        lambda c, t, w: c.send("GET", "/delta-sharing/shares/analytics/schemas/default/tables"), _SHARE),
    ("GET", "/delta-sharing/shares/{share}/all-tables"): Example(
        lambda c, t, w: c.send("GET", "/delta-sharing/shares/analytics/all-tables"), _SHARE),
    ("GET", "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/version"): Example(
        lambda c, t, w: c.send("GET", f"{_TABLE}/version"), _SHARE),
    ("GET", "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/metadata"): Example(
        lambda c, t, w: c.send("GET", f"{_TABLE}/metadata"), _SHARE),
    ("POST", "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/query"): Example(
        lambda c, t, w: _share_query(c), _SHARE, {}),
    ("GET", "/delta-sharing/files/{file_id}"): Example(_share_file, {"file_id": "0" * 48}, refusals=(401, 401)),
    ("HEAD", "/delta-sharing/files/{file_id}"): Example(_share_file_head, {"file_id": "0" * 48},
                                                        refusals=(401, 401)),
}


@pytest.fixture(scope="module")
def gateway(fitted_world: World, tmp_path_factory) -> tuple[TestClient, World, Recorder]:  # noqa: F811
    import shutil

    d = tmp_path_factory.mktemp("walk") / "world"
    shutil.copytree(fitted_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    world = World(d, dict(fitted_world.keys))
    with make_client(world) as client:
        yield client, world, Recorder(client._transport)


def _records(client: TestClient, request_id: str) -> list:
    return client.app.state.gateway.audit.records(limit=1000, request_id=request_id)


def test_every_route_is_walked(gateway) -> None:
    client, _world, _recorder = gateway
    governed = {r for r in registered_routes(client.app) if r[1] not in OPERATIONAL}
    assert governed == set(EXAMPLES), f"routes without an example: {governed - set(EXAMPLES)}"


@pytest.mark.parametrize("route", sorted(EXAMPLES), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_refusal_and_each_response_leaves_one_record(gateway, route: Route) -> None:
    client, world, recorder = gateway
    method, template = route
    example = EXAMPLES[route]
    url = template.format(**example.path)
    cases = [({}, example.refusals[0]), (world.auth("alice"), example.refusals[1])]
    for headers, status in cases:
        h = {**headers, "X-Purpose": "astrology"}
        params = {"principal": "bob"} if url == "/v1/budget" else example.query
        r = client.request(method, url, headers=h, params=params,
                           json=example.body if method == "POST" else None)
        assert r.status_code == status, (route, r.text)
        [record] = _records(client, r.headers["x-request-id"])
        assert (record.outcome, record.status) == ("denied", status)
    # served, through the real Python client (it may make more than one request: each counts)
    recorder.seen.clear()
    owner = "bob" if "encrypted" in template or "he/" in template or "synthetic" in template else "alice"
    purpose = "research" if owner == "bob" else "analytics"
    if template in ("/v1/datasets/{name}/dp",):
        owner, purpose = "bob", "research"
    api = Client("http://testserver", world.keys[owner], purpose, transport=recorder)
    example.served(api, client, world)
    assert recorder.seen, "the example made no request"
    for verb, path, status, rid in recorder.seen:
        records = _records(client, rid)
        assert len(records) == 1, (verb, path, status, records)
        assert records[0].status == status and records[0].outcome == ("ok" if status < 400 else "denied")


# -- the PostgreSQL wire ---------------------------------------------------------------------------------

def _new_records(gw, before: int) -> list:
    return [r for r in gw.audit.records(limit=1000)[before:] if r.action != "connect"]


def test_every_wire_message_leaves_one_record_per_refusal_and_data_response(wire, world) -> None:
    port, gw = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")

    def run(*messages: tuple[bytes, bytes]) -> tuple[list[tuple[bytes, bytes]], list]:
        before = len(gw.audit.records(limit=1000))
        for kind, body in messages:
            raw.send(kind, body)
        if any(kind != b"Q" for kind, _ in messages):  # a simple Query ends with its own ReadyForQuery
            raw.send(b"S")
        out = raw.until_ready()
        return out, _new_records(gw, before)

    def outcomes(records: list) -> list[tuple[str, str]]:
        return [(r.action, r.outcome) for r in records]

    # Q: a query (data), a catalog query (data), a refused query, a refused session statement
    _, recs = run((b"Q", cstr("select count(*) from patients")))
    assert outcomes(recs) == [("sql", "ok")]
    _, recs = run((b"Q", cstr("select relname from pg_catalog.pg_class")))
    assert outcomes(recs) == [("catalog", "ok")]
    _, recs = run((b"Q", cstr("select ssn from patients")))
    assert outcomes(recs) == [("sql", "denied")]
    _, recs = run((b"Q", cstr("set DateStyle = 'German'")))
    assert outcomes(recs) == [("query", "denied")]
    _, recs = run((b"Q", cstr("set application_name = 'x'")))  # a session statement: no data, no record
    assert recs == []
    # P: parse (validated, audited) and a refused parse
    _, recs = run((b"P", parse("s1", "select zip from patients where region = $1", [25])))
    assert outcomes(recs) == [("prepare", "ok")]
    _, recs = run((b"P", parse("bad", "select zip from")))
    assert outcomes(recs) == [("prepare", "denied")]
    # B: a bad parameter value is refused and audited; a good bind is neither data nor refusal
    _, recs = run((b"P", parse("n", "select zip from patients where charges > $1", [701])),
                  (b"B", bind("", "n", [b"not a number"])))
    assert outcomes(recs) == [("prepare", "ok"), ("bind", "denied")]
    _, recs = run((b"B", bind("", "s1", [b"EU"])))
    assert recs == []
    # D: a statement's and a portal's shape (metadata responses), and a refused describe
    _, recs = run((b"D", b"S" + cstr("s1")))
    assert outcomes(recs) == [("describe", "ok")]
    _, recs = run((b"B", bind("p", "s1", [b"EU"])), (b"D", b"P" + cstr("p")))
    assert outcomes(recs) == [("describe", "ok")]
    _, recs = run((b"D", b"S" + cstr("missing")))
    assert outcomes(recs) == [("describe", "denied")]
    # E: an executed portal (data) and an unknown portal
    _, recs = run((b"B", bind("e", "s1", [b"EU"])), (b"E", execute("e")))
    assert outcomes(recs) == [("sql", "ok")]
    _, recs = run((b"E", execute("nope")))
    assert outcomes(recs) == [("execute", "denied")]
    # C, H, S: no data, nothing refused, no record; an unsupported message is a refusal
    _, recs = run((b"C", b"S" + cstr("s1")), (b"H", b""))
    assert recs == []
    messages, recs = run((b"F", b"\x00\x00\x00\x01"))  # FunctionCall
    assert [fields(body)["C"] for kind, body in messages if kind == b"E"] == ["08P01"]
    assert outcomes(recs) == [("message", "denied")]  # 501: refused by design
    raw.close()
