"""The types of a prepared query's parameters, as PostgreSQL would infer them.

A client that prepares ``SELECT … WHERE age > $1`` without naming the type of ``$1`` (asyncpg,
pgjdbc, ADBC) asks the server which type to send, through ``ParameterDescription``, and then
encodes its value for that type (binary ``int8`` for a Python ``int``); declaring every
parameter ``text`` makes those clients refuse non-text values. The rules, in order:

1. an explicit cast: ``$1::date``, ``CAST($1 AS numeric)``;
2. the other side of a comparison, ``BETWEEN``, ``IN (…)`` or arithmetic: a column's type from
   the caller's visible schema, or sqlglot's type annotation of any other expression;
   ``x = ANY($1)`` makes ``$1`` an array of ``x``'s type;
3. ``LIMIT``/``OFFSET``: ``bigint``;
4. anything else: ``text`` (PostgreSQL's ``unknown`` resolves to text the same way).

Pure: no I/O; the caller passes the schemas the principal may see.
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types

from govern.pgwire.types import PG_TYPES, pg_type_of

__all__ = ["TEXT_OID", "infer_parameter_types", "oid_of_sql_type"]

TEXT_OID = 25

_SQL_TYPES: dict[str, int] = {
    "BOOLEAN": 16, "TINYINT": 21, "SMALLINT": 21, "INT": 23, "UTINYINT": 21, "USMALLINT": 23,
    "UINT": 20, "BIGINT": 20, "UBIGINT": 1700, "HUGEINT": 1700, "FLOAT": 700, "DOUBLE": 701,
    "DECIMAL": 1700, "BIGDECIMAL": 1700, "DATE": 1082, "TIME": 1083, "TIMESTAMP": 1114,
    "TIMESTAMPNTZ": 1114, "DATETIME": 1114, "TIMESTAMPTZ": 1184, "TIMESTAMPLTZ": 1184,
    "INTERVAL": 1186, "TEXT": 25, "VARCHAR": 1043, "CHAR": 1042, "NCHAR": 1042, "NVARCHAR": 1043,
    "UUID": 2950, "JSON": 114, "JSONB": 3802, "VARBINARY": 17, "BINARY": 17, "BLOB": 17,
}
_COMPARE = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
            exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Like, exp.ILike)


def oid_of_sql_type(datatype: exp.DataType) -> int | None:
    """The PostgreSQL type OID of a sqlglot data type (None: no PostgreSQL equivalent here)."""
    name = datatype.this.name if hasattr(datatype.this, "name") else str(datatype.this)
    if name in ("ARRAY", "LIST") and datatype.expressions:
        inner = datatype.expressions[0]
        element = oid_of_sql_type(inner) if isinstance(inner, exp.DataType) else None
        return PG_TYPES[element].array or None if element in PG_TYPES else None
    return _SQL_TYPES.get(name)


def infer_parameter_types(tree: exp.Expr, count: int, schemas: dict[str, pa.Schema]) -> list[int]:
    """One type OID per parameter ``$1 … $count`` of a validated query tree."""
    columns = _columns(tree, schemas)
    annotated: exp.Expr | None = None
    oids: dict[int, int] = {}
    for node in tree.find_all(exp.Placeholder):
        try:
            number = int(str(node.this))
        except ValueError:
            continue
        if number in oids or not 1 <= number <= count:
            continue
        oid = _cast_type(node)
        if oid is None:
            other, array = _counterpart(node)
            if other is not None:
                oid = _type_of(other, columns)
                if oid is None:
                    if annotated is None:
                        annotated = _annotate(tree)
                    oid = _annotated_type(annotated, other)
                if oid is not None and array:
                    oid = PG_TYPES[oid].array or None if oid in PG_TYPES else None
            elif isinstance(node.parent, (exp.Limit, exp.Offset)):
                oid = 20
        if oid is not None:
            oids[number] = oid
    return [oids.get(i, TEXT_OID) for i in range(1, count + 1)]


def _columns(tree: exp.Expr, schemas: dict[str, pa.Schema]) -> dict[str, int]:
    """Column name → type OID over the datasets the query names (first one wins on clashes)."""
    by_table = {name.lower(): schema for name, schema in schemas.items()}
    out: dict[str, int] = {}
    for table in tree.find_all(exp.Table):
        schema = by_table.get(table.name.lower())
        if schema is None:
            continue
        for field in schema:
            out.setdefault(field.name.lower(), pg_type_of(field.type).oid)
    return out


def _cast_type(node: exp.Expr) -> int | None:
    parent = node.parent
    while isinstance(parent, exp.Paren):
        parent = parent.parent
    if isinstance(parent, (exp.Cast, exp.TryCast)) and isinstance(parent.args.get("to"), exp.DataType):
        return oid_of_sql_type(parent.args["to"])
    return None


def _counterpart(node: exp.Expr) -> tuple[exp.Expr | None, bool]:
    """The expression whose type ``node`` takes, and whether ``node`` is an array of it."""
    child: exp.Expr = node
    parent = node.parent
    array = False
    while isinstance(parent, (exp.Paren, exp.Any)):
        array = array or isinstance(parent, exp.Any)
        child, parent = parent, parent.parent
    if isinstance(parent, _COMPARE):
        left, right = parent.this, parent.expression
        return (right if child is left else left), array
    if isinstance(parent, exp.Between):
        return (parent.this if child is not parent.this else parent.args.get("low")), False
    if isinstance(parent, exp.In) and child is not parent.this:
        return parent.this, False
    return None, False


def _type_of(node: exp.Expr, columns: dict[str, int]) -> int | None:
    if isinstance(node, exp.Column):
        return columns.get(node.name.lower())
    if isinstance(node, exp.Cast) and isinstance(node.args.get("to"), exp.DataType):
        return oid_of_sql_type(node.args["to"])
    return None


def _annotate(tree: exp.Expr) -> exp.Expr | None:
    try:
        return annotate_types(tree.copy(), dialect="duckdb")
    except Exception:  # annotation is a best effort: the parameter stays text
        return None


def _annotated_type(annotated: exp.Expr | None, original: exp.Expr) -> int | None:
    if annotated is None:
        return None
    target = original.sql(dialect="duckdb")
    for node in annotated.walk():
        if type(node) is type(original) and node.sql(dialect="duckdb") == target:
            datatype = node.type
            if isinstance(datatype, exp.DataType) and datatype.this.name not in ("UNKNOWN", "NULL"):
                return oid_of_sql_type(datatype)
    return None
