"""The gateway's CKKS keys: one key pair per dataset, in files only the gateway can read.

Layout (folder ``he_key_dir``, default ``state_dir/he_keys``; folders 0700, files 0600)::

    token.key            32 random bytes: the MAC key of view tokens (govern.privacy.he.token)
    <dataset>/keys.json  {"active": "k2", "keys": {"k1": {"created": …, "retired": …}, …}}
    <dataset>/k2.seal    the TenSEAL context *with* its secret key (no Galois keys: rebuilt)

A dataset's first encrypted view creates ``k1``. ``rotate`` makes a new active key; views made
under an older key stay releasable until that key is ``retire``d, which deletes its file — every
view made under it is then refused. Writers take an exclusive ``flock`` on ``.lock``, and the
manifest is replaced atomically, so several gateway processes can share the folder.

The secret key leaves this module only as a loaded context object handed to the release path
(in process). Nothing here logs, prints or returns key bytes; ``KeyInfo`` holds no secret.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from govern.errors import InvalidRequest, KeyMaterialError, NotFound
from govern.privacy.he.params import new_secret_context, public_context_bytes, tenseal

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class KeyInfo:
    dataset: str
    key_id: str
    created: str
    active: bool
    retired: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "key_id": self.key_id, "created": self.created,
                "active": self.active, "retired": self.retired}


class KeyStore:
    """Per-dataset CKKS keys under ``root``. Safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._mutex = threading.Lock()
        self._contexts: dict[tuple[str, str], Any] = {}
        self._public: dict[tuple[str, str, bool], bytes] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    # -- files ---------------------------------------------------------------------------------
    def _folder(self, dataset: str) -> Path:
        if not _SAFE.match(dataset):
            raise InvalidRequest(f"dataset name {dataset!r} cannot name a key folder")
        return self.root / dataset

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _write_private(path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically, mode 0600 from the first byte."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _manifest(self, dataset: str) -> dict[str, Any]:
        path = self._folder(dataset) / "keys.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {"active": None, "keys": {}}
        except (OSError, ValueError):
            raise KeyMaterialError(f"the encryption key manifest of dataset '{dataset}' is unreadable") from None

    def _save_manifest(self, dataset: str, manifest: dict[str, Any]) -> None:
        self._write_private(self._folder(dataset) / "keys.json",
                            json.dumps(manifest, indent=2, sort_keys=True).encode())

    def _new_key(self, dataset: str, manifest: dict[str, Any]) -> str:
        folder = self._folder(dataset)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        numbers = [int(k[1:]) for k in manifest["keys"] if k[1:].isdigit()]
        key_id = f"k{max(numbers, default=0) + 1}"
        ctx = new_secret_context()
        self._write_private(folder / f"{key_id}.seal", ctx.serialize(save_secret_key=True, save_galois_keys=False))
        del ctx
        manifest["keys"][key_id] = {"created": _now(), "retired": None}
        manifest["active"] = key_id
        self._save_manifest(dataset, manifest)
        return key_id

    # -- lifecycle -----------------------------------------------------------------------------
    def active(self, dataset: str) -> str:
        """The active key id of ``dataset``; the first call creates ``k1``."""
        manifest = self._manifest(dataset)
        if manifest.get("active"):
            return str(manifest["active"])
        with self._exclusive():
            manifest = self._manifest(dataset)
            if manifest.get("active"):
                return str(manifest["active"])
            return self._new_key(dataset, manifest)

    def rotate(self, dataset: str) -> str:
        """Create a new key and make it active. Older keys stay usable until retired."""
        with self._exclusive():
            return self._new_key(dataset, self._manifest(dataset))

    def retire(self, dataset: str, key_id: str) -> None:
        """Delete an inactive key: views made under it can no longer be released."""
        with self._exclusive():
            manifest = self._manifest(dataset)
            entry = manifest["keys"].get(key_id)
            if entry is None or entry.get("retired"):
                raise NotFound(f"dataset '{dataset}' has no live key '{key_id}'")
            if manifest.get("active") == key_id:
                raise InvalidRequest(f"'{key_id}' is the active key of '{dataset}': rotate first, then retire it")
            path = self._folder(dataset) / f"{key_id}.seal"
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                with path.open("r+b") as fh:  # overwrite before unlinking (best effort on SSDs)
                    fh.write(secrets.token_bytes(size))
                    fh.flush()
                    os.fsync(fh.fileno())
                path.unlink()
            entry["retired"] = _now()
            self._save_manifest(dataset, manifest)
        with self._mutex:
            self._contexts.pop((dataset, key_id), None)
            for galois in (False, True):
                self._public.pop((dataset, key_id, galois), None)

    def keys(self, dataset: str | None = None) -> list[KeyInfo]:
        if dataset:
            names = [dataset]
        else:
            names = sorted(p.name for p in self.root.glob("*") if p.is_dir()) if self.root.exists() else []
        out = []
        for name in names:
            manifest = self._manifest(name)
            for key_id, entry in sorted(manifest["keys"].items(), key=lambda kv: int(kv[0][1:] or 0)):
                out.append(KeyInfo(name, key_id, entry["created"], manifest.get("active") == key_id,
                                   entry.get("retired")))
        return out

    def is_live(self, dataset: str, key_id: str) -> bool:
        entry = self._manifest(dataset)["keys"].get(key_id)
        return entry is not None and not entry.get("retired")

    # -- material ------------------------------------------------------------------------------
    def secret_context(self, dataset: str, key_id: str, *, galois: bool = False) -> Any:
        """The loaded context *with* its secret key (in process only; cached).

        Raises KeyMaterialError when the key is retired or its file is missing: a view made
        under a retired key cannot be released.
        """
        if not self.is_live(dataset, key_id):
            raise KeyMaterialError(f"encryption key '{key_id}' of dataset '{dataset}' is retired or unknown; "
                                   "request a new encrypted view")
        with self._mutex:
            ctx = self._contexts.get((dataset, key_id))
            if ctx is None:
                path = self._folder(dataset) / f"{key_id}.seal"
                try:
                    blob = path.read_bytes()
                except OSError:
                    raise KeyMaterialError(f"encryption key '{key_id}' of dataset '{dataset}' is missing") from None
                ctx = tenseal().context_from(blob)
                del blob
                self._contexts[(dataset, key_id)] = ctx
        if galois and not ctx.has_galois_keys():
            with self.lock(dataset, key_id):  # never while another thread uses this context
                if not ctx.has_galois_keys():
                    ctx.generate_galois_keys()
        return ctx

    def public_context(self, dataset: str, key_id: str, *, galois: bool = False) -> bytes:
        """The serialized public context (public key, relinearization keys, and Galois keys
        only when asked: they are ~35 MB at N=8192)."""
        key = (dataset, key_id, galois)
        with self._mutex:
            blob = self._public.get(key)
        if blob is None:
            ctx = self.secret_context(dataset, key_id, galois=galois)
            with self.lock(dataset, key_id):
                blob = public_context_bytes(ctx, galois=galois)
            with self._mutex:
                self._public[key] = blob
        return blob

    def lock(self, dataset: str, key_id: str) -> threading.Lock:
        """One lock per key: operations on a shared SEAL context are serialized."""
        with self._mutex:
            return self._locks.setdefault((dataset, key_id), threading.Lock())

    def token_key(self) -> bytes:
        """The MAC key of view tokens (created on first use, 0600)."""
        path = self.root / "token.key"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with self._exclusive():
                if not path.exists():
                    self._write_private(path, secrets.token_bytes(32))
                data = path.read_bytes()
        if len(data) < 32:
            raise KeyMaterialError("the view token key is unusable")
        return data

    def __repr__(self) -> str:
        return f"KeyStore({str(self.root)!r})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
