"""HTTP connections that cannot be held open for free, on the fastest HTTP parser installed.

uvicorn closes a keep-alive connection that stays idle *after* a response, but a connection
that never sends a request, or sends its headers a byte at a time, is kept forever: a few
thousand of them exhaust the gateway's file descriptors (slowloris). :class:`HeadDeadline`
gives every connection ``http_idle_timeout`` seconds to deliver a complete request head — from
the moment it opens, and again after each response — and closes it otherwise. A request whose
head has arrived is the application's business (its body is read with size limits and its work
has the request's deadline).

The mixin also tells the application whether the client has gone, without waiting and from any
thread: the ASGI scope extension :data:`LOST` (a callable, read with :func:`lost_probe`), which
asks the kernel (:func:`peer_closed`) when the event loop has not yet seen the close — a worker
thread holding the GIL runs ahead of the loop. ASGI's
own way is to await ``receive()``, which a sync route's worker thread cannot do without a
hand-off back to the event loop; :meth:`govern.server.streaming.ReadStream.prefetch` asks it
before it runs a read in the route's thread, so that a read whose client has already left is
still recorded as abandoned (499), never as sent.

The deadline is a mixin over uvicorn's two HTTP protocols, which share the hooks it needs
(``connection_made``, ``data_received``, ``on_response_complete``, ``cycle``).
:func:`idle_closing_protocol` takes httptools' (llhttp, in C; the ``server`` extra installs it,
as uvicorn's own ``standard`` extra would) and falls back to h11's (pure Python) where httptools
cannot be imported. (Alone, the switch made no difference the fleet benchmark could see:
docs/performance.md#fleet.)
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["LOST", "HeadDeadline", "IdleClosingH11", "idle_closing_protocol", "lost_probe", "peer_closed"]

LOST = "govern.connection_lost"  # scope["extensions"][LOST]: () -> bool, whether the client has gone


def lost_probe(scope: Scope) -> Callable[[], bool] | None:
    """Whether the request's client has gone, asked without waiting; None when the server does
    not say (any server but ``govern serve``'s, e.g. an in-process test client)."""
    return (scope.get("extensions") or {}).get(LOST)


def peer_closed(fd: int) -> bool:
    """Whether the peer of the connected socket ``fd`` has closed or reset it, as the kernel
    knows now: a peek that neither waits nor consumes (a pipelined request stays where it is)."""
    try:
        peer = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False  # not a socket we can ask: the event loop's flag answers alone
    try:
        return peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False  # open, nothing waiting
    except OSError:
        return True  # reset
    finally:
        peer.close()  # the duplicate only: the connection's own descriptor stays open


class HeadDeadline:
    """Close a connection whose request head does not arrive within ``timeout_keep_alive``."""

    app: ASGIApp
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    timeout_keep_alive: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._lost = False
        self._fd = -1
        inner = self.app

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope["extensions"] = {**(scope.get("extensions") or {}), LOST: self.lost}
            await inner(scope, receive, send)

        self.app = app

    def lost(self) -> bool:
        """Whether the client has gone: the connection was lost, or the kernel already holds the
        client's end of stream (or a reset) that the event loop has not read yet — the caller
        is a worker thread, and the loop may not have run since (a loaded machine). Safe from
        any thread."""
        if self._lost or self.transport.is_closing():
            return True
        return self._fd >= 0 and peer_closed(self._fd)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._in_request():
            self._disarm()  # the head is in: the request is running

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
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


class IdleClosingH11(HeadDeadline, H11Protocol):
    """h11 (pure Python) with the head deadline."""


def idle_closing_protocol() -> type:
    """httptools' protocol with the head deadline when httptools imports, else h11's."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return IdleClosingH11

    class IdleClosingHttpTools(HeadDeadline, HttpToolsProtocol):
        """httptools (llhttp, C) with the head deadline."""

    return IdleClosingHttpTools
