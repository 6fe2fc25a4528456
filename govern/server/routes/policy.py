"""Explain: why a principal sees what it sees (for administrators of the dataset)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from govern.deliver.gateway import Gateway
from govern.errors import GovernError
from govern.policy.model import local_principal
from govern.server.contract import errors
from govern.server.exchange import bearer, governed, purpose_candidates

router = APIRouter(prefix="/v1/policy", tags=["stewards"])

Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]


@router.head("/explain", summary="An access plan (headers only)", responses=errors())
@router.get("/explain", summary="The access plan of a principal for a dataset and purpose, with reasons",
            responses=errors())
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
    with governed(request, "explain", "explain", dataset) as ex:
        ex.extra.update({"principal": principal, "for_purpose": for_purpose})
        ex.authenticate(bearer(request))
        ex.declare(*purpose_candidates(request))
        ex.authorize(dataset, "administer")
        subject = local_principal(ex.state.policy, principal)
        try:
            plan = gw.governor.plan(subject, dataset, for_purpose, state=ex.state)
            body = {"allowed": True, "plan": plan.to_dict(), "plan_hash": plan.hash}
        except GovernError as exc:
            if exc.status >= 500:
                raise
            body = {"allowed": False, "denied": {"type": exc.type, "detail": exc.detail}}
        ex.finish()
    return body
