"""Latency of differentially private releases, and where the time goes.

    .venv/bin/python benchmarks/dp.py --rows 1000000 --json benchmarks/results/dp.json

Builds the demo world with ``--rows`` patients (seeded), gives bob a budget large enough for
every run, and times three releases for bob (``research``: no row filter), each ``--repeat``
times, median reported:

- ``count``          — ``count(*)``;
- ``mean``           — ``mean(charges)`` (bounds from the catalog);
- ``grouped mean``   — ``count(*)`` and ``mean(charges)`` by ``region`` (public keys).

Three ways, measured in one run:

1. **OpenDP by hand** — what a user of OpenDP would write: ``dp.Context.compositor`` on a polars
   LazyFrame of the same rows, ``query.release().collect()``, which calibrates with OpenDP's own
   ``resolve()`` (a binary search over the noise scale);
2. **govern in process** — ``DpService.run`` (decide, compile, read the Parquet view, OpenDP with
   govern's closed-form calibration, charge the SQLite ledger), split into plan, read, OpenDP
   (measurement build + run), and the rest;
3. **govern over HTTP** — ``POST /v1/datasets/patients/dp`` to a real ``govern serve`` process
   (includes authentication, the audit record and JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERIES: dict[str, dict[str, Any]] = {
    "count": {"aggregates": [{"function": "count"}], "epsilon": 0.1},
    "mean": {"aggregates": [{"function": "mean", "column": "charges"}], "epsilon": 0.1},
    "grouped mean": {"aggregates": [{"function": "count"}, {"function": "mean", "column": "charges"}],
                     "group_by": ["region"], "epsilon": 0.1},
}


def by_hand(table: Any, name: str) -> float:
    """The same release written directly against OpenDP (its own calibration)."""
    import polars as pl

    from govern.privacy.dp.execute import opendp

    dp = opendp()
    lf = pl.from_arrow(table).lazy()
    t = time.perf_counter()
    ctx = dp.Context.compositor(data=lf, privacy_unit=dp.unit_of(contributions=1, identifier="patient_id"),
                                privacy_loss=dp.loss_of(epsilon=0.1), split_evenly_over=1,
                                margins=[dp.polars.Margin(by=[], max_length=2**31)])
    q = ctx.query().truncate_per_group(1)
    charges = pl.col("charges").fill_null(0.0)
    if name == "count":
        q = q.select(dp.len(signed=True))
    elif name == "mean":
        q = q.select(charges.dp.mean((0.0, 50000.0)))
    else:
        keys = pl.DataFrame({"region": sorted(set(table.column("region").to_pylist()))})
        q = q.group_by("region").agg(dp.len(signed=True), charges.dp.mean((0.0, 50000.0))).with_keys(keys)
    q.release().collect()
    return time.perf_counter() - t


def median_of(fn: Any, repeat: int) -> tuple[float, list[float]]:
    runs = [fn() for _ in range(repeat)]
    return statistics.median(runs), runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import pyarrow.parquet as pq
    from tests.server.conftest import World, start_server, stop_server

    from govern.config import load_settings
    from govern.deliver.governor import Governor
    from govern.demo import create_demo
    from govern.policy.model import local_principal
    from govern.privacy.budget.ledger import open_ledger
    from govern.privacy.dp.query import parse_request
    from govern.privacy.dp.service import DpService

    work = Path(tempfile.mkdtemp(prefix="govern-dp-bench-"))
    t = time.perf_counter()
    world_info = create_demo(work, rows=args.rows, seed=7)
    print(f"demo world with {args.rows:,} patients in {time.perf_counter() - t:.1f} s")
    catalog = work / "policies" / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("data-scientist: {epsilon: 10, delta: 1.0e-5}",
                                                   "data-scientist: {epsilon: 100000, delta: 1.0e-5}"))
    settings = load_settings(world_info.config, watch_policies=False)
    governor = Governor(settings)
    service = DpService(settings, governor, open_ledger(settings, governor.budget_for))
    bob = local_principal(governor.state.policy, "bob")
    table = pq.read_table(work / "data" / "patients.parquet", columns=["patient_id", "region", "charges"])

    results: dict[str, Any] = {"rows": args.rows, "repeat": args.repeat, "machine": platform.platform(),
                               "cpus": os.cpu_count(), "queries": {}}
    for name, body in QUERIES.items():
        query = parse_request(body).to_query("patients")
        service.run(bob, "research", query, request_id="warm-" + name)  # imports, caches
        hand, _ = median_of(lambda n=name: by_hand(table, n), args.repeat)
        splits: list[dict[str, float]] = []

        def in_process(q: Any = query, splits: list[dict[str, float]] = splits) -> float:
            t0 = time.perf_counter()
            release = service.run(bob, "research", q, request_id=f"bench-{time.perf_counter_ns()}")
            total = time.perf_counter() - t0
            splits.append({**release.timings, "total": total})
            return total

        total, _ = median_of(in_process, args.repeat)
        for run in splits:
            run["opendp"] = run["opendp_build"] + run["opendp_run"]
            run["gateway"] = run["total"] - run["opendp"]
        split = {k: statistics.median(run[k] for run in splits)
                 for k in ("plan", "read", "bound", "prepare", "opendp_build", "opendp_run", "opendp", "gateway",
                           "ledger", "total")}
        results["queries"][name] = {"opendp_by_hand_s": hand, "govern_in_process_s": total, "split_s": split,
                                    "opendp_share": split["opendp"] / split["total"]}
        print(f"{name:13s} OpenDP by hand {hand * 1000:8.1f} ms | govern in process {total * 1000:7.1f} ms = "
              f"OpenDP {split['opendp'] * 1000:.1f} (build {split['opendp_build'] * 1000:.1f}, run "
              f"{split['opendp_run'] * 1000:.1f}) + gateway {split['gateway'] * 1000:.1f} (plan "
              f"{split['plan'] * 1000:.1f}, read {split['read'] * 1000:.1f}, bound {split['bound'] * 1000:.1f}, "
              f"prepare {split['prepare'] * 1000:.1f}, ledger {split['ledger'] * 1000:.1f})")

    keys = json.loads((work / "keys.json").read_text())
    server = start_server(World(work, keys), "--pg-port", "0")
    try:
        headers = {"Authorization": f"Bearer {keys['bob']}", "X-Purpose": "research"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=300) as http:
            for name, body in QUERIES.items():
                http.post("/v1/datasets/patients/dp", json=body).raise_for_status()

                def over_http(b: dict[str, Any] = body) -> float:
                    t0 = time.perf_counter()
                    http.post("/v1/datasets/patients/dp", json=b).raise_for_status()
                    return time.perf_counter() - t0

                latency, _ = median_of(over_http, args.repeat)
                results["queries"][name]["govern_http_s"] = latency
                print(f"{name:13s} over HTTP {latency * 1000:8.1f} ms")
    finally:
        stop_server(server)
        service.close()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
