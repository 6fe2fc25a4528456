"""Profiles: what a data version looks like, computed on what govern may show.

A profile is taken of the **masked view** one principal's plan delivers (a steward's, usually),
never of the raw files: row filters, withheld columns and masks all apply before a value is
counted, so the profile holds nothing its viewer's plan would not already deliver. (DP-noised
statistics were the alternative; see docs/monitoring.md for why they were not chosen.)

Each column's profile records the *view* it was computed under — the plan's action, mask, cell
rules and result type for that column, and, for the whole profile, the row filters and key id
(:func:`column_view`, :func:`rows_view`). A profile is shown to another principal, and compared
with another profile, only column by column where those views are equal
(:func:`visible_to`): a policy change that masks more never lets an older, less masked
profile through.

Counts, null rates, mean, σ, min and max are exact over every row; quantiles (on a grid of
:data:`GRID` probabilities) and category shares come from a uniform sample of at most
``sample_rows`` rows (bottom-k on seeded random keys, vectorized per batch), so memory stays
bounded whatever the dataset's size. Text columns where most sampled values are distinct
(identifiers, pseudonyms, free text) keep no values at all, only counts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govern.plan.model import AccessPlan

__all__ = ["GRID", "ColumnProfile", "Profile", "column_view", "data_version", "profile_batches", "rows_view",
           "view_key", "visible_to"]

# Quantile probabilities: the midpoints of 200 equal cells. Midpoints, not 0 and 1: the sample's
# extremes are the least stable numbers there are, and Wasserstein distances taken on this grid
# stay within 0.003 σ of scipy's exact ones even on log-normal data (tests/monitor/test_drift.py).
GRID: tuple[float, ...] = tuple((i + 0.5) / 200 for i in range(200))
HIGH_CARDINALITY = 0.5  # a text column with more distinct values than this share of its sample


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    type: str  # Arrow type delivered
    kind: str  # numeric | categorical | text | empty
    rows: int
    nulls: int
    view: dict[str, Any]  # column_view() of the plan it was computed under
    sampled: int = 0  # non-null values in the sample
    mean: float | None = None
    std: float | None = None  # population σ, over all rows
    min: float | None = None
    max: float | None = None
    quantiles: tuple[float, ...] = ()  # at GRID, numeric only
    distinct: int | None = None  # distinct values in the sample
    top: tuple[tuple[str, float], ...] = ()  # categorical: (value, share of sampled values), largest first
    other: float = 0.0  # categorical: share of sampled values outside ``top``

    @property
    def null_rate(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "kind": self.kind, "rows": self.rows, "nulls": self.nulls,
                "null_rate": self.null_rate, "view": self.view, "sampled": self.sampled, "mean": self.mean,
                "std": self.std, "min": self.min, "max": self.max, "quantiles": list(self.quantiles),
                "distinct": self.distinct, "top": [list(t) for t in self.top], "other": self.other}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnProfile:
        return cls(d["name"], d["type"], d["kind"], d["rows"], d["nulls"], d["view"], d.get("sampled", 0),
                   d.get("mean"), d.get("std"), d.get("min"), d.get("max"), tuple(d.get("quantiles") or ()),
                   d.get("distinct"), tuple((str(v), float(s)) for v, s in d.get("top") or ()),
                   float(d.get("other") or 0.0))


@dataclass(frozen=True)
class Profile:
    dataset: str
    data_version: str  # data_version() of the files profiled
    computed_at: str  # ISO 8601, UTC
    rows: int  # rows in the view (after row filters)
    sample_rows: int  # rows behind quantiles and category shares
    view: dict[str, Any]  # rows_view() of the plan
    principal: str  # whose view
    purpose: str
    policy_version: str | None
    plan_hash: str
    columns: tuple[ColumnProfile, ...] = field(default_factory=tuple)

    @property
    def view_key(self) -> str:
        return view_key(self.view)

    def column(self, name: str) -> ColumnProfile | None:
        return next((c for c in self.columns if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "data_version": self.data_version, "computed_at": self.computed_at,
                "rows": self.rows, "sample_rows": self.sample_rows, "view": self.view, "view_key": self.view_key,
                "principal": self.principal, "purpose": self.purpose, "policy_version": self.policy_version,
                "plan_hash": self.plan_hash, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        return cls(d["dataset"], d["data_version"], d["computed_at"], d["rows"], d["sample_rows"], d["view"],
                   d["principal"], d["purpose"], d.get("policy_version"), d["plan_hash"],
                   tuple(ColumnProfile.from_dict(c) for c in d["columns"]))


# -- views --------------------------------------------------------------------------------------------
def column_view(plan: AccessPlan, name: str) -> dict[str, Any]:
    """What decides the values of column ``name`` in ``plan``'s output (reasons and sources,
    which move with every edit of a file, are left out)."""
    col = plan.column(name)
    rules = [{"when": r.when, "mask": r.mask.to_dict()} for r in plan.cell_rules if r.column == name]
    return {"action": col.action, "mask": col.mask.to_dict() if col.mask else None, "result_type": col.result_type,
            "cell_rules": rules}


def rows_view(plan: AccessPlan) -> dict[str, Any]:
    """What decides which rows ``plan`` delivers, and the key its pseudonyms are made with."""
    return {"row_filters": sorted(r.predicate for r in plan.row_filters), "key_id": plan.key_id}


def view_key(view: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(view, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def data_version(fingerprint: tuple[tuple[str, int | None, object], ...]) -> str:
    """A short, stable name for :func:`govern.storage.scan.fingerprint`'s answer (every data
    file's path, size and mtime): a file added, removed or rewritten makes a new version."""
    body = json.dumps([list(map(str, f)) for f in fingerprint], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def visible_to(profile: Profile, plan: AccessPlan) -> Profile | None:
    """``profile`` as the principal of ``plan`` may see it: None unless the plan delivers the
    same rows (row filters, key), and only the columns whose view is the same in ``plan``."""
    if rows_view(plan) != profile.view:
        return None
    names = set(plan.visible_names)
    return replace(profile, columns=tuple(c for c in profile.columns
                                          if c.name in names and column_view(plan, c.name) == c.view))


# -- computing one --------------------------------------------------------------------------------------
@dataclass
class _Moments:
    rows: int = 0
    nulls: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = float("inf")
    hi: float = float("-inf")

    def add(self, values: np.ndarray) -> None:
        """Chan et al.'s parallel update of count, mean and squared deviations."""
        k = values.size
        if k == 0:
            return
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        delta = mean - self.mean
        total = self.n + k
        self.mean += delta * k / total
        self.m2 += m2 + delta * delta * self.n * k / total
        self.n = total
        self.lo = min(self.lo, float(values.min()))
        self.hi = max(self.hi, float(values.max()))


def numeric(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_date(t)
            or pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time(t))


def as_float(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Non-null values as float64: dates as days, timestamps and times in their unit."""
    t = values.type
    if pa.types.is_date32(t) or pa.types.is_time32(t):
        values = values.cast(pa.int32())
    elif pa.types.is_date64(t) or pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time64(t):
        values = values.cast(pa.int64())
    values = pc.drop_null(values)
    return np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def profile_batches(batches: pa.RecordBatchReader, plan: AccessPlan, *, data_version: str, computed_at: str,
                    sample_rows: int = 100_000, top: int = 50, seed: int = 0) -> Profile:
    """Profile the masked stream ``batches`` that ``plan`` produced (one pass, bounded memory)."""
    schema = batches.schema
    moments = {f.name: _Moments() for f in schema}
    rng = np.random.default_rng(seed)
    kept: pa.Table | None = None
    keys = np.empty(0)
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        for f, col in zip(schema, batch.columns, strict=True):
            m = moments[f.name]
            m.rows += len(col)
            m.nulls += col.null_count
            if numeric(f.type):
                m.add(as_float(col))
        # bottom-k sampling: each row draws a key; the sample is the rows with the k smallest keys
        draw = rng.random(batch.num_rows)
        limit = np.partition(keys, sample_rows - 1)[sample_rows - 1] if keys.size >= sample_rows else np.inf
        take = np.flatnonzero(draw < limit)
        if take.size:
            chosen = pa.Table.from_batches([batch]).take(pa.array(take))
            kept = chosen if kept is None else pa.concat_tables([kept, chosen])
            keys = np.concatenate([keys, draw[take]])
            if keys.size > sample_rows:
                keep = np.argpartition(keys, sample_rows - 1)[:sample_rows]
                kept, keys = kept.take(pa.array(keep)), keys[keep]
    sample = kept if kept is not None else schema.empty_table()
    columns = tuple(_column(f, sample.column(f.name), moments[f.name], column_view(plan, f.name), top)
                    for f in schema)
    return Profile(plan.dataset, data_version, computed_at, rows, sample.num_rows, rows_view(plan), plan.principal,
                   plan.purpose, plan.policy_version, plan.hash, columns)


def _column(f: pa.Field, sample: pa.ChunkedArray, m: _Moments, view: dict[str, Any], top: int) -> ColumnProfile:
    base = ColumnProfile(f.name, str(f.type), "empty", m.rows, m.nulls, view)
    if m.rows == m.nulls:
        return base
    if numeric(f.type):
        numbers = as_float(sample)
        quantiles = tuple(float(q) for q in np.quantile(numbers, GRID)) if numbers.size else ()
        return replace(base, kind="numeric", sampled=int(numbers.size), mean=m.mean,
                       std=float(np.sqrt(m.m2 / m.n)) if m.n else None, min=m.lo, max=m.hi, quantiles=quantiles)
    values = _categories(sample)
    if values is None:
        return replace(base, kind="text", sampled=0)
    n = len(values)
    counts = pc.value_counts(values)
    distinct = len(counts)
    if distinct > HIGH_CARDINALITY * n and distinct > top:
        return replace(base, kind="text", sampled=n, distinct=distinct)
    tally = counts.field("counts").to_numpy()
    order = np.argsort(-tally, kind="stable")[:top]
    labels = counts.field("values").to_pylist()
    shares = tuple((str(labels[i]), float(tally[i]) / n) for i in order)
    return replace(base, kind="categorical", sampled=n, distinct=distinct, top=shares,
                   other=max(0.0, 1.0 - sum(s for _, s in shares)))


def _categories(sample: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """The non-null values as strings or booleans; None if there are none or they are neither
    (lists, structs: not profiled beyond counts)."""
    values = pc.drop_null(sample)
    t = values.type
    if pa.types.is_dictionary(t):
        values, t = values.cast(t.value_type), t.value_type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        values, t = values.cast(pa.binary()).cast(pa.string(), safe=False), pa.string()
    ok = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
    return values if ok and len(values) else None
