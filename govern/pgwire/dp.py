"""Differentially private SQL over the PostgreSQL wire (see docs/privacy.md#over-the-postgresql-wire).

A statement runs as DP SQL when the session says so (``SET govern.privacy = dp``) or the
statement starts with a ``/*+ dp epsilon=… */`` hint. Epsilon, delta and contributions come
from the hint, else from ``SET govern.epsilon`` / ``govern.delta`` / ``govern.contributions``.
The result is an ordinary row set — group columns, then one noisy value per aggregate — and
the statement is audited (once, ``query_dp``) and charged before its first row is sent. The
95% intervals, the mechanisms and the budget left are in the audit record and, over HTTP, in
the response; ``SELECT`` over the wire carries values only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from govern.errors import GovernError, InvalidRequest, SqlError
from govern.privacy.dp import sql as dp_sql

if TYPE_CHECKING:
    from govern.pgwire.query import Cursor, Runner


def is_dp(runner: Runner, text: str) -> bool:
    value = runner.session.values.get("govern.privacy", "")
    return value.strip().lower() == "dp" or dp_sql.has_hint(text)


def _number(runner: Runner, name: str, kind: type) -> Any:
    raw = runner.session.values.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise InvalidRequest(f'invalid value for parameter "{name}": "{raw}"', sqlstate="22023") from None


def translate(runner: Runner, text: str) -> dp_sql.DpSql:
    from govern.server.routes.dp import translate_sql

    return translate_sql(runner.gw, text, epsilon=_number(runner, "govern.epsilon", float),
                         delta=_number(runner, "govern.delta", float) or 0.0,
                         contributions=_number(runner, "govern.contributions", int) or 1)


def dp_cursor(runner: Runner, text: str, params: list[Any]) -> Cursor:
    """Run DP SQL: translate, release (audited and charged), and hand back the rows."""
    from govern.pgwire.query import Cursor
    from govern.server.routes.dp import serve_release, sql_types

    ctx = runner.context(text)
    ctx.action = "query_dp"
    try:
        if params:
            raise SqlError("differentially private SQL takes no parameters", sqlstate="0A000")
        translated = translate(runner, text)
    except GovernError as exc:
        runner.refuse(ctx, exc)
        raise
    release = serve_release(runner.gw, ctx, runner.principal, runner.purpose, translated.query)
    names, values, _intervals = dp_sql.result_table(translated, release.result.rows)
    types = [pa.type_for_alias(t) if t in ("int64", "double") else _arrow(t) for t in sql_types(translated, release)]
    columns = [pa.array([row[i] for row in values], types[i]) for i in range(len(names))]
    table = pa.Table.from_arrays(columns, schema=pa.schema([pa.field(f"c{i}", t) for i, t in enumerate(types)]))
    return Cursor(list(zip(names, types, strict=True)), iter(table.to_batches()))


def dp_describe(runner: Runner, text: str) -> list[tuple[str, pa.DataType | None]]:
    """Column names and types of a DP SQL statement, without running it (nothing is charged)."""
    translated = translate(runner, text)
    state = runner.gw.governor.state
    schema = runner.gw.governor.schema(translated.query.dataset, state)
    functions = {a.output_name: a.function for a in translated.query.aggregates}
    out: list[tuple[str, pa.DataType | None]] = []
    for display, src in translated.outputs:
        if src in schema.names and src not in functions:
            out.append((display, schema.field(src).type))
        else:
            out.append((display, pa.int64() if functions.get(src) == "count" else pa.float64()))
    return out


def _arrow(name: str) -> pa.DataType:
    try:
        return pa.type_for_alias(name)
    except ValueError:
        return pa.string()
