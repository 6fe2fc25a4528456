"""The native HMAC kernel against Python's ``hmac``, on every shape of Arrow input."""

from __future__ import annotations

import hashlib
import hmac as py_hmac

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govern.mask import _hmac
from govern.mask.hmac import float_text, hmac_digest, hmac_digest_joined, hmac_hex

KEY = bytes(range(100, 148))


def reference(values: list, key: bytes = KEY) -> list[bytes | None]:
    return [None if v is None else py_hmac.new(key, v.encode() if isinstance(v, str) else v, hashlib.sha256).digest()
            for v in values]


def shapes(arr: pa.Array) -> list[pa.Array | pa.ChunkedArray]:
    """The same values as plain, sliced, large, chunked and dictionary arrays."""
    n = len(arr)
    out = [arr, arr.cast(pa.large_string() if pa.types.is_string(arr.type) else pa.large_binary())]
    if n > 2:
        out += [arr.slice(1), arr.slice(3, n - 4) if n > 4 else arr.slice(2),
                pa.chunked_array([arr.slice(0, n // 2), arr.slice(n // 2)])]
    if pa.types.is_string(arr.type):
        out += [arr.dictionary_encode(), arr.cast(pa.string_view())]
    return out


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.none() | st.text(max_size=80), max_size=40), key_len=st.sampled_from([32, 48, 64, 65, 100]),
       prefix=st.sampled_from(["", "k1:", "rotation-2024:"]))
def test_kernel_matches_python_hmac(values: list, key_len: int, prefix: str) -> None:
    key = (KEY * 3)[:key_len]
    arr = pa.array(values, pa.string())
    for shaped in shapes(arr):
        vals = shaped.to_pylist()
        want = reference(vals, key)
        digest = hmac_digest(shaped, key, threads=2)
        digest.validate(full=True)
        assert digest.type == pa.binary(32)
        assert digest.to_pylist() == want
        hexed = hmac_hex(shaped, key, prefix, threads=2)
        hexed.validate(full=True)
        assert hexed.to_pylist() == [None if d is None else prefix + d.hex()[:32] for d in want]


def test_binary_input_and_empty_arrays() -> None:
    vals = [b"\x00\xff", b"", None, bytes(range(256))]
    assert hmac_digest(pa.array(vals, pa.binary()), KEY).to_pylist() == reference(vals)
    assert len(hmac_hex(pa.array([], pa.string()), KEY, "k:")) == 0
    assert hmac_digest(pa.chunked_array([], pa.string()), KEY).to_pylist() == []


def test_large_input_uses_threads_and_matches() -> None:
    rng = np.random.default_rng(1)
    values = [f"user{i}@example{rng.integers(100)}.com" if i % 97 else None for i in range(50_000)]
    arr = pa.array(values).slice(13)
    want = [None if d is None else "p:" + d.hex()[:32] for d in reference(arr.to_pylist())]
    assert hmac_hex(arr, KEY, "p:", threads=4).to_pylist() == want
    assert hmac_hex(arr, KEY, "p:", threads=1).equals(hmac_hex(arr, KEY, "p:", threads=3))


def test_malformed_offsets_raise_instead_of_reading_out_of_bounds() -> None:
    offsets = pa.py_buffer(np.array([0, 3, 1_000_000], np.int32).tobytes())
    with pytest.raises(ValueError, match="outside its data"):
        _hmac.hmac_digest(offsets, pa.py_buffer(b"abcdef"), None, 0, 2, 4, KEY, 1)
    with pytest.raises(ValueError, match="too short"):
        _hmac.hmac_digest(offsets, pa.py_buffer(b"abcdef"), None, 0, 5, 4, KEY, 1)


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.none() | st.text(max_size=60), st.none() | st.text(max_size=60)), max_size=40),
       sep=st.sampled_from(["\x1f", "", "::"]), start=st.integers(0, 3), large=st.booleans())
def test_joined_digest_is_the_digest_of_the_joined_strings(pairs: list, sep: str, start: int, large: bool) -> None:
    """hmac_digest_joined(a, b) == hmac_digest(a || sep || b) row by row — nulls, slices, messages
    across the one-block fast path (55 bytes), int64 offsets — with never a joined copy."""
    kind = pa.large_string() if large else pa.string()
    a = pa.array([x for x, _ in pairs], kind).slice(min(start, len(pairs)))
    b = pa.array([y for _, y in pairs], pa.string()).slice(min(start, len(pairs)))
    want = hmac_digest(pc.binary_join_element_wise(a.cast(pa.string()), b, sep), KEY)
    got = hmac_digest_joined(a, b, sep, KEY)
    assert got.equals(want) and got.null_count == want.null_count


def test_joined_digest_on_many_rows_threads_and_chunks() -> None:
    a = pa.chunked_array([[f"u{i % 977}" for i in range(30_000)], [None, "x" * 70]])
    b = pa.array([str(i * 0.25) for i in range(30_002)]).dictionary_encode()
    want = hmac_digest(pc.binary_join_element_wise(a.combine_chunks(), b.dictionary_decode(), "\x1f"), KEY)
    assert hmac_digest_joined(a, b, "\x1f", KEY, threads=3).equals(want)
    with pytest.raises(ValueError, match="same length"):
        hmac_digest_joined(pa.array(["a"]), pa.array(["a", "b"]), "", KEY)


def test_joined_kernel_checks_offsets() -> None:
    good = pa.py_buffer(np.array([0, 1, 2], np.int32).tobytes())
    bad = pa.py_buffer(np.array([0, 3, 1_000_000], np.int32).tobytes())
    data = pa.py_buffer(b"abcdef")
    with pytest.raises(ValueError, match="outside its data"):
        _hmac.hmac_digest_joined(good, data, 0, 4, bad, data, 0, 4, None, 2, b"", KEY, 1)
    with pytest.raises(ValueError, match="too short"):
        _hmac.hmac_digest_joined(good, data, 0, 4, good, data, 0, 4, None, 5, b"", KEY, 1)


def test_non_string_input_is_refused() -> None:
    with pytest.raises(TypeError):
        hmac_hex(pa.array([1, 2]), KEY, "")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.none() | st.floats(allow_nan=True), max_size=30), st.booleans())
def test_float_text_is_duckdbs_double_text(values: list, as_float32: bool) -> None:
    arr = pa.array(values, pa.float32() if as_float32 else pa.float64())
    con = duckdb.connect()
    con.register("t", pa.table({"x": arr}))
    want = con.sql("SELECT CAST(CAST(x AS DOUBLE) AS VARCHAR) AS s FROM t").to_arrow_table()["s"].combine_chunks()
    assert float_text(arr).equals(want)
    assert float_text(arr.slice(min(1, len(arr)))).equals(want.slice(min(1, len(arr))))


def _repr_text(x: float) -> str:
    if x != x:
        return "-nan" if np.signbit(x) else "nan"
    return repr(x)


def test_float_text_is_repr_on_every_path_of_the_formatter() -> None:
    """The GIL-free formatter has exact fast paths (<= 15 digits; 16-17 digits in long double)
    and hands the rest to Python's repr: each path, and the edges between them, against repr."""
    rng = np.random.default_rng(3)
    pow2 = [2.0**e for e in range(-1074, 1024)]
    pow10 = [float(f"1e{e}") for e in range(-325, 309)]
    edges = pow2 + pow10 + [float(np.nextafter(x, d)) for x in pow2 + pow10 for d in (0.0, np.inf)]
    values = [
        *edges,
        *rng.integers(0, 2**64, 100_000, dtype=np.uint64).view(np.float64).tolist(),  # any bits
        *rng.random(50_000).tolist(),  # 16-17 digits
        *np.round(rng.lognormal(7, 2, 50_000), 2).tolist(),  # money: <= 15 digits
        *(rng.integers(1, 10**9, 20_000) * 10.0 ** rng.integers(-40, 40, 20_000)).tolist(),
        *rng.integers(1, 2**52, 20_000, dtype=np.uint64).view(np.float64).tolist(),  # subnormals
        *[float(i) for i in rng.integers(-(2**62), 2**62, 20_000)],
        1e16, 9999999999999998.0, 1e-4, 9.999999999999999e-05, 123456789012345.0, 1234567890123456.0,
        12345678901234567.0, 0.1, 0.30000000000000004, 1 / 3, 5e-324, 2.2250738585072014e-308,
        1.7976931348623157e308, 0.0, -0.0, float("inf"), float("-inf"), float("nan"), -float("nan"),
    ]
    values += [-v for v in values[:: 7]]
    got = float_text(pa.array(values, pa.float64())).to_pylist()
    bad = [(v, g) for v, g in zip(values, got, strict=True) if g != _repr_text(v)]
    assert bad == []
    f32 = rng.integers(0, 2**32, 50_000, dtype=np.uint32).view(np.float32)
    got = float_text(pa.array(f32, pa.float32())).to_pylist()
    assert [g for v, g in zip(f32.tolist(), got, strict=True) if g != _repr_text(v)] == []


def test_every_length_around_the_single_block_fast_path() -> None:
    # lengths 0..130 bytes cross the one-block (≤ 55) / multi-block boundary and two block edges
    values = [bytes((i * 7 + j) % 256 for j in range(i)) for i in range(131)]
    assert hmac_digest(pa.array(values, pa.binary()), KEY).to_pylist() == reference(values)
