"""A throwaway PostgreSQL cluster and a fleet of ``govern serve`` processes over it.

The fault harness must restart PostgreSQL, so it never uses the machine's own server: it runs
Debian's binaries (``/usr/lib/postgresql/*/bin``) on a fresh ``initdb`` folder and a free
loopback port, as the ``postgres`` user when the tests run as root (``initdb`` refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.gateway import Server, World, free_port, start_server


def pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries on the machine, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class Cluster:
    """``initdb`` in a temp folder; ``start``/``stop``/``restart`` with ``pg_ctl``; ``close`` removes it."""

    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="govern-fleet-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "max_connections = 200\nshared_buffers = 32MB\n")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-m", "fast", "-w", "-t", "60",
                 "restart")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Fleet:
    """Gateways over one world and one PostgreSQL; each can be killed, paused and restarted."""

    world: World
    env: dict[str, str]
    extra: tuple[tuple[str, ...], ...]
    servers: list[Server] = field(default_factory=list)

    @classmethod
    def start(cls, world: World, url: str, count: int, *, prefix: str = "govern_",
              extra: tuple[tuple[str, ...], ...] = (), env: dict[str, str] | None = None) -> Fleet:
        environ = {**os.environ, "GOVERN_AUDIT_URL": url, "GOVERN_LEDGER_URL": url,
                   "GOVERN_AUDIT_TABLE_PREFIX": prefix, "GOVERN_LEDGER_TABLE_PREFIX": prefix,
                   "GOVERN_FLEET_HEARTBEAT": "0.5", "GOVERN_SQL_WORKERS": "1", "GOVERN_DP_WORKERS": "1",
                   "GOVERN_MASK_THREADS": "1", "GOVERN_SQL_THREADS": "1", **(env or {})}
        fleet = cls(world, environ, extra or tuple(() for _ in range(count)))
        for i in range(count):
            fleet.servers.append(fleet._launch(i))
        return fleet

    def _launch(self, i: int) -> Server:
        return start_server(self.world, "--pg-port", "0", "--flight-port", "0", *self.extra[i], env=self.env,
                            timeout=120)  # a restart under load on a busy 2-core machine

    def kill(self, i: int) -> None:
        proc = self.servers[i].process
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def pause(self, i: int) -> None:
        self.servers[i].process.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.servers[i].process.send_signal(signal.SIGCONT)

    def restart(self, i: int) -> Server:
        self.servers[i] = self._launch(i)
        return self.servers[i]

    def readyz(self, i: int, timeout: float = 5) -> dict:
        return httpx.get(self.servers[i].url + "/readyz", timeout=timeout).json()

    def close(self) -> None:
        for s in self.servers:
            if s.process.poll() is None:
                s.process.send_signal(signal.SIGCONT)
                s.process.terminate()
        for s in self.servers:
            try:
                s.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                s.process.kill()
                s.process.wait(timeout=5)


def wait_until(check, timeout: float, step: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it returns something truthy; that value, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return None
