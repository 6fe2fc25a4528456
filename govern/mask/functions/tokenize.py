"""``tokenize`` (rank 3): deterministic, reversible encryption; ``reidentify`` reverses it.

Construction (SIV-style: the IV is a MAC of the plaintext, so equal values give equal tokens and
any tampering is detected on the way back)::

    iv    = HMAC-SHA-256(subkey("tokenize-mac"), pt)[:16]
    ct    = pt XOR AES-256-CTR(subkey("tokenize-enc"), initial counter block = iv)
    token = "{key_id}:" + hex(iv || ct)

Why this shape: it is vectorizable. The IVs come from the HMAC kernel in one call; the counter
blocks of *all* rows (iv + j, 128-bit big-endian, as CTR mode increments) are built with numpy
and encrypted by ONE AES-ECB call; each row's keystream is then a contiguous slice, applied by a
numpy gather + XOR. No per-row Python, no per-row cipher object.

``reidentify`` picks the key by the id in each token, decrypts, recomputes the IV and refuses
(``MaskError``) any token that does not verify or names an unknown key: never garbage.

DuckDB has no AES, so the SQL form calls ``govern_tokenize``, a vectorized Arrow UDF registered
per connection by :func:`register_duckdb_udfs`. Only tokenize is registered: reversal stays a
separate, permissioned action (the ``reidentify`` grant), never a SQL function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from govern.errors import MaskError
from govern.mask import function
from govern.mask.function import MaskContext, MaskFunction, SqlContext
from govern.mask.functions._common import canonical_text, check_keys, threads
from govern.mask.hmac import hmac_digest

__all__ = ["TOKENIZE", "register_duckdb_udfs", "reidentify", "tokenize"]

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_TOKEN = r"^[A-Za-z0-9_.-]{1,64}:(?:[0-9a-f]{2}){16,}$"
_NIBBLE = np.full(256, 255, np.uint8)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


_SLICE = 65_536  # rows per vectorized pass: keeps per-byte index arrays cache-sized


def tokenize(values: pa.Array, keys: Any, n_threads: int = 1) -> pa.Array:
    """Tokens for string/integer values under the active key (null stays null)."""
    text = canonical_text(values).cast(pa.large_string())
    if len(text) <= _SLICE:
        return _tokenize(text, keys, n_threads)
    return pa.concat_arrays([_tokenize(text.slice(i, _SLICE), keys, n_threads) for i in range(0, len(text), _SLICE)])


def _tokenize(text: pa.Array, keys: Any, n_threads: int) -> pa.Array:
    offsets, data = _views(text)
    iv = _rows(hmac_digest(text, keys.subkey("tokenize-mac"), n_threads))[:, :16]
    ct = data ^ _keystream(keys.subkey("tokenize-enc"), iv, offsets)
    lengths = np.diff(offsets)
    raw = _interleave(iv, ct, lengths)
    hexed = np.stack([_HEX[raw >> 4], _HEX[raw & 15]], axis=1).ravel()
    hex_offsets = np.zeros(len(text) + 1, np.int64)
    np.cumsum(2 * (lengths + 16), out=hex_offsets[1:])
    body = pa.Array.from_buffers(pa.large_string(), len(text),
                                 [_validity(text), pa.py_buffer(hex_offsets), pa.py_buffer(hexed)],
                                 null_count=text.null_count)
    return pc.binary_join_element_wise(pa.scalar(keys.active + ":", pa.large_string()), body, pa.scalar("", pa.large_string())).cast(pa.string())


def reidentify(array: pa.Array | pa.ChunkedArray, keys: Any) -> pa.StringArray:
    """Plaintext (as text) of tokens; ``MaskError`` on a malformed, forged or unknown-key token."""
    tokens = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    tokens = tokens.cast(pa.string())
    ok = pc.match_substring_regex(tokens, _TOKEN)
    if pc.any(pc.invert(ok.fill_null(True))).as_py():
        raise MaskError("reidentify: malformed token")
    parts = pc.split_pattern(tokens, ":", max_splits=1)
    key_ids = pc.list_element(parts, 0)
    bodies = pc.list_element(parts, 1)
    out = pa.nulls(len(tokens), pa.string())
    for kid in pc.unique(key_ids.drop_null()).to_pylist():
        if kid not in keys:
            raise MaskError("reidentify: token made with an unknown key id")
        rows = pc.indices_nonzero(pc.equal(key_ids, kid).fill_null(False))
        mine = bodies.take(rows)
        plain = pa.concat_arrays([_decrypt(mine.slice(i, _SLICE), keys, kid) for i in range(0, len(mine), _SLICE)])
        out = pc.replace_with_mask(out, pc.equal(key_ids, kid).fill_null(False), plain)
    return out


def _decrypt(bodies: pa.Array, keys: Any, kid: str) -> pa.Array:
    offsets, data = _views(bodies.cast(pa.large_string()))
    raw = (_NIBBLE[data[0::2]] << 4) | _NIBBLE[data[1::2]]
    raw_offsets = offsets // 2
    n = len(bodies)
    starts = raw_offsets[:-1]
    iv = raw[starts[:, None] + np.arange(16)]
    lengths = np.diff(raw_offsets) - 16
    ct_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=ct_offsets[1:])
    ct = raw[_ranges(starts + 16, lengths)]
    pt = ct ^ _keystream(keys.subkey("tokenize-enc", kid), iv, ct_offsets)
    plain = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(ct_offsets), pa.py_buffer(pt)])
    check = _rows(hmac_digest(plain, keys.subkey("tokenize-mac", kid)))[:, :16]
    if not np.array_equal(check, iv):
        raise MaskError("reidentify: token does not verify (tampered or made with another key)")
    try:
        return plain.cast(pa.large_string()).cast(pa.string())
    except pa.ArrowInvalid:  # unreachable for authentic tokens
        raise MaskError("reidentify: token does not verify") from None


# -- vectorized CTR ---------------------------------------------------------------------------
def _keystream(key: bytes, iv: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Keystream bytes for rows laid out by ``offsets`` (relative, starting at 0): row i uses
    counter blocks iv_i, iv_i + 1, … (128-bit big-endian wrap-around, as AES-CTR does)."""
    lengths = np.diff(offsets)
    nblocks = (lengths + 15) // 16
    total = int(nblocks.sum())
    if total == 0:
        return np.zeros(0, np.uint8)
    first = np.zeros(len(lengths), np.int64)
    np.cumsum(nblocks[:-1], out=first[1:])
    row = np.repeat(np.arange(len(lengths)), nblocks)
    j = (np.arange(total) - first[row]).astype(np.uint64)
    hi = np.ascontiguousarray(iv[:, :8]).view(">u8").ravel().astype(np.uint64)[row]
    lo = np.ascontiguousarray(iv[:, 8:]).view(">u8").ravel().astype(np.uint64)[row]
    lo_next = lo + j
    hi = hi + (lo_next < lo).astype(np.uint64)
    counters = np.empty((total, 2), ">u8")
    counters[:, 0], counters[:, 1] = hi, lo_next
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    stream = np.frombuffer(enc.update(counters.tobytes()) + enc.finalize(), np.uint8)
    # byte k of row i sits at 16 * first[i] + k
    return stream[_ranges(16 * first, lengths)]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l), vectorized."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    begins = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=begins[1:])
    index = np.repeat(starts - begins, lengths)  # per-byte shift from output to source position
    index += np.arange(total)
    return index


def _interleave(iv: np.ndarray, ct: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Rows ``iv_i || ct_i`` back to back."""
    n = len(lengths)
    out = np.empty(16 * n + len(ct), np.uint8)
    starts = np.zeros(n, np.int64)
    np.cumsum((lengths + 16)[:-1], out=starts[1:])
    out[(starts[:, None] + np.arange(16)).ravel()] = iv.ravel()
    out[_ranges(starts + 16, lengths)] = ct
    return out


def _views(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the first row, data bytes of exactly those rows) of a large array."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + len(arr) + 1] if len(arr) else np.zeros(1, np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]


def _rows(digests: pa.Array) -> np.ndarray:
    return np.frombuffer(digests.buffers()[1], np.uint8).reshape(-1, 32)[digests.offset : digests.offset + len(digests)]


def _validity(arr: pa.Array) -> pa.Buffer | None:
    return None if arr.null_count == 0 else pc.is_valid(arr).buffers()[1]


# -- mask ---------------------------------------------------------------------------------------
def _arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    return tokenize(values, ctx.keys, threads(ctx))


def _sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    return f"govern_tokenize(CAST({expr} AS VARCHAR))"


def _validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, set(), problems)
    return problems


def register_duckdb_udfs(con: Any, keys: Any) -> None:
    """Register ``govern_tokenize(VARCHAR) -> VARCHAR`` (Arrow-vectorized) on ``con``."""
    import duckdb

    def udf(values: pa.Array | pa.ChunkedArray) -> pa.Array:
        return tokenize(values, keys, 1)

    con.create_function("govern_tokenize", udf, [duckdb.sqltype("VARCHAR")], duckdb.sqltype("VARCHAR"),
                        type="arrow", side_effects=False)


TOKENIZE = MaskFunction(
    name="tokenize", rank=3, accepts=frozenset({function.STRING, function.INTEGER}),
    arrow=_arrow, sql=_sql, validate=_validate,
    result_type=lambda t, params: pa.string(),
    doc="Deterministic reversible token: key id + hex(iv || AES-CTR ciphertext), iv = HMAC.",
)
