"""asyncpg (and SQLAlchemy 2 over ``postgresql+asyncpg``) against a real ``govern serve``.

asyncpg prepares every statement and encodes each parameter in binary for the type the server
declares in ParameterDescription, introspects unknown types through the catalog, and resets a
pooled connection with ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.pgwire.clients.conftest import audit_records, dsn, last_seq


def run(coro):
    return asyncio.run(coro)


async def _connect(pg) -> asyncpg.Connection:
    return await asyncpg.connect(dsn(pg), ssl=False)


def test_asyncpg_connects_with_its_quoted_client_encoding(pg) -> None:
    async def go():
        con = await _connect(pg)  # sends client_encoding='utf-8' (quotes included)
        try:
            return await con.fetchval("SELECT count(*) FROM patients")
        finally:
            await con.close()

    assert run(go()) > 0


def test_non_text_parameters_are_declared_and_decoded(pg) -> None:
    async def go():
        con = await _connect(pg)
        try:
            stmt = await con.prepare("SELECT count(*) FROM patients WHERE charges > $1 AND birth_date < $2")
            types = [t.name for t in stmt.get_parameters()]
            n = await stmt.fetchval(100.5, dt.date(2030, 1, 1))
            casts = await con.fetchrow("SELECT $1::int + 1 AS i, $2::date AS d, $3::numeric AS n", 41,
                                       dt.date(2020, 2, 29), Decimal("1.25"))
            region = await con.fetchval("SELECT region FROM patients LIMIT 1")
            listed = await con.fetchval("SELECT count(*) FROM patients WHERE region = ANY($1)", [region, "nowhere"])
            everyone = await con.fetchval("SELECT count(*) FROM patients")
            return types, n, casts, listed, everyone
        finally:
            await con.close()

    types, n, casts, listed, everyone = run(go())
    assert types == ["float8", "date"]  # inferred from the columns' types
    assert n > 0
    assert (casts["i"], casts["d"], casts["n"]) == (42, dt.date(2020, 2, 29), Decimal("1.25"))
    assert listed == everyone  # the demo's analytics view of alice: one region


def test_arrays_and_intervals_come_back_as_python_values(pg) -> None:
    async def go():
        con = await _connect(pg)
        try:
            return await con.fetchrow("SELECT ARRAY[1, 2, NULL] AS a, ['x', 'y z'] AS t, "
                                      "INTERVAL '1 day 2 hours' AS i, INTERVAL '14 months' AS m")
        finally:
            await con.close()

    row = run(go())
    assert row["a"] == [1, 2, None] and row["t"] == ["x", "y z"]
    assert row["i"] == dt.timedelta(days=1, hours=2)
    assert row["m"] == dt.timedelta(days=365 + 2 * 30)  # asyncpg reads 1 year 2 mons so


def test_a_pool_returns_and_reuses_its_connection(pg) -> None:
    since = last_seq(pg)

    async def go():
        pool = await asyncpg.create_pool(dsn(pg), ssl=False, min_size=1, max_size=1)
        try:
            counts = []
            for _ in range(3):
                async with pool.acquire() as con:  # release runs CLOSE ALL / RESET ALL
                    counts.append(await con.fetchval("SELECT count(*) FROM patients"))
            return counts
        finally:
            await pool.close()

    counts = run(go())
    assert len(set(counts)) == 1
    queries = [r for r in audit_records(pg, since) if r["action"] == "sql"]
    assert [r["outcome"] for r in queries] == ["ok"] * 3  # one record per statement, all delivered


def test_sqlalchemy_asyncpg_reflects_and_queries(pg) -> None:
    async def go():
        engine = create_async_engine(dsn(pg, scheme="postgresql+asyncpg"))
        try:
            async with engine.connect() as con:
                tables = await con.run_sync(lambda c: sa.inspect(c).get_table_names())
                columns = await con.run_sync(lambda c: [x["name"] for x in sa.inspect(c).get_columns("patients")])
                n = (await con.execute(sa.text("SELECT count(*) FROM patients WHERE charges > :c"),
                                       {"c": 10})).scalar()
            return tables, columns, n
        finally:
            await engine.dispose()

    tables, columns, n = run(go())
    assert tables == ["encounters", "patients"]
    assert "ssn" not in columns and "patient_id" in columns  # withheld columns are not in the catalog
    assert n > 0


@pytest.mark.parametrize("bad", ["SELECT pg_catalog.pg_no_such_function()"])
def test_a_catalog_question_it_cannot_answer_is_an_error(pg, bad) -> None:
    async def go():
        con = await _connect(pg)
        try:
            with pytest.raises(asyncpg.FeatureNotSupportedError, match="catalog emulation cannot answer"):
                await con.fetch(bad)
        finally:
            await con.close()

    run(go())
    import httpx

    metrics = httpx.get(pg.url + "/metrics", timeout=10).text
    line = next(m for m in metrics.splitlines() if m.startswith("govern_pgwire_catalog_unanswered_total"))
    assert float(line.split()[-1]) >= 1
    assert any('"catalog query not answered"' in x and '"warning"' in x
               for x in pg.log.read_text(errors="replace").splitlines())


def test_wire_metrics_count_connections_statements_and_bytes(pg) -> None:
    import httpx

    async def go():
        con = await _connect(pg)
        try:
            await con.fetchval("SELECT count(*) FROM patients")
            with pytest.raises(asyncpg.PostgresError):
                await con.fetchval("SELECT no_such_column FROM patients")
        finally:
            await con.close()

    run(go())
    metrics = {line.split(" ")[0]: float(line.split(" ")[-1])
               for line in httpx.get(pg.url + "/metrics", timeout=10).text.splitlines()
               if line.startswith("govern_pgwire_")}
    assert metrics['govern_pgwire_queries_total{kind="query",outcome="ok"}'] >= 1
    assert metrics['govern_pgwire_queries_total{kind="query",outcome="error"}'] >= 1
    assert metrics['govern_pgwire_connections_total{transport="plain"}'] >= 1
    assert metrics['govern_pgwire_bytes_total{direction="in"}'] > 0
    assert metrics['govern_pgwire_bytes_total{direction="out"}'] > 0
    assert "govern_pgwire_open_connections" in metrics
    kinds = {key.split('kind="')[1].split('"')[0] for key in metrics if key.startswith("govern_pgwire_queries_total{")}
    assert kinds <= {"empty", "local", "catalog", "query", "copy", "declare", "fetch", "prepare", "execute", "other"}
