"""Run one mask through both engines and report what each produced (or that it raised)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from govern.errors import MaskError
from govern.mask import registry
from govern.mask.function import MaskContext, SqlContext
from govern.mask.functions import register_duckdb_udfs
from govern.mask.keys import KeyRing

FIXED_KEYS = KeyRing({"k1": bytes(range(32)), "k0": b"an older master key, kept for rotation"}, "k1")


@dataclass
class Outcome:
    array: pa.Array | None
    error: str | None
    sql: str = ""


def connect(keys: KeyRing) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET TimeZone = 'UTC'")
    register_duckdb_udfs(con, keys)
    return con


def run_arrow(name: str, params: dict[str, Any], table: pa.Table, keys: KeyRing, unit: str | None = "u") -> Outcome:
    fn = registry.get(name)
    inputs = {c: table[c].combine_chunks() for c in fn.inputs(params, unit)}
    ctx = MaskContext(keys=keys, inputs=inputs, privacy_unit=unit, threads=2)
    try:
        return Outcome(fn.arrow(table["x"].combine_chunks(), params, ctx), None)
    except MaskError as exc:
        return Outcome(None, str(exc))


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any], table: pa.Table,
            keys: KeyRing, unit: str | None = "u") -> Outcome:
    ctx = SqlContext(keys=keys, privacy_unit=unit)
    expr = registry.get(name).sql('"x"', params, ctx)
    con.register("t", table)
    try:
        out = con.sql(f"SELECT {expr} AS r FROM t", params=ctx.parameters).to_arrow_table()
        return Outcome(out["r"].combine_chunks(), None, expr)
    except duckdb.Error as exc:
        return Outcome(None, str(exc), expr)
    finally:
        con.unregister("t")


def assert_same(arrow: Outcome, sql: Outcome) -> None:
    """Both engines give identical arrays, or both refuse (overflow and the like)."""
    if arrow.error or sql.error:
        assert arrow.error and sql.error, f"only one engine failed: arrow={arrow.error!r} sql={sql.error!r}"
        return
    assert arrow.array is not None and sql.array is not None
    assert arrow.array.type == sql.array.type, (arrow.array.type, sql.array.type)
    assert arrow.array.equals(sql.array), (
        f"\narrow: {arrow.array.to_pylist()}\nsql:   {sql.array.to_pylist()}\nSQL: {sql.sql}")
