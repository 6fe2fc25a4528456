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

from collections.abc import Iterable

import numpy as np

from govern.privacy.rows import row_digests

__all__ = ["contains", "digest_set", "row_digests"]


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
