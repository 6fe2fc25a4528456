"""pgjdbc (Debian's libpostgresql-jdbc-java), as DBeaver, Metabase and Tableau use it: a small
Java program compiled with ``javac`` here (java/GovernJdbc.java) over TLS (``ssl=true&
sslmode=require``): DatabaseMetaData, prepared statements with setDate/setTimestamp/
setBigDecimal, setFetchSize and setQueryTimeout (a CancelRequest that stops the query)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from govern.identity.tls import write_self_signed
from tests.gateway import World, start_server, stop_server

JAR = Path("/usr/share/java/postgresql.jar")
SOURCE = Path(__file__).parent / "java" / "GovernJdbc.java"

pytestmark = pytest.mark.skipif(not JAR.exists() or shutil.which("javac") is None,
                                reason="pgjdbc (libpostgresql-jdbc-java) or a JDK is missing (make install)")


@pytest.fixture(scope="module")
def tls_pg(demo_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("pgjdbc") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    cert, key = write_self_signed(d / "tls", ["localhost", "127.0.0.1"])
    with (d / "govern.yaml").open("a") as fh:
        fh.write(f"\npg_tls_cert: {cert}\npg_tls_key: {key}\n")
    import json

    server = start_server(World(d, json.loads((d / "keys.json").read_text())))
    yield server
    stop_server(server)


def test_pgjdbc_metadata_prepared_statements_fetch_size_and_timeout(tls_pg, tmp_path) -> None:
    subprocess.run(["javac", "-d", str(tmp_path), "-cp", str(JAR), str(SOURCE)], check=True, timeout=120)
    url = f"jdbc:postgresql://127.0.0.1:{tls_pg.pg_port}/analytics?ssl=true&sslmode=require"
    done = subprocess.run(["java", "-cp", f"{tmp_path}{os.pathsep}{JAR}", "GovernJdbc", url, "alice",
                           tls_pg.world.keys["alice"]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert out["tables"] == "encounters,patients,"
    assert "birth_date:date" in out["columns"] and "ssn" not in out["columns"]
    assert out["importedKeys"] == "0" and out["keywordsNonEmpty"] == "true" and out["typeInfo"] == "true"
    assert out["prepared"] == "true"
    assert out["timestamp"] == "2021-03-04 05:06:07.0 date=2020-02-29"
    assert out["fetched"] == "679" or int(out["fetched"]) > 0
    code, seconds = out["timeout"].split(" seconds=")
    assert code == "57014" and int(seconds) < 10  # the CancelRequest stopped it, not sql_timeout (30 s)
    assert out["afterTimeout"] == "1"
