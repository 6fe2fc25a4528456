"""For every mask: the Arrow form and the DuckDB SQL form give identical results.

Random columns of every type family the mask accepts, with nulls, empty strings, emoji and other
non-ASCII text, negative numbers, extremes of integer types, dates before year 1 and after 9999,
and sliced arrays. When a result cannot be represented (overflow) both engines must refuse.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mask import strategies as S
from tests.mask.engines import FIXED_KEYS, assert_same, connect, run_arrow, run_sql

KEYS = FIXED_KEYS
NUMERIC = S.INT_TYPES + S.FLOAT_TYPES
ALL = S.STRING_TYPES + S.INT_TYPES + S.FLOAT_TYPES + S.DECIMAL_TYPES + S.TEMPORAL_TYPES + [pa.bool_()]

# mask -> (types it is tested on, parameter strategy)
CASES: dict[str, tuple[list[pa.DataType], st.SearchStrategy]] = {
    "null": (ALL, st.just({})),
    "redact": (ALL, st.fixed_dictionaries({}, optional={"value": S.text})),
    "hash": (S.STRING_TYPES + S.INT_TYPES + [pa.date32()], st.just({})),
    "tokenize": (S.STRING_TYPES + S.INT_TYPES, st.fixed_dictionaries(
        {"domain": st.sampled_from(["t.x", "patient", "a.b-c_d:e", "naïve ds.col 'q'"])})),
    "show_first": (S.STRING_TYPES + S.INT_TYPES, st.fixed_dictionaries(
        {}, optional={"n": st.integers(0, 30), "mask_char": st.sampled_from(["*", "#", "é", "😀", "'"])})),
    "email_domain": (S.STRING_TYPES, st.just({})),
    "regex_replace": (S.STRING_TYPES, st.sampled_from([
        {"pattern": r"\d", "replacement": "#"},
        {"pattern": r"(\w+)@(\w+)", "replacement": r"\2 at \1"},
        {"pattern": "a*", "replacement": "-"},
        {"pattern": ".", "replacement": "x"},
        {"pattern": "^", "replacement": ">"},
        {"pattern": "[^a-z]+", "replacement": ""},
        {"pattern": "(?i)É|o", "replacement": "0"},
        {"pattern": "'", "replacement": "''"},
    ])),
    "generalize": (ALL[:-1], st.fixed_dictionaries({
        "date": st.sampled_from(["year", "month"]),
        "prefix": st.integers(0, 6),
        "bucket": st.sampled_from([1, 5, 10, 1000, 0.5, 2.5, 0.01]),
    })),
    "noise": (NUMERIC, st.fixed_dictionaries({"scale": st.sampled_from([0.5, 1, 3, 10.0, 1000, 1e6])})),
    "date_shift": (S.TEMPORAL_TYPES, st.fixed_dictionaries(
        {"max_days": st.integers(0, 400)}, optional={"by": st.just("u")})),
    "randomized_response": (S.STRING_TYPES, st.fixed_dictionaries({
        "p": st.sampled_from([0.01, 0.3, 0.5, 0.9, 1.0]),
        "categories": st.lists(S.text, min_size=1, max_size=4),
    })),
}
CASES["show_last"] = CASES["show_first"]


@pytest.fixture(scope="module")
def con():
    c = connect(KEYS)
    yield c
    c.close()


def test_every_registered_mask_is_covered() -> None:
    from govern.mask import registry

    assert sorted(CASES) == registry.names()


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arrow_and_duckdb_agree(con, name: str, data: st.DataObject) -> None:
    types, params_strategy = CASES[name]
    t = data.draw(st.sampled_from(types), label="type")
    params = data.draw(params_strategy, label="params")
    if name == "generalize" and pa.types.is_integer(t) and not float(params["bucket"]).is_integer():
        params = {**params, "bucket": 10}
    if name == "generalize" and pa.types.is_decimal(t) and params["bucket"] == 0.01 and t.scale < 2:
        params = {**params, "bucket": 1}
    table = data.draw(S.tables(t), label="table")
    unit = data.draw(st.sampled_from(["u", None]), label="privacy unit")
    assert_same(run_arrow(name, params, table, KEYS, unit), run_sql(con, name, params, table, KEYS, unit))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_randomized_response_keeps_only_categories_and_both_forms_agree(con, data: st.DataObject) -> None:
    """Values drawn from a mix of categories and other text: both forms give identical output,
    every output is a category, and a category is never replaced by something else when p = 1."""
    categories = data.draw(st.lists(S.text, min_size=1, max_size=4, unique=True), label="categories")
    value = st.none() | st.sampled_from(categories) | S.text
    values = data.draw(st.lists(value, min_size=1, max_size=30), label="values")
    p = data.draw(st.sampled_from([0.01, 0.5, 0.9, 1.0]), label="p")
    t = data.draw(st.sampled_from(S.STRING_TYPES), label="type")
    table = pa.table({"x": pa.array(values, pa.string()).cast(t),
                      "u": pa.array([f"p{i % 5}" for i in range(len(values))])})
    params = {"p": p, "categories": categories}
    arrow, sql = run_arrow("randomized_response", params, table, KEYS), run_sql(con, "randomized_response", params, table, KEYS)
    assert_same(arrow, sql)
    for x, y in zip(values, arrow.array.to_pylist(), strict=True):
        assert (y is None) == (x is None)
        assert y is None or y in categories
        if p == 1.0 and x in categories:
            assert y == x


@pytest.mark.parametrize("session_tz", ["America/New_York", "Asia/Kolkata"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_tz_aware_timestamps_agree_whatever_the_session_time_zone(session_tz: str, data: st.DataObject) -> None:
    """Same instants in both engines; DuckDB labels its output with the session time zone."""
    t = pa.timestamp(data.draw(st.sampled_from(["s", "ms", "us"])), "UTC")
    name, params = data.draw(st.sampled_from([
        ("generalize", {"date": "year"}), ("generalize", {"date": "month"}), ("date_shift", {"max_days": 90})]))
    table = data.draw(S.tables(t))
    con = connect(KEYS)
    con.execute(f"SET TimeZone = '{session_tz}'")
    arrow, sql = run_arrow(name, params, table, KEYS), run_sql(con, name, params, table, KEYS)
    con.close()
    if sql.array is not None:
        sql.array = sql.array.cast(t)
    assert_same(arrow, sql)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_noise_on_integers_clamps_to_the_type_and_both_forms_agree(con, data: st.DataObject) -> None:
    """Noise never fails on an integer column: a value pushed past its type's range reads as the
    bound (a uint8 2 with noise -5 is 0), in both engines, bit for bit."""
    t = data.draw(st.sampled_from(S.INT_TYPES), label="type")
    bits = t.bit_width
    lo, hi = (0, 2**bits - 1) if pa.types.is_unsigned_integer(t) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    near = st.one_of(st.integers(lo, min(lo + 20, hi)), st.integers(max(hi - 20, lo), hi), st.integers(lo, hi))
    values = data.draw(st.lists(st.none() | near, min_size=1, max_size=30), label="values")
    scale = data.draw(st.sampled_from([0.5, 1, 3, 10, 1000, 1e6, 2.0**40, 1e19, 1e30]), label="scale")
    table = pa.table({"x": pa.array(values, t), "u": pa.array([f"p{i % 7}" for i in range(len(values))])})
    arrow = run_arrow("noise", {"scale": scale}, table, KEYS)
    sql = run_sql(con, "noise", {"scale": scale}, table, KEYS)
    assert arrow.error is None and sql.error is None, (arrow.error, sql.error)
    assert_same(arrow, sql)
    for x, y in zip(values, arrow.array.to_pylist(), strict=True):
        if x is None:
            assert y is None
            continue
        assert lo <= y <= hi and abs(y - x) <= scale + 1
        if lo < y < hi:  # not clamped: within the noise of the value
            assert abs(y - x) <= scale + 0.5
