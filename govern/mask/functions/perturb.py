"""Keyed, deterministic perturbation: ``randomized_response`` (5), ``noise`` (6), ``date_shift`` (7).

Randomness comes from HMAC, not from a generator: ``u = first 52 bits of HMAC(subkey(purpose),
unit_text || 0x1f || value_text) / 2**52``. The same value of the same subject always gets the
same perturbation, so reading a column many times and averaging does not remove the noise,
and both engines agree bit for bit. ``unit_text`` is the privacy-unit column's canonical text
('' when there is none or it is null).

* ``noise {scale}``: ``x + (2u − 1)·scale``; integers get ``x + floor((2u − 1)·scale + 0.5)``,
  which equals ``floor(v + 0.5)`` for ``v = x + (2u − 1)·scale`` but stays exact for large x,
  clamped to the column type's range (a ``uint8`` 3 with noise −7 reads 0, never an error: a
  count or an age near a bound stays a valid value of its type).
* ``date_shift {max_days, by?}``: every date of one subject moves by the same
  ``d = floor(u·(2·max_days + 1)) − max_days`` days, u keyed on the subject alone, so intervals
  between a subject's events survive. ``by`` names the subject column instead of the unit.
* ``randomized_response {p, categories}``: keep the value when ``u1 < p`` *and it is one of
  the categories*, else ``categories[floor(u2·k)]``; u1, u2 are disjoint 52-bit slices of one
  HMAC. A value outside the categories is always replaced: shown, it would be certainly true
  and identify its rare holders (a diagnosis missing from the list is the disclosure itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govern.errors import MaskError
from govern.mask import function
from govern.mask.function import MaskContext, MaskFunction, SqlContext
from govern.mask.functions._common import (
    canonical_text,
    check_int,
    check_keys,
    check_number,
    hex_sql,
    keyed_uniforms,
    keyed_uniforms_joined,
    num_lit,
    plain,
    sql_text,
    str_lit,
    uniform_sql,
    unit_text,
    unit_text_sql,
)

_SEP = "\x1f"
_MAX_SHIFT_DAYS = 1_000_000


def _uniforms(values: pa.Array, purpose: str, ctx: MaskContext, slices: int = 1) -> list[np.ndarray]:
    """The keyed uniforms of ``unit_text || 0x1f || value_text`` (module docstring)."""
    return keyed_uniforms_joined(unit_text(values, ctx, None), canonical_text(values), _SEP, purpose, ctx, slices)


def _message_sql(expr: str, ctx: SqlContext) -> str:
    return f"({unit_text_sql(ctx, None)} || chr(31) || {sql_text(expr)})"


def _unit_inputs(params: Mapping[str, Any], unit: str | None) -> list[str]:
    name = params.get("by") or unit
    return [name] if name else []


def _validity(arr: pa.Array) -> pa.Buffer | None:
    return None if arr.null_count == 0 else pc.is_valid(arr).buffers()[1]


# -- noise --------------------------------------------------------------------------------------
def _noise_arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    arr = plain(values)
    (u,) = _uniforms(arr, "noise", ctx)
    noise = (2 * u - 1) * float(params["scale"])
    if pa.types.is_floating(arr.type):
        x = arr.cast(pa.float64()).fill_null(0).to_numpy()
        out = pa.Array.from_buffers(pa.float64(), len(arr), [_validity(arr), pa.py_buffer(x + noise)],
                                    null_count=arr.null_count)
        return out.cast(arr.type, safe=False)
    lo, hi = _int_range(arr.type)
    # A delta beyond hi - lo clamps to the same bound as hi - lo does: clip it, so it stays exact.
    delta = np.clip(np.floor(noise + 0.5), -float(hi - lo), float(hi - lo))
    if arr.type.bit_width < 64:  # x + delta fits an int64
        x = arr.cast(pa.int64()).fill_null(0).to_numpy()
        y = np.clip(x + delta.astype(np.int64), lo, hi).astype(arr.type.to_pandas_dtype())
        return pa.Array.from_buffers(arr.type, len(arr), [_validity(arr), pa.py_buffer(y)], null_count=arr.null_count)
    if pa.types.is_signed_integer(arr.type) and float(np.abs(delta).max(initial=0)) < 2.0**62:
        try:  # the common case: no overflow, plain int64 arithmetic
            return pc.add_checked(arr, pa.array(delta.astype(np.int64)))
        except pa.ArrowInvalid:
            pass
    wide = pa.decimal128(22, 0)  # exact for any 64-bit value plus a delta of at most 2**64
    y = pc.add(arr.cast(wide), pa.array(delta).cast(wide)).cast(wide)
    y = pc.max_element_wise(y, pa.scalar(Decimal(lo), wide), skip_nulls=False)
    y = pc.min_element_wise(y, pa.scalar(Decimal(hi), wide), skip_nulls=False)
    return y.cast(arr.type)


def _int_range(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    return (0, 2**bits - 1) if pa.types.is_unsigned_integer(t) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


_SQL_INT_TYPES = {"TINYINT": pa.int8(), "SMALLINT": pa.int16(), "INTEGER": pa.int32(), "BIGINT": pa.int64(),
                  "UTINYINT": pa.uint8(), "USMALLINT": pa.uint16(), "UINTEGER": pa.uint32(), "UBIGINT": pa.uint64()}


def _int_bound_sql(expr: str, which: int) -> str:
    """The lower (0) or upper (1) bound of ``expr``'s integer type, as a HUGEINT."""
    cases = " ".join(f"WHEN '{name}' THEN CAST('{_int_range(t)[which]}' AS HUGEINT)"
                     for name, t in _SQL_INT_TYPES.items())
    return f"(CASE typeof({expr}) {cases} END)"


def _noise_sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    u = uniform_sql(hex_sql(_message_sql(expr, ctx), "noise", ctx))
    noise = f"((2 * {u} - 1) * {num_lit(float(params['scale']))})"
    span = num_lit(2.0**64)  # at least hi - lo of every type: clipping the delta there changes no result
    delta = f"CAST(greatest(least(floor({noise} + 0.5), {span}), -{span}) AS HUGEINT)"
    clamped = f"least(greatest(CAST({expr} AS HUGEINT) + {delta}, {_int_bound_sql(expr, 0)}), {_int_bound_sql(expr, 1)})"
    return (f"(CASE WHEN typeof({expr}) IN ('FLOAT', 'DOUBLE') "
            f"THEN cast_to_type(CAST({expr} AS DOUBLE) + {noise}, {expr}) "
            f"WHEN {expr} IS NULL THEN NULL "  # least/greatest skip NULLs: keep a NULL a NULL
            f"ELSE cast_to_type({clamped}, {expr}) END)")


def _noise_validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, {"scale"}, problems)
    check_number(params, "scale", problems)
    return problems


def _noise_applies(t: pa.DataType, params: Mapping[str, Any]) -> str | None:
    vt = t.value_type if pa.types.is_dictionary(t) else t
    return "half-precision floats are not supported" if pa.types.is_float16(vt) else None


NOISE = MaskFunction(
    name="noise", rank=6, accepts=frozenset({function.INTEGER, function.FLOAT}),
    arrow=_noise_arrow, sql=_noise_sql, validate=_noise_validate, applies=_noise_applies,
    result_type=lambda t, params: t.value_type if pa.types.is_dictionary(t) else t,
    strictness=lambda params: (-float(params.get("scale", 0)),),
    inputs=_unit_inputs,
    doc="Deterministic bounded noise: x + (2u-1)*scale, u keyed on (subject, value).",
)


# -- date_shift ---------------------------------------------------------------------------------
_UNIT_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _shift_arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    arr = plain(values)
    m = int(params["max_days"])
    (u,) = keyed_uniforms(unit_text(arr, ctx, params.get("by")), "date_shift", ctx)
    days = (np.floor(u * (2 * m + 1)) - m).astype(np.int64)
    t = arr.type
    if pa.types.is_date32(t):
        storage, per_day = pa.int32(), 1
    elif pa.types.is_date64(t):
        storage, per_day = pa.int64(), 86_400_000
    else:
        storage, per_day = pa.int64(), _UNIT_PER_DAY[t.unit]
    try:
        shifted = pc.add_checked(arr.cast(storage).cast(pa.int64()), pa.array(days * per_day))
        return shifted.cast(storage).cast(t)
    except pa.ArrowInvalid as exc:
        raise MaskError(f"date_shift: result out of range for {t}: {exc}") from None


def _shift_sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    m = int(params["max_days"])
    u = uniform_sql(hex_sql(unit_text_sql(ctx, params.get("by")), "date_shift", ctx))
    days = f"(CAST(floor({u} * {2 * m + 1}) AS BIGINT) - {m})"
    return f"cast_to_type({expr} + to_microseconds({days} * 86400000000), {expr})"


def _shift_validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, {"max_days", "by"}, problems)
    check_int(params, "max_days", problems, maximum=_MAX_SHIFT_DAYS)
    if "by" in params and (not isinstance(params["by"], str) or not params["by"]):
        problems.append("by must be a column name")
    return problems


DATE_SHIFT = MaskFunction(
    name="date_shift", rank=7, accepts=frozenset({function.DATE, function.TIMESTAMP}),
    arrow=_shift_arrow, sql=_shift_sql, validate=_shift_validate,
    result_type=lambda t, params: t.value_type if pa.types.is_dictionary(t) else t,
    strictness=lambda params: (-int(params.get("max_days", 0)),),
    inputs=_unit_inputs,
    doc="Shift every date of one subject by the same keyed number of days in ±max_days.",
)


# -- randomized_response ------------------------------------------------------------------------
def _rr_arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    text = canonical_text(values).cast(pa.string())
    cats = list(params["categories"])
    u1, u2 = _uniforms(text, "rr", ctx, slices=2)
    pick = np.minimum(np.floor(u2 * len(cats)), len(cats) - 1).astype(np.int64)
    categories = pa.array(cats, pa.string())
    replaced = categories.take(pa.array(pick))
    listed = pc.is_in(text, value_set=categories).to_numpy(zero_copy_only=False)  # null: False
    out = pc.if_else(pa.array((u1 < float(params["p"])) & listed), text, replaced)
    return pc.if_else(pc.is_valid(text), out, pa.scalar(None, pa.string()))


def _rr_sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    digest = hex_sql(_message_sql(expr, ctx), "rr", ctx)
    k = len(params["categories"])
    cats = "[" + ", ".join(str_lit(c) for c in params["categories"]) + "]"
    pick = f"CAST(least(floor({uniform_sql(digest, 1)} * {k}), {k - 1}) AS BIGINT) + 1"
    listed = ", ".join(str_lit(c) for c in params["categories"])
    return (f"(CASE WHEN {expr} IS NULL THEN NULL WHEN {uniform_sql(digest, 0)} < {num_lit(float(params['p']))} "
            f"AND CAST({expr} AS VARCHAR) IN ({listed}) THEN CAST({expr} AS VARCHAR) ELSE {cats}[{pick}] END)")


def _rr_validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, {"p", "categories"}, problems)
    p = params.get("p")
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
        problems.append("p must be a number in (0, 1]")
    cats = params.get("categories")
    if not isinstance(cats, list | tuple) or not cats or not all(isinstance(c, str) for c in cats):
        problems.append("categories must be a non-empty list of strings")
    return problems


RANDOMIZED_RESPONSE = MaskFunction(
    name="randomized_response", rank=5, accepts=frozenset({function.STRING}),
    arrow=_rr_arrow, sql=_rr_sql, validate=_rr_validate,
    result_type=lambda t, params: pa.string(),
    strictness=lambda params: (float(params.get("p", 1)),),
    inputs=_unit_inputs,
    doc="Keep a listed category with probability p, else (and always for any other value) a keyed uniform pick among categories.",
)
