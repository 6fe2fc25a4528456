"""Compile a validated predicate (canonical DuckDB SQL) to a pyarrow compute Expression.

The same Expression serves Parquet scan pushdown (``pyarrow.dataset`` filters) and in-memory
evaluation on record batches. SQL three-valued logic is kept: comparisons with NULL are NULL,
``x IN (...)`` is NULL when ``x`` is NULL, AND/OR are Kleene. Callers decide what NULL means
(row filters drop the row; cell rules mask the cell).
"""

from __future__ import annotations

import datetime as _dt
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import sqlglot
from sqlglot import exp

from govern.errors import PredicateError

_COMPARE: dict[type[exp.Expression], str] = {
    exp.EQ: "equal",
    exp.NEQ: "not_equal",
    exp.GT: "greater",
    exp.GTE: "greater_equal",
    exp.LT: "less",
    exp.LTE: "less_equal",
}
_ARITH: dict[type[exp.Expression], str] = {exp.Add: "add_checked", exp.Sub: "subtract_checked", exp.Mul: "multiply_checked"}
_UNARY: dict[type[exp.Expression], str] = {
    exp.Lower: "utf8_lower",
    exp.Upper: "utf8_upper",
    exp.Length: "utf8_length",
    exp.Abs: "abs_checked",
    exp.Year: "year",
    exp.Month: "month",
    exp.Neg: "negate_checked",
}


def _call(name: str, args: list[pc.Expression], options: object = None) -> pc.Expression:
    return pc.Expression._call(name, args, options)


@lru_cache(maxsize=2048)
def to_expression(sql: str) -> pc.Expression:
    """Compile canonical predicate SQL (as stored in a plan) to an Arrow Expression."""
    tree: exp.Expression = sqlglot.parse_one(sql, dialect="duckdb")  # type: ignore[assignment]
    return _compile(tree)


def _literal(node: exp.Expression) -> object:
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Neg):
        return -_literal(node.this)  # type: ignore[operator]
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal):
        target = node.args["to"].this
        text = node.this.this
        if target == exp.DataType.Type.DATE:
            return _dt.date.fromisoformat(text)
        if target == exp.DataType.Type.TIMESTAMP:
            return _dt.datetime.fromisoformat(text)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        if any(ch in text for ch in ".eE"):
            return float(text)
        return int(text)
    raise PredicateError(f"not a literal: {node.sql()}")


def _compile(node: exp.Expression) -> pc.Expression:
    if isinstance(node, exp.Paren):
        return _compile(node.this)
    if isinstance(node, exp.Column):
        return pc.field(node.name)
    if isinstance(node, exp.Literal | exp.Boolean | exp.Null | exp.Cast) or (
        isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)
    ):
        return pc.scalar(_literal(node))
    if isinstance(node, exp.And):
        return pc.and_kleene(_compile(node.this), _compile(node.expression))
    if isinstance(node, exp.Or):
        return pc.or_kleene(_compile(node.this), _compile(node.expression))
    if isinstance(node, exp.Not):
        return pc.invert(_compile(node.this))
    for cls, fn in _COMPARE.items():
        if isinstance(node, cls):
            return _call(fn, [_compile(node.this), _compile(node.expression)])
    for cls, fn in _ARITH.items():
        if isinstance(node, cls):
            return _call(fn, [_compile(node.this), _compile(node.expression)])
    for cls, fn in _UNARY.items():
        if isinstance(node, cls):
            return _call(fn, [_compile(node.this)])
    if isinstance(node, exp.Is):
        if not isinstance(node.expression, exp.Null):
            raise PredicateError("only IS NULL / IS NOT NULL are supported")
        return pc.is_null(_compile(node.this))
    if isinstance(node, exp.In):
        values = [_literal(v) for v in node.expressions]
        target = _compile(node.this)
        member = pc.is_in(target, value_set=pa.array(values))
        # SQL: NULL IN (...) is NULL, not false.
        return pc.if_else(pc.is_null(target), pc.scalar(pa.scalar(None, pa.bool_())), member)
    if isinstance(node, exp.Between):
        target = _compile(node.this)
        return pc.and_kleene(
            pc.greater_equal(target, _compile(node.args["low"])),
            pc.less_equal(target, _compile(node.args["high"])),
        )
    if isinstance(node, exp.Like | exp.ILike):
        pattern = _literal(node.expression)
        return _call(
            "match_like", [_compile(node.this)],
            pc.MatchSubstringOptions(str(pattern), ignore_case=isinstance(node, exp.ILike)),
        )
    if isinstance(node, exp.Coalesce):
        return pc.coalesce(_compile(node.this), *[_compile(e) for e in node.expressions])
    raise PredicateError(f"'{node.key}' cannot be evaluated on Arrow data")


@lru_cache(maxsize=2048)
def columns_of(sql: str) -> tuple[str, ...]:
    """The columns a predicate reads, in order of appearance."""
    tree: exp.Expression = sqlglot.parse_one(sql, dialect="duckdb")  # type: ignore[assignment]
    return tuple(dict.fromkeys(c.name for c in tree.find_all(exp.Column)))


def evaluate(sql: str, batch: pa.RecordBatch) -> pa.Array:
    """Evaluate a predicate on one batch, returning a boolean array (nulls kept).

    A predicate of one dictionary-encoded column is evaluated once per distinct value (plus
    NULL) and the answers are gathered by the indices: exact, since a predicate is a function
    of its row's values, and it spares Arrow's kernels decoding every row.
    """
    names = columns_of(sql)
    if len(names) == 1 and names[0] in batch.schema.names:
        column = batch.column(names[0])
        if pa.types.is_dictionary(column.type):
            values = pa.concat_arrays([column.dictionary, pa.nulls(1, column.dictionary.type)])
            truth = _evaluate(sql, pa.RecordBatch.from_arrays([values], names=[names[0]]))
            return truth.take(column.indices.fill_null(len(column.dictionary)))
    return _evaluate(sql, batch)


def _evaluate(sql: str, batch: pa.RecordBatch) -> pa.Array:
    expr = to_expression(sql)
    table = pa.Table.from_batches([batch])
    result = pads.dataset(table).to_table(columns={"_v": expr}, use_threads=False)
    return result.column(0).combine_chunks() if result.num_rows else pa.array([], pa.bool_())
