"""Drift between two profiles, measured as effect sizes with thresholds — never p-values.

On large data every difference is "significant" (evidently #50, whylogs #684): a KS or χ² test
at 10⁶ rows flags a shift no model would notice. Effect sizes do not grow with the row count:

- numeric columns: the **Wasserstein distance ÷ the reference's σ** — how far, in reference
  standard deviations, values had to move (a pure mean shift of 0.2σ scores 0.2) — computed
  from the two quantile functions on the profile grid, ``∫₀¹ |Q_ref(u) − Q_cur(u)| du`` (midpoint rule);
- categorical columns: the **Jensen–Shannon distance** (base 2, between 0 and 1) of the
  category shares, over both profiles' top categories plus one "other" bucket;
- both: the **population stability index** over ten reference-decile bins (numeric) or the
  categories (categorical), and the change of the **null rate**.

A column has drifted when any metric reaches its threshold (settings ``monitor.drift_*``); the
report gives the **share of drifted columns** and calls the dataset drifted when that share
reaches ``monitor.drift_share``. Columns are compared only where both profiles have the same
view of them (:mod:`govern.monitor.profile`): a column masked differently, added or dropped is
reported as not comparable, not as drift. Text columns of mostly distinct values (ids,
pseudonyms) are compared on their null rate only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from govern.monitor.profile import GRID, ColumnProfile, Profile

__all__ = ["ColumnDrift", "DriftReport", "Thresholds", "compare", "jensen_shannon", "psi", "wasserstein"]

EPS = 1e-4  # share floor in PSI (an empty bin would make it infinite)
PSI_BINS = 10


@dataclass(frozen=True)
class Thresholds:
    wasserstein: float = 0.1  # ÷ reference σ
    jensen_shannon: float = 0.1
    psi: float = 0.25
    null_rate: float = 0.05
    share: float = 0.5

    @classmethod
    def from_settings(cls, monitor: Any) -> Thresholds:
        """From :class:`govern.config.MonitorSettings`."""
        return cls(monitor.drift_wasserstein, monitor.drift_jensen_shannon, monitor.drift_psi,
                   monitor.drift_null_rate, monitor.drift_share)


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str
    comparable: bool
    metrics: dict[str, float]  # wasserstein_sigma | jensen_shannon, psi, null_rate_delta
    drifted: bool
    reasons: tuple[str, ...]  # "wasserstein_sigma 0.213 >= 0.1", or why not comparable

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "kind": self.kind, "comparable": self.comparable, "metrics": self.metrics,
                "drifted": self.drifted, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class DriftReport:
    dataset: str
    reference: str  # data version
    current: str
    against: str  # "baseline" | "previous"
    view_key: str
    columns: tuple[ColumnDrift, ...]
    share: float  # drifted ÷ comparable columns
    drifted: bool  # share >= thresholds.share
    thresholds: Thresholds

    def to_dict(self) -> dict[str, Any]:
        t = self.thresholds
        return {"dataset": self.dataset, "reference": self.reference, "current": self.current,
                "against": self.against, "view_key": self.view_key, "share": self.share, "drifted": self.drifted,
                "thresholds": {"wasserstein": t.wasserstein, "jensen_shannon": t.jensen_shannon, "psi": t.psi,
                               "null_rate": t.null_rate, "share": t.share},
                "columns": [c.to_dict() for c in self.columns]}


# -- metrics ----------------------------------------------------------------------------------------------
def wasserstein(ref_quantiles: np.ndarray, cur_quantiles: np.ndarray) -> float:
    """W₁ of two distributions given by their quantiles at :data:`GRID` (the midpoints of equal
    cells): ``∫₀¹ |Q_ref(u) − Q_cur(u)| du`` by the midpoint rule."""
    return float(np.mean(np.abs(np.asarray(ref_quantiles, float) - np.asarray(cur_quantiles, float))))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon *distance* (the square root of the divergence), base 2: in [0, 1]."""
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))
    return float(np.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


def psi(p: np.ndarray, q: np.ndarray) -> float:
    """Population stability index of shares ``q`` (current) against ``p`` (reference)."""
    p = np.maximum(np.asarray(p, float), EPS)
    q = np.maximum(np.asarray(q, float), EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def _cdf(quantiles: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The distribution function at ``at``, from a quantile function on GRID: the largest
    probability whose quantile is ≤ each point (right-continuous, exact on plateaus)."""
    u = np.asarray(GRID)
    q = np.asarray(quantiles, float)
    below = np.searchsorted(q, at, side="right")  # grid points with quantile <= at
    out = np.zeros(len(at))
    inside = (below > 0) & (below < len(q))
    lo = below[inside] - 1
    span = q[lo + 1] - q[lo]
    frac = np.where(span > 0, (np.asarray(at)[inside] - q[lo]) / np.where(span > 0, span, 1), 0.0)
    out[inside] = u[lo] + frac * (u[lo + 1] - u[lo])
    out[below >= len(q)] = 1.0
    return out


def _numeric_shares(ref: ColumnProfile, cur: ColumnProfile) -> tuple[np.ndarray, np.ndarray]:
    """Shares of both in the reference's decile bins."""
    rq, cq = np.asarray(ref.quantiles), np.asarray(cur.quantiles)
    edges = np.unique(np.quantile(rq, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    cuts = np.concatenate([[0.0], _cdf(rq, edges), [1.0]]), np.concatenate([[0.0], _cdf(cq, edges), [1.0]])
    return np.diff(cuts[0]), np.diff(cuts[1])


def _category_shares(ref: ColumnProfile, cur: ColumnProfile) -> tuple[np.ndarray, np.ndarray]:
    a, b = dict(ref.top), dict(cur.top)
    names = list(dict.fromkeys([*a, *b]))
    p = [a.get(n, 0.0) for n in names]
    q = [b.get(n, 0.0) for n in names]
    # A category only one side kept (a long tail) counts as 0 on the other side, whose share of
    # it stays in that side's "other" bucket: both vectors still sum to 1, and with at most
    # ``top`` categories (the usual case) the shares are the sample's exactly.
    return np.array([*p, ref.other]), np.array([*q, cur.other])


# -- comparing ------------------------------------------------------------------------------------------------
def compare(reference: Profile, current: Profile, thresholds: Thresholds, *, against: str = "baseline") -> DriftReport:
    """Drift of ``current`` against ``reference`` (same dataset and rows view)."""
    if reference.dataset != current.dataset:
        raise ValueError("profiles of different datasets")
    if reference.view != current.view:
        raise ValueError("profiles of different row views cannot be compared")
    names = list(dict.fromkeys([c.name for c in current.columns] + [c.name for c in reference.columns]))
    columns = tuple(_column(n, reference.column(n), current.column(n), thresholds) for n in names)
    comparable = [c for c in columns if c.comparable]
    share = sum(c.drifted for c in comparable) / len(comparable) if comparable else 0.0
    return DriftReport(current.dataset, reference.data_version, current.data_version, against, current.view_key,
                       columns, share, bool(comparable) and share >= thresholds.share, thresholds)


def _column(name: str, ref: ColumnProfile | None, cur: ColumnProfile | None, t: Thresholds) -> ColumnDrift:
    if ref is None or cur is None:
        either = cur if cur is not None else ref
        kind = either.kind if either is not None else "empty"
        return ColumnDrift(name, kind, False, {}, False, ("new column" if ref is None else "column dropped",))
    if ref.view != cur.view:
        return ColumnDrift(name, cur.kind, False, {}, False, ("masked differently in the two versions",))
    metrics: dict[str, float] = {"null_rate_delta": cur.null_rate - ref.null_rate}
    limits: dict[str, float] = {"null_rate_delta": t.null_rate}
    if ref.kind == "numeric" and cur.kind == "numeric" and ref.quantiles and cur.quantiles:
        w = wasserstein(np.asarray(ref.quantiles), np.asarray(cur.quantiles))
        sigma = ref.std or 0.0
        metrics["wasserstein_sigma"] = w / sigma if sigma > 0 else (0.0 if w == 0 else float("inf"))
        metrics["psi"] = psi(*_numeric_shares(ref, cur))
        limits |= {"wasserstein_sigma": t.wasserstein, "psi": t.psi}
    elif ref.kind == "categorical" and cur.kind == "categorical":
        p, q = _category_shares(ref, cur)
        metrics["jensen_shannon"] = jensen_shannon(p, q)
        metrics["psi"] = psi(p, q)
        limits |= {"jensen_shannon": t.jensen_shannon, "psi": t.psi}
    elif ref.kind != cur.kind and "empty" not in (ref.kind, cur.kind):
        return ColumnDrift(name, cur.kind, False, {}, False, (f"kind changed from {ref.kind} to {cur.kind}",))
    reasons = tuple(f"{k} {metrics[k]:.3g} >= {v:g}" for k, v in limits.items() if abs(metrics[k]) >= v)
    return ColumnDrift(name, cur.kind, True, metrics, bool(reasons), reasons)
