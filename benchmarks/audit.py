"""Audit log costs: checkpoints (how often, fsync or not) and a flood of refused requests.

    .venv/bin/python benchmarks/audit.py --json benchmarks/results/audit.json
    .venv/bin/python benchmarks/audit.py --pg postgresql://postgres@127.0.0.1:5432/test

Part 1, checkpoints. ``--threads`` threads each append ``--appends`` records (reserve, then
append, as a request does) to a fresh log, for every combination of:

- anchor: none, a signed checkpoint per transaction fsynced (the default), the same without
  fsync;
- grouping: one transaction per append (``batch_max=1``: a checkpoint for *every* append) or
  group commit (``batch_max=256``: one checkpoint per group).

It reports appends/s, the latency of one reserve+append (p50/p99), and how many checkpoints were
written (medians over ``--rounds`` interleaved rounds, so a noisy neighbour slows all alike). The window of undetectable tail loss is the same in all anchored cases: records whose
transaction committed but whose checkpoint is not written yet, at most one group in flight, and
no record whose ``append`` has returned.

Part 2, flood. One thread plays authenticated requests (reserve + append, ``--requests`` of
them, one after the other) and reports their audit latency: alone, while another thread
``submit``s 10,000 refusals (as fast as it can, or ``--flood-rate`` per second), and — the
behaviour before ``submit`` existed — while 8 threads ``append`` those refusals synchronously.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from govern.audit import Anchor, AuditLog, AuditRecord
from govern.audit.store import ROLE, setup
from govern.mask.keys import KeyRing
from govern.store import Database, PostgresDatabase, SQLiteDatabase

KEYS = KeyRing({"k1": b"benchmark-master-key-0123456789abcdef"}, "k1")


def record(i: int, *, refused: bool = False) -> AuditRecord:
    if refused:
        return AuditRecord(seq=None, time="", request_id=f"bad-{i}", principal=None, purpose=None,
                           dataset=None, action="read", outcome="denied", status=401, plan_hash=None,
                           detail="unauthenticated: unknown API key")
    return AuditRecord(seq=None, time="", request_id=f"req-{uuid.uuid4().hex}", principal="alice",
                       purpose="analytics", dataset="patients", action="read", outcome="ok",
                       status=200, plan_hash="ph", columns={"patient_id": "keep", "ssn": "mask:hash"},
                       rows=100, bytes=4096, extra={"filter": "region = 'EU'", "format": "arrow"})


class Backend:
    def __init__(self, pg: str | None, folder: Path) -> None:
        self.pg, self.folder, self.prefixes = pg, folder, []

    def database(self) -> Database:
        if self.pg:
            prefix = f"govern_bench_{uuid.uuid4().hex[:8]}_"
            self.prefixes.append(prefix)
            return PostgresDatabase(ROLE, self.pg, prefix, setup(prefix))
        return SQLiteDatabase(ROLE, self.folder / f"{uuid.uuid4().hex}.db", setup(""))

    def cleanup(self) -> None:
        if self.pg and self.prefixes:
            import psycopg

            with psycopg.connect(self.pg, autocommit=True) as conn:
                for p in self.prefixes:
                    conn.execute(f"DROP TABLE IF EXISTS {p}audit_log, {p}audit_pending, {p}chain_head")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def request(log: AuditLog, i: int) -> float:
    rec = record(i)
    t0 = time.perf_counter()
    log.reserve(rec.request_id)
    log.append(rec)
    return time.perf_counter() - t0


def one_checkpoint_run(backend: Backend, folder: Path, anchor_kind: str, batch_max: int,
                       threads: int, appends: int) -> dict:
    path = folder / f"{uuid.uuid4().hex}.checkpoints"
    anchor = None if anchor_kind == "none" else Anchor.from_keys(path, KEYS,
                                                                  fsync=anchor_kind == "fsync")
    log = AuditLog(backend.database(), anchor=anchor, batch_max=batch_max)
    log.pending()
    latencies: list[float] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        mine = [request(log, t * appends + i) for i in range(appends)]
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    took = time.perf_counter() - started
    assert log.verify().ok
    log.close()
    lines = len(path.read_text().splitlines()) if anchor is not None else 0
    return {"appends_per_s": threads * appends / took, "p50_ms": 1e3 * statistics.median(latencies),
            "p99_ms": 1e3 * percentile(latencies, 0.99), "checkpoints": lines}


CONFIGS = [(a, b) for a in ("none", "fsync", "no-fsync") for b in (1, 256)]


def checkpoints(backend: Backend, folder: Path, threads: int, appends: int, rounds: int) -> list[dict]:
    """Every configuration once per round, rounds interleaved; medians over rounds."""
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in CONFIGS}
    for _ in range(rounds):
        for anchor_kind, batch_max in CONFIGS:
            runs[(anchor_kind, batch_max)].append(
                one_checkpoint_run(backend, folder, anchor_kind, batch_max, threads, appends))
    rows = []
    for (anchor_kind, batch_max), got in runs.items():
        r = {"anchor": anchor_kind, "batch_max": batch_max, "threads": threads,
             "appends": threads * appends, "rounds": rounds,
             **{k: statistics.median(x[k] for x in got) for k in got[0]}}
        rows.append(r)
        print(f"  {threads:2d} thread(s), anchor {anchor_kind:8s} batch_max {batch_max:3d}: "
              f"{r['appends_per_s']:7.0f} appends/s, p50 {r['p50_ms']:6.2f} ms, "
              f"p99 {r['p99_ms']:6.2f} ms, {r['checkpoints']:.0f} checkpoints", flush=True)
    return rows


def one_flood_run(backend: Backend, folder: Path, mode: str, requests: int, refusals: int,
                  pace: float) -> dict:
    log = AuditLog(backend.database(), anchor=Anchor.from_keys(
        folder / f"{uuid.uuid4().hex}.checkpoints", KEYS))
    log.pending()
    stop = threading.Event()
    sent = [0]

    def submit_flood() -> None:
        started = time.perf_counter()
        for i in range(refusals):
            log.submit(record(i, refused=True))
            if pace and i % 50 == 49:  # arrive at `pace` per second, in bursts of 50
                time.sleep(max(0.0, started + (i + 1) / pace - time.perf_counter()))
        sent[0] += refusals

    def append_flood(k: int) -> None:
        for i in range(k, refusals, 8):
            if stop.is_set():
                return
            log.append(record(i, refused=True))
            sent[0] += 1

    flooders: list[threading.Thread] = []
    if mode == "submit flood":
        flooders = [threading.Thread(target=submit_flood)]
    elif mode.startswith("append flood"):
        flooders = [threading.Thread(target=append_flood, args=(k,)) for k in range(8)]
    for f in flooders:
        f.start()
    time.sleep(0.05 if flooders else 0)
    latencies = [request(log, i) for i in range(requests)]
    stop.set()
    for f in flooders:
        f.join()
    log.flush(60)
    total = log.verify().count
    coalesced = log.coalesced
    log.close()
    return {"p50_ms": 1e3 * statistics.median(latencies), "p95_ms": 1e3 * percentile(latencies, 0.95),
            "p99_ms": 1e3 * percentile(latencies, 0.99), "records": total, "coalesced": coalesced,
            "flood_sent": sent[0]}


MODES = ("alone", "submit flood", "append flood (before)")


def flood(backend: Backend, folder: Path, requests: int, refusals: int, rounds: int,
          pace: float) -> list[dict]:
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            runs[mode].append(one_flood_run(backend, folder, mode, requests, refusals, pace))
    rows = []
    for mode, got in runs.items():
        r = {"mode": mode, "requests": requests, "refusals": 0 if mode == "alone" else refusals,
             "refusals_per_s": pace or None, "rounds": rounds, **{k: statistics.median(x[k] for x in got) for k in got[0]}}
        rows.append(r)
        print(f"  {mode:22s}: authenticated audit latency p50 {r['p50_ms']:6.2f} ms, "
              f"p95 {r['p95_ms']:6.2f} ms, p99 {r['p99_ms']:6.2f} ms; {r['records']:.0f} records "
              f"stored, {r['coalesced']:.0f} refusals coalesced, {r['flood_sent']:.0f} refusals "
              "sent while measuring", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default=None, help="also measure PostgreSQL at this DSN")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--appends", type=int, default=50, help="per thread")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--refusals", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (medians)")
    parser.add_argument("--flood-rate", type=float, default=0.0,
                        help="refusals per second of the submit flood (0: as fast as possible)")
    parser.add_argument("--parts", default="checkpoints,flood")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, object] = {"python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, pg in (("sqlite", None), ("postgresql", args.pg)):
            if name == "postgresql" and not pg:
                continue
            backend = Backend(pg, folder)
            try:
                parts = args.parts.split(",")
                got: dict[str, object] = {}
                if "checkpoints" in parts:
                    print(f"{name}: checkpoints (1 and {args.threads} threads)")
                    got["checkpoints_1_thread"] = checkpoints(backend, folder, 1, args.appends * 4,
                                                              args.rounds)
                    got["checkpoints"] = checkpoints(backend, folder, args.threads, args.appends,
                                                     args.rounds)
                if "flood" in parts:
                    rate = f"{args.flood_rate:g}/s" if args.flood_rate else "as fast as possible"
                    print(f"{name}: a flood of {args.refusals} refusals ({rate})")
                    got["flood"] = flood(backend, folder, args.requests, args.refusals, args.rounds,
                                         args.flood_rate)
                results[name] = got
            finally:
                backend.cleanup()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
