"""Profiles on disk: one JSON file per dataset, view and data version, under ``state_dir``.

::

    STATE_DIR/monitor/profiles/DATASET/VIEW/DATA_VERSION.json    one profile
    STATE_DIR/monitor/profiles/DATASET/VIEW/BASELINE             the baseline's data version

``VIEW`` is the first 16 hex digits of the profile's rows-view key (its row filters and key id,
:func:`govern.monitor.profile.rows_view`): versions are compared only within one view. A data
version is profiled once per view — profiling it again returns the stored profile — so the
time order of a view's profiles is the order the versions were first seen. Files are written
atomically (temporary file, then rename) and readable only by the gateway's user (0600).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote

from govern.errors import NotFound
from govern.monitor.profile import Profile

__all__ = ["ProfileStore"]


def _safe(name: str) -> str:
    return quote(name, safe="").replace(".", "%2E")


class ProfileStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def under(cls, state_dir: Path) -> ProfileStore:
        return cls(Path(state_dir) / "monitor")

    def _dir(self, dataset: str, view_key: str) -> Path:
        return self.root / "profiles" / _safe(dataset) / view_key[:16]

    # -- writing ------------------------------------------------------------------------------------
    def save(self, profile: Profile, *, replace: bool = False) -> Profile:
        """Store ``profile`` unless its version is already stored for its view (then return the
        stored one); ``replace`` overwrites it, keeping the time the version was first seen."""
        existing = self.get(profile.dataset, profile.data_version, profile.view_key)
        if existing is not None:
            if not replace:
                return existing
            profile = dataclasses.replace(profile, computed_at=existing.computed_at)
        folder = self._dir(profile.dataset, profile.view_key)
        _write(folder / f"{profile.data_version}.json", json.dumps(profile.to_dict(), indent=1) + "\n")
        return profile

    def set_baseline(self, dataset: str, view_key: str, data_version: str) -> None:
        """Make a stored version the baseline of its view (NotFound if it was never profiled)."""
        if self.get(dataset, data_version, view_key) is None:
            raise NotFound(f"no profile of data version '{data_version}' of dataset '{dataset}' in this view")
        _write(self._dir(dataset, view_key) / "BASELINE", data_version + "\n")

    # -- reading ------------------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        folder = self.root / "profiles"
        return sorted(unquote(p.name) for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def views(self, dataset: str) -> list[str]:
        """The rows-view keys ``dataset`` has profiles under."""
        folder = self.root / "profiles" / _safe(dataset)
        keys = []
        for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
            latest = self._load_all(sub)
            if latest:
                keys.append(latest[-1].view_key)
        return keys

    def get(self, dataset: str, data_version: str, view_key: str) -> Profile | None:
        path = self._dir(dataset, view_key) / f"{_safe(data_version)}.json"
        if not path.is_file():
            return None
        profile = Profile.from_dict(json.loads(path.read_text()))
        return profile if profile.view_key == view_key else None

    def profiles(self, dataset: str, view_key: str) -> list[Profile]:
        """The view's profiles, oldest first."""
        return self._load_all(self._dir(dataset, view_key))

    def baseline(self, dataset: str, view_key: str) -> Profile | None:
        """The chosen baseline of the view, or its oldest profile."""
        marker = self._dir(dataset, view_key) / "BASELINE"
        if marker.is_file():
            chosen = self.get(dataset, marker.read_text().strip(), view_key)
            if chosen is not None:
                return chosen
        found = self.profiles(dataset, view_key)
        return found[0] if found else None

    def _load_all(self, folder: Path) -> list[Profile]:
        if not folder.is_dir():
            return []
        found = [Profile.from_dict(json.loads(p.read_text())) for p in folder.glob("*.json")]
        return sorted(found, key=lambda p: (p.computed_at, p.data_version))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
