"""Analyst SQL over masked views vs. plain DuckDB over the raw Parquet files.

On a generated demo world (2,000,000 patients, ~6M encounters by default) it runs typical
analyst queries through ``SqlEngine.run`` — as bob (``model-training``: all regions,
identifiers pseudonymized or tokenized, diagnosis withheld) and as alice (``analytics``: EU
rows only, most PHI masked) — and the same SQL in plain DuckDB, two ways:

- **raw**: views over the raw files, no policy at all (the ceiling);
- **masked by hand**: the same masks and row filters written in DuckDB SQL (each dataset a CTE
  of ``plan_sql`` over ``read_parquet``: what an expert would run without a gateway, with
  DuckDB's own projection and filter pushdown through the CTE). This is the fair comparison
  for queries whose columns carry keyed masks, which are real work raw DuckDB does not do.

Samples are interleaved (raw, by hand, bob, alice, … ``--repeat`` times, after one warm-up)
so that load from other processes on a shared machine hits every column alike; each figure is
the median, the result read to the end. The gateway's SQL engine opens each query's sandbox
ahead of time (``SandboxPool``); the benchmark lets the pool refill between samples, as a
gateway has moments without queries — the cost of opening one is printed separately.
The "read" column is the governed reads alone (scan + masks, read to the end).

With ``--isolation`` it also runs every governed query through :class:`govern.sql.isolation.SqlService`
— the same engine in a worker process (spawned, under ``sql_worker_memory``, one deadline),
the result streamed back as Arrow IPC — cold and cached, next to the in-process engine, and
times a trivial query both ways (the fixed cost of the process boundary).

Two governed figures per principal: **cold** — every query scans and masks its columns (the
engine without a view cache: the first query over a view) — and **cached** — the gateway's
configuration, with the view cache (``govern.sql.view_cache``, ``sql_cache_bytes``): after the
warm-up the masked views are in memory, as for an analyst's repeated and follow-up queries.

    .venv/bin/python benchmarks/sql.py [--rows 2000000] [--repeat 7] [--dir D] [--json PATH] [--isolation]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402

from govern.config import load_settings  # noqa: E402
from govern.deliver.governor import Governor  # noqa: E402
from govern.demo import create_demo, example_policies_dir  # noqa: E402
from govern.mask.execute_sql import plan_sql  # noqa: E402
from govern.policy.model import local_principal  # noqa: E402
from govern.sql import SqlEngine  # noqa: E402
from govern.sql.isolation import SandboxesReady, SqlService  # noqa: E402
from govern.sql.sandbox import Sandbox, SandboxPool  # noqa: E402
from govern.sql.view_cache import ViewCache  # noqa: E402

QUERIES: list[tuple[str, str]] = [
    ("count by region", "SELECT region, count(*) AS n FROM patients GROUP BY region ORDER BY region"),
    ("avg cost per department",
     "SELECT department, avg(cost) AS avg_cost, count(*) AS n FROM encounters GROUP BY department ORDER BY 1"),
    ("join patients x encounters",
     "SELECT p.region, count(*) AS visits, avg(e.cost) AS avg_cost, max(p.charges) AS max_charges "
     "FROM patients p JOIN encounters e ON p.patient_id = e.patient_id GROUP BY p.region ORDER BY 1"),
    ("window: 7-visit moving cost",
     "SELECT department, max(moving) AS peak FROM (SELECT department, avg(cost) OVER (PARTITION BY department "
     "ORDER BY date, encounter_id ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS moving FROM encounters) "
     "GROUP BY department ORDER BY 1"),
    ("filter on unmasked column",
     "SELECT count(*) AS n, sum(cost) AS total FROM encounters WHERE department = 'Oncology' AND cost > 1000"),
    ("top-10 charges", "SELECT zip, region, charges FROM patients ORDER BY charges DESC LIMIT 10"),
]
WHO = [("bob", "model-training"), ("alice", "analytics")]
DATASETS = ("patients", "encounters")


def policies_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(example_policies_dir().rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def interleaved(fns: dict[str, Callable[[], object]], repeat: int,
                before: Callable[[], object] = lambda: None) -> dict[str, float]:
    """Median seconds of each function, sampled round-robin after one warm-up of each."""
    for fn in fns.values():
        before()
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            before()
            t = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000, help="patients in the generated world")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/govern-bench-sql"),
                    help="demo world folder (reused when it has --rows patients and the current policies)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "sql.json")
    ap.add_argument("--cache-mib", type=int, default=None,
                    help="the view cache's budget (sql_cache_bytes) in MiB; default: the setting's default")
    ap.add_argument("--isolation", action="store_true",
                    help="also run the governed queries in worker processes (SqlService), cold and cached")
    args = ap.parse_args()

    marker = args.dir / f".rows-{args.rows}"
    digest = policies_digest()
    if not marker.exists() or marker.read_text() != digest:
        create_demo(args.dir, rows=args.rows)
        marker.write_text(digest)
    # No time limit: this measures how long queries take (the join can take minutes on a busy box).
    extra = {} if args.cache_mib is None else {"sql_cache_bytes": args.cache_mib * 2**20}
    settings = load_settings(args.dir / "govern.yaml", watch_policies=False, sql_timeout=3600.0, **extra)
    governor = Governor(settings)
    pool = SandboxPool(memory_limit=settings.sql_memory_limit, threads=settings.sql_threads)
    engine = SqlEngine(governor, settings, pool)  # cold: no view cache
    cache = ViewCache(settings.sql_cache_bytes)
    cached_engine = SqlEngine(governor, settings, pool, cache)  # as the gateway runs it
    data = args.dir / "data"
    services: dict[str, SqlService] = {}
    if args.isolation:  # one worker each, so the cached one has the whole cache budget, as in-process
        services = {"cold": SqlService(settings.model_copy(update={"sql_workers": 1, "sql_cache_bytes": 0})),
                    "cached": SqlService(settings.model_copy(update={"sql_workers": 1}))}
        for service in services.values():
            service.start()
            service.ready(120)

    raw = duckdb.connect(config={"threads": settings.sql_threads})
    for name in DATASETS:
        raw.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{data / (name + '.parquet')}')")
    encounters = raw.sql("SELECT count(*) FROM encounters").fetchall()[0][0]

    # The same masks and row filters in DuckDB SQL: one CTE per dataset, key material bound as
    # parameters (never in the text); tokenize's SQL form is a UDF registered on the connection.
    by_hand = duckdb.connect(config={"threads": settings.sql_threads})
    from govern.mask.functions import register_duckdb_udfs
    register_duckdb_udfs(by_hand, governor.keys)
    ctes: dict[str, tuple[str, dict[str, object]]] = {}
    masks: dict[str, dict[str, dict[str, str]]] = {}
    for who, purpose in WHO:
        principal = local_principal(governor.state.policy, who)
        parts, params = [], {}
        for name in DATASETS:
            plan = governor.plan(principal, name, purpose)
            q = plan_sql(plan, f"read_parquet('{data / (name + '.parquet')}')", governor.keys)
            text = re.sub(r"\$(gk_\d+)", lambda m, n=name: f"${n}_{m.group(1)}", q.sql)
            params.update({f"{name}_{k}": v for k, v in q.parameters.items()})
            parts.append(f"{name} AS ({text})")
            masks.setdefault(who, {})[name] = {c.name: c.mask.function for c in plan.columns if c.visible and c.mask}
        ctes[who] = ("WITH " + ", ".join(parts) + " ", params)

    def run_raw(sql: str) -> int:
        return raw.sql(sql).to_arrow_table().num_rows

    def run_by_hand(who: str, sql: str) -> int:
        prefix, params = ctes[who]
        return by_hand.sql(prefix + sql, params=params or None).to_arrow_table().num_rows

    def run_governed(who: str, purpose: str, sql: str, eng: SqlEngine = engine) -> int:
        principal = local_principal(governor.state.policy, who)
        result = eng.run(principal, purpose, sql)
        try:
            return result.reader.read_all().num_rows
        finally:
            result.close()

    def run_isolated(who: str, purpose: str, sql: str, kind: str) -> int:
        principal = local_principal(governor.state.policy, who)
        result = services[kind].run(principal, purpose, sql, None, governor.state.policy,
                                    time.monotonic() + settings.sql_timeout)
        try:
            return result.reader.read_all().num_rows
        finally:
            result.close()

    def ready() -> None:
        """Between samples, every sandbox pool (the workers' too) has its spare open again."""
        pool.ready(5)
        for service in services.values():
            service.submit(SandboxesReady(), None, time.monotonic() + 10)

    def read_only(who: str, purpose: str, sql: str) -> int:
        """Just the governed reads the engine asks for (scan + mask), read to the end."""
        principal = local_principal(governor.state.policy, who)
        prepared = engine._prepare(principal, purpose, sql, None, require_params=True)
        return sum(governor.read(principal, r.dataset, purpose, columns=r.columns, filter=r.filter,
                                 dictionaries=True, filter_exact=False).reader.read_all().num_rows
                   for r in prepared.refs)

    opening = interleaved({"open": lambda: Sandbox(memory_limit=settings.sql_memory_limit,
                                                   threads=settings.sql_threads, timeout=None).close()}, args.repeat)
    load = os.getloadavg()
    print(f"demo world: {args.rows:,} patients, {encounters:,} encounters; DuckDB {duckdb.__version__}, "
          f"pyarrow {pa.__version__}; sql_threads={settings.sql_threads}, mask_threads={settings.mask_threads}; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f}; median of {args.repeat}, samples interleaved")
    print(f"opening a sandbox (off the query's path, SandboxPool): {opening['open'] * 1000:.1f} ms")
    for who, _ in WHO:
        print(f"{who}'s masks: " + "; ".join(f"{d}: " + ", ".join(f"{c}={m}" for c, m in ms.items())
                                             for d, ms in masks[who].items()))
    print("per principal: govern cold ms (governed reads alone ms), by-hand masked DuckDB ms, govern with the "
          "view cache ms; ratios cold/raw, cold/by-hand, cached/raw")
    header = f"{'query':<28} {'raw':>7} " + " ".join(
        f"{who:>8} {'(read)':>7} {'by hand':>8} {'/raw':>6} {'/hand':>6} {'cached':>7} {'/raw':>6}" for who, _ in WHO)
    print(header)
    print("-" * len(header))
    results = []
    for title, sql in QUERIES:
        fns: dict[str, Callable[[], object]] = {"raw": lambda sql=sql: run_raw(sql)}
        for who, purpose in WHO:
            fns[f"{who}_hand"] = lambda who=who, sql=sql: run_by_hand(who, sql)
            fns[who] = lambda who=who, purpose=purpose, sql=sql: run_governed(who, purpose, sql)
            fns[f"{who}_cached"] = lambda who=who, purpose=purpose, sql=sql: run_governed(who, purpose, sql,
                                                                                          cached_engine)
            fns[f"{who}_read"] = lambda who=who, purpose=purpose, sql=sql: read_only(who, purpose, sql)
            for kind in services:
                fns[f"{who}_iso_{kind}"] = lambda who=who, purpose=purpose, sql=sql, kind=kind: run_isolated(
                    who, purpose, sql, kind)
        t = interleaved(fns, args.repeat, before=ready)
        row: dict[str, object] = {"query": title, "sql": sql, "raw_ms": round(t["raw"] * 1000, 2)}
        cells = []
        for who, _ in WHO:
            row[f"{who}_ms"] = round(t[who] * 1000, 2)
            row[f"{who}_read_ms"] = round(t[f"{who}_read"] * 1000, 2)
            row[f"{who}_by_hand_ms"] = round(t[f"{who}_hand"] * 1000, 2)
            row[f"{who}_ratio"] = round(t[who] / t["raw"], 2)
            row[f"{who}_vs_by_hand"] = round(t[who] / t[f"{who}_hand"], 2)
            row[f"{who}_cached_ms"] = round(t[f"{who}_cached"] * 1000, 2)
            row[f"{who}_cached_ratio"] = round(t[f"{who}_cached"] / t["raw"], 2)
            for kind in services:
                row[f"{who}_isolated_{kind}_ms"] = round(t[f"{who}_iso_{kind}"] * 1000, 2)
            cells.append(f"{t[who] * 1000:>8.1f} {t[who + '_read'] * 1000:>7.1f} {t[who + '_hand'] * 1000:>8.1f} "
                         f"{t[who] / t['raw']:>5.2f}x {t[who] / t[who + '_hand']:>5.2f}x "
                         f"{t[who + '_cached'] * 1000:>7.1f} {t[who + '_cached'] / t['raw']:>5.2f}x")
        results.append(row)
        print(f"{title:<28} {t['raw'] * 1000:>7.1f} " + " ".join(cells))
    summary = {who: round(statistics.geometric_mean([r[f"{who}_ratio"] for r in results]), 2) for who, _ in WHO}
    vs_hand = {who: round(statistics.geometric_mean([r[f"{who}_vs_by_hand"] for r in results]), 2)
               for who, _ in WHO}
    cached = {who: round(statistics.geometric_mean([r[f"{who}_cached_ratio"] for r in results]), 2)
              for who, _ in WHO}
    print("geometric mean, govern cold/raw: " + ", ".join(f"{w} {r}x" for w, r in summary.items())
          + "; with the view cache: " + ", ".join(f"{w} {r}x" for w, r in cached.items())
          + " (target ≤ 1.5x); cold/by-hand: " + ", ".join(f"{w} {r}x" for w, r in vs_hand.items()))
    print(f"view cache: {len(cache)} views, {cache.nbytes / 2**20:.1f} MiB, {cache.hits} hits, {cache.misses} misses")
    isolation: dict[str, object] = {}
    if services:
        print("\nin worker processes (SqlService) vs in-process, ms; ratio isolated/in-process")
        print(f"{'query':<28} " + " ".join(f"{who + ' cold':>11} {'isolated':>9} {'x':>6} {who + ' cached':>13} "
                                           f"{'isolated':>9} {'x':>6}" for who, _ in WHO))
        for row in results:
            cells = []
            for who, _ in WHO:
                cold, iso_cold = row[f"{who}_ms"], row[f"{who}_isolated_cold_ms"]
                hot, iso_hot = row[f"{who}_cached_ms"], row[f"{who}_isolated_cached_ms"]
                cells.append(f"{cold:>11.1f} {iso_cold:>9.1f} {iso_cold / cold:>5.2f}x {hot:>13.1f} {iso_hot:>9.1f} "
                             f"{iso_hot / hot:>5.2f}x")
            print(f"{row['query']:<28} " + " ".join(cells))
        for kind in services:
            isolation[f"geometric_mean_vs_in_process_{kind}"] = {
                who: round(statistics.geometric_mean(
                    [r[f"{who}_isolated_{kind}_ms"] / r[f"{who}_ms" if kind == "cold" else f"{who}_cached_ms"]
                     for r in results]), 2) for who, _ in WHO}
        trivial = interleaved({"in-process": lambda: run_governed("alice", "analytics", "SELECT 1 AS one"),
                               "isolated": lambda: run_isolated("alice", "analytics", "SELECT 1 AS one", "cold")},
                              args.repeat * 3, before=ready)
        isolation["trivial_query_ms"] = {k: round(v * 1000, 2) for k, v in trivial.items()}
        print("geometric mean isolated/in-process: " + "; ".join(
            f"{k.removeprefix('geometric_mean_vs_in_process_')}: " + ", ".join(f"{w} {r}x" for w, r in v.items())
            for k, v in isolation.items() if isinstance(v, dict) and k.startswith("geometric")))
        print("SELECT 1: in-process {in-process} ms, in a worker {isolated} ms".format(**isolation["trivial_query_ms"]))
        for service in services.values():
            service.close()
    pool.close()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "sql", "rows": args.rows, "encounters": encounters, "repeat": args.repeat,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "duckdb": duckdb.__version__,
                    "pyarrow": pa.__version__, "load_average": [round(x, 2) for x in load]},
        "settings": {"sql_threads": settings.sql_threads, "mask_threads": settings.mask_threads,
                     "batch_size": settings.batch_size},
        "sandbox_open_ms": round(opening["open"] * 1000, 2),
        "masks": masks,
        "queries": results, "geometric_mean_ratio": summary, "geometric_mean_vs_by_hand": vs_hand,
        "geometric_mean_ratio_cached": cached,
        "view_cache": {"views": len(cache), "mib": round(cache.nbytes / 2**20, 1), "hits": cache.hits,
                       "misses": cache.misses, "sql_cache_bytes": settings.sql_cache_bytes},
        "target_ratio": 1.5,
        "isolation": isolation,
    }, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
