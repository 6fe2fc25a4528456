"""Reading one masked dataset five ways, in one run, from the same files.

    .venv/bin/python benchmarks/sharing.py --rows 250000,1000000 --json benchmarks/results/sharing.json

For each size in ``--rows`` a demo world (seeded) is generated in a temporary folder and served
by a real ``govern serve`` on loopback (HTTP with Delta Sharing, Flight SQL; the PostgreSQL wire
off; ``materialize_on_read`` off, so a plain read stays cold until the materialization exists).
bob (``model-training``: tokenize, hash, email_domain, show_last, generalize, noise, a cell
rule) reads ``patients``; each way runs ``--repeat`` times, alternating, and must give the same
rows:

1. **direct** — ``pyarrow.parquet.read_table`` of the raw file (no gateway, no masks: the ceiling);
2. **rows-cold** — ``GET /v1/datasets/patients/rows`` (Arrow) with no materialization: plan,
   scan, mask, encode;
3. **rows-materialized** — the same request after ``govern materialize`` built the entry, in
   Arrow (Parquet decoded and re-encoded as IPC) and in Parquet (the stored file's bytes,
   decoded by the client);
4. **delta-sharing** — the unmodified client's query (``list_files_in_table``) and pyarrow
   reading its file URL over fsspec HTTP (the client has no ``load_as_arrow``);
5. **flight-sql** — ADBC ``cursor.execute("SELECT * FROM patients")`` + ``fetch_arrow_table``
   on one open connection.

Printed: seconds and rows/s (best and median) of each, ratios to the direct read and Flight ÷
cold HTTP Arrow, and the server's peak RSS per size (memory must not grow with the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import adbc_driver_flightsql as adbc_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import fsspec
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from delta_sharing.protocol import DeltaSharingProfile, Table
from delta_sharing.rest_client import DataSharingRestClient
from served import free_port, peak_rss_mib, wait_healthy


def timed(runs: dict[str, list[float]], name: str, fn: Callable[[], pa.Table]) -> pa.Table:
    start = time.perf_counter()
    table = fn()
    runs.setdefault(name, []).append(time.perf_counter() - start)
    return table


def one_size(rows: int, repeat: int, exe: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="govern-sharing-bench-") as tmp:
        world = Path(tmp) / "world"
        subprocess.run([str(exe), "demo", "--dir", str(world), "--rows", str(rows)], check=True,
                       stdout=subprocess.DEVNULL)
        keys = json.loads((world / "keys.json").read_text())
        port, flight_port = free_port(), free_port()
        env = {**os.environ, "GOVERN_MATERIALIZE_ON_READ": "false", "GOVERN_PORT": str(port)}
        log = (Path(tmp) / "server.log").open("w")
        server = subprocess.Popen([str(exe), "serve", "--config", str(world / "govern.yaml"), "--port", str(port),
                                   "--pg-port", "0", "--flight-port", str(flight_port), "--no-watch"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, 60)
            headers = {"Authorization": f"Bearer {keys['bob']}", "X-Purpose": "model-training"}
            profile = world / "bob.share"
            subprocess.run([str(exe), "sharing", "profile", "bob", "--purpose", "model-training", "-o", str(profile),
                            "--config", str(world / "govern.yaml")], check=True, env=env, stdout=subprocess.DEVNULL)
            rest = DataSharingRestClient(DeltaSharingProfile.read_from_file(str(profile)))
            conn = flightsql.connect(f"grpc://127.0.0.1:{flight_port}", autocommit=True, db_kwargs={
                "username": "bob", "password": keys["bob"],
                adbc_flightsql.DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + "x-purpose": "model-training"})
            cursor = conn.cursor()
            http_fs = fsspec.filesystem("http")

            def rows_read(fmt: str) -> Callable[[], pa.Table]:
                def read() -> pa.Table:
                    with httpx.stream("GET", url + "/v1/datasets/patients/rows", params={"format": fmt},
                                      headers=headers, timeout=600) as r:
                        r.raise_for_status()
                        body = pa.py_buffer(r.read())
                    if fmt == "parquet":
                        return pq.read_table(pa.BufferReader(body))
                    return pa.ipc.open_stream(body).read_all()
                return read

            def sharing() -> pa.Table:
                answer = rest.list_files_in_table(Table(name="patients", share="model-training", schema="default"))
                return pa.concat_tables([pq.read_table(f.url, filesystem=http_fs) for f in answer.add_files])

            def flight() -> pa.Table:
                cursor.execute("SELECT * FROM patients")
                return cursor.fetch_arrow_table()

            raw = world / "data" / "patients.parquet"
            runs: dict[str, list[float]] = {}
            results: dict[str, pa.Table] = {}
            for _ in range(repeat):
                timed(runs, "direct", lambda: pq.read_table(raw))
                results["rows-cold"] = timed(runs, "rows-cold", rows_read("arrow"))
                results["flight-sql"] = timed(runs, "flight-sql", flight)
            subprocess.run([str(exe), "materialize", "patients", "--principal", "bob", "--purpose", "model-training",
                            "--config", str(world / "govern.yaml")], check=True, env=env, stdout=subprocess.DEVNULL)
            for _ in range(repeat):
                timed(runs, "direct", lambda: pq.read_table(raw))
                results["rows-materialized-arrow"] = timed(runs, "rows-materialized-arrow", rows_read("arrow"))
                results["rows-materialized-parquet"] = timed(runs, "rows-materialized-parquet", rows_read("parquet"))
                results["delta-sharing"] = timed(runs, "delta-sharing", sharing)
            cursor.close()
            conn.close()
            want = results["rows-cold"].replace_schema_metadata(None)
            for name, table in results.items():
                got = table.replace_schema_metadata(None)
                if name == "flight-sql":
                    got, ordered = got.cast(want.schema).sort_by("patient_id"), want.sort_by("patient_id")
                    assert got.equals(ordered), name
                else:
                    assert got.equals(want), name
            n = want.num_rows
            report: dict[str, object] = {"rows": rows, "delivered_rows": n, "repeat": repeat,
                                         "server_peak_rss_mib": round(peak_rss_mib(server.pid), 1)}
            for name, times in runs.items():
                report[name] = {"best_s": round(min(times), 4), "median_s": round(statistics.median(times), 4),
                                "median_rows_per_s": round(n / statistics.median(times))}
            direct = statistics.median(runs["direct"])
            report["ratio_to_direct_median"] = {name: round(direct / statistics.median(times), 3)
                                                for name, times in runs.items() if name != "direct"}
            report["flight_over_rows_cold_median"] = round(
                statistics.median(runs["rows-cold"]) / statistics.median(runs["flight-sql"]), 3)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="250000,1000000", help="Comma-separated dataset sizes.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    exe = Path(sys.executable).parent / "govern"
    sizes = [one_size(int(n), args.repeat, exe) for n in args.rows.split(",")]
    report = {"sizes": sizes, "peak_rss_mib_by_rows": {s["rows"]: s["server_peak_rss_mib"] for s in sizes},
              "targets": {
                  "materialized >= 0.8x direct": all(
                      max(s["ratio_to_direct_median"]["rows-materialized-arrow"],  # type: ignore[index]
                          s["ratio_to_direct_median"]["rows-materialized-parquet"]) >= 0.8  # type: ignore[index]
                      for s in sizes),
                  "flight >= http arrow": all(s["flight_over_rows_cold_median"] >= 1.0 for s in sizes),  # type: ignore[operator]
              }}
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
