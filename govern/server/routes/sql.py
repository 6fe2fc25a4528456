"""Analyst SQL over masked views: ``POST /v1/sql``, streamed like a dataset read.

Authenticate, read the (size-limited) body, declare a purpose, then the shared query step
(:func:`govern.deliver.queries.run_query`: refused before parsing without a readable dataset,
slot and deadline, the engine), then stream the result. One audit record per request,
``action="sql"``, with the SQL text, the datasets read, their plan hashes and the masked
columns used — on success and on refusal alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Exchange
from govern.deliver.queries import note_text, run_query
from govern.errors import InvalidRequest
from govern.privacy.dp.sql import has_hint as has_dp_hint
from govern.server.bodies import validate
from govern.server.contract import errors, json_body
from govern.server.exchange import (
    bearer,
    body_purpose,
    governed,
    load_json,
    purpose_candidates,
    read_body,
)
from govern.server.routes.dp import dp_sql_response
from govern.server.streaming import MEDIA_TYPES, ReadStream, encode

router = APIRouter(prefix="/v1", tags=["sql"])

JSON_MEDIA_TYPE = "application/json"
Scalar = str | int | float | bool | None


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, description="One read-only query over the datasets you may read.")
    purpose: str | None = Field(default=None, description="Why you are asking (or the X-Purpose header).")
    format: Literal["json", "arrow", "csv", "jsonl", "parquet"] = Field(
        default="json", description="json: {columns, rows, row_count}; arrow: Arrow IPC stream; csv; jsonl; parquet.")
    params: list[Scalar] | None = Field(default=None, max_length=1000,
                                        description="Values of $1, $2, … (or ?), bound as typed parameters.")
    # Differentially private SQL (docs/privacy.md): aggregates only, charged to the privacy budget.
    privacy: Literal["dp"] | None = Field(default=None, description="\"dp\": run as differentially private SQL.")
    epsilon: float | None = Field(default=None, gt=0, description="DP SQL: the privacy loss of this query.")
    delta: float = Field(default=0.0, ge=0, lt=1, description="DP SQL: needed for group keys that are not public.")
    contributions: int = Field(default=1, ge=1, description="DP SQL: rows kept per privacy unit.")
    bounds: dict[str, list[float]] | None = Field(default=None, description="DP SQL: column → [low, high] clamp.")


@router.post(
    "/sql",
    summary="Run one read-only SQL query over the masked views you may read",
    openapi_extra=json_body(SqlRequest),
    responses={200: {"content": {JSON_MEDIA_TYPE: {}, **{m: {} for m in MEDIA_TYPES.values()}}},
               **errors(408, 413)},
)
async def run_sql(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    async with governed(request, "sql", "sql") as ex:
        await run_in_threadpool(ex.authenticate, bearer(request))
        raw = await read_body(ex, request, gw.settings.sql_max_request_bytes)
        # The rest blocks (audit store, DuckDB until the first batch): off the event loop.
        return await run_in_threadpool(_start, gw, ex, request, raw)


def _start(gw: Gateway, ex: Exchange, request: Request, raw: bytes) -> Response:
    data = load_json(raw, '{"sql": "..."}')
    if isinstance(data, dict) and isinstance(data.get("sql"), str):
        note_text(ex, data["sql"])
    ex.declare(*purpose_candidates(request, body_purpose(data)))
    body = validate(SqlRequest, data)
    ex.extra["format"] = body.format
    if body.privacy == "dp" or has_dp_hint(body.sql):  # differentially private SQL: docs/privacy.md
        if body.format != "json":
            raise InvalidRequest("differentially private SQL answers in JSON only (format: json)")
        if body.params:
            raise InvalidRequest("differentially private SQL takes no parameters")
        return dp_sql_response(gw, ex, body.sql, epsilon=body.epsilon, delta=body.delta,
                               contributions=body.contributions, bounds=body.bounds)
    result = run_query(ex, gw.sql_service, body.sql, body.params)
    try:
        headers = {"x-govern-datasets": ",".join(result.datasets)}
        if len(result.plans) == 1:
            headers["x-govern-plan-hash"] = next(iter(result.plans.values()))
        if result.suppressed_groups is not None:  # a min_group policy applied (docs/privacy.md)
            headers["x-govern-suppressed-groups"] = str(result.suppressed_groups)
        if body.format in ("csv", "jsonl", "parquet"):
            headers["content-disposition"] = f'attachment; filename="query.{body.format}"'
        media = JSON_MEDIA_TYPE if body.format == "json" else MEDIA_TYPES[body.format]
        fmt = body.format
        stream = ex.stream(lambda finish: encode_json(result.reader, finish) if fmt == "json"
                           else encode(fmt, result.reader, finish), close=result.close)
    except BaseException:
        result.close()
        raise
    return ReadStream(stream, media_type=media, headers=headers)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode_json(reader: pa.RecordBatchReader, finish: Callable[[int, int], None]) -> Iterator[bytes]:
    """``{"columns": [{name, type}], "rows": [[…], …], "row_count": n}``, streamed batch by batch
    (plus ``"suppressed_groups": n`` when a ``min_group`` result policy applied).

    The closing ``], "row_count": n}`` is written only after ``finish`` (the audit write)
    succeeds: a stream that fails midway is not valid JSON, never a short valid answer.
    """
    columns = [{"name": f.name, "type": str(f.type)} for f in reader.schema]
    head = ('{"columns": ' + json.dumps(columns, ensure_ascii=False) + ', "rows": [').encode()
    sent = len(head)
    yield head
    rows = 0
    for batch in reader:
        if not batch.num_rows:
            continue
        values = [col.to_pylist() for col in batch.columns]
        parts = [json.dumps([_json_value(v) for v in row], default=str, ensure_ascii=False)
                 for row in zip(*values, strict=True)] if values else ["[]"] * batch.num_rows
        chunk = ((", " if rows else "") + ", ".join(parts)).encode()
        rows += batch.num_rows
        sent += len(chunk)
        yield chunk
    suppressed = (reader.schema.metadata or {}).get(b"govern.suppressed_groups")
    more = f', "suppressed_groups": {int(suppressed)}' if suppressed is not None else ""
    tail = f'], "row_count": {rows}{more}}}'.encode()
    finish(rows, sent + len(tail))
    yield tail
