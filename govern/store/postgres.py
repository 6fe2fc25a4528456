"""The shared backend: one PostgreSQL database that several gateway processes write to.

Threads of one process share one connection behind a lock (no pool needed at this rate); a
broken connection is dropped and the next call reconnects. Writers in different processes are
ordered by the row locks their statements take (``dialect.lock_clause``), held to commit;
``lock_timeout`` bounds that wait and ``statement_timeout`` any statement, so a stuck peer
becomes an error rather than a hung request. Snapshots run on a connection of their own in a
``REPEATABLE READ, READ ONLY`` transaction, which never blocks writers.

``psycopg`` ships with the ``server`` extra; SQLite users need none, so it is imported when the
first connection is opened, and its absence is the role's error.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from govern.store.database import POSTGRESQL, Cursor, Database, Role, Setup, T

if TYPE_CHECKING:
    import psycopg


class PostgresDatabase(Database):
    dialect = POSTGRESQL

    def __init__(self, role: Role, dsn: str, prefix: str, setup: Setup, *,
                 connect_timeout: int = 5, lock_timeout_ms: int = 10_000,
                 statement_timeout_ms: int = 30_000) -> None:
        super().__init__(role, prefix, setup)
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._timeouts = (lock_timeout_ms, statement_timeout_ms)
        self._secrets, self._where = describe_dsn(dsn)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresDatabase({self._where!r}, prefix={self.prefix!r})"

    @property
    def target(self) -> str:
        return self._where

    @property
    def backend_pid(self) -> int | None:
        """The server process of the shared connection (tests kill it to force a reconnect)."""
        conn = self._conn
        return None if conn is None or conn.closed else int(conn.info.backend_pid)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _open(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        try:
            import psycopg
        except ImportError:
            raise self.role.missing_driver() from None
        return psycopg.connect(self._dsn, autocommit=autocommit,
                               connect_timeout=self._connect_timeout)

    def _connection(self) -> psycopg.Connection[Any]:
        """The shared connection; call with ``self._lock`` held."""
        if self._closed:
            raise self.role.closed()
        if self._conn is None or self._conn.closed:
            conn = self._open(autocommit=True)
            lock_ms, statement_ms = self._timeouts
            conn.execute(f"SET lock_timeout = {int(lock_ms)}")
            conn.execute(f"SET statement_timeout = {int(statement_ms)}")
            self._conn = conn
        if not self._ready:
            name = f"{self.role.lock_namespace}:{self.prefix}".encode()
            key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                self._setup(self._conn.cursor(), self.dialect)
            self._ready = True
        return self._conn

    def _run(self, op: str, fn: Callable[[Cursor], T], *, transaction: bool) -> T:
        with self._lock:
            try:
                conn = self._connection()
                if not transaction:
                    return fn(conn.cursor())
                with conn.transaction():
                    return fn(conn.cursor())
            except Exception as exc:
                self._drop_if_broken()
                if self._passes(exc):
                    raise
                raise self._fail(op, exc) from None

    def _drop_if_broken(self) -> None:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            self._conn = None
            conn.close()

    def write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, fn, transaction=True)

    def read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, fn, transaction=False)

    def snapshot(self, op: str, fn: Callable[[Cursor], T]) -> T:
        self._run(op, lambda cur: None, transaction=False)  # the tables exist
        try:
            import psycopg

            with self._open(autocommit=False) as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with conn.transaction():
                    return fn(conn.cursor())
        except Exception as exc:
            if self._passes(exc):
                raise
            raise self._fail(op, exc) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()


def describe_dsn(dsn: str) -> tuple[list[str], str]:
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
