"""Opening and scanning local datasets: projection, pushdown, streaming, loud failures."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from govern.config import Settings
from govern.errors import InvalidRequest, StorageError
from govern.storage import scan as scan_module
from govern.storage.scan import check_reachable, open_dataset, physical_schema, readahead, scan

ROWS = 10_000
ROW_GROUP = 1_000


def _table(n: int = ROWS, start: int = 0) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table(
        {
            "id": ids,  # sorted: every row group has a narrow id range
            "region": pa.array(np.array(["EU", "US", "APAC"])[ids % 3]),
            "amount": ids * 0.5,
            "name": pa.array([f"name-{i}" for i in ids]),
        }
    )


@pytest.fixture
def parquet_file(data_root: Path) -> Path:
    path = data_root / "t.parquet"
    pq.write_table(_table(), path, row_group_size=ROW_GROUP)
    return path


def _corrupt_row_group(path: Path, index: int) -> None:
    """Overwrite every column chunk of one row group with garbage, leaving the footer intact."""
    rg = pq.ParquetFile(path).metadata.row_group(index)
    with path.open("r+b") as f:
        for i in range(rg.num_columns):
            col = rg.column(i)
            start = col.dictionary_page_offset or col.data_page_offset
            f.seek(start)
            f.write(b"\xff" * col.total_compressed_size)


# -- opening -------------------------------------------------------------------------------


def test_open_file_and_physical_schema(settings: Settings, parquet_file: Path) -> None:
    dataset = open_dataset("t.parquet", "parquet", settings)
    assert physical_schema(dataset).equals(_table().schema)
    assert dataset.count_rows() == ROWS


def test_open_folder_skips_hidden_and_underscore_files(settings: Settings, data_root: Path) -> None:
    folder = data_root / "lake"
    folder.mkdir()
    pq.write_table(_table(100, 0), folder / "part-0.parquet")
    pq.write_table(_table(100, 100), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-2.parquet.tmp").write_bytes(b"half a file")
    dataset = open_dataset("lake/", "parquet", settings)
    assert sorted(Path(f).name for f in dataset.files) == ["part-0.parquet", "part-1.parquet"]
    assert dataset.count_rows() == 200
    assert "region" in physical_schema(dataset).names


def test_hive_partitioned_folder_prunes_partitions(settings: Settings, data_root: Path) -> None:
    table = _table(300)
    for region in ("EU", "US", "APAC"):
        part = data_root / "hive" / f"region={region}"
        part.mkdir(parents=True)
        rows = table.filter(pc.field("region") == region).drop_columns(["region"])
        pq.write_table(rows, part / "data.parquet")
    dataset = open_dataset("hive", "parquet", settings)
    assert dataset.schema.field("region").type == pa.string()
    eu = pc.field("region") == "EU"
    assert len(list(dataset.get_fragments(filter=eu))) == 1  # two of three files never opened
    out = scan(dataset, ["id", "region"], eu, 64).read_all()
    assert out.num_rows == 100
    assert set(out.column("region").to_pylist()) == {"EU"}


def test_plain_folder_is_not_taken_for_hive(settings: Settings, data_root: Path) -> None:
    (data_root / "plain" / "2024").mkdir(parents=True)
    pq.write_table(_table(10), data_root / "plain" / "2024" / "p.parquet")
    assert physical_schema(open_dataset("plain", "parquet", settings)).equals(_table().schema)


def test_symlink_inside_folder_leading_outside_is_refused(
    settings: Settings, data_root: Path, tmp_path: Path
) -> None:
    pq.write_table(_table(10), tmp_path / "elsewhere.parquet")
    (data_root / "lake").mkdir()
    pq.write_table(_table(10), data_root / "lake" / "ok.parquet")
    (data_root / "lake" / "planted.parquet").symlink_to(tmp_path / "elsewhere.parquet")
    with pytest.raises(InvalidRequest, match="outside the data root") as err:
        open_dataset("lake", "parquet", settings)
    assert str(tmp_path) not in err.value.detail


@pytest.mark.parametrize(
    "location, fmt, error, message",
    [
        ("missing.parquet", "parquet", StorageError, "'missing.parquet' was not found"),
        ("empty", "parquet", StorageError, "holds no data files"),
        ("t.parquet", "orc", InvalidRequest, "unsupported dataset format 'orc'"),
        ("garbage.parquet", "parquet", StorageError, "invalid, truncated, corrupt"),
        ("../t.parquet", "parquet", InvalidRequest, "outside the data root"),
    ],
)
def test_open_errors_are_safe(
    settings: Settings,
    data_root: Path,
    parquet_file: Path,
    location: str,
    fmt: str,
    error: type[Exception],
    message: str,
) -> None:
    (data_root / "empty").mkdir()
    (data_root / "garbage.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(error, match=message) as err:
        open_dataset(location, fmt, settings)
    assert str(data_root) not in str(err.value)
    assert not isinstance(err.value, StorageError) or err.value.extra == {"location": location}


# -- projection and pushdown ---------------------------------------------------------------


def test_scan_projects_only_requested_columns(settings: Settings, parquet_file: Path) -> None:
    dataset = open_dataset("t.parquet", "parquet", settings)
    reader = scan(dataset, ["name", "id"], None, 256)
    assert reader.schema.names == ["name", "id"]
    sizes = [b.num_rows for b in reader]
    assert sum(sizes) == ROWS
    assert max(sizes) <= 256
    assert len(sizes) >= ROWS // 256


def test_filter_is_exact_and_may_use_unprojected_columns(
    settings: Settings, parquet_file: Path
) -> None:
    dataset = open_dataset("t.parquet", "parquet", settings)
    f = (pc.field("id") >= 1234) & (pc.field("id") < 1300) & (pc.field("region") == "EU")
    out = scan(dataset, ["amount"], f, 1000).read_all()
    expected = [i * 0.5 for i in range(1234, 1300) if i % 3 == 0]
    assert out.column("amount").to_pylist() == expected


def test_filter_prunes_row_groups_by_statistics(settings: Settings, parquet_file: Path) -> None:
    """Only row groups whose min/max admit the filter are read. Proof: corrupt a row group
    the filter excludes and the filtered scan still succeeds; a full scan fails."""
    dataset = open_dataset("t.parquet", "parquet", settings)
    low = pc.field("id") < 1500
    (fragment,) = dataset.get_fragments()
    assert [rg.id for f in fragment.split_by_row_group(low) for rg in f.row_groups] == [0, 1]

    _corrupt_row_group(parquet_file, 9)
    dataset = open_dataset("t.parquet", "parquet", settings)
    out = scan(dataset, ["id", "name"], low, 500, location="t.parquet").read_all()
    assert out.column("id").to_pylist() == list(range(1500))
    with pytest.raises(StorageError, match=re.escape("'t.parquet' could not be read")):
        scan(dataset, ["id", "name"], None, 500, location="t.parquet").read_all()


def test_csv_folder_projection_and_filter(settings: Settings, data_root: Path) -> None:
    folder = data_root / "csv"
    folder.mkdir()
    pcsv.write_csv(_table(500, 0), folder / "a.csv")
    pcsv.write_csv(_table(500, 500), folder / "b.csv")
    dataset = open_dataset("csv", "csv", settings)
    assert physical_schema(dataset).equals(_table().schema)  # types inferred from the header file
    out = scan(dataset, ["id", "region"], pc.field("id") > 990, 100).read_all()
    assert out.to_pydict() == {
        "id": list(range(991, 1000)),
        "region": [["EU", "US", "APAC"][i % 3] for i in range(991, 1000)],
    }


def test_unknown_column_and_mistyped_filter_fail_before_streaming(
    settings: Settings, parquet_file: Path
) -> None:
    dataset = open_dataset("t.parquet", "parquet", settings)
    with pytest.raises(StorageError, match="has no column\\(s\\) 'phone'"):
        scan(dataset, ["id", "phone"], None, 100, location="t.parquet")
    with pytest.raises(StorageError, match="stored column types differ") as err:
        scan(dataset, ["id"], pc.field("id") == pc.scalar("not a number"), 100)
    assert "not a number" not in str(err.value)
    with pytest.raises(InvalidRequest):
        scan(dataset, ["id"], None, 0)


# -- failures mid-stream -------------------------------------------------------------------


def test_truncated_parquet_mid_stream_raises(settings: Settings, data_root: Path) -> None:
    path = data_root / "big.parquet"
    pq.write_table(_table(100_000), path, row_group_size=5_000)
    reader = scan(open_dataset("big.parquet", "parquet", settings), ["id", "name"], None, 1_000)
    rows = reader.read_next_batch().num_rows
    os.truncate(path, path.stat().st_size // 10)
    with pytest.raises(StorageError, match=r"the dataset could not be read"):
        for batch in reader:
            rows += batch.num_rows
    assert rows < 100_000


def test_file_deleted_mid_stream_raises(settings: Settings, data_root: Path) -> None:
    folder = data_root / "parts"
    folder.mkdir()
    for i in range(6):
        pq.write_table(
            _table(20_000, i * 20_000), folder / f"part-{i}.parquet", row_group_size=5_000
        )
    dataset = open_dataset("parts", "parquet", settings)
    reader = scan(dataset, ["id"], None, 1_000, location="parts")
    rows = reader.read_next_batch().num_rows
    (folder / "part-5.parquet").unlink()
    with pytest.raises(StorageError, match="'parts'"):
        for batch in reader:
            rows += batch.num_rows
    assert rows < 120_000


def test_csv_truncated_on_a_line_boundary_is_not_a_silent_short_read(
    settings: Settings, data_root: Path
) -> None:
    """A CSV cut after a complete line still parses; the end-of-stream check catches it."""
    path = data_root / "c.csv"
    pcsv.write_csv(_table(100_000), path)
    reader = scan(open_dataset("c.csv", "csv", settings), ["id"], None, 1_000, location="c.csv")
    reader.read_next_batch()
    data = path.read_bytes()
    os.truncate(path, data.index(b"\n", len(data) // 3) + 1)
    # Which check fires depends on where the reader's block was when the file shrank: the
    # end-of-stream check, or the parser meeting a block cut short. Either way it is loud.
    with pytest.raises(StorageError, match=r"changed while it was being read|could not be read: a file is invalid"):
        for _ in reader:
            pass


def test_stopping_early_is_not_an_error(settings: Settings, parquet_file: Path) -> None:
    reader = scan(open_dataset("t.parquet", "parquet", settings), ["id"], None, 100)
    assert reader.read_next_batch().num_rows == 100
    reader.close()


# -- bounded memory ------------------------------------------------------------------------

_PEAK_SCRIPT = """
import json, sys
import pyarrow as pa
from govern.config import Settings
from govern.storage.scan import open_dataset, scan
dataset = open_dataset(sys.argv[2], "parquet", Settings(data_root=sys.argv[1]))
rows = sum(b.num_rows for b in scan(dataset, ["id", "amount", "name"], None, 16_384))
print(json.dumps({"rows": rows, "peak": pa.default_memory_pool().max_memory()}))
"""


def _peak(data_root: Path, location: str) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(data_root), location],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    return json.loads(out.stdout)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_dataset_size(data_root: Path) -> None:
    small, large = 100_000, 1_600_000
    pq.write_table(_table(small), data_root / "small.parquet", row_group_size=16_384)
    pq.write_table(_table(large), data_root / "large.parquet", row_group_size=16_384)
    a, b = _peak(data_root, "small.parquet"), _peak(data_root, "large.parquet")
    assert (a["rows"], b["rows"]) == (small, large)
    # 16x the data; the Arrow heap's high-water mark stays within a small factor and far
    # below the large table's in-memory size (~60 MB for these columns).
    assert b["peak"] < 2 * a["peak"] + 8 * 2**20, (a, b)
    assert b["peak"] < _table(large).nbytes / 3


def test_readahead_is_a_byte_budget(settings: Settings, parquet_file: Path, data_root: Path) -> None:
    """A narrow scan may decode more batches ahead than a wide one; the count stays within
    [BATCH_READAHEAD, MAX_BATCH_READAHEAD]; CSV (no footer to size batches by) gets the floor."""
    dataset = open_dataset("t.parquet", "parquet", settings)
    narrow = readahead(dataset, ["id"], 32_768)
    wide = readahead(dataset, ["id", "region", "amount", "name"], 32_768)
    assert scan_module.BATCH_READAHEAD <= wide < narrow <= scan_module.MAX_BATCH_READAHEAD
    assert narrow <= scan_module.READAHEAD_BYTES // (8 * 32_768)  # at least 8 bytes a row
    assert readahead(dataset, ["id"], 1024) == scan_module.MAX_BATCH_READAHEAD
    assert readahead(dataset, ["id", "amount", "name"], 10_000_000) == scan_module.BATCH_READAHEAD
    pcsv.write_csv(_table(100), data_root / "t.csv")
    assert readahead(open_dataset("t.csv", "csv", settings), ["id"], 1024) == scan_module.BATCH_READAHEAD


# -- readiness probe -----------------------------------------------------------------------


def test_check_reachable_local(settings: Settings, parquet_file: Path) -> None:
    check_reachable("t.parquet", "parquet", settings, timeout=5)
    with pytest.raises(StorageError, match=re.escape("'nope.parquet' was not found")):
        check_reachable("nope.parquet", "parquet", settings, timeout=5)
    with pytest.raises(InvalidRequest):
        check_reachable("/etc/passwd", "parquet", settings, timeout=5)


def test_check_reachable_gives_up_on_a_silent_endpoint(settings: Settings) -> None:
    """An endpoint that accepts connections but never answers: the S3 client's read
    timeout is ignored on Linux, so only the probe's own deadline bounds the wait."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        settings.s3 = settings.s3.model_copy(
            update={
                "endpoint_override": f"127.0.0.1:{silent.getsockname()[1]}",
                "scheme": "http",
                "anonymous": True,
                "connect_timeout": 1.0,
                "request_timeout": 30.0,
            }
        )
        start = time.monotonic()
        with pytest.raises(StorageError, match="did not answer within 1s"):
            check_reachable("s3://bucket/p.parquet", "parquet", settings, timeout=1.0)
        assert time.monotonic() - start < 3.0
    finally:
        silent.close()  # pending connections are reset; the abandoned probe thread ends
