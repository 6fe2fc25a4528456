"""The materialization store: keys, atomic entries, LRU bound, local folder and S3 prefix."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from govern.config import Settings
from govern.errors import InvalidRequest
from govern.storage.materialized import MaterializationStore, open_store
from tests.conftest_s3 import MotoS3

H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64
V1, V2 = "0" * 16, "1" * 16


def _reader(n: int, start: int = 0) -> pa.RecordBatchReader:
    t = pa.table({"id": pa.array(range(start, start + n), pa.int64()), "zip": [f"{i % 900:03d}**" for i in range(n)]})
    return pa.RecordBatchReader.from_batches(t.schema, t.to_batches(max_chunksize=1000))


def test_an_entry_is_found_by_its_key_only_and_holds_what_was_written(tmp_path: Path) -> None:
    store = open_store(Settings(state_dir=tmp_path / "state", data_root=tmp_path / "data", materialize_max_bytes=1 << 30))
    assert store.get(H1, V1) is None
    entry = store.put(H1, V1, _reader(5_000))
    assert (entry.rows, entry.file_id) == (5_000, "a" * 32 + V1)
    assert store.get(H1, V2) is None and store.get(H2, V1) is None  # another data version, another plan
    again = store.get(H1, V1)
    assert again is not None and again.size == entry.size
    assert again.reader().read_all().equals(_reader(5_000).read_all())
    assert again.reader(["zip"], limit=7).read_all().equals(_reader(7).read_all().select(["zip"]))
    root = tmp_path / "state" / "materialized"
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    assert [oct(p.stat().st_mode & 0o777) for p in root.iterdir()] == ["0o600"]  # no temporary file left


def test_keys_are_hex_never_paths(tmp_path: Path) -> None:
    store = open_store(Settings(state_dir=tmp_path / "s", data_root=tmp_path / "d"))
    with pytest.raises(InvalidRequest):
        store.get("../" + "a" * 61, V1)


def test_the_least_recently_used_entries_go_beyond_the_bound(tmp_path: Path) -> None:
    store = MaterializationStore(__import__("pyarrow.fs").fs.LocalFileSystem(), str(tmp_path / "m"), 1, local=True)
    one = store.put(H1, V1, _reader(20_000))
    store.max_bytes = int(one.size * 2.5)
    store.put(H2, V1, _reader(20_000, 1))
    os.utime(one.path, (1, 1))  # H1 used long ago ...
    store._used.clear()
    assert store.get(H2, V1) is not None  # ... H2 just now
    store.put(H3, V1, _reader(20_000, 2))
    assert store.get(H1, V1) is None  # evicted: the oldest use
    assert store.get(H2, V1) is not None and store.get(H3, V1) is not None
    assert sum(size for _, size, _ in store.entries()) <= store.max_bytes


def test_the_store_may_not_lie_inside_the_data_root(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="data root"):
        open_store(Settings(state_dir=tmp_path / "data" / "state", data_root=tmp_path / "data"))


def test_an_s3_prefix_holds_the_store(moto_s3: MotoS3, tmp_path: Path) -> None:
    bucket = f"govern-{uuid.uuid4().hex[:12]}"
    moto_s3.filesystem().create_dir(bucket)
    settings = Settings(state_dir=tmp_path / "s", data_root=tmp_path / "d", s3=moto_s3.settings_s3,
                        materialize_url=f"s3://{bucket}/materialized")
    store = open_store(settings)
    entry = store.put(H1, V1, _reader(3_000))
    found = store.get(H1, V1)
    assert found is not None and found.rows == 3_000 and found.size == entry.size
    assert found.reader().read_all().equals(_reader(3_000).read_all())
    assert [name for name, _, _ in store.entries()] == [f"{H1}.{V1}.parquet"]
