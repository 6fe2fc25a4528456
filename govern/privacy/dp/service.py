"""A differentially private release, from request to charged result (audit excluded).

``DpService`` is what the gateway holds (``gateway.dp``). One release is three steps, split so
the gateway can refuse early and audit exactly once:

1. :meth:`prepare` — decide (``query_dp`` on the dataset under the purpose), compile the access
   plan and the DP plan, and pre-check the budget: every refusal happens here, before any data
   is read;
2. :meth:`compute` — read the plan-applied view (row filters and the caller's filter applied,
   raw values of usable columns) and run OpenDP, in a bounded pool of ``dp_workers`` threads
   (OpenDP and polars release the GIL); at most ``dp_workers`` releases run at once and more
   wait up to ``queue_timeout`` for a slot, then get ``413 limit-exceeded``;
3. :meth:`charge` — charge the ledger atomically. Only a successful charge lets the result
   leave; over budget (another release got there first) → ``BudgetExceeded``, nothing charged,
   the computed result is dropped unseen.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from govern.config import Settings
from govern.deliver.governor import Governor, PolicyState
from govern.errors import LimitExceeded
from govern.identity.principal import Principal
from govern.mask.predicate_arrow import to_expression
from govern.plan.model import AccessPlan
from govern.privacy.budget.ledger import BudgetLedger, BudgetStatus, Charge
from govern.privacy.dp.compile import DpPlan, compile_query
from govern.privacy.dp.execute import DpResult, release
from govern.privacy.dp.query import DpQuery
from govern.storage import scan as storage_scan


@dataclass
class Prepared:
    principal: Principal
    purpose: str
    query: DpQuery
    access_plan: AccessPlan
    plan: DpPlan
    state: PolicyState  # the policy version the decision was made under
    budget: BudgetStatus
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class DpRelease:
    prepared: Prepared
    result: DpResult
    charge: Charge
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        p = self.prepared
        return {
            "dataset": p.query.dataset,
            "purpose": p.purpose,
            "group_by": list(p.plan.group_by),
            "columns": self.result.columns,
            "rows": self.result.rows,
            "privacy": {
                "unit": p.plan.unit,
                "contributions": p.plan.contributions,
                "keys": p.plan.key_source,
                **self.result.privacy(),
            },
            "budget": self.charge.status.to_dict(),
            "plan_hash": p.access_plan.hash,
        }


class DpService:
    def __init__(self, settings: Settings, governor: Governor, ledger: BudgetLedger) -> None:
        self.settings = settings
        self.governor = governor
        self.ledger = ledger
        workers = max(1, settings.dp_workers)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="govern-dp")
        self._slots = threading.BoundedSemaphore(workers)
        self._keys: dict[tuple[str, str, str], list[Any]] = {}
        self._keys_lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- 1. decide, plan, pre-check ----------------------------------------------------------------
    def prepare(self, principal: Principal, purpose: str, query: DpQuery, *,
                state: PolicyState | None = None) -> Prepared:
        t0 = time.perf_counter()
        state = state or self.governor.state
        access = self.governor.plan(principal, query.dataset, purpose, action="query_dp", state=state)
        entry = state.policy.datasets[query.dataset]
        schema = self.governor.schema(query.dataset, state)
        plan = compile_query(query, access, entry, schema)
        status = self.ledger.check(principal, query.dataset, query.epsilon, query.delta)
        return Prepared(principal, purpose, query, access, plan, state, status,
                        {"plan": time.perf_counter() - t0})

    # -- 2. read and release ---------------------------------------------------------------------------
    def compute(self, prepared: Prepared) -> DpResult:
        """Run in the DP pool and wait for it (blocking; call from a worker thread)."""
        if not self._slots.acquire(timeout=self.settings.queue_timeout):
            raise LimitExceeded("too many differentially private queries at once; retry shortly", retry_after=1)
        try:
            return self.pool.submit(self._compute, prepared).result()
        finally:
            self._slots.release()

    def _compute(self, prepared: Prepared) -> DpResult:
        t0 = time.perf_counter()
        plan, state = prepared.plan, prepared.state
        data = self.read(prepared)
        public = self.public_keys(plan, state)
        t_read = time.perf_counter() - t0
        result = release(plan, data, public, self.governor.keys.subkey("dp-contributions"))
        result.timings["read"] = t_read
        result.timings["rows"] = float(data.num_rows)
        return result

    def read(self, prepared: Prepared) -> pa.Table:
        """The plan-applied view, raw values: row filters and the caller's filter applied."""
        plan, access, state = prepared.plan, prepared.access_plan, prepared.state
        parts = [to_expression(rf.predicate) for rf in access.row_filters]
        if plan.filter is not None:
            parts.append(to_expression(plan.filter.sql))
        expr = None
        for p in parts:
            expr = p if expr is None else pc.and_kleene(expr, p)
        columns = list(dict.fromkeys([*plan.columns, *access.raw_columns_needed([])]))
        entry = state.policy.datasets[plan.dataset]
        reader = storage_scan.scan(self.governor.dataset(plan.dataset, state), columns, expr,
                                   self.settings.batch_size, location=entry.location)
        return reader.read_all()

    def public_keys(self, plan: DpPlan, state: PolicyState) -> dict[str, list[Any]]:
        """Values of ``public_values`` columns, read from the whole dataset (the catalog says the
        set is public, so no row filter narrows it and no noise protects it)."""
        wanted = {g: g for g in plan.catalog_key_columns}
        for d in plan.derived:
            if d.how == "category" and not d.labels:
                wanted[d.name] = d.source
        out: dict[str, list[Any]] = {}
        for name, column in wanted.items():
            key = (state.policy.version, plan.dataset, column)
            with self._keys_lock:
                values = self._keys.get(key)
            if values is None:
                entry = state.policy.datasets[plan.dataset]
                table = storage_scan.scan(self.governor.dataset(plan.dataset, state), [column], None,
                                          self.settings.batch_size, location=entry.location).read_all()
                values = pc.unique(table.column(column)).to_pylist()
                values.sort(key=lambda v: (v is None, str(v)))
                with self._keys_lock:
                    self._keys[key] = values
            out[name] = values if name == column else [None if v is None else str(v) for v in values]
        return out

    # -- 3. charge -----------------------------------------------------------------------------------
    def charge(self, prepared: Prepared, request_id: str) -> Charge:
        return self.ledger.charge(prepared.principal, prepared.query.dataset, prepared.query.epsilon,
                                  prepared.query.delta, request_id=request_id, kind="dp")

    def run(self, principal: Principal, purpose: str, query: DpQuery, request_id: str) -> DpRelease:
        """All three steps (for callers that audit around it themselves)."""
        prepared = self.prepare(principal, purpose, query)
        result = self.compute(prepared)
        t = time.perf_counter()
        charge = self.charge(prepared, request_id)
        timings = {**prepared.timings, **result.timings, "ledger": time.perf_counter() - t}
        return DpRelease(prepared, result, charge, timings)
