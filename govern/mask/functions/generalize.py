"""``generalize`` (rank 4): coarser values, same type.

* dates/timestamps → truncated to ``date: year|month``; tz-aware timestamps truncate in UTC in
  both engines, whatever the DuckDB session ``TimeZone``;
* integers → ``floor(x / bucket) * bucket`` in exact integer arithmetic (HUGEINT in DuckDB);
* decimals (precision ≤ 18) → the same on the unscaled integers, exact;
* floats → ``floor(x / bucket) * bucket`` in double precision, cast back to the column's type;
* strings → the first ``prefix`` code points.

The SQL form does not know the column type, so it dispatches on ``typeof(x)`` (constant-folded
by DuckDB) and casts back with ``cast_to_type(…, x)``. Results that do not fit the type raise in
both engines.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govern.errors import MaskError
from govern.mask import function
from govern.mask.function import MaskContext, MaskFunction, SqlContext
from govern.mask.functions._common import check_int, check_keys, check_number, num_lit, plain

_NUMERIC = frozenset({function.INTEGER, function.FLOAT, function.DECIMAL})
_TEMPORAL = frozenset({function.DATE, function.TIMESTAMP})
_MAX_DECIMAL_PRECISION = 18


def _arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    arr = plain(values)
    t = arr.type
    try:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return pc.utf8_slice_codeunits(arr, 0, params["prefix"]).cast(pa.string())
        if pa.types.is_timestamp(t) and t.tz is not None:
            naive = arr.cast(pa.timestamp(t.unit))  # UTC wall clock
            return pc.floor_temporal(naive, unit=params["date"]).cast(t)
        if pa.types.is_date(t) or pa.types.is_timestamp(t):
            return pc.floor_temporal(arr, unit=params["date"])
        if pa.types.is_floating(t):
            x = arr.cast(pa.float64())
            return pc.multiply(pc.floor(pc.divide(x, float(params["bucket"]))), float(params["bucket"])).cast(t)
        if pa.types.is_integer(t):
            return _integer(arr, int(params["bucket"]))
        if pa.types.is_decimal(t):
            return _decimal(arr, params["bucket"])
    except (pa.ArrowInvalid, OverflowError) as exc:
        raise MaskError(f"generalize: result does not fit type {t}: {exc}") from None
    raise MaskError(f"generalize does not apply to type {t}")


def _integer(arr: pa.Array, bucket: int) -> pa.Array:
    """x - floor_mod(x, bucket) in int64 (uint64 if unsigned); a safe cast back to the type."""
    wide = pa.uint64() if pa.types.is_unsigned_integer(arr.type) else pa.int64()
    x = arr.cast(wide)
    xs = x.fill_null(0).to_numpy()
    y = xs - np.mod(xs, np.array(bucket, xs.dtype))  # bucket ≤ 1e15 (validated)
    if (y > xs).any():  # wrapped below int64's minimum
        raise OverflowError("value out of range")
    out = pa.Array.from_buffers(wide, len(arr), [_validity(x), pa.py_buffer(y)], null_count=x.null_count)
    return out.cast(arr.type)  # safe cast: raises when the result does not fit


def _decimal(arr: pa.Array, bucket: float | int) -> pa.Array:
    """Exact floor-to-bucket on the unscaled int64 values of a decimal128(p ≤ 18, s)."""
    t = arr.type
    unit = int(decimal.Decimal(str(bucket)).scaleb(t.scale))
    words = np.frombuffer(arr.buffers()[1], np.int64)[2 * arr.offset : 2 * (arr.offset + len(arr))]
    v = words[0::2].copy()
    if arr.null_count:
        v[~pc.is_valid(arr).to_numpy(zero_copy_only=False)] = 0
    y = v - np.mod(v, unit)
    if (np.abs(y) >= 10**t.precision).any():
        raise OverflowError("value out of range")
    pairs = np.empty(2 * len(y), np.int64)
    pairs[0::2], pairs[1::2] = y, y >> 63
    return pa.Array.from_buffers(t, len(arr), [_validity(arr), pa.py_buffer(pairs)], null_count=arr.null_count)


def _validity(arr: pa.Array) -> pa.Buffer | None:
    return None if arr.null_count == 0 else pc.is_valid(arr).buffers()[1]


_INTS = "'TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'UTINYINT', 'USMALLINT', 'UINTEGER', 'UBIGINT'"


def _sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    # Every arm must bind for every column type (DuckDB binds all CASE arms before folding the
    # constant typeof tests), hence try_cast / HUGEINT / DECIMAL(38,18) operands, and every arm
    # is cast back to the column's own type so the CASE keeps it.
    x = expr
    arms = []
    if "date" in params:
        unit = "year" if params["date"] == "year" else "month"
        # DuckDB rounds TIMESTAMP_NS to microseconds: step back 1 us when that rounded up
        ts = f"try_cast({x} AS TIMESTAMP)"
        floor_us = (f"(CASE WHEN typeof({x}) = 'TIMESTAMP_NS' AND {ts} > try_cast({x} AS TIMESTAMP_NS) "
                    f"THEN {ts} - INTERVAL 1 MICROSECOND ELSE {ts} END)")
        utc = f"timezone('UTC', try_cast({x} AS TIMESTAMPTZ))"  # UTC wall clock, any session tz
        arms.append(f"WHEN typeof({x}) = 'TIMESTAMP WITH TIME ZONE' "
                    f"THEN cast_to_type(timezone('UTC', date_trunc('{unit}', {utc})), {x})")
        arms.append(f"WHEN typeof({x}) = 'DATE' OR typeof({x}) LIKE 'TIMESTAMP%' "
                    f"THEN cast_to_type(date_trunc('{unit}', {floor_us}), {x})")
    if "bucket" in params:
        b = params["bucket"]
        fb, dec = num_lit(float(b)), format(decimal.Decimal(str(b)), "f")
        d = f"try_cast({x} AS DECIMAL(38, 18))"  # lossless for precision ≤ 18
        arms.append(f"WHEN typeof({x}) IN ('FLOAT', 'DOUBLE') "
                    f"THEN cast_to_type(floor(CAST({x} AS DOUBLE) / {fb}) * {fb}, {x})")
        arms.append(f"WHEN typeof({x}) LIKE 'DECIMAL%' "
                    f"THEN cast_to_type({d} - ((({d} % {dec}) + {dec}) % {dec}), {x})")
        if float(b).is_integer():
            h, bi = f"CAST({x} AS HUGEINT)", int(b)
            arms.append(f"WHEN typeof({x}) IN ({_INTS}) "
                        f"THEN cast_to_type({h} - ((({h} % {bi}) + {bi}) % {bi}), {x})")
    if "prefix" in params:
        arms.append(f"WHEN typeof({x}) = 'VARCHAR' OR typeof({x}) LIKE 'ENUM%' "
                    f"THEN cast_to_type(left(CAST({x} AS VARCHAR), {int(params['prefix'])}), {x})")
    return f"(CASE {' '.join(arms)} END)"


def _applies(t: pa.DataType, params: Mapping[str, Any]) -> str | None:
    fam = function.type_family(t)
    if fam in _TEMPORAL:
        return None if "date" in params else "needs the 'date' parameter (year or month)"
    if fam == function.STRING:
        return None if "prefix" in params else "needs the 'prefix' parameter"
    if fam in _NUMERIC:
        if "bucket" not in params:
            return "needs the 'bucket' parameter"
        b = decimal.Decimal(str(params["bucket"]))
        vt = t.value_type if pa.types.is_dictionary(t) else t
        if fam == function.INTEGER and b != b.to_integral_value():
            return "bucket must be a whole number for integer columns"
        if fam == function.FLOAT and pa.types.is_float16(vt):
            return "half-precision floats are not supported"
        if fam == function.DECIMAL:
            if not pa.types.is_decimal128(vt) or vt.precision > _MAX_DECIMAL_PRECISION:
                return f"decimals need precision ≤ {_MAX_DECIMAL_PRECISION}"
            unit = b.scaleb(vt.scale)
            if unit != unit.to_integral_value() or unit >= 10**vt.precision:
                return f"bucket must be a multiple of 10^-{vt.scale} and fit the decimal type"
    return None


def _validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, {"date", "prefix", "bucket"}, problems)
    if not {"date", "prefix", "bucket"} & set(params):
        problems.append("give at least one of date (year|month), prefix, bucket")
    if "date" in params and params["date"] not in ("year", "month"):
        problems.append("date must be 'year' or 'month'")
    check_int(params, "prefix", problems, required=False)
    check_number(params, "bucket", problems, required=False)
    return problems


def _strictness(params: Mapping[str, Any]) -> tuple[Any, ...]:
    date_rank = {"year": 0, "month": 1}.get(params.get("date", ""), 2)
    return (date_rank, -float(params.get("bucket", 0)), params.get("prefix", 2**31))


GENERALIZE = MaskFunction(
    name="generalize", rank=4, accepts=frozenset(_NUMERIC | _TEMPORAL | {function.STRING}),
    arrow=_arrow, sql=_sql, validate=_validate, applies=_applies, strictness=_strictness,
    result_type=lambda t, params: pa.string() if function.type_family(t) == function.STRING else (
        t.value_type if pa.types.is_dictionary(t) else t),
    doc="Dates → year/month; numbers → floor to a multiple of bucket; strings → first prefix characters.",
)
