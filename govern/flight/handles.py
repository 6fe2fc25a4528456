"""Statement handles and tickets: what a query is, carried by the client between calls.

A handle (a prepared statement's, or the ticket of a query) is self-contained: the SQL text,
the purpose it was described under and, once bound, one row of parameter values — an Arrow
IPC stream whose schema metadata holds the text and the purpose, and whose one batch (if any)
holds the parameters with their Arrow types. The server keeps no statement state, so a
handle may be used on any connection, and a forged or replayed one gives nothing away: it is
run with the credentials of the call that presents it, under the policy served now, exactly
as if that caller had sent the text itself. A handle is decoded only after the call is
authenticated, and only up to ``sql_max_request_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from govern.errors import InvalidRequest, LimitExceeded

__all__ = ["Statement", "decode", "encode"]

_SQL = b"govern.sql"
_PURPOSE = b"govern.purpose"


@dataclass(frozen=True)
class Statement:
    sql: str
    purpose: str | None = None
    params: pa.RecordBatch | None = None

    def values(self) -> list[Any] | None:
        """The bound values, in order (None when nothing is bound)."""
        if self.params is None or self.params.num_columns == 0:
            return None
        return [column[0].as_py() for column in self.params.columns]


def encode(statement: Statement) -> bytes:
    metadata = {_SQL: statement.sql.encode()}
    if statement.purpose:
        metadata[_PURPOSE] = statement.purpose.encode()
    batch = statement.params if statement.params is not None else pa.record_batch([], schema=pa.schema([]))
    schema = batch.schema.with_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        if statement.params is not None:
            writer.write_batch(batch.replace_schema_metadata(metadata))
    return sink.getvalue().to_pybytes()


def decode(data: bytes, limit: int) -> Statement:
    """The statement in a handle; malformed or oversized handles are a clean 400/413."""
    if len(data) > limit:
        raise LimitExceeded(f"a statement handle may be at most {limit} bytes", limit=limit)
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        batches = list(reader)
    except (pa.ArrowException, ValueError, OSError):
        raise InvalidRequest("malformed statement handle") from None
    metadata = reader.schema.metadata or {}
    if _SQL not in metadata:
        raise InvalidRequest("malformed statement handle: no statement")
    try:
        sql = metadata[_SQL].decode()
        purpose = metadata[_PURPOSE].decode() if _PURPOSE in metadata else None
    except UnicodeDecodeError:
        raise InvalidRequest("malformed statement handle") from None
    params = None
    if batches:
        rows = sum(b.num_rows for b in batches)
        if len(batches) != 1 or rows != 1:
            raise InvalidRequest(f"a query takes one set of parameter values, not {rows}")
        params = batches[0].replace_schema_metadata(None)
    return Statement(sql, purpose, params)
