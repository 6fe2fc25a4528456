"""Differentially private aggregates (``POST /v1/datasets/{name}/dp``) and budgets
(``GET /v1/budget``).

:func:`serve_release` is the one audited path for a DP release, shared by this router, DP SQL
over HTTP (``routes/sql.py``) and over the PostgreSQL wire: decide and pre-check → reserve the
audit record → compute (bounded pool) → charge the ledger → record → return. Exactly one audit
record per release or refusal (``action="query_dp"``, with the epsilon and delta spent); if the
ledger or the audit store cannot be written, nothing is returned.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from govern.deliver.gateway import Gateway, RequestContext
from govern.errors import AccessDenied, GovernError, InvalidRequest, NotFound
from govern.identity.principal import Principal, local_principal
from govern.privacy.dp import sql as dp_sql
from govern.privacy.dp.query import DpQuery, DpRequest, parse_request
from govern.privacy.dp.service import DpRelease
from govern.privacy.dp.sql import DpSql
from govern.server.bodies import load_json, read_body
from govern.server.routes.audit import administered

router = APIRouter(prefix="/v1", tags=["differential privacy"])

Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
PurposeHeader = Annotated[str | None, Header(alias="X-Purpose", description="Why you are asking.")]
PurposeQuery = Annotated[str | None, Query(alias="purpose", description="Alternative to X-Purpose.")]
MAX_BODY = 1_048_576


def serve_release(gw: Gateway, ctx: RequestContext, principal: Principal, purpose: str, query: DpQuery) -> DpRelease:
    """Release ``query`` for ``principal`` with exactly one audit record. Blocking."""
    ctx.action = "query_dp"
    ctx.dataset = query.dataset
    ctx.extra["dp"] = query.describe()
    charged = None
    try:
        prepared = gw.dp.prepare(principal, purpose, query)
        ctx.plan = prepared.access_plan
        gw.audit.reserve(ctx.request_id)  # the audit store is writable before anything is computed
        result = gw.dp.compute(prepared)
        charged = gw.dp.charge(prepared, ctx.request_id)
        ctx.extra.update(epsilon_spent=query.epsilon, delta_spent=query.delta,
                         budget_left=charged.status.to_dict()["left"], keys=prepared.plan.key_source,
                         threshold=result.threshold)
        gw.record(ctx, outcome="ok", status=200, rows=len(result.rows))
    except Exception as exc:  # every refusal and failure has its one audit record too
        ctx.extra.update(epsilon_spent=query.epsilon if charged else 0.0,
                         delta_spent=query.delta if charged else 0.0)
        gw.record_denial(ctx, exc if isinstance(exc, GovernError) else GovernError(
            f"the release failed ({type(exc).__name__})"))
        raise
    timings = {**prepared.timings, **result.timings}
    return DpRelease(prepared, result, charged, timings)


def server_timing(release: DpRelease) -> str:
    """``Server-Timing`` header: where the time went (OpenDP vs the gateway), in ms."""
    t = release.timings
    parts = {"plan": t.get("plan", 0.0), "read": t.get("read", 0.0),
             "opendp": t.get("opendp_build", 0.0) + t.get("opendp_run", 0.0),
             "engine": t.get("engine_total", 0.0)}
    return ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in parts.items())


@router.post(
    "/datasets/{name}/dp",
    summary="Differentially private aggregates (count, sum, mean, quantile, histogram), grouped, with 95% intervals",
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": DpRequest.model_json_schema()}}}},
)
async def release_dp(name: str, request: Request) -> JSONResponse:
    gw: Gateway = request.app.state.gateway
    ctx = RequestContext(request_id=request.state.request_id, route="dp", dataset=name, action="query_dp")
    try:
        principal = await run_in_threadpool(gw.authenticate, ctx, request.headers.get("authorization"))
        data = load_json(await read_body(request, MAX_BODY), '{"aggregates": [...], "epsilon": ...}')
        body = parse_request(data)
        purpose = gw.require_purpose(ctx, request.headers.get("x-purpose"),
                                     body.purpose or request.query_params.get("purpose"))
        query = body.to_query(name)
    except GovernError as exc:
        await run_in_threadpool(gw.record_denial, ctx, exc)
        raise
    # Blocking from here (ledger, audit, OpenDP in its own bounded pool): off the event loop.
    release = await run_in_threadpool(serve_release, gw, ctx, principal, purpose, query)
    return JSONResponse(release.to_dict(), headers={"server-timing": server_timing(release),
                                                     "x-govern-plan-hash": release.prepared.access_plan.hash})


@router.get("/budget", summary="Privacy budgets: spent and left per dataset, this period (yours, or as a "
                                "steward, another principal's)")
def budget(request: Request, authorization: Auth = None,
           dataset: Annotated[str | None, Query(description="Only this dataset.")] = None,
           principal: Annotated[str | None, Query(description="Another principal's budgets: needs `administer` "
                                                             "on the datasets, under the declared purpose.")] = None,
           x_purpose: Annotated[str | None, Header(alias="X-Purpose")] = None,
           purpose: Annotated[str | None, Query()] = None) -> dict:
    gw: Gateway = request.app.state.gateway
    ctx = RequestContext(request_id=request.state.request_id, route="budget", dataset=dataset, action="budget")
    try:
        caller = gw.authenticate(ctx, authorization)
        policy = gw.governor.state.policy
        if dataset and dataset not in policy.datasets:
            raise NotFound(f"unknown dataset '{dataset}'")
        names = [dataset] if dataset else sorted(b.dataset for b in policy.budgets)
        subject = caller
        if principal is not None and principal != caller.name:
            subject = _steward_view(gw, ctx, principal, dataset, x_purpose, purpose)
            names = [n for n in names if n in administered(gw, ctx)]
        budgets = [gw.ledger.status(subject, n).to_dict() for n in names]
        if subject is not caller:  # a steward read someone else's spending: leave a trace
            ctx.extra = {"of": subject.name, "returned": len(budgets)}
            gw.record(ctx, outcome="ok", status=200, rows=len(budgets))
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return {"principal": subject.name, "budgets": budgets}


def _steward_view(gw: Gateway, ctx: RequestContext, name: str, dataset: str | None,
                  x_purpose: str | None, purpose: str | None) -> Principal:
    """The principal whose budgets a steward asks for. The caller must declare a purpose and
    administer ``dataset`` (or, without one, at least one dataset: the answer lists only those).
    ``name`` must be declared in principals.yaml or have spent budget already (an OIDC-only
    principal), so a typo is a 404, not a silent row of zeros."""
    gw.require_purpose(ctx, x_purpose, purpose)
    allowed = administered(gw, ctx)
    if dataset is not None and dataset not in allowed:
        raise AccessDenied(f"you do not administer dataset '{dataset}'")
    policy = gw.governor.state.policy
    if name in policy.principals:
        return local_principal(policy, name)
    if gw.ledger.charges(principal=name, limit=1):
        return Principal(name=name)
    raise NotFound(f"unknown principal '{name}'")


def translate_sql(gw: Gateway, text: str, *, epsilon: float | None, delta: float = 0.0, contributions: int = 1,
                  bounds: dict[str, list[float]] | None = None) -> DpSql:
    """DP SQL → the query (``SqlError`` outside the subset)."""
    return dp_sql.translate(text, set(gw.governor.state.policy.datasets), epsilon=epsilon, delta=delta,
                            contributions=contributions, bounds=bounds)


def sql_types(translated: DpSql, release: DpRelease) -> list[str]:
    """Arrow type names of the DP SQL result columns (counts are integers, the rest doubles)."""
    functions = {a.output_name: a.function for a in translated.query.aggregates}
    types = release.prepared.plan.types
    return [types.get(src) or ("int64" if functions.get(src) == "count" else "double")
            for _display, src in translated.outputs]


def dp_sql_response(gw: Gateway, ctx: RequestContext, principal: Principal, purpose: str, body: Any) -> JSONResponse:
    """``POST /v1/sql`` with ``"privacy": "dp"`` (or a ``/*+ dp … */`` hint): the SQL endpoint's
    JSON shape (``columns``, ``rows``, ``row_count``) plus ``intervals``, ``privacy`` and ``budget``."""
    ctx.action = "query_dp"
    try:
        if body.format != "json":
            raise InvalidRequest("differentially private SQL answers in JSON only (format: json)")
        if body.params:
            raise InvalidRequest("differentially private SQL takes no parameters")
        translated = translate_sql(gw, body.sql, epsilon=body.epsilon, delta=body.delta,
                                   contributions=body.contributions, bounds=body.bounds)
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    release = serve_release(gw, ctx, principal, purpose, translated.query)
    names, values, intervals = dp_sql.result_table(translated, release.result.rows)
    full = release.to_dict()
    display = {src: name for name, src in translated.outputs}
    for m in full["privacy"]["mechanisms"]:
        m["aggregate"] = display.get(m["aggregate"], m["aggregate"])
    return JSONResponse(
        {"columns": [{"name": n, "type": t} for n, t in zip(names, sql_types(translated, release), strict=True)],
         "rows": values, "row_count": len(values), "intervals": intervals,
         "privacy": full["privacy"], "budget": full["budget"]},
        headers={"server-timing": server_timing(release), "x-govern-plan-hash": release.prepared.access_plan.hash})
