"""From a governed (plan-applied) table to the plaintext the gateway encrypts. Pure, no I/O.

Which columns may be encrypted: those the access plan keeps *or masks* for the caller (the
values she would read) whose plan-applied type is numeric (integers, floats, decimals,
booleans). A column withheld by the plan, or masked to text (``hash``, ``redact``…), cannot be
encrypted. The view is the masked view, encrypted: encryption never shows more than ``read``.

Each value is clipped to the column's bounds (the request's, else the catalog's ``bounds``;
a column with neither is refused), so that one row's effect on any aggregate is bounded — the
sensitivity the release noise is calibrated to. Rows are never dropped after the plan's own
row filters: the caller's ``filter``, rows with a null in a requested column, and rows beyond
``contributions`` per privacy unit are *unselected* instead — their values become 0 and an
encrypted 0/1 ``selected`` vector says which rows count. So the filter cannot be used to count
rows through the ciphertext count, and nulls do not bias means (complete-case analysis).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govern.errors import AccessDenied, InvalidRequest, UnknownColumn
from govern.mask.predicate_arrow import evaluate as evaluate_predicate
from govern.plan.model import AccessPlan
from govern.plan.predicates import compile_client_filter
from govern.policy.model import DatasetEntry
from govern.privacy.he.computation import MAX_AGGREGATE, ViewShape


@dataclass(frozen=True)
class ViewSpec:
    """What a view encrypts, validated against the plan. Plain data (goes into the token)."""

    dataset: str
    columns: tuple[str, ...]
    bounds: Mapping[str, tuple[float, float]]
    filter: str | None = None
    limit: int | None = None
    group_by: str | None = None
    groups: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "columns": list(self.columns),
                "bounds": {k: list(v) for k, v in self.bounds.items()}, "filter": self.filter,
                "limit": self.limit, "group_by": self.group_by, "groups": list(self.groups)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ViewSpec:
        return cls(d["dataset"], tuple(d["columns"]), {k: (float(v[0]), float(v[1])) for k, v in d["bounds"].items()},
                   d.get("filter"), d.get("limit"), d.get("group_by"), tuple(d.get("groups") or ()))

    def shape(self, rows: int = 0) -> ViewShape:
        return ViewShape(self.columns, self.bounds, self.groups, rows)

    def read_columns(self, plan: AccessPlan) -> list[str]:
        """Masked columns the gateway reads to build the view (values, filter, groups, unit)."""
        names = list(self.columns)
        if self.filter:
            names += list(compile_client_filter(self.filter).columns)
        if self.group_by:
            names.append(self.group_by)
        if plan.privacy_unit:
            names.append(plan.privacy_unit)
        return list(dict.fromkeys(names))


def resolve_spec(plan: AccessPlan, entry: DatasetEntry, columns: Sequence[str],
                 bounds: Mapping[str, Sequence[float]] | None, filter: str | None, limit: int | None,
                 group_by: str | None, groups: Sequence[str] | None, *, max_groups: int) -> ViewSpec:
    """Check a view request against the plan and the catalog; fill in catalog bounds."""
    if not columns:
        raise InvalidRequest("name the numeric columns to encrypt")
    cols = tuple(dict.fromkeys(columns))
    visible = set(plan.visible_names)
    hidden = [c for c in cols if c not in visible]
    if hidden:
        raise UnknownColumn(f"unknown or withheld column(s): {', '.join(hidden)}", columns=hidden)
    given = dict(bounds or {})
    extra = [c for c in given if c not in cols]
    if extra:
        raise InvalidRequest(f"bounds given for columns not requested: {', '.join(extra)}")
    resolved: dict[str, tuple[float, float]] = {}
    for c in cols:
        pair = given.get(c)
        if pair is None and c in entry.columns and entry.columns[c].bounds is not None:
            pair = entry.columns[c].bounds
        if pair is None:
            raise InvalidRequest(f"column '{c}' has no bounds in the catalog: declare bounds {{\"{c}\": [low, high]}}",
                                 columns=[c])
        if len(pair) != 2:
            raise InvalidRequest(f"bounds of '{c}' must be [low, high]")
        lo, hi = float(pair[0]), float(pair[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidRequest(f"bounds of '{c}' must be finite with low < high")
        resolved[c] = (lo, hi)
    if filter is not None:
        pred = compile_client_filter(filter)
        bad = [c for c in pred.columns if c not in visible]
        if bad:
            raise UnknownColumn(f"filter refers to unknown or withheld column(s): {', '.join(bad)}", columns=bad)
    keys: tuple[str, ...] = ()
    if group_by is not None:
        if group_by not in visible:
            raise UnknownColumn(f"unknown or withheld column: {group_by}", columns=[group_by])
        col = entry.columns.get(group_by)
        if col is None or not col.public_values:
            raise AccessDenied(f"'{group_by}' is not marked public_values in the catalog: its values cannot "
                               "be group keys")
        keys = tuple(dict.fromkeys(str(g) for g in (groups or ())))
        if not keys:
            raise InvalidRequest("group_by needs the group keys: \"groups\": [\"EU\", \"US\", …] (declared, "
                                 "never read from the data)")
        if len(keys) > max_groups:
            raise InvalidRequest(f"at most {max_groups} groups", limit=max_groups)
    elif groups:
        raise InvalidRequest("groups need group_by")
    if limit is not None and limit < 1:
        raise InvalidRequest("limit must be positive")
    if plan.privacy_unit and plan.privacy_unit not in visible:
        raise AccessDenied(f"encrypted views bound each privacy unit's rows, which needs the unit column "
                           f"'{plan.privacy_unit}' to be visible (masked is fine)")
    return ViewSpec(plan.dataset, cols, resolved, filter, limit, group_by, keys)


@dataclass
class PlainView:
    """The plaintext of a view. Never leaves the gateway; only its keyed digest does."""

    rows: int
    values: dict[str, np.ndarray]
    selected: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def digest(self, key: bytes, spec: ViewSpec) -> str:
        """HMAC of spec and content: lets a release prove it recomputed the same view, without
        giving the client a hash she could test guesses against."""
        mac = hmac.new(key, json.dumps(spec.to_dict(), sort_keys=True).encode(), hashlib.sha256)
        mac.update(str(self.rows).encode())
        for name in sorted(self.values):
            mac.update(name.encode() + b"\0" + self.values[name].tobytes())
        mac.update(self.selected.tobytes())
        for name in sorted(self.groups):
            mac.update(name.encode() + b"\0" + self.groups[name].tobytes())
        return mac.hexdigest()

    def count(self, group: str | None = None) -> int:
        return int((self.groups[group] if group is not None else self.selected).sum())


def prepare(table: pa.Table, spec: ViewSpec, privacy_unit: str | None, contributions: int) -> PlainView:
    """Clip, select and truncate: the exact vectors the view's ciphertexts encrypt."""
    n = table.num_rows
    selected = np.ones(n, dtype=bool)
    values: dict[str, np.ndarray] = {}
    for name in spec.columns:
        column = table.column(name)
        if not _numeric(column.type):
            raise InvalidRequest(f"column '{name}' is {column.type} as you see it; only numeric columns can be "
                                 "encrypted", columns=[name])
        present = ~np.asarray(pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)
        selected &= present
        raw = pc.cast(pc.fill_null(column, 0), pa.float64()).to_numpy(zero_copy_only=False)
        lo, hi = spec.bounds[name]
        values[name] = np.clip(np.nan_to_num(raw, nan=0.0), lo, hi)
    if spec.filter:
        pred = compile_client_filter(spec.filter)
        try:
            evaluate_predicate(pred.sql, pa.RecordBatch.from_pylist([], schema=table.schema))  # types, not data
            parts = [pc.fill_null(evaluate_predicate(pred.sql, b), False).to_numpy(zero_copy_only=False)
                     for b in table.to_batches()]
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            # a type mismatch with the masked view (e.g. a tokenized id compared with a number):
            # a property of the plan and the request, the same for any data
            raise InvalidRequest("the filter does not apply to the columns' types as you see them (masked "
                                 "columns keep their masked type): compare like with like") from None
        selected &= np.concatenate(parts).astype(bool) if parts else np.zeros(0, dtype=bool)
    if privacy_unit:
        selected &= _within_contributions(table.column(privacy_unit), selected, contributions)
    for name in values:
        values[name] = np.where(selected, values[name], 0.0)
    groups = {}
    if spec.group_by:
        keys = pc.cast(table.column(spec.group_by), pa.string()).to_numpy(zero_copy_only=False)
        for g in spec.groups:
            groups[g] = (selected & (keys == g)).astype(np.float64)
    for name, (lo, hi) in spec.bounds.items():
        if n * max(abs(lo), abs(hi), 1.0) > MAX_AGGREGATE:
            raise InvalidRequest(f"bounds of '{name}' are too wide for {n} rows at the CKKS scale; "
                                 "narrow them or rescale the column", columns=[name])
    return PlainView(n, values, selected.astype(np.float64), groups)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def _within_contributions(unit: pa.ChunkedArray, selected: np.ndarray, k: int) -> np.ndarray:
    """True for the first ``k`` selected rows of each privacy unit (storage order)."""
    codes = pc.dictionary_encode(unit.combine_chunks() if isinstance(unit, pa.ChunkedArray) else unit)
    idx = pc.fill_null(codes.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    idx = np.where(selected, idx, -2 - np.arange(len(idx)))  # unselected rows: each its own unit
    order = np.argsort(idx, kind="stable")
    ranked = idx[order]
    starts = np.r_[True, ranked[1:] != ranked[:-1]] if len(ranked) else np.zeros(0, dtype=bool)
    first = np.maximum.accumulate(np.where(starts, np.arange(len(ranked)), 0)) if len(ranked) else ranked
    rank = np.empty(len(idx), dtype=np.int64)
    rank[order] = np.arange(len(ranked)) - first
    return rank < k
