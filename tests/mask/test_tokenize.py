"""tokenize against an independent per-value reference; reidentify round-trips within the token's
domain and refuses tokens of other domains, tampered tokens, unknown key ids and malformed text."""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from govern.errors import MaskError
from govern.mask.functions import reidentify
from govern.mask.functions.tokenize import tokenize
from govern.mask.keys import KeyRing
from tests.mask.engines import FIXED_KEYS, connect

KEYS = FIXED_KEYS
D = "patients.patient_id"


def reference_token(value: str, keys: KeyRing, domain: str = D) -> str:
    """One value at a time, with cryptography's own AES-CTR: what the vectorized code must equal.
    The domain keys the MAC (HKDF info ``tokenize-mac/<domain>``)."""
    pt = value.encode()
    iv = hmac.new(keys.subkey("tokenize-mac/" + domain), pt, hashlib.sha256).digest()[:16]
    enc = Cipher(algorithms.AES(keys.subkey("tokenize-enc")), modes.CTR(iv)).encryptor()
    return f"{keys.active}:" + (iv + enc.update(pt) + enc.finalize()).hex()


# IVs whose low 64 bits are near 2**64 exercise the counter carry; long values span many blocks
values = st.lists(st.none() | st.text(max_size=70) | st.sampled_from(["", "é" * 40, "x" * 1000]), max_size=30)


@settings(max_examples=60, deadline=None)
@given(values)
def test_matches_reference_and_round_trips(vals: list) -> None:
    arr = pa.array(vals, pa.string())
    tokens = tokenize(arr, KEYS, D)
    assert tokens.to_pylist() == [None if v is None else reference_token(v, KEYS) for v in vals]
    back = reidentify(tokens, KEYS, ["other.column", D])
    assert back.values.to_pylist() == vals
    assert back.domains.to_pylist() == [None if v is None else D for v in vals]
    if len(arr) > 2:
        assert tokenize(arr.slice(1), KEYS, D).equals(tokens.slice(1))


@pytest.mark.parametrize("iv", [
    bytes(8) + b"\xff" * 8,  # low word wraps: carry into the high word
    b"\xff" * 16,  # the whole 128-bit counter wraps to zero
    bytes(range(16)),
])
def test_keystream_matches_aes_ctr_including_carries(iv: bytes) -> None:
    import numpy as np

    from govern.mask.functions.tokenize import _keystream

    key = KEYS.subkey("tokenize-enc")
    lengths = [0, 1, 16, 17, 100]
    ivs = np.frombuffer(iv * len(lengths), np.uint8).reshape(-1, 16)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    stream = _keystream(key, ivs, offsets).tobytes()
    for i, n in enumerate(lengths):
        enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        assert stream[offsets[i] : offsets[i + 1]] == enc.update(bytes(n))


def test_integers_tokenize_as_text() -> None:
    tokens = tokenize(pa.array([42, -7, None]), KEYS, D)
    assert reidentify(tokens, KEYS, [D]).values.to_pylist() == ["42", "-7", None]


def test_deterministic_and_key_dependent() -> None:
    a = tokenize(pa.array(["alice", "alice"]), KEYS, D).to_pylist()
    assert a[0] == a[1] and a[0].startswith("k1:")
    other = tokenize(pa.array(["alice"]), KeyRing({"k1": b"z" * 32}, "k1"), D).to_pylist()
    assert other[0] != a[0]


def test_domains_make_different_tokens_and_each_reverses_only_in_its_own() -> None:
    alice = pa.array(["alice"])
    a, b = tokenize(alice, KEYS, "patients.name"), tokenize(alice, KEYS, "staff.name")
    assert a[0] != b[0] and a.equals(tokenize(alice, KEYS, "patients.name"))
    with pytest.raises(MaskError, match="does not verify in the token domains of dataset 'staff'"):
        reidentify(a, KEYS, ["staff.name"], scope="dataset 'staff'")
    mixed = reidentify(pa.concat_arrays([a, b]), KEYS, ["staff.name", "patients.name"])
    assert mixed.values.to_pylist() == ["alice", "alice"]
    assert mixed.domains.to_pylist() == ["patients.name", "staff.name"]
    with pytest.raises(MaskError, match=r"\(none\)"):
        reidentify(a, KEYS, [])


@pytest.mark.parametrize("domain", [None, "", 7, "x" * 2000])
def test_a_token_needs_a_domain(domain) -> None:
    with pytest.raises(MaskError, match="domain"):
        tokenize(pa.array(["x"]), KEYS, domain)


def test_rotation_old_tokens_still_reverse() -> None:
    old = tokenize(pa.array(["bob"]), KEYS.with_active("k0"), D)
    new = tokenize(pa.array(["carol"]), KEYS, D)
    both = pa.concat_arrays([old, new, pa.array([None], pa.string())])
    back = reidentify(both, KEYS, [D])
    assert back.values.to_pylist() == ["bob", "carol", None] and back.domains.to_pylist() == [D, D, None]


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),  # ciphertext bit
    lambda t: t[:3] + ("0" if t[3] != "0" else "1") + t[4:],  # iv bit
    lambda t: t[:-2],  # truncated
    lambda t: t + "00",  # extended
])
def test_tampered_tokens_are_refused(tamper) -> None:
    token = tokenize(pa.array(["alice@example.com"]), KEYS, D)[0].as_py()
    with pytest.raises(MaskError, match="does not verify"):
        reidentify(pa.array(["ok", tamper(token)]).slice(1), KEYS, [D])


@pytest.mark.parametrize("bad", ["k1:zz", "no-colon", "k1:" + "ab" * 15, "k1:" + "AB" * 20, ":" + "ab" * 20])
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(MaskError, match="malformed"):
        reidentify(pa.array([bad]), KEYS, [D])


def test_unknown_key_id_is_refused() -> None:
    token = tokenize(pa.array(["x"]), KeyRing({"k9": b"q" * 32}, "k9"), D)
    with pytest.raises(MaskError, match="unknown key id"):
        reidentify(token, KEYS, [D])


def test_token_under_another_key_with_same_id_is_refused() -> None:
    token = tokenize(pa.array(["x" * 40]), KeyRing({"k1": b"q" * 32}, "k1"), D)
    with pytest.raises(MaskError, match="does not verify"):
        reidentify(token, KEYS, [D])


def test_duckdb_udf_is_the_same_function() -> None:
    con = connect(KEYS)
    arr = pa.array(["a", None, "😀", ""])
    con.register("t", pa.table({"x": arr, "d": ["p.x", "p.x", "q", "p.x"]}))
    got = con.sql("SELECT govern_tokenize(x, 'p.x') AS t FROM t").to_arrow_table()["t"].combine_chunks()
    assert got.equals(tokenize(arr, KEYS, "p.x"))
    per_row = con.sql("SELECT govern_tokenize(x, d) AS t FROM t").to_arrow_table()["t"].to_pylist()
    assert per_row == [got[0].as_py(), None, tokenize(arr.slice(2, 1), KEYS, "q")[0].as_py(), got[3].as_py()]
    names = {r[0] for r in con.sql("SELECT function_name FROM duckdb_functions() WHERE function_name LIKE 'govern_%'").fetchall()}
    assert names == {"govern_tokenize"}  # reversal is never a SQL function
