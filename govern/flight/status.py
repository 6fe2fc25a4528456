"""govern's errors as Flight (gRPC) statuses, in one place.

Each :class:`~govern.errors.GovernError` becomes a Flight status: 401 → UNAUTHENTICATED,
403 → PERMISSION_DENIED, 408 → DEADLINE_EXCEEDED, 499 → CANCELLED, 503/429 → UNAVAILABLE,
5xx → INTERNAL, and every other refusal (400, 404, 413, 501: bad SQL, an unknown table, a
limit, an unsupported command) → UNKNOWN ("failed"). Only pyarrow's ``FlightError`` classes
are used: any other exception (``ArrowInvalid`` for INVALID_ARGUMENT, say) reaches the client
with the server's Python traceback in the status detail — paths and source lines — which an
error must never carry. The message is the error's
``detail`` with its problem type and SQLSTATE; the status's binary details
(``extra_info``) carry the same problem as JSON, with the error's safe ``extra`` fields (the
purposes a caller could use, the position of a syntax error). Nothing else — no stack trace,
no path — leaves.
"""

from __future__ import annotations

import json

import pyarrow.flight as flight

from govern.errors import GovernError

__all__ = ["flight_error", "problem"]


def problem(exc: GovernError) -> dict[str, object]:
    body: dict[str, object] = {"type": exc.type, "title": exc.title, "status": exc.status, "detail": exc.detail,
                               "sqlstate": exc.code}
    for key, value in exc.extra.items():
        if key not in body and key != "sqlstate":
            body[key] = value
    return body


def flight_error(exc: GovernError) -> Exception:
    """The exception pyarrow turns into the right gRPC status for ``exc``."""
    message = f"{exc.detail} [{exc.slug}, SQLSTATE {exc.code}]"
    extra = json.dumps(problem(exc), default=str, ensure_ascii=False).encode()
    status = exc.status
    if status == 401:
        return flight.FlightUnauthenticatedError(message, extra)
    if status == 403:
        return flight.FlightUnauthorizedError(message, extra)
    if status == 408:
        return flight.FlightTimedOutError(message, extra)
    if status == 499:
        return flight.FlightCancelledError(message, extra)
    if status in (429, 503):
        return flight.FlightUnavailableError(message, extra)
    if 400 <= status < 500 or status == 501:
        return flight.FlightServerError(message, extra)
    return flight.FlightInternalError(message, extra)
