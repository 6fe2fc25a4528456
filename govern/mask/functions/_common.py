"""Helpers shared by the mask families: canonical text, keyed bits, SQL literals, validation.

Canonical text is what keyed masks feed to HMAC. Both engines must produce the same bytes, so it
is defined as DuckDB's ``CAST(x AS VARCHAR)`` and reproduced on the Arrow side: Arrow's cast
agrees for strings, integers, decimals, booleans and dates from year 1 on; dates before year 1
are rewritten to DuckDB's ``0044-03-15 (BC)`` form; floats go through the native ``float_text``
(float32 is widened to double in both engines first).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govern.errors import MaskError
from govern.mask import function
from govern.mask.function import MaskContext, SqlContext
from govern.mask.hmac import float_text, hmac_digest, hmac_digest_joined, hmac_hex

TWO52 = 4503599627370496  # 2**52: uniforms are 52-bit integers / 2**52, exact in a double
_FIRST_AD_DAY = -719162  # 0001-01-01 as days since the epoch
UNIT_TEXT_FAMILIES = frozenset(
    {function.STRING, function.INTEGER, function.FLOAT, function.DECIMAL, function.DATE, function.BOOLEAN}
)

__all__ = [
    "canonical_text",
    "check_int",
    "check_keys",
    "check_number",
    "digest_uniforms",
    "hex_sql",
    "hmac_hex",
    "keyed_uniforms",
    "keyed_uniforms_joined",
    "num_lit",
    "plain",
    "sql_text",
    "str_lit",
    "threads",
    "uniform_sql",
    "unit_text",
    "unit_text_sql",
]


# -- Arrow side -----------------------------------------------------------------------------
def plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous, non-dictionary array (views cast to their plain form)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    return arr


def canonical_text(values: pa.Array) -> pa.Array:
    """Values as DuckDB's ``CAST(x AS VARCHAR)`` would print them (string/large_string)."""
    arr = plain(values)
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr
    if pa.types.is_floating(t):
        if pa.types.is_float16(t):
            raise MaskError("half-precision floats are not supported by keyed masks")
        return float_text(arr)
    if pa.types.is_date(t):
        text = pc.cast(arr, pa.string())
        days = pc.cast(arr, pa.date32()).cast(pa.int32())
        bc = pc.less(days, _FIRST_AD_DAY)
        if not pc.any(bc).as_py():
            return text
        year = pc.cast(pc.utf8_slice_codeunits(text, 0, -6), pa.int64())
        bc_text = pc.binary_join_element_wise(
            pc.utf8_lpad(pc.cast(pc.subtract(1, year), pa.string()), 4, "0"),
            pc.utf8_slice_codeunits(text, -6), " (BC)", "",
        )
        return pc.if_else(bc, bc_text, text)
    if pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return pc.cast(arr, pa.string())
    raise MaskError(f"no canonical text for type {t}")


def threads(ctx: MaskContext) -> int:
    return max(1, int(getattr(ctx, "threads", 0) or min(4, os.cpu_count() or 1)))


def unit_text(values: pa.Array, ctx: MaskContext, by: str | None) -> pa.Array:
    """Text of the privacy-unit column per row; '' when there is no unit or it is null."""
    name = by or ctx.privacy_unit
    if name is None:
        return pa.nulls(len(values), pa.string()).fill_null("")
    try:
        unit = ctx.inputs[name]
    except KeyError:
        raise MaskError(f"the engine did not pass the privacy-unit column '{name}'") from None
    if len(unit) != len(values):
        raise MaskError(f"privacy-unit column '{name}' has another length than the masked column")
    if function.type_family(unit.type) not in UNIT_TEXT_FAMILIES:
        raise MaskError(f"privacy-unit column '{name}' of type {unit.type} cannot key a mask")
    key = ("unit_text", name, len(unit))
    text = ctx.cache.get(key)
    if text is None:  # noise, randomized_response and date_shift of one batch share it
        text = ctx.cache[key] = pc.fill_null(canonical_text(unit), "")
    return text


def digest_uniforms(digests: pa.Array, slices: int = 1) -> list[np.ndarray]:
    """``slices`` disjoint uniforms in [0, 1) per row: 52-bit slices of the digest / 2**52."""
    raw = np.frombuffer(digests.buffers()[1], np.uint8)[digests.offset * 32 : (digests.offset + len(digests)) * 32]
    rows = raw.reshape(-1, 32)
    out = []
    for s in range(slices):
        bit = 52 * s
        byte, shift = divmod(bit, 8)  # read 8 bytes from `byte`, drop `shift` leading bits
        word = np.ascontiguousarray(rows[:, byte : byte + 8]).view(">u8").ravel().astype(np.uint64)
        bits = (word << np.uint64(shift)) >> np.uint64(12) if shift else word >> np.uint64(12)
        out.append(bits.astype(np.float64) / TWO52)
    return out


def keyed_uniforms(message: pa.Array, purpose: str, ctx: MaskContext, slices: int = 1) -> list[np.ndarray]:
    return digest_uniforms(hmac_digest(message, ctx.keys.subkey(purpose), threads(ctx)), slices)


def keyed_uniforms_joined(first: pa.Array, second: pa.Array, sep: str, purpose: str, ctx: MaskContext,
                          slices: int = 1) -> list[np.ndarray]:
    """:func:`keyed_uniforms` of ``first || sep || second`` (``binary_join_element_wise``), without
    building the joined strings."""
    return digest_uniforms(hmac_digest_joined(first, second, sep, ctx.keys.subkey(purpose), threads(ctx)), slices)


# -- SQL side -------------------------------------------------------------------------------
def str_lit(value: str) -> str:
    """A SQL string literal (not for secrets: those go through ``SqlContext.bind``)."""
    return "'" + value.replace("'", "''") + "'"


def num_lit(value: float | int) -> str:
    """An exact numeric literal: integers as is, floats parsed by DuckDB from their repr."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    return str(value) if isinstance(value, int) else f"CAST('{float(value)!r}' AS DOUBLE)"


def sql_text(expr: str) -> str:
    """Canonical text in DuckDB; FLOAT is widened to DOUBLE like the Arrow side does."""
    return f"(CASE WHEN typeof({expr}) = 'FLOAT' THEN CAST(CAST({expr} AS DOUBLE) AS VARCHAR) ELSE CAST({expr} AS VARCHAR) END)"


def hex_sql(message_sql: str, purpose: str, ctx: SqlContext) -> str:
    """Lowercase hex HMAC-SHA-256(subkey(purpose), message) written with DuckDB's sha256:
    sha256(K^opad || unhex(sha256(K^ipad || m))). The padded keys are bound parameters."""
    key = ctx.keys.subkey(purpose).ljust(64, b"\0")
    ipad = ctx.bind(bytes(b ^ 0x36 for b in key))
    opad = ctx.bind(bytes(b ^ 0x5C for b in key))
    return f"sha256({opad} || unhex(sha256({ipad} || encode({message_sql}))))"


def uniform_sql(hexdigest_sql: str, index: int = 0) -> str:
    """The ``index``-th 52-bit slice of a hex digest as a DOUBLE in [0, 1)."""
    return f"(CAST(CAST(('0x' || substr({hexdigest_sql}, {1 + 13 * index}, 13)) AS BIGINT) AS DOUBLE) / CAST({TWO52} AS DOUBLE))"


def unit_text_sql(ctx: SqlContext, by: str | None) -> str:
    name = by or ctx.privacy_unit
    return "''" if name is None else f"coalesce({sql_text(ctx.column(name))}, '')"


# -- validation -----------------------------------------------------------------------------
def check_int(params: Mapping[str, Any], name: str, problems: list[str], *, minimum: int = 0,
              required: bool = True, maximum: int | None = None) -> None:
    if name not in params:
        if required:
            problems.append(f"{name} is required")
        return
    v = params[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum is not None and v > maximum):
        rng = f"between {minimum} and {maximum}" if maximum is not None else (
            "a non-negative integer" if minimum == 0 else f"an integer ≥ {minimum}")
        problems.append(f"{name} must be {rng}")


def check_number(params: Mapping[str, Any], name: str, problems: list[str], *, positive: bool = True,
                 maximum: float = 1e15, required: bool = True) -> None:
    if name not in params:
        if required:
            problems.append(f"{name} is required")
        return
    v = params[name]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or (
        v <= 0 if positive else v < 0) or v > maximum:
        problems.append(f"{name} must be a {'positive' if positive else 'non-negative'} number ≤ {maximum:g}")


def check_keys(params: Mapping[str, Any], allowed: set[str], problems: list[str]) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        problems.append(f"unknown parameter(s): {', '.join(extra)}")
