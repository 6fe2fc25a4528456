"""The shared backend: one PostgreSQL database that several gateway processes append to.

Concurrency: every append runs in one transaction that starts with
``SELECT ... FROM <prefix>chain_head WHERE id = 1 FOR UPDATE``. That row lock is held until
commit, so appenders in any process queue on it and each one reads the head its predecessor
wrote: seq values are gap-free and every ``prev_hash`` is right. Threads of one process share a
single connection behind a lock (no pool needed at this rate); a broken connection is dropped
and the next call reconnects. ``lock_timeout`` bounds the wait so a stuck peer turns into an
``AuditError`` rather than a hung request.

``psycopg`` is imported lazily: it ships with the ``server`` extra, and SQLite users need none.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from govern.audit._sql import Cursor, SqlAuditLog, T, schema
from govern.errors import AuditError

if TYPE_CHECKING:
    import psycopg


class PostgresAuditLog(SqlAuditLog):
    """Hash-chained audit log in PostgreSQL tables ``<prefix>audit_log``, ``<prefix>audit_pending``
    and ``<prefix>chain_head``, created if missing. Connects lazily."""

    placeholder = "%s"
    head_lock_clause = " FOR UPDATE"

    def __init__(self, dsn: str, table_prefix: str = "govern_", *, connect_timeout: int = 5,
                 lock_timeout_ms: int = 10_000, statement_timeout_ms: int = 30_000) -> None:
        super().__init__(table_prefix)
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._timeouts = (lock_timeout_ms, statement_timeout_ms)
        self._secrets, self._where = _describe(dsn)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._schema_ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresAuditLog({self._where!r}, table_prefix={self.prefix!r})"

    def _target(self) -> str:
        return self._where

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _open(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        try:
            import psycopg
        except ImportError:
            raise AuditError("audit log unavailable: PostgreSQL needs psycopg "
                             "(pip install 'govern[server]')") from None
        return psycopg.connect(self._dsn, autocommit=autocommit,
                               connect_timeout=self._connect_timeout)

    def _connection(self) -> psycopg.Connection[Any]:
        """The shared connection; call with ``self._lock`` held. Tables are created once per
        instance, under an advisory lock so that processes starting together do not race on
        ``CREATE TABLE``; if the tables vanish later, calls fail rather than start a new chain."""
        if self._closed:
            raise AuditError("audit log is closed")
        if self._conn is None or self._conn.closed:
            conn = self._open(autocommit=True)
            lock_ms, statement_ms = self._timeouts
            conn.execute(f"SET lock_timeout = {int(lock_ms)}")
            conn.execute(f"SET statement_timeout = {int(statement_ms)}")
            self._conn = conn
        if not self._schema_ready:
            key = int.from_bytes(hashlib.sha256(b"govern-audit:" + self.prefix.encode()).digest()[:8],
                                 "big", signed=True)
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                for statement in schema(self.prefix):
                    self._conn.execute(statement)
            self._schema_ready = True
        return self._conn

    def _run(self, op: str, fn: Callable[[Cursor], T], *, transaction: bool) -> T:
        with self._lock:
            try:
                conn = self._connection()
                if not transaction:
                    return fn(conn.cursor())
                with conn.transaction():
                    return fn(conn.cursor())
            except AuditError:
                raise
            except Exception as exc:
                self._drop_if_broken()
                raise self._fail(op, exc) from None

    def _drop_if_broken(self) -> None:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            self._conn = None
            conn.close()

    def _write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, fn, transaction=True)

    def _read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, fn, transaction=False)

    def _snapshot(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """A separate connection in a REPEATABLE READ, READ ONLY transaction: a consistent view
        of head and records that never blocks appenders."""
        self._run(op, lambda cur: None, transaction=False)  # make sure the tables exist
        try:
            import psycopg

            with self._open(autocommit=False) as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with conn.transaction():
                    return fn(conn.cursor())
        except AuditError:
            raise
        except Exception as exc:
            raise self._fail(op, exc) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

    def __enter__(self) -> PostgresAuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe(dsn: str) -> tuple[list[str], str]:
    """The passwords to scrub from any message, and a password-free name for logs."""
    secrets = [s for s in (os.environ.get("PGPASSWORD"),) if s]
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(dsn)
    except Exception:
        return [*secrets, dsn], "postgresql://(unparsable DSN)"
    if info.get("password"):
        secrets.append(str(info["password"]))
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return secrets, f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"
