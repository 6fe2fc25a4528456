"""Chain verification: a pure function over records in ``seq`` order, shared by every backend.

Each record must (1) carry the next ``seq`` (a gap means a record was deleted), (2) point at the
hash of the record before it (a mismatch means deletion or reordering), and (3) hash to its own
``hash`` (a mismatch means the record was edited). Finally the separately stored chain head
must name the last record: otherwise the newest records were removed (or added behind the log's
back). The first problem found is reported by ``seq`` so a steward knows where to look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from govern.audit.record import GENESIS_HASH, AuditRecord


@dataclass(frozen=True)
class ChainHead:
    """The log's own memory of its newest record, kept in a one-row ``chain_head`` table."""

    seq: int
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    first_broken: int | None
    message: str


def verify_chain(records: Iterable[AuditRecord], head: ChainHead | None = None) -> VerifyResult:
    """Check every link; report the first broken ``seq`` (or the first missing one).

    >>> verify_chain([]).ok
    True
    """
    count = 0
    last_seq = 0
    last_hash = GENESIS_HASH
    broken: tuple[int, str] | None = None
    for rec in records:
        count += 1
        if broken is None:
            broken = _check_link(rec, last_seq, last_hash)
        last_seq = rec.seq if isinstance(rec.seq, int) else last_seq + 1
        last_hash = rec.hash
    if broken is None and head is not None:
        broken = _check_head(head, last_seq, last_hash)
    if broken is None:
        return VerifyResult(True, count, None, f"chain intact: {count} records")
    seq, why = broken
    return VerifyResult(False, count, seq, f"record {seq}: {why}")


def _check_link(rec: AuditRecord, last_seq: int, last_hash: str) -> tuple[int, str] | None:
    expected = last_seq + 1
    if rec.seq != expected:
        if isinstance(rec.seq, int) and rec.seq > expected:
            missing = f"{expected}" if rec.seq == expected + 1 else f"{expected}..{rec.seq - 1}"
            return expected, f"missing (found {rec.seq} after {last_seq}: record {missing} deleted)"
        return expected, f"unexpected seq {rec.seq!r} after {last_seq}"
    if rec.prev_hash != last_hash:
        return expected, "prev_hash does not match the previous record (deleted or reordered)"
    try:
        actual = rec.compute_hash()
    except (TypeError, ValueError):
        return expected, "record content is not valid (edited)"
    if actual != rec.hash:
        return expected, "hash does not match the record's content (edited)"
    return None


def _check_head(head: ChainHead, last_seq: int, last_hash: str) -> tuple[int, str] | None:
    if head.seq > last_seq:
        return last_seq + 1, (f"missing: the chain head names record {head.seq} but the log ends "
                              f"at {last_seq} (newest records removed)")
    if head.seq < last_seq:
        return head.seq + 1, (f"not covered by the chain head, which names record {head.seq} "
                              f"(records added outside the log)")
    if head.hash != last_hash:
        return last_seq, "hash differs from the one in the chain head (last record edited)"
    return None
