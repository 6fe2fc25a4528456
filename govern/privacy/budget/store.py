"""Where the privacy ledger lives: SQLite (embedded default) or PostgreSQL (shared by several
gateway processes). Both run the same statements; a backend only says how to open a connection
and how to run a function in a transaction that excludes every other charger.

Two tables, ``<prefix>budget_spent`` (one row per principal, dataset and period: the running
sums, in integer units) and ``<prefix>budget_charges`` (one row per release: who, what, when,
which request). A charge is one transaction:

1. make sure the ``spent`` row exists (``INSERT … ON CONFLICT DO NOTHING``);
2. read it with ``FOR UPDATE`` (PostgreSQL: a row lock held to commit, so chargers in every
   process queue on it; SQLite: ``BEGIN IMMEDIATE`` already holds the database write lock);
3. if the new sums would pass the limit, roll back — nothing at all is written;
4. else update the sums and insert the charge row, and commit.

Every storage failure is a :class:`~govern.errors.LedgerError` whose message names no path,
host or password.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from govern.errors import InvalidRequest, LedgerError

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("govern.privacy.budget.ledger")

T = TypeVar("T")
_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
CHARGE_FIELDS = ("id", "time", "request_id", "principal", "dataset", "period", "kind", "epsilon", "delta")


class Cursor(Protocol):
    def execute(self, query: Any, params: Sequence[Any] = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class Spent:
    """Running sums of one (principal, dataset, period), in ledger units."""

    epsilon: int
    delta: int
    releases: int


class Overspend(Exception):
    """Raised inside the charge transaction to roll it back; carries what was spent."""

    def __init__(self, spent: Spent) -> None:
        super().__init__("over budget")
        self.spent = spent


def schema(prefix: str, *, postgres: bool) -> list[str]:
    p = prefix
    serial = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
    return [
        f"""CREATE TABLE IF NOT EXISTS {p}budget_spent (
            principal TEXT NOT NULL, dataset TEXT NOT NULL, period TEXT NOT NULL,
            epsilon BIGINT NOT NULL, delta BIGINT NOT NULL, releases BIGINT NOT NULL,
            PRIMARY KEY (principal, dataset, period))""",
        f"""CREATE TABLE IF NOT EXISTS {p}budget_charges (
            id {serial}, time TEXT NOT NULL, request_id TEXT NOT NULL,
            principal TEXT NOT NULL, dataset TEXT NOT NULL, period TEXT NOT NULL, kind TEXT NOT NULL,
            epsilon BIGINT NOT NULL, delta BIGINT NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS {p}budget_charges_who ON {p}budget_charges (principal, dataset, id)",
        f"CREATE INDEX IF NOT EXISTS {p}budget_charges_request ON {p}budget_charges (request_id)",
    ]


class SqlLedgerStore(ABC):
    """The statements both backends share. Subclasses implement ``_write``/``_read``."""

    placeholder = "?"
    lock_clause = ""

    def __init__(self, prefix: str) -> None:
        if prefix and not _PREFIX.match(prefix):
            raise InvalidRequest(f"invalid ledger table prefix {prefix!r}: use lowercase letters, digits and _")
        self.prefix = prefix

    # -- hooks (each backend implements them) ----------------------------------------------------
    @abstractmethod
    def _write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` in one serialized write transaction (charges must not interleave)."""

    @abstractmethod
    def _read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` in a read-only transaction."""

    @abstractmethod
    def _target(self) -> str:
        """Where the ledger lives, safe to log (no password)."""

    def _scrub(self, text: str) -> str:
        return text

    @abstractmethod
    def close(self) -> None:
        """Release the backend's connections."""

    # -- helpers --------------------------------------------------------------------------------
    def _sql(self, text: str) -> str:
        text = text.format(p=self.prefix)
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _fail(self, op: str, exc: BaseException) -> LedgerError:
        reason = self._scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        logger.warning("privacy ledger %s failed on %s: %s: %s", op, self._target(), type(exc).__name__, reason)
        return LedgerError(f"privacy budget ledger unavailable: cannot {op} ({type(exc).__name__})")

    # -- operations -----------------------------------------------------------------------------
    def charge(self, key: tuple[str, str, str], limit: tuple[int, int], cost: tuple[int, int], *,
               time: str, request_id: str, kind: str) -> Spent:
        """Add ``cost`` to the sums of ``key`` if they stay within ``limit``; else raise
        :class:`Overspend` having written nothing. Returns the new sums."""
        ensure = self._sql("INSERT INTO {p}budget_spent (principal, dataset, period, epsilon, delta, releases) "
                           "VALUES (?, ?, ?, 0, 0, 0) ON CONFLICT (principal, dataset, period) DO NOTHING")
        lock = self._sql("SELECT epsilon, delta, releases FROM {p}budget_spent "
                         "WHERE principal = ? AND dataset = ? AND period = ?" + self.lock_clause)
        update = self._sql("UPDATE {p}budget_spent SET epsilon = ?, delta = ?, releases = ? "
                           "WHERE principal = ? AND dataset = ? AND period = ?")
        insert = self._sql("INSERT INTO {p}budget_charges (time, request_id, principal, dataset, period, kind, "
                           "epsilon, delta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")

        def tx(cur: Cursor) -> Spent:
            cur.execute(ensure, key)
            row = cur.execute(lock, key).fetchone()
            spent = Spent(int(row[0]), int(row[1]), int(row[2]))
            new = Spent(spent.epsilon + cost[0], spent.delta + cost[1], spent.releases + 1)
            if new.epsilon > limit[0] or new.delta > limit[1]:
                raise Overspend(spent)
            cur.execute(update, (new.epsilon, new.delta, new.releases, *key))
            cur.execute(insert, (time, request_id, *key, kind, cost[0], cost[1]))
            return new

        return self._write("charge", tx)

    def spent(self, key: tuple[str, str, str]) -> Spent:
        sql = self._sql("SELECT epsilon, delta, releases FROM {p}budget_spent "
                        "WHERE principal = ? AND dataset = ? AND period = ?")
        row = self._read("read", lambda cur: cur.execute(sql, key).fetchone())
        return Spent(int(row[0]), int(row[1]), int(row[2])) if row else Spent(0, 0, 0)

    def charges(self, *, principal: str | None = None, dataset: str | None = None,
                request_id: str | None = None, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        where: list[str] = ["id > ?"]
        params: list[Any] = [after_id]
        for column, value in (("principal", principal), ("dataset", dataset), ("request_id", request_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = self._sql(f"SELECT {', '.join(CHARGE_FIELDS)} FROM {{p}}budget_charges "
                        f"WHERE {' AND '.join(where)} ORDER BY id LIMIT ?")
        rows = self._read("read", lambda cur: cur.execute(sql, (*params, limit)).fetchall())
        return [dict(zip(CHARGE_FIELDS, r, strict=True)) for r in rows]


class SQLiteLedgerStore(SqlLedgerStore):
    """One SQLite file (mode 0600). ``BEGIN IMMEDIATE`` takes the write lock before the sums
    are read, so chargers in any thread or process are serialised; WAL lets readers run."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0) -> None:
        super().__init__("")
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteLedgerStore({str(self.path)!r})"

    def _target(self) -> str:
        return str(self.path)

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise LedgerError("privacy budget ledger is closed")
        if self._conn is None:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                self._transaction(conn, lambda cur: [cur.execute(s) for s in schema("", postgres=False)])
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[Cursor], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn.cursor())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        return result

    def _run(self, op: str, fn: Callable[[Cursor], T], *, write: bool) -> T:
        with self._lock:
            try:
                conn = self._connection()
                return self._transaction(conn, fn) if write else fn(conn.cursor())
            except (LedgerError, Overspend):
                raise
            except Exception as exc:
                raise self._fail(op, exc) from None

    def _write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, fn, write=True)

    def _read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, fn, write=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()


class PostgresLedgerStore(SqlLedgerStore):
    """PostgreSQL tables ``<prefix>budget_spent`` and ``<prefix>budget_charges``, created if
    missing (under an advisory lock, so processes starting together do not race). Threads of
    one process share a connection behind a lock; a broken connection is dropped and the next
    call reconnects. ``lock_timeout`` turns a stuck peer into a ``LedgerError``."""

    placeholder = "%s"
    lock_clause = " FOR UPDATE"

    def __init__(self, dsn: str, table_prefix: str = "govern_", *, connect_timeout: int = 5,
                 lock_timeout_ms: int = 10_000, statement_timeout_ms: int = 30_000) -> None:
        super().__init__(table_prefix)
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._timeouts = (lock_timeout_ms, statement_timeout_ms)
        from govern.audit.postgres import _describe

        self._secrets, self._where = _describe(dsn)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._schema_ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresLedgerStore({self._where!r}, table_prefix={self.prefix!r})"

    def _target(self) -> str:
        return self._where

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise LedgerError("privacy budget ledger is closed")
        if self._conn is None or self._conn.closed:
            try:
                import psycopg
            except ImportError:
                raise LedgerError("privacy budget ledger unavailable: PostgreSQL needs psycopg "
                                  "(pip install 'govern[server]')") from None
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout)
            lock_ms, statement_ms = self._timeouts
            conn.execute(f"SET lock_timeout = {int(lock_ms)}")
            conn.execute(f"SET statement_timeout = {int(statement_ms)}")
            self._conn = conn
        if not self._schema_ready:
            key = int.from_bytes(hashlib.sha256(b"govern-ledger:" + self.prefix.encode()).digest()[:8],
                                 "big", signed=True)
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                for statement in schema(self.prefix, postgres=True):
                    self._conn.execute(statement)
            self._schema_ready = True
        return self._conn

    def _run(self, op: str, fn: Callable[[Cursor], T], *, write: bool) -> T:
        with self._lock:
            try:
                conn = self._connection()
                if not write:
                    return fn(conn.cursor())
                with conn.transaction():
                    return fn(conn.cursor())
            except (LedgerError, Overspend):
                raise
            except Exception as exc:
                conn_ = self._conn
                if conn_ is not None and (conn_.closed or conn_.broken):
                    self._conn = None
                    conn_.close()
                raise self._fail(op, exc) from None

    def _write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, fn, write=True)

    def _read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        return self._run(op, fn, write=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()


def open_store(url: str | Path, *, table_prefix: str = "govern_") -> SqlLedgerStore:
    """``postgresql://…`` → PostgreSQL (tables ``table_prefix*``); ``sqlite:////abs.db``,
    ``sqlite:///rel.db`` or a plain path → SQLite."""
    if isinstance(url, Path):
        return SQLiteLedgerStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLedgerStore(url, table_prefix)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise InvalidRequest("a SQLite ledger URL looks like sqlite:///relative.db or sqlite:////absolute/path.db")
        return SQLiteLedgerStore(Path(path[1:]))
    if "://" in url:
        raise InvalidRequest(f"unsupported ledger store {url.split('://', 1)[0]!r}: use sqlite:/// or postgresql://")
    return SQLiteLedgerStore(Path(url))
