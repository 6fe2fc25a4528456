"""Invariant 5 (the budget is never overspent) across two real gateway processes sharing the
PostgreSQL ledger at 127.0.0.1:5432, and across a restart."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.audit.conftest import PG_URL, pg_execute, require_pg
from tests.conftest import edit
from tests.gateway import World, start_server, stop_server

QUERY = {"aggregates": [{"function": "count"}, {"function": "mean", "column": "charges"}],
         "group_by": ["region"], "epsilon": 0.1}


@pytest.mark.slow
def test_fifty_concurrent_releases_over_two_processes_never_overspend(world: World) -> None:
    require_pg()
    prefix = f"govern_test_{uuid.uuid4().hex[:10]}_"
    edit(world.directory / "policies" / "catalog.yaml", "      epsilon: 5\n", "      epsilon: 1\n")
    env = {**os.environ, "GOVERN_LEDGER_URL": PG_URL, "GOVERN_LEDGER_TABLE_PREFIX": prefix,
           "GOVERN_QUEUE_TIMEOUT": "120"}
    servers = [start_server(world, "--pg-port", "0", env=env) for _ in range(2)]
    try:
        headers = {**world.auth("alice"), "X-Purpose": "analytics"}

        def post(i: int) -> httpx.Response:
            return httpx.post(f"{servers[i % 2].url}/v1/datasets/patients/dp", headers=headers, json=QUERY,
                              timeout=180)

        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(post, range(50)))
        outcomes = Counter(r.status_code for r in responses)
        assert outcomes == {200: 10, 403: 40}, (outcomes, [r.text for r in responses if r.status_code >= 500],
                                                "\n".join(s.log.read_text()[-4000:] for s in servers))  # 10 × 0.1 = the whole budget of 1.0
        assert all(r.json()["type"] == "urn:govern:problem:budget-exceeded" for r in responses if r.status_code == 403)
        ok_ids = sorted(r.headers["x-request-id"] for r in responses if r.status_code == 200)
        assert {r.headers["x-request-id"] for r in responses if r.status_code == 200} and \
            all(r.json()["budget"]["spent"]["epsilon"] <= 1.0 for r in responses if r.status_code == 200)

        # the ledger holds exactly the ten releases that were returned, and never more than the limit
        charges = pg_execute(f"SELECT request_id, epsilon FROM {prefix}budget_charges ORDER BY id")
        assert sorted(rid for rid, _ in charges) == ok_ids
        assert sum(units for _, units in charges) == 10**12  # epsilon 1.0 in ledger units
        assert pg_execute(f"SELECT epsilon, releases FROM {prefix}budget_spent") == [(10**12, 10)]

        # exactly one audit record per request, refusals charge nothing (shared SQLite audit file)
        audit = sqlite3.connect(world.directory / "state" / "audit.db")
        rows = audit.execute("SELECT request_id, outcome, extra FROM audit_log WHERE action = 'query_dp'").fetchall()
        audit.close()
        assert Counter(rid for rid, _, _ in rows) == Counter(r.headers["x-request-id"] for r in responses)
        assert sorted(rid for rid, outcome, _ in rows if outcome == "ok") == ok_ids
        assert all('"epsilon_spent":0.0' in extra for _, outcome, extra in rows if outcome != "ok")

        # the state survives a restart: the budget is still spent
        stop_server(servers[0])
        servers[0] = start_server(world, "--pg-port", "0", env=env)
        budget = httpx.get(f"{servers[0].url}/v1/budget", headers=world.auth("alice"),
                           params={"dataset": "patients"}).json()["budgets"][0]
        assert budget["spent"]["epsilon"] == 1.0 and budget["left"]["epsilon"] == 0.0 and budget["releases"] == 10
        again = httpx.post(f"{servers[0].url}/v1/datasets/patients/dp", headers=headers, json=QUERY, timeout=60)
        assert again.status_code == 403
    finally:
        for s in servers:
            stop_server(s)
        pg_execute(f"DROP TABLE IF EXISTS {prefix}budget_spent, {prefix}budget_charges")
