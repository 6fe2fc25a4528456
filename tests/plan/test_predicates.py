"""Predicates: allow-list, typed binding of subject attributes, and Arrow ≡ DuckDB evaluation."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govern.errors import PredicateError
from govern.mask.predicate_arrow import evaluate
from govern.plan.predicates import compile_client_filter, compile_policy_predicate, parse


@pytest.mark.parametrize("text", [
    "region IN (SELECT region FROM patients)",
    "read_parquet('x') IS NULL",
    "region = 'EU'; DROP TABLE x",
    "exists(select 1)",
    "getenv('HOME') = 'x'",
    "t.region = 'EU'",
    "CAST(region AS INT) = 1",
    "region LIKE region",
    "*",
    "",
])
def test_disallowed_or_broken_predicates_are_refused(text: str) -> None:
    _tree, issues = parse(text, allow_subject=True)
    assert issues, f"{text!r} should be refused"


@pytest.mark.parametrize("text", [
    "region = 'EU' AND charges > 10.5",
    "region IN ('EU', 'US') OR zip LIKE '94%'",
    "lower(name) = 'zoë' AND NOT (age BETWEEN 1 AND 3)",
    "birth_date >= DATE '2000-01-01' AND year(birth_date) < 2010",
    "email IS NOT NULL AND coalesce(zip, '') <> ''",
    "region = subject.region AND department IN subject.departments",
])
def test_allowed_predicates_parse(text: str) -> None:
    _, issues = parse(text, allow_subject=True)
    assert issues == []


def test_client_filters_may_not_use_subject_attributes() -> None:
    with pytest.raises(PredicateError) as info:
        compile_client_filter("region = subject.region")
    assert "subject attributes" in info.value.detail


def test_parse_errors_carry_a_position() -> None:
    with pytest.raises(PredicateError) as info:
        compile_client_filter("region = = 'EU'")
    assert info.value.extra.get("position") is not None


@pytest.mark.parametrize("value,expected", [
    ("EU' OR 1=1 --", """"region" IN ('EU'' OR 1=1 --')"""),
    ("EU\\' OR '1'='1", """"region" IN ('EU\\'' OR ''1''=''1')"""),
    ("x'); DROP TABLE t; --", """"region" IN ('x''); DROP TABLE t; --')"""),
])
def test_subject_values_are_bound_as_literals(value: str, expected: str) -> None:
    pred = compile_policy_predicate("region IN subject.regions", {"regions": [value]})
    assert pred.sql == expected
    con = duckdb.connect()
    rows = con.execute(f"SELECT count(*) FROM (VALUES ('EU'), ('US')) v(region) WHERE {pred.sql}").fetchone()
    assert rows == (0,)


def test_scalar_and_typed_attributes() -> None:
    pred = compile_policy_predicate(
        "department = subject.dept AND level <= subject.level AND active = subject.flag AND d > subject.since",
        {"dept": "Card'io", "level": 3, "flag": True, "since": dt.date(2020, 1, 2)})
    assert pred.sql == (""""department" = 'Card''io' AND "level" <= 3 AND "active" = TRUE """
                        """AND "d" > CAST('2020-01-02' AS DATE)""")


def test_missing_attributes_fail_closed() -> None:
    assert compile_policy_predicate("region IN subject.regions", {}).sql == "FALSE"
    assert compile_policy_predicate("region = subject.region", {}).sql == '"region" = NULL'


def test_list_attribute_used_as_scalar_is_an_error() -> None:
    with pytest.raises(PredicateError):
        compile_policy_predicate("region = subject.regions", {"regions": ["EU"]})


PREDICATES = [
    "region = 'EU'",
    "region IN ('EU', 'APAC')",
    "NOT (region IN ('EU'))",
    "amount > 10 AND region <> 'US'",
    "amount BETWEEN -5 AND 5 OR region IS NULL",
    "lower(name) = 'zoë'",
    "upper(name) LIKE 'A%'",
    "length(name) > 3",
    "coalesce(region, 'none') = 'none'",
    "abs(amount) < 3 OR NOT (amount >= 0)",
    "amount * 2 + 1 > 7",
    "year(d) >= 2000 AND month(d) IN (1, 2, 3)",
    "d < DATE '1990-06-01'",
    "name ILIKE '%a%'",
]

regions = st.sampled_from(["EU", "US", "APAC", "", "ÉU"]) | st.none()
names = st.text(alphabet=st.sampled_from(list("aAzZoëÖ_%' ")), max_size=6) | st.none()
amounts = st.integers(-20, 20) | st.none()
dates = st.dates(dt.date(1950, 1, 1), dt.date(2030, 12, 31)) | st.none()
rows = st.lists(st.tuples(regions, names, amounts, dates), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_arrow_and_duckdb_evaluate_predicates_identically(data) -> None:
    table = pa.table({
        "region": pa.array([r[0] for r in data], pa.string()),
        "name": pa.array([r[1] for r in data], pa.string()),
        "amount": pa.array([r[2] for r in data], pa.int64()),
        "d": pa.array([r[3] for r in data], pa.date32()),
    })
    con = duckdb.connect()
    con.register("t", table)
    for text in PREDICATES:
        sql = compile_client_filter(text).sql
        arrow = evaluate(sql, table.to_batches()[0]).to_pylist()
        duck = [r[0] for r in con.execute(f"SELECT {sql} FROM t").fetchall()]
        assert arrow == duck, text
