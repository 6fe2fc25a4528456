"""Hypothesis strategies: Arrow columns of every family, with nulls, unicode, extremes."""

from __future__ import annotations

import decimal

import pyarrow as pa
from hypothesis import strategies as st

SPECIAL_TEXT = ["", " ", "a@b.com", "x@y@z.org", "no-at-sign", "😀🎉", "Zoë", "İstanbul", "\n@\n", "日本語テキスト",
                "O'Brien", "back\\slash", "tab\tand\nnewline", "ab@", "@"]
text = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=16),
    st.sampled_from(SPECIAL_TEXT),
    st.emails(),
)

INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
TEMPORAL_TYPES = [pa.date32(), pa.timestamp("s"), pa.timestamp("ms"), pa.timestamp("us"), pa.timestamp("ns")]
DECIMAL_TYPES = [pa.decimal128(12, 2), pa.decimal128(18, 4)]
FLOAT_TYPES = [pa.float32(), pa.float64()]
STRING_TYPES = [pa.string()]

_SPAN = {"s": 10**11, "ms": 10**14, "us": 10**17, "ns": 9 * 10**18}  # DuckDB's ranges, roughly


def values_for(t: pa.DataType) -> st.SearchStrategy:
    if pa.types.is_string(t):
        return text
    if pa.types.is_boolean(t):
        return st.booleans()
    if pa.types.is_integer(t):
        info_bits = t.bit_width
        lo, hi = (-(2 ** (info_bits - 1)), 2 ** (info_bits - 1) - 1) if pa.types.is_signed_integer(t) else (0, 2**info_bits - 1)
        return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, -1 if lo < 0 else 1, 7]))
    if pa.types.is_floating(t):
        width = 32 if pa.types.is_float32(t) else 64
        return st.one_of(st.floats(allow_nan=False, width=width, max_value=2.0**100, min_value=-(2.0**100)),
                         st.sampled_from([0.0, -0.0, 1.0, 0.1, 1e16, 1e-5, 123456.789]))
    if pa.types.is_decimal(t):
        limit = decimal.Decimal(10) ** (t.precision - t.scale) - 1
        return st.decimals(min_value=-limit, max_value=limit, places=t.scale, allow_nan=False, allow_infinity=False)
    if pa.types.is_date32(t):  # ~700 BC-ish … year 10000+, plus the era boundary
        return st.one_of(st.integers(-1_000_000, 3_000_000), st.sampled_from([-719162, -719163, 0, -1]))
    if pa.types.is_timestamp(t):
        span = _SPAN[t.unit]
        return st.one_of(st.integers(-span, span), st.sampled_from([0, -1, 1]))
    raise AssertionError(t)


@st.composite
def columns(draw: st.DrawFn, t: pa.DataType, min_size: int = 0, max_size: int = 25) -> pa.Array:
    vals = draw(st.lists(st.none() | values_for(t), min_size=min_size, max_size=max_size))
    if pa.types.is_date32(t) or pa.types.is_timestamp(t):
        return pa.array(vals, pa.int32() if pa.types.is_date32(t) else pa.int64()).cast(t)
    return pa.array(vals, t)


@st.composite
def tables(draw: st.DrawFn, t: pa.DataType) -> pa.Table:
    x = draw(columns(t))
    unit_type = draw(st.sampled_from([pa.string(), pa.int64()]))
    units = draw(st.lists(st.none() | values_for(unit_type) if unit_type == pa.int64() else
                          st.none() | st.sampled_from(["p1", "p2", "", "Zoë", "😀"]),
                          min_size=len(x), max_size=len(x)))
    table = pa.table({"x": x, "u": pa.array(units, unit_type)})
    if draw(st.booleans()) and len(table) > 2:  # sliced input: non-zero array offsets
        table = table.slice(1)
    return table
