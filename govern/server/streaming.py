"""Streaming encoders (Arrow IPC stream, Parquet, CSV, JSON lines) and the response that
carries them.

Each encoder yields chunks as batches arrive, so memory stays bounded. The *end marker* of each
format (Arrow's end-of-stream, Parquet's footer, the last CSV/JSONL chunk) is produced only
after ``finish(rows, bytes)`` — the audit write — succeeds. If anything fails midway, the
generator raises, the server aborts the connection before the end marker, and a client sees an
incomplete stream (an error), never a short body that looks complete.

Copies: an Arrow batch is serialized once (``RecordBatch.serialize``, the same bytes
``RecordBatchStreamWriter`` writes) and handed on as ``memoryview`` slices of at most
:data:`CHUNK` bytes, so neither this module nor Starlette copies it again (the HTTP server
frames it). Parquet, CSV and schemas with dictionaries go through pyarrow's writers and a
sink whose writes are joined once per batch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from govern.deliver.lifecycle import AuditedStream
from govern.errors import InvalidRequest, StorageError

__all__ = ["CHUNK", "MEDIA_TYPES", "PARQUET_FRAGMENT", "Chunk", "ReadStream", "encode", "stored"]

MEDIA_TYPES = {
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
}

# A fragment's stored Parquet: its row groups' bytes, then the file's footer (docs/api.md#fragments)
PARQUET_FRAGMENT = "application/vnd.govern.parquet-fragment"

CHUNK = 1 << 20  # bytes per ASGI message at most: the server's write buffer stays small
KNOWN_LENGTH = 8 * CHUNK  # bytes of a Parquet body held back to tell its Content-Length (ReadStream)
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC end-of-stream: continuation + length 0

Chunk = bytes | memoryview


class _Sink:
    """A write-only file object for pyarrow's writers; what they wrote is taken out per batch."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False
        self.position = 0

    def write(self, data: Any) -> int:
        b = data if type(data) is bytes else bytes(data)  # pyarrow hands over fresh bytes
        self._parts.append(b)
        self.position += len(b)
        return len(b)

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts.clear()
        return out


def _slices(data: Any) -> Iterator[memoryview]:
    """``data`` (bytes or an Arrow buffer) as views of at most CHUNK bytes, without copying."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), CHUNK):
        yield view[start:start + CHUNK]


def _has_dictionary(t: pa.DataType | pa.Schema) -> bool:
    if isinstance(t, pa.Schema):
        return any(_has_dictionary(f.type) for f in t)
    if pa.types.is_dictionary(t):
        return True
    return any(_has_dictionary(t.field(i).type) for i in range(t.num_fields))


# json.dumps(row, default=str, ensure_ascii=False) builds this encoder anew for every row
_JSONL = json.JSONEncoder(ensure_ascii=False, default=str)


def _is_binary(t: pa.DataType) -> bool:
    """Whether a top-level column's values come out of Arrow as bytes (hex in JSON lines)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or \
        getattr(pa.types, "is_binary_view", lambda _: False)(t)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return value


def encode(fmt: str, reader: pa.RecordBatchReader, finish: Callable[[int, int], None]) -> Iterator[Chunk]:
    """Yield the encoded stream; call ``finish(rows, bytes)`` before the end marker (``bytes``:
    what was yielded until then)."""
    if fmt == "arrow" and not _has_dictionary(reader.schema):
        yield from _arrow(reader, finish)
        return
    sink = _Sink()
    rows = 0
    sent = 0
    schema = reader.schema
    if fmt == "arrow":  # dictionaries: the writer emits the dictionary batches
        writer: Any = pa.ipc.new_stream(sink, schema)
    elif fmt == "parquet":
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
    elif fmt == "csv":
        try:
            writer = pacsv.CSVWriter(sink, schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            nested = ", ".join(f.name for f in schema if pa.types.is_nested(f.type))
            what = f"nested column(s) {nested}" if nested else "these column types"
            raise InvalidRequest(f"format csv cannot hold {what}: ask for arrow, parquet or jsonl") from None
    elif fmt == "jsonl":
        writer = None
    else:  # pragma: no cover - validated by the router
        raise ValueError(fmt)

    head = sink.take()
    if head:
        sent += len(head)
        yield from _slices(head)
    binary = fmt == "jsonl" and any(_is_binary(f.type) for f in schema)
    for batch in reader:
        rows += batch.num_rows
        if writer is None:
            records = batch.to_pylist()
            if binary:
                records = [{k: _jsonable(v) for k, v in row.items()} for row in records]
            chunk = "".join(_JSONL.encode(row) + "\n" for row in records).encode()
        else:
            if fmt == "parquet":
                writer.write_table(pa.Table.from_batches([batch], schema=schema))
            else:
                writer.write_batch(batch)
            chunk = sink.take()
        if chunk:
            sent += len(chunk)
            yield from _slices(chunk)
    finish(rows, sent)
    if writer is not None:
        writer.close()
        tail = sink.take()
        if tail:
            yield from _slices(tail)


def stored(open_file: Callable[[], Any], ranges: list[tuple[int, int]], rows: int,
           finish: Callable[[int, int], None]) -> Iterator[Chunk]:
    """Bytes ``[begin, end)`` of a stored file for each range, in order, as they are (nothing
    decoded); the last range is the end marker (a Parquet footer), sent only after
    ``finish(rows, bytes)`` (``bytes``: the whole body, whose size is known before it is sent).
    A file shorter than a range fails the stream (StorageError)."""
    with open_file() as handle:
        for i, (begin, end) in enumerate(ranges):
            if i == len(ranges) - 1:
                finish(rows, sum(e - b for b, e in ranges))
            handle.seek(begin)
            left = end - begin
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    raise StorageError("the stored file ended early")
                left -= len(chunk)
                yield chunk


def _arrow(reader: pa.RecordBatchReader, finish: Callable[[int, int], None]) -> Iterator[Chunk]:
    """The Arrow IPC stream format, message by message: schema, batches, end-of-stream."""
    head = reader.schema.serialize()
    sent = head.size
    rows = 0
    yield from _slices(head)
    for batch in reader:
        message = batch.serialize()  # the one copy: the batch's buffers into one IPC message
        rows += batch.num_rows
        sent += message.size
        yield from _slices(message)
    finish(rows, sent)
    yield _EOS


class ReadStream(StreamingResponse):
    """The response of a data-bearing request: an audited stream (:meth:`Exchange.stream`) that
    always ends, whatever the client does.

    The stream writes its record and frees its slot when it runs to its end or fails midway.
    A client that leaves midway, or before the first byte (Starlette then never starts the
    body), is handled here: the stream is closed when the response ends, in a worker thread
    (closing may write the audit store), shielded from the request's cancellation.
    """

    def __init__(self, stream: AuditedStream[Chunk], *, media_type: str, headers: dict[str, str] | None = None,
                 known_length: bool = False, length: int | None = None) -> None:
        if length is not None:  # a stored body's size, known before it is read: no chunked framing
            headers = {**(headers or {}), "content-length": str(length)}
        super().__init__(stream, media_type=media_type, headers=headers)
        self._stream = stream
        self._known_length = known_length
        self._taken: tuple[list[Chunk], bool] | None = None

    def prefetch(self, lost: Callable[[], bool] | None) -> ReadStream:
        """Run the stream up to its first message now, in the caller's thread (a sync route's
        worker thread): a small body — most reads — is then encoded and its record committed
        in the thread that planned it, instead of a second and third hand-off to a worker
        thread from the event loop (each costs a GIL hand-off under load; docs/performance.md#fleet).
        Nothing is sent before the response is; a failure here is raised to the route, as an
        error response, exactly as it would be from :meth:`__call__`. A client that leaves
        meanwhile finds its read recorded as sent, as one that leaves while a held body is
        being written does.

        ``lost``: whether the client has gone (:func:`govern.server.connections.lost_probe`).
        When it has, or when the server cannot tell (None), nothing runs here: :meth:`__call__`
        looks for the client first, as without a prefetch, and an abandoned read is recorded
        as such (499)."""
        if lost is None or lost():
            return self
        self._taken = self._first()
        return self

    def _first(self) -> tuple[list[Chunk], bool]:
        """The chunks up to the first message, held (:func:`_take`)."""
        self._stream.hold()
        return _take(self._stream, KNOWN_LENGTH if self._known_length else CHUNK)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ended = False
        try:
            if self._taken is None and await _left(receive):  # gone before the first byte: never runs (aborted)
                return
            if self._taken is None:
                self._taken = await anyio.to_thread.run_sync(self._first)
            held, ended = self._taken
            if ended:  # the whole body: one message with Content-Length, no streaming machinery
                body = b"".join(held)
                self.headers["content-length"] = str(len(body))
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                await send({"type": "http.response.body", "body": body})
                return
            await anyio.to_thread.run_sync(self._stream.release)  # reserved before a byte leaves
            rest = self.body_iterator

            async def resumed() -> AsyncIterator[Chunk]:
                for part in held:
                    yield part
                async for more in rest:
                    yield more  # type: ignore[misc]  # Starlette types its iterator loosely

            self.body_iterator = resumed()
            await super().__call__(scope, receive, send)
        finally:
            if not ended:  # a stream that ran to its end has nothing left to close
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._stream.close)


async def _left(receive: Receive) -> bool:
    """Whether the client has already disconnected: a look at the ASGI channel that never waits
    (a request body still queued is skipped, as Starlette's own disconnect listener does)."""
    with anyio.move_on_after(0):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return True
    return False


def _take(stream: AuditedStream[Chunk], limit: int) -> tuple[list[Chunk], bool]:
    """Pull chunks (in one worker-thread call) until more than ``limit`` bytes are held or the
    stream ends: (held chunks, whether it ended). A small body — most reads — then leaves as one
    message with ``Content-Length`` (a Parquet reader seeks to the footer and wants the size),
    and a failure before the first byte is an error response, not a broken stream."""
    held: list[Chunk] = []
    size = 0
    while size <= limit:
        chunk = next(stream, None)
        if chunk is None:
            return held, True
        held.append(chunk)
        size += len(chunk)
    return held, False
