"""One error hierarchy for the whole gateway.

Every error govern raises on purpose is a :class:`GovernError`. Each subclass knows its HTTP
status, its PostgreSQL SQLSTATE and its stable problem ``type`` (RFC 9457), so every surface
maps errors in one place (``govern.server.problems`` for HTTP, ``govern.pgwire.protocol`` for
the wire) and the CLI prints them in one shape. Domain code never imports HTTP. A raise site may
override the SQLSTATE with ``sqlstate=...`` in ``extra`` when it knows better (e.g. 57014).

``detail`` is written for the person who sent the request: it must never contain secrets,
stack traces or server paths. ``extra`` carries structured, safe fields (for example the
purposes a caller could use, or the position of a syntax error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_BASE = "urn:govern:problem:"


class GovernError(Exception):
    """Root of all deliberate errors. ``slug`` becomes the problem type."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"
    sqlstate: str = "XX000"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.recorded = False  # set by the request lifecycle once this error is a request's audit record

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    @property
    def code(self) -> str:
        """The SQLSTATE of this error: the raise site's own when it gave one, else the class's."""
        given = self.extra.get("sqlstate")
        return given if isinstance(given, str) and len(given) == 5 else self.sqlstate


@dataclass(frozen=True)
class Problem:
    """One problem found in a policy file: where it is and what is wrong."""

    file: str
    line: int | None
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column, "message": self.message}


class PolicyError(GovernError):
    """The policy set is invalid. Carries *every* problem found, not just the first."""

    status = 503
    slug = "policy-invalid"
    title = "Policy set is invalid"
    sqlstate = "55000"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else "unknown problem"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}", problems=[p.to_dict() for p in self.problems])


class InvalidRequest(GovernError):
    status = 400
    slug = "invalid-request"
    title = "Invalid request"
    sqlstate = "22023"


class PredicateError(InvalidRequest):
    """A filter or policy predicate could not be parsed or uses something not allowed."""

    slug = "invalid-predicate"
    title = "Invalid predicate"
    sqlstate = "42601"


class UnknownColumn(InvalidRequest):
    slug = "unknown-column"
    title = "Unknown or withheld column"
    sqlstate = "42703"


class SqlError(InvalidRequest):
    """Analyst SQL that is refused or fails: ``position`` is the character offset in the
    caller's text when known; ``sqlstate`` is the PostgreSQL error code (for the wire server)."""

    slug = "invalid-sql"
    title = "Invalid SQL"
    sqlstate = "42601"


class AuthenticationFailed(GovernError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication failed"
    sqlstate = "28P01"


class PurposeRequired(GovernError):
    status = 400
    slug = "purpose-required"
    title = "A purpose is required"
    sqlstate = "3D000"


class PurposeNotEntitled(GovernError):
    status = 403
    slug = "purpose-not-entitled"
    title = "Purpose not entitled"
    sqlstate = "3D000"


class AccessDenied(GovernError):
    status = 403
    slug = "access-denied"
    title = "Access denied"
    sqlstate = "42501"


class TicketStale(AccessDenied):
    """A ticket whose plan or data moved since it was issued (policy change, rewritten files)."""

    slug = "ticket-stale"
    title = "Ticket no longer valid"


class NotFound(GovernError):
    status = 404
    slug = "not-found"
    title = "Not found"
    sqlstate = "42P01"


class PlanError(GovernError):
    """The policy cannot be turned into a plan for this data (fail closed, no data)."""

    status = 500
    slug = "plan-error"
    title = "Access plan could not be compiled"
    sqlstate = "XX000"


class MaskError(GovernError):
    """A mask function cannot run on this input (type, parameters or missing key)."""

    status = 500
    slug = "mask-error"
    title = "Masking failed"
    sqlstate = "XX000"


class KeyMaterialError(GovernError):
    """Key material is missing or unusable. Never includes the key."""

    status = 500
    slug = "key-error"
    title = "Key material unavailable"
    sqlstate = "XX000"


class StorageError(GovernError):
    status = 503
    slug = "storage-unavailable"
    title = "Storage unavailable"
    sqlstate = "58030"


class AuditError(GovernError):
    status = 503
    slug = "audit-unavailable"
    title = "Audit log unavailable"
    sqlstate = "58030"


class LimitExceeded(GovernError):
    status = 413
    slug = "limit-exceeded"
    title = "Limit exceeded"
    sqlstate = "54000"


class QueryTimeout(GovernError):
    """A query ran past its time limit and was interrupted (no partial result is kept)."""

    status = 408
    slug = "query-timeout"
    title = "Query timed out"
    sqlstate = "57014"


class Overloaded(GovernError):
    """The gateway (or the caller's fair share of it) is busy: retry after ``retry_after`` s."""

    status = 503
    slug = "overloaded"
    title = "Gateway busy"
    sqlstate = "53300"


class ClientGone(GovernError):
    """The client went away before its request was complete (e.g. midway through uploading a
    body): nothing was served; recorded as ``aborted``."""

    status = 499
    slug = "client-closed-request"
    title = "Client closed the request"
    sqlstate = "08006"


class Unsupported(GovernError):
    status = 501
    slug = "not-implemented"
    title = "Not implemented"
    sqlstate = "0A000"


class RangeNotSatisfiable(InvalidRequest):
    """An HTTP ``Range`` that lies outside the file (a Delta Sharing file, docs/sharing.md)."""

    status = 416
    slug = "range-not-satisfiable"
    title = "Range not satisfiable"


class BudgetExceeded(GovernError):
    """A privacy release would overspend the caller's budget (or no budget is set): refused,
    and nothing was charged. ``extra`` says what was asked, spent and left."""

    status = 403
    slug = "budget-exceeded"
    title = "Privacy budget exceeded"
    sqlstate = "42501"


class LedgerError(GovernError):
    """The privacy budget ledger cannot be read or written: no release leaves (fail closed)."""

    status = 503
    slug = "ledger-unavailable"
    title = "Privacy budget ledger unavailable"
    sqlstate = "58030"


class ReleaseRefused(GovernError):
    """A requested release is not an aggregate the gateway may decrypt (a full column, a
    single row, too many values, too few rows): refused before any decryption."""

    status = 403
    slug = "release-refused"
    title = "Release refused"
    sqlstate = "42501"


class RateLimited(GovernError):
    """Too many privacy releases by this principal in the current window; retry later."""

    status = 429
    slug = "rate-limited"
    title = "Rate limit exceeded"
    sqlstate = "53400"


class SyntheticError(GovernError):
    """A synthetic model could not be fitted, or a stored model failed its integrity check:
    no synthetic rows are produced (fail closed)."""

    status = 500
    slug = "synthetic-unavailable"
    title = "Synthetic data unavailable"
    sqlstate = "XX000"


@dataclass
class ProblemCollector:
    """Accumulates policy problems so a check reports all of them at once (sqlglot style)."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, file: str, line: int | None, message: str) -> None:
        self.problems.append(Problem(file, line, message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise PolicyError(self.problems)


ALL_ERRORS: tuple[type[GovernError], ...] = (
    GovernError,
    PolicyError,
    InvalidRequest,
    PredicateError,
    UnknownColumn,
    SqlError,
    AuthenticationFailed,
    PurposeRequired,
    PurposeNotEntitled,
    AccessDenied,
    NotFound,
    PlanError,
    MaskError,
    KeyMaterialError,
    StorageError,
    AuditError,
    LimitExceeded,
    QueryTimeout,
    Overloaded,
    ClientGone,
    Unsupported,
    RangeNotSatisfiable,
    BudgetExceeded,
    LedgerError,
    ReleaseRefused,
    RateLimited,
    SyntheticError,
)
