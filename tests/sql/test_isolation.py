"""Analyst SQL in worker processes (govern.sql.isolation): the same answers and audit metadata as
the in-process engine, the policy the gateway passes (never the folder's), describe without data.

One service (two workers) for the module: starting workers costs a second or two each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import AccessDenied, GovernError, SqlError
from govern.policy.load import load_policy
from govern.policy.model import local_principal
from govern.sql import SqlEngine
from govern.sql.isolation import SqlService, parse_size
from tests.conftest import edit
from tests.sql.conftest import rows

JOIN = ("SELECT p.region, e.department, count(*) AS n, round(avg(e.cost), 2) AS cost FROM patients p "
        "JOIN encounters e USING (patient_id) WHERE e.cost > $1 GROUP BY 1, 2")


@pytest.fixture(scope="module")
def service(demo_world) -> Iterator[SqlService]:
    s = SqlService(load_settings(demo_world.config, watch_policies=False, sql_workers=2))
    s.start()
    yield s
    s.close()


@pytest.fixture(scope="module")
def gov(demo_world) -> Governor:
    return Governor(load_settings(demo_world.config, watch_policies=False))


def deadline(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


def test_same_answer_and_audit_metadata_as_in_process(service: SqlService, gov: Governor) -> None:
    bob = local_principal(gov.state.policy, "bob")
    local = SqlEngine(gov, gov.settings).run(bob, "model-training", JOIN, [100])
    remote = service.run(bob, "model-training", JOIN, [100], gov.state.policy, deadline())
    try:
        assert rows(remote.reader.read_all()) == rows(local.reader.read_all())
        assert remote.schema == local.schema
        assert (remote.datasets, remote.plans, remote.columns) == (local.datasets, local.plans, local.columns)
        assert remote.access_plans == local.access_plans  # what the audit record describes
    finally:
        local.close()
        remote.close()


def test_workers_serve_the_policy_the_gateway_passes_never_the_folder(service: SqlService, gov: Governor,
                                                                      world) -> None:
    """The workers' own settings point at the demo world's folder, where analysts may read; the
    gateway serves a version loaded elsewhere, where they may not: the workers follow the gateway."""
    served = gov.state.policy
    edit(world.directory / "policies" / "policy.csv", "p, analyst, group:clinical, read, analytics, allow",
         "p, analyst, group:clinical, read, analytics, deny")
    revoked = load_policy(world.directory / "policies")
    assert revoked.version != served.version
    assert service.settings.policy_dir != world.directory / "policies"
    alice = local_principal(served, "alice")
    query = "SELECT count(*) AS n FROM encounters"
    with pytest.raises((AccessDenied, SqlError)):
        service.run(alice, "analytics", query, None, revoked, deadline()).close()
    result = service.run(alice, "analytics", query, None, served, deadline())  # back to the served version
    try:
        assert result.reader.read_all().column("n")[0].as_py() > 0
    finally:
        result.close()


def test_describe_reads_no_data(service: SqlService, gov: Governor) -> None:
    """Over empty views a failing expression never runs: describe answers, run fails."""
    alice = local_principal(gov.state.policy, "alice")
    sql = "SELECT zip, error('boom') AS e FROM patients"
    schema = service.describe(alice, "analytics", sql, None, gov.state.policy, deadline())
    assert schema.names == ["zip", "e"]
    with pytest.raises(GovernError):
        service.run(alice, "analytics", sql, None, gov.state.policy, deadline()).close()


def test_tables_are_the_masked_schemas(service: SqlService, gov: Governor) -> None:
    alice = local_principal(gov.state.policy, "alice")
    tables = service.tables(alice, "analytics", gov.state.policy)
    assert tables == SqlEngine(gov, gov.settings).tables(alice, "analytics")
    assert "ssn" not in tables["patients"].names


def test_a_result_bigger_than_a_message_is_split(demo_world, gov: Governor) -> None:
    small = SqlService(load_settings(demo_world.config, watch_policies=False, sql_workers=1, sql_batch_bytes=4096))
    try:
        bob = local_principal(gov.state.policy, "bob")
        result = small.run(bob, "model-training", "SELECT * FROM encounters", None, gov.state.policy, deadline(60))
        batches = list(result.reader)
        result.close()
        assert len(batches) > 10 and sum(b.num_rows for b in batches) > 1000
        with pytest.raises(GovernError, match="larger than 4096 bytes"):
            small.run(bob, "model-training", "SELECT repeat('x', 10000) AS big", None, gov.state.policy,
                      deadline()).reader.read_all()
    finally:
        small.close()


@pytest.mark.parametrize("text,size", [("3GB", 3 * 10**9), ("512MiB", 512 * 2**20), ("1.5 GB", 1_500_000_000),
                                       ("100", 100), (4096, 4096)])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_the_example_in_the_docs_runs(demo_world, gov: Governor) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "sql.md").read_text()
    section = text.split("### Worker processes", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {"settings": load_settings(demo_world.config, watch_policies=False, sql_workers=1),
                 "governor": gov, "principal": local_principal(gov.state.policy, "alice")}
    exec(compile(code, "docs/sql.md", "exec"), namespace)
    assert namespace["table"].to_pylist() == [{"region": "EU", "n": namespace["table"].column("n")[0].as_py()}]


def test_waiting_for_a_worker_to_start_is_not_the_querys_time(demo_world, gov: Governor) -> None:
    """A service whose worker is not started yet (startup, or a replacement): the query gets its
    whole time limit once the worker is up, however long starting took."""
    cold = SqlService(load_settings(demo_world.config, watch_policies=False, sql_workers=1))
    try:
        alice = local_principal(gov.state.policy, "alice")
        start = time.monotonic()
        result = cold.run(alice, "analytics", "SELECT 1 AS one", None, gov.state.policy, deadline(0.5))
        assert result.reader.read_all().to_pylist() == [{"one": 1}]
        result.close()
        assert time.monotonic() - start > 0.5  # starting the worker took longer than the query's limit
    finally:
        cold.close()
