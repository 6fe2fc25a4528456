"""The client compatibility matrix (docs/pgwire.md): one ``govern serve`` per client module, over
a private copy of the demo world; each client is driven as its users drive it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from govern.audit.log import open_audit_log
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
    """The gateway's audit records after sequence number ``since``."""
    settings = load_settings(server.world.config)
    log = open_audit_log(f"sqlite:///{(settings.state_dir / 'audit.db').resolve()}")
    try:
        out, seq = [], since
        while page := log.records(after_seq=seq, limit=1000):
            out += [{"seq": r.seq, "action": r.action, "outcome": r.outcome, "rows": r.rows, "extra": r.extra}
                    for r in page]
            seq = page[-1].seq
        return out
    finally:
        log.close()


def last_seq(server: Server) -> int:
    records = audit_records(server)
    return records[-1]["seq"] if records else 0
