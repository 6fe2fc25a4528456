"""The model store authenticates every file before anything is loaded from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from govern.errors import NotFound, SyntheticError
from govern.mask.keys import KeyRing
from govern.privacy.synthetic.store import ModelStore

KEY = "ab" * 16


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    s = ModelStore(tmp_path / "synthetic", KeyRing({"k1": b"m" * 32}, "k1"))
    s.save(KEY, {"dataset": "patients"}, {"model.pkl": b"pickle bytes", "digests.npy": b"d", "pools.json": b"{}"})
    return s


def test_a_saved_model_reads_back_verified(store: ModelStore) -> None:
    manifest = store.manifest(KEY)
    assert manifest is not None and manifest["dataset"] == "patients" and manifest["key_id"] == "k1"
    assert store.read(KEY, manifest, "model.pkl") == b"pickle bytes"
    assert store.manifest("cd" * 16) is None  # never fitted
    folder = store.model_dir(KEY)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "model.pkl").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("tamper", ["file", "manifest", "plain-digest", "other-key", "symlink"])
def test_tampering_is_detected(store: ModelStore, tmp_path: Path, tamper: str) -> None:
    folder = store.model_dir(KEY)
    manifest_path = folder / "manifest.json"
    if tamper == "file":
        (folder / "model.pkl").write_bytes(b"evil pickle")
    elif tamper == "manifest":
        body = json.loads(manifest_path.read_text())
        body["dataset"] = "encounters"
        manifest_path.write_text(json.dumps(body))
    elif tamper == "plain-digest":  # a matching unkeyed digest is not enough
        import hashlib

        (folder / "model.pkl").write_bytes(b"evil pickle")
        body = json.loads(manifest_path.read_text())
        body["files"]["model.pkl"] = hashlib.sha256(b"evil pickle").hexdigest()
        manifest_path.write_text(json.dumps(body))
    elif tamper == "other-key":  # a model made under a key this gateway does not hold
        other = ModelStore(store.root, KeyRing({"k1": b"x" * 32}, "k1"))
        with pytest.raises(SyntheticError, match="integrity"):
            other.manifest(KEY)
        return
    elif tamper == "symlink":
        target = tmp_path / "elsewhere.pkl"
        target.write_bytes(b"pickle bytes")
        (folder / "model.pkl").unlink()
        (folder / "model.pkl").symlink_to(target)
    with pytest.raises(SyntheticError, match="integrity"):
        manifest = store.manifest(KEY)
        assert manifest is not None
        store.read(KEY, manifest, "model.pkl")


def test_keys_and_report_ids_are_not_paths(store: ModelStore) -> None:
    for bad in ("../../etc", "AB" * 16, "", "x" * 32):
        with pytest.raises(NotFound):
            store.model_dir(bad)
        with pytest.raises(NotFound):
            store.report(bad)


def test_old_models_and_reports_are_pruned(tmp_path: Path) -> None:
    import os

    store = ModelStore(tmp_path / "synthetic", KeyRing({"k1": b"m" * 32}, "k1"))
    keys = [f"{i:02x}" * 16 for i in range(5)]
    for i, key in enumerate(keys):
        store.save(key, {"dataset": "patients", "created": f"2026-01-0{i + 1}"}, {"model.pkl": b"x"})
    store.save("ee" * 16, {"dataset": "encounters", "created": "2026-01-01"}, {"model.pkl": b"x"})
    assert sorted(store.prune_models("patients", keep=2)) == sorted(keys[:3])
    assert [store.manifest(k) is not None for k in keys] == [False, False, False, True, True]
    assert store.manifest("ee" * 16) is not None  # another dataset's model stays
    for i in range(5):
        store.save_report(f"{i:032x}", {"n": i})
        os.utime(store.root / "reports" / f"{i:032x}.json", ns=(i * 10**9, i * 10**9))
    assert store.prune_reports(keep=2) == 3
    assert sorted(p.stem for p in (store.root / "reports").iterdir()) == [f"{3:032x}", f"{4:032x}"]
