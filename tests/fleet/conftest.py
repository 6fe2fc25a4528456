"""Fixtures of the fleet tests: a throwaway PostgreSQL cluster and a private world per module."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from tests.fleet.cluster import Cluster, pg_bin
from tests.gateway import World


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    c = Cluster()
    c.start()
    yield c
    c.close()


@pytest.fixture(scope="module")
def fleet_world(demo_world, tmp_path_factory: pytest.TempPathFactory) -> World:
    d = tmp_path_factory.mktemp("fleet") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    return World(d, json.loads((d / "keys.json").read_text()))
