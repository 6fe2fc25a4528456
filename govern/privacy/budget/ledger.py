"""The privacy budget ledger: the one source of truth for how much privacy has been spent.

Every noisy release — a differentially private aggregate, a noisy homomorphic result, anything
that costs epsilon — is charged here *before* it is returned. The ledger never trusts an
in-process object (an OpenDP context is process-local, not picklable, and exhausted for good by
one over-budget query): the sums live in SQLite or PostgreSQL and each charge is one atomic
transaction, so the budget is never overspent, under concurrency and across gateway processes
(ARCHITECTURE §7.5).

API (``gateway.ledger`` is one of these)::

    ledger = BudgetLedger(store, limits)        # or open_ledger(settings, limits)
    charge = ledger.charge(principal, "patients", 0.5, 1e-7, request_id=rid, kind="dp")
        # -> Charge(epsilon, delta, spent, left, ...); raises BudgetExceeded having charged
        #    nothing if it does not fit (or the dataset has no budget), LedgerError if the
        #    store cannot be written (fail closed: then return nothing).
        #    A request id is charged at most once (a retry returns the sums as they are).
    ledger.refund(rid)    # give a charge back: only for a result none of whose bytes left the process
    ledger.check(principal, "patients", 0.5, 1e-7)   # same test, charges nothing (pre-flight)
    ledger.status(principal, "patients")             # -> BudgetStatus: limit, spent, left, period
    ledger.charges(principal="bob")                  # the charge rows, oldest first

``principal`` is a :class:`~govern.identity.principal.Principal` or a principal name (then only
its roles from ``policy.csv`` count). ``limits(principal, dataset)`` returns the
:class:`~govern.privacy.budget.limits.Budget` the policy gives (see ``resolve_budget``) or None; it is
asked on every call, so a policy reload changes limits at once, while spending stays.

Amounts are kept as integers (epsilon in 1e-12, delta in 1e-18): costs round up and limits
round down, so sums are exact and rounding can only refuse a release, never allow one too many.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from govern.errors import BudgetExceeded, InvalidRequest
from govern.identity.principal import Principal
from govern.privacy.budget.limits import (
    DELTA_UNIT,
    EPSILON_UNIT,
    Budget,
    from_units,
    period_end,
    period_key,
    to_units,
)
from govern.privacy.budget.store import Overspend, Spent, SqlLedgerStore, open_store

__all__ = ["BudgetLedger", "BudgetStatus", "Charge", "open_ledger"]

DEFAULT_FILE = "ledger.db"
Limits = Callable[[Principal, str], Budget | None]


@dataclass(frozen=True)
class BudgetStatus:
    """Where one (principal, dataset) stands in the current period."""

    principal: str
    dataset: str
    budget: Budget | None
    period: str | None  # the period key, e.g. "2025-06"
    resets: datetime | None  # when the period ends (None: never, or no budget)
    spent_epsilon: float
    spent_delta: float
    releases: int
    left_epsilon: float
    left_delta: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "dataset": self.dataset,
            "budget": self.budget.to_dict() if self.budget else None,
            "period": self.period,
            "resets": self.resets.isoformat().replace("+00:00", "Z") if self.resets else None,
            "spent": {"epsilon": self.spent_epsilon, "delta": self.spent_delta},
            "left": {"epsilon": self.left_epsilon, "delta": self.left_delta},
            "releases": self.releases,
        }


@dataclass(frozen=True)
class Charge:
    """One accepted charge, and the status right after it."""

    epsilon: float
    delta: float
    request_id: str
    kind: str
    status: BudgetStatus

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta, "kind": self.kind,
                "request_id": self.request_id, "budget": self.status.to_dict()}


class BudgetLedger:
    def __init__(self, store: SqlLedgerStore, limits: Limits, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self._limits = limits
        self._clock = clock

    def __repr__(self) -> str:
        return f"BudgetLedger({self.store!r})"

    # -- the contract -----------------------------------------------------------------------------
    def charge(self, principal: Principal | str, dataset: str, epsilon: float, delta: float = 0.0, *,
               request_id: str, kind: str = "dp") -> Charge:
        """Charge one release atomically, or raise ``BudgetExceeded`` having charged nothing."""
        who = _principal(principal)
        cost = _cost(epsilon, delta)
        if not request_id:
            raise InvalidRequest("a charge needs the request id it pays for")
        now = self._clock()
        budget = self._budget(who, dataset)
        key = (who.name, budget.lineage or dataset, period_key(budget.period, now))
        try:
            spent = self.store.charge(key, _limit(budget), cost, time=_iso(now), request_id=request_id, kind=kind)
        except Overspend as over:
            raise self._refusal(who.name, dataset, budget, key[2], now, over.spent, epsilon, delta) from None
        return Charge(epsilon, delta, request_id, kind, self._status(who.name, dataset, budget, key[2], now, spent))

    def refund(self, request_id: str) -> bool:
        """Give back what ``request_id`` was charged, for a release none of whose bytes left the
        process (its audit record could not be written, so nothing was sent). Once: False when
        there is nothing (left) to refund. Never call it once a byte of the result went out."""
        if not request_id:
            raise InvalidRequest("a refund needs the request id it was charged for")
        return self.store.refund(request_id)

    def check(self, principal: Principal | str, dataset: str, epsilon: float, delta: float = 0.0) -> BudgetStatus:
        """Raise ``BudgetExceeded`` unless a charge of this size fits *now*; charges nothing.
        A pre-flight only: a concurrent charge may still take the budget before ``charge``."""
        who = _principal(principal)
        cost = _cost(epsilon, delta)
        now = self._clock()
        budget = self._budget(who, dataset)
        period = period_key(budget.period, now)
        spent = self.store.spent((who.name, budget.lineage or dataset, period))
        limit = _limit(budget)
        if spent.epsilon + cost[0] > limit[0] or spent.delta + cost[1] > limit[1]:
            raise self._refusal(who.name, dataset, budget, period, now, spent, epsilon, delta)
        return self._status(who.name, dataset, budget, period, now, spent)

    def status(self, principal: Principal | str, dataset: str) -> BudgetStatus:
        """Spent and left in the current period (all zero when the dataset has no budget)."""
        who = _principal(principal)
        now = self._clock()
        budget = self._limits(who, dataset)
        if budget is None:
            return BudgetStatus(who.name, dataset, None, None, None, 0.0, 0.0, 0, 0.0, 0.0)
        period = period_key(budget.period, now)
        spent = self.store.spent((who.name, budget.lineage or dataset, period))  # the lineage's account
        return self._status(who.name, dataset, budget, period, now, spent)

    def charges(self, *, principal: str | None = None, dataset: str | None = None,
                request_id: str | None = None, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Charge rows (id, time, request_id, principal, dataset, period, kind, epsilon, delta),
        oldest first, amounts as floats."""
        rows = self.store.charges(principal=principal, dataset=dataset, request_id=request_id,
                                  after_id=after_id, limit=limit)
        for row in rows:
            row["epsilon"] = from_units(int(row["epsilon"]), EPSILON_UNIT)
            row["delta"] = from_units(int(row["delta"]), DELTA_UNIT)
        return rows

    def close(self) -> None:
        self.store.close()

    # -- helpers ----------------------------------------------------------------------------------
    def _budget(self, who: Principal, dataset: str) -> Budget:
        budget = self._limits(who, dataset)
        if budget is None:
            raise BudgetExceeded(f"no privacy budget is set for '{who.name}' on dataset '{dataset}' "
                                 "(a steward sets one with 'budget:' in catalog.yaml)", dataset=dataset)
        return budget

    def _status(self, principal: str, dataset: str, budget: Budget, period: str, now: datetime,
                spent: Spent) -> BudgetStatus:
        limit = _limit(budget)
        return BudgetStatus(
            principal, dataset, budget, period, period_end(budget.period, now),
            spent_epsilon=from_units(spent.epsilon, EPSILON_UNIT),
            spent_delta=from_units(spent.delta, DELTA_UNIT),
            releases=spent.releases,
            left_epsilon=from_units(max(0, limit[0] - spent.epsilon), EPSILON_UNIT),
            left_delta=from_units(max(0, limit[1] - spent.delta), DELTA_UNIT),
        )

    def _refusal(self, principal: str, dataset: str, budget: Budget, period: str, now: datetime, spent: Spent,
                 epsilon: float, delta: float) -> BudgetExceeded:
        s = self._status(principal, dataset, budget, period, now, spent)
        return BudgetExceeded(
            f"this release needs epsilon {epsilon:g}, delta {delta:g} but '{principal}' has epsilon "
            f"{s.left_epsilon:g}, delta {s.left_delta:g} left on dataset '{dataset}' for period {period}; "
            "nothing was charged",
            requested={"epsilon": epsilon, "delta": delta}, budget=s.to_dict())


def open_ledger(settings: Any, limits: Limits, *, url: str | Path | None = None,
                table_prefix: str | None = None) -> BudgetLedger:
    """The ledger the settings name: ``ledger_url`` (``postgresql://…`` or ``sqlite:///…``),
    else ``<state_dir>/ledger.db``; PostgreSQL tables are prefixed ``ledger_table_prefix``."""
    target = url or getattr(settings, "ledger_url", None) or Path(settings.state_dir) / DEFAULT_FILE
    prefix = table_prefix if table_prefix is not None else getattr(settings, "ledger_table_prefix", "govern_")
    return BudgetLedger(open_store(target, table_prefix=prefix), limits)


def _principal(principal: Principal | str) -> Principal:
    return principal if isinstance(principal, Principal) else Principal(name=principal)


def _cost(epsilon: float, delta: float) -> tuple[int, int]:
    for name, value in (("epsilon", epsilon), ("delta", delta)):
        if not isinstance(value, int | float) or value != value or value < 0 or value == float("inf"):
            raise InvalidRequest(f"{name} must be a finite number ≥ 0")
    if delta >= 1:
        raise InvalidRequest("delta must be below 1")
    if epsilon == 0 and delta == 0:
        raise InvalidRequest("a release must cost some epsilon or delta")
    return to_units(epsilon, EPSILON_UNIT, round_up=True), to_units(delta, DELTA_UNIT, round_up=True)


def _limit(budget: Budget) -> tuple[int, int]:
    return to_units(budget.epsilon, EPSILON_UNIT, round_up=False), to_units(budget.delta, DELTA_UNIT, round_up=False)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
