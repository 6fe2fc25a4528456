"""The FastAPI application factory. Nothing is configured at import time.

``create_app(settings)`` builds the gateway (core, identity, audit, reload, metrics), installs
the single error mapping (every error is ``application/problem+json``), the request-id and
access-log middleware, and one router per resource.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from govern import __version__
from govern.audit.log import AuditLog, open_audit_log
from govern.config import Settings
from govern.deliver.gateway import Gateway
from govern.deliver.governor import Governor
from govern.errors import GovernError
from govern.identity.authenticate import Authenticator
from govern.policy.reload import PolicyReloader
from govern.server.logs import configure_logging, request_id_var
from govern.server.metrics import Metrics
from govern.server.problems import from_error, problem_response

log = logging.getLogger("govern.deliver.governor")


class RequestContextMiddleware:
    """Request id, access log and metrics, as plain ASGI.

    Not ``BaseHTTPMiddleware``: that one re-streams bodies and can end a response cleanly when
    the app fails midway, which would turn a broken stream into a short body that looks
    complete. Here an exception propagates and the server aborts the connection.
    """

    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = Gateway.new_request_id(headers.get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            route_name = getattr(route, "path", "unmatched")
            m = self.gateway.metrics
            m.requests.labels(route=route_name, method=scope.get("method", ""), status=str(status["code"])).inc()
            m.latency.labels(route=route_name).observe(elapsed)
            log.info("request", extra={"request_id": rid, "method": scope.get("method"), "route": route_name,
                                       "status": status["code"], "ms": round(elapsed * 1000, 2)})


def build_gateway(settings: Settings, *, governor: Governor | None = None, audit: AuditLog | None = None) -> Gateway:
    governor = governor or Governor(settings)
    if audit is None:
        url = settings.audit_url or f"sqlite:///{(settings.state_dir / 'audit.db').resolve()}"
        audit = open_audit_log(url, table_prefix=settings.audit_table_prefix)
    authenticator = Authenticator(lambda: governor.state.policy, settings.oidc)
    reloader = PolicyReloader(settings.policy_dir, governor.state.policy, governor.swap_policy,
                              debounce_ms=settings.reload_debounce_ms)
    return Gateway(settings, governor, audit, authenticator, reloader, Metrics())


def create_app(settings: Settings, *, gateway: Gateway | None = None) -> FastAPI:
    configure_logging(settings.log_level)
    gw = gateway or build_gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if settings.watch_policies and gw.reloader is not None:
            gw.reloader.start()
        try:
            yield
        finally:
            if gw.reloader is not None:
                gw.reloader.stop()
            gw.sandboxes.close()
            gw.audit.close()
            gw.dp.close()
            gw.ledger.close()

    app = FastAPI(
        title="govern",
        version=__version__,
        description="Purpose-based, audited access to masked datasets.",
        lifespan=lifespan,
    )
    app.state.gateway = gw
    # Encrypted views (govern.privacy.he): keys, rate limits and HE work bounds of this process.
    from govern.privacy.he.service import HeService

    app.state.he = HeService(settings, gw.governor, gw.ledger)
    # Synthetic views (govern.privacy.synthetic): models, fit jobs, reports. SDV loads on first use.
    from govern.privacy.synthetic.service import SyntheticService

    app.state.synthetic = SyntheticService(settings, gw.governor)

    @app.exception_handler(GovernError)
    async def governed(request: Request, exc: GovernError) -> Response:
        return from_error(exc, request_id_var.get())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        return problem_response(422, "validation-error", "Invalid request parameters",
                                f"{where}: {first.get('msg', 'invalid value')}", request_id=request_id_var.get())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        return problem_response(exc.status_code, slug, detail, detail, request_id=request_id_var.get())

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"route": request.url.path})
        return problem_response(500, "internal", "Internal error",
                                "the gateway failed to handle this request; it has been logged",
                                request_id=request_id_var.get())

    app.add_middleware(RequestContextMiddleware, gateway=gw)

    from govern.server.routes import audit, datasets, dp, health, policy, sql

    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(sql.router)
    app.include_router(dp.router)
    app.include_router(audit.router)
    app.include_router(policy.router)

    from govern.server.routes import encrypted

    app.include_router(encrypted.router)

    from govern.server.routes import synthetic

    app.include_router(synthetic.router)
    return app
