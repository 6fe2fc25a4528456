"""SqlEngine: analysts' queries return exactly what DuckDB would return over the whole masked
views; only the columns a query uses are read; filters are pushed down when that is exact;
limits hold; errors carry positions."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import LimitExceeded, PurposeNotEntitled, QueryTimeout, SqlError
from govern.mask.execute_arrow import scan_columns
from govern.sql import SqlEngine
from tests.sql.conftest import masked_reference, principal, rows

# Typical analyst queries. Each must give the same rows as plain DuckDB over the full masked views.
ANALYST_QUERIES = [
    # aggregates
    ("count-by-region", "SELECT region, count(*) AS n FROM patients GROUP BY region"),
    ("avg-by-diagnosis", "SELECT diagnosis, avg(charges) AS avg_charges FROM patients GROUP BY ALL"),
    ("cost-by-department", "SELECT department, sum(cost), min(date), max(date) FROM encounters GROUP BY 1"),
    # joins
    ("join-aggregate", "SELECT p.region, e.department, count(*) AS visits, avg(e.cost) AS avg_cost "
                       "FROM patients p JOIN encounters e ON p.patient_id = e.patient_id GROUP BY ALL"),
    ("join-using-filtered", "SELECT p.zip, sum(e.cost) FROM patients p JOIN encounters e USING (patient_id) "
                            "WHERE e.cost > 500 AND p.zip LIKE '1%' GROUP BY p.zip"),
    ("left-join-is-null", "SELECT count(*) FROM patients p LEFT JOIN encounters e "
                          "ON p.patient_id = e.patient_id AND e.cost > 9000 WHERE e.cost IS NULL"),
    ("right-join", "SELECT count(*) FROM patients p RIGHT JOIN encounters e ON p.patient_id = e.patient_id "
                   "WHERE p.zip IS NULL OR p.zip < '5'"),
    ("full-join", "SELECT count(*) FROM patients p FULL JOIN encounters e ON p.patient_id = e.patient_id "
                  "WHERE p.charges > 100 OR e.cost IS NULL"),
    ("self-join", "SELECT count(*) FROM patients a JOIN patients b ON a.zip = b.zip AND a.patient_id <> b.patient_id "
                  "WHERE a.birth_date >= DATE '1980-01-01' AND b.charges BETWEEN 100 AND 5000"),
    # windows
    ("running-total", "SELECT department, date, encounter_id, sum(cost) OVER (PARTITION BY department "
                      "ORDER BY date, encounter_id ROWS UNBOUNDED PRECEDING) AS running FROM encounters"),
    ("top-per-region", "SELECT zip, region, charges FROM patients "
                       "QUALIFY row_number() OVER (PARTITION BY region ORDER BY charges DESC, zip) <= 3"),
    # CTEs, subqueries, set operations
    ("cte-used-twice", "WITH c AS (SELECT region, charges FROM patients WHERE charges > 1000) "
                       "SELECT a.region, count(*) FROM c a JOIN c b USING (region) GROUP BY 1"),
    ("recursive-cte", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r "
                      "WHERE n < (SELECT count(*) FROM encounters WHERE cost > 9000)) SELECT max(n) FROM r"),
    ("correlated", "SELECT count(*) FROM encounters e WHERE cost > "
                   "(SELECT avg(cost) FROM encounters e2 WHERE e2.department = e.department)"),
    ("lateral", "SELECT count(*), sum(m) FROM patients p, "
                "LATERAL (SELECT max(cost) AS m FROM encounters e WHERE e.patient_id = p.patient_id)"),
    ("union", "SELECT region FROM patients UNION SELECT region FROM encounters"),
    ("except", "SELECT zip FROM patients EXCEPT SELECT zip FROM patients WHERE zip < '5'"),
    # DuckDB conveniences that depend on whole tables (read every visible column)
    ("star", "SELECT * FROM patients"),
    ("star-exclude", "SELECT * EXCLUDE (name, email) FROM patients WHERE charges < 3000"),
    ("natural-join", "SELECT * FROM patients NATURAL JOIN encounters"),
    ("columns-regex", "SELECT COLUMNS('c.*') FROM patients"),
    ("table-as-struct", "SELECT p FROM patients p WHERE p.zip > '5'"),
    ("positional", "SELECT #2, #3 FROM encounters"),
    ("alias-list", "SELECT a, b FROM encounters e(a, b) WHERE a > 10"),
    ("from-first", "FROM patients SELECT zip WHERE NOT (zip = '147' OR zip > '900')"),
    # masked columns inside functions: still masked values
    ("md5-of-masked", "SELECT md5(email) AS h, count(*) FROM patients GROUP BY 1"),
    ("year-of-masked", "SELECT year(birth_date) AS y, count(*) FROM patients WHERE birth_date > DATE '1990-01-01' "
                       "GROUP BY y"),
    ("dates", "SELECT count(*) FROM encounters WHERE date BETWEEN DATE '2020-01-01' AND DATE '2021-01-01' "
              "AND department <> 'Oncology'"),
]
WHO = [("alice", "analytics"), ("bob", "model-training"), ("dave", "treatment")]


@pytest.mark.parametrize("who,purpose", WHO)
@pytest.mark.parametrize("title,sql", ANALYST_QUERIES, ids=[t for t, _ in ANALYST_QUERIES])
def test_queries_return_exactly_the_masked_views(engine, governor, who, purpose, title, sql) -> None:
    if who == "bob" and "diagnosis" in sql:
        pytest.skip("bob never sees PHI: diagnosis is withheld (tested below)")
    result = engine.run(principal(governor, who), purpose, sql)
    got = result.reader.read_all()
    want = masked_reference(governor, who, purpose, sql)
    assert got.num_rows == want.num_rows
    assert rows(got) == rows(want)
    assert got.schema.names == want.schema.names


def test_result_carries_datasets_and_plan_hashes(engine, governor) -> None:
    alice = principal(governor, "alice")
    result = engine.run(alice, "analytics", "SELECT p.region, e.cost FROM patients p JOIN encounters e USING (patient_id)")
    assert result.datasets == ["encounters", "patients"]
    assert result.plans == {name: governor.plan(alice, name, "analytics").hash for name in result.datasets}
    assert result.columns == {"patients": ["patient_id", "region"], "encounters": ["patient_id", "cost"]}
    assert result.schema == result.reader.schema
    result.reader.read_all()
    result.close()
    result.close()  # idempotent


def test_withheld_column_does_not_exist(engine, governor) -> None:
    for sql, name in [("SELECT ssn FROM patients", "ssn"), ("SELECT p.phone FROM patients p", "phone"),
                      ("SELECT count(*) FROM patients WHERE ssn IS NOT NULL", "ssn")]:
        with pytest.raises(SqlError) as info:
            engine.run(principal(governor, "alice"), "analytics", sql)
        assert info.value.detail == (f"column '{name}' does not exist (unknown, or withheld under purpose "
                                     "'analytics')")
        assert sql[info.value.extra["position"]:].startswith(name)
        assert info.value.extra["sqlstate"] == "42703"
    with pytest.raises(SqlError, match="column 'diagnosis' does not exist"):
        engine.run(principal(governor, "bob"), "model-training", "SELECT diagnosis FROM patients")


def test_star_expands_to_visible_columns_only(engine, governor) -> None:
    result = engine.run(principal(governor, "alice"), "analytics", "SELECT * FROM patients")
    assert result.schema.names == ["patient_id", "name", "email", "birth_date", "zip", "region", "diagnosis",
                                   "charges"]
    assert engine.tables(principal(governor, "alice"), "analytics")["patients"].names == result.schema.names


def test_unknown_or_unreadable_table_is_the_same_error(engine, governor, world) -> None:
    from tests.conftest import edit

    edit(world.directory / "policies" / "policy.csv", "p, analyst, group:clinical, read, analytics, allow",
         "p, analyst, dataset:patients, read, analytics, allow")
    gov = Governor(load_settings(world.config, watch_policies=False))
    eng = SqlEngine(gov, gov.settings)
    errors = []
    for name in ("encounters", "nosuchtable"):
        with pytest.raises(SqlError) as info:
            eng.run(principal(gov, "alice"), "analytics", f"SELECT * FROM {name}")
        errors.append(info.value.detail.replace(name, "X"))
        assert info.value.extra == {"position": 14, "sqlstate": "42P01"}
    assert errors[0] == errors[1] == "table 'X' does not exist or is not readable under purpose 'analytics'"


def test_purpose_must_be_entitled(engine, governor) -> None:
    with pytest.raises(PurposeNotEntitled):
        engine.run(principal(governor, "alice"), "treatment", "SELECT 1")
    with pytest.raises(PurposeNotEntitled):
        engine.tables(principal(governor, "eve"), "analytics")


# -- pushdown ----------------------------------------------------------------------------------
class SpyGovernor(Governor):
    """The real Governor, recording what each governed read was asked for and what it scanned."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[dict] = []

    def read(self, principal, dataset, purpose, **kwargs):  # type: ignore[no-untyped-def, override]
        result = super().read(principal, dataset, purpose, **kwargs)
        self.reads.append({"dataset": dataset, "columns": kwargs.get("columns"), "filter": kwargs.get("filter"),
                           "scanned": set(scan_columns(result.plan, result.request))})
        return result


@pytest.fixture
def spy(world) -> SpyGovernor:
    return SpyGovernor(load_settings(world.config, watch_policies=False))


def test_only_the_columns_used_are_read(spy) -> None:
    engine = SqlEngine(spy, spy.settings)
    # bob: no row filter, region and department are kept as is → exactly those two raw columns.
    result = engine.run(principal(spy, "bob"), "model-training",
                        "SELECT region, count(*) FROM encounters WHERE department = 'Oncology' GROUP BY region")
    result.reader.read_all()
    (read,) = spy.reads
    assert read["columns"] == ["department", "region"]
    assert read["scanned"] == {"department", "region"}
    assert read["filter"] == "(\"department\" = 'Oncology')"
    # alice: + the row-filter column (region) that the plan needs, nothing else.
    spy.reads.clear()
    engine.run(principal(spy, "alice"), "analytics", "SELECT department, avg(cost) FROM encounters GROUP BY 1").reader.read_all()
    (read,) = spy.reads
    assert read["columns"] == ["department", "cost"]
    assert read["scanned"] == {"department", "cost", "region"}


def test_count_star_reads_one_unmasked_column(spy) -> None:
    engine = SqlEngine(spy, spy.settings)
    table = engine.run(principal(spy, "bob"), "model-training", "SELECT count(*) AS n FROM patients").reader.read_all()
    assert table.to_pylist() == [{"n": 2000}]
    assert spy.reads[0]["columns"] == ["region"]  # kept as is; patient_id would cost an HMAC per row
    spy.reads.clear()
    engine.run(principal(spy, "bob"), "model-training", "SELECT count(*) FROM encounters").reader.read_all()
    assert spy.reads[0]["columns"] == ["encounter_id"]  # kept, and an integer: no strings to copy


def test_pushdown_per_reference_and_never_across_outer_joins(spy) -> None:
    engine = SqlEngine(spy, spy.settings)
    bob = principal(spy, "bob")
    engine.run(bob, "model-training",
               "SELECT count(*) FROM patients a JOIN patients b ON a.zip = b.zip "
               "WHERE a.birth_date >= DATE '1980-01-01' AND b.charges BETWEEN 100 AND 5000").reader.read_all()
    assert [(r["dataset"], r["columns"], r["filter"]) for r in spy.reads] == [
        ("patients", ["birth_date", "zip"], "(\"birth_date\" >= CAST('1980-01-01' AS DATE))"),
        ("patients", ["zip", "charges"], "(\"charges\" BETWEEN 100 AND 5000)"),
    ]
    spy.reads.clear()
    engine.run(bob, "model-training",
               "SELECT count(*) FROM patients p LEFT JOIN encounters e ON p.patient_id = e.patient_id "
               "WHERE e.cost IS NULL AND p.charges > 10").reader.read_all()
    assert {r["dataset"]: r["filter"] for r in spy.reads} == {"patients": "(\"charges\" > 10)", "encounters": None}


def test_pushdown_binds_parameters_as_literals(spy) -> None:
    engine = SqlEngine(spy, spy.settings)
    sql = "SELECT count(*) AS n FROM encounters WHERE department = ? AND cost > ? AND date >= ?"
    got = engine.run(principal(spy, "bob"), "model-training", sql, ["Oncology", 100, "2020-01-01"]).reader.read_all()
    # a string compared with a date is left to DuckDB (its casts are not Arrow's)
    assert spy.reads[0]["filter"] == "(\"department\" = 'Oncology') AND (\"cost\" > 100)"
    want = masked_reference(spy, "bob", "model-training",
                            "SELECT count(*) AS n FROM encounters WHERE department = 'Oncology' AND cost > 100 "
                            "AND date >= DATE '2020-01-01'")
    assert got.equals(want)


def test_filters_on_masked_columns_see_masked_values(engine, governor) -> None:
    alice = principal(governor, "alice")
    # name is a keyed pseudonym ("k1:" + 32 hex) for alice: a filter on a real name matches nothing …
    real = engine.run(alice, "analytics", "SELECT count(*) AS n FROM patients WHERE name = 'Giulia François'")
    assert real.reader.read_all().to_pylist() == [{"n": 0}]
    # … and the masked values are what every row she may see holds.
    masked = engine.run(alice, "analytics", "SELECT count(*) AS n FROM patients WHERE name LIKE 'k1:%'")
    assert masked.reader.read_all().to_pylist() == [{"n": 679}]


# -- parameters, describe, tables -----------------------------------------------------------------
def test_parameters_are_typed_values(engine, governor) -> None:
    bob = principal(governor, "bob")
    injection = "EU' OR '1'='1"
    got = engine.run(bob, "model-training", "SELECT count(*) AS n FROM patients WHERE region = $1", [injection])
    assert got.reader.read_all().to_pylist() == [{"n": 0}]
    got = engine.run(bob, "model-training", "FROM range(?) SELECT ? + 1 AS x LIMIT 1", [5, 41])
    assert got.reader.read_all().to_pylist() == [{"x": 42}]
    with pytest.raises(SqlError, match="1 parameter"):
        engine.run(bob, "model-training", "SELECT $1", [])
    with pytest.raises(SqlError, match=r"parameter \$1 must be"):
        engine.run(bob, "model-training", "SELECT $1", [{"a": 1}])


def test_describe_reads_no_data(spy) -> None:
    engine = SqlEngine(spy, spy.settings)
    schema = engine.describe(principal(spy, "alice"), "analytics",
                             "SELECT region, count(*) AS n, avg(charges) AS c, $1 AS p FROM patients GROUP BY 1")
    # a parameter without a value is bound as NULL (its type is known once values are given)
    assert schema == pa.schema([("region", pa.string()), ("n", pa.int64()), ("c", pa.float64()), ("p", pa.null())])
    assert spy.reads == []  # no governed read at all: views are empty tables of the masked schema
    assert engine.describe(principal(spy, "alice"), "analytics", "SELECT 1 AS a, 2 AS a").names == ["a", "a"]


def test_tables_are_the_masked_schemas(engine, governor) -> None:
    tables = engine.tables(principal(governor, "bob"), "model-training")
    assert set(tables) == {"patients", "encounters"}
    assert "diagnosis" not in tables["patients"].names and "phone" not in tables["patients"].names
    assert tables["patients"].field("patient_id").type == pa.string()  # tokenized
    assert tables["patients"].field("ssn").type == pa.string()  # show_last


# -- limits ----------------------------------------------------------------------------------------
def test_timeout_interrupts(world) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False, sql_timeout=0.5))
    engine = SqlEngine(gov, gov.settings)
    start = time.monotonic()
    with pytest.raises(QueryTimeout) as info:
        engine.run(principal(gov, "bob"), "model-training",
                   "SELECT count(*) FROM encounters a, encounters b, encounters c WHERE a.cost + b.cost > c.cost")
    assert time.monotonic() - start < 5
    assert info.value.status == 408 and info.value.detail == "the query ran longer than 0.5 s and was stopped"


def test_timeout_while_streaming(world) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False, sql_timeout=0.5, batch_size=1000))
    result = SqlEngine(gov, gov.settings).run(principal(gov, "bob"), "model-training", "SELECT * FROM range(100000000000)")
    with pytest.raises(QueryTimeout):
        for _ in result.reader:
            time.sleep(0.01)


def test_row_cap(world) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False, max_rows=100))
    engine = SqlEngine(gov, gov.settings)
    bob = principal(gov, "bob")
    with pytest.raises(LimitExceeded, match="more than 100 rows"):
        engine.run(bob, "model-training", "SELECT * FROM encounters")
    assert engine.run(bob, "model-training", "SELECT * FROM encounters LIMIT 100").reader.read_all().num_rows == 100
    # a dataset held in memory (used by a recursive CTE) is capped too
    with pytest.raises(LimitExceeded, match="used more than once"):
        engine.run(bob, "model-training", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r "
                                          "WHERE n < (SELECT count(*) FROM encounters)) SELECT max(n) FROM r")


def test_sql_size_cap(world) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False, sql_max_length=50))
    with pytest.raises(LimitExceeded, match="longer than 50 characters"):
        SqlEngine(gov, gov.settings).run(principal(gov, "bob"), "model-training", "SELECT " + "1 + " * 20 + "1")


def test_memory_limit(world) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False, sql_memory_limit="20MB", sql_threads=1))
    with pytest.raises(LimitExceeded, match="more memory"):
        SqlEngine(gov, gov.settings).run(principal(gov, "bob"), "model-training",
                                         "SELECT count(DISTINCT x) FROM (SELECT repeat('x', 100) || range::VARCHAR "
                                         "AS x FROM range(10000000))")


def test_close_from_another_thread_cancels(world) -> None:
    """What a wire-protocol CancelRequest does: close() interrupts the query and waits for it."""
    import threading

    gov = Governor(load_settings(world.config, watch_policies=False, batch_size=1000))
    result = SqlEngine(gov, gov.settings).run(principal(gov, "bob"), "model-training",
                                              "SELECT range % 7 AS x FROM range(100000000000)")
    threading.Timer(0.3, result.close).start()
    start = time.monotonic()
    with pytest.raises(SqlError, match="cancelled"):
        for _ in result.reader:
            time.sleep(0.01)  # a slow client
    assert time.monotonic() - start < 5


def test_deep_nesting_is_a_clear_error(engine, governor) -> None:
    for sql in ("SELECT " + "(" * 300 + "1" + ")" * 300, "SELECT " + "abs(" * 300 + "1" + ")" * 300,
                "SELECT 1" + " + 1" * 5_000):
        with pytest.raises(SqlError, match="nested too deeply"):
            engine.run(principal(governor, "bob"), "model-training", sql)
