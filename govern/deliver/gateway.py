"""Everything one running gateway holds, built once by :func:`build_gateway` (no module state).

The gateway wires the core (:class:`~govern.deliver.governor.Governor`) to identity, audit,
policy hot-reload, metrics, limits and the privacy services. Surfaces (HTTP routers, the
PostgreSQL wire, …) reach all of it through :meth:`Gateway.exchange`, the one request
lifecycle (:mod:`govern.deliver.lifecycle`); they never write audit records or take read slots
themselves.
"""

from __future__ import annotations

import logging
import uuid

from govern.audit.log import AuditLog, open_audit_log
from govern.audit.record import AuditRecord
from govern.config import Settings
from govern.deliver.fleet import Fleet
from govern.deliver.governor import Governor
from govern.deliver.lifecycle import Call, Exchange, Lifecycle
from govern.deliver.materialize import Materializer
from govern.deliver.metrics import Metrics
from govern.errors import AuditError
from govern.identity.authenticate import Authenticator
from govern.monitor.prometheus import DriftCollector
from govern.monitor.store import ProfileStore
from govern.policy.reload import PolicyReloader, ReloadStatus
from govern.privacy.budget.ledger import BudgetLedger, open_ledger
from govern.privacy.dp.service import DpService
from govern.privacy.he.service import HeService
from govern.privacy.synthetic.service import SyntheticService
from govern.sql.isolation import SqlService

__all__ = ["Gateway", "build_gateway"]

log = logging.getLogger("govern.deliver")


class Gateway:
    def __init__(self, settings: Settings, governor: Governor, audit: AuditLog, authenticator: Authenticator,
                 reloader: PolicyReloader | None, metrics: Metrics, ledger: BudgetLedger | None = None,
                 sql_service: SqlService | None = None) -> None:
        self.settings = settings
        self.governor = governor
        self.audit = audit
        self.authenticator = authenticator
        self.reloader = reloader
        self.metrics = metrics
        self.lifecycle = Lifecycle(settings, governor, authenticator, audit, metrics)
        # Masked materializations (govern.deliver.materialize): repeated reads, Delta Sharing files
        self.materializer = Materializer(governor, settings=settings)
        # The privacy budget ledger (govern.privacy.budget): every noisy release is charged here.
        self.ledger = ledger if ledger is not None else open_ledger(settings, governor.budget_for)
        self.dp = DpService(settings, governor, self.ledger)  # differential privacy (govern.privacy.dp)
        self.he = HeService(settings, governor, self.ledger)  # encrypted views (govern.privacy.he)
        self.synthetic = SyntheticService(settings, governor)  # synthetic views; SDV loads on first use
        # Analyst SQL runs in worker processes under an OS memory limit and one deadline
        # (govern.sql.isolation); each worker has its own sandboxes and view cache. A pool may be
        # shared by gateways with different settings (tests do): each call names its settings.
        self.sql_service = sql_service if sql_service is not None else SqlService(settings)
        self._owns_sql = sql_service is None
        # Several instances over one PostgreSQL (govern.deliver.fleet): heartbeat, policy reloads
        # announced to and followed from the peers. None for a single instance on SQLite.
        self.fleet: Fleet | None = None
        status = reloader.status() if reloader is not None else None
        self.metrics.serving(governor.state.policy.version, status.loaded_at if status else 0.0)

    def policy_since(self) -> float:
        """Since when (unix seconds) this instance serves its current policy version."""
        return self.reloader.status().loaded_at if self.reloader is not None else 0.0

    def exchange(self, call: Call) -> Exchange:
        """Open the lifecycle of one request (use it as a context manager)."""
        return self.lifecycle.open(call)

    # -- policy reloads are audited too ------------------------------------------------------------
    def reloaded(self, before: str, status: ReloadStatus) -> None:
        """Record a policy reload: installed (``ok``, the new version) or refused (``denied``, with
        the problems; the previous version keeps serving)."""
        extra: dict[str, object]
        if status.ok:
            self.metrics.serving(status.version, status.loaded_at)
            if self.fleet is not None:
                self.fleet.announce()
            outcome, code, detail = "ok", 200, f"policy {before} -> {status.version}"
            extra = {"from_version": before, "to_version": status.version}
        else:
            problems = [str(p) for p in status.problems]
            outcome, code = "denied", 422
            detail = f"policy edit refused ({len(problems)} problem(s)): {problems[0] if problems else ''}"
            extra = {"problems": problems[:20]}
        record = AuditRecord(seq=None, time="", request_id=uuid.uuid4().hex, principal=None, purpose=None,
                             dataset=None, action="policy_reload", outcome=outcome, status=code, plan_hash=None,
                             detail=detail[:500], extra={"surface": "policy", **extra}, prev_hash="", hash="",
                             policy_version=status.version)
        try:
            self.audit.append(record)
        except AuditError:
            log.warning("a policy reload could not be audited", extra={"version": status.version})

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        if self.reloader is not None:
            self.reloader.stop()
        if self._owns_sql:
            self.sql_service.close()
        self.dp.close()
        self.audit.close()
        self.ledger.close()


def build_gateway(settings: Settings, *, governor: Governor | None = None, audit: AuditLog | None = None,
                  sql_service: SqlService | None = None) -> Gateway:
    governor = governor or Governor(settings)
    if audit is None:
        audit = open_audit_log(settings, keys=governor.keys)  # audit_url or state_dir/audit.db, anchored by checkpoints
    authenticator = Authenticator(lambda: governor.state.policy, settings.oidc)
    reloader = PolicyReloader(settings.policy_dir, governor.state.policy, governor.swap_policy,
                              debounce_ms=settings.reload_debounce_ms)
    metrics = Metrics()
    # drift alerts of the stored profiles (docs/monitoring.md), read at each scrape of /metrics
    metrics.registry.register(DriftCollector(ProfileStore.under(settings.state_dir), settings))
    gateway = Gateway(settings, governor, audit, authenticator, reloader, metrics, sql_service=sql_service)
    reloader.report = gateway.reloaded
    audit_url = settings.audit_url or ""
    if audit_url.startswith(("postgresql://", "postgres://")):
        gateway.fleet = Fleet(audit_url, settings.audit_table_prefix,
                              lambda: (governor.state.policy.version, gateway.policy_since()),
                              reloader.check_now if settings.fleet_follow else None,
                              endpoint=f"http://{settings.host}:{settings.port}", instance_id=settings.instance_id,
                              heartbeat=settings.fleet_heartbeat, recheck=settings.fleet_recheck)
    return gateway
