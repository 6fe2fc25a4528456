"""``tokenize`` (rank 3): deterministic, reversible encryption within a *domain*; ``reidentify``
reverses it, but only for the domains the caller names.

Construction (SIV-style: the IV is a MAC of the plaintext, so equal values give equal tokens and
any tampering is detected on the way back; the domain is bound into that MAC)::

    iv    = HMAC-SHA-256(subkey("tokenize-mac/" + domain), pt)[:16]
    ct    = pt XOR AES-256-CTR(subkey("tokenize-enc"), initial counter block = iv)
    token = "{key_id}:" + hex(iv || ct)

The *domain* (the mask's ``domain`` parameter; by default ``DATASET.COLUMN``, filled in by the
plan compiler) is the associated data of the MAC: its subkey is derived from it (HKDF info
``tokenize-mac/<domain>``), so a token verifies only within the domain that made it. Equal values
in two columns give equal tokens exactly when the columns share a domain (a steward's choice,
like a tokenization "data element": ``patient`` for every ``patient_id`` column, so joins work).
The token itself does not name its domain: ``reidentify`` tries the domains it is given and
refuses a token that verifies under none of them (foreign, tampered, or made with another key) —
a token taken from another dataset's column is refused, never reversed.

Why this shape: it is vectorizable. The IVs come from the HMAC kernel in one call; the counter
blocks of *all* rows (iv + j, 128-bit big-endian, as CTR mode increments) are built with numpy
and encrypted by ONE AES-ECB call; each row's keystream is then a contiguous slice, applied by a
numpy gather + XOR. No per-row Python, no per-row cipher object.

``reidentify`` picks the key by the id in each token, decrypts, recomputes the IV under each
candidate domain and refuses (``MaskError``) any token that does not verify or names an unknown
key: never garbage.

DuckDB has no AES, so the SQL form calls ``govern_tokenize(value, domain)``, a vectorized Arrow
UDF registered per connection by :func:`register_duckdb_udfs`. Only tokenize is registered:
reversal stays a separate, permissioned action (the ``reidentify`` grant), never a SQL function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from duckdb.func import PythonUDFType

from govern.errors import MaskError
from govern.mask import function
from govern.mask.function import MaskContext, MaskFunction, SqlContext
from govern.mask.functions._common import canonical_text, check_keys, str_lit, threads
from govern.mask.hmac import hmac_digest
from govern.mask.keys import KeyRing

__all__ = ["TOKENIZE", "Reversed", "register_duckdb_udfs", "reidentify", "tokenize"]

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_TOKEN = r"^[A-Za-z0-9_.-]{1,64}:(?:[0-9a-f]{2}){16,}$"
_NIBBLE = np.full(256, 255, np.uint8)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


_SLICE = 65_536  # rows per vectorized pass: keeps per-byte index arrays cache-sized
_DOMAIN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # a domain a steward writes in masking.yaml
_MAX_DOMAIN = 1024


def mac_purpose(domain: object) -> str:
    """The subkey purpose of the domain's MAC: the domain is the SIV's associated data."""
    if not isinstance(domain, str) or not domain or len(domain) > _MAX_DOMAIN:
        raise MaskError("tokenize needs a token domain (the plan compiler sets DATASET.COLUMN by default)")
    return "tokenize-mac/" + domain


def tokenize(values: pa.Array, keys: KeyRing, domain: str, n_threads: int = 1) -> pa.Array:
    """Tokens of ``domain`` for string/integer values under the active key (null stays null)."""
    purpose = mac_purpose(domain)
    text = canonical_text(values).cast(pa.large_string())
    if len(text) <= _SLICE:
        return _tokenize(text, keys, purpose, n_threads)
    return pa.concat_arrays([_tokenize(text.slice(i, _SLICE), keys, purpose, n_threads)
                             for i in range(0, len(text), _SLICE)])


def _tokenize(text: pa.Array, keys: KeyRing, mac: str, n_threads: int) -> pa.Array:
    offsets, data = _views(text)
    iv = _rows(hmac_digest(text, keys.subkey(mac), n_threads))[:, :16]
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


class Reversed(NamedTuple):
    """Plaintexts (as text) of tokens, and the domain each token verified under (null for null)."""

    values: pa.StringArray
    domains: pa.StringArray


def reidentify(array: pa.Array | pa.ChunkedArray, keys: KeyRing, domains: Sequence[str], *,
               scope: str = "the given domains") -> Reversed:
    """Reverse tokens made in one of ``domains``; ``MaskError`` on a malformed or unknown-key
    token, and on one that verifies under none of ``domains`` (taken from another domain's
    column, tampered with, or made with another key). ``scope`` names the domains' owner in
    that message (``dataset 'patients'``)."""
    tokens = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    tokens = tokens.cast(pa.string())
    candidates = list(dict.fromkeys(domains))
    purposes = [mac_purpose(d) for d in candidates]
    ok = pc.match_substring_regex(tokens, _TOKEN)
    if pc.any(pc.invert(ok.fill_null(True))).as_py():
        raise MaskError("reidentify: malformed token")
    parts = pc.split_pattern(tokens, ":", max_splits=1)
    key_ids = pc.list_element(parts, 0)
    bodies = pc.list_element(parts, 1)
    values = pa.nulls(len(tokens), pa.string())
    found = pa.nulls(len(tokens), pa.string())
    for kid in pc.unique(key_ids.drop_null()).to_pylist():
        if kid not in keys:
            raise MaskError("reidentify: token made with an unknown key id")
        mask = pc.equal(key_ids, kid).fill_null(False)
        mine = bodies.filter(mask)
        chunks = [_decrypt(mine.slice(i, _SLICE), keys, kid, candidates, purposes, scope)
                  for i in range(0, len(mine), _SLICE)]
        values = pc.replace_with_mask(values, mask, pa.concat_arrays([c[0] for c in chunks]))
        found = pc.replace_with_mask(found, mask, pa.concat_arrays([c[1] for c in chunks]))
    return Reversed(values, found)


def _decrypt(bodies: pa.Array, keys: KeyRing, kid: str, domains: list[str], purposes: list[str],
             scope: str) -> tuple[pa.Array, pa.Array]:
    """(plaintexts, domains) of token bodies made under key ``kid``."""
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
    which = np.full(n, -1, np.int64)
    for i, purpose in enumerate(purposes):
        check = _rows(hmac_digest(plain, keys.subkey(purpose, kid)))[:, :16]
        which[(which < 0) & np.all(check == iv, axis=1)] = i
    if (which < 0).any():
        raise MaskError(f"reidentify: a token does not verify in the token domains of {scope} "
                        f"({', '.join(domains) or 'none'}): it was taken from another dataset or column, "
                        "tampered with, or made with another key")
    try:
        text = plain.cast(pa.large_string()).cast(pa.string())
    except pa.ArrowInvalid:  # unreachable for authentic tokens
        raise MaskError("reidentify: token does not verify") from None
    return text, pa.array(domains, pa.string()).take(pa.array(which))


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
def _domain(params: Mapping[str, Any]) -> str:
    domain = params.get("domain")
    mac_purpose(domain)  # raises unless a usable domain
    return str(domain)


def _arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    return tokenize(values, ctx.keys, _domain(params), threads(ctx))


def _sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    return f"govern_tokenize(CAST({expr} AS VARCHAR), {str_lit(_domain(params))})"


def _validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, {"domain"}, problems)
    domain = params.get("domain")
    if domain is not None and (not isinstance(domain, str) or not _DOMAIN.fullmatch(domain)):
        problems.append("domain must be 1-128 letters, digits, '_', '.', ':' or '-' (e.g. patient)")
    return problems


def _column_defaults(params: Mapping[str, Any], column: str) -> dict[str, Any]:
    """Without a ``domain``, a column's tokens are its own: the domain is ``DATASET.COLUMN``."""
    return {**params, "domain": params.get("domain") or column}


def register_duckdb_udfs(con: duckdb.DuckDBPyConnection, keys: KeyRing) -> None:
    """Register ``govern_tokenize(value VARCHAR, domain VARCHAR) -> VARCHAR`` (Arrow-vectorized)."""
    def udf(values: pa.Array | pa.ChunkedArray, domains: pa.Array | pa.ChunkedArray) -> pa.Array:
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        domains = domains.combine_chunks() if isinstance(domains, pa.ChunkedArray) else domains
        if domains.null_count:
            raise MaskError("govern_tokenize: the domain is null")
        kinds = pc.unique(domains).to_pylist()
        if len(kinds) == 1:
            return tokenize(values, keys, kinds[0], 1)
        out = pa.nulls(len(values), pa.string())
        for domain in kinds:  # one domain per call in every plan; any mix still works
            rows = pc.equal(domains, domain)
            out = pc.replace_with_mask(out, rows, tokenize(values.filter(rows), keys, domain, 1))
        return out

    con.create_function("govern_tokenize", udf, [duckdb.sqltype("VARCHAR"), duckdb.sqltype("VARCHAR")],
                        duckdb.sqltype("VARCHAR"), type=PythonUDFType.ARROW, side_effects=False)


TOKENIZE = MaskFunction(
    name="tokenize", rank=3, accepts=frozenset({function.STRING, function.INTEGER}),
    arrow=_arrow, sql=_sql, validate=_validate,
    result_type=lambda t, params: pa.string(),
    column_defaults=_column_defaults,
    doc="Deterministic reversible token within a domain: key id + hex(iv || AES-CTR ciphertext), "
        "iv = HMAC keyed by the domain.",
)
