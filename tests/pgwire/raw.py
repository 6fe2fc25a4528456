"""A minimal PostgreSQL wire client for byte-level tests, and an in-process wire server fixture.

Real clients (psql, psycopg) are tested too; this one exists to send exactly the messages a test
means to send, in an order a real client might not (Describe without Execute, say)."""

from __future__ import annotations

import socket
import struct

import pytest

from govern.config import load_settings
from govern.pgwire.server import PgServerThread
from govern.server.app import build_gateway
from tests.gateway import shared_sql_service

__all__ = ["Raw", "bind", "cstr", "data_values", "execute", "fields", "parse", "wire"]


class Raw:
    """A minimal PostgreSQL client: sends frames, reads (type, body) messages."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, kind: bytes, body: bytes = b"") -> None:
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)

    def startup(self, **params: str) -> None:
        body = struct.pack("!i", 3 << 16) + b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                                                     for k, v in params.items()) + b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)

    def recv(self) -> tuple[bytes, bytes]:
        kind = self._read(1)
        (length,) = struct.unpack("!i", self._read(4))
        return kind, self._read(length - 4)

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        out = []
        while True:
            kind, body = self.recv()
            out.append((kind, body))
            if kind == b"Z":
                return out

    def login(self, user: str, password: str, database: str) -> list[tuple[bytes, bytes]]:
        self.startup(user=user, database=database, application_name="raw")
        assert self.recv() == (b"R", struct.pack("!i", 3))  # cleartext password, please
        self.send(b"p", password.encode() + b"\0")
        return self.until_ready()

    def close(self) -> None:
        self.sock.close()


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def fields(body: bytes) -> dict[str, str]:
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[part[:1].decode()] = part[1:].decode()
    return out


def parse(name: str, sql: str, oids: list[int] = ()) -> bytes:  # type: ignore[assignment]
    return cstr(name) + cstr(sql) + struct.pack(f"!h{len(oids)}I", len(oids), *oids)


def bind(portal: str, statement: str, values: list[bytes | None], param_formats: list[int] = (),  # type: ignore[assignment]
         result_formats: list[int] = ()) -> bytes:  # type: ignore[assignment]
    body = cstr(portal) + cstr(statement) + struct.pack(f"!h{len(param_formats)}h", len(param_formats), *param_formats)
    body += struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return body + struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats)


def execute(portal: str, max_rows: int = 0) -> bytes:
    return cstr(portal) + struct.pack("!i", max_rows)


def data_values(body: bytes) -> list[bytes | None]:
    (n,) = struct.unpack("!h", body[:2])
    pos, out = 2, []
    for _ in range(n):
        (length,) = struct.unpack("!i", body[pos:pos + 4])
        pos += 4
        if length < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + length])
            pos += length
    return out


@pytest.fixture
def wire(world):
    """A gateway and its wire server in this process, on a free port."""
    servers = []

    def start(**overrides) -> tuple[int, object]:
        settings = load_settings(world.config, watch_policies=False, **overrides)
        gw = build_gateway(settings, sql_service=shared_sql_service(settings))
        server = PgServerThread(gw, "127.0.0.1", 0)
        server.start()
        servers.append((server, gw))
        return server.port, gw

    yield start
    for server, gw in servers:
        server.stop()
        gw.audit.close()
