"""Run a :class:`~govern.privacy.dp.compile.DpPlan` with OpenDP's polars context.

Input: the plan-applied view (row filters and the caller's filter already applied, raw values
of usable columns, the privacy unit) as an Arrow table, and the public group keys. Output: a
:class:`DpResult` — noisy values, their 95% intervals, the mechanisms and the exact privacy
loss. CPU-bound and blocking: the gateway runs it in a bounded pool, off the event loop.

How OpenDP is used
------------------
- ``dp.enable_features("contrib")``: OpenDP ships its polars integration (and most of its
  mechanisms) behind the ``contrib`` flag, which marks code whose proofs have not finished
  OpenDP's formal vetting process. Enabling it is an explicit acceptance of that status; see
  docs/privacy.md.
- Contributions are bounded *before* OpenDP sees the data: :func:`bound_contributions` keeps
  at most ``k`` rows per privacy unit (each person's k rows of smallest keyed digest — the same
  rows on every release, so intervals cover a fixed target; rows whose unit is NULL are
  dropped), so a person with many rows weighs like one with k. This map is
  stable — adding or removing one person changes at most k rows of its output, and nobody
  else's — so OpenDP is told exactly that: ``dp.unit_of(contributions=k)``. (OpenDP's own
  ``truncate_per_group`` with ``unit_of(identifier=…)`` expresses the same bound, but its
  window over every identifier costs seconds per million rows in polars; the result is the
  same distribution.)
- One ``dp.Context.compositor`` per query, built from the data and this query's epsilon/delta
  only. The context is never kept: the ledger (not the context) is the record of what was spent.
- Each :class:`Part` is one measurement.
- Calibration: OpenDP's own ``LazyFrameQuery.resolve()`` binary-searches the noise scale with
  ~50 measurement constructions (about a second of CPU). Laplace and exponential-mechanism
  losses are proportional to 1/scale, so :func:`calibrate` builds at scale 1, divides, and
  verifies with ``Measurement.check`` (a handful of constructions, milliseconds). The context
  re-checks every measurement against its budget before running it.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from govern.errors import GovernError, InvalidRequest
from govern.privacy.dp.compile import MAX_KEYS, MAX_LENGTH, PREFIX, DpPlan, Output, Part, Primitive
from govern.privacy.rows import row_digests

CONFIDENCE = 0.95
# The PRF key when the caller gives none (tests, tools). Privacy does not rest on its secrecy —
# any fixed rule that looks only at one person's rows keeps the bound — the gateway passes a
# subkey of its masking key so that which rows are kept cannot be predicted from outside.
DEFAULT_PRF_KEY = b"govern-dp-contributions"
_enabled = threading.Lock()
_ready = False


def opendp():  # -> module opendp.prelude
    """Import OpenDP once, with the ``contrib`` features enabled (see the module docstring).

    Every OpenDP and polars module govern uses is imported here, under a lock, by the first
    release of the process: releases run on several threads, and two threads importing one
    package's submodules at the same moment can see a partially initialized module.
    """
    global _ready
    if not _ready:
        with _enabled:
            if not _ready:
                import opendp.accuracy
                import opendp.measurements
                import opendp.prelude
                import polars  # noqa: F401

                opendp.prelude.enable_features("contrib")
                _ready = True
    import opendp.prelude as dp

    return dp


@dataclass
class Mechanism:
    part: int
    aggregate: str
    distribution: str
    scale: float  # in the caller's units (a sum's scale is divided back by its scaling)
    threshold: int | None = None


@dataclass
class DpResult:
    group_by: tuple[str, ...]
    columns: list[str]  # group columns, then aggregate names
    rows: list[dict[str, Any]]
    mechanisms: list[Mechanism]
    epsilon: float
    delta: float
    threshold: int | None
    parts: list[dict[str, Any]] = field(default_factory=list)  # each measurement's exact (epsilon, delta)
    timings: dict[str, float] = field(default_factory=dict)

    def privacy(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "confidence": CONFIDENCE,
            "threshold": self.threshold,
            "parts": self.parts,
            "mechanisms": [m.__dict__ for m in self.mechanisms],
        }


def release(plan: DpPlan, data: pa.Table, public_keys: dict[str, list[Any]], key: bytes = DEFAULT_PRF_KEY) -> DpResult:
    """Compute every part of ``plan`` on ``data`` (one compositor), post-process into rows.
    ``key`` keys the PRF that picks each person's kept rows (:func:`bound_contributions`)."""
    import time

    dp = opendp()  # first: imports OpenDP and polars under a lock
    import polars as pl

    t0 = time.perf_counter()
    data = bound_contributions(data, plan.unit, plan.contributions, key)
    t_bound = time.perf_counter() - t0
    with _spilled(pl, _prepare(pl, plan, data)) as lf:
        keys = _group_keys(pl, plan, data.schema, public_keys)
        return _release(pl, dp, plan, lf, keys, public_keys, t0, t_bound)


def _release(pl: Any, dp: Any, plan: DpPlan, lf: Any, keys: dict[str, Any], public_keys: dict[str, list[Any]],
             t0: float, t_bound: float) -> DpResult:
    import time

    from opendp.accuracy import summarize_polars_measurement

    t_prepared = time.perf_counter()
    loss = dp.loss_of(epsilon=plan.epsilon, delta=plan.delta) if plan.delta > 0 else dp.loss_of(epsilon=plan.epsilon)
    context = dp.Context.compositor(
        data=lf,
        privacy_unit=dp.unit_of(contributions=plan.contributions),
        privacy_loss=loss,
        split_by_weights=plan.weights,
        margins=[dp.polars.Margin(by=[], max_length=MAX_LENGTH)],
    )
    frames: list[Any] = []
    summaries: list[tuple[Any, Any]] = []
    mechanisms: list[Mechanism] = []
    parts: list[dict[str, Any]] = []
    threshold: int | None = None
    t_build, t_run = time.perf_counter() - t_prepared, 0.0  # the compositor counts as building
    for index, part in enumerate(plan.parts):
        tb = time.perf_counter()
        query = context.query()
        exprs = [_expr(pl, dp, p) for p in part.primitives]
        if part.group_by:
            query = query.group_by(*part.group_by).agg(*exprs)
            part_keys = _part_keys(pl, part, keys, public_keys, plan)
            if part_keys is not None:
                query = query.with_keys(part_keys)
        else:
            query = query.select(*exprs)
        thresholded = plan.key_source == "threshold" and bool(part.group_by)
        measurement, eps = calibrate(query, thresholded, floor=plan.contributions + 1)
        summary = summarize_polars_measurement(measurement, 1 - CONFIDENCE)
        half = summarize_polars_measurement(measurement, (1 - CONFIDENCE) / 2)
        t_build += time.perf_counter() - tb
        tr = time.perf_counter()
        frame = context(measurement).collect()
        t_run += time.perf_counter() - tr
        frames.append(frame)
        summaries.append((summary, half))
        factor = {p.id: p.scale for p in part.primitives}
        for row in summary.iter_rows(named=True):
            t = row.get("threshold")
            if t is not None:
                threshold = int(t) if threshold is None else max(threshold, int(t))
            mechanisms.append(Mechanism(index, _public_name(plan, row["column"]), str(row["distribution"]),
                                        float(row["scale"]) / factor.get(row["column"], 1.0),
                                        int(t) if t is not None else None))
        parts.append({"part": index, "group_by": [g for g in part.group_by if not g.startswith(PREFIX)],
                      "epsilon": eps, "delta": delta_of(measurement, thresholded)})
    rows = _rows(plan, frames, summaries)
    columns = [*plan.group_by, *(o.name for o in plan.outputs)]
    t_all = time.perf_counter() - t0
    return DpResult(plan.group_by, columns, rows, mechanisms, plan.epsilon, plan.delta, threshold, parts,
                    timings={"bound": t_bound, "prepare": t_prepared - t0 - t_bound, "opendp_build": t_build,
                             "opendp_run": t_run, "engine_total": t_all})


# -- calibration ---------------------------------------------------------------------------------

def calibrate(query: Any, thresholded: bool, floor: int = 2) -> tuple[Any, float]:
    """The least-noise measurement for ``query`` within its share of the budget, and its epsilon.
    ``floor``: the smallest threshold OpenDP accepts (above the rows one person may add to a
    group: ``contributions + 1``).

    Scale first (epsilon ∝ 1/scale for Laplace and the exponential mechanism), checked with
    ``Measurement.check`` and nudged up until it passes; then, for groups released through a
    threshold, the smallest threshold whose delta fits (delta falls as the threshold rises).
    """
    from opendp.measurements import make_private_lazyframe

    try:
        inner = object.__getattribute__(query, "_query")
        plan = object.__getattribute__(query, "polars_plan")
        input_domain, input_metric = inner._chain
        d_in, d_out, measure = inner._d_in, inner._d_out, inner._output_measure
    except AttributeError:  # a future OpenDP: fall back to its own (slower) search
        m = query.resolve()
        return m, float("nan")
    approx = isinstance(d_out, tuple)
    eps_target = float(d_out[0] if approx else d_out)
    never = 2**32 - 1

    def make(scale: float, threshold: int | None) -> Any:
        return make_private_lazyframe(input_domain=input_domain, input_metric=input_metric, output_measure=measure,
                                      lazyframe=plan, global_scale=scale, threshold=threshold)

    def eps_of(m: Any) -> float:
        loss = m.map(d_in)
        return float(loss[0] if approx else loss)

    try:
        t = never if thresholded else None
        scale = eps_of(make(1.0, t)) / eps_target
        m = make(scale, t)
        for _ in range(200):
            if eps_of(m) <= eps_target:
                break
            scale *= 1.0 + 1e-6 if _ < 50 else 1.01
            m = make(scale, t)
        if thresholded:
            delta_target = float(d_out[1])
            lo = hi = max(2, floor)
            while float(make(scale, hi).map(d_in)[1]) > delta_target:
                lo, hi = hi, hi * 2
                if hi >= never:
                    raise InvalidRequest("delta is too small for any threshold: raise delta")
            while lo < hi:
                mid = (lo + hi) // 2
                if float(make(scale, mid).map(d_in)[1]) > delta_target:
                    lo = mid + 1
                else:
                    hi = mid
            m = make(scale, hi)
        if not m.check(d_in, d_out):
            raise InvalidRequest("could not calibrate the noise within the requested epsilon/delta")
        return m, eps_of(m)
    except GovernError:
        raise
    except Exception as exc:
        # OpenDP refused to build the measurement; its messages describe the query, never the data
        raise InvalidRequest(f"differential privacy refused this query: {_opendp_message(exc)}") from None


def delta_of(measurement: Any, thresholded: bool) -> float:
    """The delta a calibrated measurement actually spends (0 unless keys are thresholded)."""
    return 0.0 if not thresholded else float(measurement.map(1)[1])


# -- preparing the data ----------------------------------------------------------------------------

def bound_contributions(table: pa.Table, unit: str, k: int, key: bytes = DEFAULT_PRF_KEY) -> pa.Table:
    """At most ``k`` rows per value of ``unit``: each person's ``k`` rows of smallest keyed
    digest (a PRF of the row's values, HMAC-SHA-256 under ``key``); NULL units dropped.

    Deterministic, so the *same* rows are kept on every release of a query and the interval of
    a release covers one fixed target (the statistic over the kept rows), not a moving one.
    Stable: which rows of a person are kept depends only on that person's rows, so adding or
    removing a person changes at most ``k`` rows. Rows equal in every column read are
    interchangeable, so ties do not matter.
    """
    import numpy as np

    column = table.column(unit)
    if column.null_count:
        table = table.filter(pc.is_valid(column))
        column = table.column(unit)
    n = table.num_rows
    if n == 0:
        return table
    import polars as pl

    series = pl.from_arrow(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    assert isinstance(series, pl.Series)
    if series.n_unique() == n or int(series.value_counts()["count"].max() or 0) <= k:  # type: ignore[arg-type]
        return table  # nobody is over the bound: truncation is the identity
    codes = series.rank("dense").to_numpy().astype(np.int64)
    priority = row_digests(table, [unit, *sorted(c for c in table.column_names if c != unit)], key)
    order = np.lexsort((priority, codes))  # by person, then by the row's keyed digest
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return table.take(pa.array(np.sort(order[rank < k])))


@contextmanager
def _spilled(pl: Any, frame: Any) -> Iterator[Any]:
    """A lazy scan of ``frame`` written to a private (0600) temporary Arrow IPC file, removed
    afterwards. OpenDP's FFI serializes an in-memory LazyFrame with all its data (≈1.5 s per
    million rows); a file scan serializes only the plan and is read memory-mapped."""
    fd, path = tempfile.mkstemp(prefix="govern-dp-", suffix=".arrow")
    try:
        with os.fdopen(fd, "wb") as fh:
            frame.write_ipc(fh)
        yield pl.scan_ipc(path, memory_map=True)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def _prepare(pl: Any, plan: DpPlan, data: pa.Table) -> Any:
    """Row-wise preparation. Non-finite values are handled here, inside the mechanism, so that no
    release ever fails on the data: NaN is missing (like NULL: not counted, not summed, its own
    NULL group), +inf and -inf are clamped to the bounds like any value outside them."""
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    floats = [name for name, dtype in frame.schema.items() if dtype.is_float()]
    if floats:
        frame = frame.with_columns([pl.col(c).fill_nan(None) for c in floats])
    exprs = []
    for d in plan.derived:
        src = pl.col(d.source)
        if d.how == "scaled_sum":
            lo, hi = d.bounds  # type: ignore[misc]
            # a missing value adds 0, as in SQL's SUM (OpenDP would impute its bounds' midpoint)
            exprs.append((src.cast(pl.Float64).clip(lo, hi) * d.scale).round().cast(pl.Int64).fill_null(0)
                         .alias(d.name))
        elif d.how == "float":
            lo, hi = d.bounds  # type: ignore[misc]
            exprs.append(src.cast(pl.Float64).clip(lo, hi).alias(d.name))
        elif d.how == "bin":
            labels = ["_below", *d.labels, "_above"]
            exprs.append(src.cast(pl.Float64).cut(list(d.edges), labels=labels, left_closed=True)
                         .cast(pl.String).alias(d.name))
        else:  # category
            exprs.append(src.cast(pl.String).alias(d.name))
    if exprs:
        frame = frame.with_columns(exprs)
    keep = list(dict.fromkeys([*plan.group_by, *_inputs(plan)])) or [plan.unit]
    return frame.select(keep)


def _inputs(plan: DpPlan) -> list[str]:
    cols = [p.column for part in plan.parts for p in part.primitives if p.column]
    cols += [part.bins[0] for part in plan.parts if part.bins]
    return [c for c in cols if c is not None]


def _expr(pl: Any, dp: Any, p: Primitive) -> Any:
    if p.kind == "len":
        return dp.len(signed=True).alias(p.id)
    if p.kind == "count":
        return pl.col(p.column).dp.count(signed=True).alias(p.id)
    if p.kind == "sum":
        lo, hi = p.bounds  # type: ignore[misc]
        # the clamp range widened to hold 0 (a missing value): under adding or removing a person
        # the sensitivity, max(|low|, |high|), is unchanged
        return pl.col(p.column).dp.sum((round(min(lo, 0.0) * p.scale), round(max(hi, 0.0) * p.scale))).alias(p.id)
    return pl.col(p.column).dp.quantile(p.q, list(p.candidates or ())).alias(p.id)


def _group_keys(pl: Any, plan: DpPlan, schema: pa.Schema, public: dict[str, list[Any]]) -> dict[str, Any]:
    """Each public group column's key values as a typed polars Series."""
    out: dict[str, Any] = {}
    for g in plan.group_by:
        values = plan.requested_keys.get(g, public.get(g))
        if values is None:
            continue
        # NaN is missing (see _prepare): its rows form the NULL group, never a NaN key no surface
        # could send (a refusal that would depend on whether the data holds a NaN)
        values = list(dict.fromkeys(None if isinstance(v, float) and math.isnan(v) else v for v in values))
        dtype = pl.from_arrow(pa.array([], schema.field(g).type)).dtype
        try:
            out[g] = pl.Series(g, list(values)).cast(dtype, strict=True)
        except Exception:
            raise InvalidRequest(f"keys of '{g}' do not have the column's type ({schema.field(g).type})") from None
    return out


def _part_keys(pl: Any, part: Part, keys: dict[str, Any], public: dict[str, list[Any]], plan: DpPlan) -> Any:
    if plan.key_source == "threshold":
        return None
    columns: list[tuple[str, list[Any]]] = [(g, keys[g].to_list()) for g in plan.group_by]
    dtypes = {g: keys[g].dtype for g in plan.group_by}
    if part.bins is not None:
        bin_col, labels = part.bins
        values = [str(v) for v in labels] if labels else [v for v in public.get(bin_col, []) if v is not None]
        columns.append((bin_col, values))
        dtypes[bin_col] = pl.String
    combos = list(product(*(v for _, v in columns)))
    if len(combos) > MAX_KEYS:
        raise InvalidRequest(f"at most {MAX_KEYS} groups (keys × bins) per query")
    return pl.DataFrame({name: [c[i] for c in combos] for i, (name, _) in enumerate(columns)},
                        schema={name: dtypes[name] for name, _ in columns})


# -- results -----------------------------------------------------------------------------------------

def _public_name(plan: DpPlan, primitive_id: str) -> str:
    for o in plan.outputs:
        if primitive_id in o.primitives:
            return o.name
    return primitive_id


def _accuracy(summary: Any) -> dict[str, float | None]:
    return {row["column"]: (None if row["accuracy"] is None else float(row["accuracy"]))
            for row in summary.iter_rows(named=True)}


def _scales(summary: Any) -> dict[str, float]:
    return {row["column"]: float(row["scale"]) for row in summary.iter_rows(named=True)}


def _rows(plan: DpPlan, frames: list[Any], summaries: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}

    def row_for(key: tuple[Any, ...]) -> dict[str, Any]:
        if key not in groups:
            groups[key] = dict(zip(plan.group_by, key, strict=True))
        return groups[key]

    acc = [(_accuracy(s), _accuracy(h), _scales(s)) for s, h in summaries]
    # the main part: one row per group
    if plan.parts and plan.parts[0].bins is None and frames:
        main_frame = frames[0]
        for rec in main_frame.iter_rows(named=True):
            key = tuple(rec[g] for g in plan.group_by)
            row = row_for(key)
            for out in plan.outputs:
                if out.function != "histogram":
                    row[out.name] = _value(plan, out, rec, acc[0])
    for out in plan.outputs:
        if out.function != "histogram":
            continue
        part = plan.parts[out.part]
        bin_col = part.bins[0] if part.bins else ""
        per_group: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for rec in frames[out.part].iter_rows(named=True):
            key = tuple(rec[g] for g in plan.group_by)
            v = rec[out.primitives[0]]
            a = acc[out.part][0].get(out.primitives[0])
            per_group.setdefault(key, []).append({"bin": rec[bin_col], **_interval(v, a, low=0.0)})
        order = {label: i for i, label in enumerate(out.labels)}
        for key, bins in per_group.items():
            bins.sort(key=lambda b: (order.get(b["bin"], len(order)), str(b["bin"])))
            row_for(key)[out.name] = bins
    return [groups[k] for k in sorted(groups, key=_sort_key)]


def _value(plan: DpPlan, out: Output, rec: dict[str, Any],
           acc: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    full, half, scales = acc
    prims = {p.id: p for part in plan.parts for p in part.primitives}
    if out.function == "count":
        pid = out.primitives[0]
        return _interval(rec.get(pid), full.get(pid), low=0.0)
    if out.function == "sum":
        p = prims[out.primitives[0]]
        v, a = rec.get(p.id), full.get(p.id)
        return _interval(None if v is None else v / p.scale, None if a is None else a / p.scale)
    if out.function == "mean":
        s, c = prims[out.primitives[0]], prims[out.primitives[1]]
        sv, cv = rec.get(s.id), rec.get(c.id)
        sa, ca = half.get(s.id), half.get(c.id)
        lo, hi = out.bounds  # type: ignore[misc]
        if sv is None or cv is None or sa is None or ca is None:
            return {"value": None, "interval": [lo, hi], "accuracy": None}
        total, count, s_acc = sv / s.scale, float(cv), sa / s.scale
        value = min(max(total / count, lo), hi) if count > 0 else None
        if count - ca <= 0:
            interval = [lo, hi]
        else:  # both components inside their (1 - α/2) bounds ⇒ the ratio inside these, w.p. ≥ 1 - α
            ends = [(total - s_acc) / (count - ca), (total - s_acc) / (count + ca),
                    (total + s_acc) / (count - ca), (total + s_acc) / (count + ca)]
            interval = [max(lo, min(ends)), min(hi, max(ends))]
        return {"value": value, "interval": interval, "accuracy": None}
    # quantile: the exponential mechanism has no additive error; its error is in rank
    p = prims[out.primitives[0]]
    scale = scales.get(p.id)
    rank = None
    if scale is not None:
        rank = scale * math.log(len(p.candidates or ()) / (1 - CONFIDENCE)) / score_denominator(float(p.q or 0.5))
    return {"value": rec.get(p.id), "interval": None, "accuracy": None, "rank_accuracy": rank}


@lru_cache(maxsize=256)
def score_denominator(q: float) -> int:
    """OpenDP scores a candidate c for quantile q as ``|(den - num)·#below(c) - num·#above(c)|``
    with q = num/den: the score is ``den`` × the distance, in rows, of c's rank from q·n. Read
    (num, den) from OpenDP itself: on data [0, 1] with candidates [0, 1] the two scores are num
    and den - num."""
    dp = opendp()
    t = dp.t.make_quantile_score_candidates(dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance(),
                                            candidates=[0, 1], alpha=q)
    return int(sum(t([0, 1])))


def _interval(value: Any, accuracy: float | None, *, low: float | None = None) -> dict[str, Any]:
    if value is None:
        return {"value": None, "interval": None, "accuracy": accuracy}
    if accuracy is None:
        return {"value": value, "interval": None, "accuracy": None}
    lo, hi = value - accuracy, value + accuracy
    if low is not None:  # a count is never negative: the interval keeps only possible values
        lo, hi = max(low, lo), max(low, hi)
    return {"value": value, "interval": [lo, hi], "accuracy": accuracy}


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, str(type(v)), v if v is not None else 0) for v in key)


def _opendp_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    msg = " ".join(line.strip() for line in text if line.strip())
    return msg[:300] or type(exc).__name__
