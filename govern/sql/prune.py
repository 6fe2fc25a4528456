"""Which masked columns each dataset reference uses, and which WHERE conjuncts can be pushed down.

Third pass of the SQL pipeline. sqlglot's ``qualify`` resolves every column against the
*masked* schemas (so ``SELECT *`` expands to visible columns only, and a withheld column does
not exist); each reference is then read with only the columns the query uses.

A conjunct of a ``WHERE`` is pushed down to ``Governor.read(filter=…)`` for one reference when:

- it names columns of that reference only, and the reference is not on the nullable side of
  an outer join (there, filtering before the join would change which rows are null-extended);
- it has a simple shape — comparisons, ``IN``, ``BETWEEN``, ``IS [NOT] NULL``, ``LIKE`` of a
  column with literals (or bound parameters) of the column's kind, combined with AND/OR/NOT —
  so Arrow and DuckDB evaluate it alike;
- it passes :func:`govern.plan.predicates.compile_client_filter` (the predicate allow-list).

Pushing down never changes the answer: the conjunct stays in the query, so DuckDB applies it
again. On masked columns the governed read filters *masked* values, exactly what DuckDB sees.

When sqlglot cannot follow the query, or it uses a construct that depends on a table's whole
column set (``NATURAL JOIN``, ``COLUMNS(…)``, ``#1``, a table used as a struct, ``PIVOT``, a
column alias list, ``* EXCLUDE (…)``), :func:`analyze` returns ``None``: every visible column is read, nothing is
pushed. That costs time, never correctness or safety.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

from govern.errors import PredicateError
from govern.plan.predicates import compile_client_filter, literal
from govern.sql.resolve import Reference
from govern.sql.validate import DIALECT

__all__ = ["Usage", "analyze"]

_TAG = "govern_ref"
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
_WHOLE_TABLE = tuple(getattr(exp, n) for n in ("TableColumn", "PositionalColumn", "Columns", "Pivot")
                     if hasattr(exp, n))


@dataclass
class Usage:
    columns: dict[int, list[str]] = field(default_factory=dict)  # reference index → columns
    filters: dict[int, list[str]] = field(default_factory=dict)  # reference index → predicates


def analyze(tree: exp.Expr, refs: Sequence[Reference], schemas: Mapping[str, pa.Schema],
            params: Sequence[Any] | None) -> Usage | None:
    """Columns used and pushable predicates per reference, or None (read everything)."""
    if not refs:
        return Usage()
    for node in tree.walk():
        if isinstance(node, exp.Star) and any(node.args.values()):
            return None  # * EXCLUDE/REPLACE/RENAME (…) names columns DuckDB checks against the view
        if isinstance(node, exp.Join) and str(node.args.get("method") or "").upper() == "NATURAL":
            return None  # joins on whatever columns the two views share
    for ref in refs:
        ref.node.meta[_TAG] = ref.index
    try:
        qualified = qualify(tree.copy(), schema=_schema(refs, schemas), dialect=DIALECT,
                            validate_qualify_columns=True, identify=True)
        if _depends_on_whole_tables(qualified):
            return None
        return _usage(qualified, refs, schemas, params or [])
    except Exception:  # sqlglot cannot follow this query: read every visible column
        return None
    finally:
        for ref in refs:
            ref.node.meta.pop(_TAG, None)


def _schema(refs: Sequence[Reference], schemas: Mapping[str, pa.Schema]) -> dict[str, object]:
    out: dict[str, object] = {}
    for ref in refs:
        out[ref.node.name] = {f.name: _sql_type(f.type) for f in schemas[ref.dataset]}
    return out


def _sql_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    return "VARCHAR"


def _depends_on_whole_tables(tree: exp.Expr) -> bool:
    for node in tree.walk():
        if isinstance(node, _WHOLE_TABLE):
            return True
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
            return True
        if isinstance(node, exp.Column) and not node.table and not _names_an_output(node):
            return True
        if isinstance(node, exp.Table) and _TAG in node.meta:
            alias = node.args.get("alias")
            if alias is not None and alias.args.get("columns"):
                return True
    return False


def _names_an_output(column: exp.Column) -> bool:
    """An unqualified column left by ``qualify`` that names a select alias (``ORDER BY n``)."""
    query = column.find_ancestor(exp.Select, exp.SetOperation)
    return query is not None and column.name in query.named_selects


def _usage(tree: exp.Expr, refs: Sequence[Reference], schemas: Mapping[str, pa.Schema],
           params: Sequence[Any]) -> Usage | None:
    names = {ref.index: {f.name.lower(): f.name for f in schemas[ref.dataset]} for ref in refs}
    used: dict[int, set[str]] = {ref.index: set() for ref in refs}
    usage = Usage()
    seen: set[int] = set()
    for scope in traverse_scope(tree):
        seen.update(src.meta[_TAG] for src in scope.sources.values()
                    if isinstance(src, exp.Table) and _TAG in src.meta)
        for column in scope.columns:
            if not column.table:
                continue  # a select alias (checked by _depends_on_whole_tables)
            source = _source(scope, column.table)
            if source is None:
                return None
            if isinstance(source, exp.Table) and _TAG in source.meta:
                index = source.meta[_TAG]
                real = names[index].get(column.name.lower())
                if real is None:
                    return None
                used[index].add(real)
        for index, predicate in _pushable(scope, refs, schemas, names, params):
            usage.filters.setdefault(index, []).append(predicate)
    if seen != {ref.index for ref in refs}:
        return None  # a reference no scope accounts for (VALUES (SELECT …), …): read everything
    for ref in refs:
        order = [f.name for f in schemas[ref.dataset]]
        usage.columns[ref.index] = [c for c in order if c in used[ref.index]]
    return usage


def _source(scope: Scope | None, alias: str) -> object | None:
    while scope is not None:
        if alias in scope.sources:
            return scope.sources[alias]
        scope = scope.parent
    return None


# -- pushdown ----------------------------------------------------------------------------------
def _pushable(scope: Scope, refs: Sequence[Reference], schemas: Mapping[str, pa.Schema],
              names: Mapping[int, Mapping[str, str]], params: Sequence[Any]) -> list[tuple[int, str]]:
    select = scope.expression
    if not isinstance(select, exp.Select) or select.args.get("where") is None:
        return []
    nullable = _nullable_sources(select)
    if nullable is None:
        return []
    out: list[tuple[int, str]] = []
    for conjunct in _conjuncts(select.args["where"].this):
        aliases = {c.table for c in conjunct.find_all(exp.Column)}
        if len(aliases) != 1:
            continue
        alias = aliases.pop()
        source = scope.sources.get(alias)
        if alias in nullable or not isinstance(source, exp.Table) or _TAG not in source.meta:
            continue
        index = source.meta[_TAG]
        ref = refs[index]
        kinds = {f.name.lower(): _kind(f.type) for f in schemas[ref.dataset]}
        if not _simple(conjunct, kinds, params):
            continue
        text = _predicate_sql(conjunct, names[index], params)
        try:
            out.append((index, compile_client_filter(text).sql))
        except PredicateError:
            continue
    return out


def _nullable_sources(select: exp.Select) -> set[str] | None:
    """Aliases on the nullable side of an outer join; None when a join kind is unusual."""
    from_ = select.args.get("from_") or select.args.get("from")
    seen = [from_.this.alias_or_name] if from_ is not None else []
    nullable: set[str] = set()
    for join in select.args.get("joins") or ():
        side = str(join.args.get("side") or "").upper()
        kind = str(join.args.get("kind") or "").upper()
        method = str(join.args.get("method") or "").upper()
        if method or kind in ("SEMI", "ANTI"):
            return None
        alias = join.this.alias_or_name
        if side == "LEFT":
            nullable.add(alias)
        elif side == "RIGHT":
            nullable.update(seen)
        elif side == "FULL":
            nullable.update(seen)
            nullable.add(alias)
        seen.append(alias)
    return nullable


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _kind(t: pa.DataType) -> str | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t) and t.tz is None:
        return "timestamp"
    if pa.types.is_boolean(t):
        return "bool"
    return None


def _value_kind(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _dt.datetime):
        return "timestamp" if value.tzinfo is None else None
    if isinstance(value, _dt.date):
        return "date"
    return None


def _literal_kind(node: exp.Expr, params: Sequence[Any]) -> str | None:
    if isinstance(node, exp.Null):
        return "null"
    if isinstance(node, exp.Boolean):
        return "bool"
    if isinstance(node, exp.Literal):
        return "string" if node.is_string else "number"
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return "number"
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        target = node.args["to"].this
        return {exp.DataType.Type.DATE: "date", exp.DataType.Type.TIMESTAMP: "timestamp"}.get(target)
    if isinstance(node, exp.Placeholder) and node.this is not None:
        i = int(str(node.this)) - 1
        return _value_kind(params[i]) if 0 <= i < len(params) else None
    return None


def _column_kind(node: exp.Expr, kinds: Mapping[str, str | None]) -> str | None:
    return kinds.get(node.name.lower()) if isinstance(node, exp.Column) else None


def _simple(node: exp.Expr, kinds: Mapping[str, str | None], params: Sequence[Any]) -> bool:
    """Whether ``node`` is a predicate Arrow and DuckDB evaluate identically."""
    if isinstance(node, exp.Paren | exp.Not):
        return _simple(node.this, kinds, params)
    if isinstance(node, exp.And | exp.Or):
        return _simple(node.this, kinds, params) and _simple(node.expression, kinds, params)
    if isinstance(node, exp.Is):
        return _column_kind(node.this, kinds) is not None and isinstance(node.expression, exp.Null)
    if isinstance(node, _COMPARISONS):
        left, right = node.this, node.expression
        if not isinstance(left, exp.Column):
            left, right = right, left
        return _matches(_column_kind(left, kinds), _literal_kind(right, params), allow_null=True)
    if isinstance(node, exp.In):
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            return False
        kind = _column_kind(node.this, kinds)
        return bool(node.expressions) and all(
            _matches(kind, _literal_kind(v, params), allow_null=False) for v in node.expressions)
    if isinstance(node, exp.Between):
        kind = _column_kind(node.this, kinds)
        return all(_matches(kind, _literal_kind(node.args[k], params), allow_null=False) for k in ("low", "high"))
    if isinstance(node, exp.Like):
        pattern = node.expression
        if isinstance(pattern, exp.Placeholder):
            i = int(str(pattern.this)) - 1
            text = params[i] if 0 <= i < len(params) else None
        else:
            text = pattern.this if isinstance(pattern, exp.Literal) and pattern.is_string else None
        return (_column_kind(node.this, kinds) == "string" and isinstance(text, str) and "\\" not in text
                and not node.args.get("escape"))
    return False


def _matches(column: str | None, value: str | None, *, allow_null: bool) -> bool:
    if column is None or value is None:
        return False
    return value == column or (allow_null and value == "null")


def _predicate_sql(node: exp.Expr, names: Mapping[str, str], params: Sequence[Any]) -> str:
    """The conjunct as a client filter: bare column names, parameters bound as typed literals."""

    def unqualify(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Column):
            return exp.column(names[n.name.lower()], quoted=True)
        if isinstance(n, exp.Placeholder) and n.this is not None:
            return literal(params[int(str(n.this)) - 1])
        return n

    return node.copy().transform(unqualify).sql(dialect=DIALECT)
