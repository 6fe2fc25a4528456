"""Signed checkpoints: the chain's head, anchored where the store's writer cannot forge it.

The hash chain shows any edit, deletion or reordering *inside* the log, but not a cut tail: a
writer of the store can delete the newest records and move the store's own ``chain_head`` row,
and every remaining link still holds. So after each group commit the gateway appends one line
to a checkpoint file kept *outside* the store (setting ``audit_checkpoint_file``, default
``<state_dir>/audit.checkpoints``)::

    {"first":41,"hash":"…","key":"k1","seq":57,"sig":"…","time":"2025-06-01T12:00:00.123Z","v":1}

``seq``/``hash`` name the newest record committed; ``first`` is the first seq of that commit
(records ``first..seq`` were appended by this gateway). ``sig`` is an Ed25519 signature over
the other fields. The signing key is ``HKDF(masking key, info="audit-checkpoint")`` of masking
key ``key``: it never reaches the store, and its public half (``govern audit public-key``) lets
anyone verify without holding a secret. Because ``hash`` commits to every record before it, one
valid checkpoint pins the whole prefix of the log up to ``seq``.

Verification (:func:`govern.audit.verify.verify_chain`) then fails when the log ends before a
checkpoint, is empty while checkpoints exist, or holds at a checkpoint's seq a record with
another hash; and when any line of the file is not a validly signed checkpoint.

Lines are appended with ``O_APPEND`` under ``flock`` (several gateway processes on one host may
share the file) and fsynced before the appends they cover return. A last line that a crash cut
short (no newline, not a valid checkpoint) is ignored; any other malformed line is a failure.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from govern.audit.record import canonical_json
from govern.errors import AuditError, KeyMaterialError
from govern.mask.keys import KeyRing

DEFAULT_FILE = "audit.checkpoints"
SUBKEY = "audit-checkpoint"
"""``KeyRing.subkey`` purpose of the signing seed (distinct from every mask's)."""
_DOMAIN = b"govern audit checkpoint v1\n"
_FIELDS = frozenset({"v", "first", "seq", "hash", "time", "key", "sig"})


@dataclass(frozen=True)
class Checkpoint:
    """One verified line of the checkpoint file."""

    first: int
    seq: int
    hash: str
    time: str
    key: str
    line: int  # 1-based line number in the file, for messages


@dataclass(frozen=True)
class CheckpointSet:
    """What the file holds: verified checkpoints (sorted by seq), or the first bad line."""

    checkpoints: tuple[Checkpoint, ...] = ()
    problem: str | None = None

    @property
    def newest(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None


def signing_key(keys: KeyRing, key_id: str | None = None) -> Ed25519PrivateKey:
    """The Ed25519 key that signs checkpoints under masking key ``key_id`` (default: active)."""
    return Ed25519PrivateKey.from_private_bytes(keys.subkey(SUBKEY, key_id))


def public_keys(keys: KeyRing) -> dict[str, Ed25519PublicKey]:
    """Every key id of the ring with its checkpoint-verifying public key."""
    return {kid: signing_key(keys, kid).public_key() for kid in keys.ids}


def encode_public_key(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def decode_public_key(text: str, key_id: str) -> Ed25519PublicKey:
    """A public key as ``govern audit public-key`` prints it (base64 of the 32 raw bytes)."""
    try:
        raw = base64.b64decode(text.strip().removeprefix("base64:"), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"audit public key {key_id!r} is not base64 of 32 bytes") from None


def _message(body: Mapping[str, object]) -> bytes:
    return _DOMAIN + canonical_json({k: body[k] for k in sorted(body) if k != "sig"}).encode()


@dataclass(repr=False)
class Anchor:
    """Where checkpoints go and how they are signed and checked.

    ``signer`` is ``(key id, private key)``; None for a verifier that holds only public keys
    (``govern audit verify`` with ``audit_public_keys``). ``keys`` are the public keys that
    checks accept, by key id (the signer's own is added).
    """

    path: Path
    signer: tuple[str, Ed25519PrivateKey] | None = None
    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    fsync: bool = True
    _fd: int | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.signer is not None:
            kid, private = self.signer
            self.keys = {**self.keys, kid: private.public_key()}

    def __repr__(self) -> str:  # key ids only, never key material
        signs = f"signs with {self.signer[0]!r}, " if self.signer else ""
        return f"Anchor({str(self.path)!r}, {signs}checks {sorted(self.keys)!r})"

    @classmethod
    def from_keys(cls, path: Path, keys: KeyRing, *, extra: Mapping[str, Ed25519PublicKey] = {},
                  fsync: bool = True) -> Anchor:
        """Sign with the ring's active key; accept every key id the ring (or ``extra``) has."""
        return cls(path, (keys.active, signing_key(keys)), {**public_keys(keys), **extra}, fsync)

    @property
    def can_check(self) -> bool:
        return bool(self.keys)

    # -- writing --------------------------------------------------------------------------------
    def line(self, first: int, seq: int, hash_: str, time: str) -> bytes:
        if self.signer is None:
            raise AuditError("audit checkpoints: this log holds no signing key")
        kid, private = self.signer
        body: dict[str, object] = {"v": 1, "first": first, "seq": seq, "hash": hash_, "time": time,
                                   "key": kid}
        body["sig"] = base64.b64encode(private.sign(_message(body))).decode()
        return (canonical_json(body) + "\n").encode()

    def open(self) -> None:
        """Open the file for appending (creating it and its folder, mode 0600) if it is not
        open yet: proves checkpoints can be written. Raises ``OSError``."""
        with self._lock:
            self._open()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def write(self, first: int, seq: int, hash_: str, time: str) -> None:
        """Append one signed checkpoint and (by default) fsync it. Raises ``OSError``."""
        data = self.line(first, seq, hash_, time)
        with self._lock:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    os.write(fd, data)
                    if self.fsync:
                        os.fsync(fd)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                self._fd = None
                os.close(fd)
                raise

    def is_empty(self) -> bool:
        try:
            return self.path.stat().st_size == 0
        except FileNotFoundError:
            return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- reading --------------------------------------------------------------------------------
    def read(self) -> CheckpointSet:
        """Every checkpoint of the file, each signature checked; the first bad line is a
        problem (a missing file is an empty set)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return CheckpointSet()
        except OSError as exc:
            return CheckpointSet(problem=f"checkpoint file cannot be read ({exc.strerror})")
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" after the final newline; else a line a crash cut short
        found: list[Checkpoint] = []
        for number, raw in enumerate(lines, 1):
            checked = self._check(raw, number)
            if isinstance(checked, str):
                return CheckpointSet(problem=checked)
            found.append(checked)
        last = self._check(torn, len(lines) + 1) if torn else None
        if isinstance(last, Checkpoint):  # complete but for its newline: keep it
            found.append(last)
        found.sort(key=lambda c: (c.seq, c.line))
        return CheckpointSet(tuple(found))

    def _check(self, raw: bytes, number: int) -> Checkpoint | str:
        where = f"checkpoint file line {number}"
        try:
            body = json.loads(raw)
        except ValueError:
            return f"{where}: not a checkpoint"
        if not isinstance(body, dict) or set(body) != _FIELDS or body["v"] != 1:
            return f"{where}: not a checkpoint"
        first, seq, hash_, time, kid, sig = (body[k] for k in ("first", "seq", "hash", "time", "key", "sig"))
        if not (isinstance(first, int) and isinstance(seq, int) and 1 <= first <= seq
                and all(isinstance(v, str) for v in (hash_, time, kid, sig))):
            return f"{where}: not a checkpoint"
        if canonical_json(body).encode() != raw:
            return f"{where}: not in canonical form (edited)"
        key = self.keys.get(kid)
        if key is None:
            known = ", ".join(sorted(self.keys)) or "none"
            return (f"{where}: signed with key {kid!r}, which this verifier does not hold "
                    f"(keys: {known}; set audit_public_keys or the masking key)")
        try:
            key.verify(base64.b64decode(sig, validate=True), _message(body))
        except (InvalidSignature, binascii.Error, ValueError):
            return f"{where}: bad signature (forged or edited)"
        return Checkpoint(first, seq, hash_, time, kid, number)
