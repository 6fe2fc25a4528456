"""The Spark adapter (adapters/spark, ``govern_spark``) in Spark local mode on 2 cores, one run.

    .venv/bin/python benchmarks/spark.py --rows 2000000 --repeat 3 --json benchmarks/results/spark.json

Tier 2 — the plan as Spark Column expressions (``govern_spark.apply_plan``):

(a) a plan whose masks all have exact Spark forms (redact, email_domain, show_last,
    generalize on a date, a string and a double, a cell rule, a row filter) against the same
    masks written by hand in Spark expressions, as an engineer would write them. Target: the
    plan's expressions ≥ 0.9× the hand-written ones;
(b) the demo's alice/analytics and bob/model-training plans, whose keyed masks (hash,
    tokenize, noise, randomized_response) run as govern's own kernels in ``mapInArrow``:
    rows/s, for reference (no hand-written Spark form gives the same bytes without putting the
    keys into the query plan);
(c) the ceiling: ``spark.read.parquet`` of the same columns, unmasked.

Tier 1 — ``spark.read.format("govern")`` through a real ``govern serve`` on loopback (the
gateway masks, each Spark task fetches one fragment with its ticket; the gateway shares the
same 2 cores):

(d) alice/analytics and bob/model-training through the gateway, each against
(e) ``spark.read.parquet`` of the same files and the same columns, unmasked. Target: ≥ 0.5×.

Where Tier 1's time goes, for bob's plan (every row out, the longest masked values):

(f) bob's masked rows (what the gateway delivers) from local Arrow IPC files, one per
    fragment (so as many Spark tasks as (d)), through a minimal Python Data Source: no gateway,
    no HTTP — the ceiling of any source built on Spark's Python Data Source API;
(g) ``spark.read.parquet`` of the same masked rows: what Spark's native reader makes of them.

For Tier 1 it also prints the gateway process's CPU per run (``/proc``) and the bytes of bob's
fragments as Arrow IPC and as stored Parquet (docs/api.md#fragments-as-stored-parquet).

Every case is consumed fully by Spark's ``noop`` sink (no collection to the driver). Before
timing, (a)'s two forms are checked to give identical rows. Timed runs are interleaved
round-robin over ``--repeat`` rounds; ratios use best times.
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
from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.types import StructType
from served import free_port, wait_healthy

import govern_spark
from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.demo import create_demo
from govern.plan.model import AccessPlan, CellRule, ColumnPlan, MaskSpec, Reason, RowFilter
from govern.plan.predicates import compile_client_filter
from govern.policy.model import local_principal

BENCH = Reason("benchmark", "benchmarks/spark.py")


def session() -> SparkSession:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    spark = (SparkSession.builder.master("local[2]").appName("govern-bench")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "2").config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def exact_plan(schema: pa.Schema) -> AccessPlan:
    """Masks that all have exact Spark forms, over the demo's patients."""
    def mask(name: str, function: str | None, params: dict | None = None) -> ColumnPlan:
        t = str(schema.field(name).type)
        if function is None:
            return ColumnPlan(name, "keep", BENCH, t, result_type=t)
        result = "string" if function in ("redact", "email_domain", "show_last") else t
        return ColumnPlan(name, "mask", BENCH, t, MaskSpec.of(function, params or {}), result_type=result)

    columns = (
        mask("name", "redact"), mask("email", "email_domain"), mask("ssn", "show_last", {"n": 4}),
        mask("birth_date", "generalize", {"date": "year"}), mask("zip", "generalize", {"prefix": 3}),
        mask("region", None), mask("charges", "generalize", {"bucket": 100}),
    )
    withheld = tuple(ColumnPlan(f.name, "withhold", BENCH, str(f.type)) for f in schema
                     if f.name not in {c.name for c in columns})
    return AccessPlan(
        dataset="patients", principal="bench", purpose="benchmark", action="read", columns=columns + withheld,
        row_filters=(RowFilter(compile_client_filter("region IN ('EU', 'US')").sql, BENCH),),
        cell_rules=(CellRule("charges", compile_client_filter("region = 'APAC'").sql, MaskSpec.of("null"), BENCH),),
    )


def hand_written(df: DataFrame) -> DataFrame:
    """The same masks as an engineer writes them in Spark expressions."""
    email, ssn, charges = F.col("email"), F.col("ssn"), F.col("charges")
    cols: list[Column] = [
        F.when(F.col("name").isNotNull(), F.lit("REDACTED")).alias("name"),
        F.when(F.instr(email, "@") > 0, F.concat(F.lit("*@"), F.substring_index(email, "@", -1)))
         .when(email.isNotNull(), F.lit("*")).alias("email"),
        F.concat(F.repeat(F.lit("*"), F.greatest(F.length(ssn) - 4, F.lit(0))), F.right(ssn, F.lit(4))).alias("ssn"),
        F.trunc("birth_date", "year").alias("birth_date"),
        F.substring("zip", 1, 3).alias("zip"),
        F.col("region"),
        F.when(F.col("region") == "APAC", F.lit(None).cast("double"))
         .otherwise(F.floor(charges / 100).cast("double") * 100).alias("charges"),
    ]
    return df.where(F.col("region").isin("EU", "US")).select(*cols)


def serve(world, fragment_rows: int | None) -> tuple[subprocess.Popen, str]:
    """``govern serve`` over ``world`` on a free loopback port (HTTP only); ``fragment_rows``
    None keeps the gateway's default."""
    if fragment_rows is not None:
        with (world.directory / "govern.yaml").open("a") as fh:
            fh.write(f"fragment_rows: {fragment_rows}\n")
    port = free_port()
    exe = Path(sys.executable).parent / "govern"
    proc = subprocess.Popen([str(exe), "serve", "--config", str(world.config), "--port", str(port),
                             "--pg-port", "0", "--flight-port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
    except BaseException:
        proc.kill()
        raise
    return proc, url


class _LocalArrowPartition(InputPartition):
    def __init__(self, path: str) -> None:
        self.path = path


class _LocalArrowReader(DataSourceReader):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def partitions(self) -> list[InputPartition]:
        return [_LocalArrowPartition(p) for p in self.paths]

    def read(self, partition):  # type: ignore[no-untyped-def]
        with pa.memory_map(partition.path) as source:
            yield from pa.ipc.open_stream(source)


class LocalArrow(DataSource):
    """(f): Arrow IPC files, one partition each, through the Python Data Source API."""

    @classmethod
    def name(cls) -> str:
        return "bench_local_arrow"

    def schema(self) -> StructType:
        return StructType.fromJson(json.loads(self.options["schema"]))

    def reader(self, schema):  # type: ignore[no-untyped-def]
        return _LocalArrowReader(json.loads(self.options["paths"]))


def ceiling_cases(spark: SparkSession, url: str, api_key: str, purpose: str, folder: Path,
                  like: DataFrame) -> dict[str, DataFrame]:
    """(f) and (g) for one principal: its masked rows, fetched once through the gateway, as local
    Arrow IPC files (one per fragment) and as one Parquet file."""
    headers = {"Authorization": f"Bearer {api_key}", "X-Purpose": purpose}
    manifest = httpx.post(f"{url}/v1/datasets/patients/scan", json={}, headers=headers, timeout=600).json()
    folder.mkdir()
    paths, tables = [], []
    SIZES["fragments"] = len(manifest["fragments"])
    for f in manifest["fragments"]:
        r = httpx.get(url + f["url"], headers={"Authorization": f"Bearer {f['ticket']}"}, timeout=600)
        r.raise_for_status()
        stored = httpx.get(url + f["url"], timeout=600, headers={"Authorization": f"Bearer {f['ticket']}",
                                                                 "Accept": govern_spark.source.PARQUET_FRAGMENT})
        stored.raise_for_status()
        SIZES["arrow"] += len(r.content)
        SIZES["stored"] += len(stored.content)
        table = pa.ipc.open_stream(r.content).read_all()
        path = folder / f"fragment-{f['id']}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        paths.append(str(path))
        tables.append(table)
    pq.write_table(pa.concat_tables(tables), folder / "masked.parquet", row_group_size=131_072)
    return {
        "(f) bob's masked rows, local Arrow files, minimal Python Data Source (no gateway)":
            spark.read.format("bench_local_arrow").option("paths", json.dumps(paths))
            .option("schema", like.schema.json()).load(),
        "(g) spark.read.parquet of bob's masked rows": spark.read.parquet(str(folder / "masked.parquet")),
    }


SIZES = {"arrow": 0, "stored": 0, "fragments": 0}  # bob's fragments: bytes in either form, how many


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def noop(df: DataFrame) -> Callable[[], None]:
    return lambda: df.write.format("noop").mode("overwrite").save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--fragment-rows", type=int, default=None,
                    help="rows per fragment of a scan (default: the gateway's fragment_rows, 1,000,000)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        world = create_demo(Path(tmp) / "world", rows=args.rows, seed=7)
        print(f"demo world of {args.rows:,} patients in {time.perf_counter() - t0:.1f} s")
        governor = Governor(load_settings(world.config))
        settings = governor.settings
        keys = govern_spark.KeySource(file=str(settings.masking_key_file), key_id=settings.masking_key_id)
        spark = session()
        govern_spark.register(spark)
        gateway, url = serve(world, args.fragment_rows)
        raw = spark.read.parquet(str(world.files["patients"]))
        exact = exact_plan(governor.schema("patients"))
        generated, by_hand = govern_spark.apply_plan(raw, exact, keys), hand_written(raw)
        where = govern_spark.explain_assignment(exact, raw)
        assert all(v == "spark" for v in where.values()), where
        diff = generated.exceptAll(by_hand).count() + by_hand.exceptAll(generated).count()
        assert diff == 0, f"the hand-written masks differ from the plan's in {diff} rows"
        policy = governor.state.policy
        cases: dict[str, DataFrame] = {
            "(a) plan expressions (govern_spark.apply_plan)": generated,
            "(a) the same masks written by hand": by_hand,
        }
        for who, purpose in (("alice", "analytics"), ("bob", "model-training")):
            plan = governor.plan(local_principal(policy, who), "patients", purpose)
            cases[f"(b) {who}/{purpose}, keyed masks in mapInArrow"] = govern_spark.apply_plan(raw, plan, keys)
        cases["(c) spark.read.parquet, the same 7 columns unmasked"] = raw.select(
            "name", "email", "ssn", "birth_date", "zip", "region", "charges")
        tier1 = []
        for who, purpose in (("alice", "analytics"), ("bob", "model-training")):
            key_file = Path(tmp) / f"{who}.key"
            key_file.write_text(world.api_keys[who])
            through = (spark.read.format("govern").option("url", url).option("api_key_file", str(key_file))
                       .option("dataset", "patients").option("purpose", purpose).load())
            name = f"(d) {who}/{purpose}, spark.read.format('govern')"
            cases[name] = through
            cases[f"(e) spark.read.parquet, {who}'s {len(through.columns)} columns unmasked"] = raw.select(
                *through.columns)
            tier1.append(name)
        spark.dataSource.register(LocalArrow)
        bounds = ceiling_cases(spark, url, world.api_keys["bob"], "model-training", Path(tmp) / "bob-masked",
                               cases["(d) bob/model-training, spark.read.format('govern')"])
        cases.update(bounds)
        for df in cases.values():  # warm up: JIT, Python workers
            noop(df)()
        times: dict[str, list[float]] = {name: [] for name in cases}
        gateway_cpu: dict[str, list[float]] = {name: [] for name in tier1}
        for _ in range(args.repeat):
            for name, df in cases.items():
                before = cpu_seconds(gateway.pid)
                times[name].append(timed(noop(df)))
                if name in gateway_cpu:
                    gateway_cpu[name].append(cpu_seconds(gateway.pid) - before)
        spark.stop()
        gateway.terminate()
        gateway.wait(timeout=30)

    best = {name: min(ts) for name, ts in times.items()}
    width = max(map(len, best))
    print(f"\n{args.rows:,} source rows, Spark {spark.version} local[2], best of {args.repeat}")
    for name, t in best.items():
        print(f"  {name:<{width}}  {t:6.2f} s  {args.rows / t / 1e6:6.2f} M rows/s")
    names = list(best)
    ratio = best[names[1]] / best[names[0]]
    median = statistics.median(times[names[1]]) / statistics.median(times[names[0]])
    print(f"\nTier 2: plan expressions ÷ hand-written (throughput)  best {ratio:.2f}×, median {median:.2f}×  "
          f"target ≥ 0.9×  {'PASS' if ratio >= 0.9 else 'MISS'}")
    for name in names[2:4]:
        print(f"{name}: {best[names[4]] / best[name]:.2f}× of the unmasked read")
    tier1_ratios = {}
    for name in tier1:
        ceiling = names[names.index(name) + 1]
        tier1_ratios[name] = r = best[ceiling] / best[name]
        med = statistics.median(times[ceiling]) / statistics.median(times[name])
        print(f"Tier 1: {name} ÷ {ceiling} (throughput)  best {r:.2f}×, median {med:.2f}×  target ≥ 0.5×  "
              f"{'PASS' if r >= 0.5 else 'MISS'}")
    for name in tier1:
        print(f"{name}: the gateway's CPU per run {min(gateway_cpu[name]):.2f}–{max(gateway_cpu[name]):.2f} s")
    print(f"bob's {SIZES['fragments']} fragments: {SIZES['arrow'] / 1e6:.0f} MB as Arrow IPC, "
          f"{SIZES['stored'] / 1e6:.0f} MB as stored Parquet")
    bob_d, bob_e = tier1[1], names[names.index(tier1[1]) + 1]
    f_name, g_name = list(bounds)
    print(f"Tier 1 ceiling, bob: (f) Python Data Source over local Arrow ÷ (e) unmasked: {best[bob_e] / best[f_name]:.2f}×; "
          f"(g) native Parquet of the masked rows ÷ (e): {best[bob_e] / best[g_name]:.2f}×; "
          f"(d) through the gateway ÷ (f): {best[f_name] / best[bob_d]:.2f}×")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "rows": args.rows, "repeat": args.repeat, "spark": spark.version, "python": platform.python_version(),
            "cpus": os.cpu_count(), "seconds": times, "best": best, "tier2_ratio": ratio, "tier2_ratio_median": median,
            "tier1_ratios": tier1_ratios, "fragment_rows": args.fragment_rows,
            "tier1_gateway_cpu_seconds": gateway_cpu, "bob_fragment_bytes": SIZES,
        }, indent=2))


if __name__ == "__main__":
    main()
