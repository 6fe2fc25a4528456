"""Helpers of the Spark adapter's tests: plans built by hand, the Arrow engine's answer, and
Spark's answer in the same shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

import govern_spark
from govern.errors import GovernError
from govern.mask import registry
from govern.mask.execute_arrow import execute
from govern.mask.keyfile import write_key_file
from govern.mask.keys import KeyRing
from govern.plan.model import AccessPlan, CellRule, ColumnPlan, MaskSpec, Reason, RowFilter
from govern.plan.predicates import compile_client_filter

TEST = Reason("test", "built by a test")


def key_source(directory: Path, key_id: str = "k1") -> govern_spark.KeySource:
    path = directory / "masking.key"
    if not path.exists():
        write_key_file(path, key_id)
    return govern_spark.KeySource(file=str(path), key_id=key_id)


def column(name: str, t: pa.DataType, mask: str | None = None, params: dict[str, Any] | None = None,
           action: str | None = None) -> ColumnPlan:
    if action == "withhold":
        return ColumnPlan(name, "withhold", TEST, str(t))
    if mask is None:
        return ColumnPlan(name, "keep", TEST, str(t), result_type=str(t))
    spec = MaskSpec.of(mask, params or {})
    result = registry.get(mask).result_type(t, spec.kwargs)
    return ColumnPlan(name, "mask", TEST, str(t), mask=spec, result_type=str(result))


def plan(columns: Sequence[ColumnPlan], *, rules: Sequence[tuple[str, str, str, dict[str, Any]]] = (),
         filters: Sequence[str] = (), unit: str | None = None, key_id: str | None = "k1") -> AccessPlan:
    """A plan as the compiler would write it; predicates in canonical form."""
    return AccessPlan(
        dataset="t", principal="tester", purpose="testing", action="read", columns=tuple(columns),
        row_filters=tuple(RowFilter(compile_client_filter(f).sql, TEST) for f in filters),
        cell_rules=tuple(CellRule(c, compile_client_filter(w).sql, MaskSpec.of(m, p), TEST) for c, w, m, p in rules),
        privacy_unit=unit, key_id=key_id)


@dataclass
class Outcome:
    table: pa.Table | None
    error: str | None


def arrow_engine(p: AccessPlan, table: pa.Table, keys: KeyRing) -> Outcome:
    """What the gateway's Arrow engine gives for ``p`` on ``table``."""
    try:
        return Outcome(plain(execute(p, table.to_reader(max_chunksize=7), keys).read_all()), None)
    except GovernError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")


def spark_engine(p: AccessPlan, df: DataFrame, keys: govern_spark.KeySource | None) -> Outcome:
    try:
        return Outcome(plain(govern_spark.to_arrow(govern_spark.apply_plan(df, p, keys), p)), None)
    except GovernError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a Spark job that failed (overflow and the like)
        return Outcome(None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


def frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    """``table`` as a Spark DataFrame of the exactly matching Spark types."""
    schema = govern_spark.spark_schema(table.schema)
    decoded = pa.table({n: (c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c)
                        for n, c in zip(table.column_names, table.columns, strict=True)})
    return spark.createDataFrame(decoded, schema=schema)


def plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded: an encoding is not a value (Spark has none)."""
    return pa.table({n: (c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c)
                     for n, c in zip(table.column_names, table.columns, strict=True)})


def assert_same(expected: Outcome, got: Outcome) -> None:
    if expected.error or got.error:
        assert expected.error and got.error, f"only one engine failed: arrow={expected.error!r} spark={got.error!r}"
        return
    assert expected.table is not None and got.table is not None
    assert got.table.schema.equals(expected.table.schema), f"\n{got.table.schema}\n!=\n{expected.table.schema}"
    assert got.table.equals(expected.table), _diff(expected.table, got.table)


def _diff(a: pa.Table, b: pa.Table) -> str:
    lines = [f"rows: arrow {a.num_rows}, spark {b.num_rows}"]
    for name in a.column_names:
        if a.num_rows == b.num_rows and not a[name].equals(b[name]):
            lines.append(f"{name}:\n  arrow {a[name].to_pylist()[:8]}\n  spark {b[name].to_pylist()[:8]}")
    return "\n".join(lines)
