"""A raw HTTP server on loopback that answers exactly the bytes a test chooses: a gateway that
misbehaves on purpose (a body cut short at an Arrow message boundary, a chunked body without
its last chunk), which no real server can be made to do. It stands in for the gateway, never
for a client: the client under test is an adapter's own reader."""

from __future__ import annotations

import socket
import threading

import pyarrow as pa


class RawServer:
    """Answers every connection with ``self.answer`` (head and body bytes), then closes."""

    def __init__(self) -> None:
        self.answer = b""
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)  # the request: one GET, small
                conn.sendall(self.answer)

    def close(self) -> None:
        self._sock.close()


def head(status: str, content_type: str, **headers: str) -> bytes:
    """A response head; ``content_length="9"`` is sent as ``content-length: 9``."""
    lines = [f"HTTP/1.1 {status}", f"content-type: {content_type}", "connection: close",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, *, last: bool) -> bytes:
    """``body`` in chunked framing, with or without its terminating chunk."""
    out = b"".join(b"%x\r\n" % len(body[i:i + 64]) + body[i:i + 64] + b"\r\n" for i in range(0, len(body), 64))
    return out + (b"0\r\n\r\n" if last else b"")


def arrow_stream(table: pa.Table, batch_rows: int) -> tuple[bytes, int]:
    """``table`` as an Arrow IPC stream of ``batch_rows``-row batches, and where its last batch
    begins: cut there, the stream is a valid, shorter one (the format itself cannot tell)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        batches = table.to_batches(max_chunksize=batch_rows)
        for batch in batches[:-1]:
            writer.write_batch(batch)
        boundary = sink.tell()
        writer.write_batch(batches[-1])
    return sink.getvalue().to_pybytes(), boundary
