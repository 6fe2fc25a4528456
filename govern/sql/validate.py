"""Validate analyst SQL before anything runs: one read-only query that cannot leave its sandbox.

First pass of the SQL pipeline (``validate`` → ``resolve`` → ``sandbox``). It parses the text
with sqlglot (DuckDB dialect) and refuses, with a message and a character position:

- text longer than ``sql_max_length``, and invisible or control characters (zero-width spaces,
  bidi overrides, NUL…), which only serve to make text read differently to people and parsers;
- anything but exactly one statement, and any statement that is not a query (``SELECT``,
  ``WITH``, ``UNION``/``INTERSECT``/``EXCEPT``, ``VALUES``): DDL, DML, ``PRAGMA``, ``SET``,
  ``ATTACH``, ``COPY``, ``EXPORT``, ``INSTALL``, ``LOAD``, ``CALL``, ``CHECKPOINT``…;
- schema- or catalog-qualified table names (``information_schema.tables``, ``main.x``) and
  table functions other than ``range``, ``generate_series`` and ``unnest``;
- functions that reach outside the query (``getenv``, ``current_setting``, ``query``,
  ``read_text``, ``duckdb_*``…);
- named parameters (``$name``); positional ones (``$1``, ``?``) are counted.

Which tables the query may name is decided later (:mod:`govern.sql.resolve`), against the
datasets the caller may read. None of this is the barrier that keeps raw data out — the
sandbox holds only masked views — it turns attempts into clear errors early.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, TokenError

from govern.errors import LimitExceeded, SqlError

__all__ = [
    "REFUSED_FUNCTIONS",
    "TABLE_FUNCTIONS",
    "Statement",
    "function_name",
    "position_of",
    "validate",
]

DIALECT = "duckdb"
MAX_PARAMETERS = 1_000

# The only table functions a query may use: they produce numbers, never stored data.
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})

# Scalar and table functions refused anywhere: they read settings, the environment, files,
# other statements or the catalog. The sandbox disables most of them anyway.
REFUSED_FUNCTIONS = frozenset({
    "getenv", "current_setting", "getvariable", "query", "query_table", "read_text", "read_blob",
    "glob", "sniff_csv", "json_execute_serialized_sql", "json_serialize_sql", "json_deserialize_sql",
    "nextval", "currval", "which_secret", "load_aws_credentials", "sql_auto_complete",
    "checkpoint", "force_checkpoint", "current_database", "current_catalog", "current_schema",
    "current_schemas", "current_user", "session_user", "user", "version", "has_any_column_privilege",
    "has_column_privilege", "has_database_privilege", "has_foreign_data_wrapper_privilege",
    "has_function_privilege", "has_language_privilege", "has_schema_privilege",
    "has_sequence_privilege", "has_server_privilege", "has_table_privilege",
    "has_tablespace_privilege", "col_description", "obj_description", "shobj_description",
    "format_type", "st_read", "st_read_meta", "excel", "summary", "test_all_types",
    "parquet_metadata", "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata",
    "iceberg_scan", "delta_scan", "postgres_query", "mysql_query", "sqlite_attach",
})
REFUSED_PREFIXES = ("duckdb_", "pragma_", "read_", "parquet_", "pg_", "sqlite_", "postgres_",
                    "mysql_", "iceberg_", "delta_", "icu_", "current_setting")
REFUSED_SUFFIXES = ("_scan", "_scan_auto")

# Statement keywords whose refusal deserves a clear message even when sqlglot cannot parse them.
STATEMENT_KEYWORDS = frozenset({
    "ALTER", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "COMMENT", "COMMIT", "COPY",
    "CREATE", "DEALLOCATE", "DELETE", "DESCRIBE", "DETACH", "DROP", "EXECUTE", "EXPLAIN", "EXPORT",
    "FORCE", "GRANT", "IMPORT", "INSERT", "INSTALL", "LOAD", "MERGE", "PRAGMA", "PREPARE",
    "REFRESH", "RESET", "REVOKE", "ROLLBACK", "SET", "SHOW", "SUMMARIZE", "TRUNCATE", "UPDATE",
    "UNINSTALL", "UPSERT", "USE", "VACUUM", "UPDATE_EXTENSIONS",
})

REFUSED_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name) for name in (
        "DDL", "DML", "Command", "Pragma", "Set", "Use", "Copy", "Attach", "Detach", "Install",
        "Describe", "Summarize", "Show", "Transaction", "Commit", "Rollback", "Into", "Cache",
        "Uncache", "LoadData", "Refresh", "Analyze", "Kill", "Grant", "Revoke", "Export",
        "TruncateTable", "Comment", "Declare", "Create", "Drop", "Insert", "Update", "Delete",
        "Merge", "Alter",
    ) if hasattr(exp, name)
)

ALLOWED_INVISIBLE = frozenset("\t\n\r")
_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@dataclass(frozen=True)
class Statement:
    """A validated query: its tree (comments dropped) and how many positional parameters it has."""

    text: str
    tree: exp.Expression
    parameters: int


def validate(sql: str, *, max_length: int) -> Statement:
    """Parse ``sql`` and check it is one read-only query (raises SqlError / LimitExceeded)."""
    if not isinstance(sql, str) or not sql.strip():
        raise SqlError("the SQL text is empty", position=0, sqlstate="42601")
    if len(sql) > max_length:
        raise LimitExceeded(f"the SQL text is longer than {max_length} characters", limit=max_length)
    _check_characters(sql)
    tokens = _tokenize(sql)
    statements = _parse(sql, tokens)
    if len(statements) != 1:
        raise SqlError("send exactly one statement (several were found)",
                       position=_second_statement(tokens), sqlstate="42601")
    tree = statements[0]
    _check_root(sql, tree, tokens)
    for node in tree.walk():
        _check_node(sql, node)
    return Statement(sql, tree, _count_parameters(sql, tree))


# -- characters, tokens, statements ------------------------------------------------------------
def _check_characters(sql: str) -> None:
    for i, ch in enumerate(sql):
        if ch in ALLOWED_INVISIBLE:
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise SqlError(f"invisible or control character U+{ord(ch):04X} is not allowed in SQL text",
                           position=i, sqlstate="42601")


def _tokenize(sql: str) -> list:
    try:
        return DuckDB().tokenize(sql)
    except TokenError:
        raise SqlError("cannot read the SQL text: an unterminated string, quoted identifier or comment?",
                       sqlstate="42601") from None


def _parse(sql: str, tokens: list) -> list[exp.Expression]:
    first = _first_keyword(tokens)
    if first is not None and first.text.upper() in STATEMENT_KEYWORDS:
        raise _not_a_query(first.text.upper(), first.start)
    try:
        parsed = sqlglot.parse(sql, dialect=DIALECT)
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        description = str(err.get("description") or "syntax error").split(". Line")[0]
        description = re.sub(r"<Token [^>]*>", "the end of the text", description)
        description = re.sub(r"<class '[\w.]*\.(\w+)'>", r"\1", description)
        position = _offset(sql, err.get("line"), err.get("col"), err.get("highlight") or "")
        raise SqlError(f"syntax error: {description}", position=position, sqlstate="42601") from None
    except TokenError:
        raise SqlError("cannot read the SQL text: an unterminated string, quoted identifier or comment?",
                       sqlstate="42601") from None
    return [s for s in parsed if s is not None]


def _first_keyword(tokens: list):  # -> Token | None
    for tok in tokens:
        if tok.text not in ("(",):
            return tok
    return None


def _second_statement(tokens: list) -> int | None:
    seen_semicolon = False
    for tok in tokens:
        if tok.text == ";":
            seen_semicolon = True
        elif seen_semicolon:
            return tok.start
    return None


def _offset(sql: str, line: object, col: object, highlight: str) -> int | None:
    """sqlglot reports 1-based line and the column where the offending token *ends*."""
    if not isinstance(line, int) or not isinstance(col, int):
        return None
    starts = [0]
    for i, ch in enumerate(sql):
        if ch == "\n":
            starts.append(i + 1)
    if line - 1 >= len(starts):
        return None
    pos = starts[line - 1] + col - len(highlight)
    return max(0, min(pos, len(sql)))


def _not_a_query(keyword: str, position: int | None) -> SqlError:
    return SqlError(f"{keyword} statements are not allowed: only read-only queries may run "
                    "(SELECT, WITH, VALUES, UNION/INTERSECT/EXCEPT)", position=position, sqlstate="42501")


# -- the tree ----------------------------------------------------------------------------------
def _check_root(sql: str, tree: exp.Expression, tokens: list) -> None:
    root = tree
    while isinstance(root, exp.Subquery | exp.Paren):
        root = root.this
    if not isinstance(root, exp.Select | exp.SetOperation | exp.Values):
        first = _first_keyword(tokens)
        word = first.text.upper() if first is not None else root.key.upper()
        raise _not_a_query(word, first.start if first is not None else None)


def _check_node(sql: str, node: exp.Expression) -> None:
    if isinstance(node, REFUSED_NODES):
        raise _not_a_query(node.key.upper(), position_of(sql, node))
    if isinstance(node, exp.Table):
        _check_table(sql, node)
    elif isinstance(node, exp.Func):
        for name in function_names(node):
            if refused_function(name):
                raise SqlError(f"function '{name}' is not allowed: it reaches outside the query's masked views",
                               position=position_of(sql, node, name), sqlstate="42501")
    elif isinstance(node, exp.Placeholder) and node.this is not None and not str(node.this).isdigit():
        raise SqlError("named parameters are not supported; use $1, $2, … or ?",
                       position=position_of(sql, node), sqlstate="42601")


def _check_table(sql: str, node: exp.Table) -> None:
    target = node.this
    if isinstance(target, exp.Func):
        names = function_names(target)
        if not names & TABLE_FUNCTIONS or any(refused_function(n) for n in names):
            shown = sorted(names)[0] if names else target.key
            raise SqlError(f"table function '{shown}' is not allowed; only "
                           f"{', '.join(sorted(TABLE_FUNCTIONS))} may appear in FROM",
                           position=position_of(sql, node, shown), sqlstate="42501")
        return
    if node.args.get("db") is not None or node.args.get("catalog") is not None:
        raise SqlError(f"qualified name '{node.sql(dialect=DIALECT, comments=False)}' is not allowed: "
                       "name datasets directly (system catalogs and schemas are not available)",
                       position=position_of(sql, node), sqlstate="42501")
    if not isinstance(target, exp.Identifier):
        raise SqlError(f"'{node.sql(dialect=DIALECT, comments=False)}' is not a table name",
                       position=position_of(sql, node), sqlstate="42601")


def function_name(node: exp.Func) -> str:
    """The name DuckDB will call for ``node`` (lower case)."""
    names = function_names(node)
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    generated = _CALL.match(node.sql(dialect=DIALECT, comments=False))
    return generated.group(1).lower() if generated else sorted(names)[0]


def function_names(node: exp.Func) -> set[str]:
    """Every name ``node`` goes by: as written (anonymous), sqlglot's names, and as generated."""
    names: set[str] = set()
    if isinstance(node, exp.Anonymous):
        names.add(str(node.name).lower())
    else:
        names.update(n.lower() for n in type(node).sql_names())
        generated = _CALL.match(node.sql(dialect=DIALECT, comments=False))
        if generated:
            names.add(generated.group(1).lower())
    return names


def refused_function(name: str) -> bool:
    name = name.lower()
    return (name in REFUSED_FUNCTIONS or name.startswith(REFUSED_PREFIXES)
            or name.endswith(REFUSED_SUFFIXES))


def _count_parameters(sql: str, tree: exp.Expression) -> int:
    numbered: list[int] = []
    anonymous = 0
    for node in tree.find_all(exp.Placeholder):
        if node.this is None:
            anonymous += 1
        else:
            numbered.append(int(str(node.this)))
    if numbered and anonymous:
        raise SqlError("do not mix $n and ? parameters", sqlstate="42601")
    count = max(numbered) if numbered else anonymous
    if count > MAX_PARAMETERS:
        raise LimitExceeded(f"at most {MAX_PARAMETERS} parameters", limit=MAX_PARAMETERS)
    if numbered and min(numbered) < 1:
        raise SqlError("parameters are numbered from $1", sqlstate="42601")
    return count


def position_of(sql: str, node: exp.Expression, name: str | None = None) -> int | None:
    """Best-effort character offset of ``node`` (or of the word ``name``) in ``sql``."""
    meta = getattr(node, "meta", None) or {}
    start = meta.get("start")
    if isinstance(start, int):
        return start
    starts = [m["start"] for child in node.walk()
              if isinstance((m := getattr(child, "meta", None) or {}).get("start"), int)]
    if starts:
        return min(starts)
    word = name or (node.name if isinstance(node, exp.Expression) else None)
    if word:
        match = re.search(r"(?i)(?<![\w$])" + re.escape(str(word)) + r"(?![\w])", sql)
        if match:
            return match.start()
    return None
