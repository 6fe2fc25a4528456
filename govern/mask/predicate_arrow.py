"""Compile a validated predicate (canonical DuckDB SQL) to a pyarrow compute Expression.

The Expression serves Parquet scan pushdown (``pyarrow.dataset`` filters); :func:`evaluate`
runs the same kernels directly on a record batch's arrays. SQL three-valued logic is kept: comparisons with NULL are NULL,
``x IN (...)`` is NULL when ``x`` is NULL, AND/OR are Kleene. Callers decide what NULL means
(row filters drop the row; cell rules mask the cell).
"""

from __future__ import annotations

import datetime as _dt
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


def _call(name: str, args: list[Any], options: object = None, on: pa.RecordBatch | None = None) -> Any:
    if on is None:
        return pc.Expression._call(name, args, options)
    return pc.call_function(name, args, options)


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


def _compile(node: exp.Expression, on: pa.RecordBatch | None = None) -> Any:
    """The predicate as an Arrow Expression; with ``on``, evaluated directly on that batch's
    arrays by the same kernels, with the same implicit casts (no Acero plan per batch)."""

    def go(n: exp.Expression) -> Any:
        return _compile(n, on)

    if isinstance(node, exp.Paren):
        return go(node.this)
    if isinstance(node, exp.Column):
        if on is None:
            return pc.field(node.name)
        if node.name not in on.schema.names:
            raise pa.ArrowInvalid(f"No match for FieldRef.Name({node.name})")
        return on.column(node.name)
    if isinstance(node, exp.Literal | exp.Boolean | exp.Null | exp.Cast) or (
        isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)
    ):
        return pc.scalar(_literal(node)) if on is None else pa.scalar(_literal(node))
    if isinstance(node, exp.And):
        return pc.and_kleene(go(node.this), go(node.expression))
    if isinstance(node, exp.Or):
        return pc.or_kleene(go(node.this), go(node.expression))
    if isinstance(node, exp.Not):
        return pc.invert(go(node.this))
    for cls, fn in _COMPARE.items():
        if isinstance(node, cls):
            return _call(fn, [go(node.this), go(node.expression)], on=on)
    for cls, fn in _ARITH.items():
        if isinstance(node, cls):
            return _call(fn, [go(node.this), go(node.expression)], on=on)
    for cls, fn in _UNARY.items():
        if isinstance(node, cls):
            return _call(fn, [go(node.this)], on=on)
    if isinstance(node, exp.Is):
        if not isinstance(node.expression, exp.Null):
            raise PredicateError("only IS NULL / IS NOT NULL are supported")
        return pc.is_null(go(node.this))
    if isinstance(node, exp.In):
        values = [_literal(v) for v in node.expressions]
        target = go(node.this)
        member = pc.is_in(target, value_set=pa.array(values))
        # SQL: NULL IN (...) is NULL, not false.
        unknown = pa.scalar(None, pa.bool_())
        return pc.if_else(pc.is_null(target), pc.scalar(unknown) if on is None else unknown, member)
    if isinstance(node, exp.Between):
        target = go(node.this)
        return pc.and_kleene(
            pc.greater_equal(target, go(node.args["low"])),
            pc.less_equal(target, go(node.args["high"])),
        )
    if isinstance(node, exp.Like | exp.ILike):
        pattern = _literal(node.expression)
        return _call(
            "match_like", [go(node.this)],
            pc.MatchSubstringOptions(str(pattern), ignore_case=isinstance(node, exp.ILike)), on=on,
        )
    if isinstance(node, exp.Coalesce):
        return pc.coalesce(go(node.this), *[go(e) for e in node.expressions])
    raise PredicateError(f"'{node.key}' cannot be evaluated on Arrow data")


def evaluate(sql: str, batch: pa.RecordBatch, memo: dict[Any, Any] | None = None) -> pa.Array:
    """Evaluate a predicate on one batch, returning a boolean array (nulls kept).

    On a batch with dictionary columns, each AND term that reads one dictionary column is
    evaluated once per distinct value (plus NULL) and its answers gathered by the indices:
    exact, since a predicate is a function of its row's values (AND is Kleene either way), and
    it spares Arrow's kernels decoding every row. ``memo`` (one per stream) keeps the answers
    for small dictionaries by their values, which Parquet repeats from row group to row group.
    """
    if not any(pa.types.is_dictionary(t) for t in batch.schema.types):
        return _evaluate(_tree(sql), batch)
    result: pa.Array | None = None
    for i, (conjunct, names) in enumerate(_conjuncts(sql)):
        truth = None
        if len(names) == 1 and names[0] in batch.schema.names:
            column = batch.column(names[0])
            if pa.types.is_dictionary(column.type):
                truth = _on_dictionary(conjunct, names[0], column, memo, (sql, i))
        if truth is None:  # several columns: decode the dictionaries among them, as a scan would
            truth = _evaluate(conjunct, _decoded(batch, names))
        result = truth if result is None else pc.and_kleene(result, truth)
    assert result is not None
    return result


def _decoded(batch: pa.RecordBatch, names: tuple[str, ...]) -> pa.RecordBatch:
    columns = [n for n in names if n in batch.schema.names]
    if not columns:  # a constant predicate: only the batch's length matters
        return batch
    arrays = [batch.column(n) for n in columns]
    return pa.RecordBatch.from_arrays(
        [a.dictionary_decode() if pa.types.is_dictionary(a.type) else a for a in arrays], names=columns)


_SMALL_DICTIONARY = 1024  # memo by content below this size: row groups repeat dictionaries, reordered


def _on_dictionary(conjunct: exp.Expression, name: str, column: pa.DictionaryArray, memo: dict[Any, Any] | None,
                   key: object) -> pa.Array:
    dictionary = column.dictionary
    if memo is not None and len(dictionary) <= _SMALL_DICTIONARY:
        key = (key, dictionary.type, tuple(dictionary.to_pylist()))
    else:
        memo = None
    known = memo.get(key) if memo is not None else None
    if known is not None:
        values, valid = known
    else:
        truth = _evaluate(conjunct, pa.RecordBatch.from_arrays(
            [pa.concat_arrays([dictionary, pa.nulls(1, dictionary.type)])], names=[name]))
        values = np.asarray(truth.fill_null(False))
        valid = np.asarray(truth.is_valid())
        if memo is not None:
            if len(memo) > 256:
                memo.clear()
            memo[key] = (values, valid)
    indices = column.indices
    if not indices.null_count and valid[:-1].all():  # no unknown answer: bits only, no validity
        bits = np.packbits(np.take(values, np.asarray(indices)), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(indices), [None, pa.py_buffer(bits)])
    at = np.asarray(indices.fill_null(len(dictionary)) if indices.null_count else indices)
    return pa.array(np.take(values, at), pa.bool_(), mask=~np.take(valid, at))


@lru_cache(maxsize=2048)
def _tree(sql: str) -> exp.Expression:
    """The parsed predicate (cached: callers must not modify it)."""
    return sqlglot.parse_one(sql, dialect="duckdb")  # type: ignore[return-value]


@lru_cache(maxsize=2048)
def _conjuncts(sql: str) -> tuple[tuple[exp.Expression, tuple[str, ...]], ...]:
    """The predicate's top-level AND terms, each with the columns it reads."""
    tree = _tree(sql)
    terms: list[exp.Expression] = []

    def split(node: exp.Expression) -> None:
        if isinstance(node, exp.Paren):
            split(node.this)
        elif isinstance(node, exp.And):
            split(node.this)
            split(node.expression)
        else:
            terms.append(node)

    split(tree)
    return tuple((t, tuple(dict.fromkeys(c.name for c in t.find_all(exp.Column)))) for t in terms)


def _evaluate(tree: exp.Expression, batch: pa.RecordBatch) -> pa.Array:
    result = _compile(tree, batch)
    if isinstance(result, pa.Scalar):  # no column in it: the same answer for every row
        result = pa.repeat(result, batch.num_rows)
    if isinstance(result, pa.ChunkedArray):
        result = result.combine_chunks()
    if not pa.types.is_boolean(result.type):
        raise pa.ArrowTypeError(f"a predicate must be boolean, not {result.type}")
    return result
