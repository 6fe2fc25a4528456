"""Explain: why a principal sees what it sees (for administrators of the dataset)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from govern.deliver.gateway import Gateway, RequestContext
from govern.errors import AccessDenied, GovernError
from govern.identity.principal import local_principal

router = APIRouter(prefix="/v1/policy", tags=["stewards"])

Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]


@router.get("/explain", summary="The access plan of a principal for a dataset and purpose, with reasons")
def explain(
    request: Request,
    principal: Annotated[str, Query(description="The principal to explain.")],
    dataset: Annotated[str, Query()],
    for_purpose: Annotated[str, Query(alias="for_purpose", description="The purpose that principal declares.")],
    authorization: Auth = None,
    x_purpose: Annotated[str | None, Header(alias="X-Purpose")] = None,
    purpose: Annotated[str | None, Query(description="Your own purpose (e.g. governance).")] = None,
) -> dict:
    gw: Gateway = request.app.state.gateway
    ctx = RequestContext(request_id=request.state.request_id, route="explain", dataset=dataset, action="explain")
    try:
        caller = gw.authenticate(ctx, authorization)
        own = gw.require_purpose(ctx, x_purpose, purpose)
        state = gw.governor.state
        if not state.decider.decide(caller, f"dataset:{dataset}", "administer", own).allowed:
            raise AccessDenied(f"'{caller.name}' may not administer dataset '{dataset}' for purpose '{own}'")
        subject = local_principal(state.policy, principal)
        try:
            plan = gw.governor.plan(subject, dataset, for_purpose)
            body = {"allowed": True, "plan": plan.to_dict(), "plan_hash": plan.hash}
        except GovernError as exc:
            if exc.status >= 500:
                raise
            body = {"allowed": False, "denied": {"type": exc.type, "detail": exc.detail}}
        ctx.extra = {"principal": principal, "for_purpose": for_purpose}
        gw.record(ctx, outcome="ok", status=200)
    except GovernError as exc:
        gw.record_denial(ctx, exc)
        raise
    return body
