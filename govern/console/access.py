"""Effective access: subject × purpose × dataset × column → keep / mask / withhold, and why.

Every cell comes out of :func:`govern.plan.compile.compile_plan` — the compiler every engine's
plan comes from — run for each subject, each purpose it may act under and each dataset, against
the schema found in storage. Nothing here re-derives a decision: a cell is a plan's column, its
reason is the plan's reason (with file:line), a refusal is the compiler's error.

Subjects are local principals (``principals.yaml``) or roles: a role is probed as a namespaced
subject ``role:NAME`` holding only that role, with the clearance the steward picks (a role has
no attributes of its own, so row filters over attributes bind to nothing and drop every row).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa

from govern.errors import GovernError
from govern.identity.principal import Principal
from govern.plan.compile import compile_plan
from govern.plan.model import AccessPlan, ColumnPlan
from govern.policy.decide import Decider
from govern.policy.model import PolicySet, local_principal

T = TypeVar("T")

__all__ = ["Cell", "DatasetMatrix", "MatrixCache", "Row", "cell_label", "effective_access", "role_subject",
           "subjects"]

# How much a cell lets through, to tell a gain from a loss (docs/console.md).
RANK = {"denied": 0, "withhold": 0, "mask": 1, "keep": 2}


@dataclass(frozen=True)
class Cell:
    action: str  # keep | mask | withhold | denied
    label: str  # "keep", "hash", "withhold", ... (what the audit record's ``columns`` says, less "mask:")
    detail: str  # the mask with its parameters, or the action
    reason: str  # the plan's reason, with its source file:line

    @property
    def rank(self) -> int:
        return RANK[self.action]


@dataclass(frozen=True)
class Row:
    subject: str
    purpose: str
    dataset: str
    cells: tuple[Cell, ...]  # aligned with DatasetMatrix.columns
    row_filter: str  # "all rows" or the predicates, subject attributes bound
    cell_rules: tuple[str, ...]
    denied: str | None  # the compiler's refusal, when the whole dataset is refused
    plan_hash: str | None


@dataclass(frozen=True)
class DatasetMatrix:
    dataset: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


def role_subject(role: str, clearance: str) -> Principal:
    """A probe subject holding only ``role`` (namespaced: it can never be a local principal)."""
    return Principal(name=f"role:{role}", attributes={"clearance": clearance}, roles=(role,), source="console")


def subjects(policy: PolicySet, kind: str = "principals", clearance: str = "confidential") -> list[Principal]:
    if kind == "roles":
        return [role_subject(r, clearance) for r in sorted(policy.roles)]
    return [local_principal(policy, name) for name in sorted(policy.principals)]


def cell_label(col: ColumnPlan) -> str:
    return col.mask.function if col.action == "mask" and col.mask else col.action


def _cell(col: ColumnPlan) -> Cell:
    detail = str(col.mask) if col.action == "mask" and col.mask else col.action
    return Cell(col.action, cell_label(col), detail, str(col.reason))


def _denied_row(subject: str, purpose: str, dataset: str, columns: tuple[str, ...], why: str) -> Row:
    cell = Cell("denied", "denied", "denied", why)
    return Row(subject, purpose, dataset, tuple(cell for _ in columns), "no rows", (), why, None)


def plan_row(plan: AccessPlan, columns: tuple[str, ...]) -> Row:
    by_name = {c.name: c for c in plan.columns}
    cells = tuple(_cell(by_name[c]) if c in by_name else Cell("withhold", "withhold", "absent",
                                                                "not in the data") for c in columns)
    rows = " AND ".join(rf.predicate for rf in plan.row_filters) or "all rows"
    rules = tuple(f"{r.column} → {r.mask} where {r.when}" for r in plan.cell_rules)
    return Row(plan.principal, plan.purpose, plan.dataset, cells, rows, rules, None, plan.hash)


def effective_access(policy: PolicySet, decider: Decider, schemas: Mapping[str, pa.Schema],
                     who: Iterable[Principal], *, purpose: str | None = None,
                     key_id: str | None = None) -> list[DatasetMatrix]:
    """One matrix per dataset of ``schemas`` (the datasets the viewer administers): a row per
    subject and purpose it may act under (only ``purpose`` when given)."""
    people = list(who)
    entitled = {p.name: decider.purposes(p) for p in people}
    out = []
    for dataset, schema in schemas.items():
        columns = tuple(schema.names)
        rows: list[Row] = []
        for subject in people:
            purposes = entitled[subject.name]
            if purpose is not None:
                purposes = [purpose]
            if not purposes:
                rows.append(_denied_row(subject.name, "-", dataset, columns, "no rule grants any purpose"))
            for p in purposes:
                try:
                    plan = compile_plan(policy, decider, subject, p, dataset, schema, key_id=key_id)
                except GovernError as exc:
                    rows.append(_denied_row(subject.name, p, dataset, columns, exc.detail))
                    continue
                rows.append(plan_row(plan, columns))
        out.append(DatasetMatrix(dataset, columns, tuple(rows)))
    return out


class MatrixCache:
    """The last few matrices (and their rendered tables), keyed by everything they depend on:
    the policy version, each dataset's schema as found in storage, the subjects asked about and
    the purpose. A reload or a changed schema is another key, so a cached matrix is never stale;
    it spares recompiling a thousand plans when a steward looks again
    (docs/performance.md#the-steward-console)."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                found: T = self._entries[key]
                return found
        value = compute()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value
