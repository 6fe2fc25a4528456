"""The monitoring steps a surface calls: profile a data version, report drift, list alerts.

Profiles are taken through :meth:`Governor.read` — the same plan, row filters and masks any
read of that principal gets — so a profile can never hold more than its principal may see.
The caller (the CLI, the console, a scheduler) authorizes the principal first; this module
only runs the governed read and keeps the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from govern.config import Settings
from govern.deliver.governor import Governor
from govern.errors import NotFound, StorageError
from govern.identity.principal import Principal
from govern.monitor.drift import DriftReport, Thresholds, compare
from govern.monitor.profile import (
    Profile,
    column_view,
    data_version,
    profile_batches,
    rows_view,
    view_key,
)
from govern.monitor.store import ProfileStore
from govern.plan.model import AccessPlan
from govern.storage.scan import fingerprint

__all__ = ["ViewDrift", "current_drift", "drift_of", "profile_dataset"]


def profile_dataset(governor: Governor, principal: Principal, dataset: str, purpose: str,
                    store: ProfileStore) -> Profile:
    """Profile the data version ``dataset`` holds now, as ``principal`` sees it under
    ``purpose``, and store it (once per data version and view: a stored one is returned).

    Raises what :meth:`Governor.read` raises (NotFound, AccessDenied, ...), and StorageError
    if the files changed while they were read (the profile would mix two versions)."""
    settings = governor.settings
    state = governor.state
    entry = state.policy.datasets.get(dataset)
    if entry is None:
        raise NotFound(f"unknown dataset '{dataset}'")
    before = fingerprint(entry.location, settings)
    version = data_version(before)
    plan = governor.plan(principal, dataset, purpose, state=state)
    stored = store.get(dataset, version, view_key(rows_view(plan)))
    if stored is not None and _same_columns(stored, plan):
        return stored
    read = governor.read(principal, dataset, purpose, state=state)
    opts = settings.monitor
    profile = profile_batches(read.reader, read.plan, data_version=version, computed_at=_now(),
                              sample_rows=opts.profile_sample_rows, top=opts.profile_top_categories)
    if fingerprint(entry.location, settings) != before:
        raise StorageError(f"dataset '{dataset}' changed while it was profiled; profile it again")
    return store.save(profile, replace=stored is not None)  # replaced: the policy changed a column's view


def _same_columns(profile: Profile, plan: AccessPlan) -> bool:
    return [c.name for c in profile.columns] == plan.visible_names and all(
        c.view == column_view(plan, c.name) for c in profile.columns)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")  # orders versions first seen within a second


@dataclass(frozen=True)
class ViewDrift:
    """The latest profile of one dataset view, against its baseline and its previous version
    (None when there is nothing to compare with yet)."""

    dataset: str
    view_key: str
    latest: Profile
    baseline: DriftReport | None
    previous: DriftReport | None


def drift_of(store: ProfileStore, dataset: str, view: str, thresholds: Thresholds,
             baseline_version: str | None = None) -> ViewDrift | None:
    """Drift of the view's latest profile against ``baseline_version`` (default: the stored
    baseline) and against the profile before it; None if the view has no profile."""
    profiles = store.profiles(dataset, view)
    if not profiles:
        return None
    latest = profiles[-1]
    if baseline_version is not None:
        base = store.get(dataset, baseline_version, view)
        if base is None:
            raise NotFound(f"no profile of data version '{baseline_version}' of dataset '{dataset}' in this view")
    else:
        base = store.baseline(dataset, view)
    against_base = None
    if base is not None and base.data_version != latest.data_version:
        against_base = compare(base, latest, thresholds, against="baseline")
    against_prev = compare(profiles[-2], latest, thresholds, against="previous") if len(profiles) > 1 else None
    return ViewDrift(dataset, view, latest, against_base, against_prev)


def current_drift(store: ProfileStore, settings: Settings) -> list[ViewDrift]:
    """Every stored view's latest drift, with the settings' thresholds (what /metrics exports)."""
    thresholds = Thresholds.from_settings(settings.monitor)
    out = []
    for dataset in store.datasets():
        for view in store.views(dataset):
            found = drift_of(store, dataset, view, thresholds)
            if found is not None:
                out.append(found)
    return out
