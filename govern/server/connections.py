"""HTTP connections that cannot be held open for free.

uvicorn closes a keep-alive connection that stays idle *after* a response, but a connection
that never sends a request, or sends its headers a byte at a time, is kept forever: a few
thousand of them exhaust the gateway's file descriptors (slowloris). :class:`IdleClosingH11`
gives every connection ``http_idle_timeout`` seconds to deliver a complete request head — from
the moment it opens, and again after each response — and closes it otherwise. A request whose
head has arrived is the application's business (its body is read with size limits and its work
has the request's deadline).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["IdleClosingH11"]


class IdleClosingH11(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._disarm()  # the head is in: the request is running

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request's head must arrive in time too

    def _in_request(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._expire)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expire(self) -> None:
        self._head_timer = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()
