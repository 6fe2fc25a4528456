"""Datasets: list, schema-as-you-see-it, and the streaming governed read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import pyarrow as pa
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from govern.deliver.gateway import Gateway, RequestContext
from govern.deliver.governor import GovernedRead
from govern.errors import GovernError, InvalidRequest, LimitExceeded
from govern.server.streaming import MEDIA_TYPES, audited_stream, encode
from govern.storage import scan as storage_scan

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
PurposeHeader = Annotated[str | None, Header(alias="X-Purpose", description="Why you are asking.")]
PurposeQuery = Annotated[str | None, Query(alias="purpose", description="Alternative to X-Purpose.")]


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _context(request: Request, route: str, dataset: str | None = None, action: str = "read") -> RequestContext:
    return RequestContext(request_id=request.state.request_id, route=route, dataset=dataset, action=action)


@router.get("", summary="Datasets you may read under the declared purpose")
def list_datasets(request: Request, authorization: Auth = None, x_purpose: PurposeHeader = None,
                  purpose: PurposeQuery = None) -> dict:
    gw = _gateway(request)
    ctx = _context(request, "list")
    try:
        principal = gw.authenticate(ctx, authorization)
        p = gw.require_purpose(ctx, x_purpose, purpose)
        items = gw.governor.readable_datasets(principal, p)
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return {"purpose": p, "datasets": items}


@router.get("/{name}", summary="The schema as you see it, with each column's action and why")
def describe_dataset(name: str, request: Request, authorization: Auth = None, x_purpose: PurposeHeader = None,
                     purpose: PurposeQuery = None) -> dict:
    gw = _gateway(request)
    ctx = _context(request, "describe", name)
    try:
        principal = gw.authenticate(ctx, authorization)
        p = gw.require_purpose(ctx, x_purpose, purpose)
        plan = gw.governor.plan(principal, name, p)
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    entry = gw.governor.state.policy.datasets[name]
    return {
        "name": name,
        "description": entry.description,
        "purpose": p,
        "plan_hash": plan.hash,
        "columns": [
            {"name": c.name, "type": c.result_type, "action": c.action,
             "mask": c.mask.to_dict() if c.mask else None, "reason": c.reason.to_dict()}
            for c in plan.columns if c.visible
        ],
        "withheld": [{"name": c.name, "reason": c.reason.to_dict()} for c in plan.columns if not c.visible],
        "row_filters": [rf.to_dict() for rf in plan.row_filters],
        "cell_rules": [cr.to_dict() for cr in plan.cell_rules],
    }


@router.get(
    "/{name}/rows",
    summary="Stream the rows you may see (masked, filtered), as Arrow, Parquet, CSV or JSON lines",
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}},
)
def read_rows(
    name: str,
    request: Request,
    authorization: Auth = None,
    x_purpose: PurposeHeader = None,
    purpose: PurposeQuery = None,
    columns: Annotated[str | None, Query(description="Comma-separated column names.")] = None,
    filter: Annotated[str | None, Query(description="SQL predicate on the masked view.", max_length=4000)] = None,
    limit: Annotated[int | None, Query(ge=0, description="At most this many rows (at most max_rows). "
                                                      "Without it, a read of more than max_rows rows is "
                                                      "refused (413) or cut short, never truncated.")] = None,
    format: Annotated[Literal["arrow", "parquet", "csv", "jsonl"], Query()] = "arrow",
) -> StreamingResponse:
    gw = _gateway(request)
    ctx = _context(request, "rows", name)
    ctx.extra = {k: v for k, v in {"columns": columns, "filter": filter, "limit": limit, "format": format}.items()
                 if v is not None}
    cap = gw.settings.max_rows
    slot = False
    opened: GovernedRead | None = None
    try:
        principal = gw.authenticate(ctx, authorization)
        p = gw.require_purpose(ctx, x_purpose, purpose)
        if limit is not None and limit > cap:
            raise LimitExceeded(f"limit may be at most {cap}", limit=cap)
        cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        if columns is not None and not cols:
            raise InvalidRequest("columns is empty")
        gw.acquire_read_slot()
        slot = True
        # Without a limit, read one row past the cap: the extra row shows the cap was hit.
        opened = gw.governor.read(principal, name, p, columns=cols, filter=filter,
                                  limit=limit if limit is not None else cap + 1)
        ctx.plan = opened.plan
        reader = opened.reader if limit is not None else _within_cap(gw, name, opened, cap)
        gw.audit.reserve(ctx.request_id)  # proves the audit store is writable before any data
    except GovernError as exc:
        if slot:
            gw.release_read_slot()
        if opened is not None:
            opened.reader.close()
        gw.record_denial(ctx, exc)
        raise
    assert opened is not None  # the try either set it or raised
    result = opened

    def close() -> None:  # the cap's wrapper, then the governed read under it
        reader.close()
        if reader is not result.reader:
            result.reader.close()

    def finish(rows: int, nbytes: int) -> None:
        gw.record(ctx, outcome="ok", status=200, rows=rows, nbytes=nbytes)
        gw.metrics.rows.labels(dataset=name).inc(rows)
        gw.metrics.bytes.labels(dataset=name).inc(nbytes)

    headers = {"x-govern-plan-hash": result.plan.hash, "x-govern-policy-version": result.plan.policy_version or ""}
    if format in ("csv", "jsonl", "parquet"):
        headers["content-disposition"] = f'attachment; filename="{name}.{format}"'
    return audited_stream(gw, ctx, encode(format, reader, finish), media_type=MEDIA_TYPES[format],
                          headers=headers, close=close)


def _within_cap(gw: Gateway, name: str, result: GovernedRead, cap: int) -> pa.RecordBatchReader:
    """A read without ``limit`` may return at most ``cap`` (``max_rows``) rows, and must never be
    silently truncated there. When the files' metadata shows it would exceed the cap (no row
    filter, no client filter: every stored row is returned), refuse before streaming (413).
    When it cannot tell, stream, and cut the stream without its end marker when row cap + 1
    arrives: the client sees a broken stream, as for a storage failure midway."""
    location = gw.governor.state.policy.datasets[name].location
    stored = storage_scan.row_count(gw.governor.dataset(name), location=location)
    if stored is not None and stored <= cap:
        return result.reader
    if stored is not None and not result.plan.row_filters and result.request.filter is None:
        raise LimitExceeded(f"this read would return {stored} rows, more than max_rows ({cap}); "
                            f"pass a limit of at most {cap} or a filter", limit=cap)
    source = result.reader

    def batches() -> Iterator[pa.RecordBatch]:
        seen = 0
        for batch in source:
            seen += batch.num_rows
            if seen > cap:
                raise LimitExceeded(f"the read has more than max_rows ({cap}) rows and no limit; "
                                    f"the stream was cut: pass a limit of at most {cap} or a filter", limit=cap)
            yield batch

    return pa.RecordBatchReader.from_batches(source.schema, batches())


class ReidentifyRequest(BaseModel):
    tokens: list[str] = Field(min_length=1, max_length=10_000, description="Tokens made by the tokenize mask.")


@router.post("/{name}/reidentify", summary="Reverse tokenize tokens (needs the reidentify action)")
def reidentify(name: str, body: ReidentifyRequest, request: Request, authorization: Auth = None,
               x_purpose: PurposeHeader = None, purpose: PurposeQuery = None) -> dict:
    gw = _gateway(request)
    ctx = _context(request, "reidentify", name, action="reidentify")
    try:
        principal = gw.authenticate(ctx, authorization)
        p = gw.require_purpose(ctx, x_purpose, purpose)
        gw.audit.reserve(ctx.request_id)
        values = gw.governor.reidentify(principal, name, p, body.tokens)
        gw.record(ctx, outcome="ok", status=200, rows=len(values))
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return {"values": values}
