"""The short fleet run (issue 17): three ``govern serve`` processes over one throwaway
PostgreSQL cluster, concurrent clients doing reads, SQL, DP releases and streams, policy reloads,
and every fault at least once — ``kill -9`` of a gateway mid-request, SIGSTOP/SIGCONT, a
PostgreSQL restart, ``moto_server`` stopped mid-stream, client timeouts. The history is checked
offline (:mod:`tests.fleet.history`): one chain, one record per success, no record without a
cause, the budget within its limit counting unknown outcomes as spent, policy convergence within
the bound, a stream cut by the S3 outage seen as cut. The long run is ``benchmarks/fleet.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.cluster import pg_bin
from tests.fleet.harness import RunConfig, Setup, collect, percentile, run
from tests.gateway import World

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet-harness")]


@pytest.fixture(scope="module")
def setup(fleet_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    s = Setup.create(fleet_world, tmp_path_factory.mktemp("harness"))
    yield s
    s.close()


def test_a_thousand_operations_under_every_fault_keep_every_invariant(setup: Setup, tmp_path: Path) -> None:
    started = time.monotonic()
    history, cuts = run(setup, RunConfig(ops=1000))
    report, extra = collect(setup, history)
    took = time.monotonic() - started
    print(f"\n{report.stats} in {took:.1f}s; faults {extra['faults']}; pending reservations {extra['pending']}; "
          f"epsilon spent {extra['spent']:g}")
    print("  reloads:", [(r.version, None if r.converged_at is None else round(r.converged_at - r.at, 2))
                         for r in history.reloads])
    for kind, values in sorted(history.latency.items()):
        print(f"  {kind}: p50 {percentile(values, 0.5) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms")
    assert report.ok, "\n".join(report.violations[:20])
    assert len(history.ops) >= 1000
    assert set(extra["faults"]) == {"kill -9", "SIGSTOP", "postgres restart", "moto stop"}
    assert len(history.reloads) >= 5
    outcomes = report.stats["outcomes"]
    assert isinstance(outcomes, dict) and outcomes.get("ok", 0) > 500 and outcomes.get("unknown", 0) >= 1
    # the stream cut by the S3 outage: the client saw it cut, and its record does not say ok
    [cut] = [o for o in history.ops if o.id in cuts]
    assert cut.outcome == "unknown" and cut.note.startswith("cut"), cut
    record = extra["by_client"].get(cut.id)
    assert record is None or record.outcome != "ok", record
    # client timeouts happened (impatient clients)
    assert any(o.note.startswith("cut: ReadTimeout") or o.note == "ConnectTimeout" for o in history.ops)
