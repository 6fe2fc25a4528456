"""The client compatibility matrix (docs/pgwire.md): one ``govern serve`` per client module, over
a private copy of the demo world; each client is driven as its users drive it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from govern.config import load_settings
from tests.gateway import Server, World, start_server, stop_server


@pytest.fixture(scope="module")
def pg(demo_world, tmp_path_factory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("pgclients") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    server = start_server(World(d, json.loads((d / "keys.json").read_text())))
    yield server
    stop_server(server)


def dsn(server: Server, who: str = "alice", purpose: str = "analytics", scheme: str = "postgresql") -> str:
    return f"{scheme}://{who}:{server.world.keys[who]}@127.0.0.1:{server.pg_port}/{purpose}"


def audit_records(server: Server, since: int = 0) -> list[dict[str, Any]]:
    """The wire server's audit records after sequence number ``since`` (read-only SQLite)."""
    state = load_settings(server.world.config).state_dir
    con = sqlite3.connect(f"file:{state / 'audit.db'}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT seq, action, outcome, rows, detail, extra FROM audit_log WHERE seq > ? "
                           "ORDER BY seq", (since,)).fetchall()
    finally:
        con.close()
    return [{**dict(r), "extra": json.loads(r["extra"] or "{}")} for r in rows]


def last_seq(server: Server) -> int:
    records = audit_records(server)
    return records[-1]["seq"] if records else 0
