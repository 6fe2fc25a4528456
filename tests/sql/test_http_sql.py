"""POST /v1/sql: formats, purpose, limits, problem+json errors, and one audit record per request
(with the SQL text) on success and on refusal."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.server.test_http import assert_problem, audit_records
from tests.sql.conftest import make_client, masked_reference, principal, rows

JOIN = ("SELECT p.region, e.department, count(*) AS visits, avg(e.cost) AS avg_cost "
        "FROM patients p JOIN encounters e ON p.patient_id = e.patient_id GROUP BY ALL ORDER BY ALL")


def post(client, world, sql, who="alice", purpose="analytics", **body):
    return client.post("/v1/sql", json={"sql": sql, **body}, headers={**world.auth(who), "X-Purpose": purpose})


def test_json_is_columns_and_rows(client, world, governor) -> None:
    r = post(client, world, JOIN)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-govern-datasets"] == "encounters,patients"
    doc = r.json()
    assert list(doc) == ["columns", "rows", "row_count"]
    assert doc["columns"] == [{"name": "region", "type": "string"}, {"name": "department", "type": "string"},
                              {"name": "visits", "type": "int64"}, {"name": "avg_cost", "type": "double"}]
    want = masked_reference(governor, "alice", "analytics", JOIN)
    assert doc["rows"] == [list(r.values()) for r in want.to_pylist()]
    assert doc["row_count"] == want.num_rows


def test_arrow_csv_jsonl(client, world, governor) -> None:
    sql = "SELECT zip, birth_date, charges FROM patients WHERE charges > 2000"
    want = masked_reference(governor, "bob", "model-training", sql)
    arrow = post(client, world, sql, "bob", "model-training", format="arrow")
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    got = pa.ipc.open_stream(arrow.content).read_all()
    assert rows(got) == rows(want)
    assert arrow.headers["x-govern-plan-hash"] == governor.plan(principal(governor, "bob"), "patients",
                                                                "model-training").hash
    csv = post(client, world, sql, "bob", "model-training", format="csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert pacsv.read_csv(io.BytesIO(csv.content)).num_rows == want.num_rows
    jsonl = post(client, world, sql, "bob", "model-training", format="jsonl")
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert len(lines) == want.num_rows and set(lines[0]) == {"zip", "birth_date", "charges"}
    parquet = post(client, world, sql, "bob", "model-training", format="parquet")
    assert rows(pq.read_table(io.BytesIO(parquet.content))) == rows(want)


def test_parameters(client, world) -> None:
    r = post(client, world, "SELECT count(*) AS n FROM encounters WHERE department = $1 AND cost > $2",
             "bob", "model-training", params=["Oncology", 100.5])
    assert r.status_code == 200 and r.json()["rows"][0][0] > 0
    bad = post(client, world, "SELECT $1", params=[[1, 2]])
    assert_problem(bad, 400, "invalid-request")


def test_purpose_from_header_body_or_query(client, world) -> None:
    sql = {"sql": "SELECT count(*) FROM patients"}
    assert client.post("/v1/sql", json={**sql, "purpose": "analytics"}, headers=world.auth("alice")).status_code == 200
    assert client.post("/v1/sql?purpose=analytics", json=sql, headers=world.auth("alice")).status_code == 200
    body = assert_problem(client.post("/v1/sql", json=sql, headers=world.auth("alice")), 400, "purpose-required")
    assert body["purposes"] == ["analytics", "quality-improvement"]
    assert_problem(client.post("/v1/sql", json={**sql, "purpose": "treatment"}, headers=world.auth("alice")),
                   403, "purpose-not-entitled")


def test_errors_are_problems_with_positions(client, world) -> None:
    body = assert_problem(post(client, world, "SELECT zip FROM patients WHERE ssn = '1'"), 400, "invalid-sql")
    assert body["detail"] == "column 'ssn' does not exist (unknown, or withheld under purpose 'analytics')"
    assert body["position"] == 31 and body["columns"] == ["ssn"]
    body = assert_problem(post(client, world, "SELECT * FROM read_parquet('x')"), 400, "invalid-sql")
    assert body["position"] == 14 and "read_parquet" in body["detail"]
    body = assert_problem(post(client, world, "SELECT 1 FROM"), 400, "invalid-sql")
    assert body["detail"].startswith("syntax error") and body["position"] == 9
    assert_problem(client.post("/v1/sql", json={"query": "SELECT 1"}, headers={**world.auth("alice"),
                                                                                 "X-Purpose": "analytics"}),
                   400, "invalid-request")
    assert_problem(client.post("/v1/sql", content=b"{not json", headers={**world.auth("alice"),
                                                                          "X-Purpose": "analytics"}),
                   400, "invalid-request")


def test_unauthenticated(client, world) -> None:
    assert_problem(client.post("/v1/sql", json={"sql": "SELECT 1", "purpose": "analytics"}), 401, "unauthenticated")
    client.app.state.gateway.audit.flush()  # refusals before authentication are written without waiting
    rec = audit_records(world)[-1]
    assert (rec.action, rec.outcome, rec.status, rec.principal) == ("sql", "denied", 401, None)


def test_limits(world) -> None:
    with make_client(world, sql_timeout=0.5, sql_max_request_bytes=2_000, max_rows=100) as c:
        slow = post(c, world, "SELECT count(*) FROM encounters a, encounters b, encounters c "
                              "WHERE a.cost + b.cost > c.cost", "bob", "model-training")
        assert assert_problem(slow, 408, "query-timeout")["detail"] == "the query ran longer than 0.5 s and was stopped"
        big = post(c, world, "SELECT 1 -- " + "x" * 3_000)
        assert assert_problem(big, 413, "limit-exceeded")["limit"] == 2_000
        many = post(c, world, "SELECT * FROM encounters", "bob", "model-training")
        assert assert_problem(many, 413, "limit-exceeded")["limit"] == 100


def test_stream_aborted_midway_is_not_a_valid_answer(world) -> None:
    # 200,000 rows of JSON are more than the first MiB a response holds back: the cap is hit
    # after bytes have left (before that, it is a plain 413: test_limits)
    with make_client(world, max_rows=200_000, batch_size=10_000) as c:
        r = post(c, world, "SELECT range AS n FROM range(400000)", "bob", "model-training")
        assert r.status_code == 200  # the first batches were fine; the cap is hit while streaming
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.text)
    rec = audit_records(world)[-1]
    assert (rec.action, rec.outcome) == ("sql", "aborted")
    assert rec.detail.startswith("stream aborted: limit-exceeded")


def test_audit_success(client, world, governor) -> None:
    r = post(client, world, JOIN)
    assert r.status_code == 200
    rec = audit_records(world)[-1]
    alice = principal(governor, "alice")
    assert (rec.action, rec.outcome, rec.status, rec.principal, rec.purpose) == ("sql", "ok", 200, "alice", "analytics")
    assert rec.rows == r.json()["row_count"] and rec.bytes == len(r.content)
    assert rec.extra["sql"] == JOIN and rec.extra["format"] == "json"
    assert rec.extra["datasets"] == ["encounters", "patients"]
    assert rec.extra["plans"] == {d: governor.plan(alice, d, "analytics").hash for d in ("encounters", "patients")}
    assert rec.extra["read"] == {"patients": {"patient_id": "mask:tokenize", "region": "keep"},
                                 "encounters": {"patient_id": "mask:tokenize", "department": "keep", "cost": "keep"}}
    assert rec.dataset is None and rec.plan_hash is None  # two datasets: see extra
    post(client, world, "SELECT count(*) FROM patients")
    rec = audit_records(world)[-1]
    assert rec.dataset == "patients" and rec.plan_hash == governor.plan(alice, "patients", "analytics").hash
    assert rec.columns["ssn"] == "withhold"


def test_audit_refusal_keeps_the_text(client, world) -> None:
    before = len(audit_records(world))
    sql = "SELECT * FROM read_parquet('/etc/passwd')"
    post(client, world, sql)
    records = audit_records(world)[before:]
    assert len(records) == 1
    rec = records[0]
    assert (rec.action, rec.outcome, rec.status) == ("sql", "denied", 400)
    assert rec.extra["sql"] == sql
    assert rec.detail.startswith("invalid-sql: table function 'read_parquet' is not allowed")


def test_openapi_documents_the_route(client) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/sql"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"sql", "purpose", "format", "params",
                                         # differentially private SQL (docs/privacy.md#dp-sql)
                                         "privacy", "epsilon", "delta", "contributions", "bounds"}


def test_csv_of_a_nested_column_is_a_clear_400(client, world) -> None:
    """CSV has no form for a struct: the client is told before any byte, and may ask again."""
    r = post(client, world, "SELECT p FROM patients p LIMIT 3", "bob", "model-training", format="csv")
    body = assert_problem(r, 400, "invalid-request")
    assert body["detail"] == "format csv cannot hold nested column(s) p: ask for arrow, parquet or jsonl"
    ok = post(client, world, "SELECT p FROM patients p LIMIT 3", "bob", "model-training", format="jsonl")
    assert ok.status_code == 200 and ok.text.count("\n") == 3
