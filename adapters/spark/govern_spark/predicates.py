"""A plan's predicates (canonical DuckDB SQL text) as Spark ``Column`` expressions.

Row filters and cell rules are stored in the plan as validated SQL text over raw columns
(:mod:`govern.plan.predicates`). This module builds the *same* predicate from the parsed tree
with Spark's Column API — never by handing SQL text to Spark, so no identifier or literal is
ever re-parsed — and only where Spark's semantics are exactly those of the Arrow engine
(:mod:`govern.mask.predicate_arrow`). Where they are not, it raises :class:`NotExact` and the
caller evaluates the predicate with govern's own Arrow code on the executors instead:

* ``lower``/``upper``/``ILIKE``: Java and Arrow fold some characters differently (final sigma,
  dotted capital I);
* ``LIKE`` patterns with a backslash: the escape rules differ;
* ``year``/``month`` of an instant: Arrow reads it in the column's own zone, Spark in the
  session's;
* integer arithmetic (``+ - *``, negation, ``abs``): it can overflow, and the gateway then fails
  having evaluated the predicate on every row, where Spark's short-circuiting AND, OR and CASE
  might not reach the row (float arithmetic never raises and stays in Spark); decimal
  arithmetic (other precision rules);
* operands of different kinds (a date against a timestamp, text against a number): Arrow
  raises where Spark coerces.

Three-valued logic is kept: AND/OR are Kleene in both engines; ``x IN (…)`` is NULL for a NULL
``x`` and ignores NULLs in the list (as Arrow's ``is_in`` does for a non-null ``x``); float
comparisons follow IEEE 754 for NaN (Spark's own NaN ordering is not used).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sqlglot import exp

from govern.errors import PredicateError, UnknownColumn

__all__ = ["NotExact", "Scope", "to_column"]


class NotExact(Exception):
    """Spark cannot compute this exactly as the Arrow engine does; run govern's Arrow code."""


@dataclass(frozen=True)
class Scope:
    """What a predicate may read: each raw column's Spark name (safe, positional) and type."""

    columns: Mapping[str, tuple[str, T.DataType]]
    ansi: bool  # Spark raises on overflow (ANSI mode) exactly where Arrow's checked kernels do (masks)


@dataclass(frozen=True)
class _Typed:
    column: Column
    kind: str  # string, integer, float, decimal, date, timestamp, timestamp_ntz, boolean, binary, null
    dtype: T.DataType | None = None  # a raw column's own type


def _kind(t: T.DataType) -> str:
    if isinstance(t, T.StringType):
        return "string"
    if isinstance(t, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        return "integer"
    if isinstance(t, T.FloatType | T.DoubleType):
        return "float"
    if isinstance(t, T.DecimalType):
        return "decimal"
    if isinstance(t, T.DateType):
        return "date"
    if isinstance(t, T.TimestampNTZType):
        return "timestamp_ntz"
    if isinstance(t, T.TimestampType):
        return "timestamp"
    if isinstance(t, T.BooleanType):
        return "boolean"
    if isinstance(t, T.BinaryType):
        return "binary"
    raise NotExact(f"type {t.simpleString()}")


_NUMERIC = {"integer", "float", "decimal"}


def _comparable(a: str, b: str) -> bool:
    if "null" in (a, b) or a == b:
        return True
    # integers and floats compare as doubles in both engines; decimals only with their own kind
    return {a, b} <= {"integer", "float"}


@lru_cache(maxsize=1024)
def _tree(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, dialect="duckdb")  # type: ignore[return-value]


def to_column(sql: str, scope: Scope) -> Column:
    """The predicate as a boolean Spark Column (NULL where SQL says unknown); raises NotExact."""
    typed = _build(_tree(sql), scope)
    if typed.kind not in ("boolean", "null"):
        raise NotExact("not a boolean expression")
    return typed.column


def _literal(node: exp.Expression) -> _Typed:
    if isinstance(node, exp.Null):
        return _Typed(F.lit(None), "null")
    if isinstance(node, exp.Boolean):
        return _Typed(F.lit(bool(node.this)), "boolean")
    if isinstance(node, exp.Neg):
        inner = _literal(node.this)
        if inner.kind not in _NUMERIC:
            raise PredicateError(f"cannot negate {node.this.sql()}")
        return _Typed(-inner.column, inner.kind)  # folded by Spark's optimizer
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal):
        text, target = node.this.this, node.args["to"].this
        if target == exp.DataType.Type.DATE:
            return _Typed(F.lit(dt.date.fromisoformat(text)), "date")
        if target == exp.DataType.Type.TIMESTAMP:  # a wall-clock literal (Arrow: naive timestamp)
            dt.datetime.fromisoformat(text)  # the Arrow engine's parse: refuse what it refuses
            return _Typed(F.lit(text).cast(T.TimestampNTZType()), "timestamp_ntz")
    if isinstance(node, exp.Literal):
        if node.is_string:
            return _Typed(F.lit(node.this), "string")
        text = node.this
        if any(ch in text for ch in ".eE"):
            return _Typed(F.lit(float(text)), "float")
        value = int(text)
        if not -(2**63) <= value < 2**63:
            raise NotExact("integer literal beyond 64 bits")
        return _Typed(F.lit(value).cast(T.LongType()), "integer")  # Arrow's int64 scalar
    raise PredicateError(f"not a literal: {node.sql()}")


def _compare(op: str, a: _Typed, b: _Typed) -> Column:
    if not _comparable(a.kind, b.kind):
        raise NotExact(f"comparing {a.kind} with {b.kind}")
    ops: dict[str, Callable[[Column, Column], Column]] = {
        "=": lambda x, y: x == y, "!=": lambda x, y: x != y, ">": lambda x, y: x > y,
        ">=": lambda x, y: x >= y, "<": lambda x, y: x < y, "<=": lambda x, y: x <= y,
    }
    result = ops[op](a.column, b.column)
    if "float" in (a.kind, b.kind):
        # IEEE 754: NaN equals nothing and orders with nothing (Spark: NaN = NaN, NaN > all)
        nan = F.isnan(a.column) if a.kind == "float" else F.lit(False)
        if b.kind == "float":
            nan = nan | F.isnan(b.column)
        result = F.when(a.column.isNull() | b.column.isNull(), F.lit(None).cast(T.BooleanType())) \
            .when(nan, F.lit(op == "!=")).otherwise(result)
    return result


_COMPARE: dict[type[exp.Expression], str] = {
    exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=",
}


def _build(node: exp.Expression, scope: Scope) -> _Typed:
    def go(n: exp.Expression) -> _Typed:
        return _build(n, scope)

    if isinstance(node, exp.Paren):
        return go(node.this)
    if isinstance(node, exp.Column):
        if node.table:
            raise PredicateError(f"qualified column '{node.sql()}' in a plan predicate")
        try:
            name, t = scope.columns[node.name]
        except KeyError:
            raise UnknownColumn(f"a plan predicate reads column '{node.name}', which the data lacks",
                                columns=[node.name]) from None
        return _Typed(F.col(name), _kind(t), t)
    if isinstance(node, exp.Literal | exp.Boolean | exp.Null | exp.Cast) or (
            isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)):
        return _literal(node)
    if isinstance(node, exp.And | exp.Or):
        a, b = go(node.this), go(node.expression)
        if {a.kind, b.kind} - {"boolean", "null"}:
            raise NotExact("AND/OR of non-boolean operands")
        return _Typed(a.column & b.column if isinstance(node, exp.And) else a.column | b.column, "boolean")
    if isinstance(node, exp.Not):
        a = go(node.this)
        if a.kind not in ("boolean", "null"):
            raise NotExact("NOT of a non-boolean operand")
        return _Typed(~a.column, "boolean")
    for cls, op in _COMPARE.items():
        if isinstance(node, cls):
            return _Typed(_compare(op, go(node.this), go(node.expression)), "boolean")
    if isinstance(node, exp.Is):
        if not isinstance(node.expression, exp.Null):
            raise PredicateError("only IS NULL / IS NOT NULL are supported")
        return _Typed(go(node.this).column.isNull(), "boolean")
    if isinstance(node, exp.In):
        target = go(node.this)
        items = [_literal(v) for v in node.expressions]
        values = [i for i in items if i.kind != "null"]  # Arrow: a NULL in the list matches no value
        for item in values:
            if not _comparable(target.kind, item.kind) or (target.kind == "float") != (item.kind == "float"):
                raise NotExact(f"{target.kind} IN a list of {item.kind}")
        if target.kind == "integer" and not isinstance(target.dtype, T.LongType | None):
            bits = {"tinyint": 8, "smallint": 16, "int": 32}[target.dtype.simpleString()]
            if any(not -(2 ** (bits - 1)) <= int(v.this) < 2 ** (bits - 1) for v in node.expressions
                   if isinstance(v, exp.Literal) and not v.is_string):
                raise NotExact("an IN list value does not fit the column's type (Arrow raises)")
            if any(isinstance(v, exp.Neg) for v in node.expressions):
                raise NotExact("negative IN list values on a narrow integer column")
        # Spark's IN is NULL for a NULL target, as Arrow's is; without NULLs in the list it is
        # never NULL otherwise (and stays a plain IN: Parquet can skip row groups with it)
        member = target.column.isin(*[v.column for v in values]) if values \
            else F.when(target.column.isNotNull(), F.lit(False))
        return _Typed(member, "boolean")
    if isinstance(node, exp.Between):
        target = go(node.this)
        low = _compare(">=", target, go(node.args["low"]))
        high = _compare("<=", target, go(node.args["high"]))
        return _Typed(low & high, "boolean")
    if isinstance(node, exp.Like):
        target, pattern = go(node.this), _literal(node.expression)
        text = node.expression.this
        if target.kind != "string" or pattern.kind != "string" or "\\" in text:
            raise NotExact("LIKE with an escape or on a non-string")
        return _Typed(target.column.like(text), "boolean")
    if isinstance(node, exp.ILike | exp.Lower | exp.Upper):
        raise NotExact("case folding differs between Java and Arrow")
    if isinstance(node, exp.Length):
        a = go(node.this)
        if a.kind != "string":
            raise NotExact("length of a non-string")
        return _Typed(F.length(a.column).cast(T.LongType()), "integer")  # code points, both engines
    if isinstance(node, exp.Year | exp.Month):
        a = go(node.this)
        if a.kind not in ("date", "timestamp_ntz"):
            raise NotExact("year/month of an instant depends on its zone")
        part = F.year(a.column) if isinstance(node, exp.Year) else F.month(a.column)
        return _Typed(part.cast(T.LongType()), "integer")
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Neg | exp.Abs):
        return _arithmetic(node, scope)
    if isinstance(node, exp.Coalesce):
        args = [go(node.this), *[go(e) for e in node.expressions]]
        kinds = {a.kind for a in args} - {"null"}
        if len(kinds) > 1 or any(a.kind in _NUMERIC for a in args):
            raise NotExact("coalesce over mixed or numeric kinds")  # Arrow needs one exact type
        return _Typed(F.coalesce(*[a.column for a in args]), kinds.pop() if kinds else "null")
    raise NotExact(f"'{node.key}' has no exact Spark form")


def _arithmetic(node: exp.Expression, scope: Scope) -> _Typed:
    overflow = NotExact("integer arithmetic can overflow: evaluated on every row, as the gateway does")
    if isinstance(node, exp.Neg | exp.Abs):
        a = _build(node.this, scope)
        if a.kind != "float":
            raise overflow if a.kind == "integer" else NotExact(f"arithmetic on {a.kind}")
        return _Typed(-a.column if isinstance(node, exp.Neg) else F.abs(a.column), a.kind)
    a, b = _build(node.this, scope), _build(node.expression, scope)
    if a.kind not in ("integer", "float") or b.kind not in ("integer", "float"):
        raise NotExact(f"arithmetic on {a.kind} and {b.kind}")
    if a.kind == b.kind == "integer":
        raise overflow
    if isinstance(node, exp.Add):
        out = a.column + b.column
    elif isinstance(node, exp.Sub):
        out = a.column - b.column
    else:
        out = a.column * b.column
    return _Typed(out, "float" if "float" in (a.kind, b.kind) else "integer")
