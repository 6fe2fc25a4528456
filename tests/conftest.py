"""Shared fixtures: real files in tmp paths, built from the repo's example policy set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.gateway import World, make_client, start_server, stop_server
from tests.leaks import Leaks

pytest_plugins = ["tests.conftest_s3", "tests.pgwire.raw"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_POLICIES = REPO / "policies"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A private copy of the example policy set that a test may edit."""
    d = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICIES, d)
    return d


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory):
    """A demo world (2,000 patients) generated once per test session. Read-only for tests."""
    from govern.demo import create_demo

    d = tmp_path_factory.mktemp("demo")
    return create_demo(d, rows=2_000, seed=7)



@pytest.fixture(scope="session")
def leaks(demo_world) -> Leaks:
    """Raw sensitive values of the session's demo world, to search responses for."""
    return Leaks.from_world(demo_world.directory)


@pytest.fixture(scope="session")
def governor(demo_world):
    from govern.config import load_settings
    from govern.deliver.governor import Governor

    return Governor(load_settings(demo_world.config))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# -- a gateway over a private copy of the demo world (helpers in tests/gateway.py) -------------
@pytest.fixture
def world(demo_world, tmp_path: Path) -> World:
    """A private, editable copy of the session's demo world (policies, keys, state)."""
    d = tmp_path / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    keys = json.loads((d / "keys.json").read_text())
    return World(d, keys)


@pytest.fixture
def client(world: World):
    with make_client(world) as c:
        yield c


@pytest.fixture
def server(world: World):
    s = start_server(world)
    yield s
    stop_server(s)
