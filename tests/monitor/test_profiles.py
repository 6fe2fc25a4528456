"""Profiles of the demo world through the Governor: they hold only what the principal's plan
delivers, are stored once per data version and view, are shown only to a plan with the same
view, and a rewritten data file is a new version whose drift reaches /metrics."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import NotFound, PurposeNotEntitled
from govern.monitor.drift import Thresholds
from govern.monitor.profile import visible_to
from govern.monitor.prometheus import DriftCollector
from govern.monitor.run import current_drift, drift_of, profile_dataset
from govern.monitor.store import ProfileStore
from govern.policy.load import load_policy
from govern.policy.model import local_principal
from tests.conftest import edit


@pytest.fixture
def setup(world):
    settings = load_settings(world.config)
    gov = Governor(settings)
    return world, settings, gov, ProfileStore.under(settings.state_dir)


def who(gov: Governor, name: str):
    return local_principal(gov.state.policy, name)


def test_a_profile_holds_only_what_the_plan_delivers(setup, leaks) -> None:
    _world, _settings, gov, store = setup
    alice = who(gov, "alice")
    prof = profile_dataset(gov, alice, "patients", "analytics", store)
    served = gov.read(alice, "patients", "analytics").reader.read_all()
    assert [c.name for c in prof.columns] == served.schema.names  # phone (unclassified) is not there
    assert prof.rows == served.num_rows < 2_000  # alice's row filter: EU only
    for col in prof.columns:
        values = served.column(col.name)
        if col.kind == "categorical":
            assert {v for v, _ in col.top} <= {str(v) for v in pc.unique(values).to_pylist()}, col.name
        if col.kind == "text":
            assert col.top == () and col.quantiles == ()
    email = prof.column("email")
    assert email.kind == "categorical" and all(v.startswith("*@") for v, _ in email.top)  # email_domain
    for path in store.root.rglob("*.json"):
        leaks.assert_none(path.read_text())
        assert path.stat().st_mode & 0o077 == 0


def test_profiles_are_shown_only_to_a_plan_with_the_same_view(setup) -> None:
    world, _settings, gov, store = setup
    carol, alice = who(gov, "carol"), who(gov, "alice")
    theirs = profile_dataset(gov, carol, "patients", "governance", store)  # all regions, email in the clear
    alice_plan = gov.plan(alice, "patients", "analytics")
    assert visible_to(theirs, alice_plan) is None  # other rows
    assert visible_to(theirs, gov.plan(carol, "patients", "governance")) == theirs
    # the policy now masks email for stewards too: the stored profile's email is not shown any more
    edit(world.directory / "policies" / "policy.csv", "p, steward, tag:contact, unmask, governance, allow\n", "")
    gov.swap_policy(load_policy(world.directory / "policies"))
    now = visible_to(theirs, gov.plan(carol, "patients", "governance"))
    assert now is not None and now.column("email") is None and now.column("region") is not None
    again = profile_dataset(gov, carol, "patients", "governance", store)  # same data: replaced, not added
    assert again.column("email").view["mask"]["function"] == "email_domain"
    assert [p.data_version for p in store.profiles("patients", again.view_key)] == [theirs.data_version]


def test_a_principal_without_a_grant_gets_no_profile(setup) -> None:
    _world, _settings, gov, store = setup
    with pytest.raises(PurposeNotEntitled):
        profile_dataset(gov, who(gov, "eve"), "patients", "analytics", store)
    with pytest.raises(NotFound):
        profile_dataset(gov, who(gov, "carol"), "nope", "governance", store)
    assert store.datasets() == []


def test_a_new_data_version_is_compared_with_the_baseline_and_exported(setup) -> None:
    world, settings, gov, store = setup
    carol = who(gov, "carol")
    first = profile_dataset(gov, carol, "patients", "governance", store)
    assert profile_dataset(gov, carol, "patients", "governance", store) == first  # profiled once per version
    assert drift_of(store, "patients", first.view_key, Thresholds()).baseline is None
    path = world.directory / "data" / "patients.parquet"
    table = pq.read_table(path)
    charges = table.column("charges").to_numpy(zero_copy_only=False)
    shifted = np.where(np.isnan(charges), charges, charges * 2 + 1_000)
    pq.write_table(table.set_column(table.schema.get_field_index("charges"), "charges", pa.array(shifted)), path)
    second = profile_dataset(gov, carol, "patients", "governance", store)
    assert second.data_version != first.data_version
    found = drift_of(store, "patients", second.view_key, Thresholds())
    assert found is not None and found.baseline is not None and found.previous is not None
    report = found.baseline
    drifted = {c.column for c in report.columns if c.drifted}
    assert drifted == {"charges"}, report.to_dict()
    assert report.share == pytest.approx(1 / sum(c.comparable for c in report.columns))
    assert not report.drifted  # one column of eight: below the dataset threshold (0.5)
    store.set_baseline("patients", second.view_key, second.data_version)
    assert drift_of(store, "patients", second.view_key, Thresholds()).baseline is None  # latest is the baseline
    with pytest.raises(NotFound):
        store.set_baseline("patients", second.view_key, "0" * 16)
    store.set_baseline("patients", second.view_key, first.data_version)
    registry = CollectorRegistry()
    registry.register(DriftCollector(store, settings))
    text = generate_latest(registry).decode()
    view = second.view_key[:16]
    assert f'govern_drift_column{{against="baseline",column="charges",dataset="patients",view="{view}"}} 1.0' in text
    assert f'govern_drift_alert{{against="previous",dataset="patients",view="{view}"}} 0.0' in text
    assert 'metric="wasserstein_sigma"' in text and "govern_profile_rows" in text
    assert [d.dataset for d in current_drift(store, settings)] == ["patients"]
    json.dumps(report.to_dict())  # plain data for the console
