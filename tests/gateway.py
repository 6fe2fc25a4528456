"""Gateway helpers every surface's tests share: a private copy of the demo world, an in-process app
over it, and a real ``govern serve`` process. The fixtures (``world``, ``client``, ``server``) are
in ``tests/conftest.py``."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: bound all at once, so the kernel cannot hand the same
    one out twice (it may, to sockets bound one after another)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


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
    port, spare_pg, spare_flight = free_ports(3)  # distinct: the gateway binds all three
    pg_port: int | None = None
    if "--pg-port" not in extra:
        pg_port = spare_pg
        extra = (*extra, "--pg-port", str(pg_port))
    else:
        given = int(extra[extra.index("--pg-port") + 1])
        pg_port = given or None
    if "--flight-port" not in extra:
        flight_port: int | None = spare_flight
        extra = (*extra, "--flight-port", str(flight_port))
    else:
        flight_port = int(extra[extra.index("--flight-port") + 1]) or None
    log = world.directory / f"server-{port}.log"
    fh = log.open("w")
    exe = Path(sys.executable).parent / "govern"
    proc = subprocess.Popen([str(exe), "serve", "--config", str(world.config), "--port", str(port), *extra],
                            stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, log, timeout)
    return Server(url, proc, world, log, pg_port, flight_port)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Until ``url``/healthz answers 200; if ``proc`` exits or the time runs out, kill it and
    raise with its log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gateway did not start:\n{log.read_text()}")


def doc_code(doc: Path, title: str, language: str) -> list[str]:
    """The ``language`` code blocks of the section of ``doc`` headed ``title`` (up to the next
    heading of any level)."""
    text = re.split(r"\n##+ ", doc.read_text().split(title, 1)[1], maxsplit=1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


@contextlib.contextmanager
def served_doc_commands(setup: str, serve: str, directory: Path) -> Iterator[str]:
    """A doc's shell ``setup`` run in ``directory``, then its ``govern serve … --port 8000``
    command as written but on a free port (parallel tests), with the venv's ``bin`` on the PATH;
    yields the gateway's URL and stops it after."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", setup], cwd=directory, check=True, capture_output=True,
                   env=env)
    port = free_port()
    command = serve.strip().replace("--port 8000", f"--port {port} --pg-port 0 --flight-port 0")
    log = directory / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=directory, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@contextlib.contextmanager
def new_data_version(path: Path, row_group_size: int) -> Iterator[None]:
    """The Parquet file at ``path`` rewritten with the same rows — to the gateway, a new data
    version, so tickets of scans made before it go stale — and rewritten again after."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    time.sleep(0.01)  # a later modification time, on file systems that keep coarse ones
    pq.write_table(table, path, row_group_size=row_group_size)
    try:
        yield
    finally:
        pq.write_table(table, path, row_group_size=row_group_size)
