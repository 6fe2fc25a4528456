"""Predicates: the small SQL expression language of ``when``, row ``filter`` and client filters.

A predicate is parsed with sqlglot (DuckDB dialect), checked against an allow-list of node
types and functions, and — for policy predicates — has its ``subject.ATTR`` references replaced
by typed literal *nodes* (never by splicing text), so an attribute value such as
``EU' OR 1=1 --`` stays one string literal. The result is canonical DuckDB SQL with every
identifier quoted; engines compile that text (``govern.mask.predicate_arrow`` for Arrow, DuckDB
as is).

Errors are data: :class:`PredicateIssue` carries a message and a character offset, so policy
checks report ``file:line`` and HTTP callers get a position.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from govern.errors import PredicateError

MAX_PREDICATE_LENGTH = 4_000

# Node types a predicate may contain. Anything else (subqueries, function calls not listed,
# casts of columns, star, parameters, ...) is refused.
ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Paren,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Neg,
    exp.Lower,
    exp.Upper,
    exp.Length,
    exp.Abs,
    exp.Year,
    exp.Month,
    exp.Coalesce,
    exp.Cast,
    exp.DataType,
)

ALLOWED_FUNCTIONS = ("lower", "upper", "length", "abs", "year", "month", "coalesce")
LITERAL_CAST_TYPES = {exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP}

SUBJECT = "subject"


@dataclass(frozen=True)
class PredicateIssue:
    message: str
    position: int | None = None

    def __str__(self) -> str:
        return self.message if self.position is None else f"{self.message} (at character {self.position})"


@dataclass(frozen=True)
class Predicate:
    """A validated predicate: canonical SQL plus what it refers to."""

    sql: str
    columns: tuple[str, ...]
    subject_attributes: tuple[str, ...]


def parse(text: str, *, allow_subject: bool) -> tuple[exp.Expression | None, list[PredicateIssue]]:
    """Parse and validate. Returns the tree (or None) and every issue found."""
    if not isinstance(text, str) or not text.strip():
        return None, [PredicateIssue("predicate is empty")]
    if len(text) > MAX_PREDICATE_LENGTH:
        return None, [PredicateIssue(f"predicate is longer than {MAX_PREDICATE_LENGTH} characters")]
    try:
        statements = sqlglot.parse(text, dialect="duckdb")
    except (ParseError, TokenError) as exc:
        pos = None
        errors = getattr(exc, "errors", None)
        if errors:
            col = errors[0].get("col")
            pos = col if isinstance(col, int) else None
        first_line = str(exc).splitlines()[0] if str(exc) else "syntax error"
        return None, [PredicateIssue(f"cannot parse predicate: {first_line}", pos)]
    if len(statements) != 1 or statements[0] is None:
        return None, [PredicateIssue("predicate must be a single expression")]
    tree: exp.Expression = statements[0]  # type: ignore[assignment]
    issues = list(_validate(tree, allow_subject=allow_subject))
    return tree, issues


def _validate(tree: exp.Expression, *, allow_subject: bool) -> Iterable[PredicateIssue]:
    if isinstance(tree, exp.Query | exp.Command | exp.DDL | exp.DML) or not _is_expression_root(tree):
        yield PredicateIssue(f"'{tree.key}' is not allowed in a predicate; write a boolean expression")
        return
    for node in tree.walk():
        if not isinstance(node, ALLOWED_NODES):
            name = node.sql_name() if hasattr(node, "sql_name") else node.key
            if isinstance(node, exp.Func):
                yield PredicateIssue(
                    f"function '{name.lower()}' is not allowed; allowed: {', '.join(ALLOWED_FUNCTIONS)}"
                )
            else:
                yield PredicateIssue(f"'{node.key}' is not allowed in a predicate")
            continue
        if isinstance(node, exp.Column):
            table = node.table
            if table and table.lower() != SUBJECT:
                yield PredicateIssue(f"qualified column '{node.sql()}' is not allowed")
            if table and table.lower() == SUBJECT and not allow_subject:
                yield PredicateIssue("subject attributes are only allowed in policy predicates")
            if node.args.get("db") or node.args.get("catalog"):
                yield PredicateIssue(f"qualified column '{node.sql()}' is not allowed")
        if isinstance(node, exp.Cast):
            target = node.args["to"].this
            if not isinstance(node.this, exp.Literal) or target not in LITERAL_CAST_TYPES:
                yield PredicateIssue("only DATE '...' and TIMESTAMP '...' literals may be cast")
        if isinstance(node, exp.Like | exp.ILike) and not isinstance(node.expression, exp.Literal):
            yield PredicateIssue("LIKE needs a string literal pattern")
        if isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest"):
                yield PredicateIssue("IN takes a list of literals or a subject attribute")
            field = node.args.get("field")
            if field is not None and not _is_subject_ref(field):
                yield PredicateIssue("IN takes a list of literals or a subject attribute")
            for item in node.expressions:
                if not isinstance(item, exp.Literal | exp.Boolean | exp.Cast | exp.Neg) and not _is_subject_ref(item):
                    yield PredicateIssue("IN lists may only hold literals")


def _is_expression_root(tree: exp.Expression) -> bool:
    return isinstance(tree, ALLOWED_NODES)


def _is_subject_ref(node: exp.Expression) -> bool:
    return isinstance(node, exp.Column) and (node.table or "").lower() == SUBJECT


def columns_of(tree: exp.Expression) -> list[str]:
    return list(dict.fromkeys(c.name for c in tree.find_all(exp.Column) if not _is_subject_ref(c)))


def subject_attributes_of(tree: exp.Expression) -> list[str]:
    return list(dict.fromkeys(c.name for c in tree.find_all(exp.Column) if _is_subject_ref(c)))


def literal(value: Any) -> exp.Expression:
    """A typed literal node for an attribute value (never text to be spliced)."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(repr(value) if isinstance(value, float) else str(value))
    if isinstance(value, _dt.datetime):
        return exp.Cast(this=exp.Literal.string(value.isoformat(sep=" ")), to=exp.DataType.build("TIMESTAMP"))
    if isinstance(value, _dt.date):
        return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("DATE"))
    return exp.Literal.string(str(value))


def bind_subject(tree: exp.Expression, attributes: Mapping[str, Any]) -> exp.Expression:
    """Replace ``subject.ATTR`` nodes with literal nodes.

    A list attribute on the right of ``IN`` becomes the IN list; an empty or missing list
    makes ``x IN subject.attr`` false (fail closed). A missing scalar attribute becomes NULL,
    so comparisons with it are unknown and rows are filtered out.
    """
    tree = tree.copy()

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.In) and node.args.get("field") is not None:
            ref = node.args["field"]
            values = attributes.get(ref.name)
            if values is None:
                values = []
            if not isinstance(values, list | tuple | set | frozenset):
                values = [values]
            values = [v for v in values if v is not None]
            if not values:
                return exp.Boolean(this=False)
            return exp.In(this=node.this, expressions=[literal(v) for v in values])
        if _is_subject_ref(node):
            value = attributes.get(node.name)
            if isinstance(value, list | tuple | set | frozenset):
                raise PredicateError(
                    f"subject attribute '{node.name}' is a list; use it as 'column IN subject.{node.name}'"
                )
            return literal(value)
        return node

    return tree.transform(replace, copy=False)


def canonical_sql(tree: exp.Expression) -> str:
    return tree.sql(dialect="duckdb", identify=True)


def compile_policy_predicate(text: str, attributes: Mapping[str, Any]) -> Predicate:
    """Validate, bind subject attributes, and return canonical SQL (raises PredicateError).

    Memoized per (text, attributes) when the attribute values are plain scalars or lists of
    them (every plan of a principal binds the same row filters: sqlglot's parse is ~2 ms)."""
    key = _attributes_key(attributes)
    if key is None:
        return _compile_policy_predicate(text, attributes)
    return _cached_policy_predicate(text, key)


_PLAIN = (str, int, float, bool, _dt.date, _dt.datetime, type(None))


def _attributes_key(attributes: Mapping[str, Any]) -> tuple[tuple[str, str, Any], ...] | None:
    """A hashable form that tells 1, 1.0 and True apart (they bind different literals)."""
    out: list[tuple[str, str, Any]] = []
    for name, value in sorted(attributes.items()):
        if isinstance(value, list | tuple):
            if not all(isinstance(v, _PLAIN) for v in value):
                return None
            out.append((name, "list", tuple((type(v).__name__, v) for v in value)))
        elif isinstance(value, _PLAIN):
            out.append((name, type(value).__name__, value))
        else:
            return None
    return tuple(out)


@lru_cache(maxsize=4096)
def _cached_policy_predicate(text: str, key: tuple[tuple[str, str, Any], ...]) -> Predicate:
    attributes = {name: ([v for _, v in value] if kind == "list" else value) for name, kind, value in key}
    return _compile_policy_predicate(text, attributes)


def _compile_policy_predicate(text: str, attributes: Mapping[str, Any]) -> Predicate:
    tree, issues = parse(text, allow_subject=True)
    if issues or tree is None:
        raise PredicateError("; ".join(str(i) for i in issues))
    bound = bind_subject(tree, attributes)
    return Predicate(canonical_sql(bound), tuple(columns_of(bound)), tuple(subject_attributes_of(tree)))


def compile_client_filter(text: str) -> Predicate:
    """A caller's filter: no subject references; raises PredicateError with a position."""
    tree, issues = parse(text, allow_subject=False)
    if issues or tree is None:
        first = issues[0] if issues else PredicateIssue("invalid filter")
        raise PredicateError(
            "invalid filter: " + "; ".join(str(i) for i in issues),
            position=first.position,
        )
    return Predicate(canonical_sql(tree), tuple(columns_of(tree)), ())


@lru_cache(maxsize=4096)
def referenced_columns(sql: str) -> tuple[str, ...]:
    """Columns referenced by canonical predicate SQL (as stored in a plan)."""
    tree: exp.Expression = sqlglot.parse_one(sql, dialect="duckdb")  # type: ignore[assignment]
    return tuple(columns_of(tree))
