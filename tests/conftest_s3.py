"""pytest plugin: a real S3 endpoint for tests (a ``moto_server`` process on loopback).

Register with ``pytest_plugins = ["tests.conftest_s3"]`` in the top-level conftest. Tests
talk to it over HTTP through ``pyarrow.fs.S3FileSystem`` exactly as the gateway talks to a
real store, so endpoint, scheme, region, credentials and error handling are all exercised —
no in-process mocking of the S3 client.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from pydantic import SecretStr

from govern.config import S3Settings

__all__ = ["MotoS3", "moto_s3"]

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"  # a dummy: moto accepts any credentials


@dataclass
class MotoS3:
    """A running moto S3 server and helpers to put test data into it."""

    endpoint: str  # "127.0.0.1:PORT"
    settings_s3: S3Settings
    _buckets: set[str] = field(default_factory=set)

    def filesystem(self) -> pafs.S3FileSystem:
        """A client allowed to create buckets (the gateway's own client is not)."""
        return pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            endpoint_override=self.endpoint,
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def upload(self, local_path: str | Path, bucket: str, key: str) -> str:
        """Copy a local file to ``s3://bucket/key`` (creating the bucket); return the URI."""
        fs = self.filesystem()
        if bucket not in self._buckets:
            fs.create_dir(bucket)
            self._buckets.add(bucket)
        with open(local_path, "rb") as src, fs.open_output_stream(f"{bucket}/{key}") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        return f"s3://{bucket}/{key}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # loopback only
                resp.read()
                return True
        except urllib.error.HTTPError:
            return True  # it answered, even if not with 200
        except OSError:
            time.sleep(0.1)
    return False


def _start(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.skip(f"moto_server not installed next to {sys.executable}")
    last_error = "did not start"
    for _ in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(binary), "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if _wait_until_up(proc, f"http://127.0.0.1:{port}/moto-api/", time.monotonic() + 30):
            return proc, port
        last_error = f"exit code {proc.poll()}"
        _stop(proc)
    raise RuntimeError(f"moto_server {last_error}; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A real moto S3 server on 127.0.0.1:<free port> for the whole session."""
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    proc, port = _start(log)
    endpoint = f"127.0.0.1:{port}"
    settings = S3Settings(
        endpoint_override=endpoint,
        scheme="http",
        region="us-east-1",
        access_key=SecretStr(ACCESS_KEY),
        secret_key=SecretStr(SECRET_KEY),
        connect_timeout=2.0,
        request_timeout=5.0,
        retries=1,
    )
    try:
        yield MotoS3(endpoint=endpoint, settings_s3=settings)
    finally:
        _stop(proc)
