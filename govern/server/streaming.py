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

import inspect
import json
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from govern.errors import GovernError

if TYPE_CHECKING:
    from govern.deliver.gateway import Gateway, RequestContext

__all__ = ["CHUNK", "MEDIA_TYPES", "ReadStream", "audited_stream", "encode"]

MEDIA_TYPES = {
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
}

CHUNK = 1 << 20  # bytes per ASGI message at most: the server's write buffer stays small
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
        writer = pacsv.CSVWriter(sink, schema)
    elif fmt == "jsonl":
        writer = None
    else:  # pragma: no cover - validated by the router
        raise ValueError(fmt)

    head = sink.take()
    if head:
        sent += len(head)
        yield from _slices(head)
    for batch in reader:
        rows += batch.num_rows
        if writer is None:
            chunk = "".join(
                json.dumps({k: _jsonable(v) for k, v in row.items()}, default=str, ensure_ascii=False) + "\n"
                for row in batch.to_pylist()).encode()
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
    """A streamed read that always ends, whatever the client does.

    The body generator cleans up after itself (releases the read slot, writes the audit record)
    in its ``finally`` — but only once it has started. A client that leaves before the first
    byte means Starlette never starts it, so here the generator is closed when the response
    ends, and if it never ran, ``abandoned()`` does its cleanup instead. Both run in a worker
    thread (they may write the audit store), shielded from the request's cancellation.
    """

    def __init__(self, body: Generator[Chunk, None, None], abandoned: Callable[[], None], *,
                 media_type: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self._body = body
        self._abandoned = abandoned

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._end)

    def _end(self) -> None:
        never_ran = inspect.getgeneratorstate(self._body) == inspect.GEN_CREATED
        self._body.close()  # suspended midway: runs its GeneratorExit handling; finished: no-op
        if never_ran:
            self._abandoned()


def audited_stream(gw: Gateway, ctx: RequestContext, chunks: Iterator[Chunk], *, media_type: str,
                   headers: dict[str, str] | None = None, close: Callable[[], None] = lambda: None) -> ReadStream:
    """The response of a data-bearing read that holds a read slot (``gw.acquire_read_slot``).

    ``chunks`` is an encoder (:func:`encode`) whose ``finish`` writes the ``ok`` audit record.
    Whatever else happens, exactly one record is written and the slot is freed exactly once: a
    client that leaves — midway or before the first byte — gets ``aborted``/499; a failure
    midway gets ``aborted`` with the error's status, and the connection is cut before the end
    marker. ``close`` frees the source (a governed reader, a query) when the stream did not
    run to its end."""

    def record_abort(status: int, detail: str) -> None:
        try:
            gw.record(ctx, outcome="aborted", status=status, detail=detail[:500])
        except GovernError:  # the audit store failed too: its pending marker records the request
            pass

    def body() -> Generator[Chunk, None, None]:
        finished = False
        try:
            yield from chunks
            finished = True
        except GeneratorExit:  # the client went away: the response did not complete
            record_abort(499, "client disconnected")
            raise
        except Exception as exc:
            detail = f"{exc.slug}: {exc.detail}" if isinstance(exc, GovernError) else type(exc).__name__
            record_abort(getattr(exc, "status", 500), f"stream aborted: {detail}")
            raise
        finally:
            gw.release_read_slot()
            if not finished:
                close()

    def abandoned() -> None:  # the client left before the first byte: body() never ran
        try:
            record_abort(499, "client disconnected before the stream started")
        finally:
            gw.release_read_slot()
            close()

    return ReadStream(body(), abandoned, media_type=media_type, headers=headers)
