"""The history checker on hand-made histories: a correct run passes, and each kind of broken run
(a fork, a gap, a lost record, a record for a failed op, an overspent budget, an unknown release
that would overspend, a slow convergence, a cut stream that looked complete) fails."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from tests.fleet.history import GENESIS, Charge, Op, Rec, Reload, check


def chain(*items: tuple[str, str | None, str]) -> list[Rec]:
    """Records (request id, client id, outcome) sealed one after the other."""
    out, prev = [], GENESIS
    for seq, (rid, cid, outcome) in enumerate(items, 1):
        h = hashlib.sha256(f"{prev}{rid}".encode()).hexdigest()
        out.append(Rec(seq, prev, h, rid, outcome, cid, "read", 5, "v1"))
        prev = h
    return out


OPS = [Op("c1", "read", 0, "ok"), Op("c2", "dp", 1, "ok", epsilon=0.5, budget="alice/patients"),
       Op("c3", "read", 2, "fail"), Op("c4", "dp", 0, "unknown", epsilon=0.25, budget="alice/patients"),
       Op("c5", "stream", 1, "ok", rows=5), Op("c6", "read", 2, "unknown")]
RECORDS = chain(("s1", "c1", "ok"), ("s2", "c2", "ok"), ("s3", "c3", "error"), ("s5", "c5", "ok"),
                ("r1", None, "ok"))
CHARGES = [Charge("s2", "alice/patients", 0.5)]
LIMITS = {"alice/patients": 1.0}
RELOADS = [Reload("v2", 10.0, 10.4)]


def violations(ops=OPS, records=RECORDS, charges=CHARGES, limits=LIMITS, reloads=RELOADS) -> list[str]:  # type: ignore[no-untyped-def]
    return check(ops, records, charges, limits, reloads, bound=5.0).violations


def test_a_correct_history_passes() -> None:
    report = check(OPS, RECORDS, CHARGES, LIMITS, RELOADS)
    assert report.ok, report.violations
    assert report.stats["ops"] == 6 and report.stats["outcomes"] == {"ok": 3, "fail": 1, "unknown": 2}


def test_a_fork_fails() -> None:
    forked = [*RECORDS[:3], replace(RECORDS[3], prev_hash=RECORDS[1].hash), RECORDS[4]]
    found = violations(records=forked)
    assert any("fork" in v for v in found) and any("predecessor" in v for v in found)


def test_a_gap_fails() -> None:
    assert any("missing [3]" in v for v in violations(records=[r for r in RECORDS if r.seq != 3]))


def test_a_lost_record_of_a_success_fails() -> None:
    lost = chain(("s2", "c2", "ok"), ("s3", "c3", "error"), ("s5", "c5", "ok"))
    assert violations(records=lost) == ["op c1 (read) succeeded but has no audit record"]


def test_two_records_for_one_op_fail() -> None:
    twice = chain(("s1", "c1", "ok"), ("s1b", "c1", "ok"), ("s2", "c2", "ok"), ("s5", "c5", "ok"))
    assert any("has 2 audit records" in v for v in violations(records=twice))


def test_an_ok_record_for_an_op_the_client_saw_fail_fails() -> None:
    wrong = chain(("s1", "c1", "ok"), ("s2", "c2", "ok"), ("s3", "c3", "ok"), ("s5", "c5", "ok"))
    assert violations(records=wrong) == ["record seq 3 says ok for op c3 (read), which the client saw fail"]


def test_a_record_nobody_asked_for_fails() -> None:
    ghost = chain(("s1", "c1", "ok"), ("s2", "c2", "ok"), ("s5", "c5", "ok"), ("g", "ghost", "ok"))
    assert any("which no client sent" in v for v in violations(records=ghost))


def test_an_overspent_ledger_fails() -> None:
    over = [*CHARGES, Charge("s4", "alice/patients", 0.75)]
    assert any("exceeds the limit" in v for v in violations(charges=over))


def test_unknown_releases_count_as_spent() -> None:
    ops = [*OPS, Op("c7", "dp", 2, "unknown", epsilon=0.75, budget="alice/patients")]
    records = [*RECORDS[:4], *chain(*[(r.request_id, r.client_id, r.outcome) for r in RECORDS[:4]],
                                    ("s7", "c7", "ok"))[4:]]
    charges = [*CHARGES, Charge("s7", "alice/patients", 0.75)]
    assert violations(ops=ops, records=records, charges=charges) == [
        "budget alice/patients: committed epsilon 1.25 exceeds the limit 1",
        "budget alice/patients: delivered + unknown-but-charged releases spent 1.25 > limit 1"]
    # an unknown release the ledger never charged was never delivered: it does not count
    assert violations(ops=ops) == []


def test_a_delivered_but_uncharged_release_fails() -> None:
    assert violations(charges=[]) == ["release c2 was delivered but never charged"]


def test_slow_or_missing_convergence_fails() -> None:
    assert violations(reloads=[Reload("v2", 10.0, 16.0)]) == ["policy v2: converged after 6.00s > bound 5s"]
    assert violations(reloads=[Reload("v3", 10.0, None)]) == ["policy v3: the instances never all served it"]


def test_a_cut_stream_that_looked_complete_fails() -> None:
    cut = chain(("s1", "c1", "ok"), ("s2", "c2", "ok"), ("s3", "c3", "error"), ("s5", "c5", "aborted"))
    assert violations(records=cut) == ["op c5 (stream) succeeded but its record says aborted"]
    short = [replace(r, rows=3) if r.client_id == "c5" else r for r in RECORDS]
    assert violations(records=short) == ["stream c5: the client got 5 rows, the record says 3"]


def test_a_record_without_its_policy_version_fails() -> None:
    bare = [replace(r, policy_version=None) if r.seq == 2 else r for r in RECORDS]
    assert violations(records=bare) == ["1 record(s) carry no policy version (first: seq 2)"]
