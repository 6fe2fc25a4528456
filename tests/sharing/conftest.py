"""Delta Sharing fixtures: a real ``govern serve`` over a private demo world, profiles written
by the real CLI, and helpers that read files the way the delta-sharing client does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from delta_sharing.protocol import DeltaSharingProfile, Table
from delta_sharing.rest_client import DataSharingRestClient

from govern.audit.log import open_audit_log
from govern.config import load_settings
from tests.flight.conftest import copy_world
from tests.gateway import Server, World, start_server, stop_server

RECIPIENTS = (("alice", "analytics"), ("bob", "research"), ("bob", "model-training"), ("carol", "governance"),
              ("dave", "treatment"))


def govern_cli(world: World, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "govern"
    return subprocess.run([str(exe), *args], cwd=world.directory, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def write_profile(server: Server, who: str, purpose: str, *extra: str) -> Path:
    path = server.world.directory / f"{who}-{purpose}.share"
    port = server.url.rsplit(":", 1)[1]
    done = govern_cli(server.world, "sharing", "profile", who, "--purpose", purpose, "-o", str(path), *extra,
                      env={"GOVERN_PORT": port})
    assert done.returncode == 0, done.stderr
    return path


@dataclass
class Shared:
    server: Server
    profiles: dict[tuple[str, str], Path]

    @property
    def world(self) -> World:
        return self.server.world

    def profile(self, who: str, purpose: str) -> Path:
        if (who, purpose) not in self.profiles:
            self.profiles[who, purpose] = write_profile(self.server, who, purpose)
        return self.profiles[who, purpose]

    def url(self, who: str, purpose: str, table: str) -> str:
        return f"{self.profile(who, purpose)}#{purpose}.default.{table}"

    def files(self, who: str, purpose: str, table: str):
        """The query's answer, through the unmodified client's REST layer."""
        rest = DataSharingRestClient(DeltaSharingProfile.read_from_file(str(self.profile(who, purpose))))
        return rest.list_files_in_table(Table(name=table, share=purpose, schema="default"))

    def records(self) -> list:
        settings = load_settings(self.world.config)
        log = open_audit_log(f"sqlite:///{(settings.state_dir / 'audit.db').resolve()}")
        try:
            out, after = [], 0
            while True:
                page = log.records(after_seq=after, limit=1000)
                out += page
                if len(page) < 1000:
                    return out
                after = page[-1].seq
        finally:
            log.close()


def read_arrow(url: str) -> pa.Table:
    """A file action's URL read with pyarrow over fsspec's HTTP filesystem — what the client's
    reader does before it converts to pandas."""
    return pq.read_table(url, filesystem=fsspec.filesystem("http"))


def start_shared(world: World, *extra: str, env: dict[str, str] | None = None) -> Shared:
    server = start_server(world, "--pg-port", "0", "--flight-port", "0", *extra,
                          env={**os.environ, **(env or {})} if env else None)
    return Shared(server, {})


@pytest.fixture(scope="module")
def shared(demo_world, tmp_path_factory) -> Iterator[Shared]:
    """One gateway per module over a private copy of the demo world (read-only tests)."""
    world = copy_world(demo_world.directory, tmp_path_factory.mktemp("sharing") / "world")
    s = start_shared(world)
    yield s
    stop_server(s.server)


@pytest.fixture
def own_shared(world: World) -> Iterator[Shared]:
    """A gateway over this test's own editable world."""
    s = start_shared(world)
    yield s
    stop_server(s.server)


def rows(server: Server, who: str, purpose: str, table: str) -> pa.Table:
    import httpx

    r = httpx.get(f"{server.url}/v1/datasets/{table}/rows", timeout=60,
                  headers={**server.world.auth(who), "X-Purpose": purpose})
    assert r.status_code == 200, r.text
    return pa.ipc.open_stream(r.content).read_all()


def problem(response) -> str:
    return json.loads(response.text)["type"].rsplit(":", 1)[-1]
