"""Fail closed: a plan that does not fit the DataFrame, the keys or Spark is refused with a
clear error before any data moves — or, for keys that are missing where the executors run, the
job fails and returns nothing."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from sparkcheck import arrow_engine, assert_same, column, frame, key_source, plan, spark_engine

import govern_spark
from govern.errors import KeyMaterialError, PlanError, UnknownColumn, Unsupported
from govern.mask.keyfile import write_key_file

pytestmark = pytest.mark.xdist_group("spark")  # one worker, one JVM, for all Spark tests

TABLE = pa.table({"name": ["ann-raw", None, "bo"], "n": pa.array([1, 2, 3], pa.int32()),
                  "d": [dt.date(2020, 1, 2), None, dt.date(1999, 5, 6)]})


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return key_source(tmp_path_factory.mktemp("keys"))


def hashed() -> object:
    return plan([column("name", pa.string(), "hash"), column("n", pa.int32()), column("d", pa.date32())])


def test_a_column_the_plan_does_not_know_is_refused(spark, keys) -> None:
    df = frame(spark, TABLE).withColumn("ssn", F.lit("123-45-6789"))
    with pytest.raises(PlanError, match="does not know: ssn"):
        govern_spark.apply_plan(df, hashed(), keys)


def test_a_column_of_another_type_is_refused(spark, keys) -> None:
    df = frame(spark, TABLE).withColumn("n", F.col("n").cast("string"))
    with pytest.raises(PlanError, match="column 'n' is string in Spark but the plan was compiled for int32"):
        govern_spark.apply_plan(df, hashed(), keys)


def test_a_missing_column_is_refused(spark, keys) -> None:
    with pytest.raises(UnknownColumn, match="lacks"):
        govern_spark.apply_plan(frame(spark, TABLE).drop("name"), hashed(), keys)


def test_withheld_columns_cannot_be_asked_for(spark, keys) -> None:
    p = plan([column("name", pa.string(), action="withhold"), column("n", pa.int32()), column("d", pa.date32())])
    with pytest.raises(UnknownColumn, match="withheld"):
        govern_spark.apply_plan(frame(spark, TABLE), p, keys, columns=["name"])
    assert govern_spark.apply_plan(frame(spark, TABLE), p, keys).columns == ["n", "d"]


def test_keyed_masks_need_a_key_source(spark) -> None:
    with pytest.raises(KeyMaterialError, match="hash need the masking keys"):
        govern_spark.apply_plan(frame(spark, TABLE), hashed(), None)


def test_the_key_id_must_be_the_plans(spark, tmp_path) -> None:
    other = key_source(tmp_path, key_id="k9")
    with pytest.raises(KeyMaterialError, match="compiled for masking key id 'k1'"):
        govern_spark.apply_plan(frame(spark, TABLE), hashed(), other)


def test_unkeyed_masks_need_no_keys(spark) -> None:
    p = plan([column("name", pa.string(), "regex_replace", {"pattern": "n", "replacement": "_"}),
              column("n", pa.int32(), "generalize", {"bucket": 2}), column("d", pa.date32(), "null")])
    got = spark_engine(p, frame(spark, TABLE), None)
    assert got.table is not None and got.table["name"].to_pylist() == ["a__-raw", None, "bo"]


def test_keys_missing_on_the_executors_fail_the_job(spark, tmp_path) -> None:
    missing = govern_spark.KeySource(file=str(tmp_path / "nowhere.key"), key_id="k1")
    out = govern_spark.apply_plan(frame(spark, TABLE), hashed(), missing)  # the driver never reads keys
    with pytest.raises(Exception, match=r"cannot read masking key file nowhere\.key") as info:
        out.collect()
    assert "ann-raw" not in str(info.value)


def test_a_key_source_from_the_environment(monkeypatch, tmp_path) -> None:
    write_key_file(tmp_path / "k", "k1")
    text = (tmp_path / "k").read_text().splitlines()[-1].split(": ", 1)[1]
    monkeypatch.setenv("GOVERN_SPARK_TEST_KEY", text)
    from_env = govern_spark.KeySource(env="GOVERN_SPARK_TEST_KEY", key_id="k1").load()
    from_file = govern_spark.KeySource(file=str(tmp_path / "k"), key_id="k1").load()
    assert from_env.subkey("hash") == from_file.subkey("hash")
    assert text not in repr(govern_spark.KeySource(env="GOVERN_SPARK_TEST_KEY"))
    with pytest.raises(KeyMaterialError, match="exactly one"):
        govern_spark.KeySource()
    monkeypatch.delenv("GOVERN_SPARK_TEST_KEY")
    with pytest.raises(KeyMaterialError, match="is not set"):
        govern_spark.KeySource(env="GOVERN_SPARK_TEST_KEY").load()


def test_types_spark_cannot_hold_are_refused(spark, keys) -> None:
    p = plan([column("u", pa.uint32()), column("n", pa.int32())])
    with pytest.raises(Unsupported, match="no unsigned integer types"):
        govern_spark.apply_plan(frame(spark, TABLE.select(["n"])), p, keys)


def test_without_ansi_mode_overflowing_buckets_run_on_arrow(spark, keys) -> None:
    """With ANSI off Spark would wrap around where Arrow raises: integer buckets move to govern's
    kernels, with the same result. (Integer arithmetic in predicates always runs there.)"""
    table = pa.table({"n": pa.array([127, -128, 5, None], pa.int8()), "k": pa.array([1, 2, 3, 4], pa.int64())})
    p = plan([column("n", pa.int8(), "generalize", {"bucket": 10}), column("k", pa.int64())], filters=["k + 1 > 2"])
    spark.conf.set("spark.sql.ansi.enabled", "false")
    try:
        df = frame(spark, table)
        where = govern_spark.explain_assignment(p, df)
        filters = [v for k, v in where.items() if k.startswith("filter")]
        assert where["n"].startswith("arrow") and filters[0].startswith("arrow: integer arithmetic can overflow")
        assert_same(arrow_engine(p, table, keys.load()), spark_engine(p, df, keys))
    finally:
        spark.conf.set("spark.sql.ansi.enabled", "true")
    # with ANSI on, both engines refuse the overflow (127 → 130 does not fit int8)
    got = spark_engine(p, frame(spark, table), keys)
    assert got.error and arrow_engine(p, table, keys.load()).error
