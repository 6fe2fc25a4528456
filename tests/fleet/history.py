"""The offline checker of a fleet run's history (Jepsen style): pure functions, no I/O.

A run produces

- a **history**: one :class:`Op` per client operation, with what the client saw — ``ok`` (a
  complete response), ``fail`` (a definite refusal or error response, or a connection that was
  never accepted) or ``unknown`` (a timeout, a connection cut midway: the operation may or may
  not have taken effect);
- what the shared PostgreSQL holds afterwards: the audit records (:class:`Rec`), the ledger's
  charges, and the policy reloads with the time every instance served the new version.

:func:`check` returns every violation it finds (an empty list: the run is correct):

1. **one chain**: ``seq`` is 1..N without gaps, each record points at its predecessor's hash,
   the first at the genesis hash, and no hash has two successors (no fork);
2. **one record per success**: every ``ok`` operation has exactly one record, and it says ``ok``
   (for a stream: with the rows the client received);
3. **no record without a cause**: every record of a client request maps to an operation (by the
   client's request id, ``extra.client_request_id``), an ``ok`` record only to an operation that
   succeeded or may have (``ok``/``unknown``, never ``fail``), and no operation has two records;
4. **the budget holds**: the ledger's committed epsilon per budget never exceeds its limit; every
   ``ok`` release is charged; and the epsilon of ``ok`` releases plus that of ``unknown`` ones the
   ledger charged (an unknown outcome counted as spent) stays within the limit as well;
5. **policy converges**: after each reload every instance served the new version within the bound;
6. **cut streams look cut**: a stream the client saw end like a complete one (``ok``) has an
   ``ok`` record with the same row count; one whose record says ``aborted``/``error`` was not
   seen as complete.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

GENESIS = "0" * 64
OUTCOMES = ("ok", "fail", "unknown")


@dataclass(frozen=True)
class Op:
    """One client operation and what the client saw of it."""

    id: str  # the client's X-Request-Id (the record's extra.client_request_id)
    kind: str  # "read", "sql", "dp", "stream", ...
    instance: int
    outcome: str  # "ok" | "fail" | "unknown"
    invoked: float = 0.0
    completed: float = 0.0
    epsilon: float = 0.0  # a release's cost
    budget: str | None = None  # which budget it charges ("alice/patients")
    rows: int | None = None  # rows the client received (streams)
    note: str = ""


@dataclass(frozen=True)
class Rec:
    """The fields of an audit record the checker needs."""

    seq: int
    prev_hash: str
    hash: str
    request_id: str
    outcome: str
    client_id: str | None = None
    action: str = ""
    rows: int | None = None
    policy_version: str | None = None


@dataclass(frozen=True)
class Charge:
    request_id: str
    budget: str
    epsilon: float


@dataclass(frozen=True)
class Reload:
    """One policy edit: when it was made, the version it makes, when every instance served it
    (None: not within the run)."""

    version: str
    at: float
    converged_at: float | None


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    stats: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def check_chain(records: Sequence[Rec]) -> list[str]:
    out: list[str] = []
    ordered = sorted(records, key=lambda r: r.seq)
    seqs = [r.seq for r in ordered]
    if seqs != list(range(1, len(seqs) + 1)):
        missing = sorted(set(range(1, (max(seqs) if seqs else 0) + 1)) - set(seqs))
        dupes = [s for s, n in Counter(seqs).items() if n > 1]
        out.append(f"chain: seq is not 1..{len(seqs)} (missing {missing[:5]}, duplicated {dupes[:5]})")
    successors = Counter(r.prev_hash for r in ordered)
    forks = [h for h, n in successors.items() if n > 1]
    if forks:
        out.append(f"chain: {len(forks)} fork(s): a record with {successors[forks[0]]} successors")
    prev = GENESIS
    for r in ordered:
        if r.prev_hash != prev:
            out.append(f"chain: seq {r.seq} does not point at its predecessor's hash")
            break
        prev = r.hash
    return out


def check_records(ops: Sequence[Op], records: Sequence[Rec]) -> list[str]:
    out: list[str] = []
    by_op: dict[str, list[Rec]] = defaultdict(list)
    ops_by_id = {o.id: o for o in ops}
    for r in records:
        if r.client_id is not None:
            by_op[r.client_id].append(r)
    for op in ops:
        mine = by_op.get(op.id, [])
        if len(mine) > 1:
            out.append(f"op {op.id} ({op.kind}, {op.outcome}) has {len(mine)} audit records")
        if op.outcome == "ok":
            if not mine:
                out.append(f"op {op.id} ({op.kind}) succeeded but has no audit record")
            elif mine[0].outcome != "ok":
                out.append(f"op {op.id} ({op.kind}) succeeded but its record says {mine[0].outcome}")
            elif op.kind == "stream" and op.rows is not None and mine[0].rows != op.rows:
                out.append(f"stream {op.id}: the client got {op.rows} rows, the record says {mine[0].rows}")
    for client_id, recs in by_op.items():
        op = ops_by_id.get(client_id)
        if op is None:
            out.append(f"record seq {recs[0].seq} names client request {client_id}, which no client sent")
            continue
        for r in recs:
            if r.outcome == "ok" and op.outcome == "fail":
                out.append(f"record seq {r.seq} says ok for op {op.id} ({op.kind}), which the client saw fail")
    missing_version = [r.seq for r in records if not r.policy_version]
    if missing_version:
        out.append(f"{len(missing_version)} record(s) carry no policy version (first: seq {missing_version[0]})")
    return out


def check_budget(ops: Sequence[Op], charges: Sequence[Charge], limits: dict[str, float],
                 server_id: dict[str, str] | None = None, tolerance: float = 1e-9) -> list[str]:
    """The ledger's committed epsilon per budget is within its limit; and from the clients' side,
    the releases that were delivered (``ok``) plus the ``unknown`` ones the ledger charged — an
    unknown outcome counts as spent — fit within it too. (An unknown release the ledger never
    charged cannot have been delivered: a release is charged before any byte of it leaves.)"""
    out: list[str] = []
    committed: dict[str, float] = defaultdict(float)
    for c in charges:
        committed[c.budget] += c.epsilon
    for budget, spent in committed.items():
        limit = limits.get(budget)
        if limit is None:
            out.append(f"budget {budget}: charged {spent:g} but it has no limit")
        elif spent > limit + tolerance:
            out.append(f"budget {budget}: committed epsilon {spent:g} exceeds the limit {limit:g}")
    charged = {c.request_id for c in charges}
    ids = server_id or {}
    client: dict[str, float] = defaultdict(float)
    for op in ops:
        if op.budget is None:
            continue
        if op.outcome == "ok" or (op.outcome == "unknown" and ids.get(op.id) in charged):
            client[op.budget] += op.epsilon
    for budget, spent in client.items():
        limit = limits.get(budget, 0.0)
        if spent > limit + tolerance:
            out.append(f"budget {budget}: delivered + unknown-but-charged releases spent {spent:g} > limit {limit:g}")
    return out


def check_charged(ops: Sequence[Op], charged_server_ids: set[str], server_id: dict[str, str]) -> list[str]:
    """Every ok release has a charge (matched through the server's request id of the op)."""
    out = []
    for op in ops:
        if op.budget is not None and op.outcome == "ok":
            rid = server_id.get(op.id)
            if rid is None or rid not in charged_server_ids:
                out.append(f"release {op.id} was delivered but never charged")
    return out


def check_policy(reloads: Sequence[Reload], bound: float) -> list[str]:
    out = []
    for r in reloads:
        if r.converged_at is None:
            out.append(f"policy {r.version}: the instances never all served it")
        elif r.converged_at - r.at > bound:
            out.append(f"policy {r.version}: converged after {r.converged_at - r.at:.2f}s > bound {bound:g}s")
    return out


def check(ops: Sequence[Op], records: Sequence[Rec], charges: Sequence[Charge], limits: dict[str, float],
          reloads: Sequence[Reload] = (), *, bound: float = 5.0) -> Report:
    """Every invariant over one run; see the module docstring."""
    report = Report()
    report.violations += check_chain(records)
    report.violations += check_records(ops, records)
    server_id = {r.client_id: r.request_id for r in records if r.client_id is not None}
    report.violations += check_budget(ops, charges, limits, server_id)
    charged = {c.request_id for c in charges}
    report.violations += check_charged(ops, charged, server_id)
    report.violations += check_policy(reloads, bound)
    report.stats = summarize(ops, records, reloads)
    return report


def summarize(ops: Iterable[Op], records: Sequence[Rec], reloads: Sequence[Reload]) -> dict[str, object]:
    ops = list(ops)
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for op in ops:
        by_kind[op.kind][op.outcome] += 1
    return {"ops": len(ops), "records": len(records),
            "outcomes": dict(Counter(o.outcome for o in ops)),
            "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
            "convergence": [round(r.converged_at - r.at, 3) for r in reloads if r.converged_at is not None]}
