"""Signed checkpoints anchor the chain's head outside the store (both real backends).

Each case changes the store or the checkpoint file as someone with write access to it would,
and asserts what ``verify()`` says. The attack on the store alone (cut tail, emptied log) is
the security finding in tests/security/test_audit_truncation.py; these cases pin the rest of
the contract: what a checkpoint line is, which keys verify it, and when the log counts as
anchored.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from govern.audit import Anchor, AuditLog
from govern.audit.checkpoint import public_keys
from govern.errors import AuditError
from govern.mask.keys import KeyRing
from tests.audit.conftest import KEYS, Store, fill, make_record

N = 10


def lines(anchor: Anchor) -> list[dict]:
    return [json.loads(line) for line in anchor.path.read_text().splitlines()]


def rewrite(anchor: Anchor, entries: list[dict]) -> None:
    anchor.path.write_text("".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n"
                                   for e in entries))


# -- what is written ------------------------------------------------------------------------------

def test_each_commit_leaves_a_signed_checkpoint_of_the_new_head(anchored_log: AuditLog,
                                                                anchor: Anchor) -> None:
    stored = fill(anchored_log, 3)
    written = lines(anchor)
    assert [(c["first"], c["seq"], c["hash"]) for c in written] == [
        (1, 1, stored[0].hash), (2, 2, stored[1].hash), (3, 3, stored[2].hash)]
    assert {c["key"] for c in written} == {"k1"} and all(c["v"] == 1 for c in written)
    assert oct(anchor.path.stat().st_mode & 0o777) == "0o600"
    result = anchored_log.verify()
    assert result.ok and (result.first_seq, result.last_seq, result.checkpoints) == (1, 3, 3)
    assert result.checkpoint is not None and result.checkpoint.seq == 3
    assert result.uncovered == 0


def test_reservations_alone_write_no_checkpoint(anchored_log: AuditLog, anchor: Anchor) -> None:
    anchored_log.reserve("req-x")
    assert anchor.path.read_bytes() == b""  # opened (it can be written), nothing signed


# -- a cut or rewritten log ------------------------------------------------------------------------

def test_a_log_cut_below_the_newest_checkpoint_names_the_first_missing_record(
        anchored_log: AuditLog, store: Store) -> None:
    stored = fill(anchored_log, N)
    store.sql("DELETE FROM {p}audit_log WHERE seq > 6")
    store.sql("UPDATE {p}chain_head SET seq = 6, hash = ? WHERE id = 1", (stored[5].hash,))
    result = anchored_log.verify()
    assert (result.ok, result.first_broken) == (False, 7), result.message
    assert f"names record {N}" in result.message and "log ends at 6" in result.message


def test_a_cut_log_that_grew_again_differs_from_the_checkpoint(anchored_log: AuditLog,
                                                               store: Store) -> None:
    stored = fill(anchored_log, N)
    store.sql("DELETE FROM {p}audit_log WHERE seq > 6")
    store.sql("UPDATE {p}chain_head SET seq = 6, hash = ? WHERE id = 1", (stored[5].hash,))
    for i in range(7, N + 3):  # the gateway appends on: new records 7.. differ from the old ones
        anchored_log.append(make_record(100 + i))
    result = anchored_log.verify()
    assert (result.ok, result.first_broken) == (False, 7), result.message
    assert "differs from the signed checkpoint" in result.message


def test_a_rehashed_chain_below_a_checkpoint_is_caught(anchored_log: AuditLog, store: Store) -> None:
    # Someone with store access rewrites record 4 and recomputes every hash after it (the chain
    # itself has no secret): the chain links hold, the checkpoints do not.
    fill(anchored_log, N)
    records = anchored_log.records(limit=100)
    prev = records[2].hash
    for rec in records[3:]:
        forged = type(rec).from_dict({**rec.to_dict(), "rows": 0} if rec.seq == 4 else rec.to_dict())
        forged = forged.sealed(seq=forged.seq, time=forged.time, prev_hash=prev)
        store.sql("UPDATE {p}audit_log SET rows = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                  (forged.rows, forged.prev_hash, forged.hash, forged.seq))
        prev = forged.hash
    store.sql("UPDATE {p}chain_head SET hash = ? WHERE id = 1", (prev,))
    result = anchored_log.verify()
    assert (result.ok, result.first_broken) == (False, 4), result.message


# -- the checkpoint file --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("title", "change"),
    [
        ("signature of another checkpoint", lambda e: {**e[2], "sig": e[3]["sig"]}),
        ("seq raised, signature kept", lambda e: {**e[2], "seq": 99}),
        ("hash changed, signature kept", lambda e: {**e[2], "hash": "f" * 64}),
        ("signature not base64", lambda e: {**e[2], "sig": "%%%"}),
        ("signature of a foreign key", lambda e: {**e[2], "sig": _foreign_signature()}),
    ],
)
def test_a_wrong_signature_fails(anchored_log: AuditLog, anchor: Anchor, title: str, change) -> None:
    fill(anchored_log, 5)
    entries = lines(anchor)
    entries[2] = change(entries)
    rewrite(anchor, entries)
    result = anchored_log.verify()
    assert not result.ok, title
    assert result.message == "checkpoint file line 3: bad signature (forged or edited)"


def _foreign_signature() -> str:
    other = Anchor.from_keys(Path("/nonexistent"), KeyRing({"k1": b"x" * 32}, "k1"))
    return json.loads(other.line(1, 1, "0" * 64, "t"))["sig"]


@pytest.mark.parametrize(
    ("title", "text", "message"),
    [
        ("not JSON", "hello\n", "line 2: not a checkpoint"),
        ("a field missing", '{"v":1,"seq":3}\n', "line 2: not a checkpoint"),
        ("an unknown key id", None, "signed with key 'k9', which this verifier does not hold"),
    ],
)
def test_a_line_that_is_not_a_valid_checkpoint_fails(anchored_log: AuditLog, anchor: Anchor,
                                                     title: str, text: str | None,
                                                     message: str) -> None:
    fill(anchored_log, 1)
    if text is None:
        stranger = Anchor.from_keys(anchor.path, KeyRing({"k9": b"k" * 32}, "k9"))
        text = stranger.line(1, 1, "0" * 64, "t").decode()
    with anchor.path.open("a") as fh:
        fh.write(text)
    fill(anchored_log, 1)
    result = anchored_log.verify()
    assert not result.ok and message in result.message, (title, result.message)


def test_a_line_a_crash_cut_short_is_ignored(anchored_log: AuditLog, anchor: Anchor) -> None:
    fill(anchored_log, 3)
    with anchor.path.open("ab") as fh:
        fh.write(anchor.line(4, 4, "a" * 64, "t")[:40])  # no newline: the write never finished
    assert anchored_log.verify().ok


def test_a_deleted_checkpoint_file_fails_a_verifier_holding_the_key(
        anchored_log: AuditLog, anchor: Anchor) -> None:
    fill(anchored_log, 3)
    os.unlink(anchor.path)
    result = anchored_log.verify()
    assert not result.ok and result.message.startswith("not anchored"), result.message


def test_an_unanchored_log_still_verifies_its_chain(log: AuditLog) -> None:
    fill(log, 3)
    assert log.verify().ok  # no anchor configured: only the chain and the store's head


# -- keys ---------------------------------------------------------------------------------------

def test_a_verifier_with_the_public_key_only(store: Store, anchored_log: AuditLog,
                                             anchor: Anchor) -> None:
    fill(anchored_log, 4)
    verifier = store.anchored(Anchor(anchor.path, None, public_keys(KEYS)))
    try:
        result = verifier.verify()
        assert result.ok and result.checkpoints == 4, result.message
        # a verifier cannot sign: appending through it writes no checkpoint
        verifier.append(make_record(5))
        assert len(lines(anchor)) == 4
        after = verifier.verify()
        assert after.ok and after.uncovered == 1, after.message
    finally:
        verifier.close()


def test_checkpoints_under_a_rotated_key_still_verify(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "audit.checkpoints"
    ring = KeyRing({"k1": b"1" * 32, "k2": b"2" * 32}, "k1")
    first = store.anchored(Anchor.from_keys(path, ring))
    fill(first, 2)
    first.close()
    second = store.anchored(Anchor.from_keys(path, ring.with_active("k2")))
    try:
        second.append(make_record(3))
        assert [c["key"] for c in lines(Anchor(path))] == ["k1", "k1", "k2"]
        assert second.verify().ok
    finally:
        second.close()
    # k1 retired from the ring: its public key (govern audit public-key) keeps old lines valid
    k1_public = public_keys(ring)["k1"]
    retired = store.anchored(Anchor.from_keys(path, KeyRing({"k2": b"2" * 32}, "k2"),
                                              extra={"k1": k1_public}))
    try:
        assert retired.verify().ok
    finally:
        retired.close()


def test_the_signing_key_is_not_the_masking_key_and_never_in_the_store(
        anchored_log: AuditLog, store: Store, anchor: Anchor) -> None:
    fill(anchored_log, 2)
    seed = KEYS.subkey("audit-checkpoint")
    dump = repr(store.sql("SELECT * FROM {p}audit_log")) + anchor.path.read_text()
    for secret in (seed, b"audit-test-master-key-0123456789abcdef"):
        assert base64.b64encode(secret).decode() not in dump and secret.hex() not in dump
    assert seed.hex() not in repr(anchor) and "private" not in repr(anchor).lower()


# -- adoption and failures ------------------------------------------------------------------------

def test_the_first_checkpoint_adopts_a_log_written_before_anchoring(store: Store,
                                                                    anchor: Anchor) -> None:
    plain = store.open()
    fill(plain, 5)
    plain.close()
    adopting = store.anchored(anchor)
    try:
        adopting.append(make_record(6))
        (only,) = lines(anchor)
        assert (only["first"], only["seq"]) == (1, 6)
        result = adopting.verify()
        assert result.ok and result.uncovered == 0, result.message
        adopting.append(make_record(7))
        assert lines(anchor)[-1]["first"] == 7  # adoption happens once
    finally:
        adopting.close()


def test_records_appended_elsewhere_are_counted_as_uncovered(store: Store, anchored_log: AuditLog) -> None:
    fill(anchored_log, 2)
    other = store.open()  # another writer without this anchor
    other.append(make_record(3))
    other.close()
    anchored_log.append(make_record(4))
    result = anchored_log.verify()
    assert result.ok and result.uncovered == 1, result.message


def test_an_unwritable_checkpoint_file_fails_reserve_and_append(store: Store, tmp_path: Path) -> None:
    (tmp_path / "cp").mkdir()  # a folder where the file should be
    log = store.anchored(Anchor.from_keys(tmp_path / "cp", KEYS))
    try:
        # refused up front, before any data would leave; no pending row is left behind
        with pytest.raises(AuditError, match="cannot write checkpoint"):
            log.reserve("req-0001")
        assert log.pending() == []
        # the record itself is committed, but the request fails: it is not anchored
        with pytest.raises(AuditError, match="cannot write checkpoint"):
            log.append(make_record(1))
    finally:
        log.close()
