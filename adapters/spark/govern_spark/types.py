"""Arrow types as a plan writes them ↔ Spark SQL types.

A plan records each column's Arrow type as text (``ColumnPlan.type``, e.g. ``"date32[day]"``,
``"timestamp[us, tz=UTC]"``, ``"decimal128(10, 2)"``). Spark holds a narrower set of types, so
the mapping is partial on purpose: a type Spark cannot hold exactly (unsigned integers,
half floats, nanosecond timestamps, decimal256, nested types) raises
:class:`~govern.errors.Unsupported` instead of being widened silently — a widened column would
give masks other inputs than the gateway's and so other bytes.

Timestamps: an Arrow timestamp with a time zone is an instant (Spark ``TimestampType``); one
without is a wall-clock time (Spark ``TimestampNTZType``). Spark does not keep the zone's name,
so :func:`cast_to_plan` relabels instants with the plan's zone on the way back (same instants).
"""

from __future__ import annotations

import re
from functools import lru_cache

import pyarrow as pa
from pyspark.sql import types as T

from govern.errors import Unsupported

__all__ = ["arrow_type", "cast_to_plan", "spark_schema", "spark_type"]

_SIMPLE: dict[str, pa.DataType] = {
    "null": pa.null(), "bool": pa.bool_(), "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(),
    "int64": pa.int64(), "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(),
    "uint64": pa.uint64(), "halffloat": pa.float16(), "float": pa.float32(), "double": pa.float64(),
    "string": pa.string(), "large_string": pa.large_string(), "string_view": pa.string_view(),
    "binary": pa.binary(), "large_binary": pa.large_binary(), "date32[day]": pa.date32(),
    "date64[ms]": pa.date64(),
}
_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:, tz=(.+))?\]")
_DECIMAL = re.compile(r"decimal(128|256)\((\d+), (-?\d+)\)")
_DICTIONARY = re.compile(r"dictionary<values=(.+), indices=(u?int\d+), ordered=([01])>")


@lru_cache(maxsize=512)
def arrow_type(text: str) -> pa.DataType:
    """The Arrow type a plan's type text names (``str(pa.DataType)`` read back)."""
    if text in _SIMPLE:
        return _SIMPLE[text]
    if m := _TIMESTAMP.fullmatch(text):
        return pa.timestamp(m.group(1), m.group(2))
    if m := _DECIMAL.fullmatch(text):
        make = pa.decimal128 if m.group(1) == "128" else pa.decimal256
        return make(int(m.group(2)), int(m.group(3)))
    if m := _DICTIONARY.fullmatch(text):
        return pa.dictionary(_SIMPLE[m.group(2)], arrow_type(m.group(1)), m.group(3) == "1")
    raise Unsupported(f"type {text} cannot be held exactly in Spark (the adapter maps no such type)")


def spark_type(t: pa.DataType) -> T.DataType:
    """The Spark type that holds every value of ``t`` exactly, or :class:`Unsupported`."""
    if pa.types.is_dictionary(t):
        return spark_type(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return T.StringType()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return T.BinaryType()
    if pa.types.is_boolean(t):
        return T.BooleanType()
    if pa.types.is_signed_integer(t):
        return {8: T.ByteType(), 16: T.ShortType(), 32: T.IntegerType(), 64: T.LongType()}[t.bit_width]
    if pa.types.is_float32(t):
        return T.FloatType()
    if pa.types.is_float64(t):
        return T.DoubleType()
    if pa.types.is_decimal128(t) and 0 <= t.scale <= t.precision <= 38:
        return T.DecimalType(t.precision, t.scale)
    if pa.types.is_date(t):
        return T.DateType()
    if pa.types.is_timestamp(t) and t.unit != "ns":
        return T.TimestampType() if t.tz is not None else T.TimestampNTZType()
    why = {
        "uint": "Spark has no unsigned integer types",
        "halffloat": "Spark has no half-precision floats",
        "timestamp[ns": "Spark timestamps hold microseconds, not nanoseconds",
    }
    for prefix, reason in why.items():
        if str(t).startswith(prefix):
            raise Unsupported(f"type {t} cannot be held exactly in Spark: {reason}")
    raise Unsupported(f"type {t} cannot be held exactly in Spark")


def spark_schema(schema: pa.Schema) -> T.StructType:
    """A Spark schema for an Arrow schema (to build a DataFrame from Arrow data exactly:
    ``spark.createDataFrame(table, schema=spark_schema(table.schema))`` keeps wall-clock
    timestamps as ``TimestampNTZType``)."""
    return T.StructType([T.StructField(f.name, spark_type(f.type), f.nullable) for f in schema])


def cast_to_plan(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Give Spark's Arrow output the types the plan declares.

    Only representation changes are allowed, each exact: the zone label of an instant, a
    timestamp unit the values fit (safe cast: raises if one would not), string ↔ large_string,
    date32 → date64 and plain → dictionary encoding. Anything else raises: a value-changing
    cast here would hide a difference between Spark and the gateway."""
    fields, arrays = [], []
    for name in table.column_names:
        have, want = table.schema.field(name).type, types[name]
        column = table[name]
        if have != want:
            if spark_type(have) != spark_type(want):
                raise Unsupported(f"column {name!r}: Spark produced {have}, the plan declares {want}")
            column = column.cast(want, safe=True)
        fields.append(pa.field(name, want))
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
