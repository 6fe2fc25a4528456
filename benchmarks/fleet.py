"""Several gateways, one truth — the long fault run and the load run (issue 17).

Both build what ``tests/fleet`` builds (``tests/fleet/harness.py``): a throwaway PostgreSQL
cluster (Debian's ``initdb``/``pg_ctl``), a ``moto_server`` holding the ``encounters`` dataset,
and ``govern serve`` processes over a seeded demo world, all on loopback.

``history`` (the long run): ``--ops`` client operations (≥ 10,000 for the issue's long run) of
reads, SQL, DP releases and streams while the nemesis injects every fault (kill -9 mid-request,
SIGSTOP/SIGCONT, a PostgreSQL restart, an S3 outage mid-stream, client timeouts) and policy
reloads, ``--rounds`` times over; then the offline checker (``tests/fleet/history.py``).

``load``: for each instance count in ``--instances`` (default 1 and 3), ``--seconds`` of closed-
loop small reads (``--clients`` keep-alive connections spread over the instances, driven by one
asyncio loop: ``loadgen.py``), then small reads open-loop at half the audited rate measured, for
their latency, then closed-loop small reads with a filter (one of eight, on a kept column or a
masked one: reads the gateway cannot serve from a plan's masked rows), then closed-loop mixed
load (90 % small reads, 5 % SQL, 5 % DP releases on a budget large enough never to run out). Prints p50/p99 per operation, audited requests per second
(audit records committed per second of the window), the gateways' RSS sampled every
``--sample`` seconds, and where their CPU went: per audited request, its kernel share and the
threads' voluntary context switches (threads waiting for the GIL show there); first, the cores
the idle gateways keep busy for ``--idle`` seconds.

    .venv/bin/python benchmarks/fleet.py load --seconds 120 --json benchmarks/results/fleet-load.json
    .venv/bin/python benchmarks/fleet.py history --ops 10000 --json benchmarks/results/fleet-history.json

Run it on a quiet machine: the load generator shares the cores with the gateways and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from tests.fleet.harness import PREFIX, RunConfig, Setup, collect, percentile, run  # noqa: E402
from tests.gateway import World  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Call, Connection  # noqa: E402


def demo_world(root: Path) -> World:
    from govern.demo import create_demo

    info = create_demo(root / "demo", rows=2_000, seed=7)
    catalog = info.directory / "policies" / "catalog.yaml"
    text = catalog.read_text()
    # a budget the load never exhausts (the history run keeps the small one and runs out)
    catalog.write_text(text.replace("budget:\n      epsilon: 5\n", "budget:\n      epsilon: 900000\n", 1))
    return World(info.directory, json.loads((info.directory / "keys.json").read_text()))


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


_TICK = os.sysconf("SC_CLK_TCK")


def _times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``pid`` (Linux /proc); 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids``."""
    return sum(sum(_times(pid)) for pid in pids)


def kernel_seconds(pids: list[int]) -> float:
    """System CPU seconds used so far by ``pids`` (the kernel's share of :func:`cpu_seconds`)."""
    return sum(_times(pid)[1] for pid in pids)


def context_switches(pids: list[int]) -> dict[tuple[int, str], int]:
    """Voluntary context switches so far per thread of ``pids``: a thread giving up the CPU to
    wait (for the GIL, a lock, a socket). Per thread, since threads come and go (an idle worker
    thread exits): compare two snapshots with :func:`switches_between`."""
    found: dict[tuple[int, str], int] = {}
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        found[(pid, task.name)] = int(line.split(":")[1])
            except OSError:
                pass
    return found


def switches_between(before: dict[tuple[int, str], int], after: dict[tuple[int, str], int]) -> int:
    """Switches made between two snapshots by the threads alive at the second (a thread that
    exited in between is not counted: a lower bound)."""
    return sum(n - before.get(tid, 0) for tid, n in after.items())


def idle_cores(setup: Setup, seconds: float) -> float:
    """Cores the gateways keep busy with no request at all (heartbeats, watchers, writers)."""
    pids = [s.process.pid for s in setup.fleet.servers]
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return round((cpu_seconds(pids) - before) / seconds, 4)


def postgres_pids() -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def audited(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {PREFIX}audit_log").fetchone()
    return int(row[0]) if row else 0


OPS = (("read", 90), ("sql", 5), ("dp", 5))
READS = (("read", 1),)  # the throughput target is for small reads
FILTERED = (("filtered", 1),)  # small reads with a filter: never served from a plan's masked rows
# on a kept column (the scan filters raw rows) and on a masked one (the engine filters masked rows)
FILTERS = (*(f"diagnosis = '{d}'" for d in ("Asthma", "Migraine", "Influenza", "Fracture")),
           *(f"charges > {c}" for c in (0, 1000, 2500, 5000)))


def calls(url: str, world: World) -> dict[str, list[Call]]:
    """The operations, prebuilt for the lean client (loadgen.py); a client picks one of each
    kind's calls at random."""
    headers = {**world.auth("alice"), "X-Purpose": "analytics"}
    posting = {**headers, "Content-Type": "application/json"}
    sql = json.dumps({"sql": "SELECT region, COUNT(*) AS n FROM patients GROUP BY region"}).encode()
    dp = json.dumps({"aggregates": [{"function": "count"}], "epsilon": 0.01}).encode()
    rows = "/v1/datasets/patients/rows?limit=20&format=jsonl"
    return {"read": [Call.of("read", url, "GET", rows, headers)],
            "filtered": [Call.of("filtered", url, "GET", f"{rows}&filter={quote(f)}", headers) for f in FILTERS],
            "sql": [Call.of("sql", url, "POST", "/v1/sql", posting, sql)],
            "dp": [Call.of("dp", url, "POST", "/v1/datasets/patients/dp", posting, dp)]}


def warm_up(setup: Setup) -> None:
    """Each operation of the mix once on every instance (imports, SQL workers); all must succeed."""

    async def run() -> None:
        for server in setup.fleet.servers:
            conn = Connection(server.url)
            try:
                for kind, variants in calls(server.url, setup.world).items():
                    status, _ = await conn.send(variants[0], 120)
                    if status != 200:
                        raise RuntimeError(f"warm-up {kind} on {server.url}: status {status}")
            finally:
                conn.close()

    asyncio.run(run())


def load_phase(setup: Setup, seconds: float, clients: int, rate: float | None, sample: float,
               mix: tuple[tuple[str, int], ...] = OPS) -> dict[str, Any]:
    """Closed loop (rate None) or open loop at ``rate`` requests/s over all clients, each client
    one keep-alive connection to one gateway (round robin), all on one asyncio loop."""
    return asyncio.run(_load_phase(setup, seconds, clients, rate, sample, mix))


async def _load_phase(setup: Setup, seconds: float, clients: int, rate: float | None, sample: float,
                      mix: tuple[tuple[str, int], ...]) -> dict[str, Any]:
    servers = setup.fleet.servers
    prepared = [calls(s.url, setup.world) for s in servers]
    lat: dict[str, list[float]] = {k: [] for k, _ in mix}
    errors: dict[str, int] = {k: 0 for k, _ in mix}
    failures: dict[str, dict[str, int]] = {k: {} for k, _ in mix}  # status code (or exception) -> count
    kinds = [k for k, w in mix for _ in range(w)]
    rss: list[dict[str, float]] = []
    start_seq = audited(setup.cluster.url)
    gateways, databases = [s.process.pid for s in servers], postgres_pids()
    cpu0 = (cpu_seconds(gateways), cpu_seconds(databases), time.process_time())
    kernel0, switches0 = kernel_seconds(gateways), context_switches(gateways)
    t0 = time.monotonic()
    end = t0 + seconds
    interval = clients / rate if rate else 0.0

    async def client(i: int) -> None:
        rng = random.Random(i)
        server = i % len(servers)
        conn = Connection(servers[server].url)
        due = time.monotonic() + rng.random() * interval
        while time.monotonic() < end:
            if interval:
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                due += interval
            kind = rng.choice(kinds)
            began = time.monotonic()
            try:
                status, _ = await conn.send(rng.choice(prepared[server][kind]), 30)
                ok, why = status == 200, str(status)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                ok, why = False, type(exc).__name__
            took = time.monotonic() - began
            if ok:
                lat[kind].append(took)
            else:
                errors[kind] += 1
                failures[kind][why] = failures[kind].get(why, 0) + 1
        conn.close()

    async def sampler() -> None:
        while time.monotonic() < end:
            await asyncio.sleep(min(sample, max(0.0, end - time.monotonic())))
            rss.append({"t": round(time.monotonic() - t0, 1),
                        **{f"gw{i}": round(rss_mib(s.process.pid), 1) for i, s in enumerate(servers)}})

    await asyncio.gather(sampler(), *(client(i) for i in range(clients)))
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(gateways) - cpu0[0], cpu_seconds(databases) - cpu0[1], time.process_time() - cpu0[2])
    kernel, switches = kernel_seconds(gateways) - kernel0, switches_between(switches0, context_switches(gateways))
    records = audited(setup.cluster.url) - start_seq
    return {
        "mode": "open" if rate else "closed", "rate": rate, "clients": clients, "seconds": round(elapsed, 1),
        "mix": dict(mix), "audited_per_s": round(records / elapsed, 1),
        # cores busy on average, and the gateways' CPU per audited request: where the time went
        "cores": {"gateways": round(cpu[0] / elapsed, 2), "postgres": round(cpu[1] / elapsed, 2),
                  "load_generator": round(cpu[2] / elapsed, 2)},
        "gateway_cpu_ms_per_request": round(cpu[0] / max(records, 1) * 1000, 2),
        # how much of that was the kernel's, and how often threads gave up the CPU to wait (at least)
        "gateway_kernel_share": round(kernel / cpu[0], 2) if cpu[0] else 0.0,
        "gateway_switches_per_request": round(switches / max(records, 1), 1),
        "ops": {k: {"n": len(v), "errors": errors[k], "failures": failures[k], "p50_ms": round(percentile(v, 0.5) * 1000, 1),
                    "p99_ms": round(percentile(v, 0.99) * 1000, 1)} for k, v in lat.items()},
        "rss_mib": rss,
    }


def versions() -> dict[str, str]:
    """What the numbers were measured on: Python and the packages a request goes through (runs
    on different days are comparable only when these agree)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in ("fastapi", "starlette", "uvicorn", "httptools", "uvloop", "h11", "anyio", "pydantic", "pyarrow",
                 "numpy", "psycopg", "cryptography"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def cpu_busy() -> float:
    """Load average over the last minute, per core (how shared the machine was)."""
    return round(os.getloadavg()[0] / (os.cpu_count() or 1), 2)


def cmd_load(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"load_per_core_before": cpu_busy(), "versions": versions(), "runs": []}
    print("versions:", ", ".join(f"{k} {v}" for k, v in out["versions"].items()))
    with tempfile.TemporaryDirectory(prefix="govern-fleet-bench-") as tmp:
        world = demo_world(Path(tmp))
        for n in args.instances:
            setup = Setup.create(world, Path(tmp) / f"n{n}", instances=n, encounters_rows=10_000,
                                 env={"GOVERN_MAX_CONCURRENT_READS": "32"})
            try:
                warm_up(setup)
                idle = idle_cores(setup, args.idle)
                closed = load_phase(setup, args.seconds, args.clients, None, args.sample, READS)
                half = max(1.0, closed["audited_per_s"] / 2)
                opened = load_phase(setup, args.seconds, args.clients, half, args.sample, READS)
                filtered = load_phase(setup, args.seconds, args.clients, None, args.sample, FILTERED)
                mixed = load_phase(setup, args.seconds, args.clients, None, args.sample, OPS)
                run_ = {"instances": n, "idle_cores": idle, "closed": closed, "half_rate": opened,
                        "filtered": filtered, "mixed": mixed, "load_per_core": cpu_busy()}
                out["runs"].append(run_)
                print(f"\n{n} instance(s), small reads: closed loop {closed['audited_per_s']} audited req/s "
                      f"({args.clients} clients); open loop at {half:.0f}/s -> {opened['audited_per_s']} audited req/s; "
                      f"filtered small reads closed loop {filtered['audited_per_s']} audited req/s; "
                      f"mixed closed loop {mixed['audited_per_s']} audited req/s")
                for label, phase in (("closed", closed), ("open", opened), ("filter", filtered), ("mixed", mixed)):
                    print(f"  {label:6} cores busy {phase['cores']}; gateway CPU "
                          f"{phase['gateway_cpu_ms_per_request']} ms per audited request "
                          f"({phase['gateway_kernel_share']:.0%} in the kernel, "
                          f"at least {phase['gateway_switches_per_request']} context switches)")
                    for kind, st in phase["ops"].items():
                        print(f"  {label:6} {kind:5} n={st['n']:6} err={st['errors']:4} p50 {st['p50_ms']:7.1f} ms "
                              f"p99 {st['p99_ms']:7.1f} ms" + (f" failures {st['failures']}" if st["failures"] else ""))
                first, last = closed["rss_mib"][0], mixed["rss_mib"][-1]
                print(f"  idle before the load: {idle} cores busy in the gateways")
                print(f"  RSS MiB first sample {first} last sample {last}; load per core {run_['load_per_core']}")
            finally:
                setup.close()
    return out


def cmd_history(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"load_per_core_before": cpu_busy(), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="govern-fleet-bench-") as tmp:
        world = demo_world(Path(tmp))
        catalog = world.directory / "policies" / "catalog.yaml"
        catalog.write_text(catalog.read_text().replace("epsilon: 900000\n", "epsilon: 5\n", 1))
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
            if args.json:  # after every round: a long run cut short keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=2, default=str))
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
    load.add_argument("--idle", type=float, default=10.0, help="seconds to measure the idle gateways first")
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
