"""The (mask × Arrow type) matrix in Spark is total: every pair the registry implements is either
an exact Spark expression or computed by govern's own kernels in ``mapInArrow`` — with the Arrow
engine's exact result either way — or refused with a clear error before Spark runs anything:
by the registry (the pair is not implemented anywhere) or because Spark cannot hold the type.
The test enumerates every registered mask against every sample type, so it grows with both."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest
from sparkcheck import arrow_engine, assert_same, column, frame, key_source, plan, spark_engine

import govern_spark
from govern.errors import MaskError, Unsupported
from govern.mask import registry

pytestmark = pytest.mark.xdist_group("spark")  # one worker, one JVM, for all Spark tests

SAMPLES: dict[str, pa.Array] = {
    "string": pa.array(["alice@example.com", "", None, "Zoë 😀@x"]),
    "large_string": pa.array(["x@y.org", None, "ß", "a@b@c"], pa.large_string()),
    "dictionary": pa.array(["EU", "US", None, "EU"]).dictionary_encode(),
    "int8": pa.array([1, -7, None, 100], pa.int8()),
    "int64": pa.array([123, -45, None, 0]),
    "uint32": pa.array([5, None, 4_000_000_000, 0], pa.uint32()),
    "float32": pa.array([1.5, None, -2.25, 0.0], pa.float32()),
    "float64": pa.array([1.5, None, -1e-7, 1e16]),
    "float16": pa.array([1.0, None, 2.0, 0.5], pa.float32()).cast(pa.float16()),
    "decimal": pa.array([decimal.Decimal("12.34"), None, decimal.Decimal("-0.50"), decimal.Decimal("0")],
                        pa.decimal128(10, 2)),
    "decimal38": pa.array([decimal.Decimal("1.5"), None, decimal.Decimal("-2.5"), None], pa.decimal128(38, 1)),
    "date32": pa.array([dt.date(2020, 5, 17), None, dt.date(1, 1, 1), dt.date(1969, 12, 31)]),
    "date64": pa.array([dt.date(2020, 5, 17), None, dt.date(1970, 1, 1), dt.date(1969, 12, 31)]).cast(pa.date64()),
    "timestamp": pa.array([dt.datetime(2020, 5, 17, 13, 45), None, dt.datetime(1969, 12, 31, 23, 59),
                           dt.datetime(1, 1, 1)]),
    "timestamp_ms": pa.array([dt.datetime(2020, 5, 17, 13, 45, 1, 2000), None, None, dt.datetime(1999, 1, 1)],
                             pa.timestamp("ms")),
    "timestamp_tz": pa.array([dt.datetime(2020, 12, 31, 23, 30), None, dt.datetime(1969, 12, 31, 23, 59, 59),
                              dt.datetime(2000, 1, 1)], pa.timestamp("us", "UTC")),
    "timestamp_paris": pa.array([dt.datetime(2020, 12, 31, 23, 30), None, dt.datetime(2021, 3, 28, 1, 30),
                                 dt.datetime(1950, 6, 1)], pa.timestamp("us", "Europe/Paris")),
    "timestamp_ns": pa.array([10**18, None, -1, 0], pa.timestamp("ns")),
    "boolean": pa.array([True, None, False, True]),
    "binary": pa.array([b"\x00\x01", None, b"", b"x"]),
    "list": pa.array([[1, 2], None, [], [3]]),
    "struct": pa.array([{"a": 1}, None, {"a": 2}, {"a": 3}]),
}
UNIT = pa.array(["p1", "p2", None, "p1"])  # the privacy unit column `u`

PARAMS: dict[str, dict] = {
    "null": {},
    "redact": {"value": "[hidden]"},
    "hash": {},
    "tokenize": {"domain": "t.x"},
    "generalize": {"date": "year", "bucket": 10, "prefix": 2},
    "randomized_response": {"p": 0.5, "categories": ["A", "B", "EU"]},
    "noise": {"scale": 5},
    "date_shift": {"max_days": 30},
    "email_domain": {},
    "show_first": {"n": 2},
    "show_last": {"n": 2, "mask_char": "#"},
    "regex_replace": {"pattern": r"(\w)@", "replacement": r"\1 at "},
}

# Spark cannot hold these types exactly (no unsigned, half-float or nanosecond types; masks
# never apply to nested types): every mask on them is refused.
NOT_IN_SPARK = {"uint32", "float16", "timestamp_ns", "list", "struct"}
# Masks with an exact Spark expression; every other mask runs on govern's kernels in mapInArrow.
EXACT = {"null", "redact", "generalize", "email_domain", "show_first", "show_last"}


def expected_route(mask: str, type_name: str) -> str:
    try:
        registry.get(mask).check_type(SAMPLES[type_name].type, PARAMS[mask])
    except MaskError:
        return "refused"
    if type_name in NOT_IN_SPARK:
        return "refused"
    return "spark" if mask in EXACT else "arrow"


def test_every_mask_has_parameters() -> None:
    assert sorted(PARAMS) == registry.names()


@pytest.mark.parametrize("mask", sorted(PARAMS))
def test_mask_runs_exactly_or_is_refused(spark, tmp_path, mask: str) -> None:
    keys = key_source(tmp_path)
    routes = {t: expected_route(mask, t) for t in SAMPLES}
    # refused pairs: a clear error before any Spark job
    for type_name in (t for t, r in routes.items() if r == "refused"):
        t = SAMPLES[type_name].type
        p = plan([column("x", t, mask, PARAMS[mask]), column("u", pa.string())], unit="u")
        df = spark.createDataFrame([], "u string")  # never read: refused while building
        with pytest.raises((MaskError, Unsupported), match=r"does not apply|cannot be held exactly"):
            govern_spark.apply_plan(df.select("u").withColumn("x", df.u), p, keys)
    # every other pair, all types in one plan and one Spark job
    running = [t for t, r in routes.items() if r != "refused"]
    if not running:
        return
    table = pa.table({**{t: SAMPLES[t] for t in running}, "u": UNIT})
    p = plan([*(column(t, SAMPLES[t].type, mask, PARAMS[mask]) for t in running), column("u", pa.string())],
             unit="u")
    df = frame(spark, table)
    where = govern_spark.explain_assignment(p, df)
    assert {t: where[t].split(":")[0] for t in running} == {t: routes[t] for t in running}
    assert_same(arrow_engine(p, table, keys.load()), spark_engine(p, df, keys))
