"""The gateway's encrypted-view service: governed reads in, ciphertexts and noisy aggregates out.

Glue between the pure cores (:mod:`.prepare`, :mod:`.computation`, :mod:`.query`) and what a
running gateway holds: the governor (plans and scans), the key store, the DP ledger (when the
gateway has one), the rate limiter and a bound on concurrent HE work. Routers call
:meth:`open_view`, :meth:`release` and :meth:`encrypted_query`; they audit.

The one rule this module keeps above all: the secret key decrypts only ciphertexts that this
module made itself, from the governed plaintext, for a declared aggregate — never a ciphertext
that came in a request. There is no code path that loads a client ciphertext under a secret key.

No free oracle (issue 18): a release (flows 2 and 3) takes its rate-limit slot and is charged
*before* the data is read, so every answer that depends on the data — values, and whether a
group has enough rows — has been paid for. The ``he_min_rows`` rule is a noisy threshold, a DP
mechanism of its own (:func:`threshold`): a group whose noisy row count falls below it is
released as ``null`` and listed in ``suppressed``, with status 200 like any other release, never
an exact "fewer than k rows" refusal (padding a filter with k − 1 known rows made that refusal
an exact, free yes/no question about one person).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from govern.config import Settings
from govern.deliver.governor import Governor, PolicyState
from govern.errors import AccessDenied, InvalidRequest, LimitExceeded
from govern.identity.principal import Principal
from govern.mask.execute_arrow import ArrowExecutor, pushdown_filter, resolve_request, scan_columns
from govern.plan.model import AccessPlan
from govern.privacy.budget.ledger import BudgetLedger
from govern.privacy.he import container
from govern.privacy.he.computation import Computation, evaluate
from govern.privacy.he.keystore import KeyStore
from govern.privacy.he.noise import error_bound, laplace, noise_scale, threshold
from govern.privacy.he.params import PARAMETERS, tenseal
from govern.privacy.he.prepare import PlainView, ViewSpec, prepare, resolve_spec
from govern.privacy.he.query import Query, add_noise, load_weights, noise_scales, statistics
from govern.privacy.he.query import evaluate as evaluate_query
from govern.privacy.he.ratelimit import RateLimiter, SharedRateLimiter
from govern.privacy.he.token import ViewToken, sign, verify
from govern.storage import scan as storage_scan

ACTION = "read_encrypted"
THRESHOLD_SHARE = 0.1  # of a release's epsilon, spent on the noisy he_min_rows threshold


@dataclass
class OpenedView:
    """A view ready to stream: header, lazily encrypted items, and facts for the audit."""

    plan: AccessPlan
    token: ViewToken
    header: dict[str, Any]
    items: Iterator[container.Item]
    audit: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a release or query returns, and what its audit record says about it."""

    plan: AccessPlan
    body: dict[str, Any]
    rows: int
    audit: dict[str, Any]


class HeService:
    def __init__(self, settings: Settings, governor: Governor, ledger: BudgetLedger | None = None) -> None:
        self.settings = settings
        self.governor = governor
        self.ledger = ledger
        self.keys = KeyStore(key_dir(settings))
        self.limiter: RateLimiter | SharedRateLimiter
        url = settings.ledger_url or ""
        if url.startswith(("postgresql://", "postgres://")):  # a fleet: one limit across processes
            self.limiter = SharedRateLimiter(url, settings.ledger_table_prefix, settings.he_releases_per_minute, 60.0)
        else:
            self.limiter = RateLimiter(settings.he_releases_per_minute, 60.0)
        self._work = threading.BoundedSemaphore(settings.he_max_concurrent)

    # -- shared steps ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Bound concurrent CPU-heavy HE work (encryption, evaluation)."""
        if not self._work.acquire(timeout=self.settings.queue_timeout):
            raise LimitExceeded("too many encrypted computations in progress; retry shortly", retry_after=1)
        try:
            yield
        finally:
            self._work.release()

    def plan_view(self, principal: Principal, purpose: str, dataset: str, columns: list[str],
                  bounds: dict[str, list[float]] | None, filter: str | None, limit: int | None,
                  group_by: str | None, groups: list[str] | None) -> tuple[AccessPlan, ViewSpec, PolicyState]:
        """Decide, plan (action ``read_encrypted``) and check the view request: policy, catalog
        and request only — no data is read, so every refusal here is the same for any data."""
        state = self.governor.state
        plan = self.governor.plan(principal, dataset, purpose, action=ACTION, state=state)
        entry = state.policy.datasets[dataset]
        spec = resolve_spec(plan, entry, columns, bounds, filter, limit, group_by, groups,
                            max_groups=self.settings.he_max_slots)
        return plan, spec, state

    def read_view(self, plan: AccessPlan, spec: ViewSpec, state: PolicyState) -> PlainView:
        """Read the masked columns, clip and select: the view's plaintext."""
        table = self._read(plan, spec, state)
        return prepare(table, spec, plan.privacy_unit, self.settings.he_max_contributions)

    def plain_view(self, principal: Principal, purpose: str, dataset: str, columns: list[str],
                   bounds: dict[str, list[float]] | None, filter: str | None, limit: int | None,
                   group_by: str | None, groups: list[str] | None) -> tuple[AccessPlan, ViewSpec, PlainView]:
        """:meth:`plan_view`, then :meth:`read_view`."""
        plan, spec, state = self.plan_view(principal, purpose, dataset, columns, bounds, filter, limit,
                                           group_by, groups)
        return plan, spec, self.read_view(plan, spec, state)

    def _read(self, plan: AccessPlan, spec: ViewSpec, state: PolicyState) -> pa.Table:
        cap = self.settings.he_max_rows
        if spec.limit is not None and spec.limit > cap:
            raise LimitExceeded(f"limit may be at most {cap} rows (he_max_rows)", limit=cap)
        request = resolve_request(plan, spec.read_columns(plan), None, spec.limit or cap + 1)
        entry = state.policy.datasets[plan.dataset]
        raw = storage_scan.scan(self.governor.dataset(plan.dataset, state), scan_columns(plan, request),
                                pushdown_filter(plan, request), self.settings.batch_size, location=entry.location)
        reader = ArrowExecutor(plan, request, self.governor.keys, threads=self.settings.mask_threads,
                               row_filter_applied=True).reader(raw)
        batches, rows = [], 0
        for batch in reader:
            rows += batch.num_rows
            if rows > cap:
                raise LimitExceeded(f"the view would have more than {cap} rows (he_max_rows): pass a limit",
                                    limit=cap)
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)

    def _charge(self, principal: Principal, dataset: str, epsilon: float, request_id: str, kind: str) -> bool:
        """Charge the DP ledger if this gateway has one (raises BudgetExceeded, LedgerError)."""
        if self.ledger is None:
            return False
        self.ledger.charge(principal, dataset, epsilon, 0.0, request_id=request_id, kind=kind)
        return True

    def _epsilon(self, epsilon: float) -> float:
        if not (0.0 < epsilon <= self.settings.he_max_epsilon):
            raise InvalidRequest(f"epsilon must be in (0, {self.settings.he_max_epsilon:g}] (he_max_epsilon)",
                                 limit=self.settings.he_max_epsilon)
        return float(epsilon)

    def _split(self, epsilon: float) -> tuple[float, float]:
        """(epsilon for the values, epsilon for the noisy he_min_rows threshold)."""
        if self.settings.he_min_rows <= 0:
            return epsilon, 0.0
        return epsilon * (1 - THRESHOLD_SHARE), epsilon * THRESHOLD_SHARE

    def _suppressed(self, plain: PlainView, groups: list[str] | None, epsilon: float) -> list[str | None]:
        """The groups (``None``: the whole selection) whose noisy row count is below he_min_rows."""
        if epsilon <= 0:
            return []
        labels: list[str | None] = list(groups) if groups else [None]
        counts = [float(plain.count(g)) for g in labels]
        below = threshold(counts, self.settings.he_min_rows, self.settings.he_max_contributions, epsilon)
        return [g for g, low in zip(labels, below, strict=True) if low]

    # -- flow 1: encrypted view ------------------------------------------------------------------
    def open_view(self, principal: Principal, purpose: str, dataset: str, columns: list[str],
                  bounds: dict[str, list[float]] | None = None, filter: str | None = None,
                  limit: int | None = None, group_by: str | None = None, groups: list[str] | None = None,
                  galois: bool = False) -> OpenedView:
        plan, spec, plain = self.plain_view(principal, purpose, dataset, columns, bounds, filter, limit,
                                            group_by, groups)
        key_id = self.keys.active(dataset)
        token = ViewToken.new(principal.name, purpose, spec, key_id, plain.rows,
                              plain.digest(self.keys.token_key(), spec), plan.hash, self.settings.he_view_ttl)
        slots = PARAMETERS.slots
        chunks = max(1, -(-plain.rows // slots))
        header = {
            "format": container.FORMAT, "view_id": token.view_id, "dataset": dataset, "purpose": purpose,
            "key_id": key_id, "params": PARAMETERS.to_dict(), "rows": plain.rows, "chunks": chunks,
            "columns": [{"name": c, "bounds": list(spec.bounds[c])} for c in spec.columns],
            "filter": spec.filter, "group_by": spec.group_by, "groups": list(spec.groups), "galois": galois,
            "plan_hash": plan.hash, "token": sign(token, self.keys.token_key()), "expires": token.expires,
        }
        audit = {"view_id": token.view_id, "key_id": key_id, "columns_encrypted": list(spec.columns),
                 "filter": spec.filter, "groups": list(spec.groups), "chunks": chunks, "galois": galois}
        return OpenedView(plan, token, header, self._items(dataset, key_id, plain, chunks, galois), audit)

    def _items(self, dataset: str, key_id: str, plain: PlainView, chunks: int,
               galois: bool) -> Iterator[container.Item]:
        ts = tenseal()
        yield "context", None, 0, self.keys.public_context(dataset, key_id, galois=galois)
        ctx = self.keys.secret_context(dataset, key_id)
        lock = self.keys.lock(dataset, key_id)
        for chunk in range(chunks):
            vectors: list[tuple[str, str | None, np.ndarray]] = [
                *(("values", name, v) for name, v in plain.values.items()),
                ("selected", None, plain.selected),
                *(("group", g, v) for g, v in plain.groups.items()),
            ]
            for kind, column, vector in vectors:
                part = _chunk(vector, chunk)
                with self.working(), lock:
                    blob = ts.ckks_vector(ctx, part).serialize()
                yield kind, column, chunk, blob

    # -- flow 2: aggregate release ---------------------------------------------------------------
    def token(self, principal: Principal, text: str) -> ViewToken:
        """The view token, if it verifies and was issued to ``principal``."""
        return verify(text, self.keys.token_key(), principal=principal.name)

    def release(self, principal: Principal, purpose: str, token: ViewToken, computation: dict[str, Any],
                epsilon: float, request_id: str) -> Outcome:
        """Evaluate a declared aggregate over the token's view and release it with DP noise."""
        if token.purpose != purpose:
            raise AccessDenied(f"this view was made for purpose '{token.purpose}'; release it under that purpose")
        if not self.keys.is_live(token.spec.dataset, token.key_id):
            raise InvalidRequest(f"the key '{token.key_id}' this view was encrypted under has been retired: "
                                 "request a new encrypted view")
        comp = Computation.parse(computation)
        spec = token.spec
        comp.check(spec.shape(token.rows), max_slots=self.settings.he_max_slots)
        eps = self._epsilon(epsilon)
        plan, spec_now, state = self.plan_view(principal, purpose, spec.dataset, list(spec.columns),
                                               {k: list(v) for k, v in spec.bounds.items()}, spec.filter,
                                               spec.limit, spec.group_by, list(spec.groups))
        if plan.hash != token.plan_hash:
            raise InvalidRequest("the policy changed since this view was made: request a new encrypted view")
        # Paid for before the data is read: every data-dependent answer below is charged.
        self.limiter.take(principal.name)
        charged = self._charge(principal, spec.dataset, eps, request_id, "he-release")
        plain = self.read_view(plan, spec_now, state)
        if plain.digest(self.keys.token_key(), spec_now) != token.digest:
            raise InvalidRequest("the data changed since this view was made: request a new encrypted view")
        eps_values, eps_threshold = self._split(eps)
        grouped = list(spec.groups) if comp.by_group else None
        suppressed = self._suppressed(plain, grouped, eps_threshold)
        exact = self._evaluate(spec.dataset, token.key_id, comp, plain, list(spec.groups))
        shape = spec.shape(plain.rows)
        noisy: dict[str, float] = {}
        scales: dict[str, float] = {}
        for kind, share in comp.parts().items():
            names = [k for k in exact if k.split("@")[0] == kind]
            error = error_bound(plain.rows, comp.magnitude(kind, shape), comp.depth(kind))
            scale = noise_scale(comp.sensitivity(kind, shape, self.settings.he_max_contributions),
                                eps_values * share, error, self.settings.he_flood_bits)
            scales[kind] = scale
            noisy.update(zip(names, laplace([exact[n] for n in names], scale), strict=True))
        values = _compose(comp, noisy, grouped, spec)
        for g in suppressed:
            values[comp.op if g is None else g] = None
        gate = {"min_rows": self.settings.he_min_rows, "epsilon": eps_threshold,
                "suppressed": [comp.op if g is None else g for g in suppressed]}
        body = {"view_id": token.view_id, "computation": comp.to_dict(), "values": values, "epsilon": eps,
                "delta": 0.0, "charged": charged, "noise": {"mechanism": "laplace", "scale": scales},
                "threshold": gate, "key_id": token.key_id}
        audit = {"kind": "he-release", "view_id": token.view_id, "key_id": token.key_id,
                 "computation": comp.to_dict(), "epsilon": eps, "noise_scale": scales, "slots": len(values),
                 "charged": charged, "suppressed": gate["suppressed"]}
        return Outcome(plan, body, plain.rows, audit)

    def _evaluate(self, dataset: str, key_id: str, comp: Computation, plain: PlainView,
                  groups: list[str]) -> dict[str, float]:
        """Evaluate ``comp`` on a fresh encryption of ``plain`` under the view's key and decrypt
        the result: slot 0 of each part, nothing else."""
        ctx = self.keys.secret_context(dataset, key_id, galois=True)
        with self.working(), self.keys.lock(dataset, key_id):
            parts = evaluate(comp, _FreshSource(ctx, plain), groups, rotate=True)
            return {name: float(ct.decrypt()[0]) for name, ct in parts.items()}

    # -- flow 3: client-held keys ----------------------------------------------------------------
    def encrypted_query(self, principal: Principal, purpose: str, dataset: str, computation: dict[str, Any],
                        context: bytes, weights: list[bytes], epsilon: float, request_id: str, *,
                        bounds: dict[str, list[float]] | None = None, filter: str | None = None,
                        limit: int | None = None, group_by: str | None = None,
                        groups: list[str] | None = None) -> Outcome:
        from govern.privacy.he.params import load_client_context

        query = Query.parse(computation)
        eps = self._epsilon(epsilon)
        client_ctx = load_client_context(context)
        plan, spec, state = self.plan_view(principal, purpose, dataset, list(query.columns), bounds, filter,
                                           limit, group_by, groups)
        query.check(spec, max_slots=self.settings.he_max_slots)
        if len(weights) != len(query.weights):
            raise InvalidRequest(f"send {len(query.weights)} encrypted weights ({', '.join(query.weights)})")
        loaded = load_weights(client_ctx, weights, len(query.weights), len(query.outputs(spec)))
        # Paid for before the data is read: every data-dependent answer below is charged.
        self.limiter.take(principal.name)
        charged = self._charge(principal, dataset, eps, request_id, "he-query")
        plain = self.read_view(plan, spec, state)
        eps_values, eps_threshold = self._split(eps)
        grouped = list(spec.groups) if spec.groups else None
        suppressed = self._suppressed(plain, grouped, eps_threshold)
        m, offset = statistics(query, plain, spec)
        scales = noise_scales(query, spec, self.settings.he_max_contributions, eps_values)
        m, offset = add_noise(m, offset, query, scales, laplace)
        outputs = query.outputs(spec)
        if suppressed and grouped is None:  # the whole selection is below the threshold: all zeros
            m, offset = np.zeros_like(m), np.zeros_like(offset)
        for g in suppressed:
            if g is not None:
                m[:, grouped.index(g)] = 0.0  # type: ignore[union-attr]
        scale = _scale_report(query, scales)
        with self.working():
            blob = evaluate_query(client_ctx, loaded, m, offset)
        gate = {"min_rows": self.settings.he_min_rows, "epsilon": eps_threshold,
                "suppressed": ["total" if g is None and query.op == "linear_groups" else g for g in suppressed]}
        if suppressed and grouped is None and query.op == "logistic_gradient":
            gate["suppressed"] = list(outputs)
        body = {"computation": query.to_dict(), "outputs": outputs, "weights": query.weights, "epsilon": eps,
                "delta": 0.0, "charged": charged, "noise": {"mechanism": "laplace", "scale": scale},
                "threshold": gate}
        audit = {"kind": "he-query", "computation": query.to_dict(), "epsilon": eps, "noise_scale": scale,
                 "slots": len(outputs), "charged": charged, "filter": spec.filter, "groups": list(spec.groups),
                 "suppressed": gate["suppressed"]}
        return Outcome(plan, {**body, "_ciphertext": blob}, plain.rows, audit)


class _FreshSource:
    """View vectors encrypted afresh by the gateway (on demand, each once)."""

    def __init__(self, ctx: Any, plain: PlainView) -> None:
        self.ctx = ctx
        self.plain = plain
        self._cache: dict[tuple[str, str | None], list[Any]] = {}

    def _encrypt(self, key: tuple[str, str | None], vector: np.ndarray) -> list[Any]:
        if key not in self._cache:
            ts = tenseal()
            self._cache[key] = [ts.ckks_vector(self.ctx, _chunk(vector, i)) for i in range(_chunks(self.plain.rows))]
        return self._cache[key]

    def values(self, column: str) -> list[Any]:
        return self._encrypt(("values", column), self.plain.values[column])

    def selected(self) -> list[Any]:
        return self._encrypt(("selected", None), self.plain.selected)

    def group(self, key: str) -> list[Any]:
        return self._encrypt(("group", key), self.plain.groups[key])


def _compose(comp: Computation, noisy: dict[str, float], groups: list[str] | None,
             spec: ViewSpec) -> dict[str, float | None]:
    """Released values by label; a mean is noisy sum / noisy count, clamped to the bounds."""
    labels = groups if groups is not None else [comp.op]
    suffixes = [f"@{g}" for g in groups] if groups is not None else [""]
    out: dict[str, float | None] = {}
    for label, suffix in zip(labels, suffixes, strict=True):
        if comp.op == "mean":
            lo, hi = spec.bounds[comp.columns[0]]
            count = noisy["count" + suffix]
            out[label] = float(np.clip(noisy["sum" + suffix] / max(count, 1.0), lo, hi))
        else:
            out[label] = noisy[comp.op + suffix]
    return out


def _scale_report(query: Query, scales: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Noise scales by weight name, as the response and the audit record show them."""
    m_scale, off_scale = scales
    if query.op == "logistic_gradient":
        return {"A/4": {w: float(m_scale[i, i]) for i, w in enumerate(query.weights)},
                "b": {w: float(s) for w, s in zip(query.weights, off_scale, strict=True)}}
    return {w: float(m_scale[i, 0]) for i, w in enumerate(query.weights)}


def _chunks(rows: int) -> int:
    return max(1, -(-rows // PARAMETERS.slots))


def _chunk(vector: np.ndarray, i: int) -> np.ndarray:
    """Slots of chunk ``i``, zero-padded to a full ciphertext."""
    s = PARAMETERS.slots
    part = np.zeros(s)
    piece = vector[i * s:(i + 1) * s]
    part[:len(piece)] = piece
    return part


def key_dir(settings: Settings) -> Path:
    return settings.he_key_dir or settings.state_dir / "he_keys"
