"""The AuditLog contract on both real backends: reserve/pending, append, records, reopen."""

from __future__ import annotations

import re

import pytest

from govern.audit import AuditLog
from govern.errors import AuditError, InvalidRequest
from tests.audit.conftest import Store, fill, make_record

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# -- reserve / pending --------------------------------------------------------------------------

def test_reserve_alone_shows_in_pending(log: AuditLog) -> None:
    log.reserve("req-a")
    log.reserve("req-b")
    pending = log.pending()
    assert [rid for rid, _ in pending] == ["req-a", "req-b"]
    assert all(ISO_MS.match(t) for _, t in pending)


def test_reserve_then_append_leaves_no_pending_row(log: AuditLog) -> None:
    log.reserve("req-0001")
    log.reserve("req-other")
    log.append(make_record(1))
    assert [rid for rid, _ in log.pending()] == ["req-other"]


def test_reserving_the_same_request_twice_is_one_pending_row(log: AuditLog) -> None:
    log.reserve("req-0001")
    log.reserve("req-0001")
    assert len(log.pending()) == 1
    log.append(make_record(1))
    assert log.pending() == []


# -- append -------------------------------------------------------------------------------------

def test_append_assigns_seq_time_and_hashes_and_reads_back_equal(log: AuditLog) -> None:
    rec = make_record(1, detail="ok: naïve ünïcode ✓", extra={"sql": "select 'é'", "ids": (1, 2)})
    stored = log.append(rec)
    assert stored.seq == 1 and ISO_MS.match(stored.time)
    assert len(stored.hash) == 64 and stored.hash == stored.compute_hash()
    assert stored.extra == {"sql": "select 'é'", "ids": [1, 2]}  # stored as JSON gives it back
    assert log.records() == [stored]


def test_a_supplied_time_is_kept(log: AuditLog) -> None:
    stored = log.append(make_record(1, time="2024-05-01T10:00:00.000Z"))
    assert stored.time == "2024-05-01T10:00:00.000Z"


def test_caller_seq_and_hashes_are_ignored(log: AuditLog) -> None:
    stored = log.append(make_record(1, seq=77, prev_hash="x", hash="y"))
    assert stored.seq == 1 and stored.hash != "y" and log.verify().ok


def test_api_keys_and_bearer_tokens_are_redacted(log: AuditLog) -> None:
    key = "gk_0a1b2c3d_S3cr3tS3cr3tS3cr3t-abc"
    stored = log.append(make_record(1, detail=f"bad key {key}",
                                    extra={"headers": {"authorization": "Bearer eyJabc.eyJdef.sig-1234567"}}))
    text = repr(log.records())
    assert key not in text and "eyJabc" not in text and "S3cr3t" not in text
    assert stored.detail == "bad key gk_[redacted]"
    assert stored.extra == {"headers": {"authorization": "Bearer [redacted]"}}
    # ordinary words after "bearer" are not secrets
    assert log.append(make_record(2, detail="missing bearer token")).detail == "missing bearer token"
    assert log.verify().ok


@pytest.mark.parametrize(
    ("title", "changes"),
    [
        ("unknown outcome", {"outcome": "maybe"}),
        ("no request id", {"request_id": ""}),
        ("no action", {"action": ""}),
        ("status not an int", {"status": "200"}),
        ("NaN in extra", {"extra": {"x": float("nan")}}),
        ("non-string column action", {"columns": {"a": 1}}),
    ],
)
def test_an_invalid_record_is_refused_and_nothing_is_written(log: AuditLog, title: str,
                                                            changes: dict) -> None:
    with pytest.raises(AuditError, match="audit record rejected"):
        log.append(make_record(1, **changes))
    assert log.records() == [], title


def test_append_is_all_or_nothing(log: AuditLog, store: Store) -> None:
    fill(log, 3)
    log.reserve("req-0004")
    # Make the last statement of the append transaction (clearing the reservation) fail.
    store.sql("DROP TABLE {p}audit_pending")
    with pytest.raises(AuditError):
        log.append(make_record(4))
    assert [r.seq for r in log.records()] == [1, 2, 3]
    assert log.verify().ok  # chain head did not move either


def test_a_reopened_log_continues_the_chain(store: Store) -> None:
    first = store.open()
    fill(first, 3)
    first.close()
    second = store.open()
    try:
        assert second.append(make_record(4)).seq == 4
        assert second.verify().ok and second.verify().count == 4
    finally:
        second.close()


def test_a_closed_log_refuses_calls(store: Store) -> None:
    closed = store.open()
    closed.reserve("r-1")
    closed.close()
    with pytest.raises(AuditError, match="closed"):
        closed.append(make_record(1))


# -- records ------------------------------------------------------------------------------------

def test_records_filter_by_principal_and_dataset(log: AuditLog) -> None:
    for i in range(1, 13):
        log.append(make_record(i, principal=["alice", "bob", "carol"][i % 3],
                               dataset=["patients", "encounters"][i % 2]))
    bob = log.records(principal="bob")
    assert [r.seq for r in bob] == [1, 4, 7, 10]
    enc = log.records(dataset="encounters")
    assert [r.seq for r in enc] == [1, 3, 5, 7, 9, 11]
    both = log.records(principal="bob", dataset="encounters")
    assert [r.seq for r in both] == [1, 7]
    assert log.records(principal="nobody") == []
    assert [r.seq for r in log.records(request_id="req-0005")] == [5]


def test_records_page_by_after_seq_in_stable_order(log: AuditLog) -> None:
    fill(log, 25)
    seen: list[int] = []
    after = 0
    while page := log.records(after_seq=after, limit=10):
        assert len(page) <= 10
        seen += [r.seq for r in page]
        after = page[-1].seq
    assert seen == list(range(1, 26))
    assert [r.seq for r in log.records(after_seq=20, limit=3)] == [21, 22, 23]


def test_records_page_through_a_filter(log: AuditLog) -> None:
    for i in range(1, 21):
        log.append(make_record(i, principal="bob" if i % 2 else "alice"))
    page1 = log.records(limit=4, principal="bob")
    page2 = log.records(after_seq=page1[-1].seq, limit=4, principal="bob")
    assert [r.seq for r in page1 + page2] == [1, 3, 5, 7, 9, 11, 13, 15]


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_records_limit_is_bounded(log: AuditLog, limit: int) -> None:
    with pytest.raises(InvalidRequest):
        log.records(limit=limit)
