"""A differentially private synthesizer in the manner of MST (McKenna, Miklau, Sheldon 2021), on
OpenDP's own measurements.

Why not ``smartnoise-synth``: its MST/AIM need ``smartnoise-sql`` (which pins ``opendp<0.15``;
govern uses OpenDP 0.16), ``mbi<2`` and ``opacus<0.15`` (an old torch): it cannot be installed
next to govern's OpenDP. So the steps are govern's, and every bit of noise is OpenDP's
(``make_laplace``, ``make_laplace_threshold``, ``make_noisy_max``), each measurement's privacy
map checked against its share of the budget (docs/synthetic.md, "DP synthesizer").

1. **Domains.** Numbers are cut into ``bins`` equal bins between the catalog's ``bounds``
   (required: a domain read off the data would leak its extremes), dates into years between
   ``params.bounds``; columns whose values the catalog declares public (``public_values``),
   booleans and columns listed in ``params.domains`` keep their values; every other column
   (strings, dates without bounds) releases its values through OpenDP's Laplace threshold
   mechanism, whose noisy counts are also that column's one-way marginal (this is what δ pays
   for; NULL is released like a value). NULLs of the other columns are not learned.
2. **One-way marginals** of the other columns: one Laplace vector (L1 sensitivity = number of
   columns: one row adds one to one cell of each).
3. **Selection**: a maximum-spanning tree over column pairs, one edge at a time by report-noisy-max
   (``make_noisy_max``; score = L1 distance between the pair's true counts and the product of
   the noisy one-way marginals, sensitivity 1).
4. **Two-way marginals** of the tree's edges: one Laplace vector (L1 sensitivity = edges).
5. **Sampling**: along the tree from the root, each column drawn given its parent from the
   noisy two-way counts (negatives clipped; an all-zero row falls back on the one-way
   marginal); numbers uniformly inside their bin. Pure post-processing: any number of rows.

Budget shares of ε: 20 % domains (when any column needs one), 20 % one-way, 20 % selection, the
rest two-way; δ goes to the domains. One row per privacy unit is learned (the caller bounds
contributions), so neighbouring datasets differ by one row. Unlike MST, the noisy marginals are
not made mutually consistent (Private-PGM): each conditional uses its own edge's counts.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from govern.errors import SyntheticError, Unsupported

__all__ = ["NULL", "ColumnDomain", "MstSynthesizer", "domains_for"]

NULL = "\u2400"  # the NULL category (a symbol no real value uses as a whole)
SHARES = {"domains": 0.2, "one_way": 0.2, "select": 0.2}  # the rest: two-way marginals


def _opendp() -> Any:
    """OpenDP with ``contrib`` enabled. Fits run one at a time in a fit process (or the CLI), so
    the import needs none of the DP service's thread care; a gateway without OpenDP answers 501."""
    try:
        import opendp.prelude as dp
    except ImportError:
        raise Unsupported("the DP synthesizer needs OpenDP: pip install 'govern[synthetic]'") from None
    dp.enable_features("contrib")
    return dp


@dataclass
class ColumnDomain:
    """How one learned column is discretized: ``bins`` for numbers (``bounds`` from the
    catalog), ``public`` values kept as they are, or ``released`` by the threshold mechanism."""

    name: str
    kind: str  # numerical | integer | categorical | boolean | date | timestamp
    how: str  # bins | public | released
    bounds: tuple[float, float] | None = None
    values: list[Any] = field(default_factory=list)  # categories (strings), in code order

    @property
    def size(self) -> int:
        return len(self.values)

    def keys(self, series: pd.Series) -> pd.Series:
        """Each value's category key (a string; NULL → :data:`NULL`)."""
        if self.how == "bins" and self.kind not in ("date", "timestamp"):
            assert self.bounds is not None
            lo, hi = self.bounds
            n = len(self.values)
            x = pd.to_numeric(series, errors="coerce").astype("float64")
            codes = np.floor((np.clip(x.to_numpy(), lo, hi) - lo) / ((hi - lo) / n or 1)).clip(0, n - 1)
            out = pd.Series([str(int(c)) if not math.isnan(c) else NULL for c in codes], index=series.index)
            return out
        if self.kind in ("date", "timestamp"):
            lo, hi = (int(b) for b in self.bounds) if self.bounds else (-10**6, 10**6)
            return series.map(lambda v: NULL if pd.isna(v) else str(min(hi, max(lo, _year(v, self.kind)))))
        return series.map(lambda v: NULL if pd.isna(v) else str(v))

    def codes(self, series: pd.Series) -> np.ndarray:
        """Category codes (-1: a value outside the released domain, left out of marginals)."""
        index = {v: i for i, v in enumerate(self.values)}
        return np.array([index.get(k, -1) for k in self.keys(series)], dtype=np.int64)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pd.Series:
        keys = [self.values[c] for c in codes]
        if self.how == "bins" and self.kind not in ("date", "timestamp"):
            assert self.bounds is not None
            lo, hi = self.bounds
            width = (hi - lo) / max(1, len(self.values))
            out = [None if k == NULL else lo + (int(k) + rng.random()) * width for k in keys]
            if self.kind in ("integer",):
                return pd.Series([None if v is None else round(v) for v in out], dtype="Int64")
            return pd.Series(out, dtype="float64")
        if self.kind in ("date", "timestamp"):
            return pd.Series([None if k == NULL else _in_year(int(k), self.kind, rng) for k in keys], dtype="Int64")
        if self.kind == "boolean":
            return pd.Series([None if k == NULL else k == "True" for k in keys], dtype="object")
        return pd.Series([None if k == NULL else k for k in keys], dtype="object")


def domains_for(kinds: dict[str, str], catalog_bounds: dict[str, tuple[float, float]], public: set[str],
                params: dict[str, Any]) -> list[ColumnDomain]:
    """How each learned column is discretized, from the catalog (``bounds``, ``public_values``)
    and the synthesizer's ``params`` (``bounds``: numbers, or years for dates; ``domains``: the
    values of a categorical column). A number without bounds is refused: its range would have
    to come from the data."""
    bounds = {**catalog_bounds, **{k: tuple(v) for k, v in (params.get("bounds") or {}).items()}}
    declared = params.get("domains") or {}
    out: list[ColumnDomain] = []
    for name, kind in kinds.items():
        if kind in ("numerical", "integer"):
            if name not in bounds:
                raise SyntheticError(f"the DP synthesizer needs bounds for the number column '{name}' "
                                     "(catalog.yaml bounds, or params.bounds): a range read off the data would leak")
            out.append(ColumnDomain(name, kind, "bins", bounds=bounds[name]))  # type: ignore[arg-type]
        elif kind in ("date", "timestamp"):
            b = bounds.get(name)
            out.append(ColumnDomain(name, kind, "bins" if b else "released", bounds=b))  # type: ignore[arg-type]
        elif kind == "boolean":
            out.append(ColumnDomain(name, kind, "public"))
        elif name in declared:
            out.append(ColumnDomain(name, kind, "public", values=[str(v) for v in declared[name]]))
        else:
            out.append(ColumnDomain(name, kind, "public" if name in public else "released"))
    return out


def _year(value: Any, kind: str) -> int:
    if kind == "date":  # day numbers since 1970-01-01 (frames.to_frame)
        return (_dt.date(1970, 1, 1) + _dt.timedelta(days=int(value))).year
    return pd.Timestamp(int(value), unit="us").year


def _in_year(year: int, kind: str, rng: np.random.Generator) -> int:
    start = _dt.date(year, 1, 1)
    day = start + _dt.timedelta(days=int(rng.integers(0, 365)))
    days = (day - _dt.date(1970, 1, 1)).days
    return days if kind == "date" else days * 86_400_000_000


class MstSynthesizer:
    """Fit once (:meth:`fit_frame`, spending ``epsilon``/``delta``), sample any number of rows
    (:meth:`sample_frame`, seeded). Pickled with the model like SDV's synthesizers."""

    def __init__(self, epsilon: float, delta: float, bins: int, columns: list[ColumnDomain]) -> None:
        if not columns:
            raise SyntheticError("the DP synthesizer has no column to learn")
        self.epsilon, self.delta, self.bins = float(epsilon), float(delta), int(bins)
        self.columns = columns
        self.one_way: dict[str, np.ndarray] = {}
        self.edges: list[tuple[str, str]] = []
        self.two_way: dict[tuple[str, str], np.ndarray] = {}
        self.spent: dict[str, float] = {}

    # -- fit ----------------------------------------------------------------------------------
    def fit_frame(self, frame: pd.DataFrame) -> None:
        dp = _opendp()
        released = [c for c in self.columns if c.how == "released"]
        shares = dict(SHARES) if released else {"domains": 0.0, "one_way": 0.3, "select": 0.2}
        if len(self.columns) == 1:
            shares = {"domains": shares["domains"], "one_way": 1.0 - shares["domains"], "select": 0.0}
        if released and self.delta <= 0:
            raise SyntheticError(f"columns {', '.join(c.name for c in released)} have no public domain: the DP "
                                 "synthesizer releases their values under a threshold, which needs delta > 0 "
                                 "(or declare bounds / public_values in catalog.yaml)")
        eps = {k: self.epsilon * v for k, v in shares.items()}
        eps["two_way"] = self.epsilon - sum(eps.values())
        spent_delta = 0.0
        for c in released:  # 1. domains (and the one-way marginals of those columns)
            observed = frame[c.name].pipe(c.keys).value_counts().to_dict()
            kept, delta_used = _threshold(dp, {str(k): int(v) for k, v in observed.items()},
                                          eps["domains"] / len(released), self.delta / len(released))
            spent_delta += delta_used
            c.values = sorted(kept) or [NULL]  # nothing cleared the threshold: the column comes out NULL
            self.one_way[c.name] = np.array([float(kept.get(v, 0)) for v in c.values])
        for c in self.columns:
            # NULL is a value of a bounded or declared domain only if the data may hold it: a
            # category made of noise alone would put NULLs into a column that has none
            if c.how == "public" and c.values:  # declared in the synthesizer's params
                pass
            elif c.how == "public":  # the values are public by the catalog's word (public_values)
                c.values = sorted({str(k) for k in c.keys(frame[c.name])} | ({"True", "False"}
                                  if c.kind == "boolean" else set()))
            elif c.how == "bins" and c.kind in ("date", "timestamp"):  # one bin per year
                assert c.bounds is not None
                c.values = [str(y) for y in range(int(c.bounds[0]), int(c.bounds[1]) + 1)]
            elif c.how == "bins":
                c.values = [str(i) for i in range(self.bins)]
        codes = {c.name: c.codes(frame[c.name]) for c in self.columns}
        plain = [c for c in self.columns if c.how != "released"]
        if plain:  # 2. one-way marginals
            counts = [np.bincount(codes[c.name][codes[c.name] >= 0], minlength=c.size).astype(float) for c in plain]
            noisy = _laplace(dp, np.concatenate(counts), len(plain), eps["one_way"])
            at = 0
            for c, n in zip(plain, counts, strict=True):
                self.one_way[c.name] = noisy[at:at + len(n)]
                at += len(n)
        names = [c.name for c in self.columns if c.size > 1]  # a constant column needs no edge
        sizes = {c.name: c.size for c in self.columns}
        if len(names) > 1:  # 3. the tree, 4. its two-way marginals
            self.edges = _select(dp, names, sizes, codes, self.one_way, eps["select"])
            true = [_pair_counts(codes[a], codes[b], sizes[a], sizes[b]) for a, b in self.edges]
            noisy = _laplace(dp, np.concatenate([t.ravel() for t in true]), len(self.edges), eps["two_way"])
            at = 0
            for (a, b), t in zip(self.edges, true, strict=True):
                self.two_way[(a, b)] = noisy[at:at + t.size].reshape(t.shape)
                at += t.size
        self.spent = {"epsilon": self.epsilon, "delta": spent_delta}

    # -- sample -------------------------------------------------------------------------------
    def sample_frame(self, rows: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        by_name = {c.name: c for c in self.columns}
        children: dict[str, list[str]] = {n: [] for n in by_name}
        parent: dict[str, str] = {}
        for a, b in self.edges:
            children[a].append(b)
            parent[b] = a
        drawn: dict[str, np.ndarray] = {}
        for root in (n for n in by_name if n not in parent):
            drawn[root] = rng.choice(by_name[root].size, size=rows, p=_distribution(self.one_way[root]))
            queue = list(children[root])
            while queue:
                child = queue.pop(0)
                queue.extend(children[child])
                table = self.two_way[(parent[child], child)]
                fallback = _distribution(self.one_way[child])
                out = np.empty(rows, dtype=np.int64)
                given = drawn[parent[child]]
                for value in np.unique(given):
                    where = given == value
                    row = np.clip(table[value], 0, None)
                    p = row / row.sum() if row.sum() > 0 else fallback
                    out[where] = rng.choice(len(p), size=int(where.sum()), p=p)
                drawn[child] = out
        return pd.DataFrame({n: by_name[n].decode(drawn[n], rng) for n in by_name})

    def describe(self) -> dict[str, Any]:
        return {"type": "mst", "epsilon": self.epsilon, "delta": self.delta, "spent": self.spent,
                "tree": [list(e) for e in self.edges],
                "domains": {c.name: {"how": c.how, "size": c.size} for c in self.columns}}


def _distribution(counts: np.ndarray) -> np.ndarray:
    clipped = np.clip(counts, 0, None)
    total = clipped.sum()
    return clipped / total if total > 0 else np.full(len(counts), 1 / len(counts))


def _pair_counts(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> np.ndarray:
    keep = (a >= 0) & (b >= 0)
    return np.bincount(a[keep] * nb + b[keep], minlength=na * nb).reshape(na, nb).astype(float)


def _laplace(dp: Any, values: np.ndarray, sensitivity: float, epsilon: float) -> np.ndarray:
    """``values`` + Laplace noise by OpenDP, calibrated so the map gives at most ``epsilon``."""
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    scale = sensitivity / epsilon
    meas = dp.m.make_laplace(domain, dp.l1_distance(T=float), scale)
    while meas.map(float(sensitivity)) > epsilon:  # rounding in the map: nudge the scale up
        scale *= 1.000001
        meas = dp.m.make_laplace(domain, dp.l1_distance(T=float), scale)
    return np.array(meas([float(v) for v in values]), dtype=float)


def _threshold(dp: Any, counts: dict[str, int], epsilon: float, delta: float) -> tuple[dict[str, int], float]:
    """OpenDP's Laplace threshold mechanism: the keys whose noisy count clears a threshold
    chosen so that one person (one row: l0 = l1 = l∞ = 1) costs at most (ε, δ)."""
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int))
    metric = dp.l01inf_distance(dp.absolute_distance(T=int))
    scale = 1.0 / epsilon
    threshold = 1
    while True:
        meas = dp.m.make_laplace_threshold(domain, metric, scale, threshold)
        eps, used = meas.map((1, 1, 1))
        if eps > epsilon:
            scale *= 1.000001
            continue
        if used <= delta:
            return dict(meas(counts)), float(used)
        threshold = max(threshold + 1, int(threshold * 1.25))


def _select(dp: Any, names: list[str], sizes: dict[str, int], codes: dict[str, np.ndarray],
            one_way: dict[str, np.ndarray], epsilon: float) -> list[tuple[str, str]]:
    """A spanning tree, one edge per report-noisy-max round (Kruskal on noisy scores)."""
    group = {n: n for n in names}

    def find(n: str) -> str:
        while group[n] != n:
            n = group[n]
        return n

    rounds = len(names) - 1
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    scale = 2.0 / (epsilon / rounds)
    meas = dp.m.make_noisy_max(domain, dp.linf_distance(T=float), dp.max_divergence(), scale)
    while meas.map(1.0) > epsilon / rounds:
        scale *= 1.000001
        meas = dp.m.make_noisy_max(domain, dp.linf_distance(T=float), dp.max_divergence(), scale)
    total = max(1.0, float(np.mean([np.clip(v, 0, None).sum() for v in one_way.values()])))
    edges: list[tuple[str, str]] = []
    for _ in range(rounds):
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if find(a) != find(b)]
        scores = []
        for a, b in pairs:
            estimate = np.outer(_distribution(one_way[a]), _distribution(one_way[b])) * total
            scores.append(float(np.abs(_pair_counts(codes[a], codes[b], sizes[a], sizes[b]) - estimate).sum()))
        a, b = pairs[int(meas(scores))]
        edges.append((a, b))
        group[find(b)] = find(a)
    return _orient(edges, names)


def _orient(edges: list[tuple[str, str]], names: list[str]) -> list[tuple[str, str]]:
    """Edges as (parent, child), rooted at the first column of each tree."""
    neighbours: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for root in names:
        if root in seen:
            continue
        seen.add(root)
        queue = [root]
        while queue:
            node = queue.pop(0)
            for nxt in neighbours[node]:
                if nxt not in seen:
                    seen.add(nxt)
                    out.append((node, nxt))
                    queue.append(nxt)
    return out
