"""Finding: idle HTTP connections were never closed.

Attack (slowloris): open TCP connections to the gateway and send nothing, or send a request's
headers a byte at a time. uvicorn closed a keep-alive connection only when it sat idle *after*
a response, so these connections stayed open forever and a few thousand of them exhaust the
gateway's file descriptors. Now every connection has ``http_idle_timeout`` seconds to deliver a
complete request head.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from tests.gateway import start_server, stop_server


@pytest.fixture(scope="module")
def server(demo_world, tmp_path_factory):
    import json
    import shutil

    from tests.gateway import World

    d = tmp_path_factory.mktemp("idle") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    s = start_server(World(d, json.loads((d / "keys.json").read_text())), "--pg-port", "0",
                     env={**os.environ, "GOVERN_HTTP_IDLE_TIMEOUT": "1"})
    yield s
    stop_server(s)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (reading and dropping what it sends)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def _connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_a_connection_that_sends_nothing_is_closed(server) -> None:
    with _connect(server) as sock:
        assert _closed_within(sock, 5.0)


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(server) -> None:
    with _connect(server) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        sock.settimeout(0.2)
        closed = False
        for i in range(len(head)):  # one byte every 0.1 s: the head would take 10 s
            try:
                sock.sendall(head[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if _closed_within(sock, 0.1):
                closed = True
                break
        assert closed


def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not(server) -> None:
    with _connect(server) as sock:
        for _ in range(3):  # requests in quick succession on one connection are served
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            answer = b""
            while b'{"status":"ok"}' not in answer:
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.3)
        assert _closed_within(sock, 5.0)
