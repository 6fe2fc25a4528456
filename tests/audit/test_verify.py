"""``verify_chain`` on in-memory chains: no database, every kind of break, titled cases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from govern.audit import GENESIS_HASH, AuditRecord, verify_chain
from govern.audit.verify import ChainHead
from tests.audit.conftest import make_record


def chain(n: int) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        rec = make_record(i).sealed(seq=i, time=f"2025-01-01T00:00:{i:02d}.000Z", prev_hash=prev)
        out.append(rec)
        prev = rec.hash
    return out


def head_of(records: list[AuditRecord]) -> ChainHead:
    return ChainHead(records[-1].seq or 0, records[-1].hash)


def test_intact_chain_with_and_without_head() -> None:
    records = chain(6)
    assert verify_chain(records).ok
    result = verify_chain(records, head_of(records))
    assert (result.ok, result.count, result.first_broken) == (True, 6, None)


def test_empty_chain_and_fresh_head() -> None:
    assert verify_chain([], ChainHead(0, GENESIS_HASH)).ok


def _drop(i: int) -> Callable[[list[AuditRecord]], list[AuditRecord]]:
    return lambda rs: rs[:i - 1] + rs[i:]


CASES: list[tuple[str, Callable[[list[AuditRecord]], list[AuditRecord]], int, str]] = [
    # title, tamper, first broken seq, words in the message
    ("field edited", lambda rs: [replace(r, rows=0) if r.seq == 3 else r for r in rs], 3, "edited"),
    ("middle deleted", _drop(4), 4, "missing"),
    ("two in a row deleted", lambda rs: rs[:2] + rs[4:], 3, "3..4 deleted"),
    ("first deleted", _drop(1), 1, "missing"),
    ("renumbered after a deletion",
     lambda rs: rs[:3] + [replace(r, seq=(r.seq or 0) - 1) for r in rs[4:]], 4, "prev_hash"),
    # stores read in seq order, so a swap shows as two records exchanging their seq
    ("two swapped",
     lambda rs: [rs[0], replace(rs[4], seq=2), rs[2], rs[3], replace(rs[1], seq=5), rs[5]],
     2, "prev_hash"),
    ("last edited", lambda rs: [*rs[:5], replace(rs[5], outcome="denied")], 6, "edited"),
]


@pytest.mark.parametrize(("title", "tamper", "broken", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_tampering_names_the_record(title: str, tamper, broken: int, words: str) -> None:
    records = chain(6)
    head = head_of(records)
    result = verify_chain(tamper(records), head)
    assert not result.ok, title
    assert result.first_broken == broken, result.message
    assert words in result.message
    assert result.message.startswith(f"record {broken}:")


def test_truncation_is_caught_only_by_the_head() -> None:
    records = chain(6)
    assert verify_chain(records[:4]).ok  # the records alone cannot tell
    result = verify_chain(records[:4], head_of(records))
    assert (result.ok, result.first_broken) == (False, 5)


def test_records_beyond_the_head_are_reported() -> None:
    records = chain(6)
    result = verify_chain(records, head_of(records[:4]))
    assert (result.ok, result.first_broken) == (False, 5)
