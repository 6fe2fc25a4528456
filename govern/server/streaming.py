"""Streaming encoders: Arrow IPC stream, Parquet, CSV and JSON lines, batch by batch.

Each encoder yields bytes as batches arrive, so memory stays bounded. The *end marker* of each
format (Arrow's end-of-stream, Parquet's footer, the last CSV/JSONL chunk) is produced only
after ``finish(rows, bytes)`` — the audit write — succeeds. If anything fails midway, the
generator raises, the server aborts the connection before the end marker, and a client sees an
incomplete stream (an error), never a short body that looks complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

MEDIA_TYPES = {
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
}


class _Sink:
    """A write-only file object whose contents are taken out after each batch."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False
        self.position = 0

    def write(self, data: Any) -> int:
        b = bytes(data)
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
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return value


def encode(fmt: str, reader: pa.RecordBatchReader, finish: Callable[[int, int], None]) -> Iterator[bytes]:
    """Yield the encoded stream; call ``finish(rows, bytes)`` before the end marker."""
    sink = _Sink()
    rows = 0
    sent = 0
    schema = reader.schema
    if fmt == "arrow":
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
        yield head
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
            yield chunk
    if fmt == "csv" and rows == 0:
        pass  # header already sent
    finish(rows, sent)
    if writer is not None:
        writer.close()
        tail = sink.take()
        if tail:
            yield tail
