"""Masking keys: master keys by id, one active, and per-purpose subkeys derived with HKDF.

Why a ring: pseudonyms and tokens carry the id of the key that made them (``k2:…``). Rotating
means adding a new id and making it active; old ids stay so tokens made under them can still be
reversed by ``reidentify``. Why subkeys: ``hash``, ``noise``, ``tokenize``… each use
``subkey(purpose)`` = HKDF-SHA256(master, info=purpose), so one mask's output says nothing about
another's key, and the master key itself never reaches a mask, a SQL parameter or a log line.

Key text (setting ``masking_key`` or a line of ``masking_key_file``) is ``base64:…``, ``hex:…``
or raw text of at least 32 bytes. A key file holds one bare key, or ``id: key`` lines (``#``
comments allowed) for rotation. No error message ever contains key material.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from govern.errors import KeyMaterialError

__all__ = ["MIN_KEY_BYTES", "KeyRing", "parse_key"]

MIN_KEY_BYTES = 32
MAX_KEY_BYTES = 4096
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ID_LINE = re.compile(r"^([A-Za-z0-9_.-]{1,64})\s*:\s*(\S.*)$")
_RESERVED_IDS = frozenset({"base64", "hex"})
_HKDF_SALT = b"govern/mask/subkey/v1"


class KeyRing:
    """Master keys ``{key_id: bytes}`` with an ``active`` id. ``repr`` shows ids only."""

    __slots__ = ("_active", "_keys", "_subkeys")

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        for key_id, material in keys.items():
            _check_id(key_id)
            if not isinstance(material, bytes | bytearray) or not MIN_KEY_BYTES <= len(material) <= MAX_KEY_BYTES:
                raise KeyMaterialError(
                    f"masking key {key_id!r} must be {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes"
                )
        if active not in keys:
            raise KeyMaterialError(f"the active masking key id {active!r} has no key material")
        self._keys = {k: bytes(v) for k, v in keys.items()}
        self._active = active
        self._subkeys: dict[tuple[str, str], bytes] = {}

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Any) -> KeyRing:
        """Keys from ``masking_key`` (SecretStr) and/or ``masking_key_file``; active id is
        ``masking_key_id``. Both may be set: the file then holds older ids for rotation."""
        active = settings.masking_key_id
        keys: dict[str, bytes] = {}
        if settings.masking_key_file is not None:
            keys.update(_read_key_file(Path(settings.masking_key_file), active))
        if settings.masking_key is not None:
            material = parse_key(settings.masking_key.get_secret_value(), f"masking key {active!r}")
            if active in keys and not secrets.compare_digest(keys[active], material):
                raise KeyMaterialError(
                    f"masking key {active!r} is set both in the settings and in the key file, differently"
                )
            keys[active] = material
        if not keys:
            raise KeyMaterialError(
                "no masking key configured: set GOVERN_MASKING_KEY (base64:…, hex:… or ≥32 bytes of "
                "text) or GOVERN_MASKING_KEY_FILE"
            )
        if active not in keys:
            raise KeyMaterialError(
                f"the active masking key id {active!r} (masking_key_id) is not in the key file; "
                f"ids found: {', '.join(sorted(keys))}"
            )
        return cls(keys, active)

    @classmethod
    def ephemeral(cls, key_id: str = "ephemeral") -> KeyRing:
        """A random key that lives as long as the process (tests, demos)."""
        return cls({key_id: secrets.token_bytes(32)}, key_id)

    # -- use -----------------------------------------------------------------------------------
    @property
    def active(self) -> str:
        return self._active

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def subkey(self, purpose: str, key_id: str | None = None) -> bytes:
        """32-byte key for one use (``"hash"``, ``"noise"``…) under ``key_id`` (default active)."""
        kid = self._active if key_id is None else key_id
        if kid not in self._keys:
            raise KeyMaterialError(f"unknown masking key id {kid!r}")
        cached = self._subkeys.get((kid, purpose))
        if cached is None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=purpose.encode())
            cached = self._subkeys[(kid, purpose)] = hkdf.derive(self._keys[kid])
        return cached

    def with_active(self, key_id: str) -> KeyRing:
        """The same keys with another active id (rotation in tests and tools)."""
        return KeyRing(self._keys, key_id)

    def __repr__(self) -> str:
        return f"KeyRing(active={self._active!r}, ids={sorted(self._keys)!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickle key material by accident
        raise TypeError("KeyRing cannot be pickled")


def parse_key(text: str, what: str = "masking key") -> bytes:
    """Decode ``base64:…``, ``hex:…`` or raw text; at least 32 bytes. Errors name ``what`` only."""
    text = text.strip()
    try:
        if text.startswith("base64:"):
            material = base64.b64decode(text[7:].strip(), validate=True)
        elif text.startswith("hex:"):
            material = bytes.fromhex(text[4:].strip())
        else:
            material = text.encode()
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"{what} is not valid {text.split(':', 1)[0]}") from None
    if len(material) < MIN_KEY_BYTES:
        raise KeyMaterialError(f"{what} is too short: need at least {MIN_KEY_BYTES} bytes")
    if len(material) > MAX_KEY_BYTES:
        raise KeyMaterialError(f"{what} is too long: at most {MAX_KEY_BYTES} bytes")
    return material


def _read_key_file(path: Path, default_id: str) -> dict[str, bytes]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyMaterialError(f"cannot read masking key file {path.name}: {exc.strerror}") from None
    keys: dict[str, bytes] = {}
    bare = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _ID_LINE.match(line)
        if m and m.group(1) not in _RESERVED_IDS:
            key_id, key_text = m.group(1), m.group(2)
        else:
            key_id, key_text = default_id, line
            bare += 1
        if key_id in keys:
            raise KeyMaterialError(f"{path.name}:{lineno}: key id {key_id!r} appears twice")
        keys[key_id] = parse_key(key_text, f"{path.name}:{lineno}: key {key_id!r}")
    if bare > 1 or (bare and len(keys) > 1):
        raise KeyMaterialError(f"{path.name}: with several keys, write every line as 'id: key'")
    return keys


def _check_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not _ID.fullmatch(key_id) or key_id in _RESERVED_IDS:
        raise KeyMaterialError(
            "masking key ids are 1-64 characters of letters, digits, '_', '.', '-' (not 'hex'/'base64')"
        )
