"""Flight SQL against HTTP Arrow: the same masked query, the same server, one run.

    .venv/bin/python benchmarks/flight.py --rows 1000000 --json benchmarks/results/flight.json

A demo world of ``--rows`` patients (seeded) is generated in a temporary folder and served by
a real ``govern serve`` on loopback (HTTP, Flight SQL; the PostgreSQL wire off). bob
(``model-training``: tokenize, hash, email_domain, show_last, generalize, noise, a cell rule)
runs the same query through both, alternating, ``--repeat`` times each:

1. **http-arrow** — ``POST /v1/sql`` with ``format: arrow`` (httpx, streamed body read by
   ``pyarrow.ipc.open_stream``), the whole result as a table;
2. **flight-sql** — the unmodified ADBC Flight SQL driver: ``cursor.execute`` then
   ``fetch_arrow_table`` on one open connection (as a BI tool or notebook keeps it; its
   Handshake is not timed). A call is prepare + describe + the stream.

Both results must be equal. Printed: rows/s of each (best and median), the ratio
flight ÷ http (target ≥ 1.0), and the server's peak RSS. Run on a quiet machine: the
client and the server share the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql as adbc_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import httpx
import pyarrow as pa
from served import free_port, peak_rss_mib, wait_healthy

QUERY = "SELECT * FROM patients"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    exe = Path(sys.executable).parent / "govern"
    with tempfile.TemporaryDirectory(prefix="govern-flight-bench-") as tmp:
        world = Path(tmp) / "world"
        subprocess.run([str(exe), "demo", "--dir", str(world), "--rows", str(args.rows)], check=True,
                       stdout=subprocess.DEVNULL)
        keys = json.loads((world / "keys.json").read_text())
        port, flight_port = free_port(), free_port()
        log = (Path(tmp) / "server.log").open("w")
        server = subprocess.Popen([str(exe), "serve", "--config", str(world / "govern.yaml"), "--port", str(port),
                                   "--pg-port", "0", "--flight-port", str(flight_port), "--no-watch"],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, 30)
            headers = {"Authorization": f"Bearer {keys['bob']}", "X-Purpose": "model-training"}
            conn = flightsql.connect(f"grpc://127.0.0.1:{flight_port}", autocommit=True, db_kwargs={
                "username": "bob", "password": keys["bob"],
                adbc_flightsql.DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + "x-purpose": "model-training"})
            cursor = conn.cursor()

            def http_arrow() -> pa.Table:
                with httpx.stream("POST", url + "/v1/sql", json={"sql": QUERY, "format": "arrow"}, headers=headers,
                                  timeout=600) as r:
                    r.raise_for_status()
                    return pa.ipc.open_stream(pa.py_buffer(r.read())).read_all()

            def flight_sql() -> pa.Table:
                cursor.execute(QUERY)
                return cursor.fetch_arrow_table()

            runs: dict[str, list[float]] = {"http-arrow": [], "flight-sql": []}
            results: dict[str, pa.Table] = {}
            for _ in range(args.repeat):
                for name, fn in (("http-arrow", http_arrow), ("flight-sql", flight_sql)):
                    start = time.perf_counter()
                    table = fn()
                    runs[name].append(time.perf_counter() - start)
                    results[name] = table
            cursor.close()
            conn.close()
            http_t, flight_t = results["http-arrow"], results["flight-sql"]
            assert flight_t.replace_schema_metadata(None).equals(http_t.replace_schema_metadata(None)), "results differ"
            rows = http_t.num_rows
            report: dict[str, object] = {"rows": rows, "query": QUERY, "repeat": args.repeat,
                                         "server_peak_rss_mib": round(peak_rss_mib(server.pid), 1)}
            for name, times in runs.items():
                report[name] = {"best_s": round(min(times), 4), "median_s": round(statistics.median(times), 4),
                                "best_rows_per_s": round(rows / min(times)),
                                "median_rows_per_s": round(rows / statistics.median(times))}
            report["ratio_best"] = round(min(runs["http-arrow"]) / min(runs["flight-sql"]), 3)
            report["ratio_median"] = round(statistics.median(runs["http-arrow"]) / statistics.median(runs["flight-sql"]),
                                           3)
            report["target"] = "flight-sql >= http-arrow (ratio >= 1.0): " + (
                "MET" if report["ratio_median"] >= 1.0 else "MISS")  # type: ignore[operator]
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
