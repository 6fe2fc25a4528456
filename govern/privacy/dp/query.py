"""The differentially private query, as the caller writes it (HTTP JSON or DP SQL).

Plain, frozen data checked for shape only: which aggregates over which columns, grouped how,
filtered how, at what privacy loss. Whether the caller may use those columns, where bounds
come from and how group keys are released is decided later, against the access plan and the
catalog (:mod:`govern.privacy.dp.compile`). Both front ends (``POST /v1/datasets/{name}/dp``
and DP SQL) produce a :class:`DpQuery`, so they share one compiler and one engine.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from govern.errors import InvalidRequest

Function = Literal["count", "sum", "mean", "quantile", "histogram"]
FUNCTIONS: tuple[str, ...] = ("count", "sum", "mean", "quantile", "histogram")
MAX_AGGREGATES = 32
MAX_GROUP_COLUMNS = 4
MAX_CONTRIBUTIONS = 1000
MAX_EPSILON = 100.0  # per query; budgets are usually far smaller
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Aggregate(BaseModel):
    """One released statistic. ``column`` is required except for ``count`` (rows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: Function
    column: str | None = None
    name: str | None = Field(default=None, description="Output name (default: function_column).")
    bounds: tuple[float, float] | None = Field(
        default=None, description="[low, high] clamp for sum/mean/quantile when the catalog has none.")
    q: float | None = Field(default=None, ge=0, le=1, description="quantile: which one (0.5 = median).")
    candidates: list[float] | None = Field(
        default=None, min_length=2, max_length=10_000,
        description="quantile: the values it may answer (default: 101 evenly spaced over the bounds).")
    bins: list[float] | None = Field(
        default=None, min_length=2, max_length=1001,
        description="histogram of a number: increasing bin edges; a value v falls in [e_i, e_{i+1}).")
    categories: list[str | int | bool] | None = Field(
        default=None, min_length=1, max_length=10_000,
        description="histogram of a category: the values to count (public by being asked).")

    @model_validator(mode="after")
    def _shape(self) -> Aggregate:
        f = self.function
        if f != "count" and not self.column:
            raise ValueError(f"'{f}' needs a column")
        if f == "quantile" and self.q is None:
            raise ValueError("'quantile' needs q (0.5 for the median)")
        if f != "quantile" and (self.q is not None or self.candidates is not None):
            raise ValueError("q and candidates belong to 'quantile'")
        if f != "histogram" and (self.bins is not None or self.categories is not None):
            raise ValueError("bins and categories belong to 'histogram'")
        if f == "histogram" and self.bins is not None and self.categories is not None:
            raise ValueError("a histogram has bins (numbers) or categories, not both")
        if self.bounds is not None and not (_finite(*self.bounds) and self.bounds[0] < self.bounds[1]):
            raise ValueError("bounds must be [low, high] finite numbers with low < high")
        if self.bins is not None and (not _finite(*self.bins)
                                      or any(a >= b for a, b in pairwise(self.bins))):
            raise ValueError("bins must be finite and strictly increasing")
        if self.candidates is not None and (not _finite(*self.candidates)
                                            or any(a >= b for a, b in pairwise(self.candidates))):
            raise ValueError("candidates must be finite and strictly increasing")
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError("name must be an identifier (letters, digits, _)")
        return self

    @property
    def output_name(self) -> str:
        if self.name:
            return self.name
        if self.function == "count" and not self.column:
            return "count"
        if self.function == "quantile" and self.q is not None:
            return "median_" + str(self.column) if self.q == 0.5 else f"quantile_{self.column}_{_pct(self.q)}"
        return f"{self.function}_{self.column}"


class DpRequest(BaseModel):
    """The body of ``POST /v1/datasets/{name}/dp``."""

    model_config = ConfigDict(extra="forbid")

    aggregates: list[Aggregate] = Field(min_length=1, max_length=MAX_AGGREGATES)
    group_by: list[str] = Field(default_factory=list, max_length=MAX_GROUP_COLUMNS)
    keys: dict[str, list[str | int | bool | None]] | None = Field(
        default=None, description="Group keys you supply (public by being asked): column → values.")
    filter: str | None = Field(default=None, max_length=4000, description="SQL predicate applied before aggregating.")
    epsilon: float = Field(gt=0, le=MAX_EPSILON, description="Privacy loss of this query (charged to your budget).")
    delta: float = Field(default=0.0, ge=0, lt=1, description="Needed to release group keys that are not public.")
    contributions: int = Field(default=1, ge=1, le=MAX_CONTRIBUTIONS,
                               description="Rows kept per privacy unit (person); more rows are sampled away.")
    purpose: str | None = Field(default=None, description="Why you are asking (or the X-Purpose header).")

    def to_query(self, dataset: str) -> DpQuery:
        names = [a.output_name for a in self.aggregates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidRequest(f"two aggregates are named {', '.join(dupes)}: give them distinct 'name's")
        if len(set(self.group_by)) != len(self.group_by):
            raise InvalidRequest("group_by names a column twice")
        clash = sorted(set(names) & set(self.group_by))
        if clash:
            raise InvalidRequest(f"aggregate name(s) {', '.join(clash)} clash with group_by columns")
        if self.keys:
            unknown = sorted(set(self.keys) - set(self.group_by))
            if unknown:
                raise InvalidRequest(f"keys given for column(s) not in group_by: {', '.join(unknown)}")
        return DpQuery(
            dataset=dataset,
            aggregates=tuple(self.aggregates),
            group_by=tuple(self.group_by),
            keys={k: tuple(v) for k, v in (self.keys or {}).items()},
            filter=self.filter,
            epsilon=float(self.epsilon),
            delta=float(self.delta),
            contributions=self.contributions,
        )


@dataclass(frozen=True)
class DpQuery:
    """A differentially private query over one dataset (front-end independent)."""

    dataset: str
    aggregates: tuple[Aggregate, ...]
    group_by: tuple[str, ...] = ()
    keys: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    filter: str | None = None
    epsilon: float = 1.0
    delta: float = 0.0
    contributions: int = 1

    def describe(self) -> dict[str, Any]:
        """What the audit record keeps about the query (no data)."""
        return {
            "aggregates": [a.model_dump(exclude_none=True) for a in self.aggregates],
            "group_by": list(self.group_by),
            "filter": self.filter,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "contributions": self.contributions,
        }


def parse_request(data: Any) -> DpRequest:
    """Validate a JSON body; the first problem becomes an ``InvalidRequest`` naming its field."""
    try:
        return DpRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise InvalidRequest(f"{where}: {msg}") from None


def _finite(*values: float) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def _pct(q: float) -> str:
    text = f"{q * 100:g}".replace(".", "_")
    return text
