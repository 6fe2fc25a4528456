"""Drift accuracy, checked against scipy on generated data.

- The metrics computed from stored profiles agree with scipy's on the raw windows
  (``scipy.stats.wasserstein_distance`` ÷ reference σ, ``scipy.spatial.distance.jensenshannon``).
- False alarms: ≤ 5 % of 200 same-distribution windows of 100,000 rows are flagged.
- Power: a 0.2σ mean shift is flagged in ≥ 95 % of windows of 10,000 rows.

Windows go through the real path — a RecordBatchReader profiled by ``profile_batches`` (the
bottom-k sample, the quantile grid), then ``compare`` with the default thresholds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from govern.config import MonitorSettings
from govern.monitor.drift import Thresholds, compare, jensen_shannon, psi
from govern.monitor.profile import Profile, profile_batches
from govern.plan.model import AccessPlan, ColumnPlan, Reason

CATEGORIES = pa.array(["Asthma", "COPD", "Diabetes", "Flu", "HIV", "Migraine", "Fracture", "Other"])
SHARES = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])
THRESHOLDS = Thresholds.from_settings(MonitorSettings())  # the documented defaults


def plan_for(schema: pa.Schema) -> AccessPlan:
    return AccessPlan("generated", "steward", "governance", "read", tuple(
        ColumnPlan(f.name, "keep", Reason("no-mask", "no masking tag applies"), str(f.type), result_type=str(f.type))
        for f in schema))


def window(rng: np.random.Generator, rows: int, shift: float = 0.0, shares: np.ndarray = SHARES) -> pa.Table:
    codes = rng.choice(len(CATEGORIES), size=rows, p=shares).astype(np.int8)
    return pa.table({"normal": rng.standard_normal(rows) + shift, "lognormal": rng.lognormal(0.0, 1.0, rows),
                     "diagnosis": pa.DictionaryArray.from_arrays(pa.array(codes), CATEGORIES)})


def profile(table: pa.Table, version: str) -> Profile:
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=32_768))
    return profile_batches(reader, plan_for(table.schema), data_version=version,
                           computed_at="2026-01-01T00:00:00+00:00")


def shares(table: pa.Table) -> np.ndarray:
    codes = table.column("diagnosis").combine_chunks().indices.to_numpy()
    return np.bincount(codes, minlength=len(CATEGORIES)) / len(codes)


def test_metrics_agree_with_scipy() -> None:
    rng = np.random.default_rng(1)
    ref_table = window(rng, 100_000)
    ref = profile(ref_table, "ref")
    cases = [window(rng, 100_000), window(rng, 100_000, shift=0.2), window(rng, 10_000, shift=-0.5),
             window(rng, 50_000, shares=np.array([0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.1, 0.1]))]
    for i, table in enumerate(cases):
        report = compare(ref, profile(table, f"v{i}"), THRESHOLDS)
        by = {c.column: c.metrics for c in report.columns}
        for name in ("normal", "lognormal"):
            a, b = ref_table.column(name).to_numpy(), table.column(name).to_numpy()
            exact = wasserstein_distance(a, b) / a.std()
            assert by[name]["wasserstein_sigma"] == pytest.approx(exact, abs=0.005), name
        exact_js = jensenshannon(shares(ref_table), shares(table), base=2)
        assert by["diagnosis"]["jensen_shannon"] == pytest.approx(exact_js, abs=1e-9)


def test_psi_and_js_by_definition() -> None:
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.4, 0.2])
    assert psi(p, q) == pytest.approx(0.1 * np.log(0.4 / 0.5) * -1 + 0.1 * np.log(0.4 / 0.3))
    assert jensen_shannon(p, p) == 0.0 and jensen_shannon(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q, base=2))


@pytest.mark.slow  # ~5 s: 200 windows of 100,000 rows
def test_false_alarms_at_most_5_percent_over_200_windows_of_100k_rows() -> None:
    rng = np.random.default_rng(2)
    ref = profile(window(rng, 100_000), "ref")
    flagged = {"normal": 0, "lognormal": 0, "diagnosis": 0}
    datasets = 0
    for i in range(200):
        report = compare(ref, profile(window(rng, 100_000), f"w{i}"), THRESHOLDS)
        datasets += report.drifted
        for c in report.columns:
            flagged[c.column] += c.drifted
    assert all(n / 200 <= 0.05 for n in flagged.values()), flagged
    assert datasets / 200 <= 0.05


def test_a_two_tenths_sigma_shift_is_found_in_95_percent_of_windows_of_10k_rows() -> None:
    rng = np.random.default_rng(3)
    ref = profile(window(rng, 100_000), "ref")
    found = sum(compare(ref, profile(window(rng, 10_000, shift=0.2), f"s{i}"), THRESHOLDS).columns[0].drifted
                for i in range(200))
    assert found / 200 >= 0.95
