"""The audit log: the contract every surface uses, and the one place that picks a backend.

Invariant 4 (ARCHITECTURE §7): every request has exactly one audit record, and if the audit
write fails the request fails. Hence two steps: :meth:`AuditLog.reserve` is a real write made
*before* any data leaves (so a store that cannot be written refuses the request up front), and
:meth:`AuditLog.append` records the outcome and clears the reservation in the same transaction.
A reservation that is never cleared (a crash mid-stream) stays visible in :meth:`AuditLog.pending`.

Writes go through one writer thread per log (:mod:`govern.audit.writer`), which commits
whatever is waiting as one transaction and then signs a checkpoint of the new head
(:mod:`govern.audit.checkpoint`) before the callers return. :meth:`AuditLog.submit` is for
refusals before authentication: it never blocks and is bounded (coalesced beyond
``queue_limit``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from govern.audit.checkpoint import DEFAULT_FILE as CHECKPOINT_FILE
from govern.audit.checkpoint import Anchor, decode_public_key
from govern.audit.record import AuditRecord, normalized, now_iso
from govern.audit.store import ROLE, AuditStore, setup
from govern.audit.verify import VerifyResult
from govern.audit.writer import GroupWriter
from govern.errors import AuditError
from govern.mask.keys import KeyRing
from govern.store import Database, PostgresDatabase, SQLiteDatabase, parse_target

if TYPE_CHECKING:
    from govern.config import Settings

__all__ = ["AuditLog", "PostgresAuditLog", "SQLiteAuditLog", "VerifyResult", "open_anchor",
           "open_audit_log"]

log = logging.getLogger("govern.audit")

DEFAULT_FILE = "audit.db"
READ_WAIT = 2.0
"""Seconds a read waits for records submitted before it to be committed."""


class AuditLog:
    """Append-only, hash-chained, anchored by signed checkpoints; safe for many threads and
    many processes. Every storage failure is an ``AuditError``. Opens lazily: nothing touches
    the store (or starts a thread) before the first call."""

    def __init__(self, db: Database, *, anchor: Anchor | None = None, queue_limit: int = 256,
                 submit_delay: float = 0.1, batch_max: int = 256) -> None:
        self.store = AuditStore(db)
        self.anchor = anchor
        self._signing = anchor is not None and anchor.signer is not None
        self._adopted = False
        self._writer = GroupWriter(self.store.commit, self._checkpoint if self._signing else None,
                                   queue_limit=queue_limit, delay=submit_delay,
                                   batch_max=batch_max)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store.db.target!r}, table_prefix={self.store.db.prefix!r})"

    @property
    def db(self) -> Database:
        return self.store.db

    @property
    def prefix(self) -> str:
        """The table name prefix ("" for SQLite)."""
        return self.store.db.prefix

    # -- writing --------------------------------------------------------------------------------
    def reserve(self, request_id: str) -> None:
        """Prove the log is writable now: the checkpoint file can be appended to, and a pending
        row for ``request_id`` is committed."""
        if not request_id:
            raise AuditError("audit log: a request id is required")
        if self._signing and self.anchor is not None:
            try:
                self.anchor.open()
            except OSError as exc:
                log.warning("audit checkpoint file %s cannot be written: %s", self.anchor.path,
                            exc.strerror)
                raise AuditError("audit log unavailable: cannot write checkpoint "
                                 f"({type(exc).__name__})") from None
        self._writer.reserve(request_id)

    def append(self, record: AuditRecord) -> AuditRecord:
        """Seal and store ``record`` (seq, prev_hash, hash assigned; time if empty); clear its
        pending row. Returns once the record is committed and anchored. All or nothing."""
        return self._writer.append(_prepared(record))

    def submit(self, record: AuditRecord) -> None:
        """Queue ``record`` without waiting; it is committed within about ``submit_delay``
        seconds. Beyond ``queue_limit`` waiting records, further ones are coalesced into one
        record (``extra["coalesced"]`` = how many, ``first_request_id``/``last_request_id``).
        ``AuditError`` only if the record is invalid or the log is closed."""
        self._writer.submit(_prepared(record))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far (submitted records too) is committed;
        ``AuditError`` if that does not happen within ``timeout`` seconds."""
        self._writer.flush(timeout)

    @property
    def coalesced(self) -> int:
        """How many submitted records were summed up into coalesced records so far."""
        return self._writer.coalesced

    def _checkpoint(self, sealed: list[AuditRecord]) -> None:
        assert self.anchor is not None
        first = sealed[0].seq or 1
        if not self._adopted:
            # The first checkpoint written to an empty file adopts the log as it stands
            # (a log older than checkpoints, or one whose anchor moved): trust on first use.
            first = 1 if self.anchor.is_empty() else first
            self._adopted = True
        last = sealed[-1]
        assert last.seq is not None
        self.anchor.write(first, last.seq, last.hash, last.time)

    # -- reading --------------------------------------------------------------------------------
    def records(self, after_seq: int = 0, limit: int = 100, principal: str | None = None,
                dataset: str | None = None, request_id: str | None = None) -> list[AuditRecord]:
        """Up to ``limit`` records with ``seq > after_seq`` in seq order; page by passing the
        last seq seen. Records submitted before the call are committed first (waiting at most
        ``READ_WAIT`` seconds), so a reader sees what this process has already handed in."""
        self._settle()
        return self.store.records(after_seq, limit, principal, dataset, request_id)

    def latest(self, limit: int = 1000, principal: str | None = None,
               dataset: str | None = None) -> list[AuditRecord]:
        """The newest ``limit`` records (of ``principal`` / ``dataset``), oldest first."""
        self._settle()
        return self.store.latest(limit, principal, dataset)

    def _settle(self) -> None:
        try:
            self._writer.flush(READ_WAIT)
        except AuditError as exc:  # the store is failing; the read will say so, or show what it has
            log.warning("audit read without the newest submitted records: %s", exc)

    def pending(self) -> list[tuple[str, str]]:
        """``(request_id, time)`` of reservations never completed."""
        return self.store.pending()

    def verify(self) -> VerifyResult:
        """Re-check the whole chain and every signed checkpoint; name the first problem."""
        self._settle()
        if self.anchor is None:
            return self.store.verify()
        found = self.anchor.read()
        if found.problem is not None:
            return VerifyResult(False, 0, None, found.problem)
        return self.store.verify(found.checkpoints, require_anchor=self.anchor.can_check)

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is queued (waiting at most ``timeout`` seconds), then release the store."""
        self._writer.close(timeout)
        self.store.close()
        if self.anchor is not None:
            self.anchor.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SQLiteAuditLog(AuditLog):
    """The embedded default: one SQLite file (mode 0600) under the state folder."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0,
                 anchor: Anchor | None = None, queue_limit: int = 256,
                 submit_delay: float = 0.1) -> None:
        self.path = Path(path)
        super().__init__(SQLiteDatabase(ROLE, self.path, setup(""), busy_timeout=busy_timeout),
                         anchor=anchor, queue_limit=queue_limit, submit_delay=submit_delay)

    def __repr__(self) -> str:
        return f"SQLiteAuditLog({str(self.path)!r})"


class PostgresAuditLog(AuditLog):
    """Shared by several gateway processes: tables ``<prefix>audit_log``, ``<prefix>audit_pending``
    and ``<prefix>chain_head`` in one PostgreSQL database, created if missing."""

    def __init__(self, dsn: str, table_prefix: str = "govern_", *, connect_timeout: int = 5,
                 lock_timeout_ms: int = 10_000, statement_timeout_ms: int = 30_000,
                 anchor: Anchor | None = None, queue_limit: int = 256,
                 submit_delay: float = 0.1) -> None:
        db = PostgresDatabase(ROLE, dsn, table_prefix, setup(table_prefix),
                              connect_timeout=connect_timeout, lock_timeout_ms=lock_timeout_ms,
                              statement_timeout_ms=statement_timeout_ms)
        super().__init__(db, anchor=anchor, queue_limit=queue_limit, submit_delay=submit_delay)


def _prepared(record: AuditRecord) -> AuditRecord:
    """Validated and normalised in the caller's thread, stamped with the time it was handed in."""
    try:
        rec = normalized(record)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"audit record rejected: {exc}") from None
    return replace(rec, seq=None, prev_hash="", hash="", time=rec.time or now_iso())


def open_anchor(settings: Settings, keys: KeyRing | None = None) -> Anchor:
    """The checkpoint anchor the settings describe: ``audit_checkpoint_file`` (default
    ``<state_dir>/audit.checkpoints``), signed with ``keys`` (default: the masking key ring,
    when one is configured) and checked with those keys plus ``audit_public_keys``. Without
    any key it can neither sign nor check: a log written so is not anchored."""
    path = settings.audit_checkpoint_file or Path(settings.state_dir) / CHECKPOINT_FILE
    extra = {kid: decode_public_key(text, kid) for kid, text in settings.audit_public_keys.items()}
    if keys is None and (settings.masking_key is not None or settings.masking_key_file is not None):
        keys = KeyRing.from_settings(settings)
    if keys is not None:
        return Anchor.from_keys(path, keys, extra=extra)
    return Anchor(path, None, extra)


def open_audit_log(target: Settings | str | Path, *, table_prefix: str | None = None,
                   keys: KeyRing | None = None, anchor: Anchor | None = None,
                   queue_limit: int | None = None, submit_delay: float = 0.1) -> AuditLog:
    """Open the log ``target`` names.

    - ``Settings``: its ``audit_url``, else ``<state_dir>/audit.db``; tables
      ``audit_table_prefix``; anchored by :func:`open_anchor` (``keys`` is the gateway's
      masking :class:`~govern.mask.keys.KeyRing`, read from the settings when not given);
      at most ``audit_queue_limit`` submitted records wait;
    - ``postgresql://…`` or ``postgres://…``: :class:`PostgresAuditLog` (tables ``table_prefix*``);
    - ``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db`` or a plain path:
      :class:`SQLiteAuditLog`.

    With a URL or path the log is anchored only by an explicit ``anchor``. No I/O happens here.
    """
    limit = queue_limit or 256
    if not isinstance(target, str | Path):
        settings = target
        if anchor is None:
            anchor = open_anchor(settings, keys)
            if anchor.signer is None:
                log.warning("audit log not anchored: no masking key configured, so no "
                            "checkpoints are signed and a cut tail cannot be detected")
        prefix = table_prefix if table_prefix is not None else settings.audit_table_prefix
        limit = queue_limit or settings.audit_queue_limit
        target = settings.audit_url or (Path(settings.state_dir) / DEFAULT_FILE).resolve()
    else:
        prefix = table_prefix if table_prefix is not None else "govern_"
    parsed = parse_target(target, "audit")
    if isinstance(parsed, Path):
        return SQLiteAuditLog(parsed, anchor=anchor, queue_limit=limit, submit_delay=submit_delay)
    return PostgresAuditLog(parsed, prefix, anchor=anchor, queue_limit=limit,
                            submit_delay=submit_delay)

