"""The passes on their own: validate (refusals with messages and positions), resolve (which
references are streamed or materialized, and the SQL the sandbox runs), prune (columns and
pushed filters), diagnose (DuckDB errors without data). Input/expected pairs with titles."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from govern.errors import LimitExceeded, SqlError
from govern.sql import prune, resolve
from govern.sql.diagnose import diagnose
from govern.sql.validate import validate

# (title, sql, start of the message, position of the offending text)
REFUSALS = [
    ("empty", "  ", "the SQL text is empty", 0),
    ("two statements", "SELECT 1; SELECT 2", "send exactly one statement", 10),
    ("pragma", "PRAGMA show_tables", "PRAGMA statements are not allowed", 0),
    ("reset", "  RESET threads", "RESET statements are not allowed", 2),
    ("export (sqlglot cannot parse it)", "EXPORT DATABASE 'x'", "EXPORT statements are not allowed", 0),
    ("ddl inside parentheses", "(CREATE TABLE x AS SELECT 1)", "CREATE statements are not allowed", 1),
    ("table function", "SELECT * FROM patients, read_csv('x')", "table function 'read_csv' is not allowed", 24),
    ("system catalog", "SELECT * FROM information_schema.tables", "qualified name 'information_schema.tables'", 14),
    ("scalar escape", "SELECT 1 + length(getenv('HOME'))", "function 'getenv' is not allowed", 18),
    ("duckdb_ prefix", "SELECT * FROM range(3) WHERE duckdb_x() > 0", "function 'duckdb_x' is not allowed", 29),
    ("zero-width space", "SELECT 1\u200b", "invisible or control character U+200B", 8),
    ("named parameter", "SELECT $name", "named parameters are not supported", None),
    ("mixed parameters", "SELECT $1, ?", "do not mix $n and ? parameters", 11),
    ("syntax error", "SELECT a b c FROM t", "syntax error: Invalid expression / Unexpected token", 11),
    ("unterminated string", "SELECT 'abc", "cannot read the SQL text", None),
    ("position after a renumbered ?", "SELECT ?, read_text(?)", "function 'read_text' is not allowed", 10),
    # govern's masking UDFs: on guessed values they would compute tokens (a dictionary attack)
    ("tokenize UDF", "SELECT govern_tokenize(name) FROM patients", "function 'govern_tokenize' is not allowed", 7),
    ("tokenize UDF, quoted", 'SELECT "GOVERN_TOKENIZE"(\'42\')', "function 'govern_tokenize' is not allowed", 7),
    ("tokenize UDF, qualified", "SELECT main.govern_tokenize('42')", "function 'govern_tokenize' is not allowed", 12),
    ("tokenize UDF, method call", "SELECT ('42').govern_tokenize()", "function 'govern_tokenize' is not allowed", 14),
    ("tokenize UDF in a lambda", "SELECT list_transform(['1', '2'], x -> govern_tokenize(x))",
     "function 'govern_tokenize' is not allowed", 39),
    ("any govern_ function", "SELECT govern_hash(1)", "function 'govern_hash' is not allowed", 7),
    ("reversal", "SELECT reidentify(patient_id) FROM patients", "function 'reidentify' is not allowed", 7),
    ("hmac", "SELECT hmac_sha256('k', '1')", "function 'hmac_sha256' is not allowed", 7),
    ("tokenize UDF as a table", "SELECT * FROM govern_tokenize('42')", "table function 'govern_tokenize' is not allowed", 14),
]


@pytest.mark.parametrize("title,sql,message,position", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(title, sql, message, position) -> None:
    with pytest.raises(SqlError) as info:
        validate(sql, max_length=1_000)
    assert info.value.detail.startswith(message), info.value.detail
    assert info.value.extra.get("position") == position


# (title, sql) — functions that build one value of a requested size
SIZES = [
    ("repeat of a column", "SELECT repeat(email, 3) FROM patients"),
    ("nested repeat", "SELECT repeat(repeat('x', 1000), 1000)"),
    ("huge pad", "SELECT lpad(zip, 2000000000, '0') FROM patients"),
    ("range as a list", "SELECT range(1000000000)"),
    ("list_resize fill", "SELECT list_resize([], 5, repeat('x', 5))"),
    ("printf width", "SELECT printf('%2000000000d', 1)"),
]


@pytest.mark.parametrize("title,sql", SIZES, ids=[s[0] for s in SIZES])
def test_value_sizes_are_bounded(title, sql) -> None:
    with pytest.raises(LimitExceeded):
        validate(sql, max_length=1_000)


def test_what_is_allowed() -> None:
    for sql in ("FROM patients", "VALUES (1), (2)", "(SELECT 1) UNION ALL (SELECT 2)", "SELECT * FROM range(10)",
                "SELECT lpad(zip, 5, '0'), repeat('-', 20), range(5) FROM patients",
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
                "SELECT 1; ", "SELECT /* ; */ 1 -- trailing"):
        validate(sql, max_length=1_000)
    statement = validate("FROM range(?) SELECT ? + 1", max_length=1_000)
    assert statement.parameters == 2
    # ? are numbered as written, so regenerating FROM-first SQL keeps their meaning
    assert statement.tree.sql(dialect="duckdb") == "SELECT $2 + 1 FROM RANGE(0, $1)"


# -- resolve -------------------------------------------------------------------------------------
READABLE = {"patients": "patients", "encounters": "encounters"}


def bound(sql: str) -> list[resolve.Reference]:
    return resolve.bind(validate(sql, max_length=10_000), READABLE, "analytics")


MATERIALIZED = [
    ("a table named once is streamed", "SELECT * FROM patients", [False]),
    ("a self-join reads two streams", "SELECT * FROM patients a JOIN patients b USING (zip)", [False, False]),
    ("a CTE used once", "WITH c AS (SELECT * FROM patients) SELECT * FROM c", [False]),
    ("a CTE used twice", "WITH c AS (SELECT * FROM patients) SELECT * FROM c a, c b", [True]),
    ("a CTE used by a CTE used twice",
     "WITH c AS (SELECT * FROM encounters), d AS (SELECT * FROM c) SELECT * FROM d x, d y", [True]),
    ("a recursive CTE", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r "
                        "WHERE n < (SELECT count(*) FROM patients)) SELECT * FROM r", [True]),
]


@pytest.mark.parametrize("title,sql,materialize", MATERIALIZED, ids=[m[0] for m in MATERIALIZED])
def test_materialize_only_what_may_be_scanned_twice(title, sql, materialize) -> None:
    assert [r.materialize for r in bound(sql)] == materialize


def test_rewrite_points_each_reference_at_its_view() -> None:
    statement = validate("SELECT p.zip, patients.region /* hi */ FROM patients JOIN patients p USING (zip)",
                         max_length=1_000)
    refs = resolve.bind(statement, READABLE, "analytics")
    sql = resolve.rewrite(statement, refs)
    a, b = (r.view for r in refs)
    assert sql == f'SELECT p.zip, patients.region FROM "{a}" AS patients JOIN "{b}" AS p USING (zip)'


def test_names_that_are_not_datasets() -> None:
    with pytest.raises(SqlError, match="table 'Nope' does not exist or is not readable under purpose 'analytics'"):
        bound("SELECT * FROM Nope")
    with pytest.raises(SqlError, match="files and URLs cannot be read"):
        bound("SELECT * FROM 's3://bucket/patients.parquet'")
    with pytest.raises(SqlError, match="CTE name 'patients' is the name of a dataset"):
        bound("WITH patients AS (SELECT 1) SELECT * FROM patients")
    assert [r.dataset for r in bound('SELECT * FROM "PATIENTS", Encounters')] == ["patients", "encounters"]


# -- prune ---------------------------------------------------------------------------------------
SCHEMAS = {
    "patients": pa.schema([("patient_id", pa.string()), ("zip", pa.string()), ("region", pa.string()),
                           ("charges", pa.float64()), ("birth_date", pa.date32())]),
    "encounters": pa.schema([("patient_id", pa.string()), ("cost", pa.float64()), ("department", pa.string())]),
}
PUSHDOWN = [
    ("comparison with a literal", "SELECT zip FROM patients WHERE charges > 10",
     [(["zip", "charges"], ['"charges" > 10'])]),
    ("several conjuncts, one table each",
     "SELECT 1 FROM patients p JOIN encounters e USING (patient_id) WHERE p.region IN ('EU', 'US') AND e.cost < 5 "
     "AND (p.zip LIKE '1%' OR p.zip IS NULL)",
     [(["patient_id", "zip", "region"], ["\"region\" IN ('EU', 'US')", "\"zip\" LIKE '1%' OR \"zip\" IS NULL"]),
      (["patient_id", "cost"], ['"cost" < 5'])]),
    ("a conjunct over two tables is not pushed",
     "SELECT 1 FROM patients p JOIN encounters e USING (patient_id) WHERE p.charges > e.cost",
     [(["patient_id", "charges"], []), (["patient_id", "cost"], [])]),
    ("nullable side of a LEFT JOIN", "SELECT 1 FROM patients p LEFT JOIN encounters e USING (patient_id) "
                                     "WHERE e.cost IS NULL AND p.zip = '1'",
     [(["patient_id", "zip"], ["\"zip\" = '1'"]), (["patient_id", "cost"], [])]),
    ("a string compared with a date stays in DuckDB", "SELECT 1 FROM patients WHERE birth_date > '2000-01-01'",
     [(["birth_date"], [])]),
    ("functions stay in DuckDB", "SELECT 1 FROM patients WHERE lower(region) = 'eu' AND zip = upper('x')",
     [(["zip", "region"], [])]),
    ("a LIKE with an escape stays in DuckDB", "SELECT 1 FROM patients WHERE zip LIKE 'a\\_%'", [(["zip"], [])]),
    ("parameters are bound as literals", "SELECT 1 FROM patients WHERE zip = $1 AND charges > $2",
     [(["zip", "charges"], ["\"zip\" = 'x'", '"charges" > 2.5'])]),
]


@pytest.mark.parametrize("title,sql,expected", PUSHDOWN, ids=[p[0] for p in PUSHDOWN])
def test_columns_and_pushdown(title, sql, expected) -> None:
    statement = validate(sql, max_length=1_000)
    refs = resolve.bind(statement, READABLE, "analytics")
    usage = prune.analyze(statement.tree, refs, SCHEMAS, ["x", 2.5])
    assert usage is not None
    assert [(usage.columns[r.index], usage.filters.get(r.index, [])) for r in refs] == expected


@pytest.mark.parametrize("sql", [
    "SELECT * FROM patients NATURAL JOIN encounters", "SELECT COLUMNS('z.*') FROM patients",
    "SELECT #1 FROM patients", "SELECT p FROM patients p", "SELECT a FROM patients p(a)",
    "SELECT * EXCLUDE (zip) FROM patients", "VALUES ((SELECT zip FROM patients LIMIT 1))",
])
def test_whole_table_constructs_read_every_column(sql) -> None:
    statement = validate(sql, max_length=1_000)
    assert prune.analyze(statement.tree, resolve.bind(statement, READABLE, "analytics"), SCHEMAS, []) is None


# -- diagnose --------------------------------------------------------------------------------------
def duckdb_error(sql: str) -> duckdb.Error:
    con = duckdb.connect()
    con.register("__govern_00ff_0", pa.table({"email": ["*@example.org"]}))
    try:
        con.sql(sql).fetchall()
    except duckdb.Error as exc:
        return exc
    raise AssertionError("no error")


DIAGNOSES = [
    ("column", "SELECT ssn FROM __govern_00ff_0 AS p", "column 'ssn' does not exist (unknown, or withheld "
                                                        "under purpose 'analytics')"),
    ("suggestions are dropped", "SELECT foo(1)", "function 'foo' does not exist"),
    ("internal names are hidden", "SELECT email + 1 FROM __govern_00ff_0",
     "binder error: No function matches the given name and argument types '+(VARCHAR, INTEGER_LITERAL)'. "
     "You might need to add explicit type casts."),
    ("conversion: values are blanked", "SELECT CAST(email AS INT) FROM __govern_00ff_0",
     "conversion error: Could not convert string '…' to INT32 when casting from source column email"),
    ("range: numbers are blanked", "SELECT 300::INTEGER::TINYINT",
     "conversion error: Type INT32 with value … can't be cast because the value is out of range for the "
     "destination type INT8"),
    ("runtime errors say nothing of the value", "SELECT error(email) FROM __govern_00ff_0",
     "invalid input error: the query failed on a value (details are not shown: they could quote data)"),
]


@pytest.mark.parametrize("title,sql,message", DIAGNOSES, ids=[d[0] for d in DIAGNOSES])
def test_diagnose(title, sql, message) -> None:
    error = diagnose(duckdb_error(sql), text=sql, datasets={0: "patients"}, purpose="analytics",
                     timed_out=False, timeout=1.0, memory_limit="1GB")
    assert isinstance(error, SqlError)
    assert error.detail == message
    assert "__govern" not in error.detail and "*@example.org" not in error.detail


def test_references_are_capped() -> None:
    sql = " UNION ALL ".join(["SELECT zip FROM patients"] * (resolve.MAX_REFERENCES + 1))
    with pytest.raises(LimitExceeded, match="at most 100 times"):
        bound(sql)
