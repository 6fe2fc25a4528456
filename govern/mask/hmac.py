"""Keyed HMAC-SHA-256 over Arrow string/binary arrays, backed by the native kernel ``_hmac``.

Why a kernel: pseudonyms (``hash``) and all derived randomness (``noise``, ``date_shift``,
``randomized_response``, the ``tokenize`` IV) cost one HMAC per row; the kernel does it with two
SHA-256 compressions per short value, without the GIL, on several threads.

Arrays are passed to the kernel as their raw buffers plus ``array.offset``, so slices cost no
copy; chunked arrays are processed chunk by chunk; dictionary arrays hash their dictionary once
and ``take`` the result. Output validity is the input's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import govern.mask._hmac as _hmac  # native kernel (setup.py); no stubs

__all__ = ["float_text", "hmac_digest", "hmac_digest_joined", "hmac_hex"]

HEX_CHARS = 32  # the pseudonym keeps 128 bits of the HMAC
_INT32_MAX = 2**31 - 1


def hmac_hex(array: pa.Array | pa.ChunkedArray, key: bytes, prefix: str = "", threads: int = 1) -> pa.Array:
    """``prefix`` + first 32 lowercase hex chars of HMAC-SHA-256(key, value) for every value.

    Returns ``pa.string()`` (``pa.large_string()`` only if the output would exceed 2 GiB).
    Null in, null out.
    """
    pre = prefix.encode()
    width = len(pre) + HEX_CHARS

    def one(arr: pa.Array) -> pa.Array:
        n = len(arr)
        raw = _hmac.hmac_hex(*_kernel_args(arr), key, pre, max(1, threads))
        large = n * width > _INT32_MAX
        offsets = np.arange(n + 1, dtype=np.int64 if large else np.int32) * width
        return pa.Array.from_buffers(
            pa.large_string() if large else pa.string(), n,
            [_validity(arr), pa.py_buffer(offsets), pa.py_buffer(raw)], null_count=arr.null_count,
        )

    return _map(array, one)


def hmac_digest(array: pa.Array | pa.ChunkedArray, key: bytes, threads: int = 1) -> pa.FixedSizeBinaryArray:
    """Raw 32-byte HMAC-SHA-256(key, value) per row (null rows are null)."""

    def one(arr: pa.Array) -> pa.Array:
        raw = _hmac.hmac_digest(*_kernel_args(arr), key, max(1, threads))
        return pa.Array.from_buffers(
            pa.binary(32), len(arr), [_validity(arr), pa.py_buffer(raw)], null_count=arr.null_count
        )

    return _map(array, one)


def hmac_digest_joined(first: pa.Array, second: pa.Array, sep: str, key: bytes,
                       threads: int = 1) -> pa.FixedSizeBinaryArray:
    """Raw 32-byte HMAC-SHA-256(key, first || sep || second) per row: exactly
    ``hmac_digest(pc.binary_join_element_wise(first, second, sep), key)``, without building
    the joined strings. A row is null when either side is."""
    a, b = _flat(first), _flat(second)
    if len(a) != len(b):
        raise ValueError("hmac_digest_joined needs two arrays of the same length")
    n = len(a)
    if a.null_count or b.null_count:
        valid = pc.and_(pc.is_valid(a), pc.is_valid(b))
        validity = valid.buffers()[1] if valid.offset == 0 else pc.is_valid(valid).buffers()[1]
        null_count = n - pc.sum(valid).as_py() if n else 0
    else:
        validity, null_count = None, 0
    oa, da, _, off_a, _, wa = _kernel_args(a)
    ob, db, _, off_b, _, wb = _kernel_args(b)
    raw = _hmac.hmac_digest_joined(oa, da, off_a, wa, ob, db, off_b, wb, validity, n, sep.encode(), key,
                                   max(1, threads))
    return pa.Array.from_buffers(pa.binary(32), n, [validity, pa.py_buffer(raw)], null_count=null_count)


def _flat(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    arr = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return _plain(arr)


def float_text(array: pa.Array) -> pa.StringArray:
    """Floating-point values as DuckDB's ``CAST(DOUBLE AS VARCHAR)`` prints them.

    Arrow's float→string cast uses another format ("1" vs "1.0", "1e-7" vs "1e-07"), so the
    canonical text hashed by ``noise`` and friends comes from here instead. float32 values are
    widened to double first (the SQL forms do the same).
    """
    arr = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if not (pa.types.is_float32(arr.type) or pa.types.is_float64(arr.type)):
        raise TypeError(f"float_text needs float32/float64, got {arr.type}")
    offsets, data = _hmac.float_text(arr.buffers()[1], arr.offset, len(arr), pa.types.is_float32(arr.type))
    return pa.Array.from_buffers(
        pa.string(), len(arr), [_validity(arr), pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=arr.null_count,
    )


# -- helpers ---------------------------------------------------------------------------------
def _map(array: pa.Array | pa.ChunkedArray, one) -> pa.Array:  # type: ignore[no-untyped-def]
    if isinstance(array, pa.ChunkedArray):
        if array.num_chunks == 1:
            return _map(array.chunk(0), one)
        parts = [_map(c, one) for c in array.chunks]
        if not parts:
            return one(pa.array([], pa.string()))
        return pa.concat_arrays(parts)
    if pa.types.is_dictionary(array.type):
        return one(_plain(array.dictionary)).take(array.indices)
    return one(_plain(array))


def _plain(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return arr
    if pa.types.is_string_view(t):
        return arr.cast(pa.string())
    if pa.types.is_binary_view(t):
        return arr.cast(pa.binary())
    raise TypeError(f"HMAC kernel needs string or binary values, got {t}")


def _kernel_args(arr: pa.Array) -> tuple[object, object, object, int, int, int]:
    bufs = arr.buffers()
    width = 8 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else 4
    validity = bufs[0] if arr.null_count else None
    offsets = bufs[1] if bufs[1] is not None else pa.py_buffer(bytes(width))
    return offsets, bufs[2], validity, arr.offset, len(arr), width


def _validity(arr: pa.Array) -> pa.Buffer | None:
    """The input's validity bitmap re-based to offset 0 (outputs always start at bit 0)."""
    if arr.null_count == 0:
        return None
    bitmap = arr.buffers()[0]
    if arr.offset == 0:
        return bitmap
    if arr.offset % 8 == 0:
        return bitmap.slice(arr.offset // 8)
    return pc.is_valid(arr).buffers()[1]
