"""Result policies on analyst SQL (catalog.yaml ``result:``): min_group, projection, k-anonymity,
and a differencing-attack suite. Run in the engine every SQL surface shares; the surfaces
themselves are compared in tests/deliver/test_result_policy_surfaces.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import AccessDenied, SqlError
from govern.plan.explain import explain_text
from govern.policy.load import read_policy
from govern.sql import SqlEngine
from tests.sql.conftest import principal

K = 10
RESULT = """    result:
      analytics:
        min_group: {k: %d, count: units}
        projection: [patient_id]
      quality-improvement:
        min_group: {k: %d, count: units, semantics: error}
      research:
        k_anonymity:
          k: 5
          quasi_identifiers: {birth_date: [decade, "*"], zip: ["prefix:2", "prefix:1", "*"]}
          max_suppression: 0.02
"""
ENCOUNTERS = """    result:
      analytics: {min_group: %d}
"""


def configure(policies: Path, k: int = K, encounters_k: int = K) -> None:
    """The demo policies with result blocks: patients under min_group (units) + projection for
    analytics, error semantics for its sub-purpose quality-improvement, k-anonymity for research;
    encounters under min_group (rows) for analytics."""
    catalog = policies / "catalog.yaml"
    text = catalog.read_text()
    anchor = "    synthesizer:\n      type: gaussian_copula"
    assert anchor in text
    text = text.replace(anchor, RESULT % (k, k) + anchor, 1)
    anchor = "    budget: {epsilon: 3, delta: 1.0e-6, period: month}"
    assert anchor in text
    text = text.replace(anchor, anchor + "\n" + ENCOUNTERS % encounters_k, 1)
    catalog.write_text(text)


@pytest.fixture
def engine(world) -> SqlEngine:
    configure(world.directory / "policies")
    governor = Governor(load_settings(world.config, watch_policies=False))
    return SqlEngine(governor, governor.settings)


def run(engine: SqlEngine, sql: str, who: str = "alice", purpose: str = "analytics",
        params: list | None = None) -> tuple[list[dict], int | None]:
    result = engine.run(principal(engine.governor, who), purpose, sql, params)
    try:
        return result.reader.read_all().to_pylist(), result.suppressed_groups
    finally:
        result.close()


def truth(engine: SqlEngine, dataset: str, who: str = "alice", purpose: str = "analytics") -> pa.Table:
    """The masked view itself (the governed read is not under a result policy: a result policy
    constrains what analysts compute, not what the gateway reads for them)."""
    return engine.governor.read(principal(engine.governor, who), dataset, purpose).reader.read_all()


# -- the policy: loaded, checked, compiled, explained ---------------------------------------------------
def test_the_plan_carries_the_result_policy_of_the_purpose_or_its_parent(engine: SqlEngine) -> None:
    gov = engine.governor
    plan = gov.plan(principal(gov, "alice"), "patients", "analytics")
    assert plan.result is not None and plan.result.min_group is not None
    assert (plan.result.min_group.k, plan.result.min_group.count, plan.result.min_group.semantics) == \
        (K, "units", "remainder")
    assert plan.result.projection == ("patient_id",)
    assert plan.result.reason.source.startswith("catalog.yaml:")
    assert plan.to_dict()["result"]["min_group"] == {"k": K, "count": "units", "semantics": "remainder"}
    text = explain_text(plan)
    assert "min_group: every group of an aggregate holds >= 10 distinct privacy units" in text
    assert "projection: patient_id may be joined" in text
    # a steward under governance has no result block: plans keep the hash they always had
    steward = gov.plan(principal(gov, "carol"), "patients", "governance")
    assert steward.result is None and "result" not in steward.to_dict()
    assert "results: no result policy" in explain_text(steward)
    # bob's model-training is a sub-purpose of research: research's block applies
    bob = gov.plan(principal(gov, "bob"), "patients", "model-training")
    assert bob.result is not None and bob.result.k_anonymity is not None


def test_policy_check_reports_every_bad_result_block(policy_dir: Path) -> None:
    catalog = policy_dir / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("    synthesizer:\n      type: gaussian_copula", """    result:
      nosuchpurpose: {min_group: 5}
      analytics:
        min_group: {k: 1, count: persons, semantics: maybe}
        projection: [no_such_column]
        k_anonymity: {k: 3, quasi_identifiers: {zip: [week]}, max_suppression: 2}
        colour: blue
    synthesizer:
      type: gaussian_copula""", 1))
    policy, problems = read_policy(policy_dir)
    assert policy is None
    messages = [p.message for p in problems]
    expected = ["unknown purpose 'nosuchpurpose'", "min_group: k must be an integer ≥ 2",
                "min_group count must be one of rows, units", "min_group semantics must be one of remainder, error",
                "projection names columns not in the catalog: no_such_column", "levels of 'zip' must be",
                "max_suppression must be a fraction", "unknown field 'colour'"]
    for fragment in expected:
        assert any(fragment in m for m in messages), (fragment, messages)
    assert all(p.file == "catalog.yaml" and p.line for p in problems)


# -- min_group ------------------------------------------------------------------------------------------
def test_small_groups_fold_into_one_remainder_row(engine: SqlEngine) -> None:
    rows, suppressed = run(engine, "SELECT zip, count(DISTINCT patient_id) AS units, count(*) AS n "
                                   "FROM patients GROUP BY zip ORDER BY units DESC, zip")
    view = truth(engine, "patients")
    sizes = Counter(view.column("zip").to_pylist())
    small = [z for z, n in sizes.items() if n < K]
    assert suppressed is not None and suppressed >= len(small) > 0
    shown = [r for r in rows if r["zip"] is not None]
    [remainder] = [r for r in rows if r["zip"] is None]
    assert remainder["units"] >= K
    assert all(r["units"] >= K and r["zip"] is not None for r in shown)
    assert sum(r["n"] for r in rows) == view.num_rows  # nothing lost, nothing counted twice


def test_error_semantics_refuse_the_query(engine: SqlEngine) -> None:
    with pytest.raises(AccessDenied, match=r"group\(s\) of the result hold fewer than 10 privacy units"):
        run(engine, "SELECT zip, count(*) FROM patients GROUP BY zip", purpose="quality-improvement")
    rows, suppressed = run(engine, "SELECT region, count(*) AS n FROM patients GROUP BY region",
                           purpose="quality-improvement")
    assert suppressed == 0 and rows == [{"region": "EU", "n": truth(engine, "patients").num_rows}]


def test_secondary_suppression_folds_the_next_smallest_group(world) -> None:
    """Exactly one department below k: folding it alone would show it as the remainder (and
    "total minus the shown groups" would give it anyway), so the next smallest joins it."""
    configure(world.directory / "policies")
    governor = Governor(load_settings(world.config, watch_policies=False))
    view = SqlEngine(governor, governor.settings).governor.read(
        principal(governor, "alice"), "encounters", "analytics").reader.read_all()
    sizes = sorted(Counter(view.column("department").to_pylist()).values())
    k = sizes[0] + 1  # only the smallest department is below k ...
    assert sizes[1] >= k and sizes[0] < k  # ... and it alone is a remainder below k
    text = (world.directory / "policies" / "catalog.yaml").read_text()
    (world.directory / "policies" / "catalog.yaml").write_text(
        text.replace(f"analytics: {{min_group: {K}}}", f"analytics: {{min_group: {k}}}"))
    governor = Governor(load_settings(world.config, watch_policies=False))
    engine = SqlEngine(governor, governor.settings)
    rows, suppressed = run(engine, "SELECT department, count(*) AS n, sum(cost) AS total FROM encounters "
                                   "GROUP BY department ORDER BY n DESC")
    assert suppressed == 2
    shown = [r for r in rows if r["department"] is not None]
    [remainder] = [r for r in rows if r["department"] is None]  # ordered like any row (ORDER BY n)
    assert remainder["n"] == sizes[0] + sizes[1]
    assert sorted(r["n"] for r in shown) == sizes[2:]


def test_a_group_that_never_reaches_k_shows_no_value(engine: SqlEngine) -> None:
    rows, suppressed = run(engine, "SELECT count(*) AS n, sum(charges) AS s FROM patients", purpose="analytics")
    assert suppressed == 0 and rows[0]["n"] == truth(engine, "patients").num_rows
    # grouping by the privacy unit: every group holds one person; all fold into one remainder
    rows, suppressed = run(engine, "SELECT count(*) AS n FROM patients GROUP BY patient_id")
    assert rows == [{"n": truth(engine, "patients").num_rows}] and suppressed == rows[0]["n"]


REFUSED = [
    ("row-level", "SELECT zip FROM patients", "is neither a group key nor inside count/sum/avg"),
    ("min", "SELECT zip, min(charges) FROM patients GROUP BY zip", "only count, sum and avg"),
    ("max", "SELECT max(cost) FROM encounters", "only count, sum and avg"),
    ("any-value", "SELECT department, any_value(cost) FROM encounters GROUP BY 1", "only count, sum and avg"),
    ("case-in-sum", "SELECT sum(CASE WHEN zip = '100**' THEN charges ELSE 0 END) FROM patients",
     "aggregate a plain column"),
    ("filter-clause", "SELECT count(*) FILTER (WHERE zip = '100**') FROM patients", "FILTER"),
    ("non-key-where", "SELECT department, sum(cost) FROM encounters WHERE cost < 100000 GROUP BY department",
     "WHERE may only test group keys"),
    ("group-by-expression", "SELECT count(*) FROM encounters GROUP BY cost > 19000", "GROUP BY plain columns"),
    ("subquery", "SELECT count(*) FROM (SELECT * FROM encounters WHERE encounter_id <> 'x')", "subqueries"),
    ("cte", "WITH e AS (SELECT * FROM encounters) SELECT count(*) FROM e", "WITH"),
    ("union", "SELECT count(*) FROM encounters UNION ALL SELECT count(*) FROM encounters", "single aggregate"),
    ("window", "SELECT department, sum(count(*)) OVER () FROM encounters GROUP BY 1", "window"),
    ("join-condition", "SELECT count(*) FROM encounters a JOIN encounters b ON a.cost < b.cost", "equalities"),
    ("values", "SELECT count(*) FROM encounters, (VALUES (1)) v(x)", "subqueries"),
    ("table-function", "SELECT count(*) FROM encounters, range(3) r", "only datasets"),
    ("rollup", "SELECT department, count(*) FROM encounters GROUP BY ROLLUP (department)", "ROLLUP"),
]


@pytest.mark.parametrize(("sql", "fragment"), [pytest.param(s, f, id=i) for i, s, f in REFUSED])
def test_min_group_refuses_what_could_single_out_a_person(engine: SqlEngine, sql: str, fragment: str) -> None:
    with pytest.raises(SqlError, match="min_group") as caught:
        run(engine, sql)
    assert fragment in caught.value.detail and caught.value.code == "42501"
    assert caught.value.extra.get("position") is not None  # where in the text


# -- the differencing-attack suite -----------------------------------------------------------------------
def _key(row: dict) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def test_filters_only_pick_rows_of_the_one_grouped_answer(engine: SqlEngine) -> None:
    """Overlapping queries isolating one small group: the target zip prefix (fewer than k
    patients). Every answer any filter, HAVING, ORDER BY or LIMIT gives is a subset of the
    unfiltered grouped answer — the folded groups are decided before the filters — so no two
    answers differ by the target group, and no answer holds its exact value."""
    view = truth(engine, "patients")
    sizes = Counter(view.column("zip").to_pylist())
    target = min((z for z in sizes if z is not None), key=lambda z: (sizes[z], z))
    assert sizes[target] < K
    base = "SELECT zip, count(*) AS n, count(DISTINCT patient_id) AS units FROM patients"
    grouped, _ = run(engine, f"{base} GROUP BY zip")
    answer = {_key(r) for r in grouped}
    assert all(r["zip"] != target for r in grouped)
    attacks = [
        f"{base} WHERE zip = '{target}' GROUP BY zip",
        f"{base} WHERE zip <> '{target}' GROUP BY zip",
        f"{base} WHERE zip <> '{target}' OR zip IS NULL GROUP BY zip",
        f"{base} WHERE zip IN ('{target}', '{grouped[0]['zip']}') GROUP BY zip",
        f"{base} GROUP BY zip HAVING count(*) > 1",
        f"{base} GROUP BY zip HAVING count(*) < {K}",
        f"{base} GROUP BY zip ORDER BY n LIMIT 1",
        f"{base} GROUP BY zip ORDER BY n LIMIT 2",
        f"{base} GROUP BY zip ORDER BY n DESC LIMIT 3 OFFSET 1",
    ]
    for sql in attacks:
        rows, _ = run(engine, sql)
        assert {_key(r) for r in rows} <= answer, sql
    # a parameter is a filter like any other; describing it (no values yet) reads nothing
    rows, _ = run(engine, f"{base} WHERE zip = $1 GROUP BY zip", params=[target])
    assert rows == []
    schema = engine.describe(principal(engine.governor, "alice"), "analytics", f"{base} WHERE zip = $1 GROUP BY zip")
    assert schema.names == ["zip", "n", "units"]


def test_total_minus_shown_groups_is_the_remainder_of_at_least_k(engine: SqlEngine) -> None:
    total, _ = run(engine, "SELECT count(*) AS n FROM encounters")
    rows, suppressed = run(engine, "SELECT department, date, count(*) AS n FROM encounters GROUP BY ALL")
    assert suppressed and suppressed > 0
    shown = [r for r in rows if r["department"] is not None]
    difference = total[0]["n"] - sum(r["n"] for r in shown)
    [remainder] = [r for r in rows if r["department"] is None]
    assert difference >= K and difference == remainder["n"]  # the remainder row, never one person


def test_everyone_but_one_is_refused_whatever_the_column(engine: SqlEngine) -> None:
    for sql in ("SELECT sum(cost) AS s FROM encounters WHERE encounter_id <> 'E000001'",
                "SELECT count(*) FROM patients WHERE patient_id <> 'x'",
                "SELECT count(*) FROM patients p JOIN encounters e ON p.patient_id = e.patient_id "
                "WHERE e.encounter_id <> 'E000001'"):
        with pytest.raises(SqlError):
            run(engine, sql)


def test_a_join_counts_units_on_every_protected_side(engine: SqlEngine) -> None:
    rows, suppressed = run(engine, "SELECT p.zip, count(*) AS visits, count(DISTINCT p.patient_id) AS people "
                                   "FROM patients p JOIN encounters e ON p.patient_id = e.patient_id "
                                   "GROUP BY p.zip")
    assert suppressed and all(r["people"] >= K for r in rows if r["zip"] is not None)


# -- projection ------------------------------------------------------------------------------------------
PROJECTION_ALLOWED = [
    "SELECT count(DISTINCT patient_id) AS people FROM patients",
    "SELECT count(*) AS n FROM patients GROUP BY patient_id",
    "SELECT p.zip, count(*) FROM patients p JOIN encounters e ON p.patient_id = e.patient_id GROUP BY p.zip",
    "SELECT p.zip, count(*) FROM patients p JOIN encounters e USING (patient_id) GROUP BY p.zip",
]
PROJECTION_REFUSED = [
    ("output", "SELECT patient_id, count(*) FROM patients GROUP BY patient_id"),
    ("star", "SELECT * FROM patients"),
    ("struct", "SELECT p FROM patients p"),
    ("equality", "SELECT count(*) FROM patients WHERE patient_id = 'k1:abc'"),
    ("range", "SELECT count(*) FROM patients WHERE patient_id > 'k1:8'"),
    ("like", "SELECT count(*) FROM patients WHERE patient_id LIKE 'k1:8%'"),
    ("in", "SELECT count(*) FROM patients WHERE patient_id IN ('a', 'b')"),
    ("is-null", "SELECT count(*) FROM patients WHERE patient_id IS NULL"),
    ("function", "SELECT count(*) FROM patients GROUP BY length(patient_id)"),
    ("join-literal", "SELECT count(*) FROM patients p JOIN encounters e ON p.patient_id = e.patient_id "
                     "AND e.patient_id = 'k1:abc'"),
    ("having", "SELECT count(*) FROM patients GROUP BY patient_id HAVING patient_id > 'k'"),
    ("order", "SELECT count(*) AS n FROM patients GROUP BY patient_id ORDER BY patient_id"),
    ("alias", "SELECT x FROM (SELECT patient_id AS x FROM patients)"),
    ("case", "SELECT sum(CASE WHEN patient_id = 'a' THEN 1 END) FROM patients"),
    ("joined-column-output", "SELECT e.encounter_id, count(*) FROM patients p JOIN encounters e "
                             "ON p.patient_id = e.encounter_id GROUP BY 1"),
]


@pytest.mark.parametrize("sql", PROJECTION_ALLOWED)
def test_projection_columns_join_group_and_count(engine: SqlEngine, sql: str) -> None:
    rows, _ = run(engine, sql)
    assert rows


@pytest.mark.parametrize(("sql",), [pytest.param(s, id=i) for i, s in PROJECTION_REFUSED])
def test_projection_columns_are_never_output_nor_compared(engine: SqlEngine, sql: str) -> None:
    with pytest.raises(SqlError) as caught:
        run(engine, sql)
    assert caught.value.code == "42501" and caught.value.extra.get("position") is not None
    assert "projection-only" in caught.value.detail or "name the columns" in caught.value.detail \
        or "whole row as a struct" in caught.value.detail


# -- k-anonymity -----------------------------------------------------------------------------------------
def test_row_level_results_are_k_anonymous_over_the_quasi_identifiers(engine: SqlEngine) -> None:
    rows, _ = run(engine, "SELECT birth_date, zip, region FROM patients", who="bob", purpose="research")
    classes = Counter((r["birth_date"], r["zip"]) for r in rows)
    assert rows and min(classes.values()) >= 5
    full = truth(engine, "patients", "bob", "research").num_rows
    assert full - len(rows) <= 0.02 * full or all(z is None for z in classes)  # suppression bounded (or last level)
    # any query over the view sees the generalized values only: no raw class of fewer than 5
    rows, _ = run(engine, "SELECT birth_date, zip, count(*) AS n FROM patients GROUP BY ALL HAVING count(*) < 5",
                  who="bob", purpose="research")
    assert rows == []


# -- the documented example, through the CLI ------------------------------------------------------------
def test_the_documented_result_block_loads_and_govern_policy_explain_shows_it(world) -> None:
    from click.testing import CliRunner

    from govern.cli import main

    docs = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
    block = docs.split("<!-- result-example -->\n```yaml\n", 1)[1].split("```", 1)[0]
    result = block.split("    result:\n", 1)[1]
    catalog = world.directory / "policies" / "catalog.yaml"
    anchor = "    synthesizer:\n      type: gaussian_copula"
    catalog.write_text(catalog.read_text().replace(anchor, "    result:\n" + result + anchor, 1))
    policy, problems = read_policy(world.directory / "policies")
    assert problems == [] and policy is not None
    assert set(policy.datasets["patients"].results) == {"analytics", "quality-improvement", "research", "*"}
    out = CliRunner().invoke(main, ["policy", "explain", "alice", "patients", "--purpose", "quality-improvement",
                                    "--config", str(world.config)])
    assert out.exit_code == 0, out.output
    assert "results: result policy of 'patients' for purpose 'quality-improvement' (catalog.yaml:" in out.output
    assert "smaller groups refuse the whole query" in out.output
    out = CliRunner().invoke(main, ["policy", "explain", "carol", "patients", "--purpose", "governance",
                                    "--config", str(world.config), "--format", "json"])
    assert json.loads(out.output)["result"]["min_group"] == {"k": 5, "count": "rows", "semantics": "remainder"}
