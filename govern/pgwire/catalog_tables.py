"""The contents of the wire server's schema-only catalog: govern's ``pg_catalog`` and
``information_schema`` tables (their columns and their rows), and the catalog functions as DuckDB
macros. Rows describe the masked views of one session (:class:`CatalogContext`); none holds data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from govern import __version__
from govern.pgwire.keywords import KEYWORD_ROWS
from govern.pgwire.types import PG_TYPES, pg_type_of

__all__ = ["INFO", "INFO_TABLES", "KNOWN_COLUMNS", "MACROS", "PG_TABLES", "SCHEMA", "SESSION", "CatalogContext",
           "catalog_rows"]

SCHEMA = "govern_catalog"
INFO = "govern_information_schema"
PUBLIC_OID, PG_CATALOG_OID, INFO_OID = 2200, 11, 13000
OWNER_OID, USER_OID, FIRST_TABLE_OID = 10, 16383, 16384

# govern's catalog relations: name → (oid, DuckDB columns).
PG_TABLES: dict[str, tuple[int, str]] = {
    "pg_namespace": (2615, "oid INTEGER, nspname VARCHAR, nspowner INTEGER, nspacl VARCHAR[]"),
    "pg_class": (1259, "oid INTEGER, relname VARCHAR, relnamespace INTEGER, reltype INTEGER, "
                       "reloftype INTEGER, relowner INTEGER, relam INTEGER, relfilenode INTEGER, "
                       "reltablespace INTEGER, relpages INTEGER, reltuples REAL, relallvisible INTEGER, "
                       "reltoastrelid INTEGER, relhasindex BOOLEAN, relisshared BOOLEAN, relpersistence VARCHAR, "
                       "relkind VARCHAR, relnatts SMALLINT, relchecks SMALLINT, relhasrules BOOLEAN, "
                       "relhastriggers BOOLEAN, relhassubclass BOOLEAN, relrowsecurity BOOLEAN, "
                       "relforcerowsecurity BOOLEAN, relispopulated BOOLEAN, relreplident VARCHAR, "
                       "relispartition BOOLEAN, relrewrite INTEGER, relfrozenxid INTEGER, relminmxid INTEGER, "
                       "relacl VARCHAR[], reloptions VARCHAR[], relpartbound VARCHAR, relhasoids BOOLEAN"),
    "pg_attribute": (1249, "attrelid INTEGER, attname VARCHAR, atttypid INTEGER, attstattarget INTEGER, "
                           "attlen SMALLINT, attnum SMALLINT, attndims INTEGER, attcacheoff INTEGER, "
                           "atttypmod INTEGER, attbyval BOOLEAN, attalign VARCHAR, attstorage VARCHAR, "
                           "attcompression VARCHAR, attnotnull BOOLEAN, atthasdef BOOLEAN, atthasmissing BOOLEAN, "
                           "attidentity VARCHAR, attgenerated VARCHAR, attisdropped BOOLEAN, attislocal BOOLEAN, "
                           "attinhcount INTEGER, attcollation INTEGER, attacl VARCHAR[], attoptions VARCHAR[], "
                           "attfdwoptions VARCHAR[], attmissingval VARCHAR"),
    "pg_type": (1247, "oid INTEGER, typname VARCHAR, typnamespace INTEGER, typowner INTEGER, typlen SMALLINT, "
                      "typbyval BOOLEAN, typtype VARCHAR, typcategory VARCHAR, typispreferred BOOLEAN, "
                      "typisdefined BOOLEAN, typdelim VARCHAR, typrelid INTEGER, typsubscript VARCHAR, "
                      "typelem INTEGER, typarray INTEGER, typinput VARCHAR, typoutput VARCHAR, "
                      "typreceive VARCHAR, typsend VARCHAR, typmodin VARCHAR, typmodout VARCHAR, "
                      "typanalyze VARCHAR, typalign VARCHAR, typstorage VARCHAR, typnotnull BOOLEAN, "
                      "typbasetype INTEGER, typtypmod INTEGER, typndims INTEGER, typcollation INTEGER, "
                      "typdefaultbin VARCHAR, typdefault VARCHAR, typacl VARCHAR[]"),
    "pg_database": (1262, "oid INTEGER, datname VARCHAR, datdba INTEGER, encoding INTEGER, "
                          "datlocprovider VARCHAR, datistemplate BOOLEAN, datallowconn BOOLEAN, "
                          "datconnlimit INTEGER, datfrozenxid INTEGER, datminmxid INTEGER, dattablespace INTEGER, "
                          "datcollate VARCHAR, datctype VARCHAR, daticulocale VARCHAR, datcollversion VARCHAR, "
                          "datacl VARCHAR[]"),
    "pg_roles": (12001, "oid INTEGER, rolname VARCHAR, rolsuper BOOLEAN, rolinherit BOOLEAN, "
                        "rolcreaterole BOOLEAN, rolcreatedb BOOLEAN, rolcanlogin BOOLEAN, rolreplication BOOLEAN, "
                        "rolconnlimit INTEGER, rolpassword VARCHAR, rolvaliduntil TIMESTAMPTZ, "
                        "rolbypassrls BOOLEAN, rolconfig VARCHAR[]"),
    "pg_user": (12002, "usename VARCHAR, usesysid INTEGER, usecreatedb BOOLEAN, usesuper BOOLEAN, "
                       "userepl BOOLEAN, usebypassrls BOOLEAN, passwd VARCHAR, valuntil TIMESTAMPTZ, "
                       "useconfig VARCHAR[]"),
    "pg_settings": (12003, "name VARCHAR, setting VARCHAR, unit VARCHAR, category VARCHAR, short_desc VARCHAR, "
                           "extra_desc VARCHAR, context VARCHAR, vartype VARCHAR, source VARCHAR, "
                           "min_val VARCHAR, max_val VARCHAR, enumvals VARCHAR[], boot_val VARCHAR, "
                           "reset_val VARCHAR, sourcefile VARCHAR, sourceline INTEGER, pending_restart BOOLEAN"),
    "pg_am": (2601, "oid INTEGER, amname VARCHAR, amhandler VARCHAR, amtype VARCHAR"),
    "pg_tablespace": (1213, "oid INTEGER, spcname VARCHAR, spcowner INTEGER, spcacl VARCHAR[], "
                            "spcoptions VARCHAR[]"),
    "pg_description": (2609, "objoid INTEGER, classoid INTEGER, objsubid INTEGER, description VARCHAR"),
    "pg_tables": (12004, "schemaname VARCHAR, tablename VARCHAR, tableowner VARCHAR, tablespace VARCHAR, "
                         "hasindexes BOOLEAN, hasrules BOOLEAN, hastriggers BOOLEAN, rowsecurity BOOLEAN"),
}
# Columns of type ``oid`` are UINTEGER here, sent as ``oid`` (Arrow uint32 → 26): clients pick
# their decoders by type (asyncpg's own type lookup wants ``oid``/``oid[]``, not ``int4[]``).
OID_COLUMNS = frozenset({
    "oid", "relnamespace", "reltype", "reloftype", "relowner", "relam", "relfilenode", "reltablespace",
    "reltoastrelid", "relrewrite", "attrelid", "atttypid", "attcollation", "typnamespace", "typowner",
    "typrelid", "typelem", "typarray", "typbasetype", "typcollation", "nspowner", "datdba", "dattablespace",
    "objoid", "classoid", "spcowner", "usesysid"})
PG_TABLES = {name: (oid, ", ".join(
    f"{col.split()[0]} UINTEGER" if col.split()[0] in OID_COLUMNS and col.split()[1] == "INTEGER" else col
    for col in columns.split(", "))) for name, (oid, columns) in PG_TABLES.items()}

INFO_TABLES: dict[str, tuple[int, str]] = {
    "schemata": (13001, "catalog_name VARCHAR, schema_name VARCHAR, schema_owner VARCHAR, "
                        "default_character_set_catalog VARCHAR, default_character_set_schema VARCHAR, "
                        "default_character_set_name VARCHAR, sql_path VARCHAR"),
    "tables": (13002, "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, table_type VARCHAR, "
                      "self_referencing_column_name VARCHAR, reference_generation VARCHAR, "
                      "user_defined_type_catalog VARCHAR, user_defined_type_schema VARCHAR, "
                      "user_defined_type_name VARCHAR, is_insertable_into VARCHAR, is_typed VARCHAR, "
                      "commit_action VARCHAR"),
    "columns": (13003, "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, column_name VARCHAR, "
                       "ordinal_position INTEGER, column_default VARCHAR, is_nullable VARCHAR, data_type VARCHAR, "
                       "character_maximum_length INTEGER, character_octet_length INTEGER, "
                       "numeric_precision INTEGER, numeric_precision_radix INTEGER, numeric_scale INTEGER, "
                       "datetime_precision INTEGER, interval_type VARCHAR, interval_precision INTEGER, "
                       "collation_name VARCHAR, domain_name VARCHAR, udt_catalog VARCHAR, udt_schema VARCHAR, "
                       "udt_name VARCHAR, dtd_identifier VARCHAR, is_self_referencing VARCHAR, "
                       "is_identity VARCHAR, identity_generation VARCHAR, is_generated VARCHAR, "
                       "generation_expression VARCHAR, is_updatable VARCHAR"),
    "views": (13004, "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, view_definition VARCHAR, "
                     "check_option VARCHAR, is_updatable VARCHAR, is_insertable_into VARCHAR"),
}

SESSION = f"{SCHEMA}._session"
FIXED_SETTINGS = {"max_index_keys": "32", "max_function_args": "100", "block_size": "8192",
                  "max_identifier_length": "63", "server_encoding": "UTF8", "data_checksums": "off"}
# Catalog functions, as DuckDB macros named pgc_<name> (called after rewrite()).
MACROS: dict[str, str] = {
    "format_type": f"(t, m := NULL) AS (SELECT display FROM {SCHEMA}._types WHERE oid = t)",
    "pg_get_userbyid": f"(x) AS coalesce((SELECT rolname FROM {SCHEMA}.pg_roles WHERE oid = x), "
                       "'unknown (OID=' || x || ')')",
    "pg_table_is_visible": f"(x) AS x IN (SELECT oid FROM {SCHEMA}.pg_class WHERE relnamespace IN "
                           f"({PG_CATALOG_OID}, {PUBLIC_OID}))",
    "pg_type_is_visible": "(x) AS true",
    "pg_get_serial_sequence": "(a, b) AS NULL::VARCHAR",  # govern has no sequences
    "pg_collation_is_visible": "(x) AS true",
    "pg_opclass_is_visible": "(x) AS true",
    "pg_conversion_is_visible": "(x) AS true",
    "pg_get_function_identity_arguments": "(a) AS NULL::VARCHAR",
    "pg_postmaster_start_time": "() AS NULL::TIMESTAMPTZ",
    "pg_advisory_unlock_all": "() AS NULL::VARCHAR",  # asyncpg's pool resets a connection with it
    "pg_get_keywords": "() AS TABLE SELECT * FROM " + "govern_catalog._keywords",
    "pg_function_is_visible": "(x) AS true",
    "pg_get_expr": "(a, b, c := NULL) AS NULL::VARCHAR",
    "pg_get_constraintdef": "(a, b := NULL) AS NULL::VARCHAR",
    "pg_get_indexdef": "(a, b := NULL, c := NULL) AS NULL::VARCHAR",
    "pg_get_viewdef": "(a, b := NULL) AS NULL::VARCHAR",
    "pg_get_triggerdef": "(a, b := NULL) AS NULL::VARCHAR",
    "pg_get_functiondef": "(a) AS NULL::VARCHAR",
    "pg_get_function_arguments": "(a) AS NULL::VARCHAR",
    "pg_get_function_result": "(a) AS NULL::VARCHAR",
    "pg_get_statisticsobjdef_columns": "(a) AS NULL::VARCHAR",
    "pg_get_partkeydef": "(a) AS NULL::VARCHAR",
    "pg_relation_is_publishable": "(a) AS false",
    "obj_description": f"(a, b := NULL) AS (SELECT description FROM {SCHEMA}.pg_description "
                       "WHERE objoid = a AND objsubid = 0 LIMIT 1)",
    "col_description": f"(a, b) AS (SELECT description FROM {SCHEMA}.pg_description "
                       "WHERE objoid = a AND objsubid = b LIMIT 1)",
    "shobj_description": "(a, b) AS NULL::VARCHAR",
    "has_table_privilege": "(a, b := NULL, c := NULL) AS true",
    "has_schema_privilege": "(a, b := NULL, c := NULL) AS true",
    "has_database_privilege": "(a, b := NULL, c := NULL) AS true",
    "has_column_privilege": "(a, b := NULL, c := NULL, d := NULL) AS true",
    "pg_has_role": "(a, b := NULL, c := NULL) AS false",
    "current_setting": f"(n, missing_ok := false) AS (SELECT setting FROM {SCHEMA}.pg_settings "
                       "WHERE lower(name) = lower(n))",
    "set_config": "(n, v, is_local) AS v",
    "pg_encoding_to_char": "(x) AS 'UTF8'",
    "pg_char_to_encoding": "(x) AS 6",
    "pg_backend_pid": f"() AS (SELECT value::INTEGER FROM {SESSION} WHERE key = 'pid')",
    "pg_is_in_recovery": "() AS false",
    "pg_my_temp_schema": "() AS 0",
    "pg_is_other_temp_schema": "(x) AS false",
    "pg_total_relation_size": "(x) AS 0::BIGINT",
    "pg_relation_size": "(x, f := NULL) AS 0::BIGINT",
    "pg_table_size": "(x) AS 0::BIGINT",
    "pg_indexes_size": "(x) AS 0::BIGINT",
    "pg_database_size": "(x) AS 0::BIGINT",
    "pg_tablespace_location": "(x) AS ''",
    "txid_current": "() AS 1::BIGINT",
    "inet_server_addr": "() AS NULL::VARCHAR",
    "inet_server_port": "() AS NULL::INTEGER",
    "array_upper": "(a, d) AS len(a)",
    "array_lower": "(a, d) AS CASE WHEN len(a) > 0 THEN 1 END",
    "quote_ident": "(x) AS CASE WHEN regexp_full_match(x, '[a-z_][a-z0-9_$]*') THEN x "
                   "ELSE '\"' || replace(x, '\"', '\"\"') || '\"' END",
    "to_regclass": f"(x) AS (SELECT oid FROM {SCHEMA}.pg_class WHERE relname = "
                   "regexp_replace(x, '^(public|pg_catalog)\\.', ''))",
    "version": f"() AS (SELECT value FROM {SESSION} WHERE key = 'version')",
    "current_schema": "() AS 'public'",
    "current_schemas": "(b) AS CASE WHEN b THEN ['pg_catalog', 'public'] ELSE ['public'] END",
    "current_database": f"() AS (SELECT value FROM {SESSION} WHERE key = 'database')",
    "current_user": f"() AS (SELECT value FROM {SESSION} WHERE key = 'user')",
    "regclass_name": f"(x) AS (SELECT relname FROM {SCHEMA}.pg_class WHERE oid = x)",
    "regclass_oid": f"(x) AS coalesce(TRY_CAST(x AS UINTEGER), (SELECT oid FROM {SCHEMA}.pg_class "
                    "WHERE relname = split_part(trim(x::VARCHAR, '\"'), '.', -1) LIMIT 1))",
    "regtype_oid": f"(x) AS coalesce(TRY_CAST(x AS UINTEGER), (SELECT oid FROM {SCHEMA}._types "
                   "WHERE typname = x::VARCHAR OR display = x::VARCHAR LIMIT 1))",
    "to_regtype": f"(x) AS (SELECT oid FROM {SCHEMA}._types WHERE typname = x OR display = x LIMIT 1)",
    "regtype_name": f"(x) AS (SELECT display FROM {SCHEMA}._types WHERE oid = x)",
    "regnamespace_name": f"(x) AS (SELECT nspname FROM {SCHEMA}.pg_namespace WHERE oid = x)",
}


@dataclass(frozen=True)
class CatalogContext:
    """Who the catalog describes: the session's user and purpose, and what they may read."""

    user: str
    database: str  # the purpose
    databases: tuple[str, ...]  # every purpose the user may connect to
    tables: dict[str, pa.Schema]  # masked schemas
    settings: dict[str, str]
    pid: int
    descriptions: dict[tuple[str, str | None], str] | None = None  # (table, column|None) → text


def _known_columns() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for tables in (PG_TABLES, INFO_TABLES):
        for name, (_oid, cols) in tables.items():
            out[name] = {c.strip().split()[0] for c in cols.split(",")}
    return out


KNOWN_COLUMNS = _known_columns()


# PostgreSQL's own I/O function names (clients such as ADBC pick their decoders by typreceive)
_UNDERSCORED = frozenset({"date", "time", "timestamp", "timestamptz", "interval", "numeric", "uuid", "json",
                          "jsonb"})


def _io_functions(name: str) -> tuple[str, str, str, str]:
    sep = "_" if name in _UNDERSCORED else ""
    return f"{name}{sep}in", f"{name}{sep}out", f"{name}{sep}recv", f"{name}{sep}send"


def catalog_rows(ctx: CatalogContext) -> dict[str, list[tuple[Any, ...]]]:
    """The contents of govern's catalog tables for ``ctx`` (schemas only; never a data row)."""
    desc = ctx.descriptions or {}
    namespaces = [(PG_CATALOG_OID, "pg_catalog"), (PUBLIC_OID, "public"), (INFO_OID, "information_schema")]
    pg_class: list[tuple[Any, ...]] = []
    pg_attribute: list[tuple[Any, ...]] = []
    descriptions: list[tuple[Any, ...]] = []
    info_tables: list[tuple[Any, ...]] = []
    info_columns: list[tuple[Any, ...]] = []

    def relation(oid: int, name: str, namespace: int, kind: str, natts: int) -> tuple[Any, ...]:
        return (oid, name, namespace, 0, 0, OWNER_OID, 2 if kind == "r" else 0, oid, 0, 0, -1.0, 0, 0, False,
                False, "p", kind, natts, 0, False, False, False, False, False, True, "d", False, 0, 0, 0,
                None, None, None, False)

    for oid, name, ns in [(o, n, PG_CATALOG_OID) for n, (o, _c) in PG_TABLES.items()] + \
                         [(o, n, INFO_OID) for n, (o, _c) in INFO_TABLES.items()]:
        pg_class.append(relation(oid, name, ns, "v", 0))
    for i, (table, schema) in enumerate(sorted(ctx.tables.items())):
        oid = FIRST_TABLE_OID + i
        pg_class.append(relation(oid, table, PUBLIC_OID, "r", len(schema)))
        info_tables.append((ctx.database, "public", table, "BASE TABLE", None, None, None, None, None, "NO", "NO",
                            None))
        if (table, None) in desc:
            descriptions.append((oid, 1259, 0, desc[(table, None)]))
        for num, field in enumerate(schema, start=1):
            pg = pg_type_of(field.type)
            pg_attribute.append((oid, field.name, pg.oid, -1, pg.size, num, 1 if pg.category == "A" else 0, -1,
                                 -1, pg.size in (1, 2, 4, 8), "i", "p" if pg.size > 0 else "x", "",
                                 not field.nullable, False, False, "", "", False, True, 0,
                                 100 if pg.category == "S" else 0, None, None, None, None))
            if (table, field.name) in desc:
                descriptions.append((oid, 1259, num, desc[(table, field.name)]))
            numeric = {20: (64, 2, 0), 21: (16, 2, 0), 23: (32, 2, 0), 700: (24, 2, None), 701: (53, 2, None)}
            precision, radix, scale = numeric.get(pg.oid, (None, None, None))
            data_type = "ARRAY" if pg.category == "A" else pg.display
            info_columns.append((ctx.database, "public", table, field.name, num, None,
                                 "YES" if field.nullable else "NO", data_type, None, None, precision, radix, scale,
                                 6 if pg.category == "D" else None, None, None, None, None, ctx.database,
                                 "pg_catalog", pg.name, str(num), "NO", "NO", None, "NEVER", None, "NO"))
    types = [(t.oid, t.name, PG_CATALOG_OID, OWNER_OID, t.size, t.size in (1, 2, 4, 8), "b", t.category,
              False, True, ",", 0, "array_subscript_handler" if t.element else "-", t.element, t.array,
              *(_io_functions(t.name) if not t.element
                else ("array_in", "array_out", "array_recv", "array_send")), "-", "-", "-",
              "d" if t.size == 8 else "i", "p" if t.size > 0 else "x", False, 0, -1, 0,
              100 if t.category == "S" else 0, None, None, None) for t in PG_TYPES.values()]
    # the session's settings, and the compile-time limits clients read (pgjdbc's getImportedKeys
    # reads max_index_keys)
    values = {**FIXED_SETTINGS, **ctx.settings}
    settings = [(k, v, None, "", "", None, "internal" if k in FIXED_SETTINGS else "user",
                 "integer" if v.isdigit() else "string", "default" if k in FIXED_SETTINGS else "session",
                 None, None, None, v, v, None, None, False)
                for k, v in sorted(values.items())]
    databases = [(16380 + i, name, OWNER_OID, 6, "c", False, True, -1, 0, 0, 1663, "C", "C", None, None, None)
                 for i, name in enumerate(ctx.databases)]
    roles = [(OWNER_OID, "govern", False, True, False, False, False, False, -1, "********", None, False, None),
             (USER_OID, ctx.user, False, True, False, False, True, False, -1, "********", None, False, None)]
    return {
        f"{SCHEMA}.pg_namespace": [(oid, name, OWNER_OID, None) for oid, name in namespaces],
        f"{SCHEMA}.pg_class": pg_class,
        f"{SCHEMA}.pg_attribute": pg_attribute,
        f"{SCHEMA}.pg_type": types,
        f"{SCHEMA}._types": [(t.oid, t.name, t.display) for t in PG_TYPES.values()],
        f"{SCHEMA}.pg_database": databases,
        f"{SCHEMA}.pg_roles": roles,
        f"{SCHEMA}.pg_user": [(ctx.user, USER_OID, False, False, False, False, "********", None, None)],
        f"{SCHEMA}.pg_settings": settings,
        f"{SCHEMA}._keywords": KEYWORD_ROWS,
        f"{SCHEMA}.pg_am": [(2, "heap", "heap_tableam_handler", "t"), (403, "btree", "bthandler", "i")],
        f"{SCHEMA}.pg_tablespace": [(1663, "pg_default", OWNER_OID, None, None)],
        f"{SCHEMA}.pg_description": descriptions,
        f"{SCHEMA}.pg_tables": [("public", name, "govern", None, False, False, False, False)
                                for name in sorted(ctx.tables)],
        f"{INFO}.schemata": [(ctx.database, n, "govern", None, None, "UTF8", None) for _o, n in namespaces],
        f"{INFO}.tables": info_tables,
        f"{INFO}.columns": info_columns,
        f"{SESSION}": [("user", ctx.user), ("database", ctx.database), ("pid", str(ctx.pid)),
                  ("version", f"PostgreSQL {ctx.settings.get('server_version', '16.0')}, govern {__version__} "
                              "data-governance gateway (masked views only)")],
    }
