"""Per-principal rate limit of privacy releases (a sliding window).

The privacy budget ledger bounds *how much* a principal learns; this bounds *how fast*, so a
script cannot drain a budget or hammer the decryptor in a burst. :class:`RateLimiter` counts in
process (one gateway on SQLite); :class:`SharedRateLimiter` counts in PostgreSQL, so gateways
sharing ``ledger_url`` share one limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from govern.errors import RateLimited


class RateLimiter:
    def __init__(self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._events: dict[str, deque[float]] = {}

    def take(self, principal: str) -> None:
        """Count one release for ``principal``, or raise RateLimited (nothing counted)."""
        now = self._clock()
        with self._lock:
            events = self._events.setdefault(principal, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                wait = max(1, math.ceil(events[0] + self.window - now))
                raise RateLimited(f"at most {self.limit} releases per {self.window:g} s; retry in {wait} s",
                                  retry_after=wait, limit=self.limit)
            events.append(now)


class SharedRateLimiter:
    """The same sliding window, kept in PostgreSQL so that it holds across every gateway
    process sharing ``ledger_url`` (issue 17): ``<prefix>release_events`` holds one row per
    counted release; a take locks the principal's row in ``<prefix>release_principals``, drops
    events older than the window, counts, and inserts — one transaction, database time (so
    skewed clocks between hosts do not matter). A store that cannot be reached fails the
    release (``LedgerError``, 503): closed, like the ledger it sits beside."""

    def __init__(self, dsn: str, prefix: str, limit: int, window: float = 60.0) -> None:
        from govern.errors import LedgerError
        from govern.store import PostgresDatabase, Role

        self.limit = limit
        self.window = window
        p = prefix

        def setup(cur, dialect) -> None:  # type: ignore[no-untyped-def]
            cur.execute(f"CREATE TABLE IF NOT EXISTS {p}release_principals (principal TEXT PRIMARY KEY)")
            cur.execute(f"CREATE TABLE IF NOT EXISTS {p}release_events (principal TEXT NOT NULL, "
                        "at DOUBLE PRECISION NOT NULL)")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {p}release_events_who ON {p}release_events (principal, at)")

        role = Role("release rate limiter", LedgerError, "govern.privacy.he.ratelimit", "govern-ratelimit",
                    passthrough=(RateLimited,))
        self.db = PostgresDatabase(role, dsn, prefix, setup)

    def take(self, principal: str) -> None:
        """Count one release for ``principal`` across the fleet, or raise RateLimited."""
        sql = self.db.sql
        ensure = sql("INSERT INTO {p}release_principals (principal) VALUES (?) ON CONFLICT DO NOTHING")
        lock = sql("SELECT extract(epoch FROM clock_timestamp())::float8 FROM {p}release_principals "
                   "WHERE principal = ?" + self.db.dialect.lock_clause)
        prune = sql("DELETE FROM {p}release_events WHERE principal = ? AND at <= ?")
        count = sql("SELECT COUNT(*), MIN(at) FROM {p}release_events WHERE principal = ?")
        insert = sql("INSERT INTO {p}release_events (principal, at) VALUES (?, ?)")

        def tx(cur) -> None:  # type: ignore[no-untyped-def]
            cur.execute(ensure, (principal,))
            now = float(cur.execute(lock, (principal,)).fetchone()[0])
            cur.execute(prune, (principal, now - self.window))
            n, first = cur.execute(count, (principal,)).fetchone()
            if int(n) >= self.limit:
                wait = max(1, math.ceil(float(first) + self.window - now))
                raise RateLimited(f"at most {self.limit} releases per {self.window:g} s; retry in {wait} s",
                                  retry_after=wait, limit=self.limit)
            cur.execute(insert, (principal, now))

        self.db.write("take", tx)

    def close(self) -> None:
        self.db.close()
