"""The embedded backend: one SQLite file.

Threads of one process share one connection behind a lock; processes sharing the file are
serialised by ``BEGIN IMMEDIATE``, which takes SQLite's write lock before anything is read, so
two writers never act on the same state. WAL lets readers (and snapshots, on their own
connection) run while a write is in progress; the busy timeout makes a second process wait for
the lock instead of failing. ``synchronous=FULL`` because a record that a power cut can take
back is not a record. The file is created mode 0600 (it holds who read what).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from govern.store.database import SQLITE, Cursor, Database, Role, Setup, T


class SQLiteDatabase(Database):
    dialect = SQLITE

    def __init__(self, role: Role, path: Path | str, setup: Setup, *,
                 busy_timeout: float = 10.0) -> None:
        super().__init__(role, "", setup)
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteDatabase({str(self.path)!r})"

    @property
    def target(self) -> str:
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
        """The shared connection; call with ``self._lock`` held."""
        if self._closed:
            raise self.role.closed()
        if self._conn is None:
            self._conn = self._open()
        if not self._ready:
            self._in_transaction(self._conn, "BEGIN IMMEDIATE",
                                 lambda cur: self._setup(cur, self.dialect))
            self._ready = True
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
            except Exception as exc:
                if self._passes(exc):
                    raise
                raise self._fail(op, exc) from None

    def write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, "BEGIN IMMEDIATE", fn)

    def read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, None, fn)

    def snapshot(self, op: str, fn: Callable[[Cursor], T]) -> T:
        self._run(op, None, lambda cur: None)  # the file and tables exist
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            try:
                return self._in_transaction(conn, "BEGIN", fn)
            finally:
                conn.close()
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
