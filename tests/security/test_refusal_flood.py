"""Finding: a flood of failed authentications slowed everyone down.

Attack: send bad tokens as fast as possible. Each refusal wrote its audit record synchronously,
in the same serialized, fsynced append every other request waits on, so the flood made every
request about ten times slower — and when the audit store was slow or locked, each bad token
held a worker until the store answered. Now refusals before authentication are handed to the
audit log without waiting (group-committed, rate-bounded, coalesced beyond a bound): a refusal
is answered at once, and still leaves its record.

The test makes the audit store wait on purpose: another connection holds the chain's head row
of a PostgreSQL store (as a stuck peer would), and bad tokens must still be refused at once.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.gateway import make_client

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def prefix():
    name = f"flood_{uuid.uuid4().hex[:8]}_"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        for table in ("audit_log", "audit_pending", "chain_head"):
            conn.execute(f"DROP TABLE IF EXISTS {name}{table}")


def test_refusals_are_answered_at_once_while_the_audit_store_waits(world, prefix: str) -> None:
    with make_client(world, audit_url=DSN, audit_table_prefix=prefix) as c:
        warm = c.get("/v1/datasets/patients/rows", params={"limit": 1},
                     headers={**world.auth("alice"), "X-Purpose": "analytics"})
        assert warm.status_code == 200  # the store and its tables exist
        holder = psycopg.connect(DSN)
        try:
            holder.execute(f"SELECT seq FROM {prefix}chain_head WHERE id = 1 FOR UPDATE")  # a stuck peer
            times = []
            ids = []
            for i in range(20):
                t0 = time.monotonic()
                r = c.get("/v1/datasets", headers={"Authorization": f"Bearer gk_{i:08x}_flood"})
                times.append(time.monotonic() - t0)
                assert r.status_code == 401
                ids.append(r.headers["x-request-id"])
            assert max(times) < 1.0, f"slowest refusal took {max(times):.2f} s while the store waited"
        finally:
            holder.rollback()
            holder.close()
        c.app.state.gateway.audit.flush(30)
        recorded = {r.request_id for r in c.app.state.gateway.audit.records(limit=1000)}
    assert set(ids) <= recorded  # every refusal still has its record
