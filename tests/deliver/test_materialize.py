"""Repeated ``/rows`` reads served from masked materializations: the same bytes as the engine
path, one audit record per serve (a read of that plan), a new entry when policy or data change,
and nothing in a stored file that the plan withholds."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.policy.load import load_policy
from govern.policy.model import local_principal
from tests.conftest import edit
from tests.server.test_http import expected

CASES = [("alice", "analytics"), ("bob", "model-training"), ("bob", "research"), ("carol", "governance"),
         ("dave", "treatment")]


def _get(client, world, who: str, purpose: str, dataset: str = "patients", **params):
    r = client.get(f"/v1/datasets/{dataset}/rows", params=params,
                   headers={**world.auth(who), "X-Purpose": purpose})
    assert r.status_code == 200, r.text
    record = client.app.state.gateway.audit.records(limit=10, request_id=r.headers["x-request-id"])
    assert len(record) == 1
    return pa.ipc.open_stream(r.content).read_all(), record[0]


def test_a_repeated_read_is_served_from_the_materialization_and_equals_the_engine(client, world, leaks) -> None:
    for who, purpose in CASES:
        for dataset in ("patients", "encounters"):
            want = expected(world, who, dataset, purpose)
            first, rec1 = _get(client, world, who, purpose, dataset)
            second, rec2 = _get(client, world, who, purpose, dataset)
            assert first.equals(want) and second.equals(want), (who, purpose, dataset)
            assert rec1.extra["materialization"]["built"] is True
            assert rec2.extra["materialization"] == {**rec1.extra["materialization"], "built": False}
            assert (rec2.outcome, rec2.action, rec2.plan_hash, rec2.rows) == ("ok", "read", rec1.plan_hash,
                                                                            want.num_rows)
            # a projection and a peek come from the same file
            cols = want.schema.names[:2][::-1]
            part, rec3 = _get(client, world, who, purpose, dataset, columns=",".join(cols), limit=5)
            assert part.equals(want.select(cols).slice(0, 5)) and rec3.extra["materialization"]["built"] is False
            # a filter takes the engine path
            _, rec4 = _get(client, world, who, purpose, dataset, filter="1 = 1")
            assert "materialization" not in rec4.extra


def test_a_peek_never_builds_and_formats_agree(client, world) -> None:
    _, rec = _get(client, world, "alice", "analytics", limit=3)
    assert "materialization" not in rec.extra
    r = client.get("/v1/datasets/patients/rows", params={"format": "csv"},
                   headers={**world.auth("alice"), "X-Purpose": "analytics"})
    r2 = client.get("/v1/datasets/patients/rows", params={"format": "csv"},
                    headers={**world.auth("alice"), "X-Purpose": "analytics"})
    assert r.status_code == r2.status_code == 200 and r.content == r2.content


def test_stored_files_hold_only_what_the_plan_delivers(client, world, leaks) -> None:
    gov = Governor(load_settings(world.config))
    root = world.directory / "state" / "materialized"
    for who, purpose in CASES[:3]:  # principals who never see raw values
        _get(client, world, who, purpose)
        plan = gov.plan(local_principal(gov.state.policy, who), "patients", purpose)
        [path] = root.glob(f"{plan.hash}.*.parquet")
        table = pq.read_table(path)
        leaks.assert_none(str(table.to_pylist()), path.read_bytes().decode("latin-1"))
        assert table.schema.names == plan.visible_names  # withheld columns are not in the file at all
        assert all(c.name not in table.schema.names for c in plan.columns if not c.visible)
        if who == "alice":
            assert set(table.column("region").to_pylist()) == {"EU"}  # her row filter, applied
    assert len(list(root.glob("*.parquet"))) == 3


def test_policy_and_data_changes_make_a_new_entry(client, world) -> None:
    _, first = _get(client, world, "alice", "analytics")
    edit(world.directory / "policies" / "masking.yaml", "{scale: 100}", "{scale: 50}")
    client.app.state.gateway.governor.swap_policy(load_policy(world.directory / "policies"))
    _, second = _get(client, world, "alice", "analytics")
    assert second.extra["materialization"]["built"] is True and second.plan_hash != first.plan_hash
    path = world.directory / "data" / "patients.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 100), path)
    got, third = _get(client, world, "alice", "analytics")
    assert third.extra["materialization"]["built"] is True
    assert third.extra["materialization"]["file_id"] != second.extra["materialization"]["file_id"]
    assert got.equals(expected(world, "alice", "patients", "analytics"))


def test_govern_materialize_builds_what_the_first_read_then_finds(client, world) -> None:
    from click.testing import CliRunner

    from govern.cli import main

    args = ["materialize", "patients", "--principal", "bob", "--purpose", "research", "--config", str(world.config)]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0 and ": built: plan " in done.output and " rows, " in done.output, done.output
    assert "already stored" in CliRunner().invoke(main, args).output
    got, record = _get(client, world, "bob", "research")
    assert record.extra["materialization"]["built"] is False  # the CLI's entry, found by the gateway
    assert got.equals(expected(world, "bob", "patients", "research"))
    r = client.get("/v1/datasets/patients/rows", params={"format": "parquet"},
                   headers={**world.auth("bob"), "X-Purpose": "research"})
    [path] = (world.directory / "state" / "materialized").glob("*.parquet")
    assert r.content == path.read_bytes()  # a whole Parquet read is the stored file itself
    refused = CliRunner().invoke(main, ["materialize", "patients", "--principal", "eve", "--purpose", "analytics",
                                        "--config", str(world.config)])
    assert refused.exit_code != 0 and refused.output.startswith("error:")


def test_a_whole_parquet_read_of_a_materialization_tells_its_length_at_any_size(client, world, monkeypatch) -> None:
    """The stored file's size is known before a byte is read: told however large the file is (a
    Parquet reader seeks to the footer), while an encoded Parquet body is told only when it
    fits in what the gateway holds back."""
    monkeypatch.setattr("govern.server.streaming.KNOWN_LENGTH", 64)  # a body above this streams
    headers = {**world.auth("bob"), "X-Purpose": "research"}
    r = client.get("/v1/datasets/patients/rows", params={"format": "parquet"}, headers=headers)
    [path] = (world.directory / "state" / "materialized").glob("*.parquet")
    assert r.status_code == 200 and r.content == path.read_bytes()
    assert r.headers["content-length"] == str(len(r.content)) and len(r.content) > 64
    some = client.get("/v1/datasets/patients/rows", params={"format": "parquet", "columns": "zip"}, headers=headers)
    assert some.status_code == 200 and "content-length" not in some.headers  # encoded as it goes
