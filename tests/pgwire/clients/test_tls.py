"""TLS on the PostgreSQL wire: the standard SSLRequest negotiation (psql ``sslmode=require``), a
self-signed pair from ``govern keys tls``, and clients not on this machine refused without TLS."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway import World, start_server, stop_server

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")


def _outside_address() -> str | None:
    """An address of this machine that is not loopback (a 'remote' client for the test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def tls_pg(demo_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("pgtls") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    govern = Path(sys.executable).parent / "govern"
    made = subprocess.run([str(govern), "keys", "tls", str(d / "tls")], capture_output=True, text=True, timeout=60,
                          check=True)
    with (d / "govern.yaml").open("a") as fh:
        fh.write("\n" + made.stdout)  # pg_tls_cert: … / pg_tls_key: … (absolute paths)
    env = {**os.environ, "GOVERN_PG_HOST": "0.0.0.0"}
    server = start_server(World(d, json.loads((d / "keys.json").read_text())), env=env)
    yield server
    stop_server(server)


def psql(server, host: str, sslmode: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": server.world.keys["alice"]}
    return subprocess.run(["psql", "-X", "-A", "-t", f"host={host} port={server.pg_port} user=alice "
                           f"dbname=analytics sslmode={sslmode} connect_timeout=10",
                           "-c", "SELECT count(*) > 0 FROM patients", "-c", r"\conninfo"],
                          env=env, capture_output=True, text=True, timeout=60)


def test_psql_sslmode_require_is_encrypted(tls_pg) -> None:
    done = psql(tls_pg, "127.0.0.1", "require")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("t\n") and "SSL connection (protocol: TLSv1." in done.stdout


def test_loopback_clients_may_still_connect_in_clear(tls_pg) -> None:
    done = psql(tls_pg, "127.0.0.1", "disable")
    assert done.returncode == 0, done.stderr
    assert "SSL connection" not in done.stdout


def test_clients_not_on_this_machine_must_use_tls(tls_pg) -> None:
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    refused = psql(tls_pg, address, "disable")
    assert refused.returncode != 0 and "requires TLS" in refused.stderr
    encrypted = psql(tls_pg, address, "require")
    assert encrypted.returncode == 0, encrypted.stderr

