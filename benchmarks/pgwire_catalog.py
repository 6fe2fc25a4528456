"""How to answer PostgreSQL clients' catalog questions: measured for docs/pgwire.md.

Three candidates: govern's rewrite rules (sqlglot parse → DuckDB over a schema-only catalog),
the same with pglast (PostgreSQL's own parser) for parsing (sqlglot needs ``::oid[]``
rewritten first, as the catalog does), and a real, schema-only PostgreSQL
(initdb + start, when a PostgreSQL server binary is installed and a ``postgres`` user exists).
Prints, in one run: parse time per client introspection query for sqlglot and pglast; the
emulation's end-to-end answer time (rewrite + DuckDB); and a real PostgreSQL's initdb and start
time and resident memory.

    .venv/bin/python benchmarks/pgwire_catalog.py
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import sqlglot

from govern.pgwire.catalog import Catalog, CatalogContext, _array_casts

ASYNCPG_TYPES = None
try:  # asyncpg's own type lookup (the longest introspection query of the matrix)
    from asyncpg.introspection import INTRO_LOOKUP_TYPES_13 as ASYNCPG_TYPES
except ImportError:  # pragma: no cover
    pass

CORPUS = {
    "sqlalchemy get_table_names": (
        "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace "
        "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relkind = "
        "ANY (ARRAY['r', 'p']) AND pg_catalog.pg_class.relpersistence != 't' AND "
        "pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != 'pg_catalog'"),
    "psql \\d name (columns)": (
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_catalog.pg_attribute a "
        "WHERE a.attrelid = (SELECT oid FROM pg_catalog.pg_class WHERE relname = 'patients') AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY a.attnum"),
    "pgjdbc getSQLKeywords": "SELECT string_agg(word, ',') FROM pg_catalog.pg_get_keywords() WHERE catcode = 'R'",
    "information_schema.columns": (
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'patients' "
        "ORDER BY ordinal_position"),
}
if ASYNCPG_TYPES:
    CORPUS["asyncpg type lookup"] = ASYNCPG_TYPES.replace("$1::oid[]", "'{1007,23}'::oid[]")


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def real_postgres() -> dict[str, float] | None:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries or shutil.which("runuser") is None or os.geteuid() != 0:
        return None
    bindir = Path(binaries[-1]).parent
    with tempfile.TemporaryDirectory() as tmp:
        shutil.chown(tmp, "postgres")
        data = Path(tmp) / "data"
        start = time.perf_counter()
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(data), "-A", "trust"],
                       check=True, capture_output=True)
        initdb = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(data), "-w",
                        "-l", str(Path(tmp) / "log"), "-o", f"-p 25433 -k {tmp} -c listen_addresses=''", "start"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.perf_counter() - start
        try:
            postmaster = (data / "postmaster.pid").read_text().split()[0]
            rss = subprocess.run(["ps", "-o", "pid=,ppid=,rss=", "-u", "postgres"], capture_output=True,
                                 text=True).stdout
            rss_mb = sum(int(r) for p, pp, r in (line.split() for line in rss.splitlines())
                         if postmaster in (p, pp)) / 1024
        finally:
            subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(data), "-w", "stop"],
                           capture_output=True)
    return {"initdb_s": initdb, "start_s": started, "rss_mb": rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    schema = pa.schema([("patient_id", pa.string()), ("birth_date", pa.date32()), ("charges", pa.float64())])
    context = CatalogContext(user="alice", database="analytics", databases=("analytics",),
                             tables={"patients": schema, "encounters": schema}, settings={}, pid=1)
    catalog = Catalog(context, timeout=30, memory_limit="256MB")
    try:
        import pglast
    except ImportError:
        pglast = None
    results: dict[str, dict[str, float]] = {}
    print(f"{'query':32} {'sqlglot ms':>10} {'pglast ms':>10} {'ratio':>6} {'answer ms':>10}")
    for name, sql in CORPUS.items():
        castable = _array_casts(sql)
        row = {"sqlglot_ms": best(lambda s=castable: sqlglot.parse(s, read="postgres"), args.repeat) * 1e3}
        if pglast is not None:
            row["pglast_ms"] = best(lambda s=sql: pglast.parse_sql(s), args.repeat) * 1e3
        row["answer_ms"] = best(lambda s=sql: catalog.run(s), args.repeat) * 1e3
        results[name] = row
        ratio = row["sqlglot_ms"] / row["pglast_ms"] if "pglast_ms" in row else float("nan")
        print(f"{name:32} {row['sqlglot_ms']:10.2f} {row.get('pglast_ms', float('nan')):10.2f} {ratio:6.1f} "
              f"{row['answer_ms']:10.2f}")
    catalog.close()
    pg = real_postgres()
    if pg is None:
        print("real PostgreSQL: not measured (needs root, runuser and a PostgreSQL server binary)")
    else:
        print(f"real schema-only PostgreSQL: initdb {pg['initdb_s']:.2f} s, start {pg['start_s']:.2f} s, "
              f"resident {pg['rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps({"queries": results, "postgres": pg}, indent=2))


if __name__ == "__main__":
    main()
