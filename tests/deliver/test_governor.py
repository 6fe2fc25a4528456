"""Governor.dataset follows the data: a file rewritten in place or added to a folder is read as
it is now, with no restart and no policy reload (pyarrow keeps footers once read)."""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq

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
