"""Where the privacy ledger lives: SQLite (embedded default) or PostgreSQL (shared by several
gateway processes), both through the shared store layer (:mod:`govern.store`), which opens,
locks, reconnects and turns every storage failure into a :class:`~govern.errors.LedgerError`
whose message names no path, host or password.

Two tables, ``<prefix>budget_spent`` (one row per principal, dataset and period: the running
sums, in integer units) and ``<prefix>budget_charges`` (one row per release: who, what, when,
which request). A charge is one transaction:

1. make sure the ``spent`` row exists (``INSERT … ON CONFLICT DO NOTHING``);
2. read it with ``FOR UPDATE`` (PostgreSQL: a row lock held to commit, so chargers in every
   process queue on it; SQLite: ``BEGIN IMMEDIATE`` already holds the database write lock);
3. if this request id was already charged (a retry, from this process or another one, of a
   charge whose commit was not acknowledged), return the sums as they are: a request is charged
   at most once;
4. if the new sums would pass the limit, roll back — nothing at all is written;
5. else update the sums and insert the charge row, and commit.

A refund (:meth:`SqlLedgerStore.refund`) is the inverse for one request id, for a release whose
result never left the process: it takes the same row lock, subtracts the charge and deletes its
row, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govern.errors import LedgerError
from govern.store import (
    Cursor,
    Database,
    Dialect,
    PostgresDatabase,
    Role,
    SQLiteDatabase,
    parse_target,
)

CHARGE_FIELDS = ("id", "time", "request_id", "principal", "dataset", "period", "kind", "epsilon", "delta")


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


ROLE = Role("privacy budget ledger", LedgerError, "govern.privacy.budget.ledger", "govern-ledger",
            passthrough=(Overspend,))


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


def _setup(prefix: str) -> Any:
    def setup(cur: Cursor, dialect: Dialect) -> None:
        for statement in schema(prefix, postgres=dialect.name == "postgresql"):
            cur.execute(statement)
    return setup


class SqlLedgerStore:
    """The ledger's statements over one :class:`~govern.store.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.prefix = db.prefix

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.target!r})"

    def charge(self, key: tuple[str, str, str], limit: tuple[int, int], cost: tuple[int, int], *,
               time: str, request_id: str, kind: str) -> Spent:
        """Add ``cost`` to the sums of ``key`` if they stay within ``limit``; else raise
        :class:`Overspend` having written nothing. Returns the new sums."""
        sql = self.db.sql
        ensure = sql("INSERT INTO {p}budget_spent (principal, dataset, period, epsilon, delta, releases) "
                     "VALUES (?, ?, ?, 0, 0, 0) ON CONFLICT (principal, dataset, period) DO NOTHING")
        lock = sql("SELECT epsilon, delta, releases FROM {p}budget_spent "
                   "WHERE principal = ? AND dataset = ? AND period = ?" + self.db.dialect.lock_clause)
        update = sql("UPDATE {p}budget_spent SET epsilon = ?, delta = ?, releases = ? "
                     "WHERE principal = ? AND dataset = ? AND period = ?")
        insert = sql("INSERT INTO {p}budget_charges (time, request_id, principal, dataset, period, kind, "
                     "epsilon, delta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        charged = sql("SELECT 1 FROM {p}budget_charges WHERE request_id = ? AND principal = ? "
                      "AND dataset = ? AND period = ? AND kind = ?")

        def tx(cur: Cursor) -> Spent:
            cur.execute(ensure, key)
            row = cur.execute(lock, key).fetchone()
            spent = Spent(int(row[0]), int(row[1]), int(row[2]))
            if cur.execute(charged, (request_id, *key, kind)).fetchone() is not None:
                return spent  # this request was charged already (under the same lock): once only
            new = Spent(spent.epsilon + cost[0], spent.delta + cost[1], spent.releases + 1)
            if new.epsilon > limit[0] or new.delta > limit[1]:
                raise Overspend(spent)
            cur.execute(update, (new.epsilon, new.delta, new.releases, *key))
            cur.execute(insert, (time, request_id, *key, kind, cost[0], cost[1]))
            return new

        return self.db.write("charge", tx)

    def refund(self, request_id: str) -> bool:
        """Give back the charges of ``request_id`` (a release whose result never left the
        process). True if there was one; False if not (never charged, or refunded already)."""
        sql = self.db.sql
        find = sql("SELECT id, principal, dataset, period, epsilon, delta FROM {p}budget_charges "
                   "WHERE request_id = ? ORDER BY id")
        lock = sql("SELECT epsilon FROM {p}budget_spent WHERE principal = ? AND dataset = ? AND period = ?"
                   + self.db.dialect.lock_clause)
        update = sql("UPDATE {p}budget_spent SET epsilon = epsilon - ?, delta = delta - ?, "
                     "releases = releases - 1 WHERE principal = ? AND dataset = ? AND period = ?")
        delete = sql("DELETE FROM {p}budget_charges WHERE id = ?")

        def tx(cur: Cursor) -> bool:
            rows = cur.execute(find, (request_id,)).fetchall()
            for row in rows:
                key = (row[1], row[2], row[3])
                cur.execute(lock, key)
                if cur.execute(delete, (row[0],)).rowcount:  # gone already if a peer refunded it
                    cur.execute(update, (int(row[4]), int(row[5]), *key))
            return bool(rows)

        return self.db.write("refund", tx)

    def spent(self, key: tuple[str, str, str]) -> Spent:
        sql = self.db.sql("SELECT epsilon, delta, releases FROM {p}budget_spent "
                          "WHERE principal = ? AND dataset = ? AND period = ?")
        row = self.db.read("read", lambda cur: cur.execute(sql, key).fetchone())
        return Spent(int(row[0]), int(row[1]), int(row[2])) if row else Spent(0, 0, 0)

    def charges(self, *, principal: str | None = None, dataset: str | None = None,
                request_id: str | None = None, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        where: list[str] = ["id > ?"]
        params: list[Any] = [after_id]
        for column, value in (("principal", principal), ("dataset", dataset), ("request_id", request_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = self.db.sql(f"SELECT {', '.join(CHARGE_FIELDS)} FROM {{p}}budget_charges "
                          f"WHERE {' AND '.join(where)} ORDER BY id LIMIT ?")
        rows = self.db.read("read", lambda cur: cur.execute(sql, (*params, limit)).fetchall())
        return [dict(zip(CHARGE_FIELDS, r, strict=True)) for r in rows]

    def close(self) -> None:
        self.db.close()


class SQLiteLedgerStore(SqlLedgerStore):
    """One SQLite file (mode 0600)."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0) -> None:
        super().__init__(SQLiteDatabase(ROLE, path, _setup(""), busy_timeout=busy_timeout))
        self.path = Path(path)


class PostgresLedgerStore(SqlLedgerStore):
    """PostgreSQL tables ``<prefix>budget_spent`` and ``<prefix>budget_charges``, created if missing."""

    def __init__(self, dsn: str, table_prefix: str = "govern_", *, connect_timeout: int = 5,
                 lock_timeout_ms: int = 10_000, statement_timeout_ms: int = 30_000) -> None:
        super().__init__(PostgresDatabase(ROLE, dsn, table_prefix, _setup(table_prefix),
                                          connect_timeout=connect_timeout, lock_timeout_ms=lock_timeout_ms,
                                          statement_timeout_ms=statement_timeout_ms))


def open_store(url: str | Path, *, table_prefix: str = "govern_") -> SqlLedgerStore:
    """``postgresql://…`` → PostgreSQL (tables ``table_prefix*``); ``sqlite:////abs.db``,
    ``sqlite:///rel.db`` or a plain path → SQLite."""
    target = parse_target(url, "ledger")
    if isinstance(target, Path):
        return SQLiteLedgerStore(target)
    return PostgresLedgerStore(target, table_prefix)
