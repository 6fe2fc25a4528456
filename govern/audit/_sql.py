"""What both SQL backends share: the schema, the statements, and the append algorithm.

A backend only says how to open a connection and how to run a function inside (a) a write
transaction that excludes every other appender, in this process and in others, (b) a plain
read and (c) a read-only snapshot. Everything that decides what goes into the chain lives here
once, so SQLite and PostgreSQL cannot drift apart.

Three tables, named ``<prefix>audit_log``, ``<prefix>audit_pending`` and ``<prefix>chain_head``:
the log itself, requests reserved but not yet recorded, and a one-row copy of the newest
record's seq and hash (the row appenders lock, and the witness that the newest records were not
cut off).
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from govern.audit.record import GENESIS_HASH, AuditRecord, canonical_json, normalized, now_iso
from govern.audit.verify import ChainHead, VerifyResult, verify_chain
from govern.errors import AuditError, InvalidRequest

logger = logging.getLogger("govern.audit")

T = TypeVar("T")

FIELDS: tuple[str, ...] = (
    "seq", "time", "request_id", "principal", "purpose", "dataset", "action", "outcome",
    "status", "plan_hash", "columns", "rows", "bytes", "detail", "extra", "prev_hash", "hash",
)
_JSON_FIELDS = frozenset({"columns", "extra"})
_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
MAX_PAGE = 1000
_VERIFY_PAGE = 1000


class Cursor(Protocol):
    """The DB-API cursor subset both sqlite3 and psycopg provide."""

    def execute(self, query: Any, params: Sequence[Any] = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def schema(prefix: str) -> list[str]:
    """DDL valid on both SQLite and PostgreSQL. JSON fields are TEXT holding canonical JSON, so
    the stored bytes are exactly what was hashed (JSONB would reorder and renormalise them)."""
    p = prefix
    return [
        f"""CREATE TABLE IF NOT EXISTS {p}audit_log (
            seq BIGINT PRIMARY KEY, time TEXT NOT NULL, request_id TEXT NOT NULL,
            principal TEXT, purpose TEXT, dataset TEXT, action TEXT NOT NULL,
            outcome TEXT NOT NULL, status INTEGER NOT NULL, plan_hash TEXT,
            columns TEXT NOT NULL, rows BIGINT, bytes BIGINT, detail TEXT, extra TEXT NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS {p}audit_log_principal ON {p}audit_log (principal, seq)",
        f"CREATE INDEX IF NOT EXISTS {p}audit_log_dataset ON {p}audit_log (dataset, seq)",
        f"CREATE INDEX IF NOT EXISTS {p}audit_log_request ON {p}audit_log (request_id)",
        f"""CREATE TABLE IF NOT EXISTS {p}audit_pending (
            request_id TEXT PRIMARY KEY, time TEXT NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {p}chain_head (
            id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL)""",
        f"INSERT INTO {p}chain_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}') "
        "ON CONFLICT (id) DO NOTHING",
    ]


def check_prefix(prefix: str) -> str:
    """Table names are spliced into SQL, so the prefix must be a plain lowercase identifier."""
    if prefix and not _PREFIX.match(prefix):
        raise InvalidRequest(f"invalid table prefix {prefix!r}: use lowercase letters, digits and _")
    return prefix


def row_to_record(row: Sequence[Any]) -> AuditRecord:
    """Decode a stored row. Tolerant on purpose: a tampered JSON field still decodes (to its raw
    text), so verification reports the record as edited instead of crashing."""
    data = dict(zip(FIELDS, row, strict=True))
    for name in _JSON_FIELDS:
        try:
            data[name] = json.loads(data[name])
        except (TypeError, ValueError):
            pass
    return AuditRecord(**data)


def record_to_row(rec: AuditRecord) -> tuple[Any, ...]:
    values = rec.to_dict()
    return tuple(canonical_json(values[f]) if f in _JSON_FIELDS else values[f] for f in FIELDS)


class SqlAuditLog(ABC):
    """The append/read/verify logic over any backend that implements the three hooks."""

    placeholder = "?"
    head_lock_clause = ""  # PostgreSQL: " FOR UPDATE"

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)

    # -- hooks (each backend implements them) --------------------------------------------------
    @abstractmethod
    def _write(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` in a transaction that no other appender can interleave with."""

    @abstractmethod
    def _read(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` in a read-only transaction."""

    @abstractmethod
    def _snapshot(self, op: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` against one consistent, read-only view (verification reads many pages)."""

    @abstractmethod
    def _target(self) -> str:
        """Where the log lives, safe to log (no password)."""

    def _scrub(self, text: str) -> str:
        return text

    # -- helpers ------------------------------------------------------------------------------
    def _sql(self, text: str) -> str:
        text = text.format(p=self.prefix)
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _fail(self, op: str, exc: BaseException) -> AuditError:
        """An ``AuditError`` for the caller (no paths, hosts or passwords), the full, scrubbed
        reason for the operator's log."""
        reason = self._scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        logger.warning("audit log %s failed on %s: %s: %s", op, self._target(),
                       type(exc).__name__, reason)
        return AuditError(f"audit log unavailable: cannot {op} ({type(exc).__name__})")

    # -- AuditLog -----------------------------------------------------------------------------
    def reserve(self, request_id: str) -> None:
        if not request_id:
            raise AuditError("audit log: a request id is required")
        sql = self._sql("INSERT INTO {p}audit_pending (request_id, time) VALUES (?, ?) "
                        "ON CONFLICT (request_id) DO UPDATE SET time = excluded.time")
        self._write("reserve", lambda cur: cur.execute(sql, (request_id, now_iso())))

    def append(self, record: AuditRecord) -> AuditRecord:
        try:
            rec = normalized(record)
        except (TypeError, ValueError) as exc:
            raise AuditError(f"audit record rejected: {exc}") from None
        head_sql = self._sql("SELECT seq, hash FROM {p}chain_head WHERE id = 1"
                             + self.head_lock_clause)
        insert_sql = self._sql(f"INSERT INTO {{p}}audit_log ({', '.join(FIELDS)}) "
                               f"VALUES ({', '.join('?' for _ in FIELDS)})")
        move_head = self._sql("UPDATE {p}chain_head SET seq = ?, hash = ? WHERE id = 1")
        unreserve = self._sql("DELETE FROM {p}audit_pending WHERE request_id = ?")

        def tx(cur: Cursor) -> AuditRecord:
            head = cur.execute(head_sql).fetchone()
            if head is None:
                raise AuditError("audit log unavailable: the chain head is missing")
            sealed = rec.sealed(seq=int(head[0]) + 1, time=rec.time or now_iso(),
                                prev_hash=str(head[1]))
            cur.execute(insert_sql, record_to_row(sealed))
            cur.execute(move_head, (sealed.seq, sealed.hash))
            cur.execute(unreserve, (sealed.request_id,))
            return sealed

        return self._write("append", tx)

    def records(self, after_seq: int = 0, limit: int = 100, principal: str | None = None,
                dataset: str | None = None, request_id: str | None = None) -> list[AuditRecord]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        where: list[str] = ["seq > ?"]
        params: list[Any] = [after_seq]
        for column, value in (("principal", principal), ("dataset", dataset),
                              ("request_id", request_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = self._sql(f"SELECT {', '.join(FIELDS)} FROM {{p}}audit_log "
                        f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?")
        rows = self._read("read", lambda cur: cur.execute(sql, (*params, limit)).fetchall())
        return [row_to_record(r) for r in rows]

    def pending(self) -> list[tuple[str, str]]:
        sql = self._sql("SELECT request_id, time FROM {p}audit_pending ORDER BY time, request_id")
        rows = self._read("read", lambda cur: cur.execute(sql).fetchall())
        return [(str(r[0]), str(r[1])) for r in rows]

    def verify(self) -> VerifyResult:
        head_sql = self._sql("SELECT seq, hash FROM {p}chain_head WHERE id = 1")
        page_sql = self._sql(f"SELECT {', '.join(FIELDS)} FROM {{p}}audit_log "
                             f"WHERE seq > ? ORDER BY seq LIMIT {_VERIFY_PAGE}")

        def pages(cur: Cursor) -> Iterator[AuditRecord]:
            after = -(2**63)  # below any seq, even a tampered negative one
            while True:
                rows = cur.execute(page_sql, (after,)).fetchall()
                if not rows:
                    return
                for row in rows:
                    yield row_to_record(row)
                after = rows[-1][0]

        def tx(cur: Cursor) -> VerifyResult:
            row = cur.execute(head_sql).fetchone()
            head = ChainHead(int(row[0]), str(row[1])) if row is not None else None
            result = verify_chain(pages(cur), head)
            if row is None and result.ok:
                return VerifyResult(False, result.count, None, "the chain head row is missing")
            return result

        return self._snapshot("verify", tx)
