"""Declared computations: what a client may ask the gateway to release, and how it is computed.

A release is never "decrypt this ciphertext". It is a *declaration* over a view::

    {"op": "sum",    "column": "charges"}                      one value (or one per group)
    {"op": "count"}                                            selected rows (or per group)
    {"op": "mean",   "column": "charges"}                      sum / count, clamped to bounds
    {"op": "dot",    "columns": ["charges", "age"]}            Σ x·y over selected rows
    {"op": "linear", "columns": [...], "weights": [...], "intercept": 0.0}
                                                               Σ over rows of w·x + b
    "by_group": true   (sum, count, mean) one value per group key of the view

Every operation is an aggregate over all selected rows by construction: there is no row
index, no per-row weight and no "values" operation, so full columns and single rows cannot be
declared. ``evaluate`` is the one definition of each operation on CKKS vectors; the client
helper runs it on the view it received, the gateway on its own fresh encryption of the same
plaintext, so both sides compute the same thing.

Sensitivities are for adding or removing one privacy unit that contributes at most
``contributions`` rows, each clipped to the view's bounds (see docs/encryption.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from govern.errors import InvalidRequest, ReleaseRefused, UnknownColumn

OPS: tuple[str, ...] = ("sum", "count", "mean", "dot", "linear")
GROUPABLE = frozenset({"sum", "count", "mean"})
MAX_WEIGHT = 1e6
# |rows · per-row magnitude| must stay well below 2^59: the modulus left after one rescaling
# (60 bits) at scale 2^40. Larger aggregates would wrap around silently.
MAX_AGGREGATE = 2.0 ** 52


class VectorSource(Protocol):
    """Where ``evaluate`` finds the encrypted chunks of a view (client or gateway side)."""

    def values(self, column: str) -> list[Any]: ...

    def selected(self) -> list[Any]: ...

    def group(self, key: str) -> list[Any]: ...


@dataclass(frozen=True)
class ViewShape:
    """What a computation is checked against: the view's columns, bounds and groups."""

    columns: tuple[str, ...]
    bounds: Mapping[str, tuple[float, float]]
    groups: tuple[str, ...] = ()
    rows: int = 0


@dataclass(frozen=True)
class Computation:
    op: str
    columns: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    intercept: float = 0.0
    by_group: bool = False
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    # -- parsing ---------------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Computation:
        """Validate the *shape* of a declaration. Unknown operations are refused."""
        if not isinstance(data, Mapping):
            raise InvalidRequest("computation must be an object like {\"op\": \"sum\", \"column\": \"x\"}")
        allowed = {"op", "column", "columns", "weights", "intercept", "by_group", "bounds"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InvalidRequest(f"computation: unknown field(s) {', '.join(unknown)}")
        op = data.get("op")
        if op not in OPS:
            raise ReleaseRefused(f"'{op}' is not a releasable aggregate; declare one of: {', '.join(OPS)}",
                             allowed=list(OPS))
        columns: list[str] = []
        if data.get("column") is not None:
            columns.append(data["column"])
        listed = data.get("columns") or []
        if not isinstance(listed, list):
            raise InvalidRequest("computation: columns must be a list of names")
        columns += listed
        if not all(isinstance(c, str) and c for c in columns):
            raise InvalidRequest("computation: columns must be names")
        need = {"sum": 1, "mean": 1, "count": 0, "dot": 2}.get(op)
        if need is not None and len(columns) != need:
            raise InvalidRequest(f"computation '{op}' takes {need} column(s), got {len(columns)}")
        if op == "linear" and not columns:
            raise InvalidRequest("computation 'linear' takes one or more columns")
        raw_weights = data.get("weights") or []
        numbers = [*raw_weights, data.get("intercept") or 0.0] if isinstance(raw_weights, list) else None
        if numbers is None or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            raise InvalidRequest("computation: weights must be a list of numbers, intercept a number")
        weights = tuple(float(w) for w in raw_weights)
        intercept = float(data.get("intercept") or 0.0)
        if op == "linear":
            if len(weights) != len(columns):
                raise InvalidRequest("computation 'linear' takes one weight per column")
            if not all(math.isfinite(w) and abs(w) <= MAX_WEIGHT for w in (*weights, intercept)):
                raise InvalidRequest(f"weights and intercept must be finite and at most {MAX_WEIGHT:g} in size")
        elif weights or intercept:
            raise InvalidRequest(f"computation '{op}' takes no weights")
        by_group = data.get("by_group", False)
        if not isinstance(by_group, bool):
            raise InvalidRequest("computation: by_group must be true or false")
        if by_group and op not in GROUPABLE:
            raise InvalidRequest(f"computation '{op}' cannot be grouped (only {', '.join(sorted(GROUPABLE))})")
        bounds = {}
        declared = data.get("bounds") or {}
        if not isinstance(declared, Mapping):
            raise InvalidRequest("computation: bounds are {column: [low, high]}")
        for name, pair in declared.items():
            if not (isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)):
                raise InvalidRequest("computation: bounds are {column: [low, high]}")
            bounds[name] = (float(pair[0]), float(pair[1]))
        return cls(op, tuple(columns), weights, intercept, by_group, bounds)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        if self.columns:
            out["columns"] = list(self.columns)
        if self.op == "linear":
            out["weights"] = list(self.weights)
            out["intercept"] = self.intercept
        if self.by_group:
            out["by_group"] = True
        if self.bounds:
            out["bounds"] = {k: list(v) for k, v in self.bounds.items()}
        return out

    # -- checks against a view -------------------------------------------------------------------
    def check(self, view: ViewShape, *, max_slots: int) -> None:
        """Refuse what the view cannot answer or what would release too many values."""
        missing = [c for c in self.columns if c not in view.columns]
        if missing:
            raise UnknownColumn(f"not in this encrypted view: {', '.join(missing)}", columns=missing)
        for name, pair in self.bounds.items():
            if name not in view.bounds:
                raise UnknownColumn(f"bounds given for a column not in the view: {name}", columns=[name])
            if tuple(pair) != tuple(view.bounds[name]):
                raise InvalidRequest(f"declared bounds of '{name}' {list(pair)} differ from the view's "
                                     f"{list(view.bounds[name])}: values were clipped to the view's bounds")
        for kind in self.parts():
            if view.rows * self.magnitude(kind, view) > MAX_AGGREGATE:
                raise InvalidRequest(f"'{self.op}' over {view.rows} rows with these bounds and weights exceeds "
                                     "the CKKS parameters' range; narrow the bounds or weights")
        if self.by_group and not view.groups:
            raise InvalidRequest("by_group needs a view made with group_by and groups")
        if len(self.outputs(view)) > max_slots:
            raise ReleaseRefused(f"this release would have {len(self.outputs(view))} values; at most {max_slots} "
                             "may be released at once", limit=max_slots)

    def outputs(self, view: ViewShape) -> list[str]:
        """Labels of the released values, in order."""
        return list(view.groups) if self.by_group else [self.op]

    def parts(self) -> dict[str, float]:
        """The encrypted aggregates ("kinds") the release needs, with each one's share of epsilon."""
        if self.op == "mean":
            return {"sum": 0.5, "count": 0.5}
        return {self.op: 1.0}

    def sensitivity(self, kind: str, view: ViewShape, contributions: int) -> float:
        """L1 sensitivity of one kind's values (all groups together) to one privacy unit."""
        m = {c: max(abs(lo), abs(hi)) for c, (lo, hi) in view.bounds.items()}
        if kind == "count":
            per_row = 1.0
        elif kind == "sum":
            per_row = m[self.columns[0]]
        elif kind == "dot":
            per_row = m[self.columns[0]] * m[self.columns[1]]
        elif kind == "linear":
            per_row = sum(abs(w) * m[c] for w, c in zip(self.weights, self.columns, strict=True)) + abs(self.intercept)
        else:  # pragma: no cover - kinds come from parts()
            raise ValueError(kind)
        return contributions * per_row

    def magnitude(self, kind: str, view: ViewShape) -> float:
        """A bound on one row's contribution to ``kind`` (for the CKKS error estimate)."""
        return max(1.0, self.sensitivity(kind, view, 1))

    def depth(self, kind: str) -> int:
        """Multiplicative depth of ``kind`` (0: additions only)."""
        if kind in ("dot", "linear") or self.by_group:
            return 1
        return 0


def evaluate(computation: Computation, source: VectorSource, groups: Sequence[str], *,
             rotate: bool) -> dict[str, Any]:
    """Compute each needed aggregate on CKKS vectors: ``{"sum": ct}`` or ``{"sum@EU": ct, …}``.

    Chunks are added slot-wise; with ``rotate`` (Galois keys present) the slots are then summed
    so the value sits in slot 0. Without it the caller gets per-slot partial sums.
    """
    keys = [f"@{g}" for g in groups] if computation.by_group else [""]
    out: dict[str, Any] = {}
    for kind in computation.parts():
        for suffix in keys:
            group = suffix[1:] if suffix else None
            acc = _aggregate(computation, kind, source, group)
            out[kind + suffix] = acc.sum() if rotate else acc
    return out


def _aggregate(c: Computation, kind: str, source: VectorSource, group: str | None) -> Any:
    if kind == "count":
        terms = source.group(group) if group is not None else source.selected()
        return _add_all(terms)
    if kind == "sum":
        values = source.values(c.columns[0])
        if group is None:
            return _add_all(values)
        return _add_all([v.mul(g) for v, g in zip(values, source.group(group), strict=True)])
    if kind == "dot":
        a, b = source.values(c.columns[0]), source.values(c.columns[1])
        return _add_all([x.mul(y) for x, y in zip(a, b, strict=True)])
    if kind == "linear":
        acc = None
        for weight, column in zip(c.weights, c.columns, strict=True):
            if weight == 0.0:
                continue
            term = _add_all(source.values(column)).mul(weight)
            acc = term if acc is None else acc.add_(term)
        if c.intercept != 0.0 or acc is None:
            term = _add_all(source.selected()).mul(c.intercept)
            acc = term if acc is None else acc.add_(term)
        return acc
    raise ValueError(kind)  # pragma: no cover


def _add_all(vectors: Sequence[Any]) -> Any:
    """Slot-wise sum into a new vector (``copy()`` is slow in TenSEAL: it round-trips bytes)."""
    if len(vectors) == 1:
        return vectors[0].add(0.0)
    acc = vectors[0].add(vectors[1])
    for v in vectors[2:]:
        acc.add_(v)
    return acc
