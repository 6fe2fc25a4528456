"""The audit trail, for principals allowed to ``administer``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from govern.deliver.gateway import Gateway, RequestContext
from govern.errors import AccessDenied, GovernError

router = APIRouter(prefix="/v1", tags=["stewards"])

Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]


def administered(gw: Gateway, ctx: RequestContext) -> set[str]:
    """Datasets the caller administers under the declared purpose (at least one, else 403)."""
    state = gw.governor.state
    assert ctx.principal is not None and ctx.purpose is not None
    names = {n for n in state.policy.datasets
             if state.decider.decide(ctx.principal, f"dataset:{n}", "administer", ctx.purpose).allowed}
    if not names:
        raise AccessDenied(f"'{ctx.principal.name}' may not administer any dataset for purpose '{ctx.purpose}'")
    return names


@router.get("/audit", summary="Audit records of the datasets you administer")
def read_audit(
    request: Request,
    authorization: Auth = None,
    x_purpose: Annotated[str | None, Header(alias="X-Purpose")] = None,
    purpose: Annotated[str | None, Query()] = None,
    after: Annotated[int, Query(ge=0, description="Return records with seq > after.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    principal: Annotated[str | None, Query(description="Only this principal's records.")] = None,
    dataset: Annotated[str | None, Query()] = None,
) -> dict:
    gw: Gateway = request.app.state.gateway
    ctx = RequestContext(request_id=request.state.request_id, route="audit", action="audit")
    try:
        gw.authenticate(ctx, authorization)
        gw.require_purpose(ctx, x_purpose, purpose)
        allowed = administered(gw, ctx)
        if dataset is not None and dataset not in allowed:
            raise AccessDenied(f"you do not administer dataset '{dataset}'")
        records = gw.audit.records(after_seq=after, limit=limit, principal=principal, dataset=dataset)
        visible = [r for r in records if r.dataset is None or r.dataset in allowed]
        ctx.extra = {"after": after, "returned": len(visible)}
        gw.record(ctx, outcome="ok", status=200, rows=len(visible))
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return {"records": [asdict(r) for r in visible],
            "next_after": records[-1].seq if records else after}
