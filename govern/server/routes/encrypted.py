"""Encrypted views (CKKS): the view stream, aggregate releases, and client-held-key queries.

Three routes, one pattern: authenticate → read the size-limited body → purpose → the HE
service (decide, plan with action ``read_encrypted``, read, encrypt or evaluate) → audit,
exactly one record per request, success or refusal. Bodies are parsed here rather than by
FastAPI so that a malformed request is refused *and audited* like any other refusal. Heavy
work runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, StreamingResponse

from govern.deliver.gateway import Gateway, RequestContext
from govern.errors import GovernError, InvalidRequest
from govern.identity.principal import Principal
from govern.privacy.he import container
from govern.privacy.he.service import HeService
from govern.server.bodies import parse, read_body
from govern.server.streaming import audited_stream, encode

router = APIRouter(tags=["encrypted"])

JSON = "application/json"
SMALL_BODY = 1_048_576


class ViewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str | None = Field(default=None, description="Why you are asking (or the X-Purpose header).")
    columns: list[str] = Field(min_length=1, max_length=64, description="Numeric columns to encrypt.")
    filter: str | None = Field(default=None, max_length=4000,
                               description="SQL predicate on the masked view: rows that fail it are "
                                           "unselected (encrypted 0), never dropped.")
    bounds: dict[str, list[float]] | None = Field(default=None,
                                                  description="Clipping bounds per column; default: the catalog's.")
    limit: int | None = Field(default=None, ge=1, description="Encrypt only the first rows (storage order).")
    group_by: str | None = Field(default=None, description="A public_values column whose keys form groups.")
    groups: list[str] | None = Field(default=None, max_length=64, description="The group keys (declared).")
    galois: bool = Field(default=False, description="Include Galois keys (~35 MB) to rotate-and-sum locally.")


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str | None = None
    view_token: str = Field(max_length=16_384, description="The token from the view's header.")
    computation: dict[str, Any] = Field(description="The declared aggregate, e.g. {\"op\": \"sum\", \"column\": "
                                                    "\"charges\"}.")
    epsilon: float = Field(gt=0, description="Privacy loss of this release (charged to the budget).")


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str | None = None
    computation: dict[str, Any] = Field(description="{\"op\": \"linear_groups\"|\"logistic_gradient\", "
                                                    "\"features\": [...], \"label\"?, \"intercept\"?}")
    context: str = Field(description="Base64 of the client's *public* TenSEAL context.")
    weights: list[str] = Field(min_length=1, max_length=64, description="Base64 CKKS vectors, one per weight.")
    epsilon: float = Field(gt=0)
    filter: str | None = Field(default=None, max_length=4000)
    bounds: dict[str, list[float]] | None = None
    limit: int | None = Field(default=None, ge=1)
    group_by: str | None = None
    groups: list[str] | None = Field(default=None, max_length=64)


def _service(request: Request) -> HeService:
    return request.app.state.he


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": model.model_json_schema()}}}}


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{what} must be base64") from None


async def _begin(request: Request, ctx: RequestContext, limit: int) -> tuple[Principal, bytes]:
    """Authenticate and read the body; a failure is audited and re-raised."""
    gw: Gateway = request.app.state.gateway
    try:
        principal = await run_in_threadpool(gw.authenticate, ctx, request.headers.get("authorization"))
        return principal, await read_body(request, limit)
    except GovernError as exc:
        await run_in_threadpool(gw.record_denial, ctx, exc)
        raise


# -- flow 1: the encrypted view -------------------------------------------------------------------
@router.post(
    "/v1/datasets/{name}/encrypted",
    summary="CKKS ciphertexts of the numeric columns you may read, with the public context (no secret key)",
    openapi_extra=_json_schema(ViewRequest),
    responses={200: {"content": {container.MEDIA_TYPE: {}}}},
)
async def encrypted_view(name: str, request: Request) -> StreamingResponse:
    ctx = RequestContext(request_id=request.state.request_id, route="encrypted", dataset=name,
                         action="read_encrypted")
    principal, raw = await _begin(request, ctx, SMALL_BODY)
    return await run_in_threadpool(_start_view, request, ctx, principal, raw)


def _start_view(request: Request, ctx: RequestContext, principal: Principal, raw: bytes) -> StreamingResponse:
    gw: Gateway = request.app.state.gateway
    svc = _service(request)
    slot = False
    try:
        body = parse(ViewRequest, raw)
        ctx.extra = {k: v for k, v in {"columns": body.columns, "filter": body.filter, "limit": body.limit,
                                       "group_by": body.group_by, "galois": body.galois}.items() if v is not None}
        purpose = gw.require_purpose(ctx, request.headers.get("x-purpose"),
                                     body.purpose or request.query_params.get("purpose"))
        gw.acquire_read_slot()
        slot = True
        view = svc.open_view(principal, purpose, ctx.dataset or "", body.columns, body.bounds, body.filter,
                             body.limit, body.group_by, body.groups, body.galois)
        ctx.plan = view.plan
        ctx.extra.update(view.audit)
        gw.audit.reserve(ctx.request_id)  # proves the audit store is writable before any data
    except GovernError as exc:
        if slot:
            gw.release_read_slot()
        gw.record_denial(ctx, exc)
        raise

    def finish(_objects: int, nbytes: int) -> None:
        gw.record(ctx, outcome="ok", status=200, rows=view.token.rows, nbytes=nbytes)
        gw.metrics.bytes.labels(dataset=ctx.dataset).inc(nbytes)

    headers = {"x-govern-plan-hash": view.plan.hash, "x-govern-view-id": view.token.view_id,
               "x-govern-key-id": view.header["key_id"]}
    return audited_stream(gw, ctx, encode("arrow", container.reader(view.header, view.items), finish),
                          media_type=container.MEDIA_TYPE, headers=headers)


# -- flow 2: aggregate release --------------------------------------------------------------------
@router.post(
    "/v1/he/release",
    summary="Release a declared aggregate over an encrypted view, with DP noise (never a decryption)",
    openapi_extra=_json_schema(ReleaseRequest),
)
async def release(request: Request) -> JSONResponse:
    ctx = RequestContext(request_id=request.state.request_id, route="he-release", action="he_release")
    principal, raw = await _begin(request, ctx, SMALL_BODY)
    return await run_in_threadpool(_release, request, ctx, principal, raw)


def _release(request: Request, ctx: RequestContext, principal: Principal, raw: bytes) -> JSONResponse:
    gw: Gateway = request.app.state.gateway
    svc = _service(request)
    try:
        body = parse(ReleaseRequest, raw)
        ctx.extra = {"computation": body.computation, "epsilon": body.epsilon}
        purpose = gw.require_purpose(ctx, request.headers.get("x-purpose"),
                                     body.purpose or request.query_params.get("purpose"))
        token = svc.token(principal, body.view_token)
        ctx.dataset = token.spec.dataset
        ctx.extra["view_id"] = token.view_id
        gw.audit.reserve(ctx.request_id)
        outcome = svc.release(principal, purpose, token, body.computation, body.epsilon, ctx.request_id)
        ctx.plan = outcome.plan
        ctx.extra.update(outcome.audit)
        gw.record(ctx, outcome="ok", status=200, rows=outcome.rows)
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return JSONResponse(outcome.body)


# -- flow 3: client-held keys ---------------------------------------------------------------------
@router.post(
    "/v1/datasets/{name}/encrypted-query",
    summary="Encrypted aggregates under your own key: send a public context and encrypted weights",
    openapi_extra=_json_schema(QueryRequest),
)
async def encrypted_query(name: str, request: Request) -> JSONResponse:
    ctx = RequestContext(request_id=request.state.request_id, route="encrypted-query", dataset=name,
                         action="he_query")
    gw: Gateway = request.app.state.gateway
    principal, raw = await _begin(request, ctx, gw.settings.he_max_request_bytes)
    return await run_in_threadpool(_query, request, ctx, principal, raw)


def _query(request: Request, ctx: RequestContext, principal: Principal, raw: bytes) -> JSONResponse:
    gw: Gateway = request.app.state.gateway
    svc = _service(request)
    try:
        body = parse(QueryRequest, raw)
        ctx.extra = {"computation": body.computation, "epsilon": body.epsilon, "weights": len(body.weights),
                     "context_bytes": len(body.context)}
        purpose = gw.require_purpose(ctx, request.headers.get("x-purpose"),
                                     body.purpose or request.query_params.get("purpose"))
        context = _b64(body.context, "context")
        weights = [_b64(w, f"weights[{i}]") for i, w in enumerate(body.weights)]
        gw.audit.reserve(ctx.request_id)
        outcome = svc.encrypted_query(principal, purpose, ctx.dataset or "", body.computation, context, weights,
                                      body.epsilon, ctx.request_id, bounds=body.bounds, filter=body.filter,
                                      limit=body.limit, group_by=body.group_by, groups=body.groups)
        del context
        ctx.plan = outcome.plan
        ctx.extra.update(outcome.audit)
        gw.record(ctx, outcome="ok", status=200, rows=outcome.rows)
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    result = dict(outcome.body)
    result["ciphertext"] = base64.b64encode(result.pop("_ciphertext")).decode()
    return JSONResponse(result)
