"""Analyst SQL inside the lifecycle, shared by every surface that takes a query (``POST /v1/sql``,
the PostgreSQL wire, and what comes later).

A principal with no readable dataset under its purpose is refused before its text is parsed;
everything else — parse, validate, resolve, the masked reads, DuckDB — runs after the read
slot is taken, in an SQL worker process (an OS memory bound), under the query's one deadline
(``sql_timeout``). The audit record says what
the query touched: the datasets, their plan hashes, the masked columns read, whether a view
came from the cache; never the parameter values.
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from govern.deliver.lifecycle import Exchange
from govern.sql.engine import SqlResult
from govern.sql.isolation import SqlService

__all__ = ["describe_query", "note_text", "run_query"]


def note_text(ex: Exchange, text: str, params: list[Any] | None = None) -> None:
    """Put the query text (clipped at ``sql_max_length``) and the parameter count in the record."""
    limit = ex.settings.sql_max_length
    ex.extra["sql"] = text if len(text) <= limit else text[:limit] + "…"
    if params:
        ex.extra["params"] = len(params)  # how many, not the values


def run_query(ex: Exchange, service: SqlService, text: str, params: list[Any] | None,
              cancel: threading.Event | None = None) -> SqlResult:
    """Run ``text`` for the exchange's principal and purpose, in an SQL worker, under the
    exchange's one deadline (``sql_timeout``: parse, validate, execute and stream); the result
    streams (the caller hands it to :meth:`Exchange.stream` and closes it)."""
    note_text(ex, text, params)
    ex.permitted("read")
    deadline = ex.admit(seconds=ex.settings.sql_timeout)
    principal, purpose = ex.principal, ex.purpose
    assert principal is not None and purpose is not None  # permitted() checked both
    result = service.run(principal, purpose, text, params, ex.state.policy, deadline.at, settings=ex.settings,
                         cancel=cancel)
    _describe(ex, result)
    return result


def describe_query(ex: Exchange, service: SqlService, text: str, params: list[Any] | None) -> pa.Schema:
    """The result schema of ``text``, computed over empty views: no data is read."""
    note_text(ex, text, params)
    ex.permitted("read")
    deadline = ex.admit(seconds=ex.settings.sql_timeout)
    principal, purpose = ex.principal, ex.purpose
    assert principal is not None and purpose is not None
    return service.describe(principal, purpose, text, params, ex.state.policy, deadline.at, settings=ex.settings)


def _describe(ex: Exchange, result: SqlResult) -> None:
    ex.extra["datasets"] = list(result.datasets)
    if result.cached:
        ex.extra["cached"] = list(result.cached)  # views served from the view cache
    if result.suppressed_groups is not None:  # a min_group result policy applied
        ex.extra["suppressed_groups"] = result.suppressed_groups
    ex.extra["plans"] = dict(result.plans)
    read: dict[str, dict[str, str]] = {}
    for name, cols in result.columns.items():
        plan = result.access_plans.get(name)
        actions = {c.name: (f"mask:{c.mask.function}" if c.mask else c.action) for c in plan.columns} if plan else {}
        read[name] = {c: actions.get(c, "keep") for c in cols}
    ex.extra["read"] = read
    if len(result.datasets) == 1:
        ex.dataset = result.datasets[0]
        ex.plan = result.access_plans.get(ex.dataset)
