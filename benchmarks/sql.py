"""Analyst SQL over masked views vs. plain DuckDB over the raw Parquet files.

On a generated demo world (2,000,000 patients, ~6M encounters by default) it runs typical
analyst queries through ``SqlEngine.run`` — as bob (``model-training``: all regions, patient_id
pseudonymized, diagnosis withheld) and as alice (``analytics``: EU rows only, most PHI masked) —
and the same SQL in a plain DuckDB connection over the raw files (no policy at all: the
ceiling). Each time is the median of ``--repeat`` runs after one warm-up, the result read to
the end. The ratio is govern / raw; the target is ≤ 1.5×.

    .venv/bin/python benchmarks/sql.py [--rows 2000000] [--repeat 5] [--dir D] [--json PATH]

The raw side reads Parquet with DuckDB's own multi-threaded reader and projection/filter
pushdown; the governed side reads through pyarrow.dataset, masks with Arrow kernels (HMAC for
pseudonyms), and hands DuckDB a stream. What the ratio prices is masking plus the stream
hand-off; queries on pseudonymized keys pay an HMAC per row.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402

from govern.access import Governor  # noqa: E402
from govern.config import load_settings  # noqa: E402
from govern.demo import create_demo  # noqa: E402
from govern.identity.principal import local_principal  # noqa: E402
from govern.sql import SqlEngine  # noqa: E402

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


def median_time(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up: page cache, plan and dataset caches
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000, help="patients in the generated world")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/govern-bench-sql"),
                    help="demo world folder (reused when it already has --rows patients)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "sql.json")
    args = ap.parse_args()

    marker = args.dir / f".rows-{args.rows}"
    if not marker.exists():
        create_demo(args.dir, rows=args.rows)
        marker.touch()
    settings = load_settings(args.dir / "govern.yaml", watch_policies=False)
    governor = Governor(settings)
    engine = SqlEngine(governor, settings)
    data = args.dir / "data"

    raw = duckdb.connect()
    for name in ("patients", "encounters"):
        raw.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{data / (name + '.parquet')}')")
    encounters = raw.sql("SELECT count(*) FROM encounters").fetchall()[0][0]

    def run_raw(sql: str) -> int:
        return raw.sql(sql).to_arrow_table().num_rows

    def run_governed(who: str, purpose: str, sql: str) -> int:
        principal = local_principal(governor.state.policy, who)
        result = engine.run(principal, purpose, sql)
        try:
            return result.reader.read_all().num_rows
        finally:
            result.close()

    def read_only(who: str, purpose: str, sql: str) -> int:
        """Just the governed reads the engine asks for (scan + mask), read to the end: the part
        of the time that belongs to the Arrow masking path, not to SQL."""
        principal = local_principal(governor.state.policy, who)
        prepared = engine._prepare(principal, purpose, sql, None, require_params=True)
        return sum(governor.read(principal, r.dataset, purpose, columns=r.columns, filter=r.filter)
                   .reader.read_all().num_rows for r in prepared.refs)

    print(f"demo world: {args.rows:,} patients, {encounters:,} encounters; DuckDB {duckdb.__version__}, "
          f"sql_threads={settings.sql_threads}, mask_threads={settings.mask_threads}; median of {args.repeat}")
    print("per principal: total ms (of which: governed read = scan + masks, ms), ratio to raw")
    header = f"{'query':<30} {'raw ms':>8} " + " ".join(f"{who + ' ms':>9} {'(read)':>8} {'ratio':>7}"
                                                         for who, _ in WHO)
    print(header)
    print("-" * len(header))
    results = []
    for title, sql in QUERIES:
        raw_s = median_time(lambda sql=sql: run_raw(sql), args.repeat)
        row = {"query": title, "sql": sql, "raw_ms": round(raw_s * 1000, 2)}
        cells = []
        for who, purpose in WHO:
            s = median_time(lambda who=who, purpose=purpose, sql=sql: run_governed(who, purpose, sql), args.repeat)
            r = median_time(lambda who=who, purpose=purpose, sql=sql: read_only(who, purpose, sql), args.repeat)
            row[f"{who}_ms"] = round(s * 1000, 2)
            row[f"{who}_read_ms"] = round(r * 1000, 2)
            row[f"{who}_ratio"] = round(s / raw_s, 2)
            cells.append(f"{s * 1000:>9.1f} {r * 1000:>8.1f} {s / raw_s:>6.2f}x")
        results.append(row)
        print(f"{title:<30} {raw_s * 1000:>8.1f} " + " ".join(cells))
    summary = {who: round(statistics.geometric_mean([r[f"{who}_ratio"] for r in results]), 2) for who, _ in WHO}
    print("geometric mean ratio: " + ", ".join(f"{who} {ratio}x" for who, ratio in summary.items())
          + " (target ≤ 1.5x)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "sql", "rows": args.rows, "encounters": encounters, "repeat": args.repeat,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "duckdb": duckdb.__version__},
        "settings": {"sql_threads": settings.sql_threads, "mask_threads": settings.mask_threads,
                     "batch_size": settings.batch_size},
        "queries": results, "geometric_mean_ratio": summary, "target_ratio": 1.5,
    }, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
