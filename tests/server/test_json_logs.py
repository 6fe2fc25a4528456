"""With JSON logging (``govern serve``), every line the gateway writes is one JSON object: its
own records, uvicorn's, libraries' (sqlglot, SDV…), Python warnings and tracebacks."""

from __future__ import annotations

import json

import httpx

from tests.gateway import start_server, stop_server


def test_every_line_of_a_served_gateways_log_is_json(world) -> None:
    server = start_server(world)
    try:
        bob = {**world.auth("bob"), "X-Purpose": "research"}
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.get("/v1/datasets/patients/rows", headers=bob, params={"limit": 5}).status_code == 200
            assert c.get("/v1/datasets/patients/rows", headers=bob, params={"filter": "zip"}).status_code == 400
            assert c.get("/v1/datasets/patients/rows").status_code == 401
            assert c.request("BREW", "/v1/datasets").status_code in (400, 405)
            r = c.post("/v1/sql", headers=bob, json={"sql": "select region, count(*) from patients group by 1"})
            assert r.status_code == 200, r.text
            assert c.post("/v1/sql", headers=bob, json={"sql": "select nope("}).status_code == 400
            assert c.get("/metrics").status_code == 200
    finally:
        stop_server(server)
    lines = server.log.read_text().splitlines()
    assert len(lines) >= 8
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}\n\nthe whole log:\n" + "\n".join(lines)) from None
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    loggers = {r["logger"] for r in records}
    assert {"govern.access", "govern.serve"} <= loggers
    assert any(name.startswith("uvicorn") for name in loggers), loggers  # uvicorn's own lines too
    statuses = [r.get("status") for r in records if r["message"] == "request"]
    assert 200 in statuses and 400 in statuses and 401 in statuses


SCRIPT = r'''
import logging, threading, warnings
from govern.logs import log_everything_as_json

logging.getLogger("sqlglot").addHandler(logging.StreamHandler())  # a library's own plain handler
log_everything_as_json("info")
logging.getLogger("sqlglot").warning("unsupported syntax, falling back to %s", "parsing as a command")
logging.getLogger("sdv.single_table").info("fitting %d rows", 10)
logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
logging.getLogger("broken").info("%s and %s", "only one argument")
warnings.warn("a library's warning", UserWarning)
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("govern.test").exception("it failed")
t = threading.Thread(target=lambda: {}["missing"])
t.start(); t.join()
raise RuntimeError("the end")
'''


def test_libraries_warnings_and_tracebacks_are_one_json_line_each(tmp_path) -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "default"})
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}\n\n" + done.stderr) from None
    by_logger = {r["logger"]: r for r in records}
    assert {"sqlglot", "sdv.single_table", "uvicorn.error", "broken", "py.warnings", "govern.test",
            "govern.crash"} <= set(by_logger)
    assert "ZeroDivisionError" in by_logger["govern.test"]["traceback"]
    crashes = [r for r in records if r["logger"] == "govern.crash"]
    assert {r["error"] for r in crashes} == {"KeyError", "RuntimeError"}
    assert len(records) == 8  # each event exactly once: no plain duplicate from the library's handler
