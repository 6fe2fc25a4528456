"""The encrypted view container: an Arrow IPC stream of serialized TenSEAL objects.

Schema (one row per object, one record batch per row so the stream stays memory-bounded)::

    kind    utf8          "context" | "values" | "selected" | "group"
    column  utf8 (null)   the column name for "values", the group key for "group"
    chunk   int32         chunk number: rows [chunk·slots, (chunk+1)·slots)
    data    large_binary  a serialized TenSEAL context (public) or CKKSVector

The schema metadata ``govern.he`` holds the header (JSON): format version, view id, dataset,
purpose, key id, CKKS parameters, row and chunk counts, columns with their clipping bounds,
filter, groups, whether Galois keys are included, the view token and its expiry. The first row
is the public context; then, chunk by chunk, each column's values, the ``selected`` 0/1 vector
and one 0/1 vector per group. Every vector has ``slots`` entries; the last chunk is padded
with zeros (unselected).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

FORMAT = "govern-he-view/1"
MEDIA_TYPE = "application/vnd.apache.arrow.stream"
METADATA_KEY = b"govern.he"
SCHEMA = pa.schema([("kind", pa.string()), ("column", pa.string()), ("chunk", pa.int32()),
                    ("data", pa.large_binary())])
Item = tuple[str, str | None, int, bytes]


def reader(header: dict[str, Any], items: Iterable[Item]) -> pa.RecordBatchReader:
    """A record batch reader over ``items``, produced lazily (each is encrypted on demand)."""
    schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(header, sort_keys=True).encode()})

    def batches() -> Iterator[pa.RecordBatch]:
        for kind, column, chunk, data in items:
            yield pa.record_batch([pa.array([kind]), pa.array([column], pa.string()), pa.array([chunk], pa.int32()),
                                   pa.array([data], pa.large_binary())], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


@dataclass
class Container:
    """A received view: header, public context bytes, and ciphertext bytes by (kind, column)."""

    header: dict[str, Any]
    context: bytes
    vectors: dict[tuple[str, str | None], list[bytes]] = field(default_factory=dict)


def read(source: Any) -> Container:
    """Parse a container from bytes, a file object, or a record batch reader."""
    if isinstance(source, bytes | bytearray | memoryview):
        source = pa.BufferReader(pa.py_buffer(source))
    stream = source if isinstance(source, pa.RecordBatchReader) else pa.ipc.open_stream(source)
    meta = stream.schema.metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError("not a govern encrypted view (no govern.he header)")
    header = json.loads(meta[METADATA_KEY])
    if header.get("format") != FORMAT:
        raise ValueError(f"unsupported container format {header.get('format')!r}")
    context = b""
    chunks: dict[tuple[str, str | None], dict[int, bytes]] = {}
    for batch in stream:
        rows = batch.to_pydict()
        for kind, column, chunk, data in zip(rows["kind"], rows["column"], rows["chunk"], rows["data"], strict=True):
            if kind == "context":
                context = data
            else:
                chunks.setdefault((kind, column), {})[chunk] = data
    expected = int(header["chunks"])
    vectors = {}
    for key, parts in chunks.items():
        if sorted(parts) != list(range(expected)):
            raise ValueError(f"the view is incomplete: {key} has {len(parts)} of {expected} chunks")
        vectors[key] = [parts[i] for i in range(expected)]
    if not context:
        raise ValueError("the view has no public context")
    return Container(header, context, vectors)
