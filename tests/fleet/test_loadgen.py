"""The fleet benchmark's load generator (benchmarks/loadgen.py) against a real gateway: it must
count exactly what a client receives — a Content-Length body, a chunked one to its terminal
chunk — and a cut stream as a failure, or the throughput it reports means nothing."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from loadgen import Call, Connection

from tests.gateway import start_server, stop_server


def test_it_reads_what_the_gateway_sends_on_one_connection(world) -> None:
    s = start_server(world, "--pg-port", "0", "--flight-port", "0")
    try:
        headers = {**world.auth("alice"), "X-Purpose": "analytics"}
        path = "/v1/datasets/patients/rows?limit=20&format=jsonl"
        want = httpx.get(s.url + path, headers=headers)
        denied = Call.of("read", s.url, "GET", path, {**headers, "X-Purpose": "no-such-purpose"})
        call = Call.of("read", s.url, "GET", path, headers)

        async def run() -> list[tuple[int, int]]:
            conn = Connection(s.url)
            try:
                return [await conn.send(c, 30) for c in (call, call, denied, call)]
            finally:
                conn.close()

        got = asyncio.run(run())
        assert got[0] == got[1] == got[3] == (200, len(want.content))
        assert got[2][0] == 403 and got[2][1] > 0
    finally:
        stop_server(s)


def test_a_chunked_body_cut_short_is_a_failure() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        conn.close()  # no terminal chunk

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{port}"

    async def run() -> None:
        await Connection(url).send(Call.of("x", url, "GET", "/", {}), 5)

    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(run())
    listener.close()
