"""Policy dry run: what a proposed policy folder would change, before anyone merges it.

Two answers, both computed by the plan compiler under the proposed policy:

- :func:`matrix_diff`: every (subject, purpose, dataset, column) cell of the effective-access
  matrix (:mod:`govern.console.access`) whose answer changes, as a gain (more gets through), a
  loss (less) or a change (as much, otherwise: another mask, another row filter);
- :func:`replay`: the recent audited requests, each decided again under the proposed policy —
  which would now be refused (a pipeline that breaks), which refused ones would now be served,
  and which columns a request got that it would now get otherwise. Records are grouped by
  (principal, purpose, dataset, action) and each group is compiled once, so replaying 10,000
  records costs a few dozen compilations.

Only the audit record's own fields are used (principal, purpose, dataset, action, outcome and
the per-column ``columns`` it delivered); no data is read, only each dataset's schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from govern.audit.record import AuditRecord
from govern.console.access import RANK, DatasetMatrix
from govern.errors import GovernError, InvalidRequest
from govern.identity.principal import is_namespaced
from govern.plan.compile import compile_plan
from govern.plan.model import AccessPlan
from govern.policy.decide import Decider
from govern.policy.model import PolicySet, local_principal

__all__ = ["Change", "Delivered", "GroupOutcome", "Replay", "delivered", "matrix_diff", "proposed_folder",
           "read_plans", "replay"]

# Audit actions that are governed reads of a dataset, and the policy action each one needs.
POLICY_ACTION = {"read": "read", "describe": "read", "sql": "read", "query_dp": "query_dp",
                 "read_encrypted": "read_encrypted", "he_query": "read_encrypted", "reidentify": "reidentify",
                 "read_synthetic": "read_synthetic", "scan": "read"}
# Refusals a policy decides (others — a bad token, a malformed body — say nothing about policy).
POLICY_REFUSALS = frozenset({403, 404})


def proposed_folder(text: str, root: Path) -> Path:
    """The folder a steward named, if it lies under ``root`` (no ``..`` or symlink way out)."""
    if not text.strip():
        raise InvalidRequest("name the proposed policy folder")
    base = root.resolve()
    path = Path(text.strip())
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.is_relative_to(base):
        raise InvalidRequest(f"the proposed policy folder must lie under {base}")
    if not path.is_dir():
        raise InvalidRequest(f"no folder '{text.strip()}' under {base}")
    return path


@dataclass(frozen=True)
class Change:
    subject: str
    purpose: str
    dataset: str
    column: str  # a column, or "(rows)" for the row filter, "(dataset)" for the whole dataset
    before: str
    after: str
    kind: str  # gain | loss | change


def _kind(before: int, after: int) -> str:
    return "gain" if after > before else "loss" if after < before else "change"


def matrix_diff(current: list[DatasetMatrix], proposed: list[DatasetMatrix]) -> list[Change]:
    """Every cell whose answer differs, in a stable order."""
    out: list[Change] = []
    new_by = {m.dataset: m for m in proposed}
    for old in current:
        new = new_by.get(old.dataset)
        if new is None:
            continue
        new_rows = {(r.subject, r.purpose): r for r in new.rows}
        old_rows = {(r.subject, r.purpose): r for r in old.rows}
        for key in sorted(set(old_rows) | set(new_rows)):
            a, b = old_rows.get(key), new_rows.get(key)
            subject, purpose = key
            if a is None or b is None or (a.denied is None) != (b.denied is None):
                before = "denied" if a is None or a.denied else "granted"
                after = "denied" if b is None or b.denied else "granted"
                if before != after:
                    out.append(Change(subject, purpose, old.dataset, "(dataset)", before, after,
                                      "gain" if after == "granted" else "loss"))
                if a is None or b is None or a.denied or b.denied:
                    continue
            new_cells = dict(zip(new.columns, b.cells, strict=True))
            for column, cell in zip(old.columns, a.cells, strict=True):
                other = new_cells.get(column)
                if other is not None and other.detail != cell.detail:
                    out.append(Change(subject, purpose, old.dataset, column, cell.detail, other.detail,
                                      _kind(cell.rank, other.rank)))
            if a.row_filter != b.row_filter:
                kind = "gain" if b.row_filter == "all rows" else "loss" if a.row_filter == "all rows" else "change"
                out.append(Change(subject, purpose, old.dataset, "(rows)", a.row_filter, b.row_filter, kind))
    return out


@dataclass
class GroupOutcome:
    """Records of one (principal, purpose, dataset, action) and what the proposal does to them."""

    principal: str
    purpose: str
    dataset: str
    action: str
    records: int = 0
    last_time: str = ""
    detail: str = ""
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)  # column → (delivered, proposed)


@dataclass
class Replay:
    considered: int = 0
    replayed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # why → records
    refused: list[GroupOutcome] = field(default_factory=list)  # served before, refused now
    admitted: list[GroupOutcome] = field(default_factory=list)  # refused before, served now
    changed: list[GroupOutcome] = field(default_factory=list)  # served both times, other columns
    unchanged: int = 0

    @property
    def breaking(self) -> list[str]:
        """Principals some of whose served requests would be refused: their pipelines break."""
        return sorted({g.principal for g in self.refused})


def _label(value: str) -> tuple[str, int]:
    action = "mask" if value.startswith("mask:") else value
    return value.removeprefix("mask:"), RANK.get(action, 0)


Delivered = dict[str, str]  # column → what the plan delivers: keep | withhold | mask:FUNCTION


def delivered(plan: AccessPlan) -> Delivered:
    """A plan's columns as an audit record's ``columns`` names them."""
    return {c.name: (f"mask:{c.mask.function}" if c.action == "mask" and c.mask else c.action) for c in plan.columns}


def read_plans(matrices: Iterable[DatasetMatrix]) -> dict[tuple[str, str, str], Delivered | str]:
    """The ``read`` plans a matrix already holds, by (principal, purpose, dataset): the replay
    reuses them instead of compiling each again."""
    out: dict[tuple[str, str, str], Delivered | str] = {}
    for m in matrices:
        for r in m.rows:
            out[(r.subject, r.purpose, m.dataset)] = r.denied if r.denied is not None else {
                name: (f"mask:{c.label}" if c.action == "mask" else c.action)
                for name, c in zip(m.columns, r.cells, strict=True)}
    return out


def replay(records: Iterable[AuditRecord], policy: PolicySet, decider: Decider,
           schemas: Mapping[str, pa.Schema], *, key_id: str | None = None,
           known: Mapping[tuple[str, str, str], Delivered | str] | None = None) -> Replay:
    """Decide each data request of ``records`` again under ``policy``; ``known``: ``read``
    plans of ``policy`` compiled already (:func:`read_plans` of its matrix)."""
    result = Replay()
    plans: dict[tuple[str, str, str, str], Delivered | str] = {}
    groups: dict[tuple[str, str, str, str, str], GroupOutcome] = {}

    def skip(why: str) -> None:
        result.skipped[why] = result.skipped.get(why, 0) + 1

    def decide(principal: str, purpose: str, dataset: str, action: str) -> Delivered | str:
        key = (principal, purpose, dataset, action)
        found = plans.get(key)
        if found is None:
            if principal not in policy.principals:
                found = f"'{principal}' is not a principal of the proposed policy"
            elif dataset not in schemas:
                found = f"no dataset '{dataset}' in the proposed policy"
            elif action == "read" and known is not None and (principal, purpose, dataset) in known:
                found = known[(principal, purpose, dataset)]
            else:
                try:
                    found = delivered(compile_plan(policy, decider, local_principal(policy, principal), purpose,
                                                   dataset, schemas[dataset], action=action, key_id=key_id))
                except GovernError as exc:
                    found = exc.detail
            plans[key] = found
        return found

    for record in records:
        result.considered += 1
        action = POLICY_ACTION.get(record.action)
        if action is None:
            skip("not a data request")
            continue
        if record.principal is None or record.purpose is None:
            skip("refused before a principal and purpose were known")
            continue
        if is_namespaced(record.principal):
            skip("identity-provider principal (attributes come with its token)")
            continue
        was_ok = record.outcome == "ok"
        if not was_ok and record.status not in POLICY_REFUSALS:
            skip("refused for another reason than policy")
            continue
        names = record.extra.get("datasets") if record.dataset is None else [record.dataset]
        if not names:
            skip("no dataset named")
            continue
        result.replayed += 1
        for dataset in names:
            now = decide(record.principal, record.purpose, str(dataset), action)
            if isinstance(now, str):
                bucket, kind = (result.refused, "refused") if was_ok else (None, "same")
            else:
                bucket, kind = (None, "ok") if was_ok else (result.admitted, "admitted")
            if bucket is None and kind == "same":
                result.unchanged += 1
                continue
            key = (kind, record.principal, record.purpose, str(dataset), record.action)
            group = groups.get(key)
            if group is None:
                group = groups[key] = GroupOutcome(record.principal, record.purpose, str(dataset), record.action)
                if bucket is not None:
                    bucket.append(group)
            group.records += 1
            group.last_time = max(group.last_time, record.time)
            if isinstance(now, str):
                group.detail = now
                continue
            if not was_ok:
                group.detail = "served under the proposed policy"
                continue
            before_changes = len(group.columns)
            for column, got in (record.columns or {}).items():
                proposed = now.get(column, "withhold")
                if proposed != got:
                    group.columns[column] = (got, proposed)
            if group.columns and before_changes == 0:
                result.changed.append(group)
            elif not group.columns:
                result.unchanged += 1
    return result


def column_kind(delivered: str, proposed: str) -> str:
    """gain | loss | change, for a column a request got (``mask:hash``) and would get now."""
    (_, a), (_, b) = _label(delivered), _label(proposed)
    return _kind(a, b)
