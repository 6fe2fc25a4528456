"""The audit log's tables and statements, over the shared store layer (:mod:`govern.store`).

Three tables, named ``<prefix>audit_log``, ``<prefix>audit_pending`` and ``<prefix>chain_head``:
the log itself, requests reserved but not yet recorded, and a one-row copy of the newest
record's seq and hash (the row every appender locks, so appenders in all processes queue on
it and each one reads the head its predecessor wrote). ``seq`` is the primary key and
``prev_hash`` has a UNIQUE index, so even a writer that skips the lock cannot store a fork: a
second successor of a record is refused by the database (tests/audit/test_forks.py).

Everything that decides what goes into the chain lives here once, so SQLite and PostgreSQL
cannot drift apart. :meth:`AuditStore.commit` writes one group of reservations and records in
one transaction (the group commit of :mod:`govern.audit.writer`).

JSON fields are TEXT holding canonical JSON, so the stored bytes are exactly what was hashed
(JSONB would reorder and renormalise them). Verification decodes them strictly: text that is
not byte-for-byte the canonical form of what it decodes to (a duplicated key, another key
order, added spaces, escaped characters) is handed to the chain check as raw text, so it fails
as an edited record.

Migrations: ``policy_version`` (a column added after the first release) is added on open to
tables an older version created; its old rows hold NULL, which hashes as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from govern.audit.checkpoint import Checkpoint
from govern.audit.record import GENESIS_HASH, AuditRecord, canonical_json, now_iso
from govern.audit.verify import ChainHead, VerifyResult, verify_chain
from govern.errors import AuditError, InvalidRequest
from govern.store import Cursor, Database, Dialect, Role, Setup

ROLE = Role("audit log", AuditError, "govern.audit", "govern-audit")

FIELDS: tuple[str, ...] = (
    "seq", "time", "request_id", "principal", "purpose", "dataset", "action", "outcome",
    "status", "plan_hash", "columns", "rows", "bytes", "detail", "extra", "prev_hash", "hash",
    "policy_version",
)
_JSON_FIELDS = frozenset({"columns", "extra"})
_ADDED_COLUMNS = (("policy_version", "TEXT"),)
MAX_PAGE = 1000
MAX_LATEST = 100_000  # the console's audit explorer and policy dry run read a recent window
_VERIFY_PAGE = 1000


def schema(prefix: str) -> list[str]:
    """DDL valid on both SQLite and PostgreSQL."""
    p = prefix
    return [
        f"""CREATE TABLE IF NOT EXISTS {p}audit_log (
            seq BIGINT PRIMARY KEY, time TEXT NOT NULL, request_id TEXT NOT NULL,
            principal TEXT, purpose TEXT, dataset TEXT, action TEXT NOT NULL,
            outcome TEXT NOT NULL, status INTEGER NOT NULL, plan_hash TEXT,
            columns TEXT NOT NULL, rows BIGINT, bytes BIGINT, detail TEXT, extra TEXT NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL, policy_version TEXT)""",
        f"CREATE INDEX IF NOT EXISTS {p}audit_log_principal ON {p}audit_log (principal, seq)",
        f"CREATE INDEX IF NOT EXISTS {p}audit_log_dataset ON {p}audit_log (dataset, seq)",
        f"CREATE INDEX IF NOT EXISTS {p}audit_log_request ON {p}audit_log (request_id)",
        # A guard behind the head lock: a record has at most one successor, whoever writes.
        f"CREATE UNIQUE INDEX IF NOT EXISTS {p}audit_log_prev ON {p}audit_log (prev_hash)",
        f"""CREATE TABLE IF NOT EXISTS {p}audit_pending (
            request_id TEXT PRIMARY KEY, time TEXT NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {p}chain_head (
            id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL)""",
        f"INSERT INTO {p}chain_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}') "
        "ON CONFLICT (id) DO NOTHING",
    ]


def setup(prefix: str) -> Setup:
    """Create the tables, then add the columns newer versions need to tables older ones made."""
    def run(cur: Cursor, dialect: Dialect) -> None:
        for statement in schema(prefix):
            cur.execute(statement)
        have = dialect.columns(cur, f"{prefix}audit_log")
        for column, kind in _ADDED_COLUMNS:
            if column not in have:
                cur.execute(f"ALTER TABLE {prefix}audit_log ADD COLUMN {column} {kind}")
    return run


def row_to_record(row: Sequence[Any], *, exact: bool = False) -> AuditRecord:
    """Decode a stored row. Tolerant on purpose: a tampered JSON field decodes to its raw text,
    so verification reports the record as edited instead of crashing. With ``exact``, so does
    JSON text that is not byte-for-byte canonical."""
    data = dict(zip(FIELDS, row, strict=True))
    for name in _JSON_FIELDS:
        text = data[name]
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            continue
        if not exact or canonical_json(value) == text:
            data[name] = value
    return AuditRecord(**data)


def record_to_row(rec: AuditRecord) -> tuple[Any, ...]:
    values = rec.to_dict()
    return tuple(canonical_json(values[f]) if f in _JSON_FIELDS else values[f] for f in FIELDS)


class AuditStore:
    """The audit log's statements over one :class:`~govern.store.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"AuditStore({self.db.target!r}, prefix={self.db.prefix!r})"

    def commit(self, reserves: Sequence[str], records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """One transaction: a pending row per reserved request id; then ``records`` (already
        normalised, with their times) sealed one after the other behind the chain head, stored,
        the head moved, their pending rows cleared. All or nothing. Returns the sealed records."""
        sql = self.db.sql
        reserve = sql("INSERT INTO {p}audit_pending (request_id, time) VALUES (?, ?) "
                      "ON CONFLICT (request_id) DO UPDATE SET time = excluded.time")
        head_sql = sql("SELECT seq, hash FROM {p}chain_head WHERE id = 1" + self.db.dialect.lock_clause)
        insert = sql(f"INSERT INTO {{p}}audit_log ({', '.join(FIELDS)}) "
                     f"VALUES ({', '.join('?' for _ in FIELDS)})")
        move_head = sql("UPDATE {p}chain_head SET seq = ?, hash = ? WHERE id = 1")
        unreserve = sql("DELETE FROM {p}audit_pending WHERE request_id = ?")

        def tx(cur: Cursor) -> list[AuditRecord]:
            if reserves:
                now = now_iso()
                cur.executemany(reserve, [(rid, now) for rid in reserves])
            if not records:
                return []
            head = cur.execute(head_sql).fetchone()
            if head is None:
                raise AuditError("audit log unavailable: the chain head is missing")
            seq, prev = int(head[0]), str(head[1])
            sealed: list[AuditRecord] = []
            for rec in records:
                seq += 1
                placed = rec.sealed(seq=seq, time=rec.time, prev_hash=prev)
                sealed.append(placed)
                prev = placed.hash
            cur.executemany(insert, [record_to_row(r) for r in sealed])
            cur.execute(move_head, (seq, prev))
            cur.executemany(unreserve, [(r.request_id,) for r in sealed])
            return sealed

        return self.db.write("append" if records else "reserve", tx)

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
        sql = self.db.sql(f"SELECT {', '.join(FIELDS)} FROM {{p}}audit_log "
                          f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?")
        rows = self.db.read("read", lambda cur: cur.execute(sql, (*params, limit)).fetchall())
        return [row_to_record(r) for r in rows]

    def latest(self, limit: int, principal: str | None = None, dataset: str | None = None) -> list[AuditRecord]:
        """The newest ``limit`` records (of ``principal`` / ``dataset``), oldest first."""
        if not 1 <= limit <= MAX_LATEST:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LATEST}")
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("principal", principal), ("dataset", dataset)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = self.db.sql(f"SELECT {', '.join(FIELDS)} FROM {{p}}audit_log "
                          f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?")
        rows = self.db.read("read", lambda cur: cur.execute(sql, (*params, limit)).fetchall())
        return [row_to_record(r) for r in reversed(rows)]

    def pending(self) -> list[tuple[str, str]]:
        sql = self.db.sql("SELECT request_id, time FROM {p}audit_pending ORDER BY time, request_id")
        rows = self.db.read("read", lambda cur: cur.execute(sql).fetchall())
        return [(str(r[0]), str(r[1])) for r in rows]

    def verify(self, checkpoints: Sequence[Checkpoint] = (), *,
               require_anchor: bool = False) -> VerifyResult:
        """Re-check the whole chain against its head and ``checkpoints``, in one snapshot."""
        head_sql = self.db.sql("SELECT seq, hash FROM {p}chain_head WHERE id = 1")
        page_sql = self.db.sql(f"SELECT {', '.join(FIELDS)} FROM {{p}}audit_log "
                               f"WHERE seq > ? ORDER BY seq LIMIT {_VERIFY_PAGE}")

        def pages(cur: Cursor) -> Iterator[AuditRecord]:
            after = -(2**63)  # below any seq, even a tampered negative one
            while True:
                rows = cur.execute(page_sql, (after,)).fetchall()
                if not rows:
                    return
                for row in rows:
                    yield row_to_record(row, exact=True)
                after = rows[-1][0]

        def tx(cur: Cursor) -> VerifyResult:
            row = cur.execute(head_sql).fetchone()
            head = ChainHead(int(row[0]), str(row[1])) if row is not None else None
            result = verify_chain(pages(cur), head, checkpoints, require_anchor=require_anchor)
            if row is None and result.ok:
                return VerifyResult(False, result.count, None, "the chain head row is missing")
            return result

        return self.db.snapshot("verify", tx)

    def close(self) -> None:
        self.db.close()
