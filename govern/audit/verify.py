"""Chain verification: a pure function over records in ``seq`` order, shared by every backend.

Each record must (1) carry the next ``seq`` (a gap means a record was deleted), (2) point at the
hash of the record before it (a mismatch means deletion or reordering), and (3) hash to its own
``hash`` (a mismatch means the record was edited; the store hands over JSON text that is not
byte-for-byte canonical as its raw text, so that fails here too). Then the anchors:

- every signed checkpoint (:mod:`govern.audit.checkpoint`) must name a record that is in the log
  with exactly that hash: a log that ends before the newest checkpoint, or is empty while
  checkpoints exist, had its newest records removed; a different hash means rewritten records;
- the store's own ``chain_head`` row must name the last record (it catches a careless cut, but
  a writer of the store can move it, which is why checkpoints exist);
- with ``require_anchor`` (a verifier that holds checkpoint keys), a non-empty log must be
  covered by at least one checkpoint: a missing or emptied checkpoint file is a failure.

The first problem found is reported by ``seq`` so a steward knows where to look.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from govern.audit.checkpoint import Checkpoint
from govern.audit.record import GENESIS_HASH, AuditRecord


@dataclass(frozen=True)
class ChainHead:
    """The log's own memory of its newest record, kept in a one-row ``chain_head`` table."""

    seq: int
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    """What verification found. ``first_broken`` is the seq to look at (None when the problem
    is not one record's, e.g. a bad checkpoint signature)."""

    ok: bool
    count: int
    first_broken: int | None
    message: str
    first_seq: int | None = None  # seq range of the records read
    last_seq: int | None = None
    checkpoint: Checkpoint | None = None  # the newest checkpoint checked against
    checkpoints: int = 0  # how many checkpoints were checked
    uncovered: int = 0  # records in no checkpoint's first..seq range (appended elsewhere)


def verify_chain(records: Iterable[AuditRecord], head: ChainHead | None = None,
                 checkpoints: Sequence[Checkpoint] = (), *,
                 require_anchor: bool = False) -> VerifyResult:
    """Check every link and every checkpoint; report the first broken ``seq``.

    ``checkpoints`` must already be signature-checked (:meth:`Anchor.read`).

    >>> verify_chain([]).ok
    True
    """
    marks = sorted(checkpoints, key=lambda c: c.seq)
    ranges = _merged((c.first, c.seq) for c in marks)
    count = uncovered = 0
    first_seq: int | None = None
    last_seq = 0
    last_hash = GENESIS_HASH
    broken: tuple[int, str] | None = None
    mark = span = 0
    for rec in records:
        count += 1
        if broken is None:
            broken = _check_link(rec, last_seq, last_hash)
        seq = rec.seq if isinstance(rec.seq, int) else last_seq + 1
        first_seq = seq if first_seq is None else first_seq
        while mark < len(marks) and marks[mark].seq <= seq:
            if broken is None:
                broken = _check_mark(marks[mark], seq, rec.hash)
            mark += 1
        while span < len(ranges) and ranges[span][1] < seq:
            span += 1
        if span >= len(ranges) or ranges[span][0] > seq:
            uncovered += 1
        last_seq, last_hash = seq, rec.hash
    if broken is None and mark < len(marks):
        newest = marks[-1]
        where = "the log is empty" if count == 0 else f"the log ends at {last_seq}"
        broken = last_seq + 1, (f"missing: signed checkpoint (line {newest.line}) names record "
                                f"{newest.seq} but {where} (newest records removed)")
    if broken is None and head is not None:
        broken = _check_head(head, last_seq, last_hash)
    if broken is None and require_anchor and count and not marks:
        return VerifyResult(False, count, None, f"not anchored: no signed checkpoint covers the "
                            f"log's {count} records (checkpoint file missing or emptied)",
                            first_seq, last_seq or None)
    newest_mark = marks[-1] if marks else None
    if broken is None:
        return VerifyResult(True, count, None, f"chain intact: {count} records", first_seq,
                            last_seq or None, newest_mark, len(marks), uncovered)
    seq, why = broken
    return VerifyResult(False, count, seq, f"record {seq}: {why}", first_seq, last_seq or None,
                        newest_mark, len(marks), uncovered)


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


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


def _check_mark(mark: Checkpoint, seq: int, hash_: str) -> tuple[int, str] | None:
    if mark.seq < seq:
        return mark.seq, f"missing: signed checkpoint (line {mark.line}) names it"
    if mark.hash != hash_:
        return seq, (f"hash differs from the signed checkpoint (line {mark.line}): records up to "
                     "here were rewritten")
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
