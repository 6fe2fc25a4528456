"""Differential privacy through the gateway: POST /v1/datasets/{name}/dp, DP SQL over HTTP,
GET /v1/budget — status, problem+json bodies, ledger rows and exactly one audit record each."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import edit
from tests.gateway import World, make_client

ALICE = {"X-Purpose": "analytics"}
COUNT_MEAN = {"aggregates": [{"function": "count"}, {"function": "mean", "column": "charges"}],
              "group_by": ["region"], "epsilon": 0.5}


def headers(world: World, who: str, purpose: str = "analytics") -> dict[str, str]:
    return {**world.auth(who), "X-Purpose": purpose}


def records(client, request_id: str):  # type: ignore[no-untyped-def]
    return client.app.state.gateway.audit.records(limit=100, request_id=request_id)


def raw(world: World, name: str = "patients"):  # type: ignore[no-untyped-def]
    return pq.read_table(world.directory / "data" / f"{name}.parquet").to_pandas()


def test_a_release_carries_values_intervals_and_budget_and_is_audited_once(client, world: World) -> None:
    r = client.post("/v1/datasets/patients/dp", headers=headers(world, "alice"), json=COUNT_MEAN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["region", "count", "mean_charges"]
    assert [row["region"] for row in body["rows"]] == ["APAC", "EU", "US"]  # public keys, sorted
    for row in body["rows"]:
        low, high = row["count"]["interval"]
        assert low <= max(row["count"]["value"], 0) <= high and row["count"]["accuracy"] > 0
        assert 0 <= row["mean_charges"]["interval"][0] <= row["mean_charges"]["interval"][1] <= 50000
    assert body["privacy"] | {"parts": None, "mechanisms": None} == {
        "unit": "patient_id", "contributions": 1, "keys": "public", "epsilon": 0.5, "delta": 0.0,
        "confidence": 0.95, "threshold": None, "parts": None, "mechanisms": None}
    assert body["budget"]["spent"] == {"epsilon": 0.5, "delta": 0.0}
    assert body["budget"]["left"] == {"epsilon": 4.5, "delta": 1e-6}
    assert "opendp;dur=" in r.headers["server-timing"]
    [rec] = records(client, r.headers["x-request-id"])
    assert (rec.action, rec.outcome, rec.status, rec.dataset, rec.purpose) == ("query_dp", "ok", 200, "patients",
                                                                                "analytics")
    assert rec.plan_hash == r.headers["x-govern-plan-hash"] == body["plan_hash"]
    assert rec.extra["epsilon_spent"] == 0.5 and rec.extra["dp"]["group_by"] == ["region"]
    [charge] = client.app.state.gateway.ledger.charges(principal="alice")
    assert (charge["request_id"], charge["epsilon"], charge["dataset"]) == (r.headers["x-request-id"], 0.5, "patients")


def test_row_filters_apply_before_aggregation(client, world: World) -> None:
    data = raw(world)
    body = {"aggregates": [{"function": "count"}], "group_by": ["region"], "epsilon": 4.0}  # noise scale 0.25
    alice = {r["region"]: r["count"]["value"] for r in client.post(
        "/v1/datasets/patients/dp", headers=headers(world, "alice"), json=body).json()["rows"]}
    bob = {r["region"]: r["count"]["value"] for r in client.post(
        "/v1/datasets/patients/dp", headers=headers(world, "bob", "research"), json=body).json()["rows"]}
    truth = data.region.value_counts().to_dict()
    # ±5 is 20 noise scales: failure probability < 1e-8
    assert abs(alice["EU"] - truth["EU"]) <= 5 and abs(alice["US"]) <= 5 and abs(alice["APAC"]) <= 5
    assert all(abs(bob[k] - truth[k]) <= 5 for k in truth)  # bob may bypass the region filter


def test_masked_columns_feed_raw_values_into_the_aggregate(client, world: World) -> None:
    # alice sees charges noised, and NULL where a cell rule hides HIV / substance use rows; only
    # the noisy aggregate leaves, so DP counts the raw (non-null) values of her EU rows.
    data = raw(world)
    eu = data[data.region == "EU"]
    hidden = int(eu.diagnosis.isin(["HIV", "Substance use disorder"]).sum())
    assert hidden > 20
    r = client.post("/v1/datasets/patients/dp", headers=headers(world, "alice"),
                    json={"aggregates": [{"function": "count", "column": "charges"}], "epsilon": 4.0})
    assert abs(r.json()["rows"][0]["count_charges"]["value"] - int(eu.charges.notna().sum())) <= 5


def test_over_budget_is_refused_and_charges_nothing(client, world: World) -> None:
    first = client.post("/v1/datasets/patients/dp", headers=headers(world, "alice"),
                        json={"aggregates": [{"function": "count"}], "epsilon": 4.9})
    assert first.status_code == 200
    r = client.post("/v1/datasets/patients/dp", headers=headers(world, "alice"),
                    json={"aggregates": [{"function": "count"}], "epsilon": 0.2})
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:govern:problem:budget-exceeded"
    assert problem["budget"]["left"]["epsilon"] == pytest.approx(0.1) and "rows" not in problem
    assert len(client.app.state.gateway.ledger.charges(principal="alice")) == 1
    [rec] = records(client, r.headers["x-request-id"])
    assert (rec.action, rec.outcome, rec.extra["epsilon_spent"]) == ("query_dp", "denied", 0.0)
    budget = client.get("/v1/budget", headers=world.auth("alice"), params={"dataset": "patients"}).json()
    assert budget["budgets"][0]["spent"]["epsilon"] == pytest.approx(4.9)


def test_query_dp_without_read_gets_aggregates_only(world: World) -> None:
    policy = world.directory / "policies" / "policy.csv"
    policy.write_text(policy.read_text() + "\np, eve, dataset:patients, query_dp, analytics, allow\n")
    edit(world.directory / "policies" / "principals.yaml", "      clearance: public\n",
         "      clearance: internal\n")
    with make_client(world) as c:
        eve = headers(world, "eve")
        ok = c.post("/v1/datasets/patients/dp", headers=eve,
                    json={"aggregates": [{"function": "count"}, {"function": "mean", "column": "charges"}],
                          "group_by": ["region"], "epsilon": 1.0})
        assert ok.status_code == 200, ok.text
        assert c.get("/v1/datasets/patients/rows", headers=eve).json()["type"] == "urn:govern:problem:access-denied"
        sql = c.post("/v1/sql", headers=eve, json={"sql": "select count(*) from patients"})
        assert sql.status_code in (400, 403) and "rows" not in sql.json()  # not a readable table for her
        # a column above her clearance stays unusable, even for noisy aggregates
        r = c.post("/v1/datasets/patients/dp", headers=eve,
                   json={"aggregates": [{"function": "histogram", "column": "diagnosis"}], "epsilon": 0.1})
        assert r.status_code == 400 and r.json()["columns"] == ["diagnosis"]
        # and without query_dp there is no release at all: a dataset she has no grant on is
        # answered exactly like one that does not exist
        denied = c.post("/v1/datasets/encounters/dp", headers=eve,
                        json={"aggregates": [{"function": "count"}], "epsilon": 0.1})
        unknown = c.post("/v1/datasets/nosuch/dp", headers=eve,
                         json={"aggregates": [{"function": "count"}], "epsilon": 0.1})
        assert denied.json()["type"] == unknown.json()["type"] == "urn:govern:problem:not-found"
        assert denied.json()["detail"].replace("encounters", "X") == unknown.json()["detail"].replace("nosuch", "X")


@pytest.mark.parametrize("body, status, slug, needle", [
    ({"aggregates": [{"function": "sum", "column": "ssn"}], "epsilon": 0.1}, 400, "unknown-column", "ssn"),
    ({"aggregates": [{"function": "sum", "column": "zip"}], "epsilon": 0.1}, 400, "invalid-request", "not numeric"),
    ({"aggregates": [{"function": "mean", "column": "charges"}], "group_by": ["zip"], "epsilon": 0.1}, 400,
     "invalid-request", "delta"),
    ({"aggregates": [{"function": "count"}], "epsilon": 0}, 400, "invalid-request", "epsilon"),
    ({"aggregates": [], "epsilon": 1}, 400, "invalid-request", "aggregates"),
    ({"aggregates": [{"function": "median", "column": "charges"}], "epsilon": 1}, 400, "invalid-request", "function"),
])
def test_refusals_are_clear_and_audited(client, world: World, body, status, slug, needle) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/datasets/patients/dp", headers=headers(world, "alice"), json=body)
    assert r.status_code == status and r.json()["type"] == f"urn:govern:problem:{slug}"
    assert needle in r.text
    [rec] = records(client, r.headers["x-request-id"])
    assert rec.action == "query_dp" and rec.outcome == "denied"
    assert client.app.state.gateway.ledger.charges(principal="alice") == []


def test_private_group_keys_need_delta_and_a_threshold(client, world: World) -> None:
    r = client.post("/v1/datasets/encounters/dp", headers=headers(world, "bob", "research"),
                    json={"aggregates": [{"function": "count"}], "group_by": ["date"], "epsilon": 1.0, "delta": 1e-7})
    assert r.status_code == 403  # bob has no query_dp on encounters
    r = client.post("/v1/datasets/patients/dp", headers=headers(world, "bob", "research"),
                    json={"aggregates": [{"function": "count"}], "group_by": ["diagnosis"], "epsilon": 1.0,
                          "delta": 1e-7})
    assert r.status_code == 400  # withheld for data scientists (deny read on tag:phi)
    r = client.post("/v1/datasets/patients/dp", headers=headers(world, "bob", "research"),
                    json={"aggregates": [{"function": "count"}], "group_by": ["zip"], "epsilon": 1.0, "delta": 1e-7})
    assert r.status_code == 200
    body = r.json()
    assert body["privacy"]["keys"] == "threshold" and body["privacy"]["threshold"] > 10
    assert all(row["count"]["value"] >= body["privacy"]["threshold"] for row in body["rows"])
    assert body["budget"]["spent"]["delta"] == pytest.approx(1e-7)


def test_supplied_keys_are_public(client, world: World) -> None:
    r = client.post("/v1/datasets/patients/dp", headers=headers(world, "bob", "research"),
                    json={"aggregates": [{"function": "count"}], "group_by": ["zip"], "epsilon": 1.0,
                          "keys": {"zip": ["00000", "99999"]}})
    assert r.status_code == 200
    assert [row["zip"] for row in r.json()["rows"]] == ["00000", "99999"]


def test_histograms(client, world: World) -> None:
    r = client.post("/v1/datasets/encounters/dp", headers=headers(world, "alice"), json={
        "aggregates": [{"function": "histogram", "column": "cost", "bins": [0, 1000, 5000, 20000]},
                       {"function": "histogram", "column": "department", "name": "by_department"}],
        "epsilon": 1.0, "contributions": 5})
    assert r.status_code == 200, r.text
    [row] = r.json()["rows"]
    assert [b["bin"] for b in row["histogram_cost"]] == ["[0, 1000)", "[1000, 5000)", "[5000, 20000)"]
    departments = sorted(raw(world, "encounters").department.unique())
    assert [b["bin"] for b in row["by_department"]] == departments
    assert all(b["interval"][0] <= b["interval"][1] for b in row["by_department"])


def test_dp_sql_over_http(client, world: World) -> None:
    r = client.post("/v1/sql", headers=headers(world, "alice"), json={
        "sql": "select region, count(*) as n, avg(charges), median(charges) from patients "
               "where diagnosis <> 'Influenza' group by region", "privacy": "dp", "epsilon": 1.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["name"] for c in body["columns"]] == ["region", "n", "avg", "median"]
    assert [c["type"] for c in body["columns"]] == ["string", "int64", "double", "double"]
    assert body["row_count"] == 3 and [row[0] for row in body["rows"]] == ["APAC", "EU", "US"]
    assert body["intervals"][1][0] is None and len(body["intervals"][1][1]) == 2
    assert {m["aggregate"] for m in body["privacy"]["mechanisms"]} == {"n", "avg", "median"}
    [rec] = records(client, r.headers["x-request-id"])
    assert rec.action == "query_dp" and rec.extra["sql"].startswith("select region")
    hinted = client.post("/v1/sql", headers=headers(world, "alice"),
                         json={"sql": "/*+ dp epsilon=0.25 */ SELECT COUNT(*) FROM patients"})
    assert hinted.status_code == 200 and hinted.json()["budget"]["spent"]["epsilon"] == 1.25


@pytest.mark.parametrize("sql, reason", [
    ("select count(*) from patients p join encounters e using (patient_id)", "no JOIN"),
    ("select patient_id from patients", "must appear in GROUP BY"),
    ("select count(distinct zip) from patients", "COUNT(DISTINCT"),
    ("select sum(charges * 2) from patients", "plain column"),
    ("select count(*) from (select * from patients) t", "FROM one dataset"),
    ("select count(*) from read_parquet('/etc/passwd')", "FROM one dataset"),
    ("select region, count(*) from patients group by region order by 2", "no ORDER BY"),
])
def test_dp_sql_outside_the_subset_is_refused_with_the_reason(client, world: World, sql: str, reason: str) -> None:
    r = client.post("/v1/sql", headers=headers(world, "alice"), json={"sql": sql, "privacy": "dp", "epsilon": 0.1})
    assert r.status_code == 400 and r.json()["type"] == "urn:govern:problem:invalid-sql"
    assert reason in r.json()["detail"]
    [rec] = records(client, r.headers["x-request-id"])
    assert rec.action == "query_dp" and rec.outcome == "denied"


def test_dp_sql_needs_an_epsilon(client, world: World) -> None:
    r = client.post("/v1/sql", headers=headers(world, "alice"),
                    json={"sql": "select count(*) from patients", "privacy": "dp"})
    assert r.status_code == 400 and "epsilon" in r.json()["detail"]


def test_budget_lists_every_dataset_with_a_budget(client, world: World) -> None:
    r = client.get("/v1/budget", headers=world.auth("bob"))
    assert r.status_code == 200
    budgets = {b["dataset"]: b for b in r.json()["budgets"]}
    assert budgets["patients"]["budget"]["epsilon"] == 10.0  # the data-scientist override
    assert budgets["patients"]["budget"]["subject"] == "data-scientist"
    assert budgets["encounters"]["left"] == {"epsilon": 3.0, "delta": 1e-6}
    assert client.get("/v1/budget").status_code == 401


def test_a_steward_sees_another_principals_budget_and_leaves_a_record(client, world: World) -> None:
    spent = client.post("/v1/datasets/patients/dp", headers=headers(world, "alice"), json=COUNT_MEAN)
    assert spent.status_code == 200
    steward = headers(world, "carol", "governance")
    r = client.get("/v1/budget", headers=steward, params={"principal": "alice", "dataset": "patients"})
    assert r.status_code == 200, r.text
    assert r.json()["principal"] == "alice"
    assert r.json()["budgets"][0]["spent"]["epsilon"] == 0.5
    (record,) = records(client, r.headers["x-request-id"])
    assert (record.principal, record.action, record.outcome, record.dataset) == ("carol", "budget", "ok", "patients")
    assert record.extra["of"] == "alice"
    # every dataset with a budget that carol administers (both clinical datasets)
    listed = client.get("/v1/budget", headers=steward, params={"principal": "alice"}).json()["budgets"]
    assert {b["dataset"] for b in listed} == {"patients", "encounters"}


@pytest.mark.parametrize(("who", "params", "purpose", "status", "slug"), [
    ("bob", {"principal": "alice"}, "model-training", 403, "access-denied"),  # bob administers nothing
    ("carol", {"principal": "alice"}, None, 400, "purpose-required"),  # a steward declares a purpose
    ("carol", {"principal": "nobody"}, "governance", 404, "not-found"),  # a typo is not a row of zeros
    ("carol", {"principal": "alice", "dataset": "nope"}, "governance", 404, "not-found"),
])
def test_another_principals_budget_is_for_stewards_only(client, world: World, who, params, purpose, status,  # type: ignore[no-untyped-def]
                                                        slug) -> None:
    h = world.auth(who) if purpose is None else headers(world, who, purpose)
    r = client.get("/v1/budget", headers=h, params=params)
    assert r.status_code == status, r.text
    assert r.json()["type"] == f"urn:govern:problem:{slug}" and "budgets" not in r.json()
    (record,) = records(client, r.headers["x-request-id"])
    assert record.outcome != "ok"
    # asking for your own budget by name needs nothing more
    assert client.get("/v1/budget", headers=world.auth("bob"), params={"principal": "bob"}).status_code == 200


def test_an_oversized_body_is_refused_before_it_is_read(client, world: World) -> None:
    from govern.server.routes.dp import MAX_BODY

    r = client.post("/v1/datasets/patients/dp", headers=headers(world, "alice"),
                    content=b"{" + b" " * MAX_BODY + b"}")
    assert r.status_code == 413 and r.json()["type"] == "urn:govern:problem:limit-exceeded"
    (record,) = records(client, r.headers["x-request-id"])
    assert record.outcome != "ok"


def test_an_unwritable_ledger_returns_nothing(world: World) -> None:
    with make_client(world, ledger_url="sqlite:////proc/govern-ledger.db") as c:
        r = c.post("/v1/datasets/patients/dp", headers=headers(world, "alice"), json=COUNT_MEAN)
        assert r.status_code == 503 and r.json()["type"] == "urn:govern:problem:ledger-unavailable"
        assert "rows" not in r.json() and "/proc" not in r.text
        [rec] = records(c, r.headers["x-request-id"])
        assert rec.outcome == "error" and rec.extra["epsilon_spent"] == 0.0


def test_an_unwritable_audit_store_returns_nothing_and_charges_nothing(world: World, tmp_path: Path) -> None:
    with make_client(world, audit_url="sqlite:////proc/govern-audit.db") as c:
        r = c.post("/v1/datasets/patients/dp", headers=headers(world, "alice"), json=COUNT_MEAN)
        assert r.status_code == 503 and r.json()["type"] == "urn:govern:problem:audit-unavailable"
        assert c.app.state.gateway.ledger.charges() == []
