"""DP SQL: a small SQL subset translated to the same :class:`DpQuery` as the JSON API.

Accepted (PostgreSQL syntax)::

    SELECT [group columns,] COUNT(*) | COUNT(col) | SUM(col) | AVG(col) | MEDIAN(col)
           | QUANTILE(col, q) | PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)   [AS name], …
    FROM dataset [AS alias]
    [WHERE predicate]
    [GROUP BY column | position, …]

Everything else — joins, subqueries, CTEs, DISTINCT, HAVING, ORDER BY, LIMIT, window
functions, expressions inside aggregates, several statements — is refused with the reason
(``SqlError``, SQLSTATE 0A000). The privacy parameters come from the caller (HTTP body fields,
PostgreSQL session settings ``govern.epsilon``/``govern.delta``/``govern.contributions``) or a
leading comment hint ``/*+ dp epsilon=0.5 delta=1e-7 contributions=2 */``, which wins.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

from govern.errors import SqlError
from govern.privacy.dp.query import Aggregate, DpQuery, DpRequest

_HINT = re.compile(r"/\*\+?\s*dp\b([^*]*)\*/", re.IGNORECASE)
_PARAM = re.compile(r"(epsilon|delta|contributions)\s*=\s*(\S*)", re.IGNORECASE)
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$|^\.[0-9]+([eE][+-]?[0-9]+)?$")


@dataclass(frozen=True)
class DpSql:
    """A translated statement: the query and how to lay its result out as SQL columns."""

    query: DpQuery
    outputs: tuple[tuple[str, str], ...]  # (display name, group column or aggregate name), in SELECT order


def hint(text: str) -> dict[str, float]:
    """Privacy parameters of a ``/*+ dp … */`` comment, if there is one (else {})."""
    found = _HINT.search(text)
    if not found:
        return {}
    out: dict[str, float] = {}
    for key, value in _PARAM.findall(found.group(1)):
        number = float(value) if _NUMBER.match(value) else math.nan
        if not math.isfinite(number):  # decided from the text alone: never an error later
            raise SqlError(f"invalid privacy parameter in the dp hint: {key.lower()}={value[:40]!r} "
                           "(a plain non-negative number, e.g. epsilon=0.5 delta=1e-7 contributions=2)",
                           sqlstate="22023")
        out[key.lower()] = number
    return out


def has_hint(text: str) -> bool:
    return _HINT.search(text) is not None


def translate(text: str, datasets: set[str], *, epsilon: float | None, delta: float = 0.0,
              contributions: int = 1, bounds: dict[str, list[float]] | None = None) -> DpSql:
    """Translate DP SQL into a :class:`DpQuery` (``SqlError`` with the reason if outside the subset)."""
    params: dict[str, Any] = {"epsilon": epsilon, "delta": delta, "contributions": contributions, **hint(text)}
    if params["epsilon"] is None:
        raise SqlError("DP SQL needs an epsilon: the 'epsilon' field, SET govern.epsilon = 0.5, "
                       "or a /*+ dp epsilon=0.5 */ hint", sqlstate="22023")
    try:
        statements = [s for s in sqlglot.parse(text, dialect="postgres") if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise SqlError(f"syntax error: {first.get('description', 'cannot parse')}", sqlstate="42601") from None
    if len(statements) != 1:
        raise _refuse("exactly one statement")
    select = statements[0]
    if not isinstance(select, exp.Select):
        raise _refuse("only SELECT")
    for arg, what in (("with", "WITH"), ("joins", "JOIN"), ("distinct", "DISTINCT"), ("having", "HAVING"),
                      ("order", "ORDER BY"), ("limit", "LIMIT"), ("offset", "OFFSET"), ("windows", "WINDOW"),
                      ("qualify", "QUALIFY"), ("laterals", "LATERAL"), ("locks", "FOR UPDATE")):
        if select.args.get(arg) or select.args.get(arg + "_"):  # sqlglot names some args with a trailing _
            why = " (rows come back one per group, sorted by group key)" if arg in ("order", "limit", "offset") else ""
            raise _refuse(f"no {what}{why}")
    source = select.args.get("from") or select.args.get("from_")
    table = source.this if source is not None else None
    if not isinstance(table, exp.Table) or table.args.get("db") or not isinstance(table.this, exp.Identifier):
        raise _refuse("FROM one dataset by name (no subqueries, table functions or schemas)")
    by_lower = {d.lower(): d for d in datasets}
    dataset = by_lower.get(table.name.lower())
    if dataset is None:
        raise SqlError(f"unknown dataset '{table.name}'", sqlstate="42P01")
    alias = table.alias_or_name.lower()

    def column(node: exp.Expression, where: str) -> str:
        if not isinstance(node, exp.Column) or (node.table and node.table.lower() not in (alias, dataset.lower())):
            raise _refuse(f"{where} must be a plain column name")
        return node.name

    group: list[str] = []
    items = list(select.expressions)
    group_node = select.args.get("group")
    for g in (group_node.expressions if group_node is not None else []):
        if isinstance(g, exp.Literal) and not g.is_string:
            pos = int(g.this)
            if not 1 <= pos <= len(items):
                raise SqlError(f"GROUP BY position {pos} is not in the select list", sqlstate="42P10")
            target = items[pos - 1].unalias()
            group.append(column(target, f"GROUP BY {pos}"))
        else:
            group.append(column(g, "a GROUP BY item"))
    aggregates: list[Aggregate] = []
    outputs: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        node = item.unalias()
        display = item.alias if isinstance(item, exp.Alias) else None
        if isinstance(node, exp.Column):
            name = column(node, "a selected column")
            if name not in group:
                raise SqlError(f"column '{name}' must appear in GROUP BY (only aggregates are released)",
                               sqlstate="42803")
            outputs.append((display or name, name))
            continue
        agg, default = _aggregate(node, column, bounds or {})
        internal = f"a{i}"
        aggregates.append(agg.model_copy(update={"name": internal}))
        outputs.append((display or default, internal))
    if not aggregates:
        raise _refuse("at least one aggregate (COUNT, SUM, AVG, MEDIAN, QUANTILE)")
    where = select.args.get("where")
    contributions = params["contributions"]
    if not (isinstance(contributions, int | float) and math.isfinite(contributions)
            and float(contributions).is_integer()):
        raise SqlError("invalid privacy parameters: contributions must be a whole number", sqlstate="22023")
    try:
        request = DpRequest(aggregates=aggregates, group_by=group,
                            filter=where.this.sql(dialect="postgres") if where is not None else None,
                            epsilon=params["epsilon"], delta=params["delta"],
                            contributions=int(params["contributions"]))
    except ValueError as exc:
        raise SqlError(f"invalid privacy parameters: {_first_error(exc)}", sqlstate="22023") from None
    return DpSql(request.to_query(dataset), tuple(outputs))


def _aggregate(node: exp.Expression, column: Any, bounds: dict[str, list[float]]) -> tuple[Aggregate, str]:
    def with_bounds(col: str, **kw: Any) -> dict[str, Any]:
        b = bounds.get(col)
        return {**kw, **({"bounds": tuple(b)} if b else {})}

    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Star):
            return Aggregate(function="count"), "count"
        if isinstance(arg, exp.Distinct):
            raise _refuse("no COUNT(DISTINCT …)")
        return Aggregate(function="count", column=column(arg, "COUNT's argument")), "count"
    if isinstance(node, exp.Sum):
        col = column(node.this, "SUM's argument")
        return Aggregate(**with_bounds(col, function="sum", column=col)), "sum"
    if isinstance(node, exp.Avg):
        col = column(node.this, "AVG's argument")
        return Aggregate(**with_bounds(col, function="mean", column=col)), "avg"
    if isinstance(node, exp.Median):
        col = column(node.this, "MEDIAN's argument")
        return Aggregate(**with_bounds(col, function="quantile", column=col, q=0.5)), "median"
    if isinstance(node, exp.Quantile):
        col = column(node.this, "QUANTILE's first argument")
        return Aggregate(**with_bounds(col, function="quantile", column=col, q=_fraction(node.args.get("quantile")))), "quantile"
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont | exp.PercentileDisc):
        order = node.expression
        cols = order.expressions if isinstance(order, exp.Order) else []
        if len(cols) != 1:
            raise _refuse("PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY one column)")
        col = column(cols[0].this, "the ORDER BY of PERCENTILE_CONT")
        return Aggregate(**with_bounds(col, function="quantile", column=col, q=_fraction(node.this.this))), \
            "percentile_cont"
    name = node.sql(dialect="postgres")[:60]
    raise _refuse(f"only COUNT, SUM, AVG, MEDIAN, QUANTILE and PERCENTILE_CONT over plain columns (found {name})")


def _fraction(node: Any) -> float:
    if isinstance(node, exp.Literal) and not node.is_string:
        q = float(node.this)
        if 0 <= q <= 1:
            return q
    raise _refuse("a quantile must be a number literal between 0 and 1")


def _refuse(what: str) -> SqlError:
    return SqlError(f"not in the DP SQL subset: {what}", sqlstate="0A000")


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg', 'invalid')}"
    return str(exc)


def result_table(sql: DpSql, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]], list[list[Any]]]:
    """(names, values, intervals): one SQL row per released group, in SELECT order; for each
    aggregate cell its noisy value, and its 95% interval (None for a group column or a quantile)."""
    names = [display for display, _ in sql.outputs]
    values, intervals = [], []
    for row in rows:
        vals, ivs = [], []
        for _display, source in sql.outputs:
            cell = row.get(source)
            if isinstance(cell, dict):
                vals.append(cell.get("value"))
                ivs.append(cell.get("interval"))
            else:
                vals.append(cell)
                ivs.append(None)
        values.append(vals)
        intervals.append(ivs)
    return names, values, intervals
