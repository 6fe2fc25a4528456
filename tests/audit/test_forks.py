"""The chain cannot fork, whoever writes to the store (issue 17: several gateways, one chain).

Hash chains fork when two writers read the same head and both append behind it. Appenders take
the chain head's row lock (PostgreSQL ``FOR UPDATE``, SQLite's write lock) around reading the
head and inserting; ``seq`` is the primary key and ``prev_hash`` is UNIQUE, so even a writer that
skips the lock (an older version, a hand-written script) cannot store a second successor of a
record: the store refuses it instead of silently keeping two branches.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from govern.audit import Anchor, AuditLog
from govern.audit.record import GENESIS_HASH
from govern.audit.store import FIELDS, record_to_row
from tests.audit.conftest import Store, fill, make_record
from tests.audit.test_concurrency import assert_one_clean_chain, run_processes


def test_six_processes_hammering_one_postgres_chain_never_fork(pg_store: Store, anchor: Anchor,
                                                               tmp_path: Path) -> None:
    log = pg_store.anchored(anchor)
    try:
        processes, each = 6, 30
        started = time.monotonic()
        run_processes(pg_store, tmp_path, processes, each, anchor)
        print(f"{processes} processes x {2 * each} records in {time.monotonic() - started:.2f}s")
        total = 2 * processes * each
        assert_one_clean_chain(log, total, {f"p{k}": each for k in range(processes)})
        forks = pg_store.sql("SELECT prev_hash, COUNT(*) FROM {p}audit_log GROUP BY prev_hash "
                             "HAVING COUNT(*) > 1")
        assert forks == []
        assert pg_store.sql("SELECT MIN(seq), MAX(seq), COUNT(*) FROM {p}audit_log") == [(1, total, total)]
    finally:
        log.close()


def test_a_second_successor_is_refused_by_the_store(store: Store, log: AuditLog) -> None:
    records = fill(log, 3)
    # A writer that read a stale head (record 2) and took a fresh seq: a fork off record 2.
    fork = make_record(9, request_id="forker").sealed(seq=4, time=records[2].time,
                                                      prev_hash=records[1].hash)
    columns = ", ".join(FIELDS)
    marks = ", ".join("?" for _ in FIELDS)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.sql(f"INSERT INTO {{p}}audit_log ({columns}) VALUES ({marks})", record_to_row(fork))
    assert [r.seq for r in log.records()] == [1, 2, 3]
    # and a second record claiming to start the chain
    genesis = make_record(8, request_id="second-first").sealed(seq=5, time=records[2].time,
                                                               prev_hash=GENESIS_HASH)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.sql(f"INSERT INTO {{p}}audit_log ({columns}) VALUES ({marks})", record_to_row(genesis))
    assert log.verify().ok
