"""Differentially private aggregates (``POST /v1/datasets/{name}/dp``), DP SQL's JSON answer, and
budgets (``GET /v1/budget``).

The release itself — authorize, plan, compute, check, charge, record — is
:func:`govern.deliver.releases.release_dp`, the same for every surface; this router parses
the request after authentication and renders the answer.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Exchange
from govern.deliver.releases import release_dp, sql_types, translate_sql
from govern.errors import AccessDenied, NotFound
from govern.identity.principal import Principal
from govern.policy.model import local_principal
from govern.privacy.dp import sql as dp_sql
from govern.privacy.dp.query import DpRequest, parse_request
from govern.privacy.dp.service import DpRelease
from govern.server.contract import errors, json_body
from govern.server.exchange import (
    bearer,
    body_purpose,
    governed,
    load_json,
    purpose_candidates,
    read_body,
)

router = APIRouter(prefix="/v1", tags=["differential privacy"])

Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
MAX_BODY = 1_048_576
JSON = "application/json"


def server_timing(release: DpRelease) -> str:
    """``Server-Timing`` header: where the time went (OpenDP vs the gateway), in ms."""
    t = release.timings
    parts = {"plan": t.get("plan", 0.0), "read": t.get("read", 0.0),
             "opendp": t.get("opendp_build", 0.0) + t.get("opendp_run", 0.0),
             "engine": t.get("engine_total", 0.0)}
    return ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in parts.items())


def _json(body: Any) -> bytes:
    return json.dumps(body, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()


@router.post(
    "/datasets/{name}/dp",
    summary="Differentially private aggregates (count, sum, mean, quantile, histogram), grouped, with 95% intervals",
    openapi_extra=json_body(DpRequest),
    responses=errors(408, 413, 501),
)
async def dp_release(name: str, request: Request) -> Response:
    async with governed(request, "dp", "query_dp", name) as ex:
        await run_in_threadpool(ex.authenticate, bearer(request))
        raw = await read_body(ex, request, MAX_BODY)
        return await run_in_threadpool(_release, request.app.state.gateway, ex, request, raw)


def _release(gw: Gateway, ex: Exchange, request: Request, raw: bytes) -> Response:
    data = load_json(raw, '{"aggregates": [...], "epsilon": ...}')
    ex.declare(*purpose_candidates(request, body_purpose(data)))
    ex.authorize(ex.dataset or "", "query_dp")
    query = parse_request(data).to_query(ex.dataset or "")
    release, body = release_dp(ex, gw.dp, query, lambda r: _json(_with_suppressed(ex, r.to_dict())))
    return Response(body, media_type=JSON, headers=_headers(ex, release))


def _with_suppressed(ex: Exchange, body: dict[str, Any]) -> dict[str, Any]:
    """``suppressed_groups`` in the body when a ``min_group`` policy applied (docs/privacy.md)."""
    if "suppressed_groups" in ex.extra:
        body["suppressed_groups"] = ex.extra["suppressed_groups"]
    return body


def _headers(ex: Exchange, release: DpRelease) -> dict[str, str]:
    headers = {"server-timing": server_timing(release), "x-govern-plan-hash": release.prepared.access_plan.hash}
    if "suppressed_groups" in ex.extra:
        headers["x-govern-suppressed-groups"] = str(ex.extra["suppressed_groups"])
    return headers


def dp_sql_response(gw: Gateway, ex: Exchange, text: str, *, epsilon: float | None, delta: float,
                    contributions: int, bounds: dict[str, list[float]] | None) -> Response:
    """``POST /v1/sql`` with ``"privacy": "dp"`` (or a ``/*+ dp … */`` hint): the SQL endpoint's
    JSON shape (``columns``, ``rows``, ``row_count``) plus ``intervals``, ``privacy`` and ``budget``."""
    ex.action = "query_dp"
    ex.permitted("query_dp")  # refused before the SQL is parsed when there is nothing to release
    translated = translate_sql(ex, text, epsilon=epsilon, delta=delta, contributions=contributions, bounds=bounds)

    def render(release: DpRelease) -> bytes:
        names, values, intervals = dp_sql.result_table(translated, release.result.rows)
        full = release.to_dict()
        display = {src: name for name, src in translated.outputs}
        for m in full["privacy"]["mechanisms"]:
            m["aggregate"] = display.get(m["aggregate"], m["aggregate"])
        return _json(_with_suppressed(ex, {
            "columns": [{"name": n, "type": t} for n, t in zip(names, sql_types(translated, release), strict=True)],
            "rows": values, "row_count": len(values), "intervals": intervals,
            "privacy": full["privacy"], "budget": full["budget"]}))

    release, body = release_dp(ex, gw.dp, translated.query, render)
    return Response(body, media_type=JSON, headers=_headers(ex, release))


@router.head("/budget", summary="Privacy budgets (headers only)", responses=errors())
@router.get("/budget", summary="Privacy budgets: spent and left per dataset, this period (yours, or as a "
                                "steward, another principal's)", responses=errors())
def budget(request: Request, authorization: Auth = None,
           dataset: Annotated[str | None, Query(description="Only this dataset.")] = None,
           principal: Annotated[str | None, Query(description="Another principal's budgets: needs `administer` "
                                                             "on the datasets, under the declared purpose.")] = None,
           x_purpose: Annotated[str | None, Header(alias="X-Purpose")] = None,
           purpose: Annotated[str | None, Query()] = None) -> dict:
    gw: Gateway = request.app.state.gateway
    with governed(request, "budget", "budget", dataset) as ex:
        caller = ex.authenticate(bearer(request))
        policy = ex.state.policy
        if dataset and dataset not in policy.datasets:
            raise NotFound(f"unknown dataset '{dataset}'")
        names = [dataset] if dataset else sorted(b.dataset for b in policy.budgets)
        subject = caller
        if principal is not None and principal != caller.name:
            ex.declare(*purpose_candidates(request))
            allowed = ex.permitted("administer")
            if dataset is not None and dataset not in allowed:
                raise AccessDenied(f"you do not administer dataset '{dataset}'")
            subject = _subject(gw, ex, principal)
            names = [n for n in names if n in allowed]
            ex.extra["of"] = subject.name
        budgets = [gw.ledger.status(subject, n).to_dict() for n in names]
        ex.finish(rows=len(budgets))
    return {"principal": subject.name, "budgets": budgets}


def _subject(gw: Gateway, ex: Exchange, name: str) -> Principal:
    """The principal whose budgets a steward asks for: declared in principals.yaml, or one that
    has spent budget already (an OIDC-only principal), so a typo is a 404, not zeros."""
    policy = ex.state.policy
    if name in policy.principals:
        return local_principal(policy, name)
    if gw.ledger.charges(principal=name, limit=1):
        return Principal(name=name)
    raise NotFound(f"unknown principal '{name}'")

