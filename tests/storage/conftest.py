"""Fixtures for the storage tests: a data root per test and the real S3 server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from govern.config import Settings

# The S3 fixture lives in a plugin module (tests/conftest_s3.py). Once the top-level conftest
# registers it with ``pytest_plugins`` it is already loaded; until then, import it here so
# these tests run on their own. Re-exporting it after registration would start a second server.
if not any(name.endswith("conftest_s3") for name in sys.modules):
    from tests.conftest_s3 import moto_s3  # noqa: F401


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def settings(data_root: Path) -> Settings:
    return Settings(data_root=data_root)
