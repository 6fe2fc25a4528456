"""Gateway helpers every surface's tests share: a private copy of the demo world, an in-process app
over it, and a real ``govern serve`` process. The fixtures (``world``, ``client``, ``server``) are
in ``tests/conftest.py``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from govern.config import load_settings
from govern.server.app import create_app
from govern.sql.isolation import SqlService


@dataclass
class World:
    directory: Path
    keys: dict[str, str]

    @property
    def config(self) -> Path:
        return self.directory / "govern.yaml"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}




_SQL: SqlService | None = None


def shared_sql_service(settings) -> SqlService:
    """One pool of SQL worker processes for every in-process gateway of this test process:
    starting one per app would cost seconds each. Each call names its own settings, so the
    workers serve each test's own world."""
    global _SQL
    if _SQL is None:
        _SQL = SqlService(settings.model_copy(update={"sql_workers": 2}))  # more start when all are busy
    return _SQL


def make_client(world: World, **overrides) -> TestClient:
    settings = load_settings(world.config, watch_policies=False, **overrides)
    return TestClient(create_app(settings, sql_service=shared_sql_service(settings)), raise_server_exceptions=False)




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    world: World
    log: Path
    pg_port: int | None = None  # the PostgreSQL wire port (None: disabled with --pg-port 0)
    flight_port: int | None = None  # the Arrow Flight SQL port (None: disabled with --flight-port 0)


def start_server(world: World, *extra: str, env: dict[str, str] | None = None, timeout: float = 30) -> Server:
    """``govern serve`` on a free HTTP port and (unless ``--pg-port`` / ``--flight-port`` is in
    ``extra``) free PostgreSQL wire and Flight SQL ports, so that servers of parallel tests never
    collide."""
    port = free_port()
    pg_port: int | None = None
    if "--pg-port" not in extra:
        pg_port = free_port()
        extra = (*extra, "--pg-port", str(pg_port))
    else:
        given = int(extra[extra.index("--pg-port") + 1])
        pg_port = given or None
    if "--flight-port" not in extra:
        flight_port: int | None = free_port()
        extra = (*extra, "--flight-port", str(flight_port))
    else:
        flight_port = int(extra[extra.index("--flight-port") + 1]) or None
    log = world.directory / f"server-{port}.log"
    fh = log.open("w")
    exe = Path(sys.executable).parent / "govern"
    proc = subprocess.Popen([str(exe), "serve", "--config", str(world.config), "--port", str(port), *extra],
                            stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return Server(url, proc, world, log, pg_port, flight_port)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gateway did not start:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
