"""Reading through a real S3 endpoint (moto_server on loopback) with pyarrow's S3 client."""

from __future__ import annotations

import re
import socket
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from govern.config import S3Settings, Settings
from govern.errors import StorageError
from govern.storage.scan import check_reachable, open_dataset, physical_schema, scan
from tests.conftest_s3 import SECRET_KEY, MotoS3


def _table(n: int, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "region": [("EU", "US", "APAC")[i % 3] for i in ids],
            "name": [f"Zoë {i}" for i in ids],
        }
    )


@pytest.fixture
def bucket() -> str:
    return f"govern-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_settings(moto_s3: MotoS3, tmp_path: Path) -> Settings:
    return Settings(data_root=tmp_path, s3=moto_s3.settings_s3)


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parquet_file_on_s3_with_projection_and_pushdown(
    moto_s3: MotoS3, s3_settings: Settings, bucket: str, tmp_path: Path
) -> None:
    local = tmp_path / "p.parquet"
    pq.write_table(_table(5_000), local, row_group_size=500)
    uri = moto_s3.upload(local, bucket, "lake/patients.parquet")

    dataset = open_dataset(uri, "parquet", s3_settings)
    assert physical_schema(dataset).equals(_table(1).schema)
    (fragment,) = dataset.get_fragments()
    f = pc.field("id") >= 4_750
    assert len(fragment.split_by_row_group(f)) == 1  # one of ten row groups is fetched
    out = scan(dataset, ["name"], f, 100, location=uri).read_all()
    assert out.column_names == ["name"]
    assert out.column("name").to_pylist() == [f"Zoë {i}" for i in range(4_750, 5_000)]


def test_prefix_of_files_and_csv_on_s3(
    moto_s3: MotoS3, s3_settings: Settings, bucket: str, tmp_path: Path
) -> None:
    for i in range(3):
        local = tmp_path / f"part-{i}.csv"
        pcsv.write_csv(_table(100, i * 100), local)
        moto_s3.upload(local, bucket, f"csv/part-{i}.csv")
    moto_s3.upload(tmp_path / "part-0.csv", bucket, "csv/_SUCCESS")
    dataset = open_dataset(f"s3://{bucket}/csv/", "csv", s3_settings)
    assert len(dataset.files) == 3
    out = scan(dataset, ["id", "region"], pc.field("region") == "EU", 1_000).read_all()
    assert sorted(out.column("id").to_pylist()) == list(range(0, 300, 3))


def test_missing_object_and_bucket_are_storage_errors(
    moto_s3: MotoS3, s3_settings: Settings, bucket: str, tmp_path: Path
) -> None:
    local = tmp_path / "p.parquet"
    pq.write_table(_table(10), local)
    moto_s3.upload(local, bucket, "p.parquet")
    for uri in (f"s3://{bucket}/nope.parquet", "s3://no-such-bucket-govern/p.parquet"):
        with pytest.raises(StorageError, match="was not found") as err:
            open_dataset(uri, "parquet", s3_settings)
        assert err.value.detail == f"dataset location {uri!r} was not found"
    check_reachable(f"s3://{bucket}/p.parquet", "parquet", s3_settings, timeout=10)


def test_unreachable_endpoint_fails_fast(tmp_path: Path) -> None:
    settings = Settings(
        data_root=tmp_path,
        s3=S3Settings(
            endpoint_override=f"127.0.0.1:{_closed_port()}",
            scheme="http",
            region="us-east-1",
            access_key="AKIDEXAMPLE",
            secret_key=SECRET_KEY,
            connect_timeout=1.0,
            request_timeout=2.0,
            retries=2,
        ),
    )
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"is unreachable|did not answer") as err:
        check_reachable("s3://bucket/p.parquet", "parquet", settings, timeout=3.0)
    assert time.monotonic() - start < 4.0
    for text in (SECRET_KEY, "AKIDEXAMPLE", "127.0.0.1"):
        assert text not in str(err.value)

    start = time.monotonic()
    with pytest.raises(StorageError, match=re.escape("'s3://bucket/p.parquet' is unreachable")):
        open_dataset("s3://bucket/p.parquet", "parquet", settings)
    assert time.monotonic() - start < 10.0
