"""The one error shape: RFC 9457 ``application/problem+json``.

``problem_body`` is the only function that builds an error body (a test pins its shape), and
``STATUS_BY_ERROR`` is implicit in :class:`~govern.errors.GovernError` subclasses: each knows
its status and type. Bodies never carry stack traces, server paths or secrets.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from govern.errors import PROBLEM_BASE, GovernError

MEDIA_TYPE = "application/problem+json"

# Extra fields an error may expose to the caller; anything else stays server-side.
SAFE_EXTRA = {"purposes", "problems", "columns", "position", "decision", "retry_after", "limit",
              "budget", "requested",  # budget-exceeded: the caller's own spent/left and what it asked
              "suppressed_groups"}  # min_group with error semantics: how many groups were too small


def problem_body(status: int, slug: str, title: str, detail: str, *, request_id: str | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request_id:
        body["request_id"] = request_id
    for key, value in (extra or {}).items():
        if key in SAFE_EXTRA and value is not None:
            body[key] = value
    return body


def problem_response(status: int, slug: str, title: str, detail: str, *, request_id: str | None = None,
                     extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem_body(status, slug, title, detail, request_id=request_id, extra=extra),
                        status_code=status, media_type=MEDIA_TYPE, headers=headers)


def from_error(exc: GovernError, request_id: str | None = None) -> JSONResponse:
    return problem_response(exc.status, exc.slug, exc.title, exc.detail, request_id=request_id, extra=exc.extra)
