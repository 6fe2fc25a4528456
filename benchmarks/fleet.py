"""Several gateways, one truth — the long fault run and the load run (issue 17).

Both build what ``tests/fleet`` builds (``tests/fleet/harness.py``): a throwaway PostgreSQL
cluster (Debian's ``initdb``/``pg_ctl``), a ``moto_server`` holding the ``encounters`` dataset,
and ``govern serve`` processes over a seeded demo world, all on loopback.

``history`` (the long run): ``--ops`` client operations (≥ 10,000 for the issue's long run) of
reads, SQL, DP releases and streams while the nemesis injects every fault (kill -9 mid-request,
SIGSTOP/SIGCONT, a PostgreSQL restart, an S3 outage mid-stream, client timeouts) and policy
reloads, ``--rounds`` times over; then the offline checker (``tests/fleet/history.py``).

``load``: for each instance count in ``--instances`` (default 1 and 3), ``--seconds`` of closed-
loop mixed load (``--clients`` threads on keep-alive connections, 90 % small reads, 5 % SQL,
5 % DP releases on a budget large enough never to run out), then the same mix open-loop at half
the audited rate measured, for its latency. Prints p50/p99 per operation, audited requests per
second (audit records committed per second of the window) and the gateways' RSS sampled every
``--sample`` seconds.

    .venv/bin/python benchmarks/fleet.py load --seconds 120 --json benchmarks/results/fleet-load.json
    .venv/bin/python benchmarks/fleet.py history --ops 10000 --json benchmarks/results/fleet-history.json

Run it on a quiet machine: the load generator shares the cores with the gateways and PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from tests.fleet.harness import PREFIX, RunConfig, Setup, collect, percentile, run  # noqa: E402
from tests.gateway import World  # noqa: E402


def demo_world(root: Path) -> World:
    from govern.demo import create_demo

    info = create_demo(root / "demo", rows=2_000, seed=7)
    catalog = info.directory / "policies" / "catalog.yaml"
    text = catalog.read_text()
    # a budget the load never exhausts (the history run keeps the small one and runs out)
    catalog.write_text(text.replace("budget:\n      epsilon: 5\n", "budget:\n      epsilon: 5000000\n", 1))
    return World(info.directory, json.loads((info.directory / "keys.json").read_text()))


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def audited(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {PREFIX}audit_log").fetchone()
    return int(row[0]) if row else 0


OPS = (("read", 90), ("sql", 5), ("dp", 5))


def one(client: httpx.Client, world: World, kind: str) -> bool:
    headers = {**world.auth("alice"), "X-Purpose": "analytics"}
    if kind == "read":
        r = client.get("/v1/datasets/patients/rows", params={"limit": 20, "format": "jsonl"}, headers=headers)
    elif kind == "sql":
        r = client.post("/v1/sql", json={"sql": "SELECT region, COUNT(*) AS n FROM patients GROUP BY region"},
                        headers=headers)
    else:
        r = client.post("/v1/datasets/patients/dp", json={"aggregates": [{"function": "count"}], "epsilon": 0.01},
                        headers=headers)
    return r.status_code == 200


def load_phase(setup: Setup, seconds: float, clients: int, rate: float | None, sample: float) -> dict[str, Any]:
    """Closed loop (rate None) or open loop at ``rate`` requests/s over all clients."""
    servers = setup.fleet.servers
    lat: dict[str, list[float]] = {k: [] for k, _ in OPS}
    errors: dict[str, int] = {k: 0 for k, _ in OPS}
    kinds = [k for k, w in OPS for _ in range(w)]
    stop = threading.Event()
    lock = threading.Lock()
    rss: list[dict[str, float]] = []
    start_seq = audited(setup.cluster.url)
    t0 = time.monotonic()
    interval = clients / rate if rate else 0.0

    def worker(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(base_url=servers[i % len(servers)].url, timeout=30) as client:
            due = time.monotonic() + rng.random() * interval
            while not stop.is_set():
                if interval:
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    due += interval
                kind = rng.choice(kinds)
                began = time.monotonic()
                try:
                    ok = one(client, setup.world, kind)
                except httpx.HTTPError:
                    ok = False
                took = time.monotonic() - began
                with lock:
                    if ok:
                        lat[kind].append(took)
                    else:
                        errors[kind] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    while time.monotonic() - t0 < seconds:
        time.sleep(sample)
        rss.append({"t": round(time.monotonic() - t0, 1),
                    **{f"gw{i}": round(rss_mib(s.process.pid), 1) for i, s in enumerate(servers)}})
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    records = audited(setup.cluster.url) - start_seq
    return {
        "mode": "open" if rate else "closed", "rate": rate, "clients": clients, "seconds": round(elapsed, 1),
        "audited_per_s": round(records / elapsed, 1),
        "ops": {k: {"n": len(v), "errors": errors[k], "p50_ms": round(percentile(v, 0.5) * 1000, 1),
                    "p99_ms": round(percentile(v, 0.99) * 1000, 1)} for k, v in lat.items()},
        "rss_mib": rss,
    }


def cpu_busy() -> float:
    """Load average over the last minute, per core (how shared the machine was)."""
    return round(os.getloadavg()[0] / (os.cpu_count() or 1), 2)


def cmd_load(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"load_per_core_before": cpu_busy(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="govern-fleet-bench-") as tmp:
        world = demo_world(Path(tmp))
        for n in args.instances:
            setup = Setup.create(world, Path(tmp) / f"n{n}", instances=n, encounters_rows=10_000,
                                 env={"GOVERN_MAX_CONCURRENT_READS": "32"})
            try:
                for i in range(len(setup.fleet.servers)):  # warm up (imports, SQL workers)
                    with httpx.Client(base_url=setup.fleet.servers[i].url, timeout=60) as c:
                        for kind, _ in OPS:
                            one(c, world, kind)
                closed = load_phase(setup, args.seconds, args.clients, None, args.sample)
                half = max(1.0, closed["audited_per_s"] / 2)
                opened = load_phase(setup, args.seconds, args.clients, half, args.sample)
                run_ = {"instances": n, "closed": closed, "half_rate": opened, "load_per_core": cpu_busy()}
                out["runs"].append(run_)
                print(f"\n{n} instance(s): closed loop {closed['audited_per_s']} audited req/s "
                      f"({args.clients} clients); open loop at {half:.0f}/s -> {opened['audited_per_s']} audited req/s")
                for phase in (closed, opened):
                    for kind, s in phase["ops"].items():
                        print(f"  {phase['mode']:6} {kind:5} n={s['n']:6} err={s['errors']:4} p50 {s['p50_ms']:7.1f} ms "
                              f"p99 {s['p99_ms']:7.1f} ms")
                first, last = closed["rss_mib"][0], opened["rss_mib"][-1]
                print(f"  RSS MiB first sample {first} last sample {last}; load per core {run_['load_per_core']}")
            finally:
                setup.close()
    return out


def cmd_history(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"load_per_core_before": cpu_busy(), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="govern-fleet-bench-") as tmp:
        world = demo_world(Path(tmp))
        catalog = world.directory / "policies" / "catalog.yaml"
        catalog.write_text(catalog.read_text().replace("epsilon: 5000000\n", "epsilon: 5\n", 1))
        per_round = max(1, args.ops // args.rounds)
        for k in range(args.rounds):
            setup = Setup.create(world, Path(tmp) / f"r{k}")
            started = time.monotonic()
            try:
                history, _cuts = run(setup, RunConfig(ops=per_round, clients=args.clients, seed=k))
                report, extra = collect(setup, history)
            finally:
                setup.close()
            took = time.monotonic() - started
            entry = {"round": k, "seconds": round(took, 1), "stats": report.stats, "violations": report.violations,
                     "faults": extra["faults"], "pending": extra["pending"], "epsilon_spent": extra["spent"],
                     "latency_ms": {kind: {"p50": round(percentile(v, 0.5) * 1000), "p99": round(percentile(v, 0.99) * 1000)}
                                    for kind, v in history.latency.items()}}
            results["rounds"].append(entry)
            print(f"round {k}: {report.stats['ops']} ops in {took:.0f}s, {len(report.violations)} violation(s); "
                  f"{report.stats['outcomes']}; convergence {report.stats['convergence']}")
            for v in report.violations[:10]:
                print("  VIOLATION", v)
    total = sum(r["stats"]["ops"] for r in results["rounds"])
    bad = sum(len(r["violations"]) for r in results["rounds"])
    print(f"\n{total} operations, {bad} violation(s)")
    results["ops"], results["violations"] = total, bad
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    load = sub.add_parser("load")
    load.add_argument("--seconds", type=float, default=120)
    load.add_argument("--clients", type=int, default=16)
    load.add_argument("--instances", type=lambda s: [int(x) for x in s.split(",")], default=[1, 3])
    load.add_argument("--sample", type=float, default=5.0)
    load.add_argument("--json", type=Path)
    hist = sub.add_parser("history")
    hist.add_argument("--ops", type=int, default=10_000)
    hist.add_argument("--rounds", type=int, default=5)
    hist.add_argument("--clients", type=int, default=6)
    hist.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = cmd_load(args) if args.cmd == "load" else cmd_history(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
