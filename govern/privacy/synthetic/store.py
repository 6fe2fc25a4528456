"""The model store: fitted synthesizers, their reports, and the fit jobs, under
``state_dir/synthetic``.

A fitted SDV synthesizer is a pickle, and loading a pickle runs code. So models are loaded
only from here, by a key the gateway computed itself (hex, never a path from a request), and
only after their bytes check out: every file's HMAC-SHA-256 is recorded in the model's
``manifest.json`` at save time, and the manifest carries an HMAC of itself, both under a key
derived from the masking key (``subkey("synthetic-store")``). A file planted or edited in the
store — even with a matching plain digest — fails the check and is never unpickled; the
request fails closed. Layout::

    synthetic/models/<key>/manifest.json   what was fitted, reports, HMACs of the files below
    synthetic/models/<key>/model.pkl       the synthesizer (cloudpickle)
    synthetic/models/<key>/digests.npy     keyed digests of the real rows (exact-copy check)
    synthetic/models/<key>/pools.json      generated-identifier pools
    synthetic/jobs/<key>.json              fit job status
    synthetic/reports/<id>.json            the report of each synthetic response

A model directory appears atomically (written aside, then renamed), so a reader never sees
half a model; folders are created 0700. The store stays bounded: after a fit, only the newest
:data:`KEEP_MODELS` models of the dataset are kept, and only the newest :data:`KEEP_REPORTS`
reports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from govern.errors import NotFound, SyntheticError
from govern.mask.keys import KeyRing

__all__ = ["ModelStore"]

_KEY = re.compile(r"[0-9a-f]{16,64}")
_REPORT = re.compile(r"[0-9a-f]{32}")
_FILES = ("model.pkl", "digests.npy", "pools.json")
KEEP_MODELS = 3  # newest models kept per dataset; older data versions' models are deleted
KEEP_REPORTS = 100_000  # newest response reports kept


class ModelStore:
    """Authenticated files under ``root``. ``keys`` is the masking KeyRing (subkeys only)."""

    def __init__(self, root: Path, keys: KeyRing) -> None:
        self.root = Path(root)
        self._keys = keys
        self._saved = 0

    # -- models --------------------------------------------------------------------------------
    def model_dir(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise NotFound("unknown synthetic model")
        return self.root / "models" / key

    def save(self, key: str, manifest: dict[str, Any], files: dict[str, bytes]) -> None:
        """Write a model atomically; an existing model with the same key is replaced."""
        final = self.model_dir(key)
        _mkdir(final.parent)
        tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        _mkdir(tmp)
        try:
            key_id = self._keys.active
            body = dict(manifest, key_id=key_id, files={n: self._mac(d, key_id) for n, d in files.items()})
            for name, data in files.items():
                _write(tmp / name, data)
            _write(tmp / "manifest.json", json.dumps(dict(body, mac=self._mac(_canonical(body), key_id)),
                                                     indent=1, sort_keys=True, default=str).encode())
            if final.exists():
                old = final.parent / f".old-{key}-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def manifest(self, key: str) -> dict[str, Any] | None:
        """The verified manifest of model ``key``, or None if there is no such model."""
        path = self.model_dir(key) / "manifest.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SyntheticError(f"the stored synthetic model cannot be read ({exc.strerror})") from None
        try:
            body = json.loads(raw)
            mac = body.pop("mac")
            key_id = body["key_id"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise self._tampered() from None
        if not isinstance(mac, str) or not hmac.compare_digest(mac, self._mac(_canonical(body), key_id)):
            raise self._tampered()
        return body

    def read(self, key: str, manifest: dict[str, Any], name: str) -> bytes:
        """One file of a model, after checking its HMAC against the verified manifest."""
        if name not in _FILES or name not in manifest.get("files", {}):
            raise self._tampered()
        path = self.model_dir(key) / name
        if path.is_symlink():
            raise self._tampered()
        try:
            data = path.read_bytes()
        except OSError:
            raise self._tampered() from None
        if not hmac.compare_digest(manifest["files"][name], self._mac(data, manifest["key_id"])):
            raise self._tampered()
        return data

    def delete(self, key: str) -> None:
        shutil.rmtree(self.model_dir(key), ignore_errors=True)

    def prune_models(self, dataset: str, keep: int = KEEP_MODELS) -> list[str]:
        """Delete all but the ``keep`` newest models of ``dataset`` (older data versions and
        configurations); models that fail their check are left for an operator to look at."""
        folder = self.root / "models"
        found = []
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name.startswith(".") or not _KEY.fullmatch(path.name):
                continue
            try:
                manifest = self.manifest(path.name)
            except SyntheticError:
                continue
            if manifest is not None and manifest.get("dataset") == dataset:
                found.append((manifest.get("created", ""), path.stat().st_mtime_ns, path.name))
        doomed = [key for *_, key in sorted(found, reverse=True)[keep:]]
        for key in doomed:
            self.delete(key)
        return doomed

    # -- reports -------------------------------------------------------------------------------
    def save_report(self, report_id: str, report: dict[str, Any]) -> None:
        """Store a response's report; past :data:`KEEP_REPORTS` reports, the oldest go (checked
        every 100 saves, so storing stays O(1))."""
        folder = self.root / "reports"
        _mkdir(folder)
        _write(folder / f"{report_id}.json", json.dumps(report, indent=1, sort_keys=True, default=str).encode())
        self._saved += 1
        if self._saved % 100 == 0:
            self.prune_reports()

    def prune_reports(self, keep: int = KEEP_REPORTS) -> int:
        folder = self.root / "reports"
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for path in files[keep:]:
            path.unlink(missing_ok=True)
        return max(0, len(files) - keep)

    def report(self, report_id: str) -> dict[str, Any]:
        if not _REPORT.fullmatch(report_id):
            raise NotFound("unknown synthetic report")
        try:
            return json.loads((self.root / "reports" / f"{report_id}.json").read_bytes())
        except FileNotFoundError:
            raise NotFound("unknown synthetic report") from None

    # -- jobs ----------------------------------------------------------------------------------
    def job_path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise NotFound("unknown synthetic model")
        folder = self.root / "jobs"
        _mkdir(folder)
        return folder / f"{key}.json"

    # -- internals -----------------------------------------------------------------------------
    def _mac(self, data: bytes, key_id: str) -> str:
        try:
            secret = self._keys.subkey("synthetic-store", key_id)
        except Exception:  # unknown key id: the manifest was made under a key this ring lacks
            raise self._tampered() from None
        return hmac.new(secret, data, hashlib.sha256).hexdigest()

    @staticmethod
    def _tampered() -> SyntheticError:
        return SyntheticError("the stored synthetic model failed its integrity check and was not loaded; "
                              "refit it (govern synth fit DATASET --force)")


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def _mkdir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
