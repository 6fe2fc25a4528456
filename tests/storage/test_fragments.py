"""Where a fragment's row groups lie in a stored Parquet file (govern.storage.fragments.stored_span):
those bytes and the footer are all a reader needs to decode exactly those rows."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govern.storage.fragments import stored_span
from tests.storage.test_scan import _table


def _file(**options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(_table(1_000), sink, row_group_size=100, **options)
    return sink.getvalue()


@pytest.mark.parametrize("options", [{}, {"compression": "zstd"}, {"use_dictionary": False},
                                     {"compression": "none", "write_statistics": False}])
@pytest.mark.parametrize("groups", [(0, 1), (3, 7), (9, 10), (0, 10)])
def test_the_span_and_the_footer_decode_to_exactly_the_row_groups(options, groups) -> None:
    data = _file(**options)
    parquet = pq.ParquetFile(pa.BufferReader(data))
    span = stored_span(parquet.metadata, groups, len(data), data[-8:])
    assert span is not None and span.rows == 100 * (groups[1] - groups[0])
    # every other byte of the file replaced: a reader that needed one would fail or differ
    sparse = bytearray(b"\xa5" * len(data))
    sparse[:4] = data[:4]
    sparse[span.begin:span.end] = data[span.begin:span.end]
    sparse[span.footer_begin:] = data[span.footer_begin:]
    got = pq.ParquetFile(pa.BufferReader(bytes(sparse))).read_row_groups(list(range(*groups)))
    assert got.equals(parquet.read_row_groups(list(range(*groups))))
    assert (span.end - span.begin) + (len(data) - span.footer_begin) < len(data) or groups == (0, 10)


def test_not_a_parquet_tail_gives_no_span() -> None:
    data = _file()
    parquet = pq.ParquetFile(pa.BufferReader(data))
    assert stored_span(parquet.metadata, (0, 1), len(data), b"\x00" * 8) is None
    assert stored_span(parquet.metadata, (2, 2), len(data), data[-8:]) is None  # no row group
