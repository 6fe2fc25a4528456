"""The audit trail, for principals allowed to ``administer``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from govern.audit import visible as audit_visible
from govern.deliver.gateway import Gateway
from govern.errors import AccessDenied
from govern.server.contract import errors
from govern.server.exchange import bearer, governed, purpose_candidates

router = APIRouter(prefix="/v1", tags=["stewards"])

Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]


@router.head("/audit", summary="Audit records (headers only)", responses=errors())
@router.get("/audit", summary="Audit records of the datasets you administer", responses=errors())
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
    with governed(request, "audit", "audit") as ex:
        ex.authenticate(bearer(request))
        ex.declare(*purpose_candidates(request))
        allowed = frozenset(ex.permitted("administer"))
        if dataset is not None and dataset not in allowed:
            raise AccessDenied(f"you do not administer dataset '{dataset}'")
        records = gw.audit.records(after_seq=after, limit=limit, principal=principal, dataset=dataset)
        # every dataset a record touches must be the caller's; records of no dataset come redacted
        visible = [v for r in records if (v := audit_visible(r, allowed)) is not None]
        ex.extra.update({"after": after, "returned": len(visible)})
        ex.finish(rows=len(visible))
    return {"records": [asdict(r) for r in visible],
            "next_after": records[-1].seq if records else after}
