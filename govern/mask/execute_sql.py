"""Execute an access plan as DuckDB SQL.

``plan_sql`` renders the plan as one SELECT over a named raw relation: each visible column is
its mask's SQL form (cell rules as ``CASE WHEN coalesce(when, true) THEN ... ELSE ... END``),
row filters in WHERE. Key material is never in the SQL text: masks bind it as named parameters
(``$gk_0``), returned alongside the SQL for execution. The analyst SQL layer wraps this SELECT
so masking happens before any analyst expression sees a column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from govern.mask import registry
from govern.mask.function import SqlContext
from govern.mask.keys import KeyRing
from govern.plan.model import AccessPlan


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class PlanSql:
    sql: str
    parameters: dict[str, Any] = field(repr=False)  # key-derived blobs: never in a repr
    needs_udfs: bool = False  # some mask's SQL form calls a govern_* UDF (e.g. tokenize)


def plan_sql(plan: AccessPlan, relation: str, keys: KeyRing, *, columns: list[str] | None = None,
             client_filter_sql: str | None = None, limit: int | None = None) -> PlanSql:
    """The masked view of ``relation`` as SQL with bound parameters."""
    ctx = SqlContext(keys=keys, privacy_unit=plan.privacy_unit, quote=quote)
    select = []
    for col in plan.visible_columns:
        expr = quote(col.name)
        out = registry.get(col.mask.function).sql(expr, col.mask.kwargs, ctx) if col.mask else expr
        for rule in plan.cell_rules:
            if rule.column == col.name:
                masked = registry.get(rule.mask.function).sql(expr, rule.mask.kwargs, ctx)
                out = f"CASE WHEN coalesce(({rule.when}), true) THEN {masked} ELSE {out} END"
        select.append(f"{out} AS {quote(col.name)}")
    sql = f"SELECT {', '.join(select)} FROM {relation}"
    if plan.row_filter_sql:
        sql += f" WHERE {plan.row_filter_sql}"
    if columns is not None or client_filter_sql is not None or limit is not None:
        outer = ", ".join(quote(c) for c in columns) if columns else "*"
        sql = f"SELECT {outer} FROM ({sql}) AS masked"
        if client_filter_sql:
            sql += f" WHERE {client_filter_sql}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
    needs_udfs = "govern_" in sql
    return PlanSql(sql, dict(ctx.parameters), needs_udfs)


def execute_duckdb(plan: AccessPlan, source: pa.Table | pa.RecordBatchReader, keys: KeyRing, *,
                   columns: list[str] | None = None, client_filter_sql: str | None = None,
                   limit: int | None = None, threads: int | None = None) -> pa.Table:
    """Run the plan's SQL over an Arrow source in a private DuckDB connection."""
    con = duckdb.connect(config={"enable_external_access": False, **({"threads": threads} if threads else {})})
    try:
        con.register("govern_raw", source)
        q = plan_sql(plan, "govern_raw", keys, columns=columns, client_filter_sql=client_filter_sql, limit=limit)
        if q.needs_udfs:
            from govern.mask.functions import register_duckdb_udfs

            register_duckdb_udfs(con, keys)
        return con.sql(q.sql, params=q.parameters or None).to_arrow_table()
    finally:
        con.close()
