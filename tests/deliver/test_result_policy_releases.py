"""Result policies on the DP routes (``POST /v1/datasets/{name}/dp`` and DP SQL over HTTP), and
privacy budgets that follow the data's source rather than its catalog name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import edit
from tests.gateway import World, make_client
from tests.sql.test_result_policies import configure

COUNT_BY_REGION = {"aggregates": [{"function": "count"}, {"function": "sum", "column": "charges"}],
                   "group_by": ["region"], "epsilon": 2.0}


def headers(world: World, who: str = "alice", purpose: str = "analytics") -> dict[str, str]:
    return {**world.auth(who), "X-Purpose": purpose}


@pytest.fixture
def guarded(world: World):
    configure(world.directory / "policies")
    with make_client(world) as c:
        yield c


def test_a_dp_release_drops_groups_whose_noisy_count_is_below_k(guarded, world: World) -> None:
    # alice's row filter keeps EU only: APAC and US count ~0 (noise scale 0.5), far below k = 10
    r = guarded.post("/v1/datasets/patients/dp", headers=headers(world), json=COUNT_BY_REGION)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [row["region"] for row in body["rows"]] == ["EU"]
    assert body["suppressed_groups"] == 2 and r.headers["x-govern-suppressed-groups"] == "2"
    assert body["budget"]["spent"]["epsilon"] == 2.0  # charged once, like any release
    [rec] = guarded.app.state.gateway.audit.records(limit=10, request_id=r.headers["x-request-id"])
    assert rec.outcome == "ok" and rec.extra["suppressed_groups"] == 2 and rec.rows == 1


def test_dp_sql_is_under_the_same_policy(guarded, world: World) -> None:
    r = guarded.post("/v1/sql", headers=headers(world), json={
        "sql": "SELECT region, count(*) AS n FROM patients GROUP BY region", "privacy": "dp", "epsilon": 2.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [row[0] for row in body["rows"]] == ["EU"] and body["suppressed_groups"] == 2


def test_what_the_policy_forbids_is_refused_from_the_request_alone_and_charges_nothing(guarded, world: World) -> None:
    cases = [
        ({"aggregates": [{"function": "sum", "column": "charges"}], "group_by": ["region"], "epsilon": 1.0},
         400, "include a count aggregate"),
        ({"aggregates": [{"function": "count"}], "filter": "patient_id = 'k1:00'", "epsilon": 1.0},
         403, "projection-only"),
    ]
    for body, status, fragment in cases:
        r = guarded.post("/v1/datasets/patients/dp", headers=headers(world), json=body)
        assert r.status_code == status and fragment in r.json()["detail"], (body, r.text)
    assert guarded.app.state.gateway.ledger.charges(principal="alice") == []


# -- budgets follow the source ---------------------------------------------------------------------------
def _second_name(policies: Path) -> None:
    """``patients_again``: the same parquet file under another name, with a far larger budget."""
    edit(policies / "catalog.yaml", "  encounters:\n", """  patients_again:
    location: patients.parquet
    privacy_unit: patient_id
    budget: {epsilon: 100, delta: 1.0e-6, period: month}
    columns:
      patient_id: {tags: [identifier]}
      region: {public_values: true}
      charges: {tags: [financial], bounds: [0, 50000]}

  encounters:
""")
    edit(policies / "policy.csv", "g2, dataset:encounters, group:clinical\n",
         "g2, dataset:encounters, group:clinical\ng2, dataset:patients_again, group:clinical\n")


def test_a_second_catalog_name_for_the_same_source_shares_its_budget(world: World) -> None:
    _second_name(world.directory / "policies")
    count = {"aggregates": [{"function": "count"}], "epsilon": 4.0}
    with make_client(world) as c:
        assert c.post("/v1/datasets/patients/dp", headers=headers(world), json=count).status_code == 200
        # 1 of alice's 5 left on patients.parquet, whichever name she uses
        again = c.post("/v1/datasets/patients_again/dp", headers=headers(world), json={**count, "epsilon": 2.0})
        assert again.status_code == 403 and again.json()["type"].endswith("budget-exceeded"), again.text
        assert again.json()["budget"]["left"]["epsilon"] == pytest.approx(1.0)
        ok = c.post("/v1/datasets/patients_again/dp", headers=headers(world), json={**count, "epsilon": 1.0})
        assert ok.status_code == 200, ok.text
        budgets = {b["dataset"]: b for b in c.get("/v1/budget", headers=headers(world)).json()["budgets"]}
        assert budgets["patients"]["left"]["epsilon"] == budgets["patients_again"]["left"]["epsilon"] == 0
        charges = c.app.state.gateway.ledger.charges(principal="alice")
        assert [(ch["dataset"], ch["epsilon"]) for ch in charges] == [("patients", 4.0), ("patients", 1.0)]


# -- rows: the side door around result policies -------------------------------------------------------------
def test_row_reads_are_refused_where_a_result_policy_applies(guarded, world: World) -> None:
    """Without this, ``GET …/rows`` hands out every row a min_group / projection policy protects
    in SQL (the attack: read rows instead of querying)."""
    for purpose, who in (("analytics", "alice"), ("research", "bob")):  # min_group + projection; k_anonymity
        r = guarded.get("/v1/datasets/patients/rows", headers=headers(world, who, purpose))
        assert r.status_code == 403, (purpose, r.status_code, r.text[:200])
        assert "result policy" in r.json()["detail"] and "/v1/sql" in r.json()["detail"]
        r = guarded.head("/v1/datasets/patients/rows", headers=headers(world, who, purpose))
        assert r.status_code == 403, purpose
        r = guarded.post("/v1/datasets/patients/scan", headers=headers(world, who, purpose), json={})
        assert r.status_code == 403 and "result policy" in r.json()["detail"], (purpose, r.text[:200])
    # a dataset and purpose without one reads as always
    assert guarded.get("/v1/datasets/patients/rows", headers=headers(world, "carol", "governance")).status_code == 200
    assert guarded.post("/v1/datasets/patients/scan", headers=headers(world, "carol", "governance"),
                        json={}).status_code == 200
