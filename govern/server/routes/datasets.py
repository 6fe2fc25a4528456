"""Datasets: list, schema-as-you-see-it, the streaming governed read, and re-identification.

Each route walks the request lifecycle (:mod:`govern.deliver.lifecycle`) through the exchange
the middleware opened: authenticate, declare the purpose, authorize, bound, run, and let the
exchange write the one audit record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Literal

import pyarrow as pa
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from govern.deliver.gateway import Gateway
from govern.deliver.governor import GovernedRead, PolicyState
from govern.deliver.lifecycle import Exchange
from govern.errors import InvalidRequest, LimitExceeded
from govern.plan.model import AccessPlan
from govern.plan.predicates import compile_client_filter
from govern.server.bodies import validate
from govern.server.connections import lost_probe
from govern.server.contract import errors, json_body
from govern.server.exchange import (
    bearer,
    body_purpose,
    governed,
    load_json,
    purpose_candidates,
    read_body,
)
from govern.server.streaming import MEDIA_TYPES, Chunk, ReadStream, encode, stored
from govern.storage import scan as storage_scan
from govern.storage.materialized import Entry

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

# Declared for the OpenAPI description only; the values are read by the lifecycle.
Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
PurposeHeader = Annotated[str | None, Header(alias="X-Purpose", description="Why you are asking.")]
PurposeQuery = Annotated[str | None, Query(alias="purpose", description="Alternative to X-Purpose.")]
REIDENTIFY_BODY = 2_097_152


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


@router.head("", summary="Datasets you may read (headers only)", responses=errors())
@router.get("", summary="Datasets you may read under the declared purpose", responses=errors())
def list_datasets(request: Request, authorization: Auth = None, x_purpose: PurposeHeader = None,
                  purpose: PurposeQuery = None) -> dict:
    with governed(request, "list", "list") as ex:
        ex.authenticate(bearer(request))
        p = ex.declare(*purpose_candidates(request))
        datasets = ex.state.policy.datasets
        items = [{"name": n, "description": datasets[n].description, "format": datasets[n].format}
                 for n in ex.datasets("read")]
        ex.finish(rows=len(items))
    return {"purpose": p, "datasets": items}


@router.head("/{name}", summary="The schema as you see it (headers only)", responses=errors())
@router.get("/{name}", summary="The schema as you see it, with each column's action and why", responses=errors())
def describe_dataset(name: str, request: Request, authorization: Auth = None, x_purpose: PurposeHeader = None,
                     purpose: PurposeQuery = None) -> dict:
    with governed(request, "describe", "describe", name) as ex:
        ex.authenticate(bearer(request))
        p = ex.declare(*purpose_candidates(request))
        plan = ex.compile(name, "read")
        entry = ex.state.policy.datasets[name]
        body = {
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
        ex.finish()
    return body


@router.head(
    "/{name}/rows",
    summary="The headers of a read (media type, plan hash) without reading: the same checks, no rows",
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}, **errors(408, 413)},
)
@router.get(
    "/{name}/rows",
    summary="Stream the rows you may see (masked, filtered), as Arrow, Parquet, CSV or JSON lines",
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}, **errors(408, 413)},
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
) -> Response:
    gw = _gateway(request)
    cap = gw.settings.max_rows
    with governed(request, "rows", "read", name) as ex:
        ex.extra.update({k: v for k, v in {"columns": columns, "filter": filter, "limit": limit,
                                          "format": format}.items() if v is not None})
        principal = ex.authenticate(bearer(request))
        p = ex.declare(*purpose_candidates(request))
        ex.authorize(name, "read")
        if limit is not None and limit > cap:
            raise LimitExceeded(f"limit may be at most {cap}", limit=cap)
        cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        if columns is not None and not cols:
            raise InvalidRequest("columns is empty")
        plan = ex.compile_rows(name)  # refused under a result policy (rows are its side door)
        if request.method == "HEAD":  # the same checks and headers as a read, without reading
            if filter:
                compile_client_filter(filter)
            ex.finish(rows=0)  # recorded like any request: a HEAD sent no rows
            head = Response(media_type=MEDIA_TYPES[format], headers=_read_headers(name, format, plan))
            del head.headers["content-length"]  # unknown without reading (not 0)
            return head
        ex.admit(defer_reserve=True)  # a small read commits one record, before it leaves
        stored = _materialized(gw, ex, name, cols, filter, limit, cap)
        length = None
        if stored is not None and format == "parquet" and cols is None and limit is None:
            plan, entry = stored  # the stored file is the answer: its bytes, as they are, of a known size
            stream, length = ex.stream(lambda finish: _file_bytes(entry, finish)), entry.size
        elif stored is not None:
            plan, entry = stored
            reader = entry.reader(cols, limit, gw.settings.batch_size)
            stream = ex.stream(lambda finish: encode(format, reader, finish), close=reader.close)
        else:
            # Without a limit, read one row past the cap: the extra row shows the cap was hit.
            opened = gw.governor.read(principal, name, p, columns=cols, filter=filter,
                                      limit=limit if limit is not None else cap + 1, state=ex.state)
            plan = ex.plan = opened.plan
            try:
                reader = opened.reader if limit is not None else _within_cap(gw, ex.state, opened, cap)
            except BaseException:
                opened.reader.close()
                raise

            def close() -> None:  # the cap's wrapper, then the governed read under it
                reader.close()
                if reader is not opened.reader:
                    opened.reader.close()

            stream = ex.stream(lambda finish: encode(format, reader, finish), close=close)
    return ReadStream(stream, media_type=MEDIA_TYPES[format], headers=_read_headers(name, format, plan),
                      known_length=format == "parquet", length=length).prefetch(lost_probe(request.scope))


def _read_headers(name: str, format: str, plan: AccessPlan) -> dict[str, str]:
    headers = {"x-govern-plan-hash": plan.hash, "x-govern-policy-version": plan.policy_version or ""}
    if format in ("csv", "jsonl", "parquet"):
        headers["content-disposition"] = f'attachment; filename="{name}.{format}"'
    return headers


def _materialized(gw: Gateway, ex: Exchange, name: str, cols: list[str] | None, filter: str | None,
                  limit: int | None, cap: int) -> tuple[AccessPlan, Entry] | None:
    """The read served from the plan's masked materialization (:mod:`govern.deliver.materialize`),
    or None for the plan-and-mask path. When (docs/sharing.md#materializations):

    - never with a ``filter`` (it is evaluated by the engine, on the masked view);
    - ``columns`` only when they are visible columns of the plan (projected from the file;
      anything else takes the engine path, which refuses it with the usual reasons);
    - with a ``limit``: only when the materialization exists (a peek never builds one);
    - without a ``limit``: built on this first read when ``materialize_on_read`` is set; a read
      of more than ``max_rows`` rows is refused (413) before any byte, exactly.
    """
    m = gw.materializer
    if filter is not None or not m.enabled:
        return None
    assert ex.principal is not None and ex.purpose is not None
    plan = gw.governor.plan(ex.principal, name, ex.purpose, state=ex.state)
    visible = set(plan.visible_names)
    if cols is not None and (not set(cols) <= visible or len(set(cols)) != len(cols)):
        return None
    if limit is None and gw.settings.materialize_on_read:
        found = m.get_or_build(ex.principal, name, ex.purpose, state=ex.state)
        plan, entry, built = found.plan, found.entry, found.built
    else:
        hit = m.find(plan, m.data_version(name, ex.state))
        if hit is None:
            return None
        entry, built = hit, False
    ex.plan = plan
    ex.extra["materialization"] = {"file_id": entry.file_id, "built": built}
    if limit is None and entry.rows > cap:
        raise LimitExceeded(f"this read would return {entry.rows} rows, more than max_rows ({cap}); "
                            f"pass a limit of at most {cap} or a filter", limit=cap)
    return plan, entry


def _file_bytes(entry: Entry, finish: Callable[[int, int], None]) -> Iterator[Chunk]:
    """A stored materialization's bytes; its footer (the end marker) only after ``finish``."""
    tail = min(8, entry.size)
    return stored(entry.open, [(0, entry.size - tail), (entry.size - tail, entry.size)], entry.rows, finish)


def _within_cap(gw: Gateway, state: PolicyState, result: GovernedRead, cap: int) -> pa.RecordBatchReader:
    """A read without ``limit`` may return at most ``cap`` (``max_rows``) rows, and must never be
    silently truncated there. When the files' metadata shows it would exceed the cap (no row
    filter, no client filter: every stored row is returned), refuse before streaming (413).
    When it cannot tell, stream, and cut the stream without its end marker when row cap + 1
    arrives: the client sees a broken stream, as for a storage failure midway."""
    name = result.plan.dataset
    location = state.policy.datasets[name].location
    stored = storage_scan.row_count(gw.governor.dataset(name, state), location=location)
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
    model_config = ConfigDict(extra="forbid")

    tokens: list[str] = Field(min_length=1, max_length=10_000, description="Tokens made by the tokenize mask.")
    purpose: str | None = Field(default=None, description="Why you are asking (or the X-Purpose header).")


@router.post("/{name}/reidentify", summary="Reverse tokenize tokens (needs the reidentify action)",
             openapi_extra=json_body(ReidentifyRequest), responses=errors(413))
async def reidentify(name: str, request: Request) -> dict:
    async with governed(request, "reidentify", "reidentify", name) as ex:
        await run_in_threadpool(ex.authenticate, bearer(request))
        raw = await read_body(ex, request, REIDENTIFY_BODY)
        return await run_in_threadpool(_reidentify, _gateway(request), ex, request, raw)


def _reidentify(gw: Gateway, ex: Exchange, request: Request, raw: bytes) -> dict:
    data = load_json(raw, '{"tokens": [...]}')
    purpose = ex.declare(*purpose_candidates(request, body_purpose(data)))
    ex.authorize(ex.dataset or "", "reidentify")
    body = validate(ReidentifyRequest, data)
    ex.extra["tokens"] = len(body.tokens)
    ex.admit(slot=False)
    assert ex.principal is not None
    result = gw.governor.reidentify(ex.principal, ex.dataset or "", purpose, body.tokens, ex.state)
    ex.plan = result.plan
    ex.extra["origins"] = result.origins()  # the true origin: each token's domain and its columns
    ex.finish(rows=len(result.values))
    return {"values": result.values, "domains": result.domains}
