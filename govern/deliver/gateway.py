"""Everything one running gateway holds, built once by ``create_app`` (no module state).

The gateway wires the core (:class:`~govern.deliver.governor.Governor`) to identity, audit, policy
hot-reload, metrics and limits. Routers only parse, call the gateway, and stream.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from govern.audit.log import AuditLog
from govern.audit.record import AuditRecord
from govern.config import Settings
from govern.deliver.governor import Governor
from govern.errors import AuditError, GovernError, LimitExceeded, PurposeRequired
from govern.identity.authenticate import Authenticator
from govern.identity.principal import Principal
from govern.plan.model import AccessPlan
from govern.policy.reload import PolicyReloader
from govern.privacy.budget.ledger import BudgetLedger, open_ledger
from govern.privacy.dp.service import DpService
from govern.server.metrics import Metrics
from govern.sql.sandbox import SandboxPool
from govern.sql.view_cache import ViewCache

PURPOSE_HEADER = "x-purpose"


@dataclass
class RequestContext:
    """Per-request facts the audit record needs, filled in as the request goes."""

    request_id: str
    route: str
    principal: Principal | None = None
    purpose: str | None = None
    dataset: str | None = None
    action: str = "read"
    plan: AccessPlan | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Gateway:
    def __init__(self, settings: Settings, governor: Governor, audit: AuditLog, authenticator: Authenticator,
                 reloader: PolicyReloader | None, metrics: Metrics, ledger: BudgetLedger | None = None) -> None:
        self.settings = settings
        self.governor = governor
        self.audit = audit
        self.authenticator = authenticator
        self.reloader = reloader
        self.metrics = metrics
        # The privacy budget ledger (govern.privacy.budget.ledger): every noisy release is charged here.
        self.ledger = ledger if ledger is not None else open_ledger(settings, governor.budget_for)
        self.dp = DpService(settings, governor, self.ledger)  # differential privacy (govern.privacy.dp)
        self._reads = threading.BoundedSemaphore(settings.max_concurrent_reads)
        # Analyst SQL: each query's DuckDB sandbox is opened (and closed) by this pool's thread,
        # off the query's path (govern.sql.sandbox). Nothing starts until the first query.
        self.sandboxes = SandboxPool(memory_limit=settings.sql_memory_limit, threads=settings.sql_threads)
        # Masked views kept between queries (govern.sql.view_cache); keyed by plan hash, so a
        # policy reload makes old entries unreachable, and LRU eviction frees them.
        self.view_cache = ViewCache(settings.sql_cache_bytes)

    # -- identity and purpose ------------------------------------------------------------------
    def authenticate(self, ctx: RequestContext, authorization: str | None) -> Principal:
        ctx.principal = self.authenticator.authenticate(authorization)
        return ctx.principal

    def require_purpose(self, ctx: RequestContext, header: str | None, query: str | None) -> str:
        purpose = (header or query or "").strip()
        if not purpose:
            assert ctx.principal is not None
            purposes = self.governor.state.decider.purposes(ctx.principal)
            raise PurposeRequired(
                "declare a purpose with the X-Purpose header or the 'purpose' parameter",
                purposes=purposes)
        ctx.purpose = purpose
        return purpose

    # -- limits ----------------------------------------------------------------------------------
    def acquire_read_slot(self) -> None:
        if not self._reads.acquire(timeout=self.settings.queue_timeout):
            raise LimitExceeded("too many concurrent reads; retry shortly", retry_after=1)

    def release_read_slot(self) -> None:
        self._reads.release()

    # -- audit -----------------------------------------------------------------------------------
    def record(self, ctx: RequestContext, *, outcome: str, status: int, rows: int | None = None,
               nbytes: int | None = None, detail: str | None = None) -> AuditRecord:
        plan = ctx.plan
        columns = {}
        if plan is not None:
            columns = {c.name: (f"mask:{c.mask.function}" if c.mask else c.action) for c in plan.columns}
        rec = AuditRecord(
            seq=None, time="", request_id=ctx.request_id,
            principal=ctx.principal.name if ctx.principal else None,
            purpose=ctx.purpose, dataset=ctx.dataset, action=ctx.action, outcome=outcome, status=status,
            plan_hash=plan.hash if plan else None, columns=columns, rows=rows, bytes=nbytes,
            detail=detail, extra=dict(ctx.extra), prev_hash="", hash="")
        return self.audit.append(rec)

    def record_denial(self, ctx: RequestContext, exc: GovernError) -> None:
        """Audit a refused request. If even that fails, the refusal stands (no data goes out)."""
        self.metrics.denials.labels(reason=exc.slug).inc()
        try:
            self.record(ctx, outcome="denied" if exc.status in (400, 401, 403, 404, 413, 422, 429) else "error",
                        status=exc.status, detail=f"{exc.slug}: {exc.detail}"[:500])
        except AuditError:
            pass

    @staticmethod
    def new_request_id(supplied: str | None) -> str:
        if supplied and 8 <= len(supplied) <= 64 and all(ch.isalnum() or ch in "-_." for ch in supplied):
            return supplied
        return uuid.uuid4().hex
