"""The contract every backend keeps, and what a caller tells the layer about itself.

A :class:`Database` runs a function (given a DB-API cursor) in one of three ways:

- :meth:`Database.write`: one transaction that excludes every other writer of the same store,
  in this process (a lock) and in others (SQLite's write lock; PostgreSQL row locks the
  caller takes with ``dialect.lock_clause``);
- :meth:`Database.read`: a plain read on the shared connection;
- :meth:`Database.snapshot`: a consistent, read-only view on a connection of its own (long
  reads such as verifying a whole chain never block writers).

Every failure that is not already a :class:`~govern.errors.GovernError` (or one of the role's
``passthrough`` exceptions, which roll the transaction back and propagate as they are) becomes
``role.error`` with a message that names the operation and the driver's exception class, but
no path, host or password; the full, scrubbed reason goes to the role's logger.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from govern.errors import GovernError, InvalidRequest

T = TypeVar("T")

_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class Cursor(Protocol):
    """The DB-API cursor subset both sqlite3 and psycopg provide."""

    def execute(self, query: Any, params: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, query: Any, params_seq: Iterable[Sequence[Any]], /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class Dialect:
    """The few ways the two SQL dialects differ for our statements."""

    name: str  # "sqlite" | "postgresql"
    placeholder: str  # "?" | "%s"
    lock_clause: str  # "" (SQLite's BEGIN IMMEDIATE already holds the write lock) | " FOR UPDATE"
    serial: str  # an auto-increment primary key column type

    def columns(self, cur: Cursor, table: str) -> set[str]:
        """Names of ``table``'s columns (for migrations that add one)."""
        if self.name == "sqlite":
            return {str(row[1]) for row in cur.execute(f"PRAGMA table_info({table})").fetchall()}
        rows = cur.execute("SELECT column_name FROM information_schema.columns "
                           "WHERE table_schema = current_schema() AND table_name = %s",
                           (table,)).fetchall()
        return {str(row[0]) for row in rows}


SQLITE = Dialect("sqlite", "?", "", "INTEGER PRIMARY KEY AUTOINCREMENT")
POSTGRESQL = Dialect("postgresql", "%s", " FOR UPDATE", "BIGSERIAL PRIMARY KEY")

Setup = Callable[[Cursor, Dialect], None]
"""Creates (and migrates) a caller's tables; runs once per :class:`Database`, in a write
transaction (under an advisory lock on PostgreSQL, so processes starting together do not race
on ``CREATE TABLE``)."""


@dataclass(frozen=True)
class Role:
    """Who uses a store, so that its errors and log lines speak the caller's language."""

    name: str  # "audit log", "privacy budget ledger"
    error: type[GovernError]
    logger: str
    lock_namespace: str  # advisory-lock key space on PostgreSQL, e.g. "govern-audit"
    passthrough: tuple[type[BaseException], ...] = ()

    def closed(self) -> GovernError:
        return self.error(f"{self.name} is closed")

    def unavailable(self, op: str, exc: BaseException, target: str,
                    scrub: Callable[[str], str]) -> GovernError:
        """An error for the caller (no paths, hosts or passwords); the full, scrubbed reason
        for the operator's log."""
        text = str(exc).strip()
        reason = scrub(text.splitlines()[0] if text else "")
        logging.getLogger(self.logger).warning("%s %s failed on %s: %s: %s", self.name, op,
                                               target, type(exc).__name__, reason)
        return self.error(f"{self.name} unavailable: cannot {op} ({type(exc).__name__})")

    def missing_driver(self) -> GovernError:
        return self.error(f"{self.name} unavailable: PostgreSQL needs psycopg "
                          "(pip install 'govern[server]')")


def check_prefix(prefix: str, role: Role | None = None) -> str:
    """Table names are spliced into SQL, so a prefix must be a plain lowercase identifier."""
    if prefix and not _PREFIX.match(prefix):
        what = f"{role.name} table prefix" if role else "table prefix"
        raise InvalidRequest(f"invalid {what} {prefix!r}: use lowercase letters, digits and _")
    return prefix


class Database(ABC):
    """One store of one role. Opens lazily: the first call connects and runs ``setup``; a
    store that cannot be reached fails that call with ``role.error``. Tables are set up once
    per instance: if they vanish later, calls fail instead of silently starting afresh."""

    dialect: Dialect

    def __init__(self, role: Role, prefix: str, setup: Setup) -> None:
        self.role = role
        self.prefix = check_prefix(prefix, role)
        self._setup = setup

    def sql(self, text: str) -> str:
        """``{p}`` becomes the table prefix and ``?`` the dialect's placeholder."""
        text = text.format(p=self.prefix)
        return text if self.dialect.placeholder == "?" else text.replace("?", self.dialect.placeholder)

    @abstractmethod
    def write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` in a transaction no other writer of this store can interleave with;
        commit if it returns, roll back if it raises."""

    @abstractmethod
    def read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` on the shared connection, outside any write."""

    @abstractmethod
    def snapshot(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` against one consistent, read-only view, on a connection of its own."""

    @property
    @abstractmethod
    def target(self) -> str:
        """Where the store lives, safe to log (no password)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; later calls fail with ``role.closed()``."""

    def scrub(self, text: str) -> str:
        return text

    def _fail(self, op: str, exc: BaseException) -> GovernError:
        return self.role.unavailable(op, exc, self.target, self.scrub)

    def _passes(self, exc: BaseException) -> bool:
        return isinstance(exc, (GovernError, *self.role.passthrough))
