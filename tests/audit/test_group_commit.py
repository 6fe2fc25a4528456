"""Group commit, ``submit`` and its bound, ``flush`` and ``close``, on both real backends.

To make batching observable without timing luck, tests hold the store's write lock the way a
slow peer process would (:func:`write_lock`): everything queued meanwhile is committed together
once the lock is released, and the checkpoint file shows one line per transaction.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from govern.audit import Anchor, AuditLog, SQLiteAuditLog
from govern.errors import AuditError
from tests.audit.conftest import Store, all_records, make_record, write_lock


def checkpoint_lines(anchor: Anchor) -> list[str]:
    return anchor.path.read_text().splitlines() if anchor.path.exists() else []


def refusal(i: int) -> object:
    return make_record(i, request_id=f"bad-{i:05d}", principal=None, purpose=None, dataset=None,
                       outcome="denied", status=401, plan_hash=None, columns={}, rows=None,
                       bytes=None, detail="unauthenticated: unknown API key", extra={})


def test_appends_from_many_threads_share_a_transaction(store: Store, anchor: Anchor) -> None:
    log = store.anchored(anchor)
    threads = 16
    try:
        log.pending()  # tables exist before the lock is taken
        results: list[int] = []
        with write_lock(store):
            workers = [threading.Thread(target=lambda t=t: results.append(
                log.append(make_record(t, request_id=f"t{t}")).seq or 0)) for t in range(threads)]
            for w in workers:
                w.start()
            time.sleep(0.5)  # all of them are waiting for the store now
            assert results == []
        for w in workers:
            w.join(10)
        assert sorted(results) == list(range(1, threads + 1))
        # the first append took the writer into the lock alone; the other 15 were one group
        assert len(checkpoint_lines(anchor)) <= 3, checkpoint_lines(anchor)
        result = log.verify()
        assert (result.ok, result.count, result.uncovered) == (True, threads, 0), result.message
    finally:
        log.close()


def test_submit_never_waits_and_a_flood_is_coalesced(store: Store, anchor: Anchor) -> None:
    flood, limit = 10_000, 100
    log = store.anchored(anchor, queue_limit=limit)
    try:
        log.pending()
        with write_lock(store):
            started = time.perf_counter()
            slowest = 0.0
            for i in range(flood):
                t0 = time.perf_counter()
                log.submit(refusal(i))
                slowest = max(slowest, time.perf_counter() - t0)
            took = time.perf_counter() - started
        print(f"{store.backend}: {flood} submits in {took:.3f}s, slowest {slowest * 1e3:.2f} ms")
        # no call waits for the store (the bound is loose: the GIL and a loaded CI machine)
        assert slowest < 0.2 and took < 5
        assert log.coalesced > 0
        log.flush(10)
        records = all_records(log)
        assert len(records) < 10 * limit  # individual records are bounded; the rest summed up
        # In seq order, records and summaries stand for every request exactly once, in order.
        covered: list[int] = []
        summaries = 0
        for r in records:
            if "coalesced" in r.extra:
                summaries += 1
                lo, hi = (int(r.extra[k].removeprefix("bad-")) for k in ("first_request_id", "last_request_id"))
                assert r.extra["coalesced"] == hi - lo + 1
                assert r.request_id == r.extra["first_request_id"]
                assert r.extra["statuses"] == {"denied 401": r.extra["coalesced"]}
                assert (r.outcome, r.status, r.principal, r.dataset) == ("denied", 401, None, None)
                covered += range(lo, hi + 1)
            else:
                covered.append(int(r.request_id.removeprefix("bad-")))
        assert covered == list(range(flood))
        assert summaries >= 1 and log.coalesced == flood - (len(records) - summaries)
        assert log.verify().ok
    finally:
        log.close()


def test_a_submitted_record_is_committed_at_once_when_the_writer_is_idle(log: AuditLog,
                                                                         store: Store) -> None:
    log.pending()
    started = time.monotonic()
    log.submit(refusal(1))
    stored: list = []
    while not stored and time.monotonic() - started < 2:
        time.sleep(0.005)
        stored = store.sql("SELECT request_id FROM {p}audit_log")  # a reader in another process
    waited = time.monotonic() - started
    assert stored == [("bad-00001",)]
    assert waited < 0.5, f"committed after {waited:.3f}s"


def test_a_reader_sees_what_was_submitted_before_it_read(log: AuditLog) -> None:
    log.submit(refusal(1))
    assert [r.request_id for r in log.records()] == ["bad-00001"]  # no sleep, no flush


def test_flush_waits_only_for_what_came_before_it(log: AuditLog) -> None:
    stop = threading.Event()

    def flood() -> None:
        i = 0
        while not stop.is_set():
            log.submit(refusal(i))
            i += 1
            time.sleep(0.0002)

    log.submit(refusal(99_999))
    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        started = time.monotonic()
        log.flush(5)  # returns although the flood keeps the queue from ever being empty
        assert time.monotonic() - started < 2
        assert log.records(request_id="bad-99999")
    finally:
        stop.set()
        flooder.join()


def test_submitted_records_keep_their_submission_time(log: AuditLog) -> None:
    log.submit(refusal(1))
    log.flush()
    (stored,) = log.records()
    assert stored.time and stored.seq == 1


def test_flush_times_out_while_the_store_is_locked_then_succeeds(store: Store, log: AuditLog) -> None:
    log.pending()
    with write_lock(store):
        log.submit(refusal(1))
        with pytest.raises(AuditError, match="not committed within"):
            log.flush(0.3)
    log.flush(10)
    assert [r.request_id for r in log.records()] == ["bad-00001"]


def test_close_commits_what_was_submitted(store: Store) -> None:
    first = store.open()
    for i in range(50):
        first.submit(refusal(i))
    first.close()
    with pytest.raises(AuditError, match="closed"):
        first.submit(refusal(99))
    second = store.open()
    try:
        assert len(all_records(second)) == 50 and second.verify().ok
    finally:
        second.close()


def test_without_a_flood_seq_order_is_request_order(log: AuditLog) -> None:
    expected = []
    for i in range(30):
        log.submit(refusal(i))
        log.append(make_record(i))
        expected += [f"bad-{i:05d}", f"req-{i:04d}"]
    log.flush()
    records = all_records(log)
    assert [r.seq for r in records] == list(range(1, 61))
    assert [r.request_id for r in records] == expected
    assert log.verify().ok


def test_a_flood_is_committed_at_a_bounded_rate(store: Store, log: AuditLog) -> None:
    # 256 records per 100 ms window, whatever arrives: the rest waits (and beyond the queue
    # limit is coalesced), so a flood costs the writer a bounded amount of work per second.
    log.pending()
    flood = 2000
    started = time.monotonic()
    for i in range(flood):
        log.submit(refusal(i))
    time.sleep(0.15)
    (count,) = store.sql("SELECT COUNT(*) FROM {p}audit_log")[0]
    elapsed = time.monotonic() - started
    windows = int(elapsed / 0.1) + 1
    assert 0 < count <= 256 * windows, (count, elapsed)
    log.flush(10)  # flush lifts the rate
    assert len(all_records(log)) < flood  # beyond the queue limit, coalesced


def test_an_invalid_submitted_record_is_refused_at_once(log: AuditLog) -> None:
    with pytest.raises(AuditError, match="rejected"):
        log.submit(make_record(1, outcome="maybe"))
    log.flush()
    assert log.records() == []


def test_a_failed_transaction_fails_appends_and_retries_submits(tmp_path: Path) -> None:
    # SQLite only: a short busy timeout turns a held lock into a failed transaction.
    path = tmp_path / "audit.db"
    log = SQLiteAuditLog(path, busy_timeout=0.2, submit_delay=0.05)
    store = Store("sqlite", str(path), "", lambda: log, lambda *a: [])
    try:
        log.pending()
        with write_lock(store):
            log.submit(refusal(1))
            with pytest.raises(AuditError, match="cannot append"):
                log.append(make_record(2))
            time.sleep(0.3)  # the submitted record failed at least once too
        log.flush(10)
        assert [r.request_id for r in log.records()] == ["bad-00001"]
        assert log.verify().ok
    finally:
        log.close()


def test_reserve_is_group_committed_too(store: Store, log: AuditLog) -> None:
    log.pending()
    with write_lock(store):
        workers = [threading.Thread(target=log.reserve, args=(f"r{i}",)) for i in range(8)]
        for w in workers:
            w.start()
        time.sleep(0.2)
    for w in workers:
        w.join(10)
    assert sorted(rid for rid, _ in log.pending()) == [f"r{i}" for i in range(8)]
