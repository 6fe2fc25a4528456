"""The FastAPI application factory. Nothing is configured at import time.

``create_app(settings)`` builds the gateway (:func:`govern.deliver.gateway.build_gateway`),
installs the exchange middleware (one request lifecycle and one audit record per request, and
the answer to a crash: :mod:`govern.server.exchange`), the single error mapping (every error is
``application/problem+json``, and records its refusal on the request's exchange) and one
router per resource.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from govern import __version__
from govern.config import Settings
from govern.console import routes as console_routes
from govern.console.service import Console
from govern.deliver.gateway import Gateway, build_gateway
from govern.deliver.lifecycle import Exchange
from govern.errors import GovernError
from govern.logs import configure_logging, request_id_var
from govern.server.contract import describe
from govern.server.exchange import METHODS, ExchangeMiddleware
from govern.server.problems import from_error, problem_response
from govern.server.routes import (
    audit,
    datasets,
    dp,
    encrypted,
    health,
    policy,
    scans,
    sharing,
    sql,
    synthetic,
)
from govern.sql.isolation import SqlService

__all__ = ["create_app"]


def _exchange(request: Request) -> Exchange | None:
    return request.scope.get("state", {}).get("exchange")


async def _refuse(request: Request, exc: BaseException) -> None:
    """Record ``exc`` on the request's exchange (a no-op when the route already did)."""
    exchange = _exchange(request)
    if exchange is not None and not exchange.settled:
        await run_in_threadpool(exchange.refuse, exc)


async def _settle(request: Request, status: int, slug: str, detail: str) -> None:
    """Record a refusal FastAPI or the router made (422, 404, 405) on the request's exchange."""
    exchange = _exchange(request)
    if exchange is not None and not exchange.settled:
        await run_in_threadpool(exchange.close_as, status, f"{slug}: {detail}", slug)


def _allowed(request: Request) -> str:
    """The ``Allow`` of a 405: each method for which some route matches the request's path in
    full (asked through the routes' public ``matches``; FastAPI nests included routers)."""
    routes = request.app.router.routes
    return ", ".join(m for m in sorted(METHODS)
                     if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes))


def create_app(settings: Settings, *, gateway: Gateway | None = None, sql_service: SqlService | None = None) -> FastAPI:
    """The app over a new gateway (or ``gateway``); ``sql_service``: an SQL worker pool to share
    instead of starting the gateway's own (tests run many apps against one pool)."""
    configure_logging(settings.log_level)
    gw = gateway or build_gateway(settings, sql_service=sql_service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.watch_policies and gw.reloader is not None:
            gw.reloader.start()
        if gw.fleet is not None:
            gw.fleet.start()  # heartbeat and follow the peers' policy reloads (govern.deliver.fleet)
        gw.sql_service.start()  # in the background: the first query need not wait for the imports
        try:
            yield
        finally:
            gw.close()

    app = FastAPI(
        title="govern",
        version=__version__,
        description="Purpose-based, audited access to masked datasets.",
        lifespan=lifespan,
    )
    app.state.gateway = gw
    app.state.console = Console(gw)  # the steward console at /console (govern.console)

    @app.exception_handler(GovernError)
    async def governed(request: Request, exc: GovernError) -> Response:
        await _refuse(request, exc)
        return from_error(exc, request_id_var.get())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        detail = f"{where}: {first.get('msg', 'invalid value')}"
        await _settle(request, 422, "validation-error", detail)
        return problem_response(422, "validation-error", "Invalid request parameters", detail,
                                request_id=request_id_var.get())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        await _settle(request, exc.status_code, slug, detail)
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:  # every method of the path: GET and HEAD are separate routes
            headers["Allow"] = _allowed(request)
        return problem_response(exc.status_code, slug, detail, detail, request_id=request_id_var.get(),
                                headers=headers or None)

    app.openapi = lambda: describe(app)  # type: ignore[method-assign]
    app.add_middleware(ExchangeMiddleware, gateway=gw)
    for module in (health, datasets, scans, sql, dp, audit, policy, encrypted, synthetic, sharing):
        app.include_router(module.router)
    app.include_router(console_routes.router)
    return app
