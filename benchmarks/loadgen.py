"""A lean HTTP/1.1 load generator on asyncio streams, for benchmarks that measure the gateway
rather than the client: one event loop drives every connection, requests are prebuilt bytes and
responses are parsed just enough to be checked (status, Content-Length or chunked framing to the
terminal chunk, so a stream cut midway counts as a failure). About 0.1 ms of CPU per request
(``benchmarks/fleet.py`` reports its cores busy), which matters when the generator shares the
gateways' cores. Imported as a sibling module (benchmarks run as scripts)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Call:
    """One prebuilt request."""

    kind: str
    raw: bytes

    @classmethod
    def of(cls, kind: str, url: str, method: str, path: str, headers: dict[str, str],
           body: bytes = b"") -> Call:
        host = urlsplit(url).netloc
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        return cls(kind, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


class Connection:
    """One keep-alive connection; reopened after any failure."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, call: Call, timeout: float) -> tuple[int, int]:
        """(status, body bytes) of one exchange; raises on a broken or cut response."""
        try:
            return await asyncio.wait_for(self._exchange(call), timeout)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, call: Call) -> tuple[int, int]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(call.raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        size = 0
        if "content-length" in headers:
            size = int(headers["content-length"])
            await self._reader.readexactly(size)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                n = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if n == 0:
                    await self._reader.readuntil(b"\r\n")  # no trailers are sent
                    break
                await self._reader.readexactly(n + 2)
                size += n
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, size

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
