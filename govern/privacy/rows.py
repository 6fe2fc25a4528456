"""Keyed row digests: one 64-bit HMAC-SHA-256 value per row, computed in the native kernel.

Two uses, one definition: the synthetic views' copy check (``synthetic.digests``) and the DP
contribution bound's PRF (``dp.execute.bound_contributions``), which keeps each person's rows of
smallest digest so the same rows are kept on every release.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govern.mask.hmac import hmac_digest

__all__ = ["row_digests"]

_NULL = "\x00"
_SEP = "\x1f"


def row_digests(table: pa.Table | pa.RecordBatch, columns: Sequence[str], key: bytes) -> np.ndarray:
    """One uint64 digest per row of ``columns`` (canonical text per value; nulls distinct)."""
    n = table.num_rows
    if not columns:
        return np.zeros(n, dtype=np.uint64)
    parts = [_text(table.column(c)) for c in columns]
    joined = pc.binary_join_element_wise(*parts, _SEP) if len(parts) > 1 else parts[0]
    digest = hmac_digest(joined, key, threads=2)
    if isinstance(digest, pa.ChunkedArray):
        digest = digest.combine_chunks()
    raw = np.frombuffer(digest.buffers()[1], dtype=np.uint64, count=4 * n, offset=digest.offset * 32)
    return raw.reshape(n, 4)[:, 0].copy()


def _text(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if pa.types.is_floating(t):
        col = pc.add(col.cast(pa.float64()), 0.0)  # -0.0 and 0.0 are the same value
    elif pa.types.is_decimal(t):
        col = col.cast(pa.float64())
    text = col.cast(pa.string()) if not pa.types.is_string(t) else col
    # "\x01" marks a value, "\x00" a null: a null never equals any value, even "".
    return pc.fill_null(pc.binary_join_element_wise("\x01", text, ""), _NULL)
