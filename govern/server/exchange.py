"""HTTP's side of the request lifecycle: every request's exchange, its credentials and its body.

:class:`ExchangeMiddleware` opens one :class:`~govern.deliver.lifecycle.Exchange` for every
request to a governed route (everything but the operational routes in :data:`OPERATIONAL`)
before routing, so that a request refused by FastAPI itself — an unknown route (404), a wrong
method (405), parameters that fail validation (422) — has its audit record like any other.
Routers take the exchange with :func:`governed` and walk its steps; whatever they do, the
middleware closes an exchange that has no record yet with the response's status.

Bodies are read only by :func:`read_body`, which insists on an authenticated exchange: a
caller who cannot authenticate gets 401 before a byte of the body is read, and a body declared
(or found) larger than the route's limit gets 413 before it is read whole.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from govern.console.assets import ASSET_PATHS
from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Bearer, Call, Exchange
from govern.errors import ClientGone, InvalidRequest, LimitExceeded
from govern.logs import request_id_var
from govern.server.problems import problem_response

__all__ = ["OPERATIONAL", "ExchangeMiddleware", "bearer", "governed", "load_json", "purpose_candidates",
           "read_body"]

log = logging.getLogger("govern.access")

# Routes that carry no governed data and are not requests of a principal: probes, metrics and
# the API description, the console's static files. They are not audited (a load balancer's probes would flood the log).
OPERATIONAL = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                         "/redoc"}) | ASSET_PATHS  # the console's vendored CSS and JS
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ExchangeMiddleware:
    """Request id, exchange, access log and metrics, as plain ASGI.

    Not ``BaseHTTPMiddleware``: that one re-streams bodies and can end a response cleanly when
    the app fails midway, which would turn a broken stream into a short body that looks
    complete. Here an exception propagates and the server aborts the connection.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        exchange: Exchange | None = None
        if path not in OPERATIONAL:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            exchange = self.gateway.exchange(Call("http", "unmatched", "request",
                                                  client_request_id=headers.get("x-request-id")))
            exchange.extra["method"] = _method(scope.get("method", ""))
            scope.setdefault("state", {})["exchange"] = exchange
        rid = exchange.request_id if exchange is not None else uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:
                if status["started"]:
                    raise  # midway through a response: the server aborts the connection
                await self._crashed(scope, exc, exchange, path, send_wrapper)
        finally:
            request_id_var.reset(token)
            if exchange is not None and not exchange.settled:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(exchange.close_as, status["code"],
                                                   f"http {status['code']} on {path[:200]}")
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics = self.gateway.metrics
            metrics.requests.labels(route=route, method=_method(scope.get("method", "")),
                                    status=str(status["code"])).inc()
            metrics.latency.labels(route=route).observe(elapsed)
            log.info("request", extra={"request_id": rid, "method": _method(scope.get("method", "")),
                                       "route": route, "status": status["code"], "ms": round(elapsed * 1000, 2)})


    @staticmethod
    async def _crashed(scope: Scope, exc: Exception, exchange: Exchange | None, path: str, send: Send) -> None:
        """The one answer to a failure nobody meant (500): logged with its traceback, recorded on
        the exchange, and answered as problem+json naming the request, so an operator can find
        the log line. Here, not in Starlette's outermost handler, where the request id is gone."""
        log.error("unhandled error", exc_info=exc, extra={"route": path[:200]})
        if exchange is not None and not exchange.settled:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(exchange.refuse, exc)
        response = problem_response(500, "internal", "Internal error",
                                    "the gateway failed to handle this request; it has been logged",
                                    request_id=request_id_var.get())
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _method(method: str) -> str:
    """A bounded label: arbitrary client methods must not grow the metric's label set."""
    return method if method in METHODS else "other"


def governed(request: Request, route: str, action: str, dataset: str | None = None) -> Exchange:
    """The request's exchange, named for the route that serves it."""
    exchange: Exchange = request.scope["state"]["exchange"]
    exchange.call = Call("http", route, action, dataset, exchange.call.client_request_id, exchange.call.extra)
    exchange.action = action
    exchange.dataset = dataset
    return exchange


def bearer(request: Request) -> Bearer:
    return Bearer(request.headers.get("authorization"))


def purpose_candidates(request: Request, body_purpose: str | None = None) -> tuple[str | None, ...]:
    """Where a purpose may be declared, in order: the X-Purpose header, the body, the query."""
    return request.headers.get("x-purpose"), body_purpose, request.query_params.get("purpose")


async def read_body(exchange: Exchange, request: Request, limit: int, *, credential: bool = False) -> bytes:
    """The body, read only for an authenticated caller, refused with 413 as soon as it (or its
    declared length) passes ``limit`` bytes; a client that leaves midway is recorded as such.
    ``credential``: the body *is* the credential (the console's sign-in form), so it is read
    before authentication — keep ``limit`` tiny there."""
    if exchange.principal is None and not credential:
        raise RuntimeError("authenticate before reading the body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise LimitExceeded(f"the request body may be at most {limit} bytes", limit=limit)
    size, chunks = 0, []
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise LimitExceeded(f"the request body may be at most {limit} bytes", limit=limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client went away while sending the request body") from None
    return b"".join(chunks)


def load_json(raw: bytes, shape: str = "") -> Any:
    """``raw`` as JSON (empty: null); ``shape`` shows the expected object in the error. Nesting
    too deep for the parser is a 400 like any other malformed body, never a crash."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the body must be a JSON object" + (f": {shape}" if shape else "")) from None
    if b"\\u" in raw and _has_lone_surrogate(data):
        raise InvalidRequest("the body holds a lone UTF-16 surrogate (an escape in \\ud800-\\udfff): "
                             "not valid Unicode text")
    return data


def _has_lone_surrogate(value: Any) -> bool:
    """JSON may escape a lone surrogate; Python keeps it in a str that no UTF-8 encoder (Arrow,
    DuckDB, the audit log) accepts. Only bodies with a ``\\u`` escape are walked."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def body_purpose(data: Any) -> str | None:
    """The ``purpose`` field of a JSON object body, if it is a string."""
    value = data.get("purpose") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
