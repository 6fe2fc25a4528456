"""Finding: a client's ``X-Request-Id`` became the request's id and a storage key.

Attack: send a request with the ``X-Request-Id`` of someone else's request in flight. The id
keyed the audit store's pending reservation (and the ledger's charges), so the second request
overwrote and then cleared the first one's "started, not finished" marker, and both records
carried the same id. Now every request gets a server-made id; the client's is kept in the
record (``extra.client_request_id``) and nowhere else.
"""

from __future__ import annotations

from tests.gateway import make_client


def test_two_requests_with_one_client_id_get_two_ids(world) -> None:
    with make_client(world) as c:
        headers = {**world.auth("alice"), "X-Purpose": "analytics", "X-Request-Id": "victim-request-0001"}
        first = c.get("/v1/datasets/patients/rows", headers=headers, params={"limit": 3})
        second = c.get("/v1/datasets/encounters/rows", headers=headers, params={"limit": 3})
        ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
        records = [r for r in c.app.state.gateway.audit.records(limit=1000) if r.request_id in ids]
    assert len(set(ids)) == 2 and "victim-request-0001" not in ids
    assert sorted(r.request_id for r in records) == sorted(ids)
    assert {r.extra["client_request_id"] for r in records} == {"victim-request-0001"}


def test_a_client_id_cannot_clear_another_requests_reservation(world) -> None:
    with make_client(world) as c:
        audit = c.app.state.gateway.audit
        audit.reserve("victim-request-0002")  # a request of someone else, still streaming
        c.get("/v1/datasets/patients/rows", params={"limit": 3},
              headers={**world.auth("alice"), "X-Purpose": "analytics", "X-Request-Id": "victim-request-0002"})
        pending = [rid for rid, _ in audit.pending()]
    assert "victim-request-0002" in pending
