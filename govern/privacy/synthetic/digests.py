"""Keyed row digests: how the gateway proves a synthetic row is not a copy of a real one.

At fit time every real row's learned columns are digested (HMAC-SHA-256 under a key derived
from the masking key, first 8 bytes) and stored sorted with the model; at sampling time each
synthetic row is digested the same way and any row whose digest is in the set is rejected
before it can leave. Keyed, so the stored digests cannot be matched against guessed rows by
someone who reads the model store but not the key. A 64-bit digest collision would only
reject a harmless row (the safe direction).

Rows are compared on the *learned* columns: generated identifiers are made up, so comparing
them would make every row look new and prove nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govern.mask.hmac import hmac_digest

__all__ = ["contains", "digest_set", "row_digests"]

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


def digest_set(batches: Iterable[np.ndarray]) -> np.ndarray:
    """The sorted, de-duplicated union of digest arrays (the stored form)."""
    parts = [b for b in batches if len(b)]
    if not parts:
        return np.zeros(0, dtype=np.uint64)
    return np.unique(np.concatenate(parts))


def contains(stored: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``digests`` are in the sorted ``stored`` set."""
    if not len(stored) or not len(digests):
        return np.zeros(len(digests), dtype=bool)
    pos = np.searchsorted(stored, digests)
    pos[pos == len(stored)] = 0
    return stored[pos] == digests


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
