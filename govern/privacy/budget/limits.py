"""Which privacy budget applies to a (principal, dataset), and which period a moment falls in.

Pure: policy in, :class:`Budget` out; no I/O. The ledger (:mod:`govern.privacy.budget.ledger`) asks
this module for the *limit* and keeps the *spending* itself, so a hot-reloaded policy changes
limits at once while what was spent stays spent.

Resolution, first match wins:

1. an override naming the principal itself (``principals: {bob: {epsilon: 10}}``);
2. overrides naming one of its roles (``g`` lines, nested roles included) — if several match,
   the smallest epsilon (then delta) wins: holding one more role never raises a budget;
3. the dataset's own ``budget:``;
4. none: the dataset has no budget, and no privacy release on it is possible (fail closed).

Budgets follow the data, not the name (BigQuery's budget resets when a new view is created):
catalog entries whose ``location`` is the same source share one spending account, kept under
the name of the first of them in catalog.yaml (:func:`lineage_of`), and the strictest of their
budgets applies to each. Declaring ``patients_again`` over ``patients.parquet`` gives nobody a
second budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from govern.identity.principal import Principal
from govern.policy.decide import Decider
from govern.policy.model import PolicySet

EPSILON_UNIT = 10**12  # the ledger counts epsilon in 1e-12 and delta in 1e-18: sums are exact
DELTA_UNIT = 10**18


@dataclass(frozen=True)
class Budget:
    """The limit that applies: epsilon and delta per ``period``; ``source`` says where it is
    written (``catalog.yaml:LINE``) and ``subject`` whom it names (None: the dataset default)."""

    epsilon: float
    delta: float
    period: str
    source: str
    subject: str | None = None
    lineage: str | None = None  # the spending account: the first dataset reading the same source

    def to_dict(self) -> dict[str, object]:
        return {"epsilon": self.epsilon, "delta": self.delta, "period": self.period,
                "source": self.source, "subject": self.subject}


def lineage_of(policy: PolicySet, dataset: str) -> list[str]:
    """The datasets reading the same source as ``dataset`` (itself included), in catalog order;
    the first names their shared spending account. Locations compare after trimming ``./``,
    repeated and trailing slashes (two spellings of one path through a symlink are not caught:
    a steward declares one source once)."""
    def source(location: str) -> str:
        text = location.strip()
        while text.startswith("./"):
            text = text[2:]
        scheme, sep, rest = text.partition("://")
        path = rest if sep else text
        while "//" in path:
            path = path.replace("//", "/")
        path = path.rstrip("/")
        return f"{scheme}{sep}{path}" if sep else path

    entry = policy.datasets.get(dataset)
    if entry is None:
        return [dataset]
    mine = source(entry.location)
    return [name for name, ds in policy.datasets.items() if source(ds.location) == mine] or [dataset]


def resolve_budget(policy: PolicySet, decider: Decider, principal: Principal, dataset: str) -> Budget | None:
    """The budget ``principal`` has on ``dataset`` under ``policy`` (None: no budget): the
    strictest among the datasets of its lineage, charged to the lineage's account."""
    members = lineage_of(policy, dataset)
    found = [b for b in (_own_budget(policy, decider, principal, m) for m in members) if b is not None]
    if not found:
        return None
    strictest = min(found, key=lambda b: (b.epsilon, b.delta))
    return Budget(strictest.epsilon, strictest.delta, strictest.period, strictest.source, strictest.subject,
                  lineage=members[0])


def _own_budget(policy: PolicySet, decider: Decider, principal: Principal, dataset: str) -> Budget | None:
    entry = next((b for b in policy.budgets if b.dataset == dataset), None)
    if entry is None:
        return None
    by_subject = {o.subject: o for o in entry.overrides}
    own = by_subject.get(principal.name)
    if own is not None:
        return Budget(own.epsilon, own.delta, entry.period, f"catalog.yaml:{own.line}", own.subject)
    roles = [by_subject[s] for s in decider.subjects(principal) if s in by_subject]
    if roles:
        o = min(roles, key=lambda r: (r.epsilon, r.delta, r.subject))
        return Budget(o.epsilon, o.delta, entry.period, f"catalog.yaml:{o.line}", o.subject)
    return Budget(entry.epsilon, entry.delta, entry.period, f"catalog.yaml:{entry.line}")


def period_key(period: str, at: datetime) -> str:
    """The ledger key of the period containing ``at`` (UTC): ``2025-06-14``, ``2025-W24``,
    ``2025-06``, ``2025`` or ``total``."""
    at = at.astimezone(UTC)
    if period == "day":
        return at.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = at.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return at.strftime("%Y-%m")
    if period == "year":
        return at.strftime("%Y")
    if period == "total":
        return "total"
    raise ValueError(f"unknown budget period {period!r}")


def period_end(period: str, at: datetime) -> datetime | None:
    """When the period containing ``at`` ends and the budget is whole again (None: never)."""
    at = at.astimezone(UTC)
    day = datetime(at.year, at.month, at.day, tzinfo=UTC)
    if period == "day":
        return day + timedelta(days=1)
    if period == "week":
        return day + timedelta(days=7 - at.weekday())
    if period == "month":
        return datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
    if period == "year":
        return datetime(at.year + 1, 1, 1, tzinfo=UTC)
    return None


def to_units(value: float, unit: int, *, round_up: bool) -> int:
    """``value`` in integer ledger units. Costs round up and limits round down, so rounding
    can only ever refuse a release, never let one overspend."""
    scaled = Decimal(repr(float(value))) * unit
    return int(scaled.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_FLOOR))


def from_units(units: int, unit: int) -> float:
    return float(Decimal(units) / unit)
