"""The embedded default: one SQLite file under the state folder.

Concurrency: threads of one process share one connection behind a lock; processes sharing the
file are serialised by ``BEGIN IMMEDIATE``, which takes SQLite's write lock before the chain head
is read, so two appenders can never read the same head. WAL lets readers (and ``verify``, which
uses its own connection and snapshot) run while an append is in progress; the busy timeout makes
a second process wait for the lock instead of failing. ``synchronous=FULL`` because an audit
record that a power cut can take back is not a record.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from govern.audit._sql import Cursor, SqlAuditLog, T, schema
from govern.errors import AuditError


class SQLiteAuditLog(SqlAuditLog):
    """Hash-chained audit log in a SQLite file. Opens lazily: the first call creates the file
    (mode 0600), its folders and the tables; a store that cannot be written fails that call
    with ``AuditError``."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0) -> None:
        super().__init__("")
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._schema_ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteAuditLog({str(self.path)!r})"

    def _target(self) -> str:
        return str(self.path)

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection:
        """The shared connection; call with ``self._lock`` held. Tables are created once per
        instance: if they vanish later, calls fail instead of silently starting a new chain."""
        if self._closed:
            raise AuditError("audit log is closed")
        if self._conn is None:
            self._conn = self._open()
        if not self._schema_ready:
            self._in_transaction(self._conn, "BEGIN IMMEDIATE",
                                 lambda cur: [cur.execute(s) for s in schema(self.prefix)])
            self._schema_ready = True
        return self._conn

    @staticmethod
    def _in_transaction(conn: sqlite3.Connection, begin: str, fn: Callable[[Cursor], T]) -> T:
        conn.execute(begin)
        try:
            result = fn(conn.cursor())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth reporting
            raise
        return result

    def _run(self, op: str, begin: str | None, fn: Callable[[Cursor], T]) -> T:
        with self._lock:
            try:
                conn = self._connection()
                if begin is None:
                    return fn(conn.cursor())
                return self._in_transaction(conn, begin, fn)
            except AuditError:
                raise
            except Exception as exc:
                raise self._fail(op, exc) from None

    def _write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, "BEGIN IMMEDIATE", fn)

    def _read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, None, fn)

    def _snapshot(self, op: str, fn: Callable[[Cursor], T]) -> T:
        self._run(op, None, lambda cur: None)  # make sure the tables exist
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            try:
                return self._in_transaction(conn, "BEGIN", fn)
            finally:
                conn.close()
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

    def __enter__(self) -> SQLiteAuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
