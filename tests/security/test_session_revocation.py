"""Finding: revocation did not reach open PostgreSQL wire sessions.

Attack: log in over the wire, keep the connection open, and keep querying after a steward
removed the API key from principals.yaml (or changed the principal's attributes). Rule changes
reached the session; key removal and attribute changes did not: the session kept reading with
the identity it had at login, for as long as the client kept it open.

The fix resolves the session's credentials again on every statement, under the policy the
gateway serves now, and ends the session (FATAL) when they no longer hold; sessions also have
an idle limit and a lifetime.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.conftest import edit


def _connect(port: int, world, who: str = "alice", purpose: str = "analytics") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user=who, password=world.keys[who], dbname=purpose,
                           connect_timeout=10, autocommit=True)


def _reload(gw) -> None:
    status = gw.reloader.check_now()
    assert status.ok, status.problems


def test_a_removed_api_key_ends_the_open_session(wire, world) -> None:
    port, gw = wire()
    with _connect(port, world) as conn:
        assert conn.execute("select count(*) from patients").fetchone()[0] > 0
        principals = world.directory / "policies" / "principals.yaml"
        text = principals.read_text()
        start = text.index("  alice:")
        block = text[start:text.index("\n  bob:")]
        keys_at = block.index("    api_keys:")
        principals.write_text(text.replace(block, block[:keys_at].rstrip("\n")))
        _reload(gw)
        with pytest.raises(psycopg.OperationalError) as raised:
            conn.execute("select count(*) from patients").fetchone()
    assert "28P01" in str(getattr(raised.value, "sqlstate", "")) or "authentication" in str(raised.value).lower()
    # the refused statement is audited, and no data left after the revocation
    last = [r for r in gw.audit.records(limit=1000) if r.principal in ("alice", None)][-1]
    assert last.outcome == "denied" and last.status == 401


def test_changed_attributes_reach_the_open_session(wire, world) -> None:
    port, gw = wire()
    with _connect(port, world) as conn:
        regions = {r[0] for r in conn.execute("select distinct region from patients").fetchall()}
        assert regions == {"EU"}
        edit(world.directory / "policies" / "principals.yaml", "      regions:\n      - EU\n      clearance: confidential",
             "      regions:\n      - US\n      clearance: confidential")
        _reload(gw)
        regions = {r[0] for r in conn.execute("select distinct region from patients").fetchall()}
    assert regions == {"US"}


def test_an_idle_session_is_closed(wire, world) -> None:
    port, _gw = wire(pg_idle_timeout=1.0)
    with _connect(port, world) as conn:
        conn.execute("select 1").fetchone()
        time.sleep(2.0)
        with pytest.raises(psycopg.OperationalError) as raised:
            conn.execute("select 1").fetchone()
    assert "idle" in str(raised.value).lower()


def test_a_session_has_a_lifetime(wire, world) -> None:
    port, _gw = wire(pg_session_lifetime=2.0)
    with _connect(port, world) as conn:
        deadline = time.monotonic() + 10
        with pytest.raises(psycopg.OperationalError) as raised:
            while time.monotonic() < deadline:  # busy, never idle for long: the lifetime still ends it
                conn.execute("select 1").fetchone()
                time.sleep(0.2)
    assert "lifetime" in str(raised.value).lower() or "at most" in str(raised.value).lower()
