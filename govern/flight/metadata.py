"""Answers to the Flight SQL metadata commands, as Arrow tables in the protocol's exact schemas.

Clients check these schemas field by field (ADBC compares the whole schema, nullability
included, and refuses a different one; hand-built servers have failed with JDBC on the
``GetSqlInfo`` union, apache/arrow#37925), so each schema here is written out once, as
``FlightSql.proto`` and the reference C++ server define it, and pinned by a test.

The catalog model: a **catalog is a purpose** the principal may act under, each with one
database schema, ``public`` (as on the PostgreSQL wire), whose tables are the datasets the
principal may read under that purpose, with their masked schemas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa

__all__ = ["CATALOGS", "DB_SCHEMA", "DB_SCHEMAS", "SQL_INFO", "TABLES", "TABLES_WITH_SCHEMA", "TABLE_TYPE",
           "TABLE_TYPES", "SqlInfo", "catalogs_table", "db_schemas_table", "like", "sql_info_table",
           "table_types_table", "tables_table"]

DB_SCHEMA = "public"
TABLE_TYPE = "TABLE"

CATALOGS = pa.schema([pa.field("catalog_name", pa.string(), False)])
DB_SCHEMAS = pa.schema([pa.field("catalog_name", pa.string()), pa.field("db_schema_name", pa.string(), False)])
TABLES = pa.schema([pa.field("catalog_name", pa.string()), pa.field("db_schema_name", pa.string()),
                    pa.field("table_name", pa.string(), False), pa.field("table_type", pa.string(), False)])
TABLES_WITH_SCHEMA = TABLES.append(pa.field("table_schema", pa.binary(), False))
TABLE_TYPES = pa.schema([pa.field("table_type", pa.string(), False)])

# The value column of GetSqlInfo: a dense union whose members, type codes (0..5) and
# non-nullable children are fixed by the protocol.
SQL_INFO_VALUE = pa.dense_union([
    pa.field("string_value", pa.string(), False),
    pa.field("bool_value", pa.bool_(), False),
    pa.field("bigint_value", pa.int64(), False),
    pa.field("int32_bitmask", pa.int32(), False),
    pa.field("string_list", pa.list_(pa.string()), False),
    pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), False),
])
SQL_INFO = pa.schema([pa.field("info_name", pa.uint32(), False), pa.field("value", SQL_INFO_VALUE, False)])


@dataclass(frozen=True)
class Int32:
    """An int32 SqlInfo value (an enum ordinal or a bitmask): the union's ``int32_bitmask``."""

    value: int


SqlValue = str | bool | int | Int32 | list[str] | dict[int, list[int]]


class SqlInfo:
    """``SqlInfo`` ids (``FlightSql.proto``) this server answers."""

    SERVER_NAME = 0
    SERVER_VERSION = 1
    SERVER_ARROW_VERSION = 2
    SERVER_READ_ONLY = 3
    SERVER_SQL = 4
    SERVER_SUBSTRAIT = 5
    SERVER_TRANSACTION = 8
    SERVER_CANCEL = 9
    SERVER_STATEMENT_TIMEOUT = 100
    DDL_CATALOG = 500
    DDL_SCHEMA = 501
    DDL_TABLE = 502
    IDENTIFIER_CASE = 503
    IDENTIFIER_QUOTE_CHAR = 504
    QUOTED_IDENTIFIER_CASE = 505
    ALL_TABLES_ARE_SELECTABLE = 506
    NULL_ORDERING = 507
    SEARCH_STRING_ESCAPE = 513
    SUPPORTS_COLUMN_ALIASING = 515
    NULL_PLUS_NULL_IS_NULL = 516
    SUPPORTS_CONVERT = 517
    SCHEMA_TERM = 529
    CATALOG_TERM = 531
    CATALOG_AT_START = 532
    MAX_STATEMENT_LENGTH = 557
    TRANSACTIONS_SUPPORTED = 563


def server_info(*, version: str, arrow_version: str, statement_timeout_ms: int,
                max_statement_length: int) -> dict[int, SqlValue]:
    """What govern says about itself: a read-only SQL server over masked views, no DDL, no
    transactions, no Substrait, DuckDB's identifier and null-ordering rules."""
    case_insensitive, nulls_at_end, no_transactions = Int32(1), Int32(3), Int32(0)
    bigint, integer, double, varchar = 0, 7, 6, 19  # SqlSupportsConvert ordinals
    return {
        SqlInfo.SERVER_NAME: "govern",
        SqlInfo.SERVER_VERSION: version,
        SqlInfo.SERVER_ARROW_VERSION: arrow_version,
        SqlInfo.SERVER_READ_ONLY: True,
        SqlInfo.SERVER_SQL: True,
        SqlInfo.SERVER_SUBSTRAIT: False,
        SqlInfo.SERVER_TRANSACTION: no_transactions,
        SqlInfo.SERVER_CANCEL: False,
        SqlInfo.SERVER_STATEMENT_TIMEOUT: Int32(statement_timeout_ms),
        SqlInfo.DDL_CATALOG: False,
        SqlInfo.DDL_SCHEMA: False,
        SqlInfo.DDL_TABLE: False,
        SqlInfo.IDENTIFIER_CASE: case_insensitive,
        SqlInfo.IDENTIFIER_QUOTE_CHAR: '"',
        SqlInfo.QUOTED_IDENTIFIER_CASE: case_insensitive,
        SqlInfo.ALL_TABLES_ARE_SELECTABLE: True,  # only tables the caller may read are listed
        SqlInfo.NULL_ORDERING: nulls_at_end,
        SqlInfo.SEARCH_STRING_ESCAPE: "\\",
        SqlInfo.SUPPORTS_COLUMN_ALIASING: True,
        SqlInfo.NULL_PLUS_NULL_IS_NULL: True,
        SqlInfo.SUPPORTS_CONVERT: {bigint: [double, varchar], integer: [bigint, double, varchar],
                                   double: [varchar]},
        SqlInfo.SCHEMA_TERM: "schema",
        SqlInfo.CATALOG_TERM: "purpose",
        SqlInfo.CATALOG_AT_START: True,
        SqlInfo.MAX_STATEMENT_LENGTH: max_statement_length,
        SqlInfo.TRANSACTIONS_SUPPORTED: False,
    }


def _member(value: SqlValue) -> int:
    if isinstance(value, str):
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 2
    if isinstance(value, Int32):
        return 3
    if isinstance(value, list):
        return 4
    return 5


def sql_info_table(info: Mapping[int, SqlValue], requested: Iterable[int] = ()) -> pa.Table:
    """The requested ids (all when none) that this server knows, in the order asked; unknown
    ids are left out, as the protocol allows."""
    wanted = list(dict.fromkeys(requested)) or sorted(info)
    ids = [i for i in wanted if i in info]
    members: list[list[SqlValue]] = [[] for _ in range(6)]
    types, offsets = [], []
    for i in ids:
        code = _member(info[i])
        types.append(code)
        offsets.append(len(members[code]))
        members[code].append(info[i])
    children = [
        pa.array(members[0], pa.string()),
        pa.array(members[1], pa.bool_()),
        pa.array(members[2], pa.int64()),
        pa.array([v.value for v in members[3] if isinstance(v, Int32)], pa.int32()),
        pa.array(members[4], pa.list_(pa.string())),
        pa.array([list(v.items()) for v in members[5] if isinstance(v, dict)],
                 pa.map_(pa.int32(), pa.list_(pa.int32()))),
    ]
    type_ids = pa.array(types, pa.int8())
    value_offsets = pa.array(offsets, pa.int32())
    value = pa.Array.from_buffers(SQL_INFO_VALUE, len(ids), [None, type_ids.buffers()[1], value_offsets.buffers()[1]],
                                  children=children)
    return pa.Table.from_arrays([pa.array(ids, pa.uint32()), value], schema=SQL_INFO)


def like(pattern: str | None) -> re.Pattern[str] | None:
    """A Flight SQL filter pattern (``%`` any run, ``_`` one character, ``\\`` escapes) as a
    regular expression; no pattern matches everything."""
    if pattern is None:
        return None
    out, escaped = [], False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _matches(pattern: re.Pattern[str] | None, value: str) -> bool:
    return pattern is None or pattern.match(value) is not None


def catalogs_table(purposes: Iterable[str]) -> pa.Table:
    return pa.Table.from_pylist([{"catalog_name": p} for p in sorted(purposes)], schema=CATALOGS)


def db_schemas_table(purposes: Iterable[str], schema_pattern: str | None) -> pa.Table:
    pattern = like(schema_pattern)
    rows = [{"catalog_name": p, "db_schema_name": DB_SCHEMA} for p in sorted(purposes) if _matches(pattern, DB_SCHEMA)]
    return pa.Table.from_pylist(rows, schema=DB_SCHEMAS)


def tables_table(tables: Mapping[str, Mapping[str, pa.Schema]], *, schema_pattern: str | None,
                 table_pattern: str | None, table_types: Iterable[str], include_schema: bool) -> pa.Table:
    """``tables``: purpose → dataset → masked schema. Rows ordered by catalog, then table."""
    schema_re, table_re = like(schema_pattern), like(table_pattern)
    types = {t.upper() for t in table_types}
    rows: list[dict[str, object]] = []
    if _matches(schema_re, DB_SCHEMA) and (not types or TABLE_TYPE in types):
        for purpose in sorted(tables):
            for name in sorted(tables[purpose]):
                if not _matches(table_re, name):
                    continue
                row: dict[str, object] = {"catalog_name": purpose, "db_schema_name": DB_SCHEMA, "table_name": name,
                                          "table_type": TABLE_TYPE}
                if include_schema:
                    row["table_schema"] = tables[purpose][name].serialize().to_pybytes()
                rows.append(row)
    return pa.Table.from_pylist(rows, schema=TABLES_WITH_SCHEMA if include_schema else TABLES)


def table_types_table() -> pa.Table:
    return pa.Table.from_pylist([{"table_type": TABLE_TYPE}], schema=TABLE_TYPES)


