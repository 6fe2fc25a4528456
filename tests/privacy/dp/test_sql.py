"""DP SQL → DpQuery: accepted statements (input, expected query) and refusals (input, reason)."""

from __future__ import annotations

import pytest

from govern.errors import SqlError
from govern.privacy.dp.sql import hint, translate

DATASETS = {"patients", "encounters"}

ACCEPTED = [
    ("grouped aggregates of every kind, by position",
     "select region, count(*), count(charges) c, sum(charges), avg(charges), median(charges), "
     "quantile(charges, 0.9), percentile_cont(0.25) within group (order by charges) from patients group by 1",
     {"group_by": ("region",), "functions": ["count", "count", "sum", "mean", "quantile", "quantile", "quantile"],
      "names": ["region", "count", "c", "sum", "avg", "median", "quantile", "percentile_cont"],
      "q": [None, None, None, None, 0.5, 0.9, 0.25]}),
    ("a WHERE clause becomes the filter; an alias may qualify columns",
     "SELECT p.department, COUNT(*) AS n FROM encounters AS p WHERE p.cost > 100 GROUP BY p.department",
     {"group_by": ("department",), "functions": ["count"], "names": ["department", "n"], "filter": "p.cost > 100"}),
    ("dataset names are case-insensitive",
     "select count(*) from PATIENTS", {"group_by": (), "functions": ["count"], "names": ["count"]}),
]


@pytest.mark.parametrize("title, sql, expected", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted(title: str, sql: str, expected: dict) -> None:
    out = translate(sql, DATASETS, epsilon=1.0, bounds={"charges": [0, 100]})
    assert out.query.group_by == expected["group_by"]
    assert [a.function for a in out.query.aggregates] == expected["functions"]
    assert [name for name, _ in out.outputs] == expected["names"]
    if "q" in expected:
        assert [a.q for a in out.query.aggregates] == expected["q"]
        assert all(a.bounds == (0, 100) for a in out.query.aggregates if a.column == "charges" and
                   a.function != "count")
    if "filter" in expected:
        assert out.query.filter == expected["filter"]


REFUSED = [
    ("two statements", "select count(*) from patients; select 1", "exactly one statement"),
    ("not a select", "delete from patients", "only SELECT"),
    ("a join", "select count(*) from patients join encounters using (patient_id)", "no JOIN"),
    ("a CTE", "with x as (select * from patients) select count(*) from x", "no WITH"),
    ("a subquery", "select count(*) from (select * from patients) t", "FROM one dataset"),
    ("a table function", "select count(*) from read_parquet('x.parquet')", "FROM one dataset"),
    ("a schema", "select count(*) from pg_catalog.pg_class", "FROM one dataset"),
    ("an unknown dataset", "select count(*) from nope", "unknown dataset"),
    ("a raw column", "select zip from patients", "must appear in GROUP BY"),
    ("distinct", "select distinct region from patients", "no DISTINCT"),
    ("having", "select region, count(*) from patients group by region having count(*) > 5", "no HAVING"),
    ("limit", "select count(*) from patients limit 1", "no LIMIT"),
    ("an expression inside", "select sum(charges * 2) from patients", "plain column"),
    ("another function", "select max(charges) from patients", "only COUNT, SUM, AVG"),
    ("a window", "select count(*) over () from patients", "only COUNT, SUM, AVG"),
    ("a quantile out of range", "select quantile(charges, 2) from patients", "between 0 and 1"),
    ("no aggregate", "select region from patients group by region", "at least one aggregate"),
]


@pytest.mark.parametrize("title, sql, reason", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(title: str, sql: str, reason: str) -> None:
    with pytest.raises(SqlError) as refused:
        translate(sql, DATASETS, epsilon=1.0)
    assert reason in refused.value.detail


def test_privacy_parameters_from_the_hint_win() -> None:
    out = translate("/*+ dp epsilon=0.3 delta=1e-7 contributions=4 */ select count(*) from patients", DATASETS,
                    epsilon=1.0)
    assert (out.query.epsilon, out.query.delta, out.query.contributions) == (0.3, 1e-7, 4)
    assert hint("select 1 /* not a hint */") == {}
    with pytest.raises(SqlError, match="needs an epsilon"):
        translate("select count(*) from patients", DATASETS, epsilon=None)
    with pytest.raises(SqlError, match="invalid privacy parameters"):
        translate("select count(*) from patients", DATASETS, epsilon=1000.0)
