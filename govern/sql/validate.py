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
  ``read_text``, ``duckdb_*``…) and govern's own masking functions (``govern_*`` such as
  ``govern_tokenize``, ``hmac*``, ``reidentify``): called on guessed values they would give
  the tokens of those values, a dictionary attack on masked columns;
- named parameters (``$name``); positional ones (``$1``, ``?``) are counted;
- functions that build one value of a requested size (``repeat``, ``lpad``/``rpad``,
  ``range``/``generate_series`` as lists, ``list_resize``, ``printf`` widths…) unless the size
  is a literal ≤ ``MAX_VALUE_SIZE``: DuckDB's ``memory_limit`` does not bound a single value.

Validation is linear in the text (``tests/security/test_sql_validation_cost.py``): one
tokenization, one parse, one walk and ONE rendering of the tree, from which the name DuckDB
calls for every function node is collected (:class:`Calls`). Nesting deeper than sqlglot can
recurse is "nested too deeply", never a ``RecursionError``.

Which tables the query may name is decided later (:mod:`govern.sql.resolve`), against the
datasets the caller may read. None of this is the barrier that keeps raw data out — the
sandbox holds only masked views — it turns attempts into clear errors early.
"""

from __future__ import annotations

import gc
import re
import unicodedata
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, TokenError
from sqlglot.generators.duckdb import DuckDBGenerator
from sqlglot.tokens import Token, TokenType

from govern.errors import LimitExceeded, SqlError

__all__ = [
    "REFUSED_FUNCTIONS",
    "TABLE_FUNCTIONS",
    "Calls",
    "Statement",
    "calls_of",
    "position_of",
    "refused_function",
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
    # govern's own masking machinery: a keyed function called on guessed values would compute
    # their tokens or pseudonyms (a dictionary attack on masked columns); reversal is never SQL
    "tokenize", "detokenize", "reidentify", "hmac", "pseudonymize",
})
REFUSED_PREFIXES = ("duckdb_", "pragma_", "read_", "parquet_", "pg_", "sqlite_", "postgres_",
                    "mysql_", "iceberg_", "delta_", "icu_", "current_setting",
                    "govern_", "__govern", "hmac_")
REFUSED_SUFFIXES = ("_scan", "_scan_auto")

# Statement keywords whose refusal deserves a clear message even when sqlglot cannot parse them.
STATEMENT_KEYWORDS = frozenset({
    "ALTER", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "COMMENT", "COMMIT", "COPY",
    "CREATE", "DEALLOCATE", "DELETE", "DESCRIBE", "DETACH", "DROP", "EXECUTE", "EXPLAIN", "EXPORT",
    "FORCE", "GRANT", "IMPORT", "INSERT", "INSTALL", "LOAD", "MERGE", "PRAGMA", "PREPARE",
    "REFRESH", "RESET", "REVOKE", "ROLLBACK", "SET", "SHOW", "SUMMARIZE", "TRUNCATE", "UPDATE",
    "UNINSTALL", "UPSERT", "USE", "VACUUM", "UPDATE_EXTENSIONS",
})

REFUSED_NODES: tuple[type[exp.Expr], ...] = tuple(
    getattr(exp, name) for name in (
        "DDL", "DML", "Command", "Pragma", "Set", "Use", "Copy", "Attach", "Detach", "Install",
        "Describe", "Summarize", "Show", "Transaction", "Commit", "Rollback", "Into", "Cache",
        "Uncache", "LoadData", "Refresh", "Analyze", "Kill", "Grant", "Revoke", "Export",
        "TruncateTable", "Comment", "Declare", "Create", "Drop", "Insert", "Update", "Delete",
        "Merge", "Alter",
    ) if hasattr(exp, name)
)

# DuckDB's memory_limit bounds operators (joins, aggregates, sorts), not one huge value: a
# function that makes a value of a requested size must be given a literal size within this cap.
MAX_VALUE_SIZE = 100_000
SIZED_FUNCTIONS = {"list_resize": 1, "array_resize": 1, "bitstring": 1, "to_base": 2}
FORMAT_FUNCTIONS = frozenset({"printf", "format"})

ALLOWED_INVISIBLE = frozenset("\t\n\r")
_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@dataclass(frozen=True)
class Statement:
    """A validated query: its tree (comments dropped) and how many positional parameters it has.

    Every ``?`` is renumbered ``$1, $2, …`` in the order written, so that parameters keep their
    meaning however the query is regenerated (DuckDB's ``FROM t SELECT ?`` puts FROM first).
    """

    text: str
    tree: exp.Expr
    parameters: int


def validate(sql: str, *, max_length: int) -> Statement:
    """Parse ``sql`` and check it is one read-only query (raises SqlError / LimitExceeded).

    Linear in the length of the text: one tokenization, one parse, one walk of the tree and
    one rendering of it (:func:`calls_of`). Nesting deeper than the parser or the generator can
    recurse is refused as "nested too deeply" (SQLSTATE 54001), never a ``RecursionError``.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise SqlError("the SQL text is empty", position=0, sqlstate="42601")
    if len(sql) > max_length:
        raise LimitExceeded(f"the SQL text is longer than {max_length} characters", limit=max_length)
    _check_characters(sql)
    collecting = gc.isenabled()
    gc.disable()  # a long text makes ~10⁵ objects: each generation-2 pass would walk them all
    try:
        return _validate(sql)
    except RecursionError:  # sqlglot parses and generates recursively
        raise SqlError("the query is nested too deeply", sqlstate="54001") from None
    finally:
        if collecting:
            gc.enable()


def _validate(sql: str) -> Statement:
    tokens = _tokenize(sql)
    numbered = _number_placeholders(sql, tokens)
    try:
        statements = _parse(numbered, tokens if numbered.text is sql else None)
        if len(statements) != 1:
            raise SqlError("send exactly one statement (several were found)",
                           position=numbered.forward(_second_statement(tokens)), sqlstate="42601")
        tree = statements[0]
        _check_root(numbered, tree, tokens)
        calls = calls_of(tree)
        placeholders: list[exp.Placeholder] = []
        for node in tree.walk():
            _check_node(numbered.text, node, calls)
            if isinstance(node, exp.Placeholder):
                placeholders.append(node)
        calls.check_generated(numbered.text)
        parameters = _count_parameters(placeholders)
    except (SqlError, LimitExceeded) as exc:
        position = exc.extra.get("position")
        if isinstance(position, int):
            exc.extra["position"] = numbered.original(position)
        raise
    return Statement(sql, tree, parameters)


@dataclass(frozen=True)
class _Numbered:
    text: str
    shifts: tuple[tuple[int, int, int], ...]  # (offset in the original, offset in text, chars added)

    def original(self, position: int) -> int:
        return position - sum(added for _, at, added in self.shifts if at < position)

    def forward(self, position: int | None) -> int | None:
        if position is None:
            return None
        return position + sum(added for at, _, added in self.shifts if at < position)


def _number_placeholders(sql: str, tokens: list[Token]) -> _Numbered:
    marks = [t for t in tokens if t.token_type == TokenType.PLACEHOLDER and t.text == "?"]
    if len(marks) > MAX_PARAMETERS:  # each ? is a parameter of its own: refuse before parsing
        raise LimitExceeded(f"at most {MAX_PARAMETERS} parameters", limit=MAX_PARAMETERS)
    if not marks:
        return _Numbered(sql, ())
    if any(t.token_type == TokenType.PARAMETER for t in tokens):
        raise SqlError("do not mix $n and ? parameters", position=marks[0].start, sqlstate="42601")
    parts: list[str] = []
    shifts: list[tuple[int, int, int]] = []
    last = 0
    out_len = 0
    for i, tok in enumerate(marks, start=1):
        chunk = sql[last:tok.start]
        parts.append(chunk)
        out_len += len(chunk)
        repl = f"${i}"
        parts.append(repl)
        shifts.append((tok.start, out_len, len(repl) - 1))
        out_len += len(repl)
        last = tok.end + 1
    parts.append(sql[last:])
    return _Numbered("".join(parts), tuple(shifts))


# -- characters, tokens, statements ------------------------------------------------------------
def _check_characters(sql: str) -> None:
    for i, ch in enumerate(sql):
        if ch in ALLOWED_INVISIBLE:
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise SqlError(f"invisible or control character U+{ord(ch):04X} is not allowed in SQL text",
                           position=i, sqlstate="42601")


def _tokenize(sql: str) -> list[Token]:
    try:
        return DuckDB().tokenize(sql)
    except TokenError:
        raise SqlError("cannot read the SQL text: an unterminated string, quoted identifier or comment?",
                       sqlstate="42601") from None


def _parse(numbered: _Numbered, tokens: list[Token] | None) -> list[exp.Expr]:
    """Parse ``numbered.text``; ``tokens`` are its tokens when already known (not renumbered)."""
    sql = numbered.text
    first = _first_keyword(tokens if tokens is not None else _tokenize(sql))
    if first is not None and first.text.upper() in STATEMENT_KEYWORDS:
        raise _not_a_query(first.text.upper(), numbered.forward(first.start))
    try:
        dialect = DuckDB()
        parsed = dialect.parser().parse(tokens if tokens is not None else dialect.tokenize(sql), sql)
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


def _first_keyword(tokens: list[Token]) -> Token | None:
    for tok in tokens:
        if tok.text not in ("(",):
            return tok
    return None


def _second_statement(tokens: list[Token]) -> int | None:
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
def _check_root(numbered: _Numbered, tree: exp.Expr, tokens: list[Token]) -> None:
    root = tree
    while isinstance(root, exp.Subquery | exp.Paren):
        root = root.this
    if not isinstance(root, exp.Select | exp.SetOperation | exp.Values):
        first = _first_keyword(tokens)
        word = first.text.upper() if first is not None else root.key.upper()
        raise _not_a_query(word, numbered.forward(first.start) if first is not None else None)


def _check_node(sql: str, node: exp.Expr, calls: Calls) -> None:
    if isinstance(node, REFUSED_NODES):
        raise _not_a_query(node.key.upper(), position_of(sql, node))
    if isinstance(node, exp.Table):
        _check_table(sql, node, calls)
    elif isinstance(node, exp.Func):
        for name in calls.names(node):
            if refused_function(name):
                raise _refused(sql, node, name)
        _check_sizes(sql, node, calls)
    elif isinstance(node, exp.Placeholder) and node.this is not None and not str(node.this).isdigit():
        raise SqlError("named parameters are not supported; use $1, $2, … or ?",
                       position=position_of(sql, node), sqlstate="42601")


def _refused(sql: str, node: exp.Expr, name: str) -> SqlError:
    return SqlError(f"function '{name}' is not allowed: it reaches outside the query's masked views",
                    position=position_of(sql, node, name), sqlstate="42501")


def _check_table(sql: str, node: exp.Table, calls: Calls) -> None:
    target = node.this
    if isinstance(target, exp.Func):
        names = calls.names(target)
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


def _check_sizes(sql: str, node: exp.Func, calls: Calls) -> None:
    """Bound the values a function may build (``repeat``, ``lpad``, ``range`` as a list, …)."""
    name = calls.name(node)
    sizes: list[exp.Expr | None] = []
    if isinstance(node, exp.Repeat):  # repeat('-', 20): a literal repeated a literal number of times
        base, times = node.this, _integer(node.args.get("times"))
        unit = len(str(base.this)) if isinstance(base, exp.Literal) and base.is_string else None
        if unit is None or times is None or unit * times > MAX_VALUE_SIZE:
            raise LimitExceeded(f"repeat(…) takes a literal string and count, at most {MAX_VALUE_SIZE} characters "
                           "in all", position=position_of(sql, node, name), sqlstate="54000", limit=MAX_VALUE_SIZE)
    elif isinstance(node, exp.Pad):
        sizes = [node.args.get("expression")]
    elif isinstance(node, exp.Anonymous) and name in SIZED_FUNCTIONS:
        i = SIZED_FUNCTIONS[name]
        sizes = [node.expressions[i] if len(node.expressions) > i else None]
        if any(not isinstance(a, exp.Literal | exp.Null) for a in node.expressions[i + 1:]):
            raise LimitExceeded(f"{name}(…) takes literal fill values", position=position_of(sql, node, name),
                           sqlstate="54000", limit=MAX_VALUE_SIZE)
    elif isinstance(node, exp.GenerateSeries) and not isinstance(node.parent, exp.Table):
        bounds = [_integer(node.args.get(k)) for k in ("start", "end")]
        step = _integer(node.args.get("step")) if node.args.get("step") is not None else 1
        if None in bounds or not step:
            raise LimitExceeded(f"{name}(…) as a list takes literal bounds (use it in FROM for longer series)",
                           position=position_of(sql, node, name), sqlstate="54000", limit=MAX_VALUE_SIZE)
        if abs((bounds[1] - bounds[0]) // step) > MAX_VALUE_SIZE:  # type: ignore[operator]
            raise LimitExceeded(f"{name}(…) as a list may have at most {MAX_VALUE_SIZE} elements "
                           "(use it in FROM for longer series)", position=position_of(sql, node, name),
                           sqlstate="54000", limit=MAX_VALUE_SIZE)
    elif name in FORMAT_FUNCTIONS:
        fmt = node.this if isinstance(node, exp.Format) else (node.expressions[0] if node.expressions else None)
        if not (isinstance(fmt, exp.Literal) and fmt.is_string) or re.search(r"\d{6,}", str(fmt.this)):
            raise LimitExceeded(f"{name}(…) takes a literal format without huge widths",
                           position=position_of(sql, node, name), sqlstate="54000", limit=MAX_VALUE_SIZE)
    for size in sizes:
        value = _integer(size)
        if value is None or value > MAX_VALUE_SIZE:
            raise LimitExceeded(f"{name}(…) takes a literal size of at most {MAX_VALUE_SIZE}",
                           position=position_of(sql, node, name), sqlstate="54000", limit=MAX_VALUE_SIZE)


def _integer(node: exp.Expr | None) -> int | None:
    if isinstance(node, exp.Paren):
        return _integer(node.this)
    if isinstance(node, exp.Neg):
        inner = _integer(node.this)
        return -inner if inner is not None else None
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(float(node.this))
        except ValueError:
            return None
    return None


class Calls:
    """The names each function node of one tree goes by, DuckDB's own included.

    sqlglot parses many functions into typed nodes (``exp.Repeat``, ``exp.CurrentSchema``…) whose
    generated DuckDB name may differ from what was written, so a refusal must check the name as
    *generated* too. Rendering each function's subtree on its own is quadratic (``OR`` and
    ``AND`` are functions: a chain re-renders itself once per link), so the names are collected
    from ONE rendering of the whole tree, by a generator that notes the leading call name of
    each function node it renders (:func:`calls_of`).
    """

    def __init__(self, generated: dict[int, str], created: list[tuple[exp.Expr, str]]) -> None:
        self._generated = generated  # id(node of the tree) -> generated call name
        self._created = created  # calls rendered from nodes the generator made itself
        self._class_names: dict[type[exp.Func], frozenset[str]] = {}

    def names(self, node: exp.Func) -> set[str]:
        """Every name ``node`` goes by: as written (anonymous), sqlglot's names, and as generated."""
        names: set[str] = set()
        if isinstance(node, exp.Anonymous):
            names.add(str(node.name).lower())
        else:
            cls = type(node)
            known = self._class_names.get(cls)
            if known is None:  # sql_names() rebuilds the names at each call: once per class
                known = self._class_names[cls] = frozenset(n.lower() for n in cls.sql_names())
            names.update(known)
        generated = self._generated.get(id(node))
        if generated is not None:
            names.add(generated)
        return names

    def name(self, node: exp.Func) -> str:
        """The name DuckDB will call for ``node`` (lower case)."""
        if isinstance(node, exp.Anonymous):
            return str(node.name).lower()
        generated = self._generated.get(id(node))
        return generated if generated is not None else sorted(self.names(node))[0]

    def check_generated(self, sql: str) -> None:
        """Refuse calls the generator rendered from nodes of its own making (a dialect transform
        rewriting a construct), placed at their nearest node of the tree."""
        for node, name in self._created:
            if refused_function(name):
                raise _refused(sql, node, name)


class _CallRecorder(DuckDBGenerator):
    """DuckDB's generator, noting the leading call name of every function node it renders."""

    def __init__(self) -> None:
        super().__init__(comments=False)
        self.calls: list[tuple[exp.Expr, str]] = []

    def sql(self, expression: str | exp.Expr | None, key: str | None = None, comment: bool = True) -> str:
        text = super().sql(expression, key, comment)
        if key is None and isinstance(expression, exp.Func) and not isinstance(expression, exp.Connector):
            generated = _CALL.match(text)
            if generated:
                self.calls.append((expression, generated.group(1).lower()))
        return text


def calls_of(tree: exp.Expr) -> Calls:
    """Render ``tree`` once as DuckDB SQL and note the name each function node generates."""
    copy, origin = _copy(tree)  # the generator rewrites what it renders: render a copy
    recorder = _CallRecorder()
    recorder.generate(copy, copy=False)
    generated: dict[int, str] = {}
    created: list[tuple[exp.Expr, str]] = []
    for node, name in recorder.calls:
        found = origin.get(id(node))
        if found is not None and found[1] is node:
            generated.setdefault(id(found[0]), name)
            continue
        parent = node.parent
        while parent is not None and (found := origin.get(id(parent))) is None:
            parent = parent.parent
        created.append((found[0] if parent is not None and found is not None else tree, name))
    return Calls(generated, created)


def _copy(tree: exp.Expr) -> tuple[exp.Expr, dict[int, tuple[exp.Expr, exp.Expr]]]:
    """A copy of ``tree`` for the generator, and id(copy node) → (its original, itself).

    Like ``Expr.copy`` without copying positions or comments (neither is rendered here: the
    checks report the original's position), which is what made copying slow; a parsed tree
    carries no types. Holding each copy node in the map keeps its id from being reused by a
    node the generator makes while the copy's own nodes are replaced."""
    root = tree.__class__()
    origin: dict[int, tuple[exp.Expr, exp.Expr]] = {}
    stack: list[tuple[exp.Expr, exp.Expr]] = [(tree, root)]
    while stack:
        node, copy = stack.pop()
        origin[id(copy)] = (node, copy)
        args = copy.args
        for key, value in node.args.items():
            if isinstance(value, exp.Expr):
                child = value.__class__()
                child.parent, child.arg_key = copy, key
                stack.append((value, child))
                args[key] = child
            elif type(value) is list:
                items: list[object] = []
                for i, item in enumerate(value):
                    if isinstance(item, exp.Expr):
                        child = item.__class__()
                        child.parent, child.arg_key, child.index = copy, key, i
                        stack.append((item, child))
                        items.append(child)
                    else:
                        items.append(item)
                args[key] = items
            else:
                args[key] = value
    return root, origin


def refused_function(name: str) -> bool:
    """Whether a function of this name reaches outside the query (or is govern's own masking)."""
    name = name.lower()
    return (name in REFUSED_FUNCTIONS or name.startswith(REFUSED_PREFIXES)
            or name.endswith(REFUSED_SUFFIXES))


def _count_parameters(placeholders: list[exp.Placeholder]) -> int:
    numbered = [int(str(node.this)) for node in placeholders if node.this is not None]
    if any(node.this is None for node in placeholders):
        raise SqlError("unexpected parameter marker", sqlstate="42601")
    count = max(numbered) if numbered else 0
    if count > MAX_PARAMETERS:
        raise LimitExceeded(f"at most {MAX_PARAMETERS} parameters", limit=MAX_PARAMETERS)
    if numbered and min(numbered) < 1:
        raise SqlError("parameters are numbered from $1", sqlstate="42601")
    return count


def position_of(sql: str, node: exp.Expr, name: str | None = None) -> int | None:
    """Best-effort character offset of ``node`` (or of the word ``name``) in ``sql``."""
    meta = getattr(node, "meta", None) or {}
    start = meta.get("start")
    if isinstance(start, int):
        return start
    starts = [m["start"] for child in node.walk()
              if isinstance((m := getattr(child, "meta", None) or {}).get("start"), int)]
    if starts:
        return min(starts)
    word = name or node.name
    if word:
        match = re.search(r"(?i)(?<![\w$])" + re.escape(str(word)) + r"(?![\w])", sql)
        if match:
            return match.start()
    return None
