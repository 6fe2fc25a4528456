"""The bypass corpus: ways an analyst might try to reach raw data through ``POST /v1/sql``.

Each attempt must end in a clear error (problem+json, a 4xx) or in masked data only — and no
response body or error text may contain a raw sensitive value of the demo data: real names,
e-mails, SSNs, phone numbers, exact birth dates (see ``Leaks`` in conftest). Attempts that
should blow up must hit the time, row or memory limit, not hang.

``{data}`` in an attempt is replaced by the demo world's raw Parquet file, ``{dir}`` by its folder.
"""

from __future__ import annotations

import json
import time

import duckdb
import pyarrow as pa
import pytest

from govern.sql.sandbox import Sandbox
from tests.sql.conftest import make_client

REFUSED = "refused"  # a 4xx problem+json with a detail
DATA = "data"  # 200, masked rows
LIMIT = "limit"  # 408 query-timeout or 413 limit-exceeded, quickly
ANY = "any"  # either refused or masked data: what matters is that nothing raw comes back

# Calls of govern's masking machinery (the DuckDB UDF the SQL form of ``tokenize`` uses, any
# ``govern_*`` function, HMAC, the reversal). Refused by name, whether or not the sandbox has them.
MASKING_CALLS = [
    ("tokenize-guess", "SELECT count(*) FROM patients WHERE patient_id = govern_tokenize('42')"),
    ("tokenize-dictionary", "SELECT p.patient_id, g.guess FROM patients p JOIN "
                            "(SELECT range AS guess FROM range(10000)) g ON p.patient_id = govern_tokenize(CAST(g.guess AS VARCHAR))"),
    ("tokenize-quoted", 'SELECT "govern_tokenize"(name) FROM patients'),
    ("tokenize-qualified", "SELECT system.main.govern_tokenize(name) FROM patients"),
    ("tokenize-method", "SELECT name.govern_tokenize() FROM patients"),
    ("tokenize-lambda", "SELECT list_transform(['1', '2'], x -> govern_tokenize(x))"),
    ("tokenize-table", "SELECT * FROM govern_tokenize('42')"),
    ("hash-guess", "SELECT govern_hash('Giulia François')"),
    ("hmac", "SELECT hmac('sha256', 'k', name) FROM patients"),
    ("reidentify", "SELECT reidentify(patient_id) FROM patients"),
    ("detokenize", "SELECT govern_reidentify(patient_id) FROM patients"),
]

CORPUS: list[tuple[str, str, str]] = [
    # -- table functions that read files or run other SQL --------------------------------------
    ("query", "SELECT * FROM query('SELECT * FROM read_parquet(''{data}'')')", REFUSED),
    ("query-table", "SELECT * FROM query_table('patients')", REFUSED),
    ("query-table-list", "SELECT * FROM query_table(['patients', 'encounters'])", REFUSED),
    ("read-parquet", "SELECT * FROM read_parquet('{data}')", REFUSED),
    ("read-parquet-list", "SELECT email FROM read_parquet(['{data}'])", REFUSED),
    ("read-csv", "SELECT * FROM read_csv('{data}')", REFUSED),
    ("read-csv-auto", "SELECT * FROM read_csv_auto('{data}')", REFUSED),
    ("read-json", "SELECT * FROM read_json('{data}')", REFUSED),
    ("glob", "SELECT * FROM glob('{dir}/*')", REFUSED),
    ("parquet-scan", "SELECT * FROM parquet_scan('{data}')", REFUSED),
    ("parquet-metadata", "SELECT * FROM parquet_metadata('{data}')", REFUSED),
    ("read-text", "SELECT content FROM read_text('{data}')", REFUSED),
    ("read-blob-scalar", "SELECT read_blob('{data}')", REFUSED),
    ("file-as-table", "SELECT * FROM '{data}'", REFUSED),
    ("file-in-join", "SELECT p.* FROM patients p JOIN '{data}' r USING (patient_id)", REFUSED),
    ("union-with-file", "SELECT name FROM patients UNION ALL SELECT name FROM read_parquet('{data}')", REFUSED),
    ("sniff-csv", "SELECT * FROM sniff_csv('{data}')", REFUSED),
    # -- system catalogs --------------------------------------------------------------------------
    ("duckdb-tables", "SELECT * FROM duckdb_tables()", REFUSED),
    ("duckdb-settings", "SELECT * FROM duckdb_settings()", REFUSED),
    ("duckdb-views", "SELECT sql FROM duckdb_views()", REFUSED),
    ("duckdb-views-no-parens", "SELECT * FROM duckdb_views", REFUSED),
    ("information-schema-tables", "SELECT * FROM information_schema.tables", REFUSED),
    ("information-schema-columns", "SELECT * FROM information_schema.columns", REFUSED),
    ("pg-class", "SELECT * FROM pg_catalog.pg_class", REFUSED),
    ("pg-tables", "SELECT * FROM pg_tables", REFUSED),
    ("sqlite-master", "SELECT * FROM sqlite_master", REFUSED),
    ("qualified-dataset", "SELECT * FROM main.patients", REFUSED),
    ("catalog-qualified", 'SELECT * FROM "memory"."main"."patients"', REFUSED),
    ("pg-typeof", "SELECT pg_typeof(email) FROM patients", REFUSED),
    # -- statements that are not queries ------------------------------------------------------------
    ("pragma", "PRAGMA show_tables", REFUSED),
    ("pragma-table-info", "PRAGMA table_info('patients')", REFUSED),
    ("set", "SET enable_external_access = true", REFUSED),
    ("set-python-replacements", "SET python_enable_replacements = true", REFUSED),
    ("reset", "RESET lock_configuration", REFUSED),
    ("attach", "ATTACH '{data}' AS raw", REFUSED),
    ("detach", "DETACH memory", REFUSED),
    ("copy-to", "COPY (SELECT * FROM patients) TO '{dir}/out.csv'", REFUSED),
    ("copy-from", "COPY patients FROM '{data}'", REFUSED),
    ("export", "EXPORT DATABASE '{dir}/export'", REFUSED),
    ("import", "IMPORT DATABASE '{dir}'", REFUSED),
    ("install", "INSTALL httpfs", REFUSED),
    ("load", "LOAD httpfs", REFUSED),
    ("call", "CALL pragma_table_info('patients')", REFUSED),
    ("checkpoint", "CHECKPOINT", REFUSED),
    ("describe", "DESCRIBE patients", REFUSED),
    ("summarize", "SUMMARIZE patients", REFUSED),
    ("show", "SHOW TABLES", REFUSED),
    ("explain", "EXPLAIN SELECT * FROM patients", REFUSED),
    ("create-view", "CREATE VIEW v AS SELECT * FROM read_parquet('{data}')", REFUSED),
    ("create-macro", "CREATE MACRO m() AS TABLE SELECT * FROM read_parquet('{data}')", REFUSED),
    ("insert", "INSERT INTO patients VALUES (1)", REFUSED),
    ("drop", "DROP TABLE patients", REFUSED),
    ("use", "USE memory", REFUSED),
    ("begin", "BEGIN TRANSACTION", REFUSED),
    # -- functions that reach outside -------------------------------------------------------------
    ("getenv", "SELECT getenv('HOME')", REFUSED),
    ("current-setting", "SELECT current_setting('enable_external_access')", REFUSED),
    ("getvariable", "SELECT getvariable('x')", REFUSED),
    ("json-execute", "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))", REFUSED),
    ("nextval", "SELECT nextval('s')", REFUSED),
    # -- govern's masking functions: tokens of guessed values would be a dictionary attack ------------
    *[(f"masking-{name}", sql, REFUSED) for name, sql in MASKING_CALLS],
    # -- Python variables DuckDB could find by name (replacement scans) ----------------------------
    *[(f"python-{name}", f"SELECT * FROM {name}", REFUSED) for name in (
        "raw", "ds", "dataset", "table", "governed", "reader", "result", "relation", "first",
        "batch", "scanner", "executor", "plan", "request", "entry", "sandbox", "prepared", "ref",
        "refs", "inputs", "out", "df",
    )],
    # -- comments, case, quoting, unicode -----------------------------------------------------------
    ("block-comment", "SELECT ssn /* the SSN */ FROM patients", REFUSED),
    ("line-comment-hides-statement", "SELECT email FROM patients -- ; SELECT * FROM read_parquet('{data}')", DATA),
    ("nested-comment", "SELECT 1 /* /* */ , getenv('HOME'), (SELECT name FROM read_parquet('{data}')) -- */", DATA),
    ("comment-between-keywords", "SEL/**/ECT * FROM patients", REFUSED),
    ("quoted-identifiers", 'SELECT "email", "name" FROM "patients"', DATA),
    ("quoted-upper-case", 'SELECT "EMAIL", "Name" FROM "PATIENTS"', DATA),
    ("mixed-case", "SeLeCt EmAiL, nAmE fRoM pAtIeNtS", DATA),
    ("quoted-withheld", 'SELECT "ssn" FROM "patients"', REFUSED),
    ("fullwidth-keyword", "ＳＥＬＥＣＴ * FROM patients", REFUSED),
    ("fullwidth-table", "SELECT * FROM ｐａｔｉｅｎｔｓ", REFUSED),
    ("zero-width-table", "SELECT * FROM pat\u200bients", REFUSED),
    ("zero-width-column", "SELECT ss\u200bn FROM patients", REFUSED),
    ("bidi-override", "SELECT email FROM patients WHERE region = '\u202eUE'", REFUSED),
    ("nul-byte", "SELECT email FROM patients\x00; SELECT * FROM read_parquet('{data}')", REFUSED),
    ("dollar-quoted", "SELECT $$ $$, * FROM read_parquet('{data}')", REFUSED),
    ("escaped-string", "SELECT E'\\x27' || (SELECT ssn FROM patients LIMIT 1)", REFUSED),
    # -- several statements ---------------------------------------------------------------------------
    ("two-statements", "SELECT 1; SELECT * FROM read_parquet('{data}')", REFUSED),
    ("statement-after-semicolon", "SELECT * FROM patients; DROP TABLE patients", REFUSED),
    ("set-then-read", "SET enable_external_access = true; SELECT * FROM '{data}'", REFUSED),
    # -- names that are not datasets -------------------------------------------------------------------
    ("internal-view-name", 'SELECT * FROM "__govern_00000000_0"', REFUSED),
    ("reserved-cte", "WITH __govern_x_0 AS (SELECT 1) SELECT * FROM __govern_x_0", REFUSED),
    ("cte-shadows-dataset", "WITH patients AS (SELECT * FROM read_parquet('{data}')) SELECT * FROM patients", REFUSED),
    ("unknown-table", "SELECT * FROM patients_raw", REFUSED),
    # -- withheld columns --------------------------------------------------------------------------------
    ("withheld-ssn", "SELECT ssn FROM patients", REFUSED),
    ("withheld-phone", "SELECT phone FROM patients", REFUSED),
    ("withheld-in-where", "SELECT email FROM patients WHERE ssn LIKE '4%'", REFUSED),
    ("withheld-in-exclude", "SELECT * EXCLUDE (ssn) FROM patients", REFUSED),
    ("withheld-qualified", "SELECT p.ssn FROM patients p", REFUSED),
    ("withheld-in-subquery", "SELECT (SELECT phone FROM patients LIMIT 1)", REFUSED),
    ("columns-regex", "SELECT COLUMNS('(ssn|phone|email|name)') FROM patients", DATA),
    ("columns-star", "SELECT COLUMNS(*) FROM patients", DATA),
    ("star", "SELECT * FROM patients", DATA),
    ("table-as-struct", "SELECT p FROM patients p", DATA),
    ("to-json-row", "SELECT to_json(p) FROM patients p", DATA),
    ("positional-columns", "SELECT #1, #2, #3, #4, #5, #6, #7, #8 FROM patients", DATA),
    ("alias-more-columns", "SELECT * FROM patients p(a, b, c, d, e, f, g, h, i, j)", REFUSED),
    ("struct-pack-star", "SELECT struct_pack(*) FROM patients", ANY),
    # -- masked columns wrapped, joined, grouped --------------------------------------------------------
    ("md5", "SELECT md5(email), md5(name) FROM patients", DATA),
    ("substr", "SELECT substr(name, 1, 100), substr(email, 1, 100) FROM patients", DATA),
    ("regexp-extract", "SELECT regexp_extract(email, '(.*)@', 1), regexp_replace(name, '.', 'x') FROM patients", DATA),
    ("string-functions", "SELECT reverse(email), upper(name), left(email, 50), strlen(email) FROM patients", DATA),
    ("cast-and-format", "SELECT CAST(birth_date AS VARCHAR), strftime(birth_date, '%Y-%m-%d') FROM patients", DATA),
    ("date-parts", "SELECT year(birth_date), month(birth_date), day(birth_date) FROM patients", DATA),
    ("self-join-masked", "SELECT a.email, b.name FROM patients a JOIN patients b ON a.email = b.email LIMIT 4000", DATA),
    ("self-join-masked-blowup", "SELECT a.email, b.name FROM patients a JOIN patients b ON a.email = b.email", LIMIT),
    ("group-by-masked", "SELECT email, name, count(*) FROM patients GROUP BY ALL", DATA),
    ("join-encounters", "SELECT * FROM encounters e JOIN patients p USING (patient_id)", DATA),
    ("list-aggregate", "SELECT string_agg(email, ','), list(name) FROM patients", DATA),
    ("unnest-list", "SELECT * FROM unnest((SELECT list(email) FROM patients))", DATA),
    ("values-subquery", "VALUES ((SELECT email FROM patients LIMIT 1))", DATA),
    ("nested-subqueries", "SELECT * FROM (SELECT * FROM (SELECT email, name, birth_date FROM patients) t) u", DATA),
    ("set-operations", "SELECT email FROM patients UNION ALL SELECT name FROM patients "
                       "INTERSECT SELECT name FROM patients EXCEPT SELECT zip FROM patients", DATA),
    ("lateral", "SELECT p.email, x.* FROM patients p, LATERAL (SELECT name FROM patients q "
                "WHERE q.patient_id = p.patient_id) x", DATA),
    ("sample", "SELECT * FROM patients USING SAMPLE 50%", DATA),
    ("error-echoes-value", "SELECT error(email) FROM patients", REFUSED),
    ("cast-error-echoes-value", "SELECT CAST(name AS INTEGER) FROM patients", REFUSED),
    ("strptime-echoes-value", "SELECT strptime(email, '%Y') FROM patients", REFUSED),
    ("json-error-echoes-value", "SELECT json_extract(email, '$.a') FROM patients", REFUSED),
    # -- blow-ups: must hit a limit, not hang -------------------------------------------------------------
    ("recursive-cte-forever", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                              "SELECT count(*) FROM r", LIMIT),
    ("recursive-over-dataset", "WITH RECURSIVE r(n, e) AS (SELECT 1, '' UNION ALL SELECT n + 1, "
                               "(SELECT max(email) FROM patients) FROM r) SELECT count(*) FROM r", LIMIT),
    ("cross-join", "SELECT count(*) FROM encounters a, encounters b, encounters c "
                   "WHERE a.cost + b.cost > c.cost", LIMIT),
    ("range-rows", "SELECT * FROM range(100000000)", LIMIT),
    ("generate-series-rows", "SELECT * FROM generate_series(1, 100000000), patients", LIMIT),
    ("string-explosion", "SELECT max(length(repeat(email, 100000000))) FROM patients", LIMIT),
    ("pad-explosion", "SELECT lpad(email, 2000000000, 'x') FROM patients", LIMIT),
    ("list-explosion", "SELECT len(range(3000000000)), unnest(range(1000000000))", LIMIT),
    ("format-explosion", "SELECT printf('%2000000000d', 1)", LIMIT),
]


@pytest.fixture
def sql_client(world):
    with make_client(world, sql_timeout=2.0, max_rows=5000, sql_memory_limit="256MB") as c:
        yield c


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40
    assert len({name for name, _, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("name,sql,expect", CORPUS, ids=[c[0] for c in CORPUS])
def test_bypass_attempt(sql_client, world, leaks, name, sql, expect) -> None:
    text = sql.replace("{data}", str(world.directory / "data" / "patients.parquet")).replace(
        "{dir}", str(world.directory / "data"))
    start = time.monotonic()
    response = sql_client.post("/v1/sql", json={"sql": text, "format": "json"},
                               headers={**world.auth("alice"), "X-Purpose": "analytics"})
    elapsed = time.monotonic() - start
    body = response.text
    leaks.assert_none(body, json.dumps(response.json(), ensure_ascii=False) if body.startswith("{") else "")
    assert "Traceback" not in body and str(world.directory) not in body
    if expect == DATA or (expect == ANY and response.status_code == 200):
        assert response.status_code == 200, body
        doc = response.json()
        assert doc["row_count"] == len(doc["rows"])
        return
    assert response.headers["content-type"] == "application/problem+json", body
    problem = response.json()
    assert problem["detail"] and problem["type"].startswith("urn:govern:problem:")
    if expect == LIMIT:
        assert response.status_code in (408, 413), body
        assert elapsed < 30
    else:
        assert 400 <= response.status_code < 500, body
        assert response.status_code not in (408, 413), body


@pytest.mark.parametrize("name,sql", MASKING_CALLS, ids=[c[0] for c in MASKING_CALLS])
def test_masking_functions_are_refused_by_the_validator(sql_client, world, name, sql) -> None:
    """Refused by name (42501, "not allowed"), not merely missing from this sandbox: an engine
    that one day registers ``govern_tokenize`` on the query's connection stays closed."""
    r = sql_client.post("/v1/sql", json={"sql": sql}, headers={**world.auth("alice"), "X-Purpose": "analytics"})
    assert r.status_code == 400 and r.json()["type"] == "urn:govern:problem:invalid-sql", r.text
    assert "is not allowed" in r.json()["detail"]


def test_tokenize_udf_would_compute_the_tokens_analysts_see(sql_client, world, governor) -> None:
    """Why the refusal matters: the UDF with the gateway's key turns a guessed id into exactly
    the token in alice's masked view — a dictionary attack on tokenized columns."""
    from govern.mask.functions import register_duckdb_udfs
    from tests.sql.conftest import principal

    r = sql_client.post("/v1/sql", json={"sql": "SELECT patient_id FROM patients ORDER BY patient_id LIMIT 5"},
                        headers={**world.auth("alice"), "X-Purpose": "analytics"})
    tokens = {row[0] for row in r.json()["rows"]}
    raw = governor.reidentify(principal(governor, "carol"), "patients", "governance", sorted(tokens))
    con = duckdb.connect()
    try:
        register_duckdb_udfs(con, governor.keys)
        guessed = {con.execute("SELECT govern_tokenize(?, 'patient')", [v]).fetchone()[0] for v in raw.values}
    finally:
        con.close()
    assert guessed == tokens


def test_data_answers_are_masked_for_every_principal(sql_client, world, leaks) -> None:
    """The data-returning attempts, again as bob (all regions, SSN partly shown)."""
    for name, sql, expect in CORPUS:
        if expect != DATA:
            continue
        r = sql_client.post("/v1/sql", json={"sql": sql.replace("{data}", "x"), "format": "csv"},
                            headers={**world.auth("bob"), "X-Purpose": "model-training"})
        leaks.assert_none(r.text)
        assert r.status_code in (200, 400, 413), (name, r.text)  # bob sees 2,000 patients: row cap


def test_raw_data_in_python_variables_is_not_reachable() -> None:
    """Defence in depth below the validator: in the sandbox, DuckDB does not resolve names to
    Python variables (it does by default — the first half proves the check means something)."""
    raw_patients = pa.table({"ssn": ["454-53-7383"]})  # noqa: F841 - found by name, or not
    plain = duckdb.connect()
    assert plain.sql("SELECT ssn FROM raw_patients").fetchall() == [("454-53-7383",)]
    sandbox = Sandbox(memory_limit="64MB", threads=1, timeout=5)
    try:
        with pytest.raises(duckdb.CatalogException):
            sandbox.query("SELECT ssn FROM raw_patients", None).fetchall()
        settings = dict(sandbox.query(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
            "'python_enable_replacements', 'lock_configuration', 'autoload_known_extensions', "
            "'autoinstall_known_extensions')", None).fetchall())
        assert settings == {"enable_external_access": "false", "python_enable_replacements": "false",
                            "lock_configuration": "true", "autoload_known_extensions": "false",
                            "autoinstall_known_extensions": "false"}
        for statement in ("SET enable_external_access = true", "SET python_enable_replacements = true",
                          "RESET lock_configuration"):
            with pytest.raises(duckdb.Error):
                sandbox.query(statement, None)
    finally:
        sandbox.close()
