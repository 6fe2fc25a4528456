"""Audit through the gateway: PostgreSQL as the shared backend, a failing store refuses data,
and `govern audit verify` names tampering."""

from __future__ import annotations

import sqlite3
import uuid

import psycopg
import pytest
from click.testing import CliRunner

from govern.cli import main
from tests.gateway import make_client

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_prefix():
    prefix = f"govern_t{uuid.uuid4().hex[:8]}_"
    yield prefix
    with psycopg.connect(PG, autocommit=True) as con:
        for table in ("audit_log", "audit_pending", "chain_head"):
            con.execute(f"DROP TABLE IF EXISTS {prefix}{table}")


def test_postgres_backend_and_failure_means_no_data(world, pg_prefix) -> None:
    with make_client(world, audit_url=PG, audit_table_prefix=pg_prefix) as client:
        headers = {**world.auth("alice"), "X-Purpose": "analytics"}
        ok = client.get("/v1/datasets/patients/rows", headers=headers, params={"limit": 7})
        assert ok.status_code == 200
        with psycopg.connect(PG) as con:
            row = con.execute(f"SELECT principal, outcome, rows FROM {pg_prefix}audit_log").fetchall()
        assert row == [("alice", "ok", 7)]
        # the audit store goes away: the next read must fail before any data leaves
        with psycopg.connect(PG, autocommit=True) as con:
            con.execute(f"DROP TABLE {pg_prefix}audit_pending")
        refused = client.get("/v1/datasets/patients/rows", headers=headers, params={"limit": 7})
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:govern:problem:audit-unavailable"
        assert b"k1:" not in refused.content and "EU" not in refused.text


def test_audit_verify_cli_detects_tampering(world) -> None:
    with make_client(world) as client:
        headers = {**world.auth("bob"), "X-Purpose": "research"}
        for _ in range(3):
            assert client.get("/v1/datasets/patients/rows", headers=headers, params={"limit": 2}).status_code == 200
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify", "--config", str(world.config)])
    assert ok.exit_code == 0, ok.output
    assert "audit chain OK: 3 records verified" in ok.output
    db = world.directory / "state" / "audit.db"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE audit_log SET rows = 999 WHERE seq = 2")
    broken = runner.invoke(main, ["audit", "verify", "--config", str(world.config)])
    assert broken.exit_code == 1
    assert "BROKEN at record 2" in broken.output
