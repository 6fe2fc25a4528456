"""ADBC (``adbc-driver-postgresql``, default settings: ``COPY (…) TO STDOUT (FORMAT binary)`` into
Arrow, and DBAPI with parameters) and psql's ``\\copy (select …) to`` in text and csv: each
through the audited, masked query path, one audit record per statement."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pytest

from tests.pgwire.clients.conftest import audit_records, dsn, last_seq


def test_adbc_reads_masked_rows_into_arrow_with_one_audit_record(pg) -> None:
    since = last_seq(pg)
    with adbc.connect(dsn(pg)) as con, con.cursor() as cur:
        cur.execute("SELECT patient_id, birth_date, charges FROM patients LIMIT 5")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 5
    assert table.schema.field("birth_date").type == pa.date32()
    assert all(v.startswith("k1:") for v in table.column("patient_id").to_pylist())  # tokenized
    copies = [r for r in audit_records(pg, since) if r["action"] == "sql" and r["extra"].get("sql", "").startswith(
        "SELECT patient_id")]
    assert [(r["outcome"], r["rows"]) for r in copies] == [("ok", 5)]


def test_adbc_binary_types_and_parameters(pg) -> None:
    with adbc.connect(dsn(pg)) as con, con.cursor() as cur:
        cur.execute("SELECT INTERVAL '1 day 3 hours' AS i, [1, 2] AS a, DATE '2020-02-29' AS d, "
                    "TIMESTAMPTZ '2021-01-01 00:00:00+00' AS t")
        row = cur.fetch_arrow_table().to_pylist()[0]
        cur.execute("SELECT count(*) AS n FROM patients WHERE charges > $1", (100.0,))
        n = cur.fetchone()[0]
    assert row["a"] == [1, 2] and row["d"] == dt.date(2020, 2, 29)
    assert row["t"] == dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
    assert (row["i"].months, row["i"].days, row["i"].nanoseconds) == (0, 1, 3 * 3600 * 10**9)
    assert n > 0


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
@pytest.mark.parametrize("fmt", ["csv header", "(format text)"])
def test_psql_backslash_copy_writes_masked_rows(pg, tmp_path, fmt) -> None:
    out = tmp_path / "out.txt"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": pg.world.keys["alice"]}
    done = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(pg.pg_port), "-U", "alice", "-d", "analytics",
                           "-c", f"\\copy (SELECT patient_id, NULL AS n FROM patients LIMIT 3) to '{out}' {fmt}"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "COPY 3"
    lines = out.read_text().splitlines()
    if fmt.startswith("csv"):
        assert lines[0] == "patient_id,n" and lines[1].startswith("k1:") and lines[1].endswith(",")
    else:
        assert len(lines) == 3 and lines[0].startswith("k1:") and lines[0].endswith("\t\\N")


def test_copy_to_a_server_file_or_from_is_refused(pg) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": pg.world.keys["alice"]}
    for sql in ("COPY (SELECT 1) TO '/tmp/x'", "COPY patients FROM STDIN"):
        done = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(pg.pg_port), "-U", "alice", "-d",
                               "analytics", "-c", sql], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "ERROR" in done.stderr
