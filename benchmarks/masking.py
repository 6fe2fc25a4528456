"""Masking throughput: govern's Arrow engine against DuckDB, an unmasked scan, pandas, and the
raw hash kernel, measured in one run over the same seeded Parquet file.

    .venv/bin/python benchmarks/masking.py --rows 2000000 --repeat 3 \\
        --json benchmarks/results/masking.json

What runs (every result is consumed batch by batch to the end, nothing is left lazy):

(a) govern ``Governor.read`` (Parquet scan + masks, streamed) for two demo plans on
    ``patients``: alice/analytics (EU row filter; hash, redact, email_domain, generalize,
    randomized_response, noise, the apac-charges cell rule) and bob/model-training
    (all rows; show_last on ssn too);
(b) DuckDB over the same file (``read_parquet``), ``--threads`` threads: the SQL that
    ``plan_sql`` renders for the same plan, and a hand-written query an expert would write for
    the same masks; the faster of the two is the baseline;
(c) the ceiling: the same columns and rows unmasked, via a pyarrow dataset scan and via DuckDB;
(d) pandas as a user writes it by hand: ``read_parquet``, ``.str``/``.dt``/numpy, and
    ``hmac.new`` per value for the hashed column;
(e) pandas row-wise ``df.apply(fn, axis=1)`` on a slice (``--apply-rows``), extrapolated;
(f) the hash kernel alone: DuckDB ``sha256(CAST(patient_id AS VARCHAR))`` against govern
    reading only the hashed column.

Before timing, every engine's output is checked against govern's (bit for bit for the SQL
forms; the deterministic columns and the hashed column for pandas), so the ratios compare
equal work. Rows/s counts rows of the *source file* processed per second (the EU filter keeps
about 35% of them for alice), the same definition for every engine.

Timed runs are interleaved round-robin (every case once per round, ``--repeat`` rounds) so a
noisy neighbour slows all engines alike; ratios use each case's best run, medians are in the
JSON. The data is generated in a child process and govern's streaming runs come first, so the
peak RSS reported "after the govern runs" is govern's, not the generator's or pandas'.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import hmac
import io
import json
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from govern.config import load_settings  # noqa: E402
from govern.deliver.governor import Governor  # noqa: E402
from govern.mask.execute_arrow import (  # noqa: E402
    ArrowExecutor,
    pushdown_filter,
    resolve_request,
    scan_columns,
)
from govern.mask.execute_sql import plan_sql  # noqa: E402
from govern.policy.model import local_principal  # noqa: E402

TWO52 = 4503599627370496  # 2**52, as in govern.mask.functions._common
HIDDEN_REGION = "APAC"  # the apac-charges cell rule: charges masked where region = 'APAC'
ALICE_RAW = ["patient_id", "name", "email", "birth_date", "zip", "region", "diagnosis", "charges"]
BOB_RAW = ["patient_id", "name", "email", "ssn", "birth_date", "zip", "region", "diagnosis", "charges"]

TARGETS = {  # name: (minimum ratio, what the ratio is)
    "vs_duckdb": (0.9, "govern alice rows/s ÷ best DuckDB (b) rows/s"),
    "vs_pandas": (10.0, "govern alice rows/s ÷ pandas vectorized (d) rows/s"),
    "vs_apply": (300.0, "govern alice rows/s ÷ pandas df.apply (e) rows/s"),
    "hash_vs_sha256": (0.8, "govern hash column rows/s ÷ DuckDB sha256 (f) rows/s"),
}


# -- the demo world ---------------------------------------------------------------------------
def make_world(directory: Path, rows: int, seed: int) -> float:
    """Write the demo world in a child process (keeps the generator out of our peak RSS)."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from govern.demo import create_demo;"
        "create_demo(Path(sys.argv[2]), rows=int(sys.argv[3]), seed=int(sys.argv[4]))"
    )
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(REPO), str(directory), str(rows), str(seed)],
                   check=True, stdout=subprocess.DEVNULL)
    pin_masks(directory / "policies" / "masking.yaml")
    return time.perf_counter() - t


# The masks this benchmark's plans and expert queries are written for. The demo policy tokenizes
# patient_id and hashes names; DuckDB has no AES, so no expert could write `tokenize` by hand:
# the benchmark keeps the keyed hash on patient_id and a constant for names.
PINNED_MASKS = {"identifier": "{mask: hash}", "direct_identifier": '{mask: redact, params: {value: "[name]"}}'}


def pin_masks(masking: Path) -> None:
    lines = masking.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        tag = line.strip().split(":", 1)[0]
        if line.startswith("  ") and not line.startswith("   ") and tag in PINNED_MASKS:
            lines[i] = f"  {tag}: {PINNED_MASKS[tag]}\n"
    masking.write_text("".join(lines))


def consume(batches: Iterable[pa.RecordBatch]) -> int:
    """Pull every batch; touch its buffers' sizes so nothing stays lazy."""
    rows = 0
    for b in batches:
        rows += b.num_rows
        b.nbytes  # noqa: B018
    return rows


def hmac_sql_parts(key: bytes) -> tuple[bytes, bytes]:
    """The padded HMAC keys (K ^ ipad, K ^ opad) that the nested-sha256 form binds."""
    k = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


# -- (b) the expert's DuckDB queries ----------------------------------------------------------
def uniform(digest: str, index: int = 0) -> str:
    """The index-th 52-bit slice of a hex digest as a DOUBLE in [0, 1)."""
    return (f"(CAST(CAST(('0x' || substr({digest}, {1 + 13 * index}, 13)) AS BIGINT) AS DOUBLE)"
            f" / CAST({TWO52} AS DOUBLE))")


def expert_sql(source: str, key_id: str, categories: list[str], p: float, scale: float,
               *, alice: bool) -> str:
    """What an expert writes by hand for the same masks: the schema is known (no typeof
    dispatch), each HMAC is computed once per row, the cell rule skips the noise HMAC."""
    cats = "[" + ", ".join("'" + c.replace("'", "''") + "'" for c in categories) + "]"
    hmac_of = "sha256($o_{k} || unhex(sha256($i_{k} || encode({m}))))".format
    rr = hmac_of(k="rr", m="pid || chr(31) || diagnosis")
    noise = hmac_of(k="noise", m="pid || chr(31) || CAST(charges AS VARCHAR)")
    cols = [
        f"'{key_id}:' || left({hmac_of(k='hash', m='pid')}, 32) AS patient_id",
        "CASE WHEN name IS NOT NULL THEN '[name]' END AS name",
        "CASE WHEN contains(email, '@') THEN '*@' || split_part(email, '@', -1) "
        "WHEN email IS NOT NULL THEN '*' END AS email",
    ]
    if not alice:
        cols.append("repeat('*', greatest(length(ssn) - 4, 0)) || right(ssn, 4) AS ssn")
    cols += [
        "CAST(date_trunc('year', birth_date) AS DATE) AS birth_date",
        "left(zip, 3) AS zip",
        "region",
    ]
    if alice:
        listed = ", ".join("'" + c.replace("'", "''") + "'" for c in categories)
        cols.append(f"CASE WHEN diagnosis IS NULL THEN NULL WHEN {uniform('h_rr', 0)} < {p!r} "
                    f"AND diagnosis IN ({listed}) THEN diagnosis ELSE {cats}[CAST(least(floor({uniform('h_rr', 1)} * "
                    f"{len(categories)}), {len(categories) - 1}) AS BIGINT) + 1] END AS diagnosis")
    cols.append(f"CASE WHEN region IS NULL OR region = '{HIDDEN_REGION}' THEN NULL "
                f"ELSE charges + (2 * {uniform(noise)} - 1) * CAST({float(scale)!r} AS DOUBLE) END AS charges")
    inner = "*, coalesce(CAST(patient_id AS VARCHAR), '') AS pid"
    where = " WHERE region = 'EU'" if alice else ""
    if alice:
        return (f"SELECT {', '.join(cols)} FROM (SELECT *, {rr} AS h_rr FROM "
                f"(SELECT {inner} FROM {source}{where}))")
    return f"SELECT {', '.join(cols)} FROM (SELECT {inner} FROM {source}{where})"


def expert_params(keys: Any, *, alice: bool) -> dict[str, bytes]:
    params = {}
    for purpose in ("hash", "noise", "rr") if alice else ("hash", "noise"):
        params[f"i_{purpose}"], params[f"o_{purpose}"] = hmac_sql_parts(keys.subkey(purpose))
    return params


# -- (d) pandas, vectorized, written by hand ----------------------------------------------------
def pandas_alice(path: str, key: bytes, key_id: str, categories: list[str], p: float,
                 scale: float, seed: int = 0) -> pd.DataFrame:
    df = pd.read_parquet(path, columns=ALICE_RAW)
    df = df[df["region"] == "EU"]  # measured faster here than read_parquet(filters=...)
    n = len(df)
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(index=df.index)
    prefix = key_id + ":"
    out["patient_id"] = [prefix + hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()[:32]
                         for v in df["patient_id"]]
    out["name"] = df["name"].where(df["name"].isna(), "[name]")
    email = df["email"]
    out["email"] = ("*@" + email.str.rsplit("@", n=1).str[-1]).where(email.str.contains("@", regex=False), "*")
    out["email"] = out["email"].where(email.notna(), None)
    years = pd.to_datetime(df["birth_date"]).dt.year
    out["birth_date"] = pd.to_datetime({"year": years, "month": 1, "day": 1})
    out["zip"] = df["zip"].str[:3]
    out["region"] = df["region"]
    diagnosis = df["diagnosis"]
    keep = (rng.random(n) < p) & diagnosis.isin(categories).to_numpy()
    picked = np.asarray(categories, dtype=object)[rng.integers(0, len(categories), n)]
    out["diagnosis"] = diagnosis.where(keep | diagnosis.isna(), picked)
    noisy = df["charges"] + rng.uniform(-scale, scale, n)
    out["charges"] = noisy.mask(df["region"].isna() | (df["region"] == HIDDEN_REGION))
    return out


# -- (e) pandas, row by row ---------------------------------------------------------------------
def apply_fn(key: bytes, key_id: str, categories: list[str], p: float, scale: float) -> Callable:
    rnd = random.Random(0)

    def mask_row(r: pd.Series) -> list[Any]:
        pid = key_id + ":" + hmac.new(key, str(r["patient_id"]).encode(), hashlib.sha256).hexdigest()[:32]
        email = r["email"]
        if email is not None:
            email = "*@" + email.rsplit("@", 1)[1] if "@" in email else "*"
        bd = r["birth_date"]
        diagnosis = r["diagnosis"]
        if diagnosis is not None and (rnd.random() >= p or diagnosis not in categories):
            diagnosis = rnd.choice(categories)
        charges = r["charges"]
        if r["region"] is None or r["region"] == HIDDEN_REGION:
            charges = None
        else:
            charges = charges + rnd.uniform(-scale, scale)
        return [pid, None if r["name"] is None else "[name]", email,
                None if bd is None else date(bd.year, 1, 1), r["zip"][:3], r["region"], diagnosis, charges]

    return mask_row


# -- timing ---------------------------------------------------------------------------------------
@dataclass
class Case:
    key: str
    label: str
    group: str
    run: Callable[[], int]  # returns rows delivered
    source_rows: int  # rows of the source processed per run (the rows/s numerator)
    samples: list[float] = field(default_factory=list)
    out_rows: int = 0

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def rate(self) -> float:
        return self.source_rows / self.best


def time_once(case: Case) -> None:
    gc.collect()  # start every run from the same heap state (pandas leaves many objects behind)
    t = time.perf_counter()
    case.out_rows = case.run()
    case.samples.append(time.perf_counter() - t)


def cpu_clock() -> tuple[float, float, float]:
    """(wall s, CPU s busy machine-wide, CPU s of this process and its waited-for children)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
    own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
    return time.perf_counter(), busy, own


def other_cpu(start: tuple[float, float, float]) -> float:
    """CPUs' worth of work other processes did since ``start`` (0 on a quiet machine)."""
    wall, busy, own = (b - a for a, b in zip(start, cpu_clock(), strict=True))
    return max(0.0, (busy - own) / wall)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- equivalence ----------------------------------------------------------------------------------
def same_table(name: str, expected: pa.Table, got: pa.Table) -> None:
    """Bit-for-bit equality (after casting to govern's schema: DuckDB may differ in string types)."""
    got = got.rename_columns(expected.column_names).cast(expected.schema)
    if got.num_rows != expected.num_rows:
        raise AssertionError(f"{name}: {got.num_rows} rows, govern gave {expected.num_rows}")
    if not got.equals(expected):
        # engines may differ in order only; compare sorted by the (unique) pseudonym
        keys = [("patient_id", "ascending")]
        if not got.sort_by(keys).equals(expected.sort_by(keys)):
            for col in expected.column_names:
                a, b = expected.sort_by(keys)[col], got.sort_by(keys)[col]
                if not a.equals(b):
                    diff = pc.indices_nonzero(pc.invert(pc.equal(a, b).fill_null(False)))
                    i = diff[0].as_py() if len(diff) else 0
                    raise AssertionError(f"{name}: column {col} differs, e.g. row {i}: "
                                         f"{a[i].as_py()!r} vs {b[i].as_py()!r}")
            raise AssertionError(f"{name}: tables differ")


def check_pandas(expected: pa.Table, df: pd.DataFrame, categories: list[str], scale: float) -> dict[str, Any]:
    """pandas uses numpy's RNG for randomized response and noise (a user's natural choice, and
    cheaper than keyed randomness), so those two are checked for shape, the rest for equality."""
    got = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    n = expected.num_rows
    assert got.num_rows == n, f"pandas: {got.num_rows} rows, govern gave {n}"
    first = min(1000, n)
    assert got["patient_id"].slice(0, first).to_pylist() == expected["patient_id"].slice(0, first).to_pylist(), \
        "pandas/hmac pseudonyms differ from govern's hash"
    for col in ("patient_id", "name", "email", "zip", "region"):
        assert got[col].cast(pa.string()).equals(expected[col]), f"pandas: column {col} differs"
    assert got["birth_date"].cast(pa.date32()).equals(expected["birth_date"]), "pandas: birth_date differs"
    g_null, e_null = pc.is_null(got["charges"], nan_is_null=True), pc.is_null(expected["charges"])
    assert g_null.equals(e_null), "pandas: the cell rule nulls other charges"
    allowed = pa.array(sorted(categories))  # out-of-category diagnoses are always replaced
    assert pc.all(pc.is_in(got["diagnosis"].cast(pa.string()), allowed)).as_py(), "pandas: unknown diagnosis"
    noise = pc.abs(pc.subtract(got["charges"], expected["charges"])).fill_null(0)
    assert pc.max(noise).as_py() <= 2 * scale, "pandas: noise out of bounds"
    return {"hashed_rows_compared": n, "first_1000_hash_equal": True,
            "equal_columns": ["patient_id", "name", "email", "birth_date", "zip", "region",
                              "charges null pattern"],
            "same_distribution_only": ["diagnosis (numpy RNG)", f"charges (numpy uniform ±{scale:g})"]}


# -- where govern's time goes ------------------------------------------------------------------
def breakdown(gov: Governor, plan: Any, path: str) -> dict[str, Any]:
    """Single-threaded cost of each output column (its mask and cell rules, computed alone on
    the scanned batches) and of the whole transform, for one plan (the scan is case (c))."""
    request = resolve_request(plan, None, None, None)
    batches = list(pads.dataset(path).to_batches(columns=scan_columns(plan, request),
                                                 filter=pushdown_filter(plan, request),
                                                 batch_size=gov.settings.batch_size))
    out: dict[str, Any] = {"columns": {}}
    for name in request.columns:
        col = plan.column(name)
        one = ArrowExecutor(plan, resolve_request(plan, [name], None, None), gov.keys, threads=1,
                            row_filter_applied=True)
        t = time.perf_counter()
        for b in batches:
            one.transform(b, 1)
        what = col.mask.function if col.mask else "keep"
        what += " + cell rule" if any(r.column == name for r in plan.cell_rules) else ""
        out["columns"][name] = {"mask": what, "seconds": time.perf_counter() - t}
    whole = ArrowExecutor(plan, request, gov.keys, threads=1, row_filter_applied=True)
    t = time.perf_counter()
    for b in batches:
        whole.transform(b, 1)
    out["transform_1_thread_s"] = time.perf_counter() - t
    return out


_RSS_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import pyarrow as pa
from govern.deliver.governor import Governor
from govern.config import load_settings
from govern.policy.model import local_principal
gov = Governor(load_settings(Path(sys.argv[2]) / "govern.yaml", mask_threads=int(sys.argv[5])))
who = local_principal(gov.state.policy, sys.argv[3])
rows = 0
for b in gov.read(who, "patients", sys.argv[4]).reader:
    rows += b.num_rows
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork/exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": rows, "peak_rss_mib": hwm / 1024,
                  "arrow_pool_peak_mib": pa.default_memory_pool().max_memory() / 2**20}))
"""


def rss_child(world: Path, who: str, purpose: str, threads: int) -> dict[str, float]:
    """Peak memory of one streaming govern read in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(REPO), str(world), who, purpose, str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads and govern mask_threads")
    ap.add_argument("--apply-rows", type=int, default=100_000, help="slice size for df.apply (e)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "masking.json")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile one govern run per plan (mask_threads=1, so masking is on the main thread)")
    ap.add_argument("--no-rss-scaling", action="store_true",
                    help="skip the memory check at rows/4 vs rows (fresh processes)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary demo folder")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="govern-bench-masking-"))
    try:
        run(args, work)
    finally:
        if args.keep:
            print(f"(demo world kept in {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    gen_s = make_world(work, args.rows, args.seed)
    path = str(work / "data" / "patients.parquet")
    src = "read_parquet('" + path.replace("'", "''") + "')"
    print(f"demo data: {args.rows:,} patients, seed {args.seed}, generated in {gen_s:.1f}s "
          f"(child process); {Path(path).stat().st_size / 2**20:.1f} MiB Parquet")

    gov = Governor(load_settings(work / "govern.yaml", mask_threads=args.threads))
    policy = gov.state.policy
    alice, bob = local_principal(policy, "alice"), local_principal(policy, "bob")
    plans = {"alice": gov.plan(alice, "patients", "analytics"), "bob": gov.plan(bob, "patients", "model-training")}
    keys = gov.keys
    key_id = keys.active
    hash_key = keys.subkey("hash")
    rr = plans["alice"].column("diagnosis").mask
    noise = plans["alice"].column("charges").mask
    categories, p, scale = list(rr.kwargs["categories"]), float(rr.kwargs["p"]), float(noise.kwargs["scale"])
    for who, plan in plans.items():  # the expert queries below hard-code these plans: check them
        masks = {c.name: (c.action, c.mask.function if c.mask else None) for c in plan.columns}
        expected = {"patient_id": "hash", "name": "redact", "email": "email_domain", "birth_date": "generalize",
                    "zip": "generalize", "charges": "noise"}
        expected |= {"diagnosis": "randomized_response"} if who == "alice" else {"ssn": "show_last"}
        assert all(masks[c][1] == f for c, f in expected.items()), f"the demo plan of {who} changed: {masks}"
        assert [r.mask.function for r in plan.cell_rules] == ["null"], "the demo cell rule changed"
    assert plans["alice"].row_filter_sql == "(\"region\" IN ('EU'))", plans["alice"].row_filter_sql
    assert not plans["bob"].row_filters

    def gov_read(principal: Any, purpose: str, columns: list[str] | None = None) -> Callable[[], int]:
        return lambda: consume(gov.read(principal, "patients", purpose, columns=columns).reader)

    rows = args.rows
    cases: dict[str, Case] = {}

    def add(key: str, label: str, group: str, fn: Callable[[], int], source_rows: int = rows) -> Case:
        cases[key] = Case(key, label, group, fn, source_rows)
        return cases[key]

    add("govern_alice", "govern Governor.read, alice (analytics)", "a", gov_read(alice, "analytics"))
    add("govern_bob", "govern Governor.read, bob (model-training)", "a", gov_read(bob, "model-training"))
    add("govern_hash", "govern Governor.read, bob, columns=[patient_id]", "f",
        gov_read(bob, "model-training", ["patient_id"]))

    # -- phase 1: govern alone (warm-up + peak RSS of streaming reads) ------------------------
    rss_start = rss_mib()
    for key in ("govern_alice", "govern_bob", "govern_hash"):
        cases[key].run()
    rss_govern = rss_mib()
    pool_govern = pa.default_memory_pool().max_memory() / 2**20
    print(f"peak RSS: {rss_start:.0f} MiB before govern ran, {rss_govern:.0f} MiB after its streaming reads "
          f"(Arrow pool peak {pool_govern:.0f} MiB; {args.rows:,} rows; batch_size {gov.settings.batch_size:,}, "
          f"mask_threads {gov.settings.mask_threads})")

    # -- the other engines ----------------------------------------------------------------------
    con = duckdb.connect(config={"threads": args.threads})

    def duck(sql: str, params: dict[str, Any] | None = None) -> Callable[[], int]:
        return lambda: consume(con.sql(sql, params=params or None).to_arrow_reader(gov.settings.batch_size))

    sqls = {}
    for who in ("alice", "bob"):
        q = plan_sql(plans[who], src, keys)
        assert not q.needs_udfs
        sqls[f"duck_plan_{who}"] = (q.sql, q.parameters)
        add(f"duck_plan_{who}", f"DuckDB SQL of the same plan (plan_sql), {who}", "b", duck(q.sql, q.parameters))
        hand = expert_sql(src, key_id, categories, p, scale, alice=who == "alice")
        hp = expert_params(keys, alice=who == "alice")
        sqls[f"duck_expert_{who}"] = (hand, hp)
        add(f"duck_expert_{who}", f"DuckDB SQL hand-written by an expert, {who}", "b", duck(hand, hp))

    dataset = pads.dataset(path)
    eu = pc.field("region") == "EU"
    add("arrow_scan_alice", "pyarrow dataset scan, unmasked, alice's columns+rows", "c",
        lambda: consume(dataset.to_batches(columns=ALICE_RAW, filter=eu, batch_size=gov.settings.batch_size)))
    add("duck_scan_alice", "DuckDB SELECT cols FROM read_parquet, unmasked, alice's", "c",
        duck(f"SELECT {', '.join(ALICE_RAW)} FROM {src} WHERE region = 'EU'"))
    add("arrow_scan_bob", "pyarrow dataset scan, unmasked, bob's columns+rows", "c",
        lambda: consume(dataset.to_batches(columns=BOB_RAW, batch_size=gov.settings.batch_size)))
    add("duck_scan_bob", "DuckDB SELECT cols FROM read_parquet, unmasked, bob's", "c",
        duck(f"SELECT {', '.join(BOB_RAW)} FROM {src}"))
    add("pandas_alice", "pandas read_parquet + .str/.dt/numpy + hmac.new per value, alice", "d",
        lambda: len(pandas_alice(path, hash_key, key_id, categories, p, scale)))
    add("duck_sha256", "DuckDB sha256(CAST(patient_id AS VARCHAR)), all rows", "f",
        duck(f"SELECT sha256(CAST(patient_id AS VARCHAR)) AS h FROM {src}"))

    # -- phase 2: equivalence (also the warm-up of every other case) -----------------------------
    checks: dict[str, Any] = {}
    expected = {who: gov.read(pr, "patients", pu).reader.read_all()
                for who, pr, pu in (("alice", alice, "analytics"), ("bob", bob, "model-training"))}
    for key, (sql, params) in sqls.items():
        who = key.rsplit("_", 1)[1]
        same_table(key, expected[who], con.sql(sql, params=params or None).to_arrow_table())
        checks[key] = f"equal to govern, all {expected[who].num_rows:,} rows × {expected[who].num_columns} columns"
    hashed = gov.read(bob, "patients", "model-training", columns=["patient_id"]).reader.read_all()
    assert hashed.num_rows == rows
    sample = pa.Table.from_batches(dataset.to_batches(columns=["patient_id"])).column(0).slice(0, 1000).to_pylist()
    mine = [f"{key_id}:" + hmac.new(hash_key, str(v).encode(), hashlib.sha256).hexdigest()[:32] for v in sample]
    assert hashed.column(0).slice(0, 1000).to_pylist() == mine, "govern's hash is not HMAC-SHA-256(subkey('hash'))"
    checks["govern_hash"] = "first 1,000 pseudonyms equal hmac.new(subkey('hash'), str(id), sha256)[:32]"
    checks["pandas_alice"] = check_pandas(expected["alice"], pandas_alice(path, hash_key, key_id, categories, p, scale),
                                          categories, scale)
    for key in ("arrow_scan_alice", "duck_scan_alice"):
        n = cases[key].run()
        assert n == expected["alice"].num_rows, (key, n)
    for key in ("arrow_scan_bob", "duck_scan_bob", "duck_sha256"):
        assert cases[key].run() == rows, key
    checks["ceilings"] = "same rows as govern (alice: EU rows; bob and sha256: all rows)"
    n_alice = expected["alice"].num_rows
    del expected, hashed
    print("equivalence: " + "; ".join(f"{k} ok" for k in checks))

    # -- phase 3: timed rounds, interleaved --------------------------------------------------------
    order = list(cases)
    clock = cpu_clock()
    for r in range(args.repeat):
        for key in order:
            time_once(cases[key])
        print(f"  round {r + 1}/{args.repeat} done", flush=True)
    noise_cpus = other_cpu(clock)

    # -- (e) df.apply on a slice ----------------------------------------------------------------------
    sl = pd.read_parquet(path, columns=ALICE_RAW).iloc[: args.apply_rows]
    fn = apply_fn(hash_key, key_id, categories, p, scale)

    def apply_run() -> int:
        part = sl[sl["region"] == "EU"]
        return len(part.apply(fn, axis=1, result_type="expand"))

    apply_case = add("pandas_apply", f"pandas df.apply(fn, axis=1), first {len(sl):,} rows", "e",
                     apply_run, source_rows=len(sl))
    applied = sl[sl["region"] == "EU"].head(1000).apply(fn, axis=1, result_type="expand")
    exp_head = gov.read(alice, "patients", "analytics", limit=len(applied)).reader.read_all()
    for i, col in enumerate(("patient_id", "name", "email", "birth_date", "zip", "region")):
        assert applied[i].tolist() == exp_head[col].to_pylist(), f"df.apply: {col} differs from govern's"
    checks["pandas_apply"] = ("its first 1,000 EU rows equal govern's in patient_id, name, email, birth_date, "
                              "zip, region (Python random for diagnosis and charges)")
    for _ in range(args.repeat):
        time_once(apply_case)

    # -- where the time goes, and memory against dataset size ------------------------------------
    print("profiling govern's masks (single-threaded, per column)...", flush=True)
    breakdowns = {who: breakdown(gov, plans[who], path) for who in ("alice", "bob")}
    profiles = {}
    if args.profile:
        gov1 = Governor(load_settings(work / "govern.yaml", mask_threads=1))
        for who, principal, purpose in (("alice", alice, "analytics"), ("bob", bob, "model-training")):
            prof = cProfile.Profile()
            prof.enable()
            consume(gov1.read(principal, "patients", purpose).reader)
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
            profiles[who] = buf.getvalue()
    scaling: dict[str, Any] = {}
    if not args.no_rss_scaling:
        print("memory vs dataset size (fresh processes)...", flush=True)
        small_rows = max(1, rows // 4)
        small = work / "quarter"
        make_world(small, small_rows, args.seed)
        for who, purpose in (("alice", "analytics"), ("bob", "model-training")):
            scaling[who] = {
                str(small_rows): rss_child(small, who, purpose, args.threads),
                str(rows): rss_child(work, who, purpose, args.threads),
            }
        shutil.rmtree(small, ignore_errors=True)

    report(args, cases, checks, n_alice, rss_start, (rss_govern, pool_govern), gen_s, noise_cpus, profiles,
           breakdowns, scaling)


def report(args: argparse.Namespace, cases: dict[str, Case], checks: dict[str, Any], n_alice: int,
           rss_start: float, govern_mem: tuple[float, float], gen_s: float, noise_cpus: float,
           profiles: dict[str, str], breakdowns: dict[str, Any], scaling: dict[str, Any]) -> None:
    c = cases
    best_b = {who: min((c[f"duck_plan_{who}"], c[f"duck_expert_{who}"]), key=lambda x: x.best)
              for who in ("alice", "bob")}
    g = c["govern_alice"]
    rss_govern, pool_govern = govern_mem

    print()
    print(f"{'':2}{'case':<66}{'best s':>8}{'median s':>10}{'rows/s':>14}{'out rows':>12}")
    group_title = {"a": "(a) govern", "b": "(b) DuckDB, same masks", "c": "(c) ceiling: unmasked scan",
                   "d": "(d) pandas, vectorized", "e": "(e) pandas, row-wise", "f": "(f) hash kernel"}
    for grp in "abcdef":
        print(group_title[grp])
        for case in c.values():
            if case.group == grp:
                mark = " *" if case in best_b.values() else ""
                print(f"  {case.label + mark:<66}{case.best:>8.3f}{case.median:>10.3f}"
                      f"{case.rate:>14,.0f}{case.out_rows:>12,}")
    print("  * the faster DuckDB form: the baseline (b)")
    print("  rows/s = source rows processed / best time; alice keeps the EU rows "
          f"({n_alice:,} of {args.rows:,}); df.apply excludes the Parquet read")

    ratios = {
        "vs_duckdb": g.rate / best_b["alice"].rate,
        "vs_pandas": g.rate / c["pandas_alice"].rate,
        "vs_apply": g.rate / c["pandas_apply"].rate,
        "hash_vs_sha256": c["govern_hash"].rate / c["duck_sha256"].rate,
    }
    extra = {
        "bob_vs_duckdb": c["govern_bob"].rate / best_b["bob"].rate,
        "alice_vs_plan_sql": g.rate / c["duck_plan_alice"].rate,
        "alice_vs_expert_sql": g.rate / c["duck_expert_alice"].rate,
        "bob_vs_plan_sql": c["govern_bob"].rate / c["duck_plan_bob"].rate,
        "bob_vs_expert_sql": c["govern_bob"].rate / c["duck_expert_bob"].rate,
        "alice_of_ceiling_arrow": g.rate / c["arrow_scan_alice"].rate,
        "alice_of_ceiling_duckdb": g.rate / c["duck_scan_alice"].rate,
        "bob_of_ceiling_arrow": c["govern_bob"].rate / c["arrow_scan_bob"].rate,
        "bob_of_ceiling_duckdb": c["govern_bob"].rate / c["duck_scan_bob"].rate,
    }
    median_ratios = {
        "vs_duckdb": min(c["duck_plan_alice"].median, c["duck_expert_alice"].median) / g.median,
        "vs_pandas": c["pandas_alice"].median / g.median,
        "vs_apply": (g.source_rows / g.median) / (c["pandas_apply"].source_rows / c["pandas_apply"].median),
        "hash_vs_sha256": c["duck_sha256"].median / c["govern_hash"].median,
    }
    print()
    print(f"{'target':<60}{'ratio':>10}{'goal':>8}  result")
    verdicts = {}
    for name, (goal, what) in TARGETS.items():
        ok = ratios[name] >= goal
        verdicts[name] = "PASS" if ok else "MISS"
        print(f"{what:<60}{ratios[name]:>9.2f}×{goal:>7g}×  {verdicts[name]}")
    print(f"  baseline (b) for alice: {best_b['alice'].label}")
    print(f"  govern bob ÷ best DuckDB for bob: {extra['bob_vs_duckdb']:.2f}×; alice reaches "
          f"{extra['alice_of_ceiling_arrow']:.0%} of the unmasked pyarrow scan, bob {extra['bob_of_ceiling_arrow']:.0%}")
    apply_full_s = args.rows / c["pandas_apply"].rate
    print(f"  df.apply extrapolated to {args.rows:,} rows: {apply_full_s:,.0f}s vs govern {g.best:.2f}s")
    print(f"peak RSS after the govern runs: {rss_govern:.0f} MiB (before them: {rss_start:.0f} MiB; Arrow pool "
          f"peak {pool_govern:.0f} MiB); "
          f"process peak at the end: {rss_mib():.0f} MiB (pandas)")
    quiet = noise_cpus < 0.1
    print(f"other processes used {noise_cpus:.2f} of {os.cpu_count()} CPUs during the timed rounds"
          + ("" if quiet else ": the machine was NOT quiet; ratios are from interleaved best-of runs, "
             "but re-run on a quiet machine before quoting them"))
    print("\nwhere govern's time goes (1 thread, on batches already scanned; each column computed alone):")
    for who, bd in breakdowns.items():
        parts = sorted(bd["columns"].items(), key=lambda kv: -kv[1]["seconds"])
        print(f"  {who}: transform {bd['transform_1_thread_s']:.3f}s; columns alone: "
              + ", ".join(f"{k} {v['seconds']:.3f} ({v['mask']})" for k, v in parts))
    for who, sizes in scaling.items():
        (n1, a), (n2, b) = sizes.items()
        grows = b["arrow_pool_peak_mib"] > 1.5 * a["arrow_pool_peak_mib"]
        print(f"  memory, {who} streaming read in a fresh process: peak RSS {a['peak_rss_mib']:.0f} MiB at "
              f"{int(n1):,} rows, {b['peak_rss_mib']:.0f} MiB at {int(n2):,}; Arrow pool peak "
              f"{a['arrow_pool_peak_mib']:.0f} → {b['arrow_pool_peak_mib']:.0f} MiB"
              + ("  (GROWS with dataset size)" if grows else "  (flat)"))
    for key, text in profiles.items():
        print(f"\ncProfile of one {key} read, mask_threads=1 (top by own time):\n{text}")

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rows": args.rows, "seed": args.seed, "repeat": args.repeat, "threads": args.threads,
        "apply_rows": args.apply_rows, "alice_output_rows": n_alice, "generate_seconds": gen_s,
        "machine": {
            "cpu_count": os.cpu_count(), "cpu": _cpu_model(), "sha_ni": _has_flag("sha_ni"),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "pyarrow": pa.__version__, "duckdb": duckdb.__version__, "pandas": pd.__version__,
            "numpy": np.__version__, "other_processes_cpus_during_timing": noise_cpus,
        },
        "cases": {k: {"label": v.label, "group": v.group, "seconds": v.samples, "best_s": v.best,
                      "median_s": v.median, "rows_per_s": v.rate, "source_rows": v.source_rows,
                      "output_rows": v.out_rows} for k, v in c.items()},
        "baseline_b": {who: b.key for who, b in best_b.items()},
        "ratios_best": ratios, "ratios_median": median_ratios, "other_ratios": extra,
        "targets": {k: {"goal": goal, "what": what, "ratio": ratios[k], "result": verdicts[k]}
                    for k, (goal, what) in TARGETS.items()},
        "peak_rss_mib": {"before_govern": rss_start, "after_govern_runs": rss_govern, "end_of_run": rss_mib()},
        "arrow_pool_peak_mib_after_govern_runs": pool_govern,
        "df_apply_extrapolated_s": apply_full_s,
        "equivalence": checks,
        "govern_breakdown_1_thread": breakdowns,
        "memory_vs_rows": scaling,
        "profiles": profiles,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _has_flag(flag: str) -> bool:
    try:
        return f" {flag}" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    main()
