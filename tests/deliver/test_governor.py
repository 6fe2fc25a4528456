"""Governor.dataset follows the data: a file rewritten in place or added to a folder is read as
it is now, with no restart and no policy reload (pyarrow keeps footers once read)."""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.policy.model import local_principal
from tests.conftest import edit
from tests.gateway import World, make_client


def _bump_mtime(path) -> None:  # type: ignore[no-untyped-def]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_a_file_rewritten_in_place_is_read_as_it_is_now(world: World) -> None:
    with make_client(world) as client:
        headers = {**world.auth("bob"), "X-Purpose": "model-training"}
        before = client.get("/v1/datasets/patients/rows", headers=headers, params={"format": "csv"})
        path = world.directory / "data" / "patients.parquet"
        table = pq.read_table(path)
        pq.write_table(table.slice(0, 100), path, row_group_size=40)
        _bump_mtime(path)
        after = client.get("/v1/datasets/patients/rows", headers=headers, params={"format": "csv"})
    assert before.status_code == after.status_code == 200, after.text
    assert before.text.count("\n") == table.num_rows + 1 and after.text.count("\n") == 101


def test_files_added_to_a_folder_are_seen(world: World) -> None:
    data = world.directory / "data"
    (data / "parts").mkdir()
    shutil.move(data / "encounters.parquet", data / "parts" / "a.parquet")
    edit(world.directory / "policies" / "catalog.yaml", "location: encounters.parquet", "location: parts/")
    gov = Governor(load_settings(world.config, watch_policies=False))
    bob = local_principal(gov.state.policy, "bob")
    first = gov.read(bob, "encounters", "model-training").reader.read_all().num_rows
    shutil.copy(data / "parts" / "a.parquet", data / "parts" / "b.parquet")
    assert gov.read(bob, "encounters", "model-training").reader.read_all().num_rows == 2 * first
    same = gov.dataset("encounters")
    assert gov.dataset("encounters") is same  # unchanged files: the opened dataset is reused


def test_a_plan_is_compiled_once_and_follows_policy_and_attributes(world: World) -> None:
    """Plans are remembered per (policy state, principal and its attributes, purpose, dataset,
    schema, key): a repeated request reuses one, anything that could change it compiles anew."""
    from dataclasses import replace

    gov = Governor(load_settings(world.config, watch_policies=False))
    alice = local_principal(gov.state.policy, "alice")
    first = gov.plan(alice, "patients", "analytics")
    assert gov.plan(alice, "patients", "analytics") is first
    assert "'EU'" in (first.row_filter_sql or "")
    # the same name with other attributes (another token's claims) gets its own plan
    moved = replace(alice, attributes={**alice.attributes, "regions": ["US"]})
    other = gov.plan(moved, "patients", "analytics")
    assert "'US'" in (other.row_filter_sql or "") and "'EU'" not in (other.row_filter_sql or "")
    assert gov.plan(alice, "patients", "analytics") is first
    # a new policy state: the remembered plan is not served under it
    masking = world.directory / "policies" / "masking.yaml"
    masking.write_text(masking.read_text().replace('filter: "region IN subject.regions"',
                                                   'filter: "region IN subject.regions AND charges > 0"', 1))
    from govern.policy.load import load_policy

    old = gov.state
    gov.swap_policy(load_policy(world.directory / "policies"))
    after = gov.plan(alice, "patients", "analytics")
    assert after is not first and after.policy_version != first.policy_version
    assert '"charges" > 0' in (after.row_filter_sql or "")
    # a request that started under the old state still gets the old state's plan
    assert '"charges"' not in (gov.plan(alice, "patients", "analytics", state=old).row_filter_sql or "")


# -- kept tables: a plan's masked rows computed once ---------------------------------------------

def test_reads_served_from_a_plans_masked_rows_equal_the_engines_for_every_demo_principal(world: World) -> None:
    """A small dataset kept decoded keeps each plan's masked rows (Governor._masked); every read
    with no filter is then a projection and a slice of them. For every demo principal and
    purpose they hold, every dataset, some column choices and limits, the rows and schema equal
    those of the engine on the files (hot tables off), on the first read and the next."""
    from govern.errors import GovernError

    settings = load_settings(world.config, watch_policies=False)
    hot, cold = Governor(settings), Governor(settings.model_copy(update={"hot_table_bytes": 0}))
    policy = hot.state.policy
    compared = 0
    for name in sorted(policy.principals):
        who = local_principal(policy, name)
        for purpose in sorted(policy.purposes):
            for dataset in sorted(policy.datasets):
                try:
                    visible = list(hot.plan(who, dataset, purpose).visible_names)
                except GovernError:
                    continue
                for columns in (None, visible[:2], visible[::-1]):
                    for limit in (None, 0, 1, 20, 100_000):
                        try:
                            want = cold.read(who, dataset, purpose, columns=columns, limit=limit).reader.read_all()
                        except GovernError as exc:
                            with pytest.raises(type(exc)):
                                hot.read(who, dataset, purpose, columns=columns, limit=limit).reader.read_all()
                            continue
                        for _ in range(2):
                            got = hot.read(who, dataset, purpose, columns=columns, limit=limit).reader.read_all()
                            assert got.schema == want.schema, (name, purpose, dataset, columns, limit)
                            assert got.equals(want), (name, purpose, dataset, columns, limit)
                        compared += 1
    assert compared > 50
    assert hot.hot.nbytes() > 0  # the reads above were served from kept tables


def test_a_plans_masked_rows_follow_the_policy_and_the_data(world: World) -> None:
    """A changed policy is a new plan hash, a rewritten file a new dataset object: neither is
    served the masked rows kept for the old one."""
    gov = Governor(load_settings(world.config, watch_policies=False))
    bob = local_principal(gov.state.policy, "bob")
    first = gov.read(bob, "patients", "model-training", limit=5).reader.read_all()
    path = world.directory / "data" / "patients.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(1_000), path)
    _bump_mtime(path)
    after = gov.read(bob, "patients", "model-training", limit=5).reader.read_all()
    assert after.num_rows == 5 and not after.equals(first)
    assert after.equals(Governor(load_settings(world.config, watch_policies=False, hot_table_bytes=0))
                        .read(bob, "patients", "model-training", limit=5).reader.read_all())
