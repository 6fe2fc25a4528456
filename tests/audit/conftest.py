"""Real audit stores for the tests: a SQLite file in tmp_path and the PostgreSQL server.

Every test that takes ``store`` runs once per backend (one shared suite, ibis style). PostgreSQL
tests use fresh tables (``govern_test_<random>_*``) dropped afterwards, and are skipped only when
the server cannot be reached; the reason is printed and shown in pytest's summary.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from govern.audit import (
    Anchor,
    AuditLog,
    AuditRecord,
    PostgresAuditLog,
    SQLiteAuditLog,
    open_audit_log,
)
from govern.mask.keys import KeyRing

PG_URL = os.environ.get("GOVERN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
KEYS = KeyRing({"k1": b"audit-test-master-key-0123456789abcdef"}, "k1")


def pg_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {str(exc).strip().splitlines()[0]}"
    return None


def require_pg() -> None:
    reason = pg_unreachable()
    if reason:
        print(f"skipping PostgreSQL audit test: {reason}")
        pytest.skip(reason)


def pg_execute(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        cur = conn.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def drop_pg_tables(prefix: str) -> None:
    pg_execute(f"DROP TABLE IF EXISTS {prefix}audit_log, {prefix}audit_pending, "
               f"{prefix}chain_head")


@dataclass
class Store:
    """One real backing store: how to open a log on it and how to poke it with raw SQL."""

    backend: str
    url: str
    prefix: str
    open: Callable[[], AuditLog]
    raw: Callable[..., list[tuple[Any, ...]]]

    def anchored(self, anchor: Anchor, **options: Any) -> AuditLog:
        """A log on this store that signs checkpoints into ``anchor``."""
        return open_audit_log(self.url, table_prefix=self.prefix, anchor=anchor, **options)

    def sql(self, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run raw SQL against the store, as an attacker with database access would.
        ``{p}`` is the table prefix; ``?`` the placeholder."""
        return self.raw(text.format(p=self.prefix), params)


def sqlite_store(path: Path) -> Store:
    def raw(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    return Store("sqlite", str(path), "", lambda: SQLiteAuditLog(path), raw)


@contextmanager
def fresh_pg_store() -> Iterator[Store]:
    """PostgreSQL with tables of its own, dropped afterwards; skips if the server is down."""
    require_pg()
    prefix = f"govern_test_{uuid.uuid4().hex[:10]}_"
    try:
        yield Store("postgres", PG_URL, prefix, lambda: PostgresAuditLog(PG_URL, prefix), pg_execute)
    finally:
        drop_pg_tables(prefix)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield sqlite_store(tmp_path / "state" / "audit.db")
        return
    with fresh_pg_store() as pg:
        yield pg


@pytest.fixture
def pg_store() -> Iterator[Store]:
    with fresh_pg_store() as pg:
        yield pg


@pytest.fixture
def anchor(tmp_path: Path) -> Anchor:
    """Checkpoints in a file of their own, signed with the test key ring's active key."""
    return Anchor.from_keys(tmp_path / "anchor" / "audit.checkpoints", KEYS)


@pytest.fixture
def anchored_log(store: Store, anchor: Anchor) -> Iterator[AuditLog]:
    opened = store.anchored(anchor)
    yield opened
    opened.close()


@pytest.fixture
def log(store: Store) -> Iterator[AuditLog]:
    opened = store.open()
    yield opened
    opened.close()


def make_record(i: int = 0, **changes: Any) -> AuditRecord:
    """A record as the gateway builds it before appending (no seq, time or hashes yet)."""
    fields: dict[str, Any] = dict(
        seq=None, time="", request_id=f"req-{i:04d}", principal="alice", purpose="analytics",
        dataset="patients", action="read", outcome="ok", status=200, plan_hash="ph" + str(i),
        columns={"patient_id": "keep", "ssn": "mask:hash", "name": "withhold"}, rows=i,
        bytes=100 * i, detail=None, extra={"filter": "region = 'EU'", "i": i},
        prev_hash="", hash="")
    fields.update(changes)
    return AuditRecord(**fields)


def fill(log: AuditLog, n: int) -> list[AuditRecord]:
    return [log.append(make_record(i)) for i in range(1, n + 1)]


@contextmanager
def write_lock(store: Store) -> Iterator[None]:
    """Hold the lock every appender needs (SQLite's write lock; the chain head's row lock on
    PostgreSQL), as a slow peer process would, until the block ends."""
    if store.backend == "sqlite":
        Path(store.url).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(store.url, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(PG_URL) as pg:
        pg.execute(f"SELECT 1 FROM {store.prefix}chain_head WHERE id = 1 FOR UPDATE")
        yield
        pg.rollback()


def all_records(log: AuditLog) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    while page := log.records(after_seq=out[-1].seq if out else 0, limit=1000):
        out += page
    return out
