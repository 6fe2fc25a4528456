"""The audit log contract, and the one place that picks a backend.

Invariant 4 (ARCHITECTURE §7): every data-bearing response has exactly one audit record, and if
the audit write fails the request fails. Hence two steps: :meth:`AuditLog.reserve` is a real
write made *before* any data leaves (so a store that cannot be written refuses the request up
front), and :meth:`AuditLog.append` records the outcome and clears the reservation in the same
transaction. A reservation that is never cleared (a crash mid-stream) stays visible in
:meth:`AuditLog.pending`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from govern.audit.postgres import PostgresAuditLog
from govern.audit.record import AuditRecord
from govern.audit.sqlite import SQLiteAuditLog
from govern.audit.verify import VerifyResult
from govern.errors import InvalidRequest

if TYPE_CHECKING:
    from govern.config import Settings

__all__ = ["AuditLog", "PostgresAuditLog", "SQLiteAuditLog", "VerifyResult", "open_audit_log"]

DEFAULT_FILE = "audit.db"


class AuditLog(Protocol):
    """Append-only, hash-chained, safe for many threads and many processes. Every storage
    failure is an ``AuditError``."""

    def reserve(self, request_id: str) -> None:
        """Prove the store is writable now by writing a pending row for ``request_id``."""
        ...

    def append(self, record: AuditRecord) -> AuditRecord:
        """Seal and store ``record`` (seq, time, prev_hash, hash assigned); clear its pending
        row. All or nothing. Returns the stored record."""
        ...

    def records(self, after_seq: int = 0, limit: int = 100, principal: str | None = None,
                dataset: str | None = None) -> list[AuditRecord]:
        """Up to ``limit`` records with ``seq > after_seq`` in seq order; page by passing the
        last seq seen."""
        ...

    def pending(self) -> list[tuple[str, str]]:
        """``(request_id, time)`` of reservations never completed."""
        ...

    def verify(self) -> VerifyResult:
        """Re-check the whole chain; name the first broken seq."""
        ...

    def close(self) -> None: ...


def open_audit_log(target: Settings | str | Path, *, table_prefix: str = "govern_") -> AuditLog:
    """Open the log ``target`` names.

    - ``Settings``: its ``audit_url``, else ``<state_dir>/audit.db``;
    - ``postgresql://…`` or ``postgres://…``: :class:`PostgresAuditLog` (tables ``table_prefix*``);
    - ``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db`` (SQLAlchemy's convention)
      or a plain path: :class:`SQLiteAuditLog`.
    """
    if not isinstance(target, str | Path):
        url = target.audit_url
        target = url if url else Path(target.state_dir) / DEFAULT_FILE
    if isinstance(target, Path):
        return SQLiteAuditLog(target)
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresAuditLog(target, table_prefix)
    if target.startswith("sqlite://"):
        path = target.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise InvalidRequest("a SQLite audit URL looks like sqlite:///relative.db or "
                             "sqlite:////absolute/path.db")
        return SQLiteAuditLog(Path(path[1:]))
    if "://" in target:
        scheme = target.split("://", 1)[0]
        raise InvalidRequest(f"unsupported audit store {scheme!r}: use sqlite:/// or postgresql://")
    return SQLiteAuditLog(Path(target))
