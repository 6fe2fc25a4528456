"""A Handshake's session token is not a credential of its own: every call re-resolves the
credentials it stands for, under the policy served now (as on the PostgreSQL wire)."""

from __future__ import annotations

import contextlib

import adbc_driver_manager
import pytest

from tests.conftest import edit


def _reload(gw) -> None:
    status = gw.reloader.check_now()
    assert status.ok, status.problems


def test_a_removed_api_key_stops_an_open_connection_at_its_next_call(own_flight_server) -> None:
    server = own_flight_server
    conn = server.connect()
    cur = conn.cursor()
    cur.execute("SELECT count(*) AS n FROM patients")
    assert cur.fetch_arrow_table().column("n")[0].as_py() > 0
    principals = server.world.directory / "policies" / "principals.yaml"
    text = principals.read_text()
    block = text[text.index("  alice:"):text.index("\n  bob:")]
    principals.write_text(text.replace(block, block[:block.index("    api_keys:")].rstrip("\n")))
    _reload(server.gw)
    with pytest.raises(adbc_driver_manager.Error, match="UNAUTHENTICATED"):
        cur.execute("SELECT count(*) AS n FROM patients WHERE region = 'EU'")
    last = [r for r in server.records() if r.extra.get("surface") == "flight"][-1]
    assert last.outcome == "denied" and last.status == 401 and last.principal is None
    for handle in (cur, conn):  # closing is refused too (the driver reports it its own way)
        with contextlib.suppress(adbc_driver_manager.Error):
            handle.close()


def test_changed_attributes_reach_an_open_connection(own_flight_server) -> None:
    server = own_flight_server
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT region FROM patients")
        assert cur.fetch_arrow_table().column("region").to_pylist() == ["EU"]
        edit(server.world.directory / "policies" / "principals.yaml",
             "      regions:\n      - EU\n      clearance: confidential",
             "      regions:\n      - US\n      clearance: confidential")
        _reload(server.gw)
        cur.execute("SELECT DISTINCT region FROM patients")
        assert cur.fetch_arrow_table().column("region").to_pylist() == ["US"]


def test_idle_sessions_expire_and_the_store_is_bounded() -> None:
    from govern.deliver.lifecycle import Password
    from govern.flight.sessions import Sessions

    sessions = Sessions(limit=2, idle=0.0)
    token = sessions.open(Password("alice", "k"), "alice")
    assert token.startswith("gf_") and sessions.get(token) is None  # idle for longer than 0 s
    bounded = Sessions(limit=2)
    first, *_rest = [bounded.open(Password("alice", "k"), "alice") for _ in range(3)]
    assert len(bounded) == 2 and bounded.get(first) is None  # the least recently used went first
