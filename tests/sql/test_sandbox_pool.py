"""The sandbox pool: sandboxes opened ahead of their queries are as locked as any, serve one
query each, keep their clock, and are released after use."""

from __future__ import annotations

import time

import duckdb
import pytest

from govern.sql.sandbox import SANDBOX_SETTINGS, SandboxPool

LOCKED = {"enable_external_access": "false", "autoinstall_known_extensions": "false",
          "autoload_known_extensions": "false", "python_enable_replacements": "false",
          "lock_configuration": "true", "threads": "1"}


@pytest.fixture
def pool():
    p = SandboxPool(memory_limit="64MB", threads=1, spares=2)
    yield p
    p.close()


def settings_of(sandbox) -> dict[str, str]:  # type: ignore[no-untyped-def]
    names = ", ".join(f"'{n}'" for n in SANDBOX_SETTINGS)
    return dict(sandbox.query(f"SELECT name, value FROM duckdb_settings() WHERE name IN ({names})", None).fetchall())


def test_a_spare_is_locked_like_any_sandbox_and_serves_one_query(pool) -> None:
    assert pool.ready(30)
    first, second = pool.take(10), pool.take(10)
    assert first is not second
    for sandbox in (first, second):
        assert {k: v for k, v in settings_of(sandbox).items() if k in LOCKED} == LOCKED
        with pytest.raises(duckdb.Error):
            sandbox.query("SET enable_external_access = true", None)
        with pytest.raises(duckdb.Error):
            sandbox.query("SELECT * FROM read_csv('/etc/passwd')", None).fetchall()
    first.register_table("v", __import__("pyarrow").table({"a": [1]}))
    first.close()
    second.close()
    assert pool.ready(30)  # spares are opened again once no query runs
    assert first.closed and first.con not in [s.con for s in pool._ready]
    # what the first query registered is nowhere in the next sandboxes
    for _ in range(3):
        sandbox = pool.take(10)
        with pytest.raises(duckdb.CatalogException):
            sandbox.query("SELECT * FROM v", None).fetchall()
        sandbox.close()


def test_the_clock_starts_when_a_query_takes_the_sandbox(pool) -> None:
    assert pool.ready(30)
    time.sleep(0.3)  # idle time on the shelf does not count
    sandbox = pool.take(0.5)
    assert not sandbox.expired()
    start = time.monotonic()
    with pytest.raises(duckdb.Error):
        sandbox.query("SELECT count(*) FROM range(100000000000) a, range(10) b", None).fetchall()
    assert sandbox.timed_out and 0.4 < time.monotonic() - start < 10
    sandbox.close()


def test_closing_stops_at_once_and_releases_in_the_background(pool) -> None:
    sandbox = pool.take(10)
    sandbox.close()
    assert sandbox.closed  # no further fetch: the engine checks this under the busy lock
    assert pool.ready(30)
    with pytest.raises(duckdb.Error):
        sandbox.con.execute("SELECT 1")  # the connection itself is closed by now


def test_a_closed_pool_releases_its_spares_and_hands_out_nothing() -> None:
    pool = SandboxPool(memory_limit="64MB", threads=1, spares=1)
    assert pool.ready(30)
    spare = pool._ready[0]
    pool.close()
    with pytest.raises(duckdb.Error):
        spare.con.execute("SELECT 1")
    with pytest.raises(RuntimeError):
        pool.take(1)
