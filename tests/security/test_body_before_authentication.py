"""Finding: ``POST /v1/datasets/{name}/reidentify`` read and buffered the whole body before it
authenticated the caller (FastAPI parsed it into a model first): a 300 MB body from anyone cost
the gateway 800 MB of memory.

Now no route reads a body before its caller is authenticated (401 without reading it), and a
body declared or found larger than the route's limit is refused (413) before it is read whole.
The attack here declares a 300 MB body and sends none of it: the answer must come at once.
"""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from tests.gateway import World, start_server, stop_server

ROUTES = ["/v1/datasets/patients/reidentify", "/v1/sql", "/v1/datasets/patients/dp",
          "/v1/datasets/patients/encrypted", "/v1/datasets/patients/encrypted-query", "/v1/he/release",
          "/v1/datasets/patients/synthetic", "/v1/datasets/patients/synthetic/fit"]


@pytest.fixture(scope="module")
def server(demo_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("bodies") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    s = start_server(World(d, json.loads((d / "keys.json").read_text())), "--pg-port", "0")
    yield s
    stop_server(s)


def _post_head(server, path: str, headers: dict[str, str], declared: int) -> bytes:
    """Send only the head of a POST that declares ``declared`` body bytes; return the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        sock.settimeout(3)  # the body never comes: a server waiting for it times this out
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize("path", ROUTES)
def test_an_unauthenticated_body_is_never_read(server, path: str) -> None:
    answer = _post_head(server, path, {}, 300 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


@pytest.mark.parametrize("path", ROUTES)
def test_an_oversized_body_is_refused_before_it_is_read(server, path: str) -> None:
    answer = _post_head(server, path, server.world.auth("carol"), 300 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
