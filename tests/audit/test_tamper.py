"""Tampering with stored records through raw SQL is detected, and verify names the record.

Runs against both real backends. Each case edits the database as someone with direct access
would, then asserts ``verify()`` is not ok and ``first_broken`` is the seq to look at.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest

from govern.audit import GENESIS_HASH, AuditLog, AuditRecord
from tests.audit.conftest import Store, fill, make_record

N = 12


def test_chain_verifies_after_appends(log: AuditLog) -> None:
    stored = fill(log, N)
    assert [r.seq for r in stored] == list(range(1, N + 1))
    assert stored[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(stored))
    result = log.verify()
    assert (result.ok, result.count, result.first_broken) == (True, N, None)
    assert result.message == f"chain intact: {N} records"


def test_empty_log_verifies(log: AuditLog) -> None:
    assert log.verify().ok and log.verify().count == 0


@pytest.mark.parametrize(
    ("title", "statement"),
    [
        ("a number field", "UPDATE {p}audit_log SET rows = 999999 WHERE seq = 7"),
        ("the principal", "UPDATE {p}audit_log SET principal = 'mallory' WHERE seq = 7"),
        ("a column's action", "UPDATE {p}audit_log SET columns = "
                              "'{{\"name\":\"keep\",\"patient_id\":\"keep\",\"ssn\":\"keep\"}}' "
                              "WHERE seq = 7"),
        ("JSON made invalid", "UPDATE {p}audit_log SET extra = 'not json' WHERE seq = 7"),
        ("the time", "UPDATE {p}audit_log SET time = '2000-01-01T00:00:00.000Z' WHERE seq = 7"),
        ("a NULL turned into a value", "UPDATE {p}audit_log SET detail = 'fine' WHERE seq = 7"),
    ],
)
def test_editing_one_field_names_that_record(log: AuditLog, store: Store, title: str,
                                             statement: str) -> None:
    fill(log, N)
    store.sql(statement)
    result = log.verify()
    assert not result.ok, title
    assert result.first_broken == 7, result.message
    assert "record 7" in result.message and "edited" in result.message


def test_edit_with_recomputed_hash_breaks_the_next_link(log: AuditLog, store: Store) -> None:
    # A careful attacker rehashes the edited record; the next record still points at the old hash.
    fill(log, N)
    (edited,) = log.records(after_seq=6, limit=1)
    forged = type(edited).from_dict({**edited.to_dict(), "rows": 0})
    rehashed = forged.sealed(seq=7, time=forged.time, prev_hash=forged.prev_hash)
    store.sql("UPDATE {p}audit_log SET rows = 0, hash = ? WHERE seq = 7", (rehashed.hash,))
    result = log.verify()
    assert result.first_broken == 8, result.message


def test_deleting_a_middle_record_names_it(log: AuditLog, store: Store) -> None:
    fill(log, N)
    store.sql("DELETE FROM {p}audit_log WHERE seq = 5")
    result = log.verify()
    assert (result.ok, result.first_broken, result.count) == (False, 5, N - 1)
    assert "record 5: missing" in result.message


def test_deleting_and_renumbering_is_caught_by_prev_hash(log: AuditLog, store: Store) -> None:
    fill(log, N)
    store.sql("DELETE FROM {p}audit_log WHERE seq = 5")
    for seq in range(6, N + 1):
        store.sql("UPDATE {p}audit_log SET seq = ? WHERE seq = ?", (seq - 1, seq))
    result = log.verify()
    assert result.first_broken == 5, result.message
    assert "prev_hash" in result.message


def test_deleting_the_first_record_names_it(log: AuditLog, store: Store) -> None:
    fill(log, N)
    store.sql("DELETE FROM {p}audit_log WHERE seq = 1")
    assert log.verify().first_broken == 1


def test_swapping_two_records_names_the_first_position(log: AuditLog, store: Store) -> None:
    fill(log, N)
    store.sql("UPDATE {p}audit_log SET seq = -1 WHERE seq = 3")
    store.sql("UPDATE {p}audit_log SET seq = 3 WHERE seq = 9")
    store.sql("UPDATE {p}audit_log SET seq = 9 WHERE seq = -1")
    result = log.verify()
    assert (result.ok, result.first_broken) == (False, 3), result.message


def test_editing_the_last_record_names_it(log: AuditLog, store: Store) -> None:
    fill(log, N)
    store.sql("UPDATE {p}audit_log SET outcome = 'denied' WHERE seq = ?", (N,))
    result = log.verify()
    assert (result.ok, result.first_broken) == (False, N), result.message


def test_rehashed_last_record_is_caught_by_the_chain_head(log: AuditLog, store: Store) -> None:
    fill(log, N)
    (last,) = log.records(after_seq=N - 1)
    forged = type(last).from_dict({**last.to_dict(), "rows": 0})
    forged = forged.sealed(seq=N, time=forged.time, prev_hash=forged.prev_hash)
    store.sql("UPDATE {p}audit_log SET rows = 0, hash = ? WHERE seq = ?", (forged.hash, N))
    result = log.verify()
    assert (result.ok, result.first_broken) == (False, N), result.message
    assert "chain head" in result.message


def test_truncated_head_is_reported(log: AuditLog, store: Store) -> None:
    fill(log, N)
    store.sql("DELETE FROM {p}audit_log WHERE seq > ?", (N - 3,))
    result = log.verify()
    assert (result.ok, result.first_broken) == (False, N - 2), result.message
    assert "newest records removed" in result.message


def test_appending_after_a_deletion_keeps_the_evidence(log: AuditLog, store: Store) -> None:
    # The next append continues from the chain head, so the hole stays visible.
    fill(log, 3)
    store.sql("DELETE FROM {p}audit_log WHERE seq = 3")
    assert log.append(make_record(9)).seq == 4
    assert log.verify().first_broken == 3


def _expected_hash(rec: AuditRecord, *, omit: tuple[str, ...] = ()) -> str:
    body = {k: v for k, v in rec.to_dict().items() if k != "hash" and k not in omit}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((rec.prev_hash + canonical).encode()).hexdigest()


def test_stored_hash_is_sha256_of_prev_hash_and_canonical_json(log: AuditLog) -> None:
    # policy_version was added later: while None it is left out, so older records keep their hash
    rec = fill(log, 2)[1]
    assert rec.policy_version is None
    assert rec.hash == _expected_hash(rec, omit=("policy_version",))
    versioned = log.append(make_record(3, policy_version="pv-1a2b"))
    assert versioned.hash == _expected_hash(versioned)
    assert log.records(after_seq=2) == [versioned]


@pytest.mark.parametrize(
    ("title", "statement"),
    [
        ("a version removed", "UPDATE {p}audit_log SET policy_version = NULL WHERE seq = 3"),
        ("a version changed", "UPDATE {p}audit_log SET policy_version = 'pv-old' WHERE seq = 3"),
        ("a version added", "UPDATE {p}audit_log SET policy_version = 'pv-1a2b' WHERE seq = 2"),
    ],
)
def test_editing_the_policy_version_is_detected(log: AuditLog, store: Store, title: str,
                                                statement: str) -> None:
    fill(log, 2)
    log.append(make_record(3, policy_version="pv-1a2b"))
    log.append(make_record(4))
    store.sql(statement)
    result = log.verify()
    assert not result.ok and "edited" in result.message, title
