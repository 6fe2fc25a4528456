"""Analyst SQL over masked views: ``POST /v1/sql``, streamed like a dataset read.

Authenticate, read the (size-limited) body, declare a purpose, prove the audit store is
writable, run the query in its sandbox (:class:`govern.sql.SqlEngine`), then stream the
result. One audit record per request, ``action="sql"``, with the SQL text, the datasets read,
their plan hashes and the masked columns used — on success and on refusal alike.
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
from starlette.responses import StreamingResponse

from govern.deliver.gateway import Gateway, RequestContext
from govern.errors import GovernError
from govern.identity.principal import Principal
from govern.privacy.dp.sql import has_hint as has_dp_hint
from govern.server.bodies import load_json, read_body, validate
from govern.server.routes.dp import dp_sql_response
from govern.server.streaming import MEDIA_TYPES, audited_stream, encode
from govern.sql import SqlEngine, SqlResult

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


def _problem_schema() -> dict[str, Any]:
    return {"application/problem+json": {"schema": {"type": "object"}}}


@router.post(
    "/sql",
    summary="Run one read-only SQL query over the masked views you may read",
    openapi_extra={"requestBody": {"required": True,
                                   "content": {JSON_MEDIA_TYPE: {"schema": SqlRequest.model_json_schema()}}}},
    responses={200: {"content": {JSON_MEDIA_TYPE: {}, **{m: {} for m in MEDIA_TYPES.values()}}},
               400: {"content": _problem_schema()}, 408: {"content": _problem_schema()},
               413: {"content": _problem_schema()}},
)
async def run_sql(request: Request) -> StreamingResponse:
    gw: Gateway = request.app.state.gateway
    ctx = RequestContext(request_id=request.state.request_id, route="sql", action="sql")
    try:
        principal = await run_in_threadpool(gw.authenticate, ctx, request.headers.get("authorization"))
        raw = await read_body(request, gw.settings.sql_max_request_bytes)
    except GovernError as exc:
        await run_in_threadpool(gw.record_denial, ctx, exc)
        raise
    # The rest blocks (audit store, DuckDB until the first batch): off the event loop.
    return await run_in_threadpool(_start, gw, ctx, principal, raw, request.headers.get("x-purpose"),
                                   request.query_params.get("purpose"))


def _start(gw: Gateway, ctx: RequestContext, principal: Principal, raw: bytes, x_purpose: str | None,
           query_purpose: str | None) -> StreamingResponse:
    slot = False
    try:
        body = _parse(raw, gw.settings.sql_max_length, ctx)
        purpose = gw.require_purpose(ctx, x_purpose, body.purpose or query_purpose)
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    if body.privacy == "dp" or has_dp_hint(body.sql):  # differentially private SQL: docs/privacy.md
        return dp_sql_response(gw, ctx, principal, purpose, body)
    try:
        gw.acquire_read_slot()
        slot = True
        gw.audit.reserve(ctx.request_id)  # proves the audit store is writable before any data
        result = SqlEngine(gw.governor, gw.settings, gw.sandboxes, gw.view_cache).run(principal, purpose, body.sql,
                                                                                      body.params)
    except GovernError as exc:
        if slot:
            gw.release_read_slot()
        gw.record_denial(ctx, exc)
        raise
    _describe_result(ctx, result)

    def finish(rows: int, nbytes: int) -> None:
        gw.record(ctx, outcome="ok", status=200, rows=rows, nbytes=nbytes)
        for name in result.datasets:
            gw.metrics.rows.labels(dataset=name).inc(rows)
            gw.metrics.bytes.labels(dataset=name).inc(nbytes)

    headers = {"x-govern-datasets": ",".join(result.datasets)}
    if len(result.plans) == 1:
        headers["x-govern-plan-hash"] = next(iter(result.plans.values()))
    if body.format in ("csv", "jsonl", "parquet"):
        headers["content-disposition"] = f'attachment; filename="query.{body.format}"'
    media = JSON_MEDIA_TYPE if body.format == "json" else MEDIA_TYPES[body.format]
    chunks = encode_json(result.reader, finish) if body.format == "json" else encode(body.format, result.reader, finish)
    return audited_stream(gw, ctx, chunks, media_type=media, headers=headers, close=result.close)


def _parse(raw: bytes, max_length: int, ctx: RequestContext) -> SqlRequest:
    data = load_json(raw, '{"sql": "..."}')
    if isinstance(data, dict) and isinstance(data.get("sql"), str):
        text = data["sql"]
        ctx.extra["sql"] = text if len(text) <= max_length else text[:max_length] + "…"
    body = validate(SqlRequest, data)
    ctx.extra["format"] = body.format
    if body.params:
        ctx.extra["params"] = len(body.params)  # how many, not the values
    return body


def _describe_result(ctx: RequestContext, result: SqlResult) -> None:
    """What the audit record says about the data: datasets, plan hashes, masked columns read."""
    ctx.extra["datasets"] = list(result.datasets)
    if result.cached:
        ctx.extra["cached"] = list(result.cached)  # views served from the view cache
    ctx.extra["plans"] = dict(result.plans)
    read: dict[str, dict[str, str]] = {}
    for name, cols in result.columns.items():
        plan = result.access_plans.get(name)
        actions = {c.name: (f"mask:{c.mask.function}" if c.mask else c.action) for c in plan.columns} if plan else {}
        read[name] = {c: actions.get(c, "keep") for c in cols}
    ctx.extra["read"] = read
    if len(result.datasets) == 1:
        ctx.dataset = result.datasets[0]
        ctx.plan = result.access_plans.get(ctx.dataset)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode_json(reader: pa.RecordBatchReader, finish: Callable[[int, int], None]) -> Iterator[bytes]:
    """``{"columns": [{name, type}], "rows": [[…], …], "row_count": n}``, streamed batch by batch.

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
    tail = f'], "row_count": {rows}}}'.encode()
    finish(rows, sent + len(tail))
    yield tail
