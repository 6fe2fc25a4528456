"""Helpers for DP tests: compile a query against a small in-memory table whose columns are all
usable, so the engine (OpenDP) can be tested apart from policy and storage."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from govern.plan.model import AccessPlan, ColumnPlan, Reason
from govern.policy.model import ColumnEntry, DatasetEntry
from govern.privacy.dp.compile import DpPlan, compile_query
from govern.privacy.dp.execute import DpResult, release
from govern.privacy.dp.query import parse_request


def dp_plan(table: pa.Table, body: dict[str, Any], *, unit: str = "pid", bounds: dict[str, tuple] | None = None,
            public: tuple[str, ...] = (), withheld: tuple[str, ...] = ()) -> DpPlan:
    bounds = bounds or {}
    entry = DatasetEntry(
        name="t", location="t.parquet", format="parquet", level="public", line=1, privacy_unit=unit,
        columns={c: ColumnEntry(c, (), None, 1, bounds=bounds.get(c), public_values=c in public)
                 for c in table.column_names})
    columns = tuple(
        ColumnPlan(c, "withhold" if c in withheld else "keep", Reason("test", "test"), str(table.schema.field(c).type))
        for c in table.column_names)
    access = AccessPlan(dataset="t", principal="tester", purpose="test", action="query_dp", columns=columns)
    return compile_query(parse_request(body).to_query("t"), access, entry, table.schema)


def run(table: pa.Table, body: dict[str, Any], **kw: Any) -> DpResult:
    plan = dp_plan(table, body, **kw)
    public = {g: sorted(set(table.column(g).to_pylist()), key=str) for g in plan.catalog_key_columns}
    for d in plan.derived:
        if d.how == "category" and not d.labels:
            public[d.name] = sorted({str(v) for v in table.column(d.source).to_pylist()})
    return release(plan, table, public)
