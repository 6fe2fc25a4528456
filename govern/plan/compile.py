"""The plan compiler: (policy, principal, purpose, dataset, schema in storage) → AccessPlan.

Pure: no I/O. Decisions come from a :class:`~govern.policy.decide.Decider` (Casbin, cached).
The compiler runs a fixed list of passes, each a small function over a :class:`Draft`:

1. ``authorize``       — purpose entitled, dataset known, the action allowed on the dataset;
2. ``classify``        — unclassified columns and columns above the principal's clearance are
                         withheld; explicit read denies on the column or its tags withhold it;
3. ``choose_masks``    — each remaining tag mask applies unless lifted by an ``unmask`` grant;
                         among several, the most restrictive (registry order) wins;
4. ``add_cell_rules``  — cell masks where a predicate holds, unless ``unmask`` on the column;
5. ``add_row_filters`` — row filters with subject attributes bound as literals, unless the
                         principal may ``bypass_row_filter``;
6. ``add_result_policy`` — the dataset's ``result:`` block for the purpose (or the nearest
                         parent purpose, else ``*``), limited to the columns still visible.

Every column ends with exactly one action and the reason that decided it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from govern.errors import (
    AccessDenied,
    MaskError,
    NotFound,
    PlanError,
    PredicateError,
    PurposeNotEntitled,
)
from govern.identity.principal import Principal
from govern.mask import registry
from govern.plan.model import (
    AccessPlan,
    CellRule,
    ColumnPlan,
    KAnonymity,
    MaskSpec,
    Reason,
    ResultPolicy,
    RowFilter,
    clearance_rank,
    level_rank,
)
from govern.plan.predicates import compile_policy_predicate
from govern.policy.decide import Decider
from govern.policy.model import DatasetEntry, PolicySet


@dataclass
class Draft:
    policy: PolicySet
    decider: Decider
    principal: Principal
    purpose: str
    dataset_name: str
    schema: pa.Schema
    action: str
    key_id: str | None
    dataset: DatasetEntry | None = None
    decision: Reason | None = None
    columns: dict[str, ColumnPlan] = field(default_factory=dict)
    cell_rules: list[CellRule] = field(default_factory=list)
    row_filters: list[RowFilter] = field(default_factory=list)
    result: ResultPolicy | None = None

    def decide(self, obj: str, action: str):  # -> Decision
        return self.decider.decide(self.principal, obj, action, self.purpose)

    def catalog_source(self, line: int) -> str:
        return f"catalog.yaml:{line}"


def authorize_purpose(decider: Decider, principal: Principal, purpose: str) -> None:
    """A principal may only act under purposes some rule grants it (or their sub-purposes)."""
    entitled = decider.purposes(principal)
    if purpose not in entitled:
        raise PurposeNotEntitled(
            f"principal '{principal.name}' may not act under purpose '{purpose}'",
            purposes=entitled,
        )


def authorize(d: Draft) -> None:
    authorize_purpose(d.decider, d.principal, d.purpose)
    d.dataset = d.policy.datasets.get(d.dataset_name)
    if d.dataset is None:
        raise NotFound(f"unknown dataset '{d.dataset_name}'")
    decision = d.decide(f"dataset:{d.dataset_name}", d.action)
    if not decision.allowed:
        raise AccessDenied(
            f"'{d.action}' on dataset '{d.dataset_name}' for purpose '{d.purpose}' is denied: {decision.reason}",
            decision=decision.to_dict(),
        )
    d.decision = decision.reason


def classify(d: Draft) -> None:
    assert d.dataset is not None
    ds = d.dataset
    clearance = d.principal.clearance
    cleared = clearance_rank(clearance)
    undeclared = "" if cleared >= 0 else "; it is not a declared level, so it ranks below public"
    for f in d.schema:
        entry = ds.columns.get(f.name)
        if entry is None:
            d.columns[f.name] = _withhold(f, Reason(
                "unclassified",
                "column is in the data but not in the catalog; withheld until a steward classifies it",
                d.catalog_source(ds.line)))
            continue
        level = ds.column_level(f.name)
        if level_rank(level) > cleared:
            d.columns[f.name] = _withhold(f, Reason(
                "clearance", f"column level '{level}' is above clearance {clearance!r}{undeclared} (no read up)",
                d.catalog_source(entry.line)), level=level, tags=entry.tags)
            continue
        denied = None
        for obj in (f"column:{ds.name}.{f.name}", *(f"tag:{t}" for t in entry.tags)):
            decision = d.decide(obj, "read")
            if decision.explicit_deny:
                denied = decision
                break
        if denied is not None:
            d.columns[f.name] = _withhold(f, denied.reason, level=level, tags=entry.tags)
            continue
        d.columns[f.name] = ColumnPlan(
            name=f.name, action="keep", reason=Reason("no-mask", "no masking tag applies", d.catalog_source(entry.line)),
            type=str(f.type), level=level, tags=entry.tags, result_type=str(f.type))


def _effective_tag_mask(d: Draft, tag: str):  # -> (defining tag, TagMask) | None
    for t in d.decider.ancestors("g2", f"tag:{tag}"):
        if t.startswith("tag:") and t[4:] in d.policy.tag_masks:
            return t[4:], d.policy.tag_masks[t[4:]]
    return None


def choose_masks(d: Draft) -> None:
    assert d.dataset is not None
    ds = d.dataset
    for name, col in list(d.columns.items()):
        if col.action == "withhold":
            continue
        column_unmask = d.decide(f"column:{ds.name}.{name}", "unmask")
        candidates: list[tuple[tuple, MaskSpec, Reason]] = []
        lifted: list[Reason] = []
        for tag in col.tags:
            found = _effective_tag_mask(d, tag)
            if found is None:
                continue
            defining, tag_mask = found
            tag_unmask = d.decide(f"tag:{tag}", "unmask")
            denied = tag_unmask.explicit_deny or column_unmask.explicit_deny
            if (tag_unmask.allowed or column_unmask.allowed) and not denied:
                lifted.append((tag_unmask if tag_unmask.allowed else column_unmask).reason)
                continue
            via = f" (via tag '{defining}')" if defining != tag else ""
            reason = Reason("tag-mask", f"tag '{tag}'{via}, no unmask grant",
                            f"masking.yaml:{tag_mask.line}")
            fn = registry.get(tag_mask.mask.function)
            candidates.append((fn.order_key(tag_mask.mask.kwargs), tag_mask.mask, reason))
        if not candidates:
            if lifted:
                d.columns[name] = _replace(col, reason=Reason("unmasked", "unmasked: " + lifted[0].detail, lifted[0].source))
            continue
        candidates.sort(key=lambda c: c[0])
        _, spec, reason = candidates[0]
        if len(candidates) > 1:
            others = ", ".join(str(c[1]) for c in candidates[1:])
            reason = Reason(reason.code, f"{reason.detail}; most restrictive of: {spec}, {others}", reason.source)
        d.columns[name] = _with_mask(d, col, spec, reason)


def _for_column(d: Draft, spec: MaskSpec, column: str) -> MaskSpec:
    """``spec`` with its per-column defaults filled in (tokenize's domain ``DATASET.COLUMN``),
    so the plan names everything an engine computes."""
    completed = registry.get(spec.function).column_defaults(spec.kwargs, f"{d.dataset_name}.{column}")
    return spec if completed == spec.kwargs else MaskSpec.of(spec.function, dict(completed))


def _with_mask(d: Draft, col: ColumnPlan, spec: MaskSpec, reason: Reason) -> ColumnPlan:
    fn = registry.get(spec.function)
    spec = _for_column(d, spec, col.name)
    arrow_type = d.schema.field(col.name).type
    try:
        fn.check_type(arrow_type, spec.kwargs)
    except MaskError as exc:
        return _replace(col, action="withhold", mask=None, result_type=None, reason=Reason(
            "mask-not-applicable", f"{exc.detail}; column withheld (fix masking.yaml)", reason.source))
    for needed in fn.inputs(spec.kwargs, d.dataset.privacy_unit if d.dataset else None):
        if needed not in d.schema.names:
            return _replace(col, action="withhold", mask=None, result_type=None, reason=Reason(
                "mask-input-missing", f"mask {spec} needs column '{needed}', which is not in the data",
                reason.source))
    return _replace(col, action="mask", mask=spec, reason=reason,
                    result_type=str(fn.result_type(arrow_type, spec.kwargs)))


def add_cell_rules(d: Draft) -> None:
    assert d.dataset is not None
    ds = d.dataset
    for rule in d.policy.cell_rules:
        if rule.dataset != ds.name or rule.column not in d.columns:
            continue
        col = d.columns[rule.column]
        if col.action == "withhold":
            continue
        if d.decide(f"column:{ds.name}.{rule.column}", "unmask").allowed:
            continue
        source = f"masking.yaml:{rule.line}"
        fn = registry.get(rule.mask.function)
        if col.mask is not None:
            own = registry.get(col.mask.function).order_key(col.mask.kwargs)
            if own <= fn.order_key(rule.mask.kwargs):
                continue  # the column is already masked at least as strictly everywhere
        try:
            pred = compile_policy_predicate(rule.when, d.principal.attributes)
        except PredicateError as exc:
            raise PlanError(f"cell rule '{rule.name}' ({source}): {exc.detail}") from None
        missing = [c for c in pred.columns if c not in d.schema.names]
        if missing:
            raise PlanError(f"cell rule '{rule.name}' ({source}) needs columns not in the data: {', '.join(missing)}")
        arrow_type = d.schema.field(rule.column).type
        try:
            fn.check_type(arrow_type, rule.mask.kwargs)
        except MaskError as exc:
            d.columns[rule.column] = _replace(col, action="withhold", mask=None, result_type=None, reason=Reason(
                "mask-not-applicable", f"cell rule '{rule.name}': {exc.detail}; column withheld", source))
            continue
        result = str(fn.result_type(arrow_type, rule.mask.kwargs))
        if result != col.result_type:
            d.columns[rule.column] = _replace(col, action="withhold", mask=None, result_type=None, reason=Reason(
                "cell-rule-type", f"cell rule '{rule.name}' would change the column type from {col.result_type} "
                f"to {result}; column withheld (fix masking.yaml)", source))
            continue
        d.cell_rules.append(CellRule(rule.column, pred.sql, _for_column(d, rule.mask, rule.column), Reason(
            "cell-rule", f"cell rule '{rule.name}': {rule.mask} where {rule.when}", source)))


def add_row_filters(d: Draft) -> None:
    assert d.dataset is not None
    ds = d.dataset
    filters = [rf for rf in d.policy.row_filters if rf.dataset == ds.name]
    if not filters:
        return
    if d.decide(f"dataset:{ds.name}", "bypass_row_filter").allowed:
        return
    for rf in filters:
        source = f"masking.yaml:{rf.line}"
        try:
            pred = compile_policy_predicate(rf.filter, d.principal.attributes)
        except PredicateError as exc:
            raise PlanError(f"row filter '{rf.name}' ({source}): {exc.detail}") from None
        missing = [c for c in pred.columns if c not in d.schema.names]
        if missing:
            raise PlanError(f"row filter '{rf.name}' ({source}) needs columns not in the data: {', '.join(missing)}")
        d.row_filters.append(RowFilter(pred.sql, Reason("row-filter", f"row filter '{rf.name}': {rf.filter}", source)))


def add_result_policy(d: Draft) -> None:
    assert d.dataset is not None
    ds = d.dataset
    if not ds.results:
        return
    entry = None
    for purpose in (*d.decider.ancestors("g3", d.purpose), "*"):
        entry = ds.results.get(purpose)
        if entry is not None:
            break
    if entry is None:
        return
    visible = {n for n, c in d.columns.items() if c.visible}
    k_anonymity = entry.k_anonymity
    if k_anonymity is not None:
        qis = tuple((c, levels) for c, levels in k_anonymity.quasi_identifiers if c in visible)
        k_anonymity = KAnonymity(k_anonymity.k, qis, k_anonymity.max_suppression) if qis else None
    which = "every purpose" if entry.purpose == "*" else f"purpose '{entry.purpose}'"
    d.result = ResultPolicy(
        reason=Reason("result-policy", f"result policy of '{ds.name}' for {which}", d.catalog_source(entry.line)),
        min_group=entry.min_group,
        projection=tuple(c for c in entry.projection if c in visible),
        k_anonymity=k_anonymity)


PASSES: tuple[Callable[[Draft], None], ...] = (
    authorize,
    classify,
    choose_masks,
    add_cell_rules,
    add_row_filters,
    add_result_policy,
)


def compile_plan(
    policy: PolicySet,
    decider: Decider,
    principal: Principal,
    purpose: str,
    dataset: str,
    schema: pa.Schema,
    *,
    action: str = "read",
    key_id: str | None = None,
) -> AccessPlan:
    """Compile the access plan. Raises PurposeNotEntitled, NotFound, AccessDenied, PlanError."""
    draft = Draft(policy, decider, principal, purpose, dataset, schema, action, key_id)
    for step in PASSES:
        step(draft)
    columns = tuple(draft.columns[f.name] for f in schema)
    if not any(c.visible for c in columns):
        raise AccessDenied(f"no column of dataset '{dataset}' is visible to '{principal.name}' for purpose '{purpose}'")
    return AccessPlan(
        dataset=dataset,
        principal=principal.name,
        purpose=purpose,
        action=action,
        columns=columns,
        row_filters=tuple(draft.row_filters),
        cell_rules=tuple(draft.cell_rules),
        privacy_unit=draft.dataset.privacy_unit if draft.dataset else None,
        key_id=key_id,
        policy_version=policy.version,
        decision=draft.decision,
        result=draft.result,
    )


def _withhold(f: pa.Field, reason: Reason, *, level: str | None = None, tags: tuple[str, ...] = ()) -> ColumnPlan:
    return ColumnPlan(name=f.name, action="withhold", reason=reason, type=str(f.type), level=level, tags=tags)


def _replace(col: ColumnPlan, **changes) -> ColumnPlan:
    from dataclasses import replace

    return replace(col, **changes)
