"""Synthetic views: ``POST /v1/datasets/{name}/synthetic`` and its model's status, fit and reports.

One pattern for every route: authenticate → read the small JSON body → purpose → decide and
plan with action ``read_synthetic`` → (SDV installed? else 501) → the synthetic service →
audit, exactly one record per request, success or refusal. Bodies are parsed here, not by
FastAPI, so a malformed request is refused *and audited*. SDV work runs in the thread pool.

No fitted model for the dataset's current version and configuration → ``202 Accepted``: a
background fit starts (or is already running) and ``Location`` points at the status route;
poll it, then send the request again. Rows are returned in the requested format with the
report: in the Arrow/Parquet schema metadata (``govern.synthetic.report``), summarized in
``x-govern-synthetic-*`` headers, and stored for ``GET …/synthetic/reports/{id}``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from govern.deliver.gateway import Gateway, RequestContext
from govern.errors import GovernError, LimitExceeded, NotFound, SyntheticError
from govern.identity.principal import Principal
from govern.plan.model import AccessPlan
from govern.privacy.synthetic.service import SyntheticService
from govern.privacy.synthetic.version import ModelRef
from govern.server.bodies import parse, read_body
from govern.server.streaming import MEDIA_TYPES, audited_stream, encode

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


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


@router.post(
    "/{name}/synthetic",
    summary="Synthetic rows shaped like the dataset, with your plan applied, and a quality/privacy report",
    openapi_extra=_json_schema(SyntheticRequest),
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}},
               202: {"description": "No fitted model yet: a fit is running; poll Location, then retry."}},
)
async def synthetic_rows(name: str, request: Request) -> Response:
    ctx = _context(request, "synthetic", name)
    principal, raw = await _begin(request, ctx)
    return await run_in_threadpool(_synthesize, request, ctx, principal, raw)


@router.get("/{name}/synthetic/status",
            summary="The synthetic model of the dataset's current version: state, fit progress, reports")
async def synthetic_status(name: str, request: Request) -> dict:
    ctx = _context(request, "synthetic-status", name)
    principal, _ = await _begin(request, ctx, body=False)
    return await run_in_threadpool(_status, request, ctx, principal)


@router.post("/{name}/synthetic/fit", summary="Start fitting the synthetic model (unless it is fitted or fitting)",
             openapi_extra=_json_schema(FitRequest), status_code=202)
async def synthetic_fit(name: str, request: Request) -> Response:
    ctx = _context(request, "synthetic-fit", name)
    principal, raw = await _begin(request, ctx)
    return await run_in_threadpool(_fit, request, ctx, principal, raw)


@router.get("/{name}/synthetic/reports/{report_id}", summary="The stored report of one of your synthetic responses")
async def synthetic_report(name: str, report_id: str, request: Request) -> dict:
    ctx = _context(request, "synthetic-report", name)
    principal, _ = await _begin(request, ctx, body=False)
    return await run_in_threadpool(_report, request, ctx, principal, report_id)


# -- the work, in the thread pool --------------------------------------------------------------
def _synthesize(request: Request, ctx: RequestContext, principal: Principal, raw: bytes) -> Response:
    gw, svc = _gateway(request), _service(request)
    slot = False
    try:
        body = parse(SyntheticRequest, raw)
        ctx.extra = {"rows": body.rows, "seed": body.seed, "format": body.format}
        plan, ref = _authorize(request, ctx, principal, body.purpose)
        if body.rows > gw.settings.synthetic_max_rows:
            raise LimitExceeded(f"rows may be at most {gw.settings.synthetic_max_rows}",
                                limit=gw.settings.synthetic_max_rows)
        model = svc.model(ref)
        if model is None:
            return _pending(request, ctx, ref)
        gw.acquire_read_slot()
        slot = True
        result = svc.synthesize(ref, model, plan, body.rows, body.seed)
        ctx.extra.update(seed=result.report["seed"], model=ref.key, report=result.report["id"],
                         rejected_copies=result.report["privacy"]["rejected_copies"])
        gw.audit.reserve(ctx.request_id)  # proves the audit store is writable before any data
    except GovernError as exc:
        if slot:
            gw.release_read_slot()
        gw.record_denial(ctx, exc)
        raise

    def finish(rows: int, nbytes: int) -> None:
        gw.record(ctx, outcome="ok", status=200, rows=rows, nbytes=nbytes)
        gw.metrics.rows.labels(dataset=ctx.dataset).inc(rows)
        gw.metrics.bytes.labels(dataset=ctx.dataset).inc(nbytes)

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
        headers["content-disposition"] = f'attachment; filename="{ctx.dataset}-synthetic.{body.format}"'
    return audited_stream(gw, ctx, encode(body.format, result.table.to_reader(), finish),
                          media_type=MEDIA_TYPES[body.format], headers=headers)


def _status(request: Request, ctx: RequestContext, principal: Principal) -> dict:
    gw, svc = _gateway(request), _service(request)
    try:
        _, ref = _authorize(request, ctx, principal, None)
        status = svc.status(ref)
        gw.record(ctx, outcome="ok", status=200, detail=f"model {status['state']}")
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return status


def _fit(request: Request, ctx: RequestContext, principal: Principal, raw: bytes) -> Response:
    gw, svc = _gateway(request), _service(request)
    try:
        body = parse(FitRequest, raw or b"{}")
        _, ref = _authorize(request, ctx, principal, body.purpose)
        status = svc.status(ref)
        if status["state"] == "ready":
            gw.record(ctx, outcome="ok", status=200, detail="model already fitted")
            return JSONResponse(status, status_code=200)
        svc.ensure_fit(ref)
        status = svc.status(ref)
        gw.record(ctx, outcome="ok", status=202, detail="fit started")
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return JSONResponse(status, status_code=202, headers=_poll_headers(request, ref))


def _report(request: Request, ctx: RequestContext, principal: Principal, report_id: str) -> dict:
    gw, svc = _gateway(request), _service(request)
    try:
        _authorize(request, ctx, principal, None, need_model=False)
        report = svc.report(report_id)
        if report.get("principal") != principal.name or report.get("dataset") != ctx.dataset:
            raise NotFound("unknown synthetic report")  # other callers' reports do not exist for you
        gw.record(ctx, outcome="ok", status=200, detail=f"report {report_id}")
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return report


# -- helpers -----------------------------------------------------------------------------------
def _authorize(request: Request, ctx: RequestContext, principal: Principal, body_purpose: str | None,
               *, need_model: bool = True) -> tuple[AccessPlan, ModelRef]:
    """Purpose, decision and plan for ``read_synthetic``; then SDV present (501 if not); then
    the model reference. Denied callers learn nothing about installation or models."""
    gw, svc = _gateway(request), _service(request)
    purpose = gw.require_purpose(ctx, request.headers.get("x-purpose"),
                                 body_purpose or request.query_params.get("purpose"))
    plan = gw.governor.plan(principal, ctx.dataset or "", purpose, action=ACTION)
    ctx.plan = plan
    svc.require_available()
    ref = svc.reference(ctx.dataset or "") if need_model else None
    return plan, ref  # type: ignore[return-value]


def _pending(request: Request, ctx: RequestContext, ref: ModelRef) -> Response:
    gw, svc = _gateway(request), _service(request)
    job = svc.jobs.status(ref.key)
    if job is not None and job.get("state") == "failed":
        raise SyntheticError(f"fitting the synthetic model failed: {job.get('error')}; start a new fit with "
                             f"POST /v1/datasets/{ref.dataset}/synthetic/fit", model=ref.key)
    svc.ensure_fit(ref)
    status = svc.status(ref)
    gw.record(ctx, outcome="ok", status=202, detail="no fitted model yet; fit running")
    return JSONResponse(status, status_code=202, headers=_poll_headers(request, ref))


def _poll_headers(request: Request, ref: ModelRef) -> dict[str, str]:
    return {"location": f"/v1/datasets/{ref.dataset}/synthetic/status", "retry-after": "2"}


async def _begin(request: Request, ctx: RequestContext, *, body: bool = True) -> tuple[Principal, bytes]:
    """Authenticate and read the body; a failure is audited and re-raised."""
    gw = _gateway(request)
    try:
        principal = await run_in_threadpool(gw.authenticate, ctx, request.headers.get("authorization"))
        return principal, (await read_body(request, MAX_BODY) if body else b"")
    except GovernError as exc:
        await run_in_threadpool(gw.record_denial, ctx, exc)
        raise


def _context(request: Request, route: str, dataset: str) -> RequestContext:
    return RequestContext(request_id=request.state.request_id, route=route, dataset=dataset, action=ACTION)


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _service(request: Request) -> SyntheticService:
    return request.app.state.synthetic
