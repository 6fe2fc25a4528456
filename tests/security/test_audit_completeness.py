"""Finding: requests and events that left no audit record, and a release recorded as served when
it was not.

Attacks and gaps:
- a parameter that fails FastAPI's validation (422) — before authentication too — left no record;
- deeply nested JSON crashed the body parser (RecursionError → 500), unrecorded;
- a client that disconnects while uploading its body left no record;
- policy reloads, installed or refused, left no record, and records did not say which policy
  version decided them;
- a DP release whose result cannot be represented (bounds of 1e308) was charged and recorded as
  ``ok 200`` while the client got a 500.
"""

from __future__ import annotations

import json

import anyio

from govern.config import load_settings
from govern.server.app import create_app
from tests.conftest import edit
from tests.gateway import make_client, shared_sql_service


def _records(app) -> list:
    return app.state.gateway.audit.records(limit=1000)


def _version(record) -> str | None:
    return record.policy_version


def test_a_validation_error_before_authentication_is_recorded(world) -> None:
    with make_client(world) as c:
        r = c.get("/v1/datasets/patients/rows", params={"limit": -5})  # no credentials at all
        assert r.status_code == 422
        [rec] = [x for x in _records(c.app) if x.request_id == r.headers["x-request-id"]]
    assert (rec.outcome, rec.status, rec.principal) == ("denied", 422, None)
    assert "limit" in rec.detail


def test_unknown_routes_and_methods_are_recorded(world) -> None:
    with make_client(world) as c:
        missing = c.get("/v1/nothing-here", headers=world.auth("alice"))
        wrong = c.delete("/v1/datasets", headers=world.auth("alice"))
        assert (missing.status_code, wrong.status_code) == (404, 405)
        assert "GET" in wrong.headers.get("allow", "")
        ids = {missing.headers["x-request-id"]: 404, wrong.headers["x-request-id"]: 405}
        found = {r.request_id: r.status for r in _records(c.app) if r.request_id in ids}
    assert found == ids


def test_deeply_nested_json_is_a_recorded_400(world) -> None:
    with make_client(world) as c:
        body = b'{"sql": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        r = c.post("/v1/sql", content=body, headers={**world.auth("alice"), "X-Purpose": "analytics",
                                                    "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["type"] == "urn:govern:problem:invalid-request"
        [rec] = [x for x in _records(c.app) if x.request_id == r.headers["x-request-id"]]
    assert (rec.outcome, rec.status, rec.principal) == ("denied", 400, "alice")


def test_a_client_that_leaves_during_the_upload_is_recorded(world) -> None:
    settings = load_settings(world.config, watch_policies=False)
    app = create_app(settings, sql_service=shared_sql_service(settings))
    body = json.dumps({"sql": "select count(*) from patients"}).encode()
    headers = [(b"host", b"t"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()),
               (b"authorization", world.auth("alice")["Authorization"].encode()), (b"x-purpose", b"analytics")]
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/sql", "raw_path": b"/v1/sql", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "headers": headers}
    messages = iter([{"type": "http.request", "body": body[:10], "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict:
        return next(messages)

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def call() -> list:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
            return _records(app)

    [rec] = [r for r in anyio.run(call) if r.extra.get("route") == "sql"]
    assert (rec.outcome, rec.status, rec.principal) == ("aborted", 499, "alice")
    assert "body" in rec.detail


def test_policy_reloads_are_recorded_with_their_versions(world) -> None:
    with make_client(world) as c:
        gw = c.app.state.gateway
        before = gw.governor.state.policy.version
        policy = world.directory / "policies" / "policy.csv"
        policy.write_text(policy.read_text() + "\np, eve, dataset:encounters, read, analytics, allow\n")
        installed = gw.reloader.check_now()
        assert installed.ok and installed.version != before
        edit(world.directory / "policies" / "catalog.yaml", "format: parquet", "format: parquetx")
        refused = gw.reloader.check_now()
        assert not refused.ok
        r = c.get("/v1/datasets", headers={**world.auth("alice"), "X-Purpose": "analytics"})
        records = _records(c.app)
    reloads = [x for x in records if x.action == "policy_reload"]
    first = reloads[0]
    assert (first.outcome, first.extra.get("from_version"), first.extra.get("to_version")) == \
        ("ok", before, installed.version)
    assert reloads[1].outcome == "denied" and "format must be one of" in reloads[1].detail
    assert len(reloads) == 2
    # every record says which policy decided it: the request after the refused edit was decided
    # under the last valid version
    [last] = [x for x in records if x.request_id == r.headers["x-request-id"]]
    assert _version(last) == installed.version
    assert all(_version(x) for x in records)


def test_an_unrepresentable_dp_release_is_not_charged_or_recorded_as_served(world) -> None:
    with make_client(world) as c:
        headers = {**world.auth("bob"), "X-Purpose": "model-training"}
        for aggregate in ({"function": "sum", "column": "charges", "bounds": [0, 1e308]},
                          {"function": "mean", "column": "charges", "bounds": [0, 1e308]}):
            r = c.post("/v1/datasets/patients/dp", headers=headers, json={"aggregates": [aggregate], "epsilon": 0.5})
            assert r.status_code == 400, r.text
            [rec] = [x for x in _records(c.app) if x.request_id == r.headers["x-request-id"]]
            assert rec.outcome == "denied" and rec.status == 400 and rec.extra["epsilon_spent"] == 0.0
        spent = c.get("/v1/budget", headers=headers, params={"dataset": "patients"}).json()["budgets"][0]["spent"]
    assert spent["epsilon"] == 0.0
