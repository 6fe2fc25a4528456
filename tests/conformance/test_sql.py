"""Analyst SQL, surface by surface: Flight SQL returns what ``POST /v1/sql`` (format=arrow) and the
PostgreSQL wire return, for every demo principal, every purpose it may use and a set of queries
— one real ``govern serve`` answering all three. Refusals match too (problem type and SQLSTATE).
Dataset reads through every surface are in test_reads.py.

Type mapping: Flight and HTTP Arrow carry the engine's Arrow types unchanged (the tables must
be equal, schema included); the wire's values are read with psycopg and laid out in the
Flight schema (int8 → int64, float8 → double, date → date32, text → string).
"""

from __future__ import annotations

import re

import adbc_driver_manager
import httpx
import psycopg
import pyarrow as pa

from tests.conformance.conftest import NO_RAW, cases
from tests.flight.conftest import HEADER

QUERIES = (
    "SELECT * FROM patients ORDER BY patient_id LIMIT 40",
    "SELECT region, count(*) AS n, round(avg(charges), 4) AS mean FROM patients GROUP BY region ORDER BY region",
    "SELECT * FROM encounters ORDER BY encounter_id LIMIT 40",
    "SELECT p.region, e.department, count(*) AS n FROM encounters e JOIN patients p ON e.patient_id = p.patient_id "
    "GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT ssn FROM patients LIMIT 1",
)

def http_sql(server, who: str, purpose: str, sql: str) -> pa.Table | str:
    r = httpx.post(server.url + "/v1/sql", json={"sql": sql, "format": "arrow"}, timeout=60,
                   headers={**server.world.auth(who), "X-Purpose": purpose})
    if r.status_code != 200:
        return r.json()["type"].rsplit(":", 1)[-1]
    return pa.ipc.open_stream(r.content).read_all()


def flight_sql(server, who: str, purpose: str, sql: str) -> pa.Table | str:
    import adbc_driver_flightsql.dbapi as flightsql

    try:
        with flightsql.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True,
                               db_kwargs={"username": who, "password": server.world.keys[who],
                                          HEADER + "x-purpose": purpose}) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()
    except adbc_driver_manager.Error as exc:
        found = re.search(r"\[([a-z-]+), SQLSTATE ([0-9A-Z]{5})\]", str(exc))
        assert found, str(exc)
        return found.group(1)


def wire_sql(server, who: str, purpose: str, sql: str, schema: pa.Schema | None) -> pa.Table | str:
    try:
        with psycopg.connect(host="127.0.0.1", port=server.pg_port, user=who, password=server.world.keys[who],
                             dbname=purpose, connect_timeout=10, autocommit=True) as conn:
            cur = conn.execute(sql)
            names = [c.name for c in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    except psycopg.Error as exc:
        return getattr(exc, "sqlstate", None) or "error"
    assert schema is not None, "the wire answered what Flight refused"
    return pa.Table.from_pylist(rows, schema=schema)


def test_flight_http_and_the_wire_agree(served, demo_world, leaks) -> None:
    checked = refused = 0
    for who, purpose in cases(demo_world):
        for sql in QUERIES:
            got = flight_sql(served, who, purpose, sql)
            http = http_sql(served, who, purpose, sql)
            if isinstance(got, str):
                assert http == got, (who, purpose, sql, got, http)
                assert isinstance(wire_sql(served, who, purpose, sql, None), str)
                refused += 1
                continue
            assert isinstance(http, pa.Table), (who, purpose, sql, http)
            assert got.replace_schema_metadata(None).equals(http.replace_schema_metadata(None)), (who, purpose, sql)
            wire = wire_sql(served, who, purpose, sql, got.schema)
            assert isinstance(wire, pa.Table), (who, purpose, sql, wire)
            assert wire.equals(got.replace_schema_metadata(None).cast(wire.schema)), (who, purpose, sql)
            if (who, purpose) in NO_RAW:
                leaks.assert_none(str(got.to_pylist()))
            checked += 1
    assert checked >= 10 and refused >= len(QUERIES)  # eve's, and withheld columns
