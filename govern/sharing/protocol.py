"""The Delta Sharing protocol's pieces, as pure functions: the Delta schema of a masked Arrow
schema, stable ids, the table version, and the newline-delimited JSON lines of ``metadata`` and
``query`` responses.

Table version: Delta Sharing wants an integer (``Delta-Table-Version``). Govern serves one
snapshot — the data as it is now, under the plan compiled now — so the version is a number
derived from (plan hash, data version): it changes exactly when the file a recipient gets
changes. It is not ordered in time; only equality means something, and a query for any other
version is refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from govern.errors import Unsupported

__all__ = ["FILE_TICKET", "PROFILE_TICKET", "SCHEMA", "delta_schema", "file_line", "metadata_line",
           "protocol_line", "stable_id", "table_version"]

SCHEMA = "default"  # every share (purpose) has one schema
FILE_TICKET = "share-file"  # the ticket kind of a file URL
PROFILE_TICKET = "share-profile"  # the ticket kind of a profile's bearer token


def stable_id(*parts: str) -> str:
    """A UUID-shaped id derived from ``parts`` (shares, tables, metadata)."""
    h = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def table_version(plan_hash: str, data_version: str) -> int:
    """The ``Delta-Table-Version`` of what a plan delivers from a data version (52 bits: exact in
    every JSON reader)."""
    return int(hashlib.sha256(f"{plan_hash}.{data_version}".encode()).hexdigest()[:13], 16)


def _delta_type(t: pa.DataType) -> Any:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t):
        return "byte"
    if pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "short"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "integer"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "long"
    if pa.types.is_float32(t):
        return "float"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp" if t.tz is not None else "timestamp_ntz"
    if pa.types.is_dictionary(t):
        return _delta_type(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"type": "array", "elementType": _delta_type(t.value_type), "containsNull": True}
    if pa.types.is_struct(t):
        return delta_schema(pa.schema([t.field(i) for i in range(t.num_fields)]))
    raise Unsupported(f"Arrow type {t} has no Delta Sharing type")  # fail closed: never a guess


def delta_schema(schema: pa.Schema) -> dict[str, Any]:
    """The Delta (Spark) struct type of ``schema``; every field nullable, as masks may null."""
    return {"type": "struct", "fields": [{"name": f.name, "type": _delta_type(f.type), "nullable": True,
                                          "metadata": {}} for f in schema]}


def protocol_line() -> str:
    return json.dumps({"protocol": {"minReaderVersion": 1}})


def metadata_line(table_id: str, schema: pa.Schema, *, size: int | None = None,
                  num_files: int | None = None) -> str:
    meta: dict[str, Any] = {"id": table_id, "format": {"provider": "parquet"},
                            "schemaString": json.dumps(delta_schema(schema)), "partitionColumns": [],
                            "configuration": {}}
    if size is not None:
        meta["size"] = size
    if num_files is not None:
        meta["numFiles"] = num_files
    return json.dumps({"metaData": meta})


def file_line(url: str, file_id: str, size: int, rows: int, expires_ms: int) -> str:
    """A file action. ``stats`` says only how many records: min/max values of masked columns are
    not offered (a recipient learns nothing from them it could not compute itself, but govern
    promises no pruning either)."""
    return json.dumps({"file": {"url": url, "id": file_id, "partitionValues": {}, "size": size,
                                "stats": json.dumps({"numRecords": rows}), "expirationTimestamp": expires_ms}})
