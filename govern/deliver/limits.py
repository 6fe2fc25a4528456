"""Bounded work: read slots shared fairly between principals, and one deadline per request.

A gateway serves at most ``max_concurrent_reads`` data-bearing requests at once. Without a
per-principal share, one pipeline that opens many streams starves everyone else; with it, a
principal holds at most ``max_reads_per_principal`` slots and waits (up to ``queue_timeout``)
for one of its own to free, while others still get theirs.

A :class:`Deadline` is the one clock of a request: parse, validation and execution of a query,
a DP computation or an HE evaluation all check (or hand on) the same absolute instant, so no
stage can extend the request's time by starting its own timer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from govern.errors import Overloaded, QueryTimeout

__all__ = ["Deadline", "ReadSlots", "Slot"]


@dataclass(frozen=True)
class Deadline:
    """An absolute instant on the monotonic clock, and the budget it was made from."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def check(self, what: str = "the request") -> None:
        """Raise :class:`QueryTimeout` once the deadline has passed."""
        if self.expired():
            raise QueryTimeout(f"{what} ran longer than {self.seconds:g} s and was stopped",
                               limit=self.seconds, sqlstate="57014")


class Slot:
    """One held read slot; :meth:`release` is idempotent (a stream and its error path may both
    call it)."""

    def __init__(self, owner: ReadSlots, holder: str) -> None:
        self._owner = owner
        self.holder = holder
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._owner._give_back(self.holder)

    @property
    def held(self) -> bool:
        return self._held


class ReadSlots:
    """``total`` slots; no holder gets more than ``per_holder`` of them at once."""

    def __init__(self, total: int, per_holder: int) -> None:
        self.total = max(1, int(total))
        self.per_holder = max(1, min(int(per_holder), self.total))
        self._used = 0
        self._by_holder: Counter[str] = Counter()
        self._cond = threading.Condition()

    def acquire(self, holder: str, timeout: float) -> Slot:
        """A slot for ``holder``, waiting up to ``timeout`` seconds; else :class:`Overloaded`
        (with ``retry_after``), saying whether the holder's own share or the gateway is full."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                own = self._by_holder[holder]
                if self._used < self.total and own < self.per_holder:
                    self._used += 1
                    self._by_holder[holder] += 1
                    return Slot(self, holder)
                left = deadline - time.monotonic()
                if left <= 0:
                    if own >= self.per_holder:
                        raise Overloaded(f"you already have {own} reads running (at most {self.per_holder} per "
                                         "principal); retry when one has finished", retry_after=1,
                                         limit=self.per_holder)
                    raise Overloaded("too many concurrent reads; retry shortly", retry_after=1, limit=self.total)
                self._cond.wait(left)

    def in_use(self, holder: str | None = None) -> int:
        with self._cond:
            return self._used if holder is None else self._by_holder[holder]

    def _give_back(self, holder: str) -> None:
        with self._cond:
            self._used -= 1
            self._by_holder[holder] -= 1
            if not self._by_holder[holder]:
                del self._by_holder[holder]
            self._cond.notify_all()
