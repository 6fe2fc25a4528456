"""Several gateways, one truth: which policy version each instance serves, and reload convergence.

Instances that share one PostgreSQL (``audit_url = postgresql://…``) form a fleet. Each one

- **heartbeats** into ``<audit_table_prefix>fleet_instances`` every ``fleet_heartbeat`` seconds:
  its id, host, pid, endpoint, the policy version it serves and since when (database time, so
  skewed clocks do not matter), so :func:`fleet_status` — the console's Fleet page, ``govern``
  operators — can list every instance and tell whether they agree;
- **announces** every policy it installs with ``NOTIFY <prefix>policy, '<version>'`` and
  **listens** on that channel: a peer that hears a version other than its own re-reads the shared
  policy folder at once (``PolicyReloader.check_now``: the same validation, last-known-good on
  a broken edit). A Git pull on shared storage that one instance's file watcher notices (or an
  operator's reload) thus reaches every instance within the time a notification takes, not the
  time each watcher takes — and instances whose storage sends no file events (NFS) follow too;
- re-reads the folder every ``fleet_recheck`` seconds as well, so a notification lost while
  PostgreSQL was restarting delays convergence by at most that long.

The convergence bound is therefore ``fleet_recheck`` in the worst case and one notification
round trip (milliseconds) normally; ``tests/fleet`` measures it under faults. Nothing here
decides anything: an instance that cannot reach PostgreSQL keeps serving its policy (the audit
log, not the fleet table, is what refuses requests when the database is gone) and retries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from govern.store import check_prefix, describe_dsn

__all__ = ["Fleet", "Instance", "converged", "fleet_status"]

log = logging.getLogger("govern.fleet")


def _table(prefix: str) -> str:
    return f"{check_prefix(prefix)}fleet_instances"


def _channel(prefix: str) -> str:
    return f"{check_prefix(prefix)}policy"


def _schema(prefix: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {_table(prefix)} (
        instance_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, endpoint TEXT,
        policy_version TEXT NOT NULL, policy_since TIMESTAMPTZ NOT NULL,
        started TIMESTAMPTZ NOT NULL, heartbeat TIMESTAMPTZ NOT NULL)"""


@dataclass(frozen=True)
class Instance:
    """One gateway as the fleet table saw it last."""

    instance_id: str
    host: str
    pid: int
    endpoint: str | None
    policy_version: str
    since: datetime  # when it started serving policy_version
    started: datetime
    heartbeat: datetime
    alive: bool  # heartbeat within the staleness bound

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance_id, "host": self.host, "pid": self.pid, "endpoint": self.endpoint,
                "policy_version": self.policy_version, "since": _iso(self.since), "started": _iso(self.started),
                "heartbeat": _iso(self.heartbeat), "alive": self.alive}


def fleet_status(dsn: str, prefix: str = "govern_", *, stale_after: float = 10.0,
                 include_dead: bool = False) -> list[Instance]:
    """Every instance that heartbeats into ``dsn`` (alive: within ``stale_after`` seconds of the
    database's clock), newest first. For the console's Fleet page and for operators; an empty
    list when no instance ever registered."""
    import psycopg

    sql = (f"SELECT instance_id, host, pid, endpoint, policy_version, policy_since, started, heartbeat, "
           f"heartbeat > now() - make_interval(secs => %s) FROM {_table(prefix)} ")
    if not include_dead:
        sql += "WHERE heartbeat > now() - make_interval(secs => %s) "
    sql += "ORDER BY started DESC, instance_id"
    params: tuple[Any, ...] = (stale_after,) if include_dead else (stale_after, stale_after)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (_table(prefix),)).fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = conn.execute(sql, params).fetchall()
    return [Instance(str(r[0]), str(r[1]), int(r[2]), r[3], str(r[4]), r[5], r[6], r[7], bool(r[8])) for r in rows]


def converged(instances: list[Instance]) -> str | None:
    """The one policy version every live instance serves, or None when they disagree (or none)."""
    versions = {i.policy_version for i in instances if i.alive}
    return versions.pop() if len(versions) == 1 else None


class Fleet:
    """This instance's membership: heartbeat, announce, listen, recheck (one daemon thread)."""

    def __init__(self, dsn: str, prefix: str, serving: Callable[[], tuple[str, float]],
                 follow: Callable[[], Any] | None, *, endpoint: str | None = None,
                 instance_id: str | None = None, heartbeat: float = 2.0, recheck: float = 30.0) -> None:
        self._dsn = dsn
        self.prefix = check_prefix(prefix)
        self._serving = serving  # -> (policy version, since as a unix time)
        self._follow = follow  # re-read the shared policy folder (None: never follow peers)
        self.endpoint = endpoint
        self.instance_id = instance_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.heartbeat, self.recheck = heartbeat, recheck
        self._where = describe_dsn(dsn)[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self.heard = 0  # notifications received (a metric for tests and operators)

    def __repr__(self) -> str:
        return f"Fleet({self._where!r}, instance={self.instance_id!r})"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="govern-fleet", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def announce(self) -> None:
        """Record the version this instance now serves and tell every peer (best effort: a peer
        that misses it catches up at its next recheck)."""
        try:
            import psycopg

            with psycopg.connect(self._dsn, autocommit=True, connect_timeout=3) as conn:
                self._beat(conn)
                conn.execute("SELECT pg_notify(%s, %s)", (_channel(self.prefix), self._serving()[0]))
        except Exception as exc:
            log.warning("policy version not announced to the fleet on %s: %s", self._where, type(exc).__name__)

    # -- the thread --------------------------------------------------------------------------------
    def _beat(self, conn: Any) -> None:
        version, since = self._serving()
        conn.execute(
            f"INSERT INTO {_table(self.prefix)} (instance_id, host, pid, endpoint, policy_version, policy_since, "
            "started, heartbeat) VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), now()) "
            "ON CONFLICT (instance_id) DO UPDATE SET policy_version = excluded.policy_version, "
            "policy_since = excluded.policy_since, endpoint = excluded.endpoint, heartbeat = now()",
            (self.instance_id, socket.gethostname(), os.getpid(), self.endpoint, version, since, self._started))

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._session()
                backoff = 0.2
            except Exception as exc:  # PostgreSQL restarting, unreachable: retry, keep serving
                log.warning("fleet heartbeat on %s failed: %s", self._where, type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.heartbeat)

    def _session(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
            table_lock = int.from_bytes(_table(self.prefix).encode()[:8].ljust(8, b"_"), "big", signed=True)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (table_lock,))
                conn.execute(_schema(self.prefix))
            conn.execute(f"LISTEN {_channel(self.prefix)}")
            self._beat(conn)
            self._follow_now()  # a version announced while this instance was away
            next_beat = time.monotonic() + self.heartbeat
            next_check = time.monotonic() + self.recheck
            while not self._stop.is_set():
                wait = max(0.05, min(next_beat, next_check) - time.monotonic())
                for note in conn.notifies(timeout=min(wait, 0.5)):
                    self.heard += 1
                    if note.payload != self._serving()[0]:
                        self._follow_now()
                now = time.monotonic()
                if now >= next_check:
                    self._follow_now()
                    next_check = now + self.recheck
                if now >= next_beat:
                    self._beat(conn)
                    next_beat = now + self.heartbeat

    def _follow_now(self) -> None:
        if self._follow is None:
            return
        try:
            self._follow()
        except Exception:
            log.exception("re-reading the shared policy failed")


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")
