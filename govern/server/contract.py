"""The HTTP contract as ``/openapi.json`` states it, built in one place.

Routers declare what they may answer with :func:`errors` (``responses=errors(413, 408)``): the
statuses every governed route may answer (:data:`GOVERNED`) plus the route's own, each an
``application/problem+json`` body of the :class:`Problem` shape — the one
:func:`govern.server.problems.problem_body` builds. :func:`json_body` declares a JSON request
body that routes read themselves (after authentication, :func:`govern.server.exchange.read_body`).

:func:`describe` finishes FastAPI's description so that it tells the truth and resolves:

- error responses are ``application/problem+json`` (FastAPI would say ``application/json``),
  including the 422 of parameter validation;
- the ``Authorization: Bearer`` scheme is declared (``components.securitySchemes.bearer``) and
  required on every governed operation, so ``/docs`` can authenticate;
- the ``$defs`` of request-body models are hoisted into ``components.schemas`` so every
  ``$ref`` resolves from the document's root.

``tests/server/test_openapi_contract.py`` runs schemathesis against this description.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from govern.server.exchange import OPERATIONAL
from govern.server.problems import MEDIA_TYPE as PROBLEM_MEDIA_TYPE

__all__ = ["GOVERNED", "Problem", "describe", "errors", "json_body"]

COMPONENTS = "#/components/schemas/"

# What each error status means to a caller; the body's ``type`` says which problem exactly.
MEANING = {
    400: "Bad request: a missing purpose, an invalid filter, body or query (problem+json)",
    401: "Not authenticated: no or an unknown bearer token",
    403: "Refused: the purpose is not entitled, or the policy denies this action",
    404: "No such dataset (also when you have no grant on it) or resource",
    408: "The request ran longer than its deadline and was stopped",
    413: "Too large: the body, the limit or the result is over a configured bound",
    422: "Parameters that fail validation (types, ranges, unknown values)",
    429: "Too many releases: retry after the time given",
    500: "The gateway failed; the request id names its log line",
    501: "Not available in this gateway (an optional extra is not installed)",
    503: "Busy or unavailable (read slots, storage, audit store, policy); retry later",
}

# Every governed route may answer these: the lifecycle's refusals (purpose, authentication,
# decision, unknown dataset), parameter validation, a crash, and admission/storage/audit.
GOVERNED = (400, 401, 403, 404, 422, 500, 503)


class Problem(BaseModel):
    """An error (RFC 9457). ``type`` is stable (``urn:govern:problem:<slug>``); ``detail`` is for
    people. Some problems carry more fields: ``purposes``, ``problems``, ``position``, ``limit``…"""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:govern:problem:<slug>, stable for programs")
    title: str
    status: int
    detail: str
    request_id: str | None = Field(default=None, description="The response's x-request-id (absent on "
                                                               "operational routes)")


def errors(*extra: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a governed route: :data:`GOVERNED` plus ``extra`` statuses."""
    return {status: {"description": MEANING[status], "model": Problem} for status in sorted({*GOVERNED, *extra})}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a JSON ``model`` body itself (after authenticating
    the caller: FastAPI must not parse it first). Nested models refer to ``components``."""
    schema = model.model_json_schema(ref_template=COMPONENTS + "{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def describe(app: FastAPI) -> dict[str, Any]:
    """The finished API description of ``app`` (cached on it, as FastAPI does)."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema(ref_template=COMPONENTS + "{model}")
        _hoist_defs(doc, schemas)
        doc["components"]["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "An API key (gk_…) or, with OIDC configured, an access token (JWT).",
        }}
        for path, operations in doc.get("paths", {}).items():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    if status[:1] in "45":
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": COMPONENTS + "Problem"}}}
                if path not in OPERATIONAL and not path.startswith(("/healthz", "/readyz")):
                    operation["security"] = [{"bearer": []}]
        for unused in ("HTTPValidationError", "ValidationError"):  # 422 is a Problem here
            schemas.pop(unused, None)
        app.openapi_schema = doc
    return app.openapi_schema


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """Move every nested ``$defs`` into ``components.schemas`` and point its refs there."""
    if isinstance(node, dict):
        defs = node.pop("$defs", None)
        if isinstance(defs, dict):
            for name, definition in defs.items():
                schemas.setdefault(name, definition)
                _hoist_defs(definition, schemas)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node["$ref"] = COMPONENTS + ref.removeprefix("#/$defs/")
        for value in list(node.values()):
            _hoist_defs(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _hoist_defs(value, schemas)
