"""The steward's policy, as typed objects that remember where each value came from.

This is the *document* form of a policy (file and line for everything). The plan compiler
turns it, for one request, into the frozen :class:`~govern.plan.model.AccessPlan` that engines
consume; engines never see these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from govern.errors import NotFound
from govern.identity.principal import Principal
from govern.plan.model import MaskSpec
from govern.policy.documents import CsvRule
from govern.policy.results import ResultEntry

ACTIONS: tuple[str, ...] = (
    "read",
    "unmask",
    "query_dp",
    "read_synthetic",
    "read_encrypted",
    "reidentify",
    "bypass_row_filter",
    "administer",
)
OBJECT_KINDS: tuple[str, ...] = ("dataset", "tag", "column", "group")
FORMATS: tuple[str, ...] = ("parquet", "csv")
FILES = ("model.conf", "policy.csv", "catalog.yaml", "masking.yaml", "principals.yaml")


@dataclass(frozen=True)
class ColumnEntry:
    name: str
    tags: tuple[str, ...]
    level: str | None  # None: inherited from the dataset
    line: int
    description: str | None = None
    bounds: tuple[float, float] | None = None
    public_values: bool = False  # the set of values is public (e.g. group keys for DP)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    location: str
    format: str
    level: str
    columns: dict[str, ColumnEntry]
    line: int
    privacy_unit: str | None = None
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    results: dict[str, ResultEntry] = field(default_factory=dict)  # purpose → ``result:`` block

    def column_level(self, column: str) -> str:
        entry = self.columns[column]
        return entry.level or self.level


@dataclass(frozen=True)
class TagMask:
    tag: str
    mask: MaskSpec
    line: int


@dataclass(frozen=True)
class CellRuleEntry:
    name: str
    dataset: str
    column: str
    when: str
    mask: MaskSpec
    line: int


@dataclass(frozen=True)
class RowFilterEntry:
    name: str
    dataset: str
    filter: str
    line: int


PERIODS: tuple[str, ...] = ("day", "week", "month", "year", "total")


@dataclass(frozen=True)
class BudgetOverride:
    """A different privacy budget for one principal or role (``subject``) on one dataset."""

    subject: str
    epsilon: float
    delta: float
    line: int


@dataclass(frozen=True)
class BudgetEntry:
    """The privacy budget of a dataset (``budget:`` in catalog.yaml): how much epsilon and
    delta each principal may spend on it per ``period`` (one of :data:`PERIODS`; ``total``
    never resets). ``overrides`` give principals or roles a different amount."""

    dataset: str
    epsilon: float
    delta: float
    period: str
    line: int
    overrides: tuple[BudgetOverride, ...] = ()


@dataclass(frozen=True)
class ApiKeyEntry:
    id: str
    hash: str
    line: int


@dataclass(frozen=True)
class PrincipalEntry:
    name: str
    attributes: dict[str, Any]
    line: int
    description: str | None = None
    api_keys: tuple[ApiKeyEntry, ...] = ()


@dataclass
class PolicySet:
    """Everything in one policy folder, validated. ``version`` hashes the file contents."""

    directory: Path
    model_text: str
    rules: list[CsvRule]
    datasets: dict[str, DatasetEntry]
    tag_masks: dict[str, TagMask]
    cell_rules: list[CellRuleEntry]
    row_filters: list[RowFilterEntry]
    principals: dict[str, PrincipalEntry]
    declared_attributes: tuple[str, ...]
    version: str
    budgets: list[BudgetEntry] = field(default_factory=list)

    # -- derived views -----------------------------------------------------------------------
    def grouping(self, ptype: str) -> list[CsvRule]:
        return [r for r in self.rules if r.ptype == ptype]

    @property
    def roles(self) -> set[str]:
        return {r.fields[1] for r in self.grouping("g")}

    @property
    def purposes(self) -> set[str]:
        found = {r.fields[3] for r in self.rules if r.ptype == "p"}
        for r in self.grouping("g3"):
            found.update(r.fields[:2])
        return found

    @property
    def known_tags(self) -> set[str]:
        tags = set(self.tag_masks)
        for ds in self.datasets.values():
            for col in ds.columns.values():
                tags.update(col.tags)
        for r in self.grouping("g2"):
            parent = r.fields[1]
            if parent.startswith("tag:"):
                tags.add(parent[4:])
        return tags

    def attribute_names(self) -> set[str]:
        names = set(self.declared_attributes) | {"clearance"}
        for p in self.principals.values():
            names.update(p.attributes)
        return names


def local_principal(policy: PolicySet, name: str) -> Principal:
    """The principal ``name`` as declared in principals.yaml (raises NotFound)."""
    entry = policy.principals.get(name)
    if entry is None:
        raise NotFound(f"unknown principal '{name}'")
    return Principal(name=name, attributes=dict(entry.attributes), source="principals.yaml")
