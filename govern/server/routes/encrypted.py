"""Encrypted views (CKKS): the view stream, aggregate releases, and client-held-key queries.

Three routes, one pattern — the request lifecycle: authenticate → read the size-limited body
→ purpose → decide (``read_encrypted`` on the dataset) → only then validate the body, decode
base64 and deserialize TenSEAL objects → the HE service (plan, read, encrypt or evaluate) → the
exchange's one audit record, success or refusal. Heavy work runs in the thread pool, never on
the event loop.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Exchange
from govern.errors import InvalidRequest
from govern.privacy.he import container
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
from govern.server.streaming import ReadStream, encode

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


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{what} must be base64") from None


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


# -- flow 1: the encrypted view -------------------------------------------------------------------
@router.post(
    "/v1/datasets/{name}/encrypted",
    summary="CKKS ciphertexts of the numeric columns you may read, with the public context (no secret key)",
    openapi_extra=json_body(ViewRequest),
    responses={200: {"content": {container.MEDIA_TYPE: {}}}, **errors(408, 413, 501)},
)
async def encrypted_view(name: str, request: Request) -> ReadStream:
    async with governed(request, "encrypted", "read_encrypted", name) as ex:
        await run_in_threadpool(ex.authenticate, bearer(request))
        raw = await read_body(ex, request, SMALL_BODY)
        return await run_in_threadpool(_start_view, _gateway(request), ex, request, raw)


def _start_view(gw: Gateway, ex: Exchange, request: Request, raw: bytes) -> ReadStream:
    data = load_json(raw)
    purpose = ex.declare(*purpose_candidates(request, body_purpose(data)))
    ex.authorize(ex.dataset or "", "read_encrypted")
    body = validate(ViewRequest, data)
    ex.extra.update({k: v for k, v in {"columns": body.columns, "filter": body.filter, "limit": body.limit,
                                       "group_by": body.group_by, "galois": body.galois}.items() if v is not None})
    ex.admit()
    assert ex.principal is not None
    view = gw.he.open_view(ex.principal, purpose, ex.dataset or "", body.columns, body.bounds, body.filter,
                           body.limit, body.group_by, body.groups, body.galois)
    ex.plan = view.plan
    ex.extra.update(view.audit)
    rows = view.token.rows

    def source(finish: Callable[[int, int], None]) -> Iterator[bytes | memoryview]:
        return encode("arrow", container.reader(view.header, view.items), lambda _objects, nbytes: finish(rows, nbytes))

    stream = ex.stream(source)
    headers = {"x-govern-plan-hash": view.plan.hash, "x-govern-view-id": view.token.view_id,
               "x-govern-key-id": view.header["key_id"]}
    return ReadStream(stream, media_type=container.MEDIA_TYPE, headers=headers)


# -- flow 2: aggregate release --------------------------------------------------------------------
@router.post(
    "/v1/he/release",
    summary="Release a declared aggregate over an encrypted view, with DP noise (never a decryption)",
    openapi_extra=json_body(ReleaseRequest), responses=errors(413, 429, 501),
)
async def release(request: Request) -> JSONResponse:
    async with governed(request, "he-release", "he_release") as ex:
        await run_in_threadpool(ex.authenticate, bearer(request))
        raw = await read_body(ex, request, SMALL_BODY)
        return await run_in_threadpool(_release, _gateway(request), ex, request, raw)


def _release(gw: Gateway, ex: Exchange, request: Request, raw: bytes) -> JSONResponse:
    data = load_json(raw)
    purpose = ex.declare(*purpose_candidates(request, body_purpose(data)))
    body = validate(ReleaseRequest, data)
    ex.extra.update({"computation": body.computation, "epsilon": body.epsilon})
    assert ex.principal is not None
    token = gw.he.token(ex.principal, body.view_token)
    ex.extra["view_id"] = token.view_id
    ex.authorize(token.spec.dataset, "read_encrypted")
    ex.admit()
    outcome = gw.he.release(ex.principal, purpose, token, body.computation, body.epsilon, ex.request_id)
    ex.plan = outcome.plan
    ex.extra.update(outcome.audit)
    ex.finish(rows=outcome.rows)
    return JSONResponse(outcome.body)


# -- flow 3: client-held keys ---------------------------------------------------------------------
@router.post(
    "/v1/datasets/{name}/encrypted-query",
    summary="Encrypted aggregates under your own key: send a public context and encrypted weights",
    openapi_extra=json_body(QueryRequest), responses=errors(408, 413, 429, 501),
)
async def encrypted_query(name: str, request: Request) -> JSONResponse:
    gw = _gateway(request)
    async with governed(request, "encrypted-query", "he_query", name) as ex:
        await run_in_threadpool(ex.authenticate, bearer(request))
        raw = await read_body(ex, request, gw.settings.he_max_request_bytes)
        return await run_in_threadpool(_query, gw, ex, request, raw)


def _query(gw: Gateway, ex: Exchange, request: Request, raw: bytes) -> JSONResponse:
    data = load_json(raw)
    purpose = ex.declare(*purpose_candidates(request, body_purpose(data)))
    # Decide before anything costly: base64 and TenSEAL deserialization come after the decision.
    ex.authorize(ex.dataset or "", "read_encrypted")
    body = validate(QueryRequest, data)
    ex.extra.update({"computation": body.computation, "epsilon": body.epsilon, "weights": len(body.weights),
                     "context_bytes": len(body.context)})
    ex.admit()
    context = _b64(body.context, "context")
    weights = [_b64(w, f"weights[{i}]") for i, w in enumerate(body.weights)]
    assert ex.principal is not None
    outcome = gw.he.encrypted_query(ex.principal, purpose, ex.dataset or "", body.computation, context, weights,
                                    body.epsilon, ex.request_id, bounds=body.bounds, filter=body.filter,
                                    limit=body.limit, group_by=body.group_by, groups=body.groups)
    del context
    ex.plan = outcome.plan
    ex.extra.update(outcome.audit)
    result = dict(outcome.body)
    result["ciphertext"] = base64.b64encode(result.pop("_ciphertext")).decode()
    ex.finish(rows=outcome.rows)
    return JSONResponse(result)
