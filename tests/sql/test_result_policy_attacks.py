"""Attacks on result policies (projection) that the main suite does not try: a projected column
joined to something the analyst wrote (a literal subquery, a CTE, a table function) is a
membership test, and the other side of the equality outputs the hidden value."""

from __future__ import annotations

from pathlib import Path

import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import SqlError
from govern.sql import SqlEngine
from tests.sql.conftest import principal

PROJECTION_ONLY = """    result:
      analytics:
        projection: [patient_id]
"""


def configure(policies: Path) -> None:
    catalog = policies / "catalog.yaml"
    text = catalog.read_text()
    anchor = "    synthesizer:\n      type: gaussian_copula"
    assert anchor in text
    catalog.write_text(text.replace(anchor, PROJECTION_ONLY + anchor, 1))


@pytest.fixture
def engine(world) -> SqlEngine:
    configure(world.directory / "policies")
    governor = Governor(load_settings(world.config, watch_policies=False))
    return SqlEngine(governor, governor.settings)


def run(engine: SqlEngine, sql: str) -> list[dict]:
    result = engine.run(principal(engine.governor, "alice"), "analytics", sql, None)
    try:
        return result.reader.read_all().to_pylist()
    finally:
        result.close()


def hidden_value(engine: SqlEngine) -> str:
    """One projected value, read the way only the gateway may (the governed read itself)."""
    gov = engine.governor
    table = gov.read(principal(gov, "alice"), "patients", "analytics").reader.read_all()
    return str(table.column("patient_id")[0].as_py())


LEAKS = [
    ("literal-subquery", "SELECT count(*) AS n FROM patients p JOIN (SELECT '{v}' AS x) g ON p.patient_id = g.x"),
    ("cte", "WITH g AS (SELECT '{v}' AS x) SELECT count(*) AS n FROM patients p JOIN g ON p.patient_id = g.x"),
    ("output-other-side", "SELECT g.x FROM patients p JOIN (SELECT '{v}' AS x) g ON p.patient_id = g.x"),
    ("unnest", "SELECT count(*) AS n FROM patients p JOIN (SELECT unnest(['{v}']) AS x) g "
               "ON p.patient_id = g.x"),
    ("self-derived", "SELECT g.x FROM patients p JOIN (SELECT lower(upper('{v}')) AS x) g "
                     "ON g.x = p.patient_id"),
]


@pytest.mark.parametrize(("sql",), [pytest.param(s, id=i) for i, s in LEAKS])
def test_a_projected_column_is_joined_only_to_another_dataset_column(engine: SqlEngine, sql: str) -> None:
    """Joining the hidden column to a value the analyst chose answers "is this value there?"
    (and outputs it through the other side): refused like ``WHERE patient_id = '…'``."""
    value = hidden_value(engine)
    with pytest.raises(SqlError) as caught:
        rows = run(engine, sql.format(v=value))
        pytest.fail(f"served: {rows}")
    assert caught.value.code == "42501" and "projection-only" in caught.value.detail


@pytest.mark.parametrize("sql", [
    "SELECT count(*) AS n FROM patients p JOIN encounters e ON p.patient_id = e.patient_id",
    "SELECT count(*) AS n FROM patients JOIN encounters ON patients.patient_id = encounters.patient_id",
    "SELECT count(*) AS n FROM patients JOIN encounters USING (patient_id)",
    "SELECT count(*) AS n FROM patients NATURAL JOIN encounters",
])
def test_the_join_between_datasets_still_works(engine: SqlEngine, sql: str) -> None:
    assert run(engine, sql)[0]["n"] > 0


def test_using_joins_a_projected_column_only_between_datasets(engine: SqlEngine) -> None:
    value = hidden_value(engine)
    with pytest.raises(SqlError) as caught:
        rows = run(engine, f"SELECT count(*) AS n FROM patients JOIN (SELECT '{value}' AS patient_id) g "
                           "USING (patient_id)")
        pytest.fail(f"served: {rows}")
    assert caught.value.code == "42501" and "projection-only" in caught.value.detail


def test_a_derived_table_cannot_borrow_a_dataset_alias(engine: SqlEngine) -> None:
    """The qualifier is looked up in the SELECT that joins, not anywhere in the query."""
    value = hidden_value(engine)
    with pytest.raises(SqlError) as caught:
        rows = run(engine, f"SELECT e.x, (SELECT count(*) FROM encounters e) AS c FROM patients p "
                           f"JOIN (SELECT '{value}' AS x) e ON p.patient_id = e.x")
        pytest.fail(f"served: {rows}")
    assert caught.value.code == "42501" and "projection-only" in caught.value.detail


MORE = [
    ("natural", "SELECT count(*) AS n FROM patients NATURAL JOIN (SELECT '{v}' AS patient_id) g"),
    ("natural-output", "SELECT g.patient_id FROM patients NATURAL JOIN (SELECT '{v}' AS patient_id) g"),
    ("semi", "SELECT count(*) AS n FROM patients p SEMI JOIN (SELECT '{v}' AS x) g ON p.patient_id = g.x"),
    ("asof", "SELECT count(*) AS n FROM patients p ASOF JOIN (SELECT '{v}' AS x) g ON p.patient_id >= g.x"),
    ("in-subquery", "SELECT count(*) AS n FROM patients WHERE patient_id IN (SELECT '{v}')"),
    ("exists", "SELECT count(*) AS n FROM patients p WHERE EXISTS (SELECT 1 WHERE p.patient_id = '{v}')"),
    ("lateral", "SELECT count(*) AS n FROM patients p, LATERAL (SELECT 1 AS one WHERE p.patient_id = '{v}') l"),
    ("struct-pack", "SELECT count(*) AS n FROM patients p JOIN (SELECT {{'patient_id': '{v}'}} AS s) g "
                    "ON p.patient_id = g.s.patient_id"),
]


@pytest.mark.parametrize(("sql",), [pytest.param(s, id=i) for i, s in MORE])
def test_other_join_forms_do_not_test_a_projected_value(engine: SqlEngine, sql: str) -> None:
    value = hidden_value(engine)
    with pytest.raises(SqlError) as caught:
        rows = run(engine, sql.format(v=value))
        pytest.fail(f"served: {rows}")
    assert caught.value.code == "42501", caught.value
