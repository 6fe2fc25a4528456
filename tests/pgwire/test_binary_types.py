"""The wire server's binary encoders agree with psycopg's own binary loaders (property tests):
what govern sends in binary format is read back by a real client as the value it encoded."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import adapt
from psycopg.pq import Format

from govern.pgwire.types import column_encoder, pg_type_of

TRANSFORMER = adapt.Transformer()


def roundtrip(values: list, arrow_type: pa.DataType) -> list:
    """Encode a column as govern does (binary), load each value with psycopg's loader."""
    oid = pg_type_of(arrow_type).oid
    loader = TRANSFORMER.get_loader(oid, Format.BINARY)
    encoded = column_encoder(arrow_type, True)(pa.array(values, arrow_type))
    return [None if v is None else loader.load(v) for v in encoded]


dates = st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31))
numerics = st.decimals(allow_nan=False, allow_infinity=False, places=4,
                       min_value=Decimal("-1e20"), max_value=Decimal("1e20"))
timestamps = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
durations = st.timedeltas(min_value=dt.timedelta(days=-10**6), max_value=dt.timedelta(days=10**6))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), dates), max_size=20))
def test_dates(values) -> None:
    assert roundtrip(values, pa.date32()) == values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), numerics), max_size=20))
def test_numerics(values) -> None:
    out = roundtrip(values, pa.decimal128(30, 4))
    assert out == [None if v is None else v.quantize(Decimal("0.0001")) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), timestamps), max_size=20))
def test_timestamps(values) -> None:
    assert roundtrip(values, pa.timestamp("us")) == values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), durations), max_size=20))
def test_intervals_from_durations(values) -> None:
    assert roundtrip(values, pa.duration("us")) == values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-1000, 1000), st.integers(-10**5, 10**5),
                          st.integers(-10**15, 10**15)), max_size=10))
def test_intervals_with_months(values) -> None:
    arrow = [(m, d, n * 1000) for m, d, n in values]
    # psycopg reads a month as 30 days and a year (12 months) as 365, as PostgreSQL's own
    # EXTRACT(EPOCH) does
    # (whole years truncated toward zero)
    expected = [dt.timedelta(days=int(m / 12) * 365 + (m - 12 * int(m / 12)) * 30 + d, microseconds=n)
                for m, d, n in values]
    assert roundtrip(arrow, pa.month_day_nano_interval()) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)), max_size=8)),
                max_size=10))
def test_int_arrays(values) -> None:
    assert roundtrip(values, pa.list_(pa.int32())) == values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                                              blacklist_characters="\x00"))),
                         max_size=6), max_size=10))
def test_text_arrays(values) -> None:
    assert roundtrip(values, pa.list_(pa.string())) == values


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(dates, max_size=5), max_size=5), st.lists(st.lists(numerics, max_size=5), max_size=5))
def test_date_and_numeric_arrays(date_lists, numeric_lists) -> None:
    assert roundtrip(date_lists, pa.list_(pa.date32())) == date_lists
    out = roundtrip(numeric_lists, pa.list_(pa.decimal128(30, 4)))
    assert out == [[v.quantize(Decimal("0.0001")) for v in row] for row in numeric_lists]
