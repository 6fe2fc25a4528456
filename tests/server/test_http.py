"""The HTTP surface: status, headers and the bytes each principal receives; every refusal is a
problem+json; every data-bearing response and every denial leaves one audit record."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from govern.audit.log import open_audit_log
from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.policy.model import local_principal
from tests.gateway import World

PROBLEM_KEYS = {"type", "title", "status", "detail", "request_id"}


def audit_records(world: World):
    settings = load_settings(world.config)
    log = open_audit_log(f"sqlite:///{(settings.state_dir / 'audit.db').resolve()}")
    try:
        return log.records(limit=1000)
    finally:
        log.close()


def expected(world: World, who: str, dataset: str, purpose: str, **kwargs) -> pa.Table:
    gov = Governor(load_settings(world.config))
    return gov.read(local_principal(gov.state.policy, who), dataset, purpose, **kwargs).reader.read_all()


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail"}
    assert body["type"] == f"urn:govern:problem:{slug}"
    assert body["status"] == status
    text = response.text
    assert "Traceback" not in text and "/work/" not in text and "/tmp/" not in text
    return body


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_openapi_lists_the_routes(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/healthz", "/readyz", "/v1/datasets", "/v1/datasets/{name}", "/v1/datasets/{name}/rows",
                  "/v1/audit", "/v1/policy/explain"):
        assert route in paths


def test_error_shape_is_pinned(client) -> None:
    body = assert_problem(client.get("/v1/datasets"), 401, "unauthenticated")
    assert set(body) == PROBLEM_KEYS
    assert body["detail"] == "missing bearer token"


def test_bad_key_is_401_and_audited(client, world) -> None:
    r = client.get("/v1/datasets", headers={"Authorization": "Bearer gk_deadbeef_nope"})
    assert_problem(r, 401, "unauthenticated")
    assert "gk_deadbeef_nope" not in r.text
    client.app.state.gateway.audit.flush()  # refusals before authentication are written without waiting
    rec = audit_records(world)[-1]
    assert (rec.outcome, rec.status, rec.principal) == ("denied", 401, None)
    assert "gk_deadbeef_nope" not in json.dumps(rec.__dict__)


def test_missing_purpose_lists_the_usable_ones(client, world) -> None:
    body = assert_problem(client.get("/v1/datasets", headers=world.auth("bob")), 400, "purpose-required")
    assert body["purposes"] == ["model-training", "research"]


def test_unentitled_purpose_is_403(client, world) -> None:
    headers = {**world.auth("bob"), "X-Purpose": "treatment"}
    body = assert_problem(client.get("/v1/datasets", headers=headers), 403, "purpose-not-entitled")
    assert body["purposes"] == ["model-training", "research"]
    eve = {**world.auth("eve"), "X-Purpose": "analytics"}
    assert assert_problem(client.get("/v1/datasets/patients/rows", headers=eve), 403,
                          "purpose-not-entitled")["purposes"] == []


def test_list_and_describe(client, world) -> None:
    headers = {**world.auth("alice"), "X-Purpose": "analytics"}
    names = [d["name"] for d in client.get("/v1/datasets", headers=headers).json()["datasets"]]
    assert names == ["encounters", "patients"]
    body = client.get("/v1/datasets/patients", params={"purpose": "analytics"}, headers=world.auth("alice")).json()
    cols = {c["name"]: c for c in body["columns"]}
    assert cols["email"]["action"] == "mask" and cols["email"]["mask"]["function"] == "email_domain"
    assert cols["region"]["action"] == "keep"
    assert {w["name"]: w["reason"]["code"] for w in body["withheld"]} == {"ssn": "clearance", "phone": "unclassified"}
    assert body["row_filters"][0]["predicate"] == "\"region\" IN ('EU')"


def test_unknown_dataset_is_404(client, world) -> None:
    headers = {**world.auth("alice"), "X-Purpose": "analytics"}
    assert_problem(client.get("/v1/datasets/nope/rows", headers=headers), 404, "not-found")


@pytest.mark.parametrize("who,purpose", [("alice", "analytics"), ("bob", "model-training"), ("dave", "treatment")])
def test_arrow_rows_are_exactly_the_plan(client, world, who, purpose) -> None:
    r = client.get("/v1/datasets/patients/rows", headers={**world.auth(who), "X-Purpose": purpose})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    got = pa.ipc.open_stream(r.content).read_all()
    assert got.equals(expected(world, who, "patients", purpose))
    rec = audit_records(world)[-1]
    assert (rec.principal, rec.purpose, rec.dataset, rec.outcome, rec.rows) == (who, purpose, "patients", "ok",
                                                                                 got.num_rows)
    assert rec.plan_hash == r.headers["x-govern-plan-hash"]
    assert rec.bytes and rec.bytes > 0
    assert rec.columns["phone"] == "withhold"


def test_other_formats(client, world) -> None:
    headers = {**world.auth("alice"), "X-Purpose": "analytics"}
    params = {"columns": "patient_id,region,birth_date", "limit": 50}
    want = expected(world, "alice", "patients", "analytics", columns=["patient_id", "region", "birth_date"], limit=50)
    pq_body = client.get("/v1/datasets/patients/rows", params={**params, "format": "parquet"}, headers=headers)
    assert pq.read_table(io.BytesIO(pq_body.content)).equals(want)
    csv_body = client.get("/v1/datasets/patients/rows", params={**params, "format": "csv"}, headers=headers)
    assert csv_body.headers["content-type"].startswith("text/csv")
    parsed = pacsv.read_csv(io.BytesIO(csv_body.content))
    assert parsed.column("patient_id").to_pylist() == want.column("patient_id").to_pylist()
    jl = client.get("/v1/datasets/patients/rows", params={**params, "format": "jsonl"}, headers=headers)
    rows = [json.loads(line) for line in jl.text.splitlines()]
    assert [r["patient_id"] for r in rows] == want.column("patient_id").to_pylist()
    assert rows[0]["birth_date"].endswith("-01-01")


def test_filter_semantics_over_http(client, world) -> None:
    headers = {**world.auth("alice"), "X-Purpose": "analytics"}
    body = assert_problem(client.get("/v1/datasets/patients/rows", params={"filter": "ssn = '1'"}, headers=headers),
                          400, "unknown-column")
    assert body["columns"] == ["ssn"]
    bad = assert_problem(client.get("/v1/datasets/patients/rows", params={"filter": "region = = 'EU'"},
                                    headers=headers), 400, "invalid-predicate")
    assert "position" in bad
    r = client.get("/v1/datasets/patients/rows", params={"filter": "zip = '123'", "format": "jsonl"},
                   headers=headers)
    assert all(json.loads(line)["zip"] == "123" for line in r.text.splitlines())


def test_limits(client, world) -> None:
    headers = {**world.auth("alice"), "X-Purpose": "analytics"}
    assert_problem(client.get("/v1/datasets/patients/rows", params={"limit": 10**9}, headers=headers),
                   413, "limit-exceeded")
    assert_problem(client.get("/v1/datasets/patients/rows", params={"limit": -1}, headers=headers),
                   422, "validation-error")
    assert_problem(client.get("/v1/datasets/patients/rows", params={"format": "xml"}, headers=headers),
                   422, "validation-error")


def test_audit_endpoint_is_for_administrators(client, world) -> None:
    client.get("/v1/datasets/patients/rows", headers={**world.auth("alice"), "X-Purpose": "analytics"})
    assert_problem(client.get("/v1/audit", headers={**world.auth("alice"), "X-Purpose": "analytics"}),
                   403, "access-denied")
    body = client.get("/v1/audit", headers={**world.auth("carol"), "X-Purpose": "governance"}).json()
    reads = [r for r in body["records"] if r["action"] == "read" and r["outcome"] == "ok"]
    assert reads and reads[-1]["principal"] == "alice"


def test_explain_endpoint(client, world) -> None:
    headers = {**world.auth("carol"), "X-Purpose": "governance"}
    body = client.get("/v1/policy/explain", params={"principal": "bob", "dataset": "patients",
                                                    "for_purpose": "model-training"}, headers=headers).json()
    cols = {c["name"]: c for c in body["plan"]["columns"]}
    assert cols["diagnosis"]["action"] == "withhold"
    assert cols["diagnosis"]["reason"]["source"].startswith("policy.csv:")
    denied = client.get("/v1/policy/explain", params={"principal": "eve", "dataset": "patients",
                                                      "for_purpose": "analytics"}, headers=headers).json()
    assert denied["allowed"] is False


def test_request_id_and_metrics(client, world) -> None:
    """Every response carries the gateway's own request id; a client's X-Request-Id is recorded
    with the request but never used as its id (nor as any key)."""
    r = client.get("/healthz", headers={"X-Request-ID": "req-12345678"})
    assert len(r.headers["x-request-id"]) == 32 and r.headers["x-request-id"] != "req-12345678"
    r = client.get("/v1/datasets/patients/rows", headers={**world.auth("alice"), "X-Purpose": "analytics",
                                                          "X-Request-ID": "req-12345678"})
    record = audit_records(world)[-1]
    assert record.request_id == r.headers["x-request-id"] != "req-12345678"
    assert record.extra["client_request_id"] == "req-12345678"
    client.get("/v1/datasets", headers={"Authorization": "Bearer nope"})
    text = client.get("/metrics").text
    assert 'govern_rows_total{dataset="patients"}' in text
    assert 'govern_denials_total{reason="unauthenticated"} 1.0' in text


def test_every_response_has_exactly_one_record(client, world) -> None:
    before = len(audit_records(world))
    headers = {**world.auth("bob"), "X-Purpose": "research"}
    for _ in range(3):
        client.get("/v1/datasets/encounters/rows", headers=headers, params={"limit": 10})
    client.get("/v1/datasets/patients/rows", headers={**world.auth("eve"), "X-Purpose": "research"})
    records = audit_records(world)[before:]
    assert [(r.principal, r.outcome) for r in records] == [("bob", "ok")] * 3 + [("eve", "denied")]
    assert len({r.request_id for r in records}) == 4
