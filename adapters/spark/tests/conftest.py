"""Fixtures of the Spark adapter's tests: one local SparkSession per test module.

local[2] (the machine's two cores), two shuffle partitions, no UI, UTC session time zone — and
the executors' Python is this interpreter, so they import the same govern and govern_spark.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests.gateway (a real govern serve) when run on their own
    sys.path.insert(0, str(ROOT))


def build_session(app: str, **conf: str) -> SparkSession:
    os.environ["PYSPARK_PYTHON"] = sys.executable  # executors run this interpreter
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # loopback only
    builder = (SparkSession.builder.master("local[2]").appName(app)
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.memory", "1g"))
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@pytest.fixture(scope="module")
def spark(request: pytest.FixtureRequest) -> Iterator[SparkSession]:
    session = build_session(request.module.__name__)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """A demo world (`govern demo`), generated once per test session. Read-only."""
    from govern.demo import create_demo

    return create_demo(Path(tmp_path_factory.mktemp("spark-demo")), rows=1_000, seed=7)
