"""Statistical correctness of releases, on the engine (OpenDP) alone.

OpenDP draws its noise from the operating system's CSPRNG and cannot be seeded, so every test
uses many independent samples and a tolerance whose failure probability is stated (below 1e-6
under the normal approximation of the statistic; the data themselves are seeded). Independent
samples come cheaply from *parallel composition*: one grouped release gives one noise draw per
group, so 400 groups × 10 releases give 4,000 draws.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from govern.errors import InvalidRequest
from tests.privacy.dp.conftest import run

GROUPS = 400
REPEATS = 10


@pytest.fixture(scope="module")
def grouped() -> tuple[pa.Table, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    sizes = rng.integers(5, 50, GROUPS)
    g = np.repeat(np.arange(GROUPS), sizes)
    x = rng.uniform(0, 10, len(g))
    table = pa.table({"pid": np.arange(len(g)), "g": g, "x": x})
    return table, np.bincount(g, minlength=GROUPS), np.bincount(g, weights=x, minlength=GROUPS)


@pytest.fixture(scope="module")
def releases(grouped):  # type: ignore[no-untyped-def]
    table, _, _ = grouped
    body = {"aggregates": [{"function": "count"}, {"function": "sum", "column": "x"},
                           {"function": "mean", "column": "x"}], "group_by": ["g"], "epsilon": 1.0}
    return [run(table, body, bounds={"x": (0, 10)}, public=("g",)) for _ in range(REPEATS)]


def discrete_laplace_variance(scale: float) -> float:
    a = math.exp(-1 / scale)
    return 2 * a / (1 - a) ** 2


def test_noise_scale_is_sensitivity_over_epsilon(releases) -> None:  # type: ignore[no-untyped-def]
    # three primitives (rows, sum of x, non-null count of x) share epsilon 1: 1/3 each.
    # Sensitivities for one person with one row: 1 (counts) and 10 (x clamped to [0, 10]).
    scales = {(m.aggregate, m.distribution): m.scale for m in releases[0].mechanisms}
    assert scales[("count", "Integer Laplace")] == pytest.approx(3.0, rel=1e-4)
    assert [round(m.scale, 3) for m in releases[0].mechanisms if m.aggregate == "sum_x"] == [30.0]
    assert releases[0].parts == [{"part": 0, "group_by": ["g"], "epsilon": pytest.approx(1.0, rel=1e-5),
                                  "delta": 0.0}]


def test_empirical_variance_matches_the_scale(grouped, releases) -> None:  # type: ignore[no-untyped-def]
    _, counts, sums = grouped
    count_noise = np.array([r["count"]["value"] - counts[r["g"]] for rel in releases for r in rel.rows])
    sum_noise = np.array([r["sum_x"]["value"] - sums[r["g"]] for rel in releases for r in rel.rows])
    assert len(count_noise) == GROUPS * REPEATS
    # Sample variance of N Laplace draws has relative sd sqrt((kurtosis - 1)/N) = sqrt(5/4000) ≈ 3.5%:
    # ±25% is more than 7 sd (failure probability < 1e-11 under the normal approximation).
    assert np.var(count_noise) / discrete_laplace_variance(3.0) == pytest.approx(1.0, abs=0.25)
    assert np.var(sum_noise) / (2 * 30.0**2) == pytest.approx(1.0, abs=0.25)
    assert abs(np.mean(count_noise)) < 0.5  # unbiased: sd of the mean ≈ 0.067, 0.5 is 7 sd


def test_intervals_cover_at_about_their_nominal_rate(grouped, releases) -> None:  # type: ignore[no-untyped-def]
    _, counts, sums = grouped

    def covered(name: str, truth) -> float:  # type: ignore[no-untyped-def]
        hits = [r[name]["interval"][0] <= truth(r["g"]) <= r[name]["interval"][1] for rel in releases for r in rel.rows]
        return sum(hits) / len(hits)

    # 95% intervals, 4,000 draws: binomial sd ≈ 0.34%; [0.93, 0.975] is > 5.8 sd from 0.95 on each side.
    assert 0.93 <= covered("count", lambda g: counts[g]) <= 0.975
    assert 0.93 <= covered("sum_x", lambda g: sums[g]) <= 0.975
    # The mean's interval combines two 97.5% intervals (union bound): at least 95%, usually more.
    assert covered("mean_x", lambda g: sums[g] / counts[g]) >= 0.94


def test_quantile_rank_accuracy_covers(grouped) -> None:  # type: ignore[no-untyped-def]
    table, _, _ = grouped
    x = table.column("x").to_numpy()
    g = table.column("g").to_numpy()
    by_group = {i: np.sort(x[g == i]) for i in range(GROUPS)}
    hits = total = 0
    for _ in range(3):
        result = run(table, {"aggregates": [{"function": "quantile", "column": "x", "q": 0.5}], "group_by": ["g"],
                             "epsilon": 2.0}, bounds={"x": (0, 10)}, public=("g",))
        for row in result.rows:
            cell, values = row["median_x"], by_group[row["g"]]
            assert cell["interval"] is None and cell["rank_accuracy"] > 0
            below = np.searchsorted(values, cell["value"], side="left")
            at_or_below = np.searchsorted(values, cell["value"], side="right")
            target = 0.5 * len(values)
            # distance from the best candidate's rank is at most the grid step (0.1 wide, ≤ 1 row here) + ties
            error = max(0.0, min(abs(below - target), abs(at_or_below - target)) - 2)
            hits += error <= cell["rank_accuracy"]
            total += 1
    # The bound is a union bound over candidates (conservative): 1,200 draws, nominal ≥ 95%.
    assert hits / total >= 0.94


def test_groups_with_private_keys_are_released_only_above_the_threshold() -> None:
    big = [("big", i) for i in range(400)]
    small = [("small", 1000 + i) for i in range(3)]
    table = pa.table({"pid": [p for _, p in big + small], "k": [k for k, _ in big + small]})
    with pytest.raises(InvalidRequest, match="delta"):
        run(table, {"aggregates": [{"function": "count"}], "group_by": ["k"], "epsilon": 1.0})
    seen: set[str] = set()
    for _ in range(20):
        result = run(table, {"aggregates": [{"function": "count"}], "group_by": ["k"], "epsilon": 1.0, "delta": 1e-6})
        keys = {r["k"] for r in result.rows}
        assert "big" in keys
        seen |= keys
        assert result.threshold is not None and result.threshold > 3
        assert result.parts[0]["delta"] <= 1e-6
    # The small group (3 people, threshold ≈ 40) would need noise beyond the threshold: probability ≤ delta.
    assert seen == {"big"}


def test_a_person_with_many_rows_does_not_weigh_more() -> None:
    # person 0 has 1,000 rows of x = 10; 100 others have one row of x = 0
    pids = [0] * 1000 + list(range(1, 101))
    xs = [10.0] * 1000 + [0.0] * 100
    table = pa.table({"pid": pids, "x": xs})
    # Unbounded, person 0 would weigh 1,000 rows (sum 10,000). At epsilon 100 (the most a query
    # may ask) the Laplace scales are 0.02 (count) and 0.2 (sum), so ±5 is 25 scales away
    # (probability ~1e-11; ±10 with three rows per person, 16 scales, ~1e-7): the test fails only
    # if contributions are not bounded. (At epsilon 20 the sum's scale was 1.0 and ±5 failed
    # about once in 150 runs.)
    body = {"aggregates": [{"function": "count"}, {"function": "sum", "column": "x"}], "epsilon": 100.0}
    one = run(table, body, bounds={"x": (0, 10)}).rows[0]
    assert abs(one["count"]["value"] - 101) <= 5
    assert abs(one["sum_x"]["value"] - 10) <= 5
    three = run(table, {**body, "contributions": 3}, bounds={"x": (0, 10)}).rows[0]
    assert abs(three["count"]["value"] - 103) <= 10  # scales ×3 with three rows per person
    assert abs(three["sum_x"]["value"] - 30) <= 10


def test_values_are_clamped_into_the_bounds() -> None:
    table = pa.table({"pid": list(range(200)), "x": [1e9] * 100 + [-1e9] * 100})
    row = run(table, {"aggregates": [{"function": "sum", "column": "x"}, {"function": "mean", "column": "x"}],
                      "epsilon": 20.0}, bounds={"x": (0, 1)}).rows[0]
    assert abs(row["sum_x"]["value"] - 100) <= 5
    assert 0.0 <= row["mean_x"]["value"] <= 1.0


def test_bound_contributions_keeps_at_most_k_rows_per_person_the_same_ones_each_time() -> None:
    from govern.privacy.dp.execute import bound_contributions

    table = pa.table({"pid": [0] * 10 + [1, 1] + [None], "row": list(range(13))})
    kept_sets = set()
    for _ in range(5):
        out = bound_contributions(table, "pid", 3)
        pids = out.column("pid").to_pylist()
        assert pids.count(0) == 3 and pids.count(1) == 2 and None not in pids
        kept_sets.add(tuple(r for p, r in zip(pids, out.column("row").to_pylist(), strict=True) if p == 0))
    assert len(kept_sets) == 1  # a keyed PRF of the row: the same rows on every release
    assert kept_sets != {(0, 1, 2)} or bound_contributions(table, "pid", 3, b"k2").column("row").to_pylist()[:3] != [
        0, 1, 2]  # not simply the first rows
    untouched = pa.table({"pid": [1, 2, 3], "row": [0, 1, 2]})
    assert bound_contributions(untouched, "pid", 1) is untouched
