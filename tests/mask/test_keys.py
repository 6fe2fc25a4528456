"""KeyRing: parsing key text and key files, rotation, subkeys, and never showing a key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import SecretStr

from govern.config import Settings
from govern.errors import KeyMaterialError
from govern.mask.keys import KeyRing, parse_key

RAW = "correct horse battery staple, but longer!"  # 41 bytes of text
B64 = base64.b64encode(bytes(range(32))).decode()


def settings(**kw) -> Settings:
    kw.setdefault("masking_key", None)
    return Settings(**kw)


@pytest.mark.parametrize(("text", "material"), [
    (RAW, RAW.encode()),
    (f"base64:{B64}", bytes(range(32))),
    (f"hex:{bytes(range(40)).hex()}", bytes(range(40))),
    (f"  hex:{bytes(range(32)).hex()}\n", bytes(range(32))),
])
def test_key_text_forms(text: str, material: bytes) -> None:
    assert parse_key(text) == material


@pytest.mark.parametrize(("text", "message"), [
    ("short-secret-text", "too short"),
    ("base64:!!!notbase64!!!", "not valid base64"),
    ("hex:zz" + "00" * 40, "not valid hex"),
    ("hex:" + "00" * 8, "too short"),
])
def test_bad_key_text_errors_never_contain_the_text(text: str, message: str) -> None:
    with pytest.raises(KeyMaterialError, match=message) as info:
        parse_key(text)
    assert text.split(":")[-1] not in str(info.value)
    assert text.split(":")[-1] not in repr(info.value.extra)


def test_from_settings_with_inline_key() -> None:
    ring = KeyRing.from_settings(settings(masking_key=SecretStr(RAW), masking_key_id="k7"))
    assert ring.active == "k7" and ring.ids == ("k7",)


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(KeyMaterialError, match="no masking key configured"):
        KeyRing.from_settings(settings())


def test_key_file_with_rotation(tmp_path: Path) -> None:
    f = tmp_path / "keys.txt"
    f.write_text(f"# old keys stay to reverse tokens\nk1: {RAW}\nk2: base64:{B64}\n\n")
    ring = KeyRing.from_settings(settings(masking_key_file=f, masking_key_id="k2"))
    assert ring.active == "k2" and set(ring.ids) == {"k1", "k2"}
    assert ring.subkey("hash", "k1") != ring.subkey("hash", "k2")
    # the same material under settings and file is fine; different material is refused
    same = KeyRing.from_settings(settings(masking_key_file=f, masking_key=SecretStr(f"base64:{B64}"), masking_key_id="k2"))
    assert same.subkey("hash") == ring.subkey("hash")
    with pytest.raises(KeyMaterialError, match="differently"):
        KeyRing.from_settings(settings(masking_key_file=f, masking_key=SecretStr(RAW), masking_key_id="k2"))


def test_key_file_single_bare_key_takes_the_configured_id(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text(f"base64:{B64}\n")
    assert KeyRing.from_settings(settings(masking_key_file=f, masking_key_id="prod")).ids == ("prod",)


@pytest.mark.parametrize(("content", "message"), [
    (f"k1: {RAW}\n", "not in the key file"),  # active id k9 absent
    (f"k9: {RAW}\nk9: {RAW}\n", "appears twice"),
    (f"base64:{B64}\nk8: {RAW}\n", "every line as 'id: key'"),
    ("k9: tooshort\n", "too short"),
])
def test_bad_key_files(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "keys"
    f.write_text(content)
    with pytest.raises(KeyMaterialError, match=message) as info:
        KeyRing.from_settings(settings(masking_key_file=f, masking_key_id="k9"))
    assert RAW not in str(info.value) and B64 not in str(info.value) and "tooshort" not in str(info.value)


def test_unreadable_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="cannot read"):
        KeyRing.from_settings(settings(masking_key_file=tmp_path / "missing", masking_key_id="k1"))


def test_subkeys_are_independent_per_purpose_and_key() -> None:
    ring = KeyRing({"a": b"A" * 32, "b": b"B" * 32}, "a")
    purposes = ["hash", "noise", "tokenize-mac", "tokenize-enc", "date_shift", "rr"]
    subkeys = {ring.subkey(p) for p in purposes} | {ring.subkey(p, "b") for p in purposes}
    assert len(subkeys) == 2 * len(purposes) and all(len(k) == 32 for k in subkeys)
    assert b"A" * 32 not in subkeys
    assert ring.subkey("hash") == KeyRing({"a": b"A" * 32}, "a").subkey("hash")  # deterministic
    with pytest.raises(KeyMaterialError, match="unknown masking key id"):
        ring.subkey("hash", "zz")


def test_repr_and_str_show_ids_only() -> None:
    ring = KeyRing({"k1": b"S" * 32}, "k1")
    for text in (repr(ring), str(ring), f"{ring}"):
        assert "k1" in text and "SSSS" not in text and "b'" not in text


@pytest.mark.parametrize("bad_id", ["", "has:colon", "hex", "x" * 65, "sp ace"])
def test_key_ids_are_checked(bad_id: str) -> None:
    with pytest.raises(KeyMaterialError):
        KeyRing({bad_id: b"x" * 32}, bad_id)


def test_ephemeral_keys_differ() -> None:
    assert KeyRing.ephemeral().subkey("hash") != KeyRing.ephemeral().subkey("hash")
