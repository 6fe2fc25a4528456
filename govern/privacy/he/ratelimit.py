"""Per-principal rate limit of privacy releases (a sliding window, in process).

The privacy budget ledger bounds *how much* a principal learns; this bounds *how fast*, so a
script cannot drain a budget or hammer the decryptor in a burst. It counts per gateway process:
behind several processes the effective limit is the sum (the ledger still holds globally).
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
