"""One projection over raw inputs: identifiers cannot break a mask, and masks cannot depend on
each other's order.

* trino #31119: an unquoted identifier broke a mask. Here every raw column is selected once by
  its quoted name and renamed to a positional one; no name is ever parsed again, so columns
  called ``a.b``, ``we`ird``, ``SELECT`` or ``c0`` (our own positional names) mask like any other.
* trino PR #14420: chained masks gave order-dependent results, because a mask (or a cell rule's
  condition) read another mask's output. Here every expression reads raw columns only: a rule
  whose condition reads a masked column sees the raw value, as in the gateway, whatever the
  order of the plan's columns."""

from __future__ import annotations

import pyarrow as pa
import pytest
from sparkcheck import arrow_engine, assert_same, column, frame, key_source, plan, spark_engine

import govern_spark

pytestmark = pytest.mark.xdist_group("spark")  # one worker, one JVM, for all Spark tests

WEIRD = ["a.b", "we`ird", "sp ace", "SELECT", 'quo"te', "ünï", "c0", "m0", "p0", "x)"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return key_source(tmp_path_factory.mktemp("keys"))


def test_unusual_identifiers(spark, keys) -> None:
    values = ["ann@x.org", None, "bo", "", "z@y"]
    table = pa.table({name: values for name in WEIRD})
    masks = ["email_domain", "hash", "show_last", "redact", "tokenize", "show_first", "null",
             "regex_replace", "generalize", None]
    params = {"tokenize": {"domain": "d"}, "regex_replace": {"pattern": "[a-z]", "replacement": "?"},
              "generalize": {"prefix": 1}, "show_last": {"n": 1}, "show_first": {"n": 1}}
    cols = [column(n, pa.string(), m, params.get(m or "", {})) for n, m in zip(WEIRD, masks, strict=True)]
    p = plan(cols, rules=[("a.b", "\"we`ird\" = 'bo' OR \"c0\" IS NULL", "null", {})],
             filters=["\"SELECT\" IS NOT NULL OR \"x)\" = ''"])
    df = frame(spark, table)
    assert_same(arrow_engine(p, table, keys.load()), spark_engine(p, df, keys))
    assert govern_spark.apply_plan(df, p, keys).columns == WEIRD


def test_a_rule_reads_raw_values_whatever_the_order(spark, keys) -> None:
    table = pa.table({
        "email": ["a@eu.org", "b@us.org", "c@x.org", None],
        "region": ["EU", "US", "EU", "EU"],
        "zip": ["75001", "10001", "75002", "75003"],
    })
    region = column("region", pa.string(), "redact", {})  # the condition's column is itself masked
    email = column("email", pa.string(), "email_domain", {})
    zip_ = column("zip", pa.string(), "generalize", {"prefix": 2})
    rules = [("email", "region = 'EU'", "null", {}), ("zip", "region = 'EU' AND email LIKE 'a%'", "redact", {})]
    outputs = []
    for order in ([region, email, zip_], [zip_, email, region], [email, region, zip_]):
        p = plan(order, rules=rules)
        expected = arrow_engine(p, table, keys.load())
        got = spark_engine(p, frame(spark, table), keys)
        assert_same(expected, got)
        assert got.table is not None
        outputs.append({n: got.table[n].to_pylist() for n in ("email", "region", "zip")})
    assert outputs[0] == outputs[1] == outputs[2]
    # the rules saw raw region and raw email, not 'REDACTED' and '*@eu.org'
    assert outputs[0]["email"] == [None, "*@us.org", None, None]
    assert outputs[0]["zip"] == ["REDACTED", "10", "75", "REDACTED"]  # NULL email: unknown, so masked
    assert outputs[0]["region"] == ["REDACTED"] * 4


def test_rules_in_order_last_wins(spark, keys) -> None:
    """Two rules on one column: the later rule wins where both hold (the gateway's order)."""
    table = pa.table({"s": ["aa", "ab", "ba", None], "k": [1, 2, 3, 4]})
    p = plan([column("s", pa.string(), "show_first", {"n": 1}), column("k", pa.int64())],
             rules=[("s", "k >= 2", "redact", {}), ("s", "k >= 3", "null", {})])
    got = spark_engine(p, frame(spark, table), keys)
    assert_same(arrow_engine(p, table, keys.load()), got)
    assert got.table is not None and got.table["s"].to_pylist() == ["a*", "REDACTED", None, None]
