"""Compile a :class:`DpQuery` against the access plan and the catalog into a :class:`DpPlan`.

Pure: no I/O, no OpenDP. This is where every DP-specific decision is made, once, with a clear
refusal when something cannot be released:

- **columns**: a column is usable when the access plan shows it (kept *or masked*: only noisy
  aggregates leave, so the raw values may feed them); a withheld column (clearance, explicit
  deny, unclassified, …) is unusable, exactly as for a read. The privacy unit is read
  internally to bound contributions, never released;
- **bounds** (sum, mean, quantile, and the default quantile candidates): the request's, else
  the catalog's ``bounds``, else refused; values are clamped into them;
- **group keys**: public when every group column is ``public_values`` in the catalog or the
  caller lists its keys; otherwise they are released only through a noisy-count threshold,
  which needs ``delta > 0`` (refused without);
- **primitives**: each aggregate becomes OpenDP primitives — ``count`` → a noisy length or
  non-null count, ``sum`` → a noisy integer sum of the clamped values scaled by a power of two
  (exact integer sensitivity), ``mean`` → noisy sum / noisy non-null count, ``quantile`` → the
  exponential mechanism over candidates, ``histogram`` → noisy counts per bin (its own group-by);
- **parts**: one OpenDP measurement per distinct group-by; epsilon is split over them in
  proportion to their primitives, so every primitive gets the same share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import pyarrow as pa

from govern.errors import InvalidRequest, UnknownColumn
from govern.plan.model import AccessPlan
from govern.plan.predicates import Predicate, compile_client_filter
from govern.policy.model import DatasetEntry
from govern.privacy.dp.query import Aggregate, DpQuery

Kind = Literal["len", "count", "sum", "quantile"]
SUM_RANGE = 2**31  # scaled |values| ≤ 2^31 and at most MAX_LENGTH rows: sums fit in int64
MIN_SCALE_TOP = 2.0**-900  # narrower bounds are scaled as if this wide (the power of two stays finite)
MAX_MAGNITUDE = 1e250  # max(|low|, |high|) × contributions / epsilon above this: refused (results overflow)
MAX_LENGTH = 2**31  # public upper bound on rows in any group (a margin OpenDP requires)
DEFAULT_CANDIDATES = 101
MAX_KEYS = 10_000
PREFIX = "_dp_"


@dataclass(frozen=True)
class Primitive:
    """One noisy statistic OpenDP computes. ``column`` is the prepared input column."""

    id: str
    kind: Kind
    column: str | None = None
    scale: float = 1.0  # sum: prepared values are the clamped values × scale (a power of two)
    bounds: tuple[float, float] | None = None  # in the caller's units
    q: float | None = None
    candidates: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Part:
    """One OpenDP measurement: a group-by and the primitives computed per group."""

    group_by: tuple[str, ...]
    primitives: tuple[Primitive, ...]
    bins: tuple[str, Any] | None = None  # (bin column, its labels) for a histogram part

    @property
    def weight(self) -> int:
        return len(self.primitives)


@dataclass(frozen=True)
class Output:
    """One released aggregate: which primitives make it and how."""

    name: str
    function: str
    column: str | None
    primitives: tuple[str, ...]  # ids; mean: (sum, count)
    part: int
    bounds: tuple[float, float] | None = None
    labels: tuple[str, ...] = ()  # histogram bin labels, in order


@dataclass(frozen=True)
class Derived:
    """A prepared column computed row by row before OpenDP sees the data (clamp, scale, bin).
    Row-wise maps are 1-stable: they never increase how much one person can change."""

    name: str
    source: str
    how: Literal["scaled_sum", "float", "bin", "category"]
    bounds: tuple[float, float] | None = None
    scale: float = 1.0
    edges: tuple[float, ...] = ()
    labels: tuple[Any, ...] = ()


@dataclass(frozen=True)
class DpPlan:
    dataset: str
    unit: str
    contributions: int
    epsilon: float
    delta: float
    columns: tuple[str, ...]  # raw columns to read (the unit first)
    filter: Predicate | None
    derived: tuple[Derived, ...]
    group_by: tuple[str, ...]
    key_source: Literal["none", "public", "threshold"]
    requested_keys: dict[str, tuple[Any, ...]]
    catalog_key_columns: tuple[str, ...]  # group columns whose keys are read as public values
    parts: tuple[Part, ...]
    outputs: tuple[Output, ...]
    plan_hash: str
    types: dict[str, str] = field(default_factory=dict)  # group column → Arrow type

    @property
    def weights(self) -> list[int]:
        return [p.weight for p in self.parts]


def compile_query(query: DpQuery, plan: AccessPlan, entry: DatasetEntry, schema: pa.Schema) -> DpPlan:
    """The DP plan for ``query``, or an ``InvalidRequest``/``UnknownColumn`` saying why not."""
    if not entry.privacy_unit:
        raise InvalidRequest(f"dataset '{entry.name}' has no privacy_unit in the catalog: differential privacy "
                             "needs to know whose privacy it protects")
    unit = entry.privacy_unit
    if unit not in schema.names:
        raise InvalidRequest(f"the privacy unit '{unit}' is not in the data of '{entry.name}'")
    visible = set(plan.visible_names)

    def usable(column: str, what: str) -> pa.DataType:
        if column not in visible:
            raise UnknownColumn(f"{what}: unknown or withheld column '{column}'", columns=[column])
        return schema.field(column).type

    filt = compile_client_filter(query.filter) if query.filter else None
    if filt is not None:
        bad = [c for c in filt.columns if c not in visible]
        if bad:
            raise UnknownColumn(f"filter refers to unknown or withheld column(s): {', '.join(bad)}", columns=bad)

    types = {g: str(usable(g, "group_by")) for g in query.group_by}
    for g in query.group_by:
        if g == unit:
            raise InvalidRequest(f"cannot group by the privacy unit '{unit}'")
    requested = dict(query.keys)
    catalog_keys = tuple(g for g in query.group_by if g not in requested and entry.columns[g].public_values)
    private = [g for g in query.group_by if g not in requested and g not in catalog_keys]
    key_source: Literal["none", "public", "threshold"]
    if not query.group_by:
        key_source = "none"
    elif private:
        if query.delta <= 0:
            raise InvalidRequest(
                f"the values of {', '.join(private)} are not public (catalog public_values), so groups can only be "
                "released above a noisy threshold: give a delta > 0 (e.g. 1e-7), or list the keys you want")
        key_source = "threshold"
    else:
        key_source = "public"
    if requested and math.prod(len(v) for v in requested.values()) > MAX_KEYS:
        raise InvalidRequest(f"at most {MAX_KEYS} group keys")

    builder = _Builder(entry, usable, query.contributions, query.epsilon)
    main: list[Primitive] = []
    outputs: list[Output] = []
    histograms: list[Part] = []
    for agg in query.aggregates:
        out = builder.aggregate(agg, main, histograms, query.group_by)
        outputs.append(out)
    if key_source == "threshold" and not any(p.kind == "len" for p in main) and main:
        main.append(builder.primitive("len"))  # OpenDP thresholds on a noisy row count per group
    parts: list[Part] = []
    if main:
        parts.append(Part(query.group_by, tuple(main)))
    offset = len(parts)
    parts.extend(histograms)
    outputs = [o if o.function != "histogram" else _shift(o, offset) for o in outputs]
    columns = tuple(dict.fromkeys([unit, *query.group_by, *builder.sources, *(filt.columns if filt else ())]))
    return DpPlan(
        dataset=entry.name, unit=unit, contributions=query.contributions,
        epsilon=query.epsilon, delta=query.delta, columns=columns, filter=filt,
        derived=tuple(builder.derived.values()), group_by=query.group_by, key_source=key_source,
        requested_keys=requested, catalog_key_columns=catalog_keys, parts=tuple(parts),
        outputs=tuple(outputs), plan_hash=plan.hash, types=types)


def _shift(out: Output, offset: int) -> Output:
    return Output(out.name, out.function, out.column, out.primitives, out.part + offset, out.bounds, out.labels)


class _Builder:
    """Turns aggregates into primitives and prepared columns, sharing what can be shared
    (``count(x)`` and ``mean(x)`` use one noisy non-null count of x)."""

    def __init__(self, entry: DatasetEntry, usable: Any, contributions: int = 1, epsilon: float = 1.0) -> None:
        self.entry = entry
        self.usable = usable
        self.contributions = contributions
        self.epsilon = epsilon
        self.derived: dict[str, Derived] = {}
        self.sources: list[str] = []
        self._ids = 0
        self._shared: dict[tuple[Any, ...], Primitive] = {}

    def primitive(self, kind: Kind, **kw: Any) -> Primitive:
        key = (kind, tuple(sorted((k, v) for k, v in kw.items())))
        if key in self._shared:
            return self._shared[key]
        p = Primitive(f"{PREFIX}p{self._ids}", kind, **kw)
        self._ids += 1
        self._shared[key] = p
        return p

    def _add(self, main: list[Primitive], p: Primitive) -> str:
        if p not in main:
            main.append(p)
        return p.id

    def _source(self, column: str) -> None:
        if column not in self.sources:
            self.sources.append(column)

    def bounds(self, agg: Aggregate, dtype: pa.DataType) -> tuple[float, float]:
        if not _numeric(dtype):
            raise InvalidRequest(f"{agg.function}({agg.column}): the column is not numeric ({dtype})")
        found = agg.bounds or self.entry.columns[str(agg.column)].bounds
        if found is None:
            raise InvalidRequest(f"{agg.function}({agg.column}) needs bounds: the catalog has none for "
                                 f"'{agg.column}', so give \"bounds\": [low, high] (values are clamped into them)")
        lo, hi = float(found[0]), float(found[1])
        # decided from the request and the catalog alone, so the refusal says nothing about the data
        if max(abs(lo), abs(hi)) * self.contributions / self.epsilon > MAX_MAGNITUDE:
            raise InvalidRequest(f"{agg.function}({agg.column}): bounds [{lo:g}, {hi:g}] are too wide for this "
                                 "epsilon (the noisy result could not be represented); use narrower bounds")
        return lo, hi

    def aggregate(self, agg: Aggregate, main: list[Primitive], histograms: list[Part],
                  group_by: tuple[str, ...]) -> Output:
        name = agg.output_name
        if agg.function == "count":
            if agg.column is None:
                return Output(name, "count", None, (self._add(main, self.primitive("len")),), 0)
            self.usable(agg.column, name)
            self._source(agg.column)
            return Output(name, "count", agg.column, (self._add(main, self.primitive("count", column=agg.column)),), 0)
        column = str(agg.column)
        dtype = self.usable(column, name)
        self._source(column)
        if agg.function in ("sum", "mean"):
            lo, hi = self.bounds(agg, dtype)
            scale = _sum_scale(lo, hi, pa.types.is_integer(dtype))
            if round(lo * scale) == round(hi * scale):  # from the request alone: never a data-dependent error
                raise InvalidRequest(f"{agg.function}({column}): bounds [{lo:g}, {hi:g}] are too narrow to sum "
                                     "(every value would round to the same number); use wider bounds or rescale")
            prepared = f"{PREFIX}sum_{column}_{_tag(lo)}_{_tag(hi)}"
            self.derived.setdefault(prepared, Derived(prepared, column, "scaled_sum", (lo, hi), scale))
            s = self.primitive("sum", column=prepared, scale=scale, bounds=(lo, hi))
            ids = [self._add(main, s)]
            if agg.function == "mean":
                ids.append(self._add(main, self.primitive("count", column=column)))
            return Output(name, agg.function, column, tuple(ids), 0, (lo, hi))
        if agg.function == "quantile":
            lo, hi = self.bounds(agg, dtype)
            candidates = tuple(agg.candidates) if agg.candidates else _grid(lo, hi, DEFAULT_CANDIDATES)
            if candidates[0] < lo or candidates[-1] > hi:
                lo, hi = min(lo, candidates[0]), max(hi, candidates[-1])
            prepared = f"{PREFIX}f_{column}_{_tag(lo)}_{_tag(hi)}"
            self.derived.setdefault(prepared, Derived(prepared, column, "float", (lo, hi)))
            p = self.primitive("quantile", column=prepared, q=agg.q, candidates=candidates, bounds=(lo, hi))
            return Output(name, "quantile", column, (self._add(main, p),), 0, (lo, hi))
        # histogram: its own group-by (the caller's groups × the bins), counted with a noisy length
        bin_col = f"{PREFIX}bin_{name}"
        labels: tuple[Any, ...]
        if agg.bins is not None:
            if not _numeric(dtype):
                raise InvalidRequest(f"{name}: bins need a numeric column ('{column}' is {dtype})")
            edges = tuple(float(e) for e in agg.bins)
            labels = tuple(f"[{_num(a)}, {_num(b)})" for a, b in pairwise(edges))
            self.derived[bin_col] = Derived(bin_col, column, "bin", edges=edges, labels=labels)
        else:
            if agg.categories is not None:
                labels = tuple(agg.categories)
            elif self.entry.columns[column].public_values:
                labels = ()  # read from the data: the catalog says the set of values is public
            else:
                raise InvalidRequest(f"{name}: the values of '{column}' are not public (catalog public_values): "
                                     "give \"categories\" or numeric \"bins\"")
            self.derived[bin_col] = Derived(bin_col, column, "category", labels=labels)
        p = Primitive(f"{PREFIX}h{len(histograms)}", "len")
        histograms.append(Part((*group_by, bin_col), (p,), bins=(bin_col, labels)))
        return Output(name, "histogram", column, (p.id,), len(histograms) - 1, labels=tuple(map(str, labels)))


def _numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


def _sum_scale(lo: float, hi: float, integer: bool) -> float:
    """A power of two s with max(|lo|, |hi|)·s ≤ 2^31: clamped values × s, rounded, are integers
    whose sum cannot overflow and whose sensitivity is exact. Integer columns with integer
    bounds in range keep s = 1 (no rounding at all)."""
    top = max(abs(lo), abs(hi), MIN_SCALE_TOP)
    if integer and float(lo).is_integer() and float(hi).is_integer() and top <= SUM_RANGE:
        return 1.0
    return 2.0 ** math.floor(math.log2(SUM_RANGE / top))


def _grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    return tuple(lo + (hi - lo) * i / (n - 1) for i in range(n))


def _tag(x: float) -> str:
    return _num(x).replace("-", "m").replace(".", "p").replace("+", "")


def _num(x: float) -> str:
    return f"{x:g}"
