"""Synthetic views: ``POST /v1/datasets/{name}/synthetic`` and its model's status, fit and reports.

One pattern for every route, the request lifecycle: authenticate → read the small JSON body →
purpose → decide and plan with action ``read_synthetic`` → (SDV installed? else 501) → the
synthetic service → the exchange's one audit record, success or refusal. SDV work runs in the
thread pool.

No fitted model for the dataset's current version and configuration → ``202 Accepted``: a
background fit starts (or is already running) and ``Location`` points at the status route;
poll it, then send the request again. Rows are returned in the requested format with the
report: in the Arrow/Parquet schema metadata (``govern.synthetic.report``), summarized in
``x-govern-synthetic-*`` headers, and stored for ``GET …/synthetic/reports/{id}``.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Exchange
from govern.errors import LimitExceeded, NotFound, SyntheticError
from govern.plan.model import AccessPlan
from govern.privacy.synthetic.service import SyntheticService
from govern.privacy.synthetic.version import ModelRef
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
from govern.server.streaming import MEDIA_TYPES, ReadStream, encode

router = APIRouter(prefix="/v1/datasets", tags=["synthetic"])

ACTION = "read_synthetic"
MAX_BODY = 65_536


class SyntheticRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str | None = Field(default=None, description="Why you are asking (or the X-Purpose header).")
    rows: int = Field(ge=1, description="How many synthetic rows to sample (before your plan's row filters).")
    seed: int | None = Field(default=None, ge=0, lt=2**63,
                             description="Same seed, same model, same plan: the same rows. Omit for fresh rows.")
    format: Literal["arrow", "parquet", "csv", "jsonl"] = "arrow"


class FitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str | None = None


@router.post(
    "/{name}/synthetic",
    summary="Synthetic rows shaped like the dataset, with your plan applied, and a quality/privacy report",
    openapi_extra=json_body(SyntheticRequest),
    responses={**errors(408, 413, 501), 200: {"content": {m: {} for m in MEDIA_TYPES.values()}},
               202: {"description": "No fitted model yet: a fit is running; poll Location, then retry."}},
)
async def synthetic_rows(name: str, request: Request) -> Response:
    async with governed(request, "synthetic", ACTION, name) as ex:
        raw = await _begin(request, ex)
        return await run_in_threadpool(_synthesize, request, ex, raw)


@router.head("/{name}/synthetic/status", summary="The synthetic model's state (headers only)",
             responses=errors(501))
@router.get("/{name}/synthetic/status",
            summary="The synthetic model of the dataset's current version: state, fit progress, reports",
            responses=errors(501))
async def synthetic_status(name: str, request: Request) -> dict:
    async with governed(request, "synthetic-status", ACTION, name) as ex:
        await _begin(request, ex, body=False)
        return await run_in_threadpool(_status, request, ex)


@router.post("/{name}/synthetic/fit", summary="Start fitting the synthetic model (unless it is fitted or fitting)",
             openapi_extra=json_body(FitRequest), status_code=202, responses=errors(413, 501))
async def synthetic_fit(name: str, request: Request) -> Response:
    async with governed(request, "synthetic-fit", ACTION, name) as ex:
        raw = await _begin(request, ex)
        return await run_in_threadpool(_fit, request, ex, raw)


@router.head("/{name}/synthetic/reports/{report_id}", summary="A stored report (headers only)",
             responses=errors(501))
@router.get("/{name}/synthetic/reports/{report_id}", summary="The stored report of one of your synthetic responses",
            responses=errors(501))
async def synthetic_report(name: str, report_id: str, request: Request) -> dict:
    async with governed(request, "synthetic-report", ACTION, name) as ex:
        await _begin(request, ex, body=False)
        return await run_in_threadpool(_report, request, ex, report_id)


# -- the work, in the thread pool --------------------------------------------------------------
def _synthesize(request: Request, ex: Exchange, raw: bytes) -> Response:
    gw, svc = _gateway(request), _service(request)
    data = load_json(raw)
    plan, ref = _authorize(request, ex, body_purpose(data))
    body = validate(SyntheticRequest, data)
    ex.extra.update({"rows": body.rows, "seed": body.seed, "format": body.format})
    if body.rows > gw.settings.synthetic_max_rows:
        raise LimitExceeded(f"rows may be at most {gw.settings.synthetic_max_rows}",
                            limit=gw.settings.synthetic_max_rows)
    model = svc.model(ref)
    if model is None:
        return _pending(request, ex, ref)
    ex.admit()
    result = svc.synthesize(ref, model, plan, body.rows, body.seed)
    ex.extra.update(seed=result.report["seed"], model=ref.key, report=result.report["id"],
                    rejected_copies=result.report["privacy"]["rejected_copies"])
    report = result.report
    quality = report["quality"].get("score")
    headers = {
        "x-govern-plan-hash": plan.hash,
        "x-govern-synthetic-report": report["id"],
        "x-govern-synthetic-seed": str(report["seed"]),
        "x-govern-synthetic-model": ref.key,
        "x-govern-synthetic-quality": "" if quality is None else f"{quality:.4f}",
        "x-govern-synthetic-exact-copies": str(report["privacy"]["exact_copies"]),
    }
    if body.format != "arrow":
        headers["content-disposition"] = f'attachment; filename="{ex.dataset}-synthetic.{body.format}"'
    fmt = body.format
    stream = ex.stream(lambda finish: encode(fmt, result.table.to_reader(), finish))
    return ReadStream(stream, media_type=MEDIA_TYPES[fmt], headers=headers)


def _status(request: Request, ex: Exchange) -> dict:
    _, ref = _authorize(request, ex, None)
    status = _service(request).status(ref)
    ex.finish(detail=f"model {status['state']}")
    return status


def _fit(request: Request, ex: Exchange, raw: bytes) -> Response:
    svc = _service(request)
    data = load_json(raw or b"{}")
    _, ref = _authorize(request, ex, body_purpose(data))
    validate(FitRequest, data)
    status = svc.status(ref)
    if status["state"] == "ready":
        ex.finish(detail="model already fitted")
        return JSONResponse(status, status_code=200)
    svc.ensure_fit(ref)
    status = svc.status(ref)
    ex.finish(status=202, detail="fit started")
    return JSONResponse(status, status_code=202, headers=_poll_headers(request, ref))


def _report(request: Request, ex: Exchange, report_id: str) -> dict:
    _authorize(request, ex, None, need_model=False)
    report = _service(request).report(report_id)
    assert ex.principal is not None
    if report.get("principal") != ex.principal.name or report.get("dataset") != ex.dataset:
        raise NotFound("unknown synthetic report")  # other callers' reports do not exist for you
    ex.finish(detail=f"report {report_id}")
    return report


# -- helpers -----------------------------------------------------------------------------------
def _authorize(request: Request, ex: Exchange, body_purpose: str | None, *,
               need_model: bool = True) -> tuple[AccessPlan, ModelRef]:
    """Purpose, decision and plan for ``read_synthetic``; then SDV present (501 if not); then
    the model reference. Denied callers learn nothing about installation or models."""
    svc = _service(request)
    ex.declare(*purpose_candidates(request, body_purpose))
    plan = ex.compile(ex.dataset or "", ACTION)
    svc.require_available()
    ref = svc.reference(ex.dataset or "") if need_model else None
    return plan, ref  # type: ignore[return-value]


def _pending(request: Request, ex: Exchange, ref: ModelRef) -> Response:
    svc = _service(request)
    job = svc.jobs.status(ref.key)
    if job is not None and job.get("state") == "failed":
        raise SyntheticError(f"fitting the synthetic model failed: {job.get('error')}; start a new fit with "
                             f"POST /v1/datasets/{ref.dataset}/synthetic/fit", model=ref.key)
    svc.ensure_fit(ref)
    status = svc.status(ref)
    ex.finish(status=202, detail="no fitted model yet; fit running")
    return JSONResponse(status, status_code=202, headers=_poll_headers(request, ref))


def _poll_headers(request: Request, ref: ModelRef) -> dict[str, str]:
    return {"location": f"/v1/datasets/{ref.dataset}/synthetic/status", "retry-after": "2"}


async def _begin(request: Request, ex: Exchange, *, body: bool = True) -> bytes:
    """Authenticate, then read the body."""
    await run_in_threadpool(ex.authenticate, bearer(request))
    return await read_body(ex, request, MAX_BODY) if body else b""


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _service(request: Request) -> SyntheticService:
    return _gateway(request).synthetic
