"""One error hierarchy for the whole gateway.

Every error govern raises on purpose is a :class:`GovernError`. Each subclass knows its HTTP
status and its stable problem ``type`` (RFC 9457), so the server maps errors in one place and
the CLI prints them in one shape. Domain code never imports HTTP.

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

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


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

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else "unknown problem"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}", problems=[p.to_dict() for p in self.problems])


class InvalidRequest(GovernError):
    status = 400
    slug = "invalid-request"
    title = "Invalid request"


class PredicateError(InvalidRequest):
    """A filter or policy predicate could not be parsed or uses something not allowed."""

    slug = "invalid-predicate"
    title = "Invalid predicate"


class UnknownColumn(InvalidRequest):
    slug = "unknown-column"
    title = "Unknown or withheld column"


class SqlError(InvalidRequest):
    """Analyst SQL that is refused or fails: ``position`` is the character offset in the
    caller's text when known; ``sqlstate`` is the PostgreSQL error code (for the wire server)."""

    slug = "invalid-sql"
    title = "Invalid SQL"


class AuthenticationFailed(GovernError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication failed"


class PurposeRequired(GovernError):
    status = 400
    slug = "purpose-required"
    title = "A purpose is required"


class PurposeNotEntitled(GovernError):
    status = 403
    slug = "purpose-not-entitled"
    title = "Purpose not entitled"


class AccessDenied(GovernError):
    status = 403
    slug = "access-denied"
    title = "Access denied"


class NotFound(GovernError):
    status = 404
    slug = "not-found"
    title = "Not found"


class PlanError(GovernError):
    """The policy cannot be turned into a plan for this data (fail closed, no data)."""

    status = 500
    slug = "plan-error"
    title = "Access plan could not be compiled"


class MaskError(GovernError):
    """A mask function cannot run on this input (type, parameters or missing key)."""

    status = 500
    slug = "mask-error"
    title = "Masking failed"


class KeyMaterialError(GovernError):
    """Key material is missing or unusable. Never includes the key."""

    status = 500
    slug = "key-error"
    title = "Key material unavailable"


class StorageError(GovernError):
    status = 503
    slug = "storage-unavailable"
    title = "Storage unavailable"


class AuditError(GovernError):
    status = 503
    slug = "audit-unavailable"
    title = "Audit log unavailable"


class LimitExceeded(GovernError):
    status = 413
    slug = "limit-exceeded"
    title = "Limit exceeded"


class QueryTimeout(GovernError):
    """A query ran past its time limit and was interrupted (no partial result is kept)."""

    status = 408
    slug = "query-timeout"
    title = "Query timed out"


class Unsupported(GovernError):
    status = 501
    slug = "not-implemented"
    title = "Not implemented"


class BudgetExceeded(GovernError):
    """A privacy release would overspend the caller's budget (or no budget is set): refused,
    and nothing was charged. ``extra`` says what was asked, spent and left."""

    status = 403
    slug = "budget-exceeded"
    title = "Privacy budget exceeded"


class LedgerError(GovernError):
    """The privacy budget ledger cannot be read or written: no release leaves (fail closed)."""

    status = 503
    slug = "ledger-unavailable"
    title = "Privacy budget ledger unavailable"


class ReleaseRefused(GovernError):
    """A requested release is not an aggregate the gateway may decrypt (a full column, a
    single row, too many values, too few rows): refused before any decryption."""

    status = 403
    slug = "release-refused"
    title = "Release refused"


class RateLimited(GovernError):
    """Too many privacy releases by this principal in the current window; retry later."""

    status = 429
    slug = "rate-limited"
    title = "Rate limit exceeded"


class SyntheticError(GovernError):
    """A synthetic model could not be fitted, or a stored model failed its integrity check:
    no synthetic rows are produced (fail closed)."""

    status = 500
    slug = "synthetic-unavailable"
    title = "Synthetic data unavailable"


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
    Unsupported,
    BudgetExceeded,
    LedgerError,
    ReleaseRefused,
    RateLimited,
    SyntheticError,
)
