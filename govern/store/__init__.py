"""The SQL store layer the audit log and the privacy budget ledger share.

Both keep their rows in SQLite (the embedded default: one file under ``state_dir``) or in
PostgreSQL (shared by several gateway processes). What they repeat lives here once: opening
SQLite (WAL, busy timeout, ``synchronous=FULL``, a 0600 file), the PostgreSQL connection
(reconnect after a failure, ``lock_timeout``/``statement_timeout``, tables created under an
advisory lock), transactions that exclude every other writer in this process and in others,
scrubbing passwords from messages, and turning any driver error into the caller's own
:class:`~govern.errors.GovernError` subclass (``AuditError``, ``LedgerError``).

``database`` holds the contract and the error role, ``sqlite`` and ``postgres`` the two
backends, ``url`` the one parser of ``sqlite:///…`` / ``postgresql://…`` targets.
"""

from __future__ import annotations

from govern.store.database import Cursor, Database, Dialect, Role, Setup, check_prefix
from govern.store.postgres import PostgresDatabase, describe_dsn
from govern.store.sqlite import SQLiteDatabase
from govern.store.url import parse_target

__all__ = [
    "Cursor",
    "Database",
    "Dialect",
    "PostgresDatabase",
    "Role",
    "SQLiteDatabase",
    "Setup",
    "check_prefix",
    "describe_dsn",
    "parse_target",
]
