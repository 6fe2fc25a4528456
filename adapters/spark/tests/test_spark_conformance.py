"""Property: for any table and any plan, the plan applied in Spark gives exactly the gateway's
Arrow engine output — schema and values (``Table.equals``) — or both refuse.

Tables have nulls, unicode and empty strings, decimals, dates, wall-clock timestamps and
instants in several time zones, integers up to their bounds and floats with infinities and
signed zeros (NaN is left out: ``Table.equals`` never equates NaN with itself). Plans keep,
withhold or mask each column with any mask the registry applies to its type, add cell rules and
row filters from predicates of every kind the policy language has — some exact in Spark, some
(case folding, year() of an instant, mixed kinds) that must be handed to govern's Arrow code."""

from __future__ import annotations

import datetime as dt
import decimal
import os
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sparkcheck import arrow_engine, assert_same, column, frame, key_source, plan, spark_engine

from govern.errors import MaskError
from govern.mask import registry

pytestmark = pytest.mark.xdist_group("spark")  # one worker, one JVM, for all Spark tests

TEXT = st.text(alphabet=st.sampled_from(list("ab@. Zzé😀ß_%Σ\u0130")), max_size=8)
REGION = st.sampled_from(["EU", "US", "APAC", "", None])
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]


def _int(bits: int) -> st.SearchStrategy[int]:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return st.one_of(st.integers(max(lo, -1000), min(hi, 1000)), st.sampled_from([lo, hi, lo + 1, hi - 1]))


def _opt(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


COLUMNS: dict[str, tuple[pa.DataType, st.SearchStrategy]] = {
    "s": (pa.string(), TEXT),
    "region": (pa.string(), REGION),
    "i8": (pa.int8(), _int(8)),
    "i32": (pa.int32(), _int(32)),
    "i64": (pa.int64(), _int(64)),
    "f32": (pa.float32(), st.floats(width=32, allow_nan=False)),
    "f64": (pa.float64(), st.floats(allow_nan=False)),
    "dec": (pa.decimal128(10, 2), st.decimals(min_value=-10**7, max_value=10**7, places=2, allow_nan=False,
                                               allow_infinity=False)),
    "d": (pa.date32(), st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 1))),
    "ntz": (pa.timestamp("us"), st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2100, 1, 1))),
    "b": (pa.bool_(), st.booleans()),
}


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(0, 12))
    zone = draw(st.sampled_from(ZONES))
    data = {"id": pa.array([f"p{draw(st.integers(0, 5))}" for _ in range(n)], pa.string())}  # the privacy unit
    for name, (t, values) in COLUMNS.items():
        data[name] = pa.array([draw(_opt(values)) for _ in range(n)], t)
    instants = [draw(_opt(st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2100, 1, 1),
                                       timezones=st.just(ZoneInfo(zone))))) for _ in range(n)]
    data["ts"] = pa.array(instants, pa.timestamp("us", zone))
    return pa.table(data)


MASK_PARAMS: dict[str, st.SearchStrategy[dict]] = {
    "null": st.just({}),
    "redact": st.sampled_from([{}, {"value": "X"}, {"value": ""}]),
    "hash": st.just({}),
    "tokenize": st.sampled_from([{"domain": "t.a"}, {"domain": "shared"}]),
    "generalize": st.fixed_dictionaries({
        "date": st.sampled_from(["year", "month"]), "prefix": st.integers(0, 4),
        "bucket": st.sampled_from([1, 7, 10, 0.05, 1000])}),
    "randomized_response": st.fixed_dictionaries({"p": st.sampled_from([0.3, 1.0]),
                                                  "categories": st.just(["EU", "US", "a"])}),
    "noise": st.fixed_dictionaries({"scale": st.sampled_from([0.5, 5, 1e6])}),
    "date_shift": st.fixed_dictionaries({"max_days": st.sampled_from([0, 3, 400])}),
    "email_domain": st.just({}),
    "show_first": st.fixed_dictionaries({"n": st.integers(0, 5), "mask_char": st.sampled_from(["*", "é"])}),
    "show_last": st.fixed_dictionaries({"n": st.integers(0, 5)}),
    "regex_replace": st.sampled_from([{"pattern": "[aé]", "replacement": "#"},
                                      {"pattern": r"(\w+)@", "replacement": r"<\1>"}]),
}

PREDICATES = [
    "region = 'EU'", "region IN ('EU', 'US')", "region IS NULL", "NOT region IN ('APAC')",
    "s LIKE 'a%'", "s LIKE '%\\_%'", "s ILIKE 'A%'", "lower(s) = 'σ'", "upper(s) = 'Σ'",
    "length(s) > 2", "i8 > 5", "i32 BETWEEN -10 AND 10", "i64 + 1 > 0", "-i8 < 3", "abs(i32) > 100",
    "f32 > 0.5", "f64 <= 0", "f64 = 1", "dec > 1", "d < DATE '2000-01-01'", "year(d) = 2000",
    "month(ntz) = 1", "year(ts) > 1999", "b", "NOT b",
    "coalesce(region, 'none') = 'none'", "i8 * i8 > 50", "i64 IN (1, 2, 3)",
]


def _applicable(t: pa.DataType) -> list[str]:
    out = []
    for name in registry.names():
        try:
            registry.get(name).check_type(t, {"date": "year", "prefix": 1, "bucket": 1})
            out.append(name)
        except MaskError:
            pass
    return out


@st.composite
def plans(draw: st.DrawFn, table: pa.Table):
    cols = []
    for name in table.column_names:
        t = table.schema.field(name).type
        action = draw(st.sampled_from(["keep", "mask", "mask", "withhold"]))
        if action == "mask":
            mask = draw(st.sampled_from(_applicable(t)))
            params = draw(MASK_PARAMS[mask])
            try:
                registry.get(mask).check_type(t, params)
            except MaskError:
                mask, params = "null", {}
            cols.append(column(name, t, mask, params))
        else:
            cols.append(column(name, t, action=action if action == "withhold" else None))
    visible = [c for c in cols if c.visible]
    rules = []
    for c in draw(st.lists(st.sampled_from(visible), max_size=2)) if visible else []:
        t = table.schema.field(c.name).type
        # a rule's mask must give the column's result type (the engines cannot mix types in one column)
        same = [m for m in _applicable(t) if str(registry.get(m).result_type(t, {})) == c.result_type
                and m not in ("generalize", "regex_replace", "tokenize", "randomized_response", "noise", "date_shift",
                              "show_first", "show_last", "redact")]
        if same:
            rules.append((c.name, draw(st.sampled_from(PREDICATES)), draw(st.sampled_from(same)), {}))
    filters = draw(st.lists(st.sampled_from(PREDICATES), max_size=2))
    return plan(cols, rules=rules, filters=filters, unit="id")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return key_source(tmp_path_factory.mktemp("keys"))


@settings(max_examples=int(os.environ.get("GOVERN_SPARK_EXAMPLES", "20")), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_spark_equals_arrow_engine(spark, keys, data) -> None:
    table = data.draw(tables())
    p = data.draw(plans(table))
    assert_same(arrow_engine(p, table, keys.load()), spark_engine(p, frame(spark, table), keys))


@pytest.mark.parametrize("text", PREDICATES)
def test_every_predicate_kind_agrees(spark, keys, text: str) -> None:
    """Each predicate as a row filter and as a cell rule, on one table with edge values."""
    table = pa.table({
        "id": ["p1", "p2", "p3", None, "p4", "p5"],
        "s": ["a_b", "σ", "Σ", None, "", "\u0130x"],
        "region": ["EU", "US", None, "APAC", "", "EU"],
        "i8": pa.array([6, -128, None, 127, 0, 8], pa.int8()),
        "i32": pa.array([-10, 2**31 - 1, None, 5, 200, -(2**31)], pa.int32()),
        "i64": pa.array([1, 2, None, -1, 2**63 - 1, 0], pa.int64()),
        "f32": pa.array([0.5, float("inf"), None, -0.0, 1.0, 0.75], pa.float32()),
        "f64": pa.array([1.0, -0.0, None, float("-inf"), 2.5, 1e300]),
        "dec": pa.array([decimal.Decimal("1.01"), None, decimal.Decimal("-5.00"), decimal.Decimal("1.00"),
                         decimal.Decimal("0"), decimal.Decimal("99999999.99")], pa.decimal128(10, 2)),
        "d": pa.array([dt.date(1999, 12, 31), dt.date(2000, 1, 1), None, dt.date(1, 1, 1), dt.date(2000, 6, 1),
                       dt.date(9999, 12, 31)]),
        "ntz": pa.array([dt.datetime(2000, 1, 1), dt.datetime(1999, 12, 31, 23, 59, 59, 999999), None,
                         dt.datetime(2000, 1, 31), dt.datetime(1900, 1, 1), dt.datetime(2100, 1, 1)], pa.timestamp("us")),
        "b": [True, False, None, True, False, True],
        "ts": pa.array([dt.datetime(1999, 12, 31, 23, 30, tzinfo=dt.UTC), None,
                        dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
                        dt.datetime(2050, 1, 1, tzinfo=dt.UTC), dt.datetime(1999, 12, 31, 23, 30, tzinfo=dt.UTC)],
                       pa.timestamp("us", "Europe/Paris")),
    })
    cols = [column(n, table.schema.field(n).type) for n in table.column_names]
    cols[1] = column("s", pa.string(), "redact", {})
    for p in (plan(cols, filters=[text], unit="id"), plan(cols, rules=[("s", text, "null", {})], unit="id")):
        assert_same(arrow_engine(p, table, keys.load()), spark_engine(p, frame(spark, table), keys))


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_the_session_time_zone_changes_nothing(spark, keys, zone: str) -> None:
    """Instants are truncated in UTC and wall-clock times have no zone, as in the gateway,
    whatever ``spark.sql.session.timeZone`` says."""
    paris = [dt.datetime(2020, 12, 31, 23, 30, tzinfo=dt.UTC), dt.datetime(2021, 1, 1, 0, 30, tzinfo=dt.UTC),
             None, dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.UTC)]
    wall = [dt.datetime(2020, 12, 31, 23, 30), None, dt.datetime(2021, 3, 28, 2, 30), dt.datetime(1, 1, 1)]
    table = pa.table({"id": ["a", "b", "c", "d"], "ts": pa.array(paris, pa.timestamp("us", "Europe/Paris")),
                      "ntz": pa.array(wall, pa.timestamp("us")), "ts2": pa.array(paris, pa.timestamp("us", "UTC"))})
    p = plan([column("id", pa.string()),
              column("ts", pa.timestamp("us", "Europe/Paris"), "generalize", {"date": "month"}),
              column("ntz", pa.timestamp("us"), "generalize", {"date": "year"}),
              column("ts2", pa.timestamp("us", "UTC"), "date_shift", {"max_days": 5})],
             rules=[("ts", "month(ntz) = 12 OR ntz IS NULL", "null", {})], filters=["year(ntz) < 2022"], unit="id")
    spark.conf.set("spark.sql.session.timeZone", zone)
    try:
        assert_same(arrow_engine(p, table, keys.load()), spark_engine(p, frame(spark, table), keys))
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
