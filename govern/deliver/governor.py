"""Governed access: the data flow in one place (decide → plan → scan → mask).

:class:`Governor` holds one *valid* policy version (with its decider), the key ring and the
settings. The CLI and the HTTP server both go through it, so a preview on a steward's laptop
and a read through the gateway run the same code. Swapping the policy (hot reload) replaces
the whole :class:`PolicyState` atomically; a request keeps the state it started with.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from govern.config import Settings
from govern.errors import AccessDenied, InvalidRequest, LimitExceeded, MaskError, NotFound
from govern.identity.principal import Principal
from govern.mask.execute_arrow import (
    ArrowExecutor,
    Request,
    pushdown_filter,
    resolve_request,
    scan_columns,
)
from govern.mask.functions.tokenize import reidentify as reverse_tokens
from govern.mask.keys import KeyRing
from govern.plan.compile import Draft, authorize, authorize_purpose, compile_plan
from govern.plan.model import AccessPlan
from govern.plan.predicates import Predicate, compile_client_filter
from govern.policy.decide import Decider
from govern.policy.load import load_policy
from govern.policy.model import PolicySet
from govern.storage import dictionary as storage_dictionary
from govern.storage import fragments as storage_fragments
from govern.storage import scan as storage_scan
from govern.storage.hot import HotTable, HotTables
from govern.storage.version import data_version


@dataclass(frozen=True)
class PolicyState:
    policy: PolicySet
    decider: Decider


@dataclass
class GovernedRead:
    plan: AccessPlan
    request: Request
    reader: pa.RecordBatchReader


class Governor:
    def __init__(self, settings: Settings, policy: PolicySet | None = None, keys: KeyRing | None = None) -> None:
        self.settings = settings
        policy = policy if policy is not None else load_policy(settings.policy_dir)
        self._state = PolicyState(policy, Decider(policy))
        self._lock = threading.Lock()
        self._keys = keys
        self._datasets: dict[tuple[str, str, bool], Any] = {}
        # Compiled plans of the current policy state (see plan()); dropped with the state.
        self._plans: dict[tuple[Any, ...], tuple[PolicyState, AccessPlan]] = {}
        self.hot = HotTables(settings.hot_table_bytes)  # small datasets, decoded (read())

    # -- policy --------------------------------------------------------------------------------
    @property
    def state(self) -> PolicyState:
        return self._state

    def swap_policy(self, policy: PolicySet) -> None:
        """Install a validated policy; decisions and plans of the old one are dropped."""
        with self._lock:
            self._state = PolicyState(policy, Decider(policy))
            self._datasets.clear()
            self._plans.clear()

    def budget_for(self, principal: Principal, dataset: str):  # -> govern.privacy.budget.limits.Budget | None
        """The privacy budget the current policy gives ``principal`` on ``dataset``."""
        from govern.privacy.budget.limits import resolve_budget

        state = self._state
        return resolve_budget(state.policy, state.decider, principal, dataset)

    @property
    def keys(self) -> KeyRing:
        if self._keys is None:
            from govern.mask.keys import KeyRing

            self._keys = KeyRing.from_settings(self.settings)
        return self._keys

    # -- storage -------------------------------------------------------------------------------
    def dataset(self, name: str, state: PolicyState | None = None, *,
                dictionaries: bool = False):  # -> pyarrow.dataset.Dataset
        """The dataset's files, opened once per policy version and data version: each call
        lists the location (:func:`govern.storage.scan.fingerprint`) and opens it again when a
        file was added, removed or rewritten. With ``dictionaries``, the string columns Parquet
        stores dictionary-encoded are typed as Arrow dictionaries (:mod:`govern.storage.dictionary`)."""
        state = state or self._state
        entry = state.policy.datasets.get(name)
        if entry is None:
            raise NotFound(f"unknown dataset '{name}'")
        key = (state.policy.version, name, dictionaries)
        now = storage_scan.fingerprint(entry.location, self.settings)
        cached = self._datasets.get(key)
        if cached is not None and cached[0] == now:
            return cached[1]
        if dictionaries:
            ds = storage_dictionary.with_dictionaries(self.dataset(name, state))
        else:
            ds = storage_scan.open_dataset(entry.location, entry.format, self.settings)
        self._datasets[key] = (now, ds)
        return ds

    def data_version(self, name: str, state: PolicyState | None = None) -> str:
        """The dataset's data version now (:func:`govern.storage.version.data_version`)."""
        state = state or self._state
        return data_version(self.dataset(name, state), state.policy.datasets[name].location)

    def fragments(self, name: str, state: PolicyState | None = None) -> list[storage_fragments.Fragment]:
        """The dataset's fragments now, about ``fragment_rows`` stored rows each."""
        state = state or self._state
        return storage_fragments.split(self.dataset(name, state), self.settings.fragment_rows,
                                       location=state.policy.datasets[name].location)

    def schema(self, name: str, state: PolicyState | None = None) -> pa.Schema:
        return storage_scan.physical_schema(self.dataset(name, state))

    def check_storage(self, name: str, timeout: float) -> None:
        """Raise StorageError unless the dataset's location answers within ``timeout``."""
        entry = self._state.policy.datasets.get(name)
        if entry is None:
            raise NotFound(f"unknown dataset '{name}'")
        storage_scan.check_reachable(entry.location, entry.format, self.settings, timeout)

    def readable_datasets(self, principal: Principal, purpose: str) -> list[dict[str, Any]]:
        """Datasets ``principal`` may read under ``purpose`` (purpose must be entitled)."""
        state = self._state
        authorize_purpose(state.decider, principal, purpose)
        out = []
        for name, entry in sorted(state.policy.datasets.items()):
            if state.decider.decide(principal, f"dataset:{name}", "read", purpose).allowed:
                out.append({"name": name, "description": entry.description, "format": entry.format})
        return out

    # -- plans and reads -----------------------------------------------------------------------
    def plan(self, principal: Principal, dataset: str, purpose: str, *, action: str = "read",
             state: PolicyState | None = None) -> AccessPlan:
        """``principal``'s plan on ``dataset`` for ``purpose`` under ``state`` (default: now).

        A plan is a pure function of (policy state, principal with its attributes, purpose,
        dataset, action, stored schema, active key id), so it is compiled once per such tuple
        and reused: a small read asks for it several times. A policy swap drops them all; a
        changed schema or key id is another key. Refusals are not remembered (they raise).
        """
        state = state or self._state
        if dataset not in state.policy.datasets:
            raise NotFound(f"unknown dataset '{dataset}'")
        # Decide on the dataset before touching storage: a denied caller learns nothing more.
        authorize(Draft(state.policy, state.decider, principal, purpose, dataset, pa.schema([]), action, None))
        schema = self.schema(dataset, state)
        key_id = getattr(self._keys, "active", None) or self.settings.masking_key_id
        key = (id(state), _principal_key(principal), purpose, dataset, action, key_id, schema)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is state:
            return cached[1]
        plan = compile_plan(state.policy, state.decider, principal, purpose, dataset, schema,
                            action=action, key_id=key_id)
        if len(self._plans) >= _PLANS_MAX:
            self._plans.clear()
        self._plans[key] = (state, plan)
        return plan

    def read(self, principal: Principal, dataset: str, purpose: str, *, columns: list[str] | None = None,
             filter: str | None = None, limit: int | None = None,
             state: PolicyState | None = None, dictionaries: bool = False,
             filter_exact: bool = True, fragment: storage_fragments.Fragment | None = None) -> GovernedRead:
        """The masked stream of ``dataset`` for ``principal`` under ``purpose``.

        ``dictionaries``: string columns stored dictionary-encoded stay Arrow dictionaries
        through the scan and value-only masks (same values, another encoding). The SQL engine
        asks for it, since DuckDB consumes dictionaries without decoding them; the HTTP rows
        keep plain types, which clients see in the schema.

        ``filter_exact=False``: the caller applies ``filter`` again itself (the SQL engine keeps
        it in its query, and DuckDB filters faster than Arrow), so the read uses it only to
        save work — files and row groups whose statistics rule it out are not read, rows are
        dropped before masks run when that spares masking — and may deliver rows it rejects.
        Row filters are always applied exactly.

        ``fragment``: read only that file / row-group range of the dataset (a fragment ticket's).
        """
        state = state or self._state
        plan = self.plan(principal, dataset, purpose, state=state)
        client_filter: Predicate | None = compile_client_filter(filter) if filter else None
        request = resolve_request(plan, columns, client_filter, limit)
        keys = self.keys
        ds = self.dataset(dataset, state, dictionaries=dictionaries)
        entry = state.policy.datasets[dataset]
        whole = ds  # the opened dataset itself, which the hot tables are kept for
        if fragment is not None:
            ds = storage_fragments.subset(ds, fragment.file, fragment.row_groups, location=entry.location)
        pushdown = pushdown_filter(plan, request)
        applied = True  # the scan applies the row filters
        if dictionaries and pushdown is not None and storage_dictionary.has_dictionaries(ds):
            try:  # skip what statistics rule out; the executor filters exactly, on dictionaries
                ds, pushdown, applied = storage_dictionary.prune(ds, pushdown), None, False
            except (OSError, pa.ArrowException):
                pass  # the scan itself reports it, with the catalog's location
        executor = ArrowExecutor(plan, request, keys, threads=self.settings.mask_threads,
                                 row_filter_applied=applied, filter_exact=filter_exact)
        scanned = scan_columns(plan, request)
        if client_filter is not None and all(c in ds.schema.names for c in scanned):
            # An ill-typed filter is the caller's mistake (400): found on an empty batch before
            # the scan binds it to storage, where it would read as a storage failure (503).
            executor.output_schema(pa.schema([ds.schema.field(c) for c in scanned]))
        hot = self.hot.table(ds) if ds is whole else None
        if hot is not None and client_filter is None and not dictionaries:
            masked = hot.derived(("masked", plan.hash), keys, lambda: self._masked(plan, hot, ds, entry.location))
            if masked is not None:
                stored = pa.schema([ds.schema.field(c) for c in scanned])
                return GovernedRead(plan, request, self._from_masked(masked, request, executor.output_schema(stored)))
        raw = storage_scan.scan(ds, scanned, pushdown,
                                self.settings.batch_size, location=entry.location, table=hot)
        return GovernedRead(plan, request, executor.reader(raw))

    def _masked(self, plan: AccessPlan, hot: HotTable, ds: Any, location: str) -> pa.Table:
        """Every row and visible column ``plan`` gives of a kept table, masked: what a read with
        no columns, filter or limit delivers. Kept with the table (:meth:`HotTable.derived`)
        under the plan's hash and this key ring, since a mask's output is a function of the
        row, the plan (its key id included) and the keys alone — the property masked
        materializations rest on too (govern.deliver.materialize). A read of some columns or
        the first rows is then a projection and a slice of it: every mask is row-local."""
        whole = resolve_request(plan, None, None, None)
        executor = ArrowExecutor(plan, whole, self.keys, threads=self.settings.mask_threads, row_filter_applied=True)
        raw = storage_scan.scan(ds, scan_columns(plan, whole), pushdown_filter(plan, whole),
                                self.settings.batch_size, location=location, table=hot)
        return executor.reader(raw).read_all()

    def _from_masked(self, masked: pa.Table, request: Request, schema: pa.Schema) -> pa.RecordBatchReader:
        """``request``'s columns and first ``limit`` rows of a plan's masked rows, in the schema
        (the engine's, :meth:`ArrowExecutor.output_schema`) and batches it would stream (no
        empty batch)."""
        rows = masked.select(list(request.columns))
        if request.limit is not None:
            rows = rows.slice(0, request.limit)
        if not rows.schema.equals(schema):
            rows = rows.cast(schema)
        batches = [b for b in rows.to_batches(max_chunksize=self.settings.batch_size) if b.num_rows]
        return pa.RecordBatchReader.from_batches(schema, iter(batches))

    def reidentify(self, principal: Principal, dataset: str, purpose: str, tokens: list[str],
                   state: PolicyState | None = None) -> Reidentification:
        """Reverse ``tokenize`` tokens of ``dataset``; needs the ``reidentify`` action.

        A token reverses only if its domain is used by a column of ``dataset`` that the caller's
        plan (compiled for ``reidentify``) tokenizes: tokens copied from another dataset's or
        column's domain are refused. Raises AccessDenied without the grant or when no column of
        ``dataset`` is tokenized for the caller, and MaskError for a token that does not verify
        in those domains (foreign, tampered, or made with an unknown key) — never garbage.
        """
        plan = self.plan(principal, dataset, purpose, action="reidentify", state=state)
        if len(tokens) > 10_000:
            raise LimitExceeded("at most 10,000 tokens per request", limit=10_000)
        domains = plan.token_domains()
        if not domains:
            raise AccessDenied(f"no column of dataset '{dataset}' is tokenized for '{principal.name}' under "
                               f"purpose '{purpose}': there are no tokens of it to reidentify")
        try:
            values, found = reverse_tokens(pa.array(tokens, pa.string()), self.keys, list(domains),
                                           scope=f"dataset '{dataset}'")
        except MaskError as exc:  # the caller's input: a foreign, tampered or unknown-key token
            raise InvalidRequest(exc.detail) from None
        return Reidentification(values.to_pylist(), found.to_pylist(), domains, plan)


@dataclass(frozen=True)
class Reidentification:
    """The values behind the tokens, in token order, and where each token came from, for the
    audit record:

    * ``domains[i]``: the token domain token ``i`` verified in (None for a null token);
    * ``columns``: each domain ``dataset`` accepts → its columns that use it (the reidentify scope);
    * ``plan``: the plan compiled for ``reidentify`` (its hash and policy version);
    * ``origins()``: per domain seen, the ``DATASET.COLUMN``s it stands for and how many tokens.
    """

    values: list[str | None]
    domains: list[str | None]
    columns: dict[str, tuple[str, ...]]
    plan: AccessPlan

    def origins(self) -> list[dict[str, Any]]:
        counts = Counter(d for d in self.domains if d is not None)
        return [{"domain": d, "columns": [f"{self.plan.dataset}.{c}" for c in self.columns[d]], "tokens": n}
                for d, n in counts.items()]


_PLANS_MAX = 4096


def _principal_key(principal: Principal) -> tuple[Any, ...]:
    """Everything about ``principal`` a plan may depend on, hashable."""
    attributes = json.dumps(dict(principal.attributes), sort_keys=True, default=repr)
    return (principal.name, principal.source, principal.roles, attributes)
