"""Flight SQL fixtures: a gateway and its Flight SQL server in this process (audit records can
be read back), and ADBC / pyarrow.flight clients for it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_flightsql as adbc_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
import pytest

from govern.config import load_settings
from govern.deliver.gateway import Gateway, build_gateway
from govern.flight.server import FlightServerThread
from tests.gateway import World, shared_sql_service

HEADER = adbc_flightsql.DatabaseOptions.RPC_CALL_HEADER_PREFIX.value


@dataclass
class FlightServer:
    uri: str
    gw: Gateway
    world: World
    thread: FlightServerThread

    def connect(self, who: str = "alice", purpose: str | None = "analytics", *, key: str | None = None,
                **conn_kwargs: str) -> flightsql.Connection:
        """ADBC over a Handshake (user = principal, password = API key); the purpose as the
        ``x-purpose`` header (None: none sent)."""
        db_kwargs = {"username": who, "password": key if key is not None else self.world.keys[who]}
        if purpose is not None:
            db_kwargs[HEADER + "x-purpose"] = purpose
        return flightsql.connect(self.uri, db_kwargs=db_kwargs, conn_kwargs=conn_kwargs or None,
                                 autocommit=True)

    def client(self) -> flight.FlightClient:
        return flight.connect(self.uri)

    def options(self, who: str = "alice", purpose: str | None = "analytics") -> flight.FlightCallOptions:
        """Call options with ``who``'s API key as a bearer (no Handshake) and the purpose header."""
        headers = [(b"authorization", f"Bearer {self.world.keys[who]}".encode())]
        if purpose is not None:
            headers.append((b"x-purpose", purpose.encode()))
        return flight.FlightCallOptions(headers=headers)

    def records(self, after: int = 0) -> list:
        """Every audit record after sequence number ``after``."""
        out: list = []
        while True:
            page = self.gw.audit.records(after_seq=after, limit=1000)
            out += page
            if len(page) < 1000:
                return out
            after = page[-1].seq

    def last_seq(self) -> int:
        records = self.records()
        return records[-1].seq if records else 0


def _start(world: World, **overrides: object) -> FlightServer:
    settings = load_settings(world.config, watch_policies=False, **overrides)
    gw = build_gateway(settings, sql_service=shared_sql_service(settings))
    thread = FlightServerThread(gw, "127.0.0.1", 0)
    thread.start()
    return FlightServer(f"grpc://127.0.0.1:{thread.port}", gw, world, thread)


def _stop(server: FlightServer) -> None:
    server.thread.stop()
    server.gw.audit.close()


def copy_world(source: Path, target: Path) -> World:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    return World(target, json.loads((target / "keys.json").read_text()))


@pytest.fixture(scope="module")
def flight_server(demo_world, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlightServer]:
    """One Flight SQL server per test module over a private copy of the demo world (read-only
    tests share it)."""
    world = copy_world(demo_world.directory, tmp_path_factory.mktemp("flight") / "world")
    server = _start(world)
    yield server
    _stop(server)


@pytest.fixture
def own_flight_server(world: World) -> Iterator[FlightServer]:
    """A Flight SQL server over this test's own (editable) world."""
    server = _start(world)
    yield server
    _stop(server)
