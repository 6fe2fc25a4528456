"""psycopg 3 and psycopg2 as their users drive them: named (server-side) cursors, ``COPY … TO
STDOUT``, binary results, pipeline mode, SQL ``PREPARE/EXECUTE``; and psql's ``PREPARE``."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from decimal import Decimal

import psycopg
import psycopg2
import pytest

from tests.pgwire.clients.conftest import audit_records, last_seq


def connect(pg, **kwargs) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=pg.pg_port, user="alice", password=pg.world.keys["alice"],
                           dbname="analytics", connect_timeout=10, **kwargs)


def test_psycopg_named_cursor_streams_in_pieces_with_one_audit_record(pg) -> None:
    since = last_seq(pg)
    with connect(pg) as con:
        total = con.execute("SELECT count(*) FROM patients WHERE charges > %s", (10,)).fetchone()[0]
        with con.cursor(name="big") as cur:
            cur.itersize = 100
            cur.execute("SELECT patient_id, charges FROM patients WHERE charges > %s", (10,))
            first = cur.fetchmany(5)
            rest = cur.fetchall()
    assert len(first) == 5 and len(first) + len(rest) == total
    assert first[0][0].startswith("k1:")
    declared = [r for r in audit_records(pg, since)
                if r["action"] == "sql" and r["extra"].get("sql", "").startswith("SELECT patient_id")]
    assert [(r["outcome"], r["rows"]) for r in declared] == [("ok", total)]


def test_psycopg2_named_cursor(pg) -> None:
    con = psycopg2.connect(host="127.0.0.1", port=pg.pg_port, user="alice", password=pg.world.keys["alice"],
                           dbname="analytics")
    try:
        cur = con.cursor(name="pc2")
        cur.itersize = 50
        cur.execute("SELECT patient_id FROM patients WHERE charges > %s", (10,))
        ids = [row[0] for row in cur]
        cur.close()
        plain = con.cursor()
        plain.execute("SELECT count(*) FROM patients WHERE charges > %s", (10,))
        assert len(ids) == plain.fetchone()[0]
    finally:
        con.close()


def test_psycopg_copy_binary_results_and_pipeline(pg) -> None:
    with connect(pg, autocommit=True) as con:
        with con.cursor() as cur, cur.copy("COPY (SELECT region, charges FROM patients LIMIT 4) TO STDOUT") as copy:
            rows = list(copy.rows())
        assert len(rows) == 4
        with con.cursor(binary=True) as cur:
            cur.execute("SELECT DATE '2020-02-29' AS d, 1.25::numeric(10, 2) AS n, INTERVAL '1 day 2 hours' AS i, "
                        "[1, 2] AS a, %s::bigint AS b", (7,))
            assert cur.fetchone() == (dt.date(2020, 2, 29), Decimal("1.25"), dt.timedelta(days=1, hours=2),
                                      [1, 2], 7)
        with con.pipeline():
            a = con.execute("SELECT count(*) FROM patients")
            b = con.execute("SELECT count(*) FROM encounters")
        assert a.fetchone()[0] > 0 and b.fetchone()[0] > 0
        con.execute("PREPARE q (float8) AS SELECT count(*) FROM patients WHERE charges > $1")
        assert con.execute("EXECUTE q (100)").fetchone()[0] > 0
        con.execute("DEALLOCATE q")


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_psql_prepare_execute_and_cursors(pg) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": pg.world.keys["alice"]}
    script = ("PREPARE n (float8) AS SELECT count(*) > 0 AS some FROM patients WHERE charges > $1;\n"
              "EXECUTE n (1);\n"
              "BEGIN;\nDECLARE c CURSOR FOR SELECT region FROM patients;\nFETCH 2 FROM c;\nCLOSE c;\nCOMMIT;\n")
    done = subprocess.run(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(pg.pg_port), "-U", "alice",
                           "-d", "analytics"], input=script, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line]
    assert lines[:2] == ["PREPARE", "t"]
    assert lines[2:4] == ["BEGIN", "DECLARE CURSOR"] and len(lines) == 8 and lines[-2:] == ["CLOSE CURSOR", "COMMIT"]


def test_statement_timeout_cancels_a_long_query(pg) -> None:
    import time

    with connect(pg, autocommit=True) as con:
        con.execute("SET statement_timeout = '1s'")
        start = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            con.execute("SELECT count(*) FROM range(100000000000) a")
        assert time.monotonic() - start < 10  # not sql_timeout (30 s)
        con.execute("SET statement_timeout = 0")
        assert con.execute("SELECT 1").fetchone() == (1,)
