"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from govern.errors import GovernError
from govern.server.problems import problem_response

router = APIRouter(tags=["health"])


@router.head("/healthz", summary="Liveness (headers only)")
@router.get("/healthz", summary="Liveness: the process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.head("/readyz", summary="Readiness (headers only)", responses={503: {"description": "Not ready"}})
@router.get("/readyz", summary="Readiness: policy loaded and valid, storage reachable",
            responses={503: {"description": "Not ready: the policy problems and unreachable storage"}})
def readyz(request: Request) -> Response:
    gw = request.app.state.gateway
    status = gw.reloader.status() if gw.reloader else None
    problems = [str(p) for p in status.problems] if status else []
    storage = []
    for name in sorted(gw.governor.state.policy.datasets):
        try:
            gw.governor.check_storage(name, timeout=gw.settings.storage_timeout)
        except GovernError as exc:
            storage.append(f"dataset '{name}': {exc.detail}")
    body = {
        "policy_version": gw.governor.state.policy.version,
        "policy_since": gw.policy_since(),
        "instance": gw.fleet.instance_id if gw.fleet is not None else None,
        "policy_problems": problems,
        "storage_problems": storage,
    }
    if problems or storage:
        detail = "; ".join(problems + storage)
        return problem_response(503, "not-ready", "Not ready", detail,
                                extra={"problems": [p.to_dict() for p in status.problems] if status else [],
                                       "policy_version": body["policy_version"], "instance": body["instance"]})
    return JSONResponse({"status": "ready", **body})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(request.app.state.gateway.metrics.render(), media_type="text/plain; version=0.0.4")
