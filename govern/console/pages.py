"""What each console page shows, computed for one signed-in steward (no HTTP here).

Each function takes the :class:`Viewer` — the exchange of the request (its policy version,
principal, purpose) and the datasets the viewer administers — and returns the template's
context. Scope is always the administered datasets: another dataset's name, columns, audit
records, budgets and profiles never reach a page. Values of data reach a page only through the
viewer's own plan (monitoring profiles are filtered by :func:`govern.monitor.profile.visible_to`);
classification shows counts and shares, never a sampled value.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from govern.audit import visible as audit_visible
from govern.audit.record import AuditRecord
from govern.console import dryrun, svg
from govern.console.access import MatrixCache, effective_access, subjects
from govern.console.fleet import instances
from govern.console.matrix_html import matrix_table
from govern.deliver.gateway import Gateway
from govern.deliver.governor import Governor, PolicyState
from govern.deliver.lifecycle import Exchange
from govern.errors import GovernError, InvalidRequest, PolicyError
from govern.identity.principal import Principal
from govern.monitor.classify import Classification, classify_dataset
from govern.monitor.drift import DriftReport, Thresholds, compare
from govern.monitor.profile import GRID, Profile, rows_view, view_key, visible_to
from govern.monitor.store import ProfileStore
from govern.plan.model import LEVELS
from govern.policy.decide import Decider
from govern.policy.load import load_policy
from govern.policy.model import local_principal

__all__ = ["Viewer", "access", "audit", "budgets", "catalog", "classification", "dry_run", "fleet", "monitoring"]

REPLAY_RECORDS = 10_000  # the dry run replays this many recent records
AUDIT_WINDOW = 5_000  # the audit explorer filters this many recent records
AUDIT_SHOWN = 200


@dataclass
class Viewer:
    gateway: Gateway
    exchange: Exchange
    principal: Principal
    purpose: str
    administered: tuple[str, ...]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    matrices: MatrixCache = field(default_factory=MatrixCache)

    @property
    def state(self) -> PolicyState:
        return self.exchange.state

    @property
    def governor(self) -> Governor:
        return self.gateway.governor

    def schemas(self, names: list[str] | tuple[str, ...] | None = None) -> tuple[dict[str, pa.Schema], dict[str, str]]:
        """Physical schemas of administered datasets, and the storage errors of the others."""
        found, errors = {}, {}
        for name in names if names is not None else self.administered:
            if name not in self.administered:
                continue
            try:
                found[name] = self.governor.schema(name, self.state)
            except GovernError as exc:
                errors[name] = exc.detail
        return found, errors


# -- catalog -----------------------------------------------------------------------------------------
def classification(v: Viewer, dataset: str) -> Classification:
    """Sensitive-data discovery on ``dataset``'s raw sample (counts and shares come out)."""
    opts = v.gateway.settings.monitor
    state = v.state
    return classify_dataset(v.governor.dataset(dataset, state), dataset, state.policy, state.decider,
                            sample=opts.classify_sample_rows, seed=opts.classify_seed,
                            min_confidence=opts.classify_min_confidence, phone_regions=tuple(opts.phone_regions))


def catalog(v: Viewer) -> dict[str, Any]:
    policy = v.state.policy
    schemas, errors = v.schemas()
    datasets = []
    for name in v.administered:
        entry = policy.datasets[name]
        schema = schemas.get(name)
        in_data = {f.name: str(f.type) for f in schema} if schema is not None else {}
        names = list(in_data) + [c for c in entry.columns if c not in in_data]
        unclassified = [c for c in in_data if c not in entry.columns]
        suggestions: dict[str, Any] = {}
        if unclassified:
            try:
                found = classification(v, name)
            except GovernError as exc:
                errors[name] = exc.detail
            else:
                suggestions = {c.column: c for c in found.columns if c.column in unclassified}
        columns = []
        for col in names:
            ce = entry.columns.get(col)
            columns.append({"name": col, "type": in_data.get(col, "(not in the data)"),
                            "tags": ce.tags if ce else (), "level": entry.column_level(col) if ce else None,
                            "classified": ce is not None, "in_data": col in in_data,
                            "privacy_unit": col == entry.privacy_unit,
                            "source": f"catalog.yaml:{ce.line}" if ce else None,
                            "classification": suggestions.get(col)})
        datasets.append({"name": name, "entry": entry, "columns": columns, "unclassified": unclassified,
                         "error": errors.get(name)})
    return {"datasets": datasets, "levels": LEVELS}


# -- effective access ------------------------------------------------------------------------------------
def access(v: Viewer, *, purpose: str | None, kind: str, clearance: str, dataset: str | None) -> dict[str, Any]:
    state = v.state
    schemas, errors = v.schemas([dataset] if dataset else None)
    key_id = _key_id(v)
    key = _matrix_key(state.policy.version, schemas, kind, clearance, purpose or None, key_id)
    matrices = v.matrices.get(key, lambda: effective_access(
        state.policy, state.decider, schemas, subjects(state.policy, kind, clearance), purpose=purpose or None,
        key_id=key_id))
    tables = v.matrices.get((*key, "html"), lambda: [(m.dataset, matrix_table(m)) for m in matrices])
    return {"tables": tables, "errors": errors, "purposes": sorted(state.policy.purposes),
            "purpose": purpose or "", "kind": kind, "clearance": clearance, "levels": LEVELS,
            "dataset": dataset or "", "datasets": v.administered}


def _matrix_key(version: str, schemas: dict[str, pa.Schema], kind: str, clearance: str, purpose: str | None,
                key_id: str | None) -> tuple[object, ...]:
    """Everything a matrix depends on (the viewer only through which datasets it administers)."""
    return (version, tuple((n, s.to_string()) for n, s in schemas.items()), kind, clearance, purpose, key_id)


def _key_id(v: Viewer) -> str | None:
    keys = getattr(v.governor, "_keys", None)
    return getattr(keys, "active", None) or v.gateway.settings.masking_key_id


# -- policy dry run ---------------------------------------------------------------------------------------
def dry_run_root(v: Viewer) -> Path:
    settings = v.gateway.settings
    return Path(settings.console_dry_run_root or Path(settings.policy_dir).resolve().parent)


def dry_run(v: Viewer, folder_text: str | None) -> dict[str, Any]:
    root = dry_run_root(v)
    out: dict[str, Any] = {"root": str(root), "folder": folder_text or "", "ran": False}
    if folder_text is None:
        return out
    folder = dryrun.proposed_folder(folder_text, root)
    try:
        proposed = load_policy(folder)
    except PolicyError as exc:
        out.update(ran=True, problems=[str(p) for p in exc.problems] or [exc.detail])
        return out
    decider = Decider(proposed)
    state = v.state
    current_schemas, errors = v.schemas()
    gov = Governor(v.gateway.settings.model_copy(update={"policy_dir": folder}), policy=proposed,
                   keys=v.governor.keys)
    new_schemas: dict[str, pa.Schema] = {}
    for name in v.administered:
        if name in proposed.datasets:
            try:
                new_schemas[name] = gov.schema(name)
            except GovernError as exc:
                errors[name] = exc.detail
    key_id = _key_id(v)
    before = v.matrices.get(_matrix_key(state.policy.version, current_schemas, "principals", "confidential", None,
                                        key_id),
                            lambda: effective_access(state.policy, state.decider, current_schemas,
                                                     subjects(state.policy, "principals"), key_id=key_id))
    after = v.matrices.get(_matrix_key(proposed.version, new_schemas, "principals", "confidential", None, key_id),
                           lambda: effective_access(proposed, decider, new_schemas, subjects(proposed, "principals"),
                                                    key_id=key_id))
    changes = dryrun.matrix_diff(before, after)
    records = recent_records(v, REPLAY_RECORDS)
    replayed = dryrun.replay(records, proposed, decider, new_schemas, key_id=key_id, known=dryrun.read_plans(after))
    out.update(ran=True, problems=[], version=proposed.version, current_version=state.policy.version,
               changes=changes, gains=sum(c.kind == "gain" for c in changes),
               losses=sum(c.kind == "loss" for c in changes), replay=replayed, errors=errors,
               removed=sorted(d for d in v.administered if d not in proposed.datasets),
               column_kind=dryrun.column_kind)
    return out


def recent_records(v: Viewer, limit: int, *, principal: str | None = None,
                   dataset: str | None = None) -> list[AuditRecord]:
    """The newest ``limit`` records the viewer may see (other datasets' records left out,
    records of no dataset redacted), oldest first."""
    allowed = frozenset(v.administered)
    found = v.gateway.audit.latest(limit, principal=principal, dataset=dataset)
    return [r for rec in found if (r := audit_visible(rec, allowed)) is not None]


# -- audit explorer -----------------------------------------------------------------------------------------
AUDIT_FILTERS = ("principal", "purpose", "dataset", "action", "outcome", "since", "until")


def audit(v: Viewer, filters: dict[str, str], *, verify: bool) -> dict[str, Any]:
    f = {k: (filters.get(k) or "").strip() for k in AUDIT_FILTERS}
    if f["dataset"] and f["dataset"] not in v.administered:
        raise InvalidRequest(f"you do not administer dataset '{f['dataset']}'")
    records = recent_records(v, AUDIT_WINDOW, principal=f["principal"] or None, dataset=f["dataset"] or None)
    shown: deque[AuditRecord] = deque(maxlen=AUDIT_SHOWN)
    for r in records:
        if f["purpose"] and r.purpose != f["purpose"]:
            continue
        if f["action"] and r.action != f["action"]:
            continue
        if f["outcome"] and r.outcome != f["outcome"]:
            continue
        if f["since"] and r.time < f["since"]:
            continue
        if f["until"] and r.time[: len(f["until"])] > f["until"]:
            continue
        shown.append(r)
    chain = v.gateway.audit.verify() if verify else None
    return {"records": list(reversed(shown)), "filters": f, "window": AUDIT_WINDOW, "chain": chain,
            "outcomes": ("ok", "denied", "error", "aborted"), "datasets": v.administered}


# -- budgets ---------------------------------------------------------------------------------------------------
def budgets(v: Viewer) -> dict[str, Any]:
    policy = v.state.policy
    ledger = v.gateway.ledger
    rows = []
    for name in sorted(policy.principals):
        who = local_principal(policy, name)
        for ds in v.administered:
            status = ledger.status(who, ds)
            if status.budget is not None:
                rows.append(status)
    charts = []
    for ds in v.administered:
        charges: list[dict[str, Any]] = []
        after = 0
        while len(charges) < 10_000:
            page = ledger.charges(dataset=ds, after_id=after, limit=1000)
            if not page:
                break
            charges += page
            after = int(page[-1]["id"])
        if not charges:
            continue
        series: dict[str, list[tuple[float, float]]] = {}
        totals: dict[str, float] = {}
        for c in charges:
            at = _epoch(str(c["time"]))
            totals[c["principal"]] = totals.get(c["principal"], 0.0) + float(c["epsilon"])
            series.setdefault(c["principal"], []).append((at, totals[c["principal"]]))
        xs = [x for pts in series.values() for x, _ in pts]
        ticks = [(x, datetime.fromtimestamp(x, UTC).strftime("%m-%d %H:%M")) for x in (min(xs), max(xs))]
        charts.append({"dataset": ds, "charges": len(charges),
                       "plot": svg.lines(sorted(series.items()), title=f"ε spent on {ds}, cumulative",
                                         y_label="ε", x_ticks=ticks)})
    return {"rows": rows, "charts": charts}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- fleet -------------------------------------------------------------------------------------------------------
def fleet(v: Viewer) -> dict[str, Any]:
    return {"instances": instances(v.gateway, v.started)}


# -- monitoring --------------------------------------------------------------------------------------------------
def monitoring(v: Viewer, *, dataset: str | None, baseline: str | None) -> dict[str, Any]:
    name = dataset or (v.administered[0] if v.administered else None)
    out: dict[str, Any] = {"dataset": name or "", "datasets": v.administered, "profiles": [], "baseline": None,
                           "latest": None, "reports": [], "plots": [], "error": None, "stored_baseline": None}
    if name is None:
        return out
    if name not in v.administered:
        raise InvalidRequest(f"you do not administer dataset '{name}'")
    try:
        plan = v.governor.plan(v.principal, name, v.purpose, state=v.state)
    except GovernError as exc:
        out["error"] = f"your own plan for {name} under '{v.purpose}' is refused: {exc.detail}"
        return out
    store = ProfileStore.under(v.gateway.settings.state_dir)
    view = view_key(rows_view(plan))
    profiles = [p for stored in store.profiles(name, view) if (p := visible_to(stored, plan)) is not None]
    out["profiles"] = profiles
    out["view"] = view[:16]
    if not profiles:
        return out
    stored_base = store.baseline(name, view)
    out["stored_baseline"] = stored_base.data_version if stored_base is not None else None
    chosen: Profile | None = None
    if baseline:
        chosen = next((p for p in profiles if p.data_version == baseline), None)
        if chosen is None:
            raise InvalidRequest(f"no profile of data version '{baseline}' of '{name}' in your view")
    else:
        chosen = visible_to(stored_base, plan) if stored_base is not None else profiles[0]
    latest = profiles[-1]
    thresholds = Thresholds.from_settings(v.gateway.settings.monitor)
    reports: list[DriftReport] = []
    if chosen is not None and chosen.data_version != latest.data_version:
        reports.append(compare(chosen, latest, thresholds, against="baseline"))
    if len(profiles) > 1 and profiles[-2].data_version != (chosen.data_version if chosen else None):
        reports.append(compare(profiles[-2], latest, thresholds, against="previous"))
    out.update(baseline=chosen, latest=latest, reports=reports, thresholds=thresholds,
               plots=_profile_plots(chosen, latest), drift_plots=[_drift_plot(r, thresholds) for r in reports],
               history=svg.lines([("rows", [(i, float(p.rows)) for i, p in enumerate(profiles)])],
                                 title=f"rows per data version of {name}", y_label="rows",
                                 x_ticks=[(i, p.data_version[:6]) for i, p in enumerate(profiles)]))
    return out


def set_baseline(v: Viewer, dataset: str, version: str) -> None:
    """Make ``version`` the stored baseline of the viewer's own view of ``dataset``."""
    plan = v.governor.plan(v.principal, dataset, v.purpose, state=v.state)
    store = ProfileStore.under(v.gateway.settings.state_dir)
    store.set_baseline(dataset, view_key(rows_view(plan)), version)


# Each metric's threshold, to put every column on one scale: its worst metric ÷ that threshold.
def _limits(t: Thresholds) -> dict[str, float]:
    return {"wasserstein_sigma": t.wasserstein, "jensen_shannon": t.jensen_shannon, "psi": t.psi,
            "null_rate_delta": t.null_rate}


def _drift_plot(report: DriftReport, t: Thresholds) -> Any:
    """One bar per compared column: its worst metric as a multiple of that metric's threshold
    (1 = the threshold), so numeric and categorical columns read on one axis."""
    limits = _limits(t)
    items = []
    for c in report.columns:
        if not c.comparable:
            continue
        ratios = {m: abs(v) / limits[m] for m, v in c.metrics.items() if m in limits and limits[m] > 0}
        worst = max(ratios, key=lambda m: ratios[m]) if ratios else "null_rate_delta"
        items.append((f"{c.column} ({worst.split('_')[0]})", ratios.get(worst, 0.0), c.drifted))
    return {"against": report.against, "share": report.share, "drifted": report.drifted,
            "plot": svg.bars(items, title=f"drift against the {report.against} version (worst metric ÷ its "
                                          "threshold)", threshold=1.0, unit="×")}


def _profile_plots(base: Profile | None, latest: Profile) -> list[dict[str, Any]]:
    plots = []
    for col in latest.columns:
        ref = base.column(col.name) if base is not None and base is not latest else None
        if col.kind == "numeric" and col.quantiles:
            series = []
            if ref is not None and ref.quantiles and ref.view == col.view:
                series.append((f"baseline {base.data_version[:6]}" if base else "baseline",
                               list(zip(GRID, ref.quantiles, strict=True))))
            series.append((f"latest {latest.data_version[:6]}", list(zip(GRID, col.quantiles, strict=True))))
            plots.append({"column": col.name, "kind": col.kind,
                          "plot": svg.lines(series, title=f"quantiles of {col.name}", x_label="quantile",
                                            x_ticks=[(0.0, "0"), (0.5, "0.5"), (1.0, "1")])})
        elif col.kind == "categorical" and col.top:
            items = [(label, share * 100, False) for label, share in col.top[:12]]
            plots.append({"column": col.name, "kind": col.kind,
                          "plot": svg.bars(items, title=f"top categories of {col.name} (latest)", unit="%")})
    return plots
