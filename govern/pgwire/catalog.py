"""Catalog emulation for SQL tools: ``pg_catalog`` and ``information_schema`` without any data.

psql's ``\\dt`` and ``\\d name``, DBeaver's navigator and JDBC metadata calls query the system
catalogs. The wire server answers those queries from a **schema-only** DuckDB, one per
connection, that holds nothing but descriptions of the masked views the principal may read
under the connection's purpose (:meth:`SqlEngine.tables`): withheld columns are not in it, and
no dataset has a single row in it. A catalog query therefore cannot return data, whatever it
says; at worst it returns an empty answer.

A query is routed here (:func:`is_catalog_query`) when it names a ``pg_catalog`` or
``information_schema`` relation, a ``pg_*`` table, a ``reg*`` type, or a catalog function
(``version()``, ``current_schema()``, ``pg_get_userbyid``…). It is parsed as PostgreSQL with
sqlglot and rewritten for DuckDB (:func:`rewrite`):

- known catalog relations → govern's own tables (``govern_catalog.pg_class``…), filled from the
  masked schemas; any other relation (``pg_policy``, ``pg_inherits``, a dataset…) → an empty
  relation with the columns the query uses;
- catalog functions → macros (``format_type`` prints PostgreSQL names, ``pg_get_expr`` is NULL…);
- ``OPERATOR(pg_catalog.~)``, ``COLLATE``, ``::regclass``/``::regtype``/``::oid`` casts → DuckDB forms;
- table functions other than ``generate_series``/``unnest`` and DuckDB's own system functions are
  refused.

Relations govern does not have (policies, publications, inheritance…) are empty stand-ins, so a
tool asking about such a feature learns that there is none. If DuckDB still cannot run the
rewritten query, the client gets an error (SQLSTATE 0A000) saying the emulation cannot answer,
the gateway logs it at WARNING and counts it (``govern_pgwire_catalog_unanswered_total``):
never an empty result, which a tool would show as an empty database. Running out of memory or
time is an error too.

With a :class:`~govern.sql.isolation.SqlService` (``Catalog(…, service=…)``), the catalog
database lives in an SQL worker process, under its memory limit and the query's deadline
(:class:`CatalogJob`): ``SELECT repeat('a', 1500000000)`` costs the worker, not the gateway.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from govern.errors import LimitExceeded, SqlError
from govern.pgwire.catalog_tables import (
    INFO,
    INFO_TABLES,
    KNOWN_COLUMNS,
    MACROS,
    PG_TABLES,
    SCHEMA,
    SESSION,
    CatalogContext,
    catalog_rows,
)
from govern.sql.isolation import SqlService, WorkerEnv

__all__ = ["Catalog", "CatalogContext", "CatalogJob", "catalog_parameter_types", "is_catalog_query", "output_names",
           "rewrite"]

log = logging.getLogger("govern.pgwire")

CATALOG_FUNCTIONS = frozenset(MACROS) | {"session_user", "current_catalog", "user", "format_type"}
ALLOWED_TABLE_FUNCTIONS = frozenset({"generate_series", "unnest", "range", "pgc_pg_get_keywords"})
_REFUSED_PREFIXES = ("duckdb_", "read_", "pragma_", "sqlite_", "parquet_", "iceberg_", "delta_", "postgres_",
                     "mysql_", "json_execute", "glob", "getenv", "query", "which_secret", "load_", "install_")
_TYPE_CASTS = {"text": "VARCHAR", "name": "VARCHAR", "char": "VARCHAR", "bpchar": "VARCHAR", "varchar": "VARCHAR",
               "oid": "BIGINT", "int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "bool": "BOOLEAN",
               "float4": "REAL", "float8": "DOUBLE", "regproc": "VARCHAR", "int2vector": "VARCHAR",
               "oidvector": "VARCHAR", "xid": "BIGINT", "cid": "BIGINT", "tid": "VARCHAR", "aclitem": "VARCHAR",
               "pg_node_tree": "VARCHAR", "anyarray": "VARCHAR"}
_REG_TYPES = ("regclass", "regtype", "regnamespace", "regproc", "regprocedure", "regrole", "regoper",
              "regconfig")
_CATALOG_TEXT = re.compile(r"(?i)\b(pg_catalog|information_schema)\s*\.|\bpg_[a-z_]+\b|::\s*reg[a-z]+\b")


# -- routing ---------------------------------------------------------------------------------------

def _name_of(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return None


def is_catalog_query(text: str, datasets: set[str]) -> bool:
    """Whether ``text`` asks about the catalog (and so is answered without the SQL engine): it
    names a catalog relation, or it calls catalog functions and reads no other table. (A query
    over datasets that calls ``current_user`` goes to the engine, which refuses it clearly.)"""
    try:
        trees = sqlglot.parse(text, read="postgres")
    except (ParseError, TokenError, RecursionError):
        return bool(_CATALOG_TEXT.search(text))
    relation = function = other = False
    for tree in trees:
        if tree is None:
            continue
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        for node in tree.walk():
            if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
                db, name = node.db.lower(), node.name.lower()
                if db in ("pg_catalog", "information_schema") or (not db and name.startswith("pg_")
                                                                  and name not in datasets):
                    relation = True
                elif db or name not in ctes:
                    other = True
            elif isinstance(node, (exp.CurrentVersion, exp.CurrentSchema, exp.CurrentDatabase, exp.CurrentUser,
                                   exp.SessionUser, exp.CurrentCatalog, exp.ObjectIdentifier)):
                function = True
            elif isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) \
                    and node.this.name.lower() == "pg_catalog":
                function = True
            elif isinstance(node, exp.Func):
                called = _name_of(node)
                if called and (called in CATALOG_FUNCTIONS or called.startswith("pg_")):
                    function = True
    return relation or (function and not other)


# -- rewriting -------------------------------------------------------------------------------------

def _macro(name: str, args: list[exp.Expr]) -> exp.Expr:
    return exp.Anonymous(this=f"pgc_{name}", expressions=args)


def _cast_target(node: exp.DataType | exp.ObjectIdentifier) -> str | None:
    """The PostgreSQL type name a cast targets, when DuckDB needs help with it."""
    if isinstance(node, exp.ObjectIdentifier):
        return str(node.this).lower()
    if node.this == exp.DataType.Type.USERDEFINED:
        kind = node.args.get("kind")
        if isinstance(kind, exp.Dot):
            kind = kind.expression
        return kind.name.lower() if isinstance(kind, exp.Expr) else str(kind).lower()
    if node.this == exp.DataType.Type.NAME:
        return "name"
    return None


def _reg_lookup(kind: str, literal: str) -> exp.Expr:
    name = literal.split(".")[-1].strip('"')
    if kind == "regclass":
        sql = f"(SELECT oid FROM {SCHEMA}.pg_class WHERE relname = {exp.Literal.string(name).sql()})"
    elif kind == "regtype":
        sql = (f"(SELECT oid FROM {SCHEMA}._types WHERE display = {exp.Literal.string(name).sql()} "
               f"OR typname = {exp.Literal.string(name).sql()} LIMIT 1)")
    elif kind == "regnamespace":
        sql = f"(SELECT oid FROM {SCHEMA}.pg_namespace WHERE nspname = {exp.Literal.string(name).sql()})"
    else:
        return exp.null()
    return sqlglot.parse_one(sql, read="duckdb")


def _array_literal(node: exp.Cast) -> exp.Expr | None:
    """``'{1,2}'::int[]`` (PostgreSQL's array literal) as a DuckDB list."""
    inner, to = node.this, node.to
    if not (isinstance(to, exp.DataType) and to.this == exp.DataType.Type.ARRAY
            and isinstance(inner, exp.Literal) and inner.is_string):
        return None
    from govern.pgwire.types import split_array_text

    try:
        items = split_array_text(inner.this)
    except ValueError:
        raise SqlError(f"malformed array literal: {inner.this[:100]!r}", sqlstate="22P02") from None
    element = to.expressions[0] if to.expressions else exp.DataType.build("VARCHAR")
    values = [exp.null() if v is None else exp.Literal.string(v) for v in items]
    return exp.cast(exp.Array(expressions=values), exp.DataType(this=exp.DataType.Type.ARRAY,
                                                                  expressions=[element], nested=True))


def _rewrite_cast(node: exp.Cast) -> exp.Expr:
    array = _array_literal(node)
    if array is not None:
        return array
    target = _cast_target(node.to)
    if target is None:
        return node
    inner = node.this
    if target in _REG_TYPES:
        if isinstance(inner, exp.Literal) and inner.is_string:
            return _reg_lookup(target, inner.this)
        if isinstance(inner, (exp.Parameter, exp.Placeholder)) and target in ("regclass", "regtype"):
            return _macro(f"{target}_oid", [inner])  # a bound name (or number): its oid
        if target == "regclass":
            return _macro("regclass_name", [inner])
        if target == "regtype":
            return _macro("regtype_name", [inner])
        if target == "regnamespace":
            return _macro("regnamespace_name", [inner])
        return exp.cast(exp.null(), "VARCHAR")
    if target.endswith("[]") or target.startswith("_"):
        return exp.cast(inner, "VARCHAR[]")
    if target in _TYPE_CASTS:
        return exp.cast(inner, _TYPE_CASTS[target])
    return node


def _stand_in(alias: str, columns: list[str]) -> exp.Expr:
    """An empty relation with ``columns`` (typeless NULLs, so comparisons with anything bind)."""
    cols = ", ".join(f"NULL AS {exp.to_identifier(c).sql('duckdb')}" for c in columns) or "NULL AS __none"
    sub = sqlglot.parse_one(f"(SELECT {cols} WHERE false)", read="duckdb")
    return exp.Subquery(this=sub.unnest(), alias=exp.TableAlias(this=exp.to_identifier(alias)))



_ARRAY_CASTS = re.compile(r"(?i)::\s*(?:pg_catalog\s*\.\s*)?(oid|regtype|regclass|regproc|regnamespace|xid|name|text|int2|int4|int8)"
                          r"\s*\[\s*\]")
_ARRAY_OF = {"name": "text", "text": "text", "int2": "smallint", "int4": "integer", "int8": "bigint"}


def _array_casts(text: str) -> str:
    """``::oid[]`` and friends as types sqlglot parses (``$1::oid[]`` is asyncpg's type lookup)."""
    return _ARRAY_CASTS.sub(lambda m: f"::{_ARRAY_OF.get(m.group(1).lower(), 'bigint')}[]", text)


_PARAM_CAST = re.compile(r"(?i)\$(\d+)\s*::\s*(?:pg_catalog\.)?\"?([a-z_][a-z0-9_]*(?:\s+precision|\s+varying)?)\"?"
                         r"\s*(\[\s*\])?")
_CAST_OIDS = {"oid": 26, "regclass": 26, "regtype": 26, "regproc": 26, "regnamespace": 26, "name": 19,
              "text": 25, "varchar": 1043, "character varying": 1043, "int2": 21, "smallint": 21,
              "int4": 23, "int": 23, "integer": 23, "int8": 20, "bigint": 20, "bool": 16, "boolean": 16,
              "char": 1042, "bpchar": 1042, "float8": 701, "double precision": 701, "float4": 700, "real": 700}


def catalog_parameter_types(text: str, count: int) -> list[int]:
    """Type OIDs of the parameters of a catalog query: those cast explicitly (``$1::oid[]``,
    ``$2::regclass``) take the cast's type, the others ``text``."""
    from govern.pgwire.types import PG_TYPES

    oids: dict[int, int] = {}
    for found in _PARAM_CAST.finditer(text):
        number, name, array = int(found.group(1)), found.group(2).lower(), found.group(3)
        oid = _CAST_OIDS.get(name)
        if oid is None or number in oids:
            continue
        oids[number] = PG_TYPES[oid].array if array else oid
    return [oids.get(i, 25) for i in range(1, count + 1)]


def rewrite(text: str) -> tuple[str, list[str]]:
    """``text`` (PostgreSQL) as DuckDB SQL over govern's catalog, and its output column names."""
    text = _array_casts(text)
    try:
        trees = [t for t in sqlglot.parse(text, read="postgres") if t is not None]
    except (ParseError, TokenError) as exc:
        raise SqlError(f"syntax error in catalog query: {str(exc).splitlines()[0][:200]}",
                       sqlstate="42601") from None
    if len(trees) != 1:
        raise SqlError("send one statement at a time", sqlstate="42601")
    tree = trees[0]
    if not isinstance(tree, exp.Query):
        raise SqlError("only queries can read the catalog", sqlstate="25006")
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    columns = [_pg_column_name(e) for e in tree.selects]
    tree = _post_order(tree, _translate)
    for column in tree.find_all(exp.Column):  # pg_catalog.pg_class.relname → pg_class.relname
        if column.args.get("db") is not None and column.text("db").lower() in ("pg_catalog", "information_schema"):
            column.set("db", None)
            column.set("catalog", None)
    _replace_relations(tree, ctes)
    return tree.sql("duckdb"), columns


def _post_order(node: exp.Expr, fn: Any) -> exp.Expr:
    """Apply ``fn`` to every node, children first (so ``fn`` sees rewritten arguments)."""
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expr):
            node.set(key, _post_order(value, fn))
        elif isinstance(value, list):
            node.set(key, [_post_order(v, fn) if isinstance(v, exp.Expr) else v for v in value])
    return fn(node)


# regproc columns hold function names here; PostgreSQL compares them with 0 as oids ('-' is 0)
_REGPROC_COLUMNS = frozenset({"typinput", "typoutput", "typreceive", "typsend", "typmodin", "typmodout",
                              "typanalyze", "typsubscript", "amhandler"})


def _regproc_zero(node: exp.Expr) -> exp.Expr | None:
    """``typreceive != 0`` → ``coalesce(typreceive, '-') != '-'``."""
    if not isinstance(node, (exp.EQ, exp.NEQ)):
        return None
    for column, other in ((node.this, node.expression), (node.expression, node.this)):
        if isinstance(column, exp.Column) and column.name.lower() in _REGPROC_COLUMNS \
                and isinstance(other, exp.Literal) and not other.is_string and other.this == "0":
            left = exp.func("coalesce", column.copy(), exp.Literal.string("-"))
            return type(node)(this=left, expression=exp.Literal.string("-"))
    return None


def _translate(node: exp.Expr) -> exp.Expr:
    """One PostgreSQL catalog construct → its DuckDB form over govern's catalog."""
    regproc = _regproc_zero(node)
    if regproc is not None:
        return regproc
    if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) \
            and node.this.name.lower() == "pg_catalog" and isinstance(node.expression, exp.Func):
        return node.expression
    if isinstance(node, exp.Collate):
        return node.this
    if isinstance(node, exp.Operator):
        op = str(node.args.get("operator", "")).split(".")[-1]
        text = f"({node.this.sql('postgres')}) {op} ({node.expression.sql('postgres')})"
        return sqlglot.parse_one(text, read="postgres")
    if isinstance(node, exp.Cast):
        return _rewrite_cast(node)
    if isinstance(node, (exp.CurrentUser, exp.SessionUser)):
        return _macro("current_user", [])
    if isinstance(node, (exp.CurrentDatabase, exp.CurrentCatalog)):
        return _macro("current_database", [])
    if isinstance(node, exp.CurrentSchema):
        return _macro("current_schema", [])
    if isinstance(node, exp.CurrentVersion):
        return _macro("version", [])
    if isinstance(node, exp.Func) and not isinstance(node, exp.Anonymous):
        name = node.sql_name().lower()
        if name in ("format_type", "current_schemas", "array_upper", "array_lower", "quote_ident"):
            args = list(node.expressions) or [a for a in node.args.values() if isinstance(a, exp.Expr)]
            return _macro(name, args)
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        if name.startswith(_REFUSED_PREFIXES):
            raise SqlError(f"function '{name}' is not available", sqlstate="42883")
        if name in MACROS:
            return _macro(name, list(node.expressions))
        if name == "user":
            return _macro("current_user", [])
        if name in ("json_build_object", "jsonb_build_object"):  # SQLAlchemy's column reflection
            return exp.Anonymous(this="json_object", expressions=list(node.expressions))
    return node


def output_names(text: str, dialect: str = "duckdb") -> list[str] | None:
    """PostgreSQL's names for the output columns of query ``text`` (``count(*)`` is ``count``), or
    None when they cannot be told from the text alone (``*``, set operations, unparsable)."""
    try:
        tree = sqlglot.parse_one(text, read=dialect)
    except (ParseError, TokenError, RecursionError):
        return None
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    if not isinstance(tree, exp.Select) or any(s.find(exp.Star) and not s.find(exp.Func) for s in tree.selects):
        return None
    if any(isinstance(s, exp.Star) or (isinstance(s, exp.Column) and isinstance(s.this, exp.Star))
           for s in tree.selects):
        return None
    return [_pg_column_name(s) for s in tree.selects]


def _pg_column_name(node: exp.Expr) -> str:
    """The name PostgreSQL gives an output column (before any rewriting)."""
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Column):
        return node.name or "?column?"
    if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
        return _pg_column_name(node.expression)
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Cast):
        inner = _pg_column_name(node.this)
        if inner != "?column?":
            return inner
        return _cast_target(node.to) or node.to.sql("postgres").lower()
    if isinstance(node, exp.Case):
        return "case"
    special = {exp.CurrentUser: "current_user", exp.SessionUser: "session_user", exp.CurrentVersion: "version",
               exp.CurrentDatabase: "current_database", exp.CurrentSchema: "current_schema",
               exp.CurrentCatalog: "current_catalog"}
    for cls, name in special.items():
        if isinstance(node, cls):
            return name
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return "?column?"


def _replace_relations(tree: exp.Expr, ctes: set[str]) -> None:
    for select in list(tree.find_all(exp.Select)):
        unknown: list[tuple[exp.Table, str]] = []
        known: set[str] = set()
        for table in select.find_all(exp.Table):
            if table.find_ancestor(exp.Select) is not select:
                continue
            if not isinstance(table.this, exp.Identifier):  # a table function
                table.set("db", None)
                name = _name_of(table.this) if isinstance(table.this, exp.Func) else None
                if name not in ALLOWED_TABLE_FUNCTIONS and not isinstance(
                        table.this, (exp.GenerateSeries, exp.ExplodingGenerateSeries, exp.Unnest, exp.Explode)):
                    raise SqlError(f"table function '{name or table.this.sql()}' is not available",
                                   sqlstate="42883")
                continue
            db, name = table.db.lower(), table.name.lower()
            if (not db and name in ctes) or db in (SCHEMA, INFO):
                continue
            if db in ("", "pg_catalog") and name in PG_TABLES:
                table.set("db", exp.to_identifier(SCHEMA))
                table.set("catalog", None)
                known |= KNOWN_COLUMNS[name]
            elif db == "information_schema" and name in INFO_TABLES:
                table.set("db", exp.to_identifier(INFO))
                table.set("catalog", None)
                known |= KNOWN_COLUMNS[name]
            else:
                unknown.append((table, table.alias_or_name))
        if not unknown:
            continue
        free = {c.name for c in select.find_all(exp.Column)
                if not c.table and c.name and c.name.lower() not in known
                and c.find_ancestor(exp.Select) is select}
        for i, (table, alias) in enumerate(unknown):
            cols = {c.name for c in tree.find_all(exp.Column) if c.table.lower() == alias.lower() and c.name}
            if i == 0:
                cols |= free
            table.replace(_stand_in(alias, sorted(cols)))


# -- the schema-only database ----------------------------------------------------------------------

class Catalog:
    """One connection's schema-only DuckDB, locked like the SQL sandbox (it holds no data).

    With ``service``, the database is built and queried in an SQL worker process instead
    (:class:`CatalogJob`); nothing is opened in this process."""

    def __init__(self, context: CatalogContext, *, timeout: float, memory_limit: str,
                 service: SqlService | None = None) -> None:
        self.context = context
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.service = service
        self._lock = threading.Lock()
        if service is not None:
            return
        self.con = duckdb.connect(":memory:")
        try:
            self._build(context)
            for name, value in (("enable_external_access", "false"), ("autoinstall_known_extensions", "false"),
                                ("autoload_known_extensions", "false"), ("python_enable_replacements", "false"),
                                ("memory_limit", f"'{memory_limit}'"), ("threads", "1"),
                                ("lock_configuration", "true")):
                self.con.execute(f"SET {name} = {value}")
        except BaseException:
            self.con.close()
            raise

    def close(self) -> None:
        if self.service is not None:
            return  # the worker drops its copy when it needs the room
        with self._lock:
            self.con.close()

    def run(self, text: str, params: list[Any] | None = None) -> pa.Table:
        """Answer one catalog query (PostgreSQL text) as an Arrow table."""
        if self.service is not None:
            job = CatalogJob(self.context, text, params, self.timeout, self.memory_limit)
            table = self.service.submit(job, None, time.monotonic() + self.timeout)
            assert isinstance(table, pa.Table)
            return table
        sql, columns = rewrite(text)
        timer = threading.Timer(self.timeout, self.con.interrupt)
        timer.daemon = True
        with self._lock:
            timer.start()
            try:
                result = self.con.sql(sql, params=params or None).to_arrow_table()
                return result.rename_columns(columns) if len(columns) == result.num_columns else result
            except duckdb.InterruptException:
                raise SqlError(f"the catalog query ran longer than {self.timeout:g} s and was stopped",
                               sqlstate="57014") from None
            except duckdb.OutOfMemoryException:
                raise LimitExceeded(f"the catalog query needs more memory than its limit ({self.memory_limit})",
                                    limit=self.memory_limit, sqlstate="53200") from None
            except duckdb.Error as exc:
                # Never an empty answer: a tool that is told "nothing" shows an empty database.
                # The gateway logs it at WARNING and counts it (Statements.catalog).
                reason = str(exc).splitlines()[0][:300]
                raise SqlError(f"govern's catalog emulation cannot answer this query ({reason})",
                               sqlstate="0A000", catalog_unanswered=type(exc).__name__) from None
            finally:
                timer.cancel()

    # -- building --------------------------------------------------------------------------------
    def _build(self, ctx: CatalogContext) -> None:
        con = self.con
        con.execute(f"CREATE SCHEMA {SCHEMA}; CREATE SCHEMA {INFO}")
        for schema, tables in ((SCHEMA, PG_TABLES), (INFO, INFO_TABLES)):
            for name, (_oid, cols) in tables.items():
                con.execute(f"CREATE TABLE {schema}.{name} ({cols})")
        con.execute(f"CREATE TABLE {SCHEMA}._types (oid INTEGER, typname VARCHAR, display VARCHAR)")
        con.execute(f"CREATE TABLE {SCHEMA}._keywords (word VARCHAR, catcode VARCHAR, barelabel BOOLEAN, "
                    "catdesc VARCHAR, baredesc VARCHAR)")
        con.execute(f"CREATE TABLE {SESSION} (key VARCHAR, value VARCHAR)")
        rows = catalog_rows(ctx)
        for table, values in rows.items():
            if values:
                marks = ", ".join("?" * len(values[0]))
                con.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
        for name, body in MACROS.items():
            con.execute(f"CREATE MACRO pgc_{name}{body}")


@dataclass(frozen=True)
class CatalogJob:
    """One catalog query, run in an SQL worker (:meth:`SqlService.submit`). The worker keeps
    the catalog database of a context between jobs (a connection asks many questions)."""

    context: CatalogContext
    text: str
    params: list[Any] | None
    timeout: float
    memory_limit: str

    def run(self, env: WorkerEnv) -> pa.Table:
        key = ("pgwire-catalog", hashlib.sha256(pickle.dumps(self.context)).hexdigest())
        catalog = env.kept(key, lambda: Catalog(self.context, timeout=self.timeout, memory_limit=self.memory_limit))
        catalog.timeout = max(0.001, min(self.timeout, env.deadline - time.monotonic()))
        return catalog.run(self.text, self.params)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k}")
    return out
