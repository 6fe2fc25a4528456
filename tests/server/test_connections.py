"""``peer_closed``: what ``govern serve``'s connection probe (``LOST``) asks the kernel when the
event loop has not yet read a client's close — a read run ahead in a worker thread
(``ReadStream.prefetch``) must not be recorded as sent to a client that had already gone
(tests/server/test_streaming.py abandons reads end to end). Real TCP sockets on loopback."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from govern.server.connections import peer_closed


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the server's end, the client's end) of one loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield server, client
    server.close()
    client.close()


def _soon(condition) -> bool:  # type: ignore[no-untyped-def]
    """The kernel delivers a close asynchronously, even on loopback: allow it a moment."""
    deadline = time.monotonic() + 5
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_an_open_connection_is_not_closed_and_a_pipelined_request_stays_unread(pair) -> None:
    server, client = pair
    assert not peer_closed(server.fileno())
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    time.sleep(0.05)
    assert not peer_closed(server.fileno())
    assert server.recv(100) == b"GET / HTTP/1.1\r\n\r\n"  # peeked, not consumed


def test_a_client_that_closed_or_reset_is_seen_before_anything_reads_it(pair) -> None:
    server, client = pair
    client.close()  # FIN
    assert _soon(lambda: peer_closed(server.fileno()))
    assert server.fileno() >= 0 and server.recv(1) == b""  # the server's own descriptor is untouched


def test_a_reset_is_closed(pair) -> None:
    server, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST
    assert _soon(lambda: peer_closed(server.fileno()))


def test_a_request_then_a_close_is_closed(pair) -> None:
    """The abandoned read: a whole request, then the client goes (what the probe is for)."""
    server, client = pair
    client.sendall(b"GET /v1/datasets/patients/rows HTTP/1.1\r\n\r\n")
    client.close()
    time.sleep(0.05)
    assert not peer_closed(server.fileno())  # the request is queued ahead of the close: unread, not gone
    server.recv(100)  # the event loop read the request ...
    assert _soon(lambda: peer_closed(server.fileno()))  # ... and the close is seen before it reads again


def test_a_descriptor_that_is_not_a_socket_is_not_closed() -> None:
    r, w = os.pipe()
    try:
        assert not peer_closed(r)
    finally:
        os.close(r)
        os.close(w)
