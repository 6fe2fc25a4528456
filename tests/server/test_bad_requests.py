"""Requests a client gets wrong are the client's problem: a 400 problem+json with the request's
id, never a 500 (a crash) or a 503 (which clients retry). Found by schemathesis (issue 13)."""

from __future__ import annotations

import pytest

from tests.server.test_http import assert_problem

# (who, purpose): a caller without row filters (bob) and two with them (alice, dave), since a
# row filter moves the caller's filter into the storage scan (pushdown) or after the masks.
CALLERS = [("bob", "research"), ("alice", "analytics"), ("dave", "treatment")]

# Filters that parse but are not boolean, or compare values of different types.
ILL_TYPED = ["zip", "0", "region", "zip = 1", "charges = 'a'", "null", "1 + 'a' = 2"]


@pytest.mark.parametrize("who,purpose", CALLERS)
@pytest.mark.parametrize("text", ILL_TYPED)
def test_an_ill_typed_filter_is_a_400_with_the_request_id(client, world, who, purpose, text) -> None:
    headers = {**world.auth(who), "X-Purpose": purpose}
    for params in ({}, {"limit": 5}, {"columns": "zip"}):
        r = client.get("/v1/datasets/patients/rows", headers=headers, params={"filter": text, **params})
        body = assert_problem(r, 400, "invalid-predicate")
        assert body["request_id"] == r.headers["x-request-id"]
        assert "filter" in body["detail"]


def test_a_boolean_filter_still_reads(client, world) -> None:
    headers = {**world.auth("bob"), "X-Purpose": "research"}
    r = client.get("/v1/datasets/patients/rows", headers=headers,
                   params={"filter": "true", "limit": 3, "format": "jsonl"})
    assert r.status_code == 200 and len(r.text.splitlines()) == 3


@pytest.mark.parametrize("body", [
    b'{"tokens": ["\\ud800"]}',  # a lone surrogate: valid JSON, not valid Unicode
    b'{"tokens": ["k1:\\udfff"], "purpose": "governance"}',
    b'{"tokens": ["k1:zz"]}',
    b'{"tokens": ["k9:abab"]}',
])
def test_a_malformed_reidentify_token_is_a_400(client, world, body) -> None:
    headers = {**world.auth("carol"), "X-Purpose": "governance", "content-type": "application/json"}
    r = client.post("/v1/datasets/patients/reidentify", headers=headers, content=body)
    problem = assert_problem(r, 400, "invalid-request")
    assert problem["request_id"] == r.headers["x-request-id"]


def test_a_lone_surrogate_in_sql_is_a_400(client, world) -> None:
    headers = {**world.auth("bob"), "X-Purpose": "research", "content-type": "application/json"}
    r = client.post("/v1/sql", headers=headers, content=b'{"sql": "select \'\\ud800\' as x"}')
    assert_problem(r, 400, "invalid-request")


def test_an_unexpected_crash_still_carries_the_request_id(client, world, monkeypatch) -> None:
    """The catch-all answer (500) names the request, so an operator can find its log line."""
    from govern.deliver.governor import Governor

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Governor, "read", broken)
    headers = {**world.auth("bob"), "X-Purpose": "research"}
    r = client.get("/v1/datasets/patients/rows", headers=headers)
    body = assert_problem(r, 500, "internal")
    assert body["request_id"] == r.headers["x-request-id"]
    assert "boom" not in r.text
