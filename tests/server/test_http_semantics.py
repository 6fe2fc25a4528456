"""HTTP semantics clients rely on: HEAD wherever GET is served, 405 with ``Allow``, and
``Content-Length`` where the length is known before the body starts (a Parquet reader seeks to
the footer, so it needs the size)."""

from __future__ import annotations

import io

import httpx
import pyarrow.parquet as pq

from tests.server.test_http import assert_problem, audit_records


def test_head_on_rows_answers_the_headers_of_a_read_without_reading(client, world) -> None:
    bob = {**world.auth("bob"), "X-Purpose": "research"}
    get = client.get("/v1/datasets/patients/rows", headers=bob, params={"format": "csv", "limit": 3})
    head = client.head("/v1/datasets/patients/rows", headers=bob, params={"format": "csv", "limit": 3})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "text/csv; charset=utf-8"
    assert head.headers["x-govern-plan-hash"] == get.headers["x-govern-plan-hash"]
    assert head.headers["content-disposition"] == get.headers["content-disposition"]
    assert "content-length" not in head.headers  # unknown without reading; never a false 0
    [record] = [r for r in audit_records(world) if r.request_id == head.headers["x-request-id"]]
    assert record.outcome == "ok" and record.rows == 0


def test_head_refuses_like_get(client, world) -> None:
    assert client.head("/v1/datasets/patients/rows").status_code == 401
    bob = {**world.auth("bob"), "X-Purpose": "research"}
    assert client.head("/v1/datasets/nope/rows", headers=bob).status_code == 404
    assert client.head("/v1/datasets/patients/rows", headers=bob, params={"filter": "x("}).status_code == 400
    alice = {**world.auth("alice"), "X-Purpose": "research"}
    assert client.head("/v1/datasets/patients/rows", headers=alice).status_code == 403


def test_every_get_route_answers_head(client, world) -> None:
    carol = {**world.auth("carol"), "X-Purpose": "governance"}
    for path in ("/healthz", "/readyz", "/v1/datasets", "/v1/datasets/patients", "/v1/audit",
                 "/v1/budget", "/v1/policy/explain?principal=bob&dataset=patients&for_purpose=research"):
        r = client.head(path, headers=carol)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.content == b""


def test_a_wrong_method_is_405_with_allow(client, world) -> None:
    bob = {**world.auth("bob"), "X-Purpose": "research"}
    r = client.request("DELETE", "/v1/datasets/patients/rows", headers=bob)
    assert_problem(r, 405, "method-not-allowed")
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD"}
    r = client.request("PATCH", "/v1/sql", headers=bob)
    assert_problem(r, 405, "method-not-allowed")
    assert r.headers["allow"] == "POST"


def test_parquet_carries_its_content_length(server) -> None:
    bob = {**server.world.auth("bob"), "X-Purpose": "research"}
    r = httpx.get(server.url + "/v1/datasets/patients/rows", headers=bob, params={"format": "parquet"}, timeout=60)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    assert "transfer-encoding" not in r.headers
    assert pq.read_table(io.BytesIO(r.content)).num_rows == 2_000


def test_docs_state_each_routes_error_statuses_as_the_description_does(client) -> None:
    """docs/api.md's table of error statuses per route is the description's, row by row."""
    import re
    from pathlib import Path

    from govern.server.contract import GOVERNED

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = doc.split("## The contract", 1)[1].split("\n## ", 1)[0]
    paths = client.get("/openapi.json").json()["paths"]
    base = {str(s) for s in GOVERNED}
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 10
    seen = set()
    for row in rows:
        cell, statuses = row.split(" | ")[:2]
        methods = set(re.findall(r"`(GET|HEAD|POST)`?", cell))
        expected = set(re.findall(r"\d{3}", statuses))
        for path in re.findall(r"(/v1[^`\s,]*)", cell):
            for method in methods:
                documented = set(paths[path][method.lower()]["responses"])
                assert documented - {"200", "202"} == base | expected, (method, path)
                seen.add((method, path))
    for path, operations in paths.items():
        for method in operations:
            if path.startswith("/v1"):
                assert (method.upper(), path) in seen, f"{method.upper()} {path} is not in docs/api.md's table"
