"""Analyst SQL over masked views, with no path to raw data.

The pipeline, one pass per module::

    validate  one read-only query; no catalogs, files, settings or escape functions
    resolve   table names → datasets the caller may read; one sandbox view per reference
    prune     columns each reference uses; WHERE conjuncts pushed into the governed read
    sandbox   a fresh, locked DuckDB connection holding only masked streams
    diagnose  DuckDB errors → govern errors that cannot echo data

The raw relation is never inside DuckDB. For each dataset reference the engine calls
``Governor.read(principal, dataset, purpose, columns=…, filter=…)`` — the same governed read
as ``GET /v1/datasets/{name}/rows`` — and registers the *masked* stream it returns. Whatever
the query does to a column (wrap it in ``md5``, ``substr``, join or group on it), it only
ever sees masked values.

What keeps it fast (docs/performance.md, "Analyst SQL"): the read scans only the columns and
row groups the query needs and filters before masking (``prune``); it asks for
``dictionaries=True``, so low-cardinality strings stay dictionary-encoded from the Parquet page
to DuckDB and value-only masks run once per distinct value; and the gateway's
:class:`~govern.sql.sandbox.SandboxPool` opens each query's DuckDB database ahead of time.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
from sqlglot import exp

from govern.config import Settings
from govern.deliver.governor import Governor, PolicyState
from govern.errors import GovernError, LimitExceeded, QueryTimeout, SqlError
from govern.identity.principal import Principal
from govern.mask.execute_arrow import ArrowExecutor, resolve_request, scan_columns
from govern.mask.kanonymity import kanonymize
from govern.plan.compile import authorize_purpose
from govern.plan.model import AccessPlan
from govern.sql import prune as prune_reads
from govern.sql import resolve
from govern.sql import results as result_policies
from govern.sql.diagnose import Rescan, diagnose
from govern.sql.resolve import Reference
from govern.sql.sandbox import Sandbox, SandboxPool
from govern.sql.validate import Statement, validate
from govern.sql.view_cache import ViewCache
from govern.storage import scan as storage_scan

__all__ = ["SqlEngine", "SqlResult"]

PARAMETER_TYPES = (str, int, float, bool, type(None), _dt.date, _dt.datetime, _dt.time, Decimal, bytes)


@dataclass
class SqlResult:
    schema: pa.Schema
    reader: pa.RecordBatchReader  # streaming result batches
    datasets: list[str]  # datasets the query read
    plans: dict[str, str]  # dataset -> plan hash (for audit)
    columns: dict[str, list[str]] = field(default_factory=dict)  # dataset -> masked columns read
    access_plans: dict[str, AccessPlan] = field(default_factory=dict, repr=False)  # dataset -> plan
    cached: list[str] = field(default_factory=list)  # datasets served from the view cache
    suppressed_groups: int | None = None  # groups folded or refused by a min_group policy (None: none applies)
    _sandbox: Sandbox | None = field(default=None, repr=False)
    _on_close: Callable[[], None] | None = field(default=None, repr=False)  # e.g. free a worker process

    def close(self) -> None:
        """Stop the query (interrupting it if it still runs) and release its DuckDB database
        (at once, or soon after in the sandbox pool's thread) — or, for a query run in a
        worker process (:mod:`govern.sql.isolation`), stop the worker's query and free it."""
        if self._sandbox is not None:
            self._sandbox.close()
        if self._on_close is not None:
            self._on_close()


@dataclass
class _Prepared:
    statement: Statement
    refs: list[Reference]
    plans: dict[str, AccessPlan]
    schemas: dict[str, pa.Schema]
    sql: str  # what the sandbox runs
    params: list[Any]
    state: PolicyState
    purpose: str
    pruned: bool  # references read only the columns sqlglot found them to use
    guard: result_policies.Guard = field(default_factory=result_policies.Guard)  # result policies

    @property
    def datasets(self) -> dict[int, str]:
        return {r.index: r.dataset for r in self.refs}


class SqlEngine:
    """Runs analyst SQL for a gateway. ``sandboxes`` (the gateway's pool) opens sandboxes ahead
    of queries; without it each query opens its own, on its critical path."""

    def __init__(self, governor: Governor, settings: Settings, sandboxes: SandboxPool | None = None,
                 cache: ViewCache | None = None) -> None:
        self.governor = governor
        self.settings = settings
        self.sandboxes = sandboxes
        self.cache = cache if cache is not None and cache.enabled else None

    # -- public ------------------------------------------------------------------------------
    def tables(self, principal: Principal, purpose: str) -> dict[str, pa.Schema]:
        """Masked schemas of the datasets ``principal`` may read under ``purpose``."""
        state = self.governor.state
        out: dict[str, pa.Schema] = {}
        for name in sorted(set(self._readable(principal, purpose, state).values())):
            try:
                plan = self.governor.plan(principal, name, purpose, state=state)
                out[name] = self._masked_schema(plan, state)
            except GovernError:
                continue  # a dataset whose plan fails is not offered (fail closed)
        return out

    def describe(self, principal: Principal, purpose: str, sql: str, params: list | None = None, *,
                 deadline: float | None = None) -> pa.Schema:
        """The result schema of ``sql``, computed over empty views: no data is read.

        Parameters without values are bound as NULL (their expressions may then type as
        INTEGER or NULL); pass the values to get the exact types. ``deadline``: as for :meth:`run`.
        """
        clock = _Clock.of(deadline, self.settings.sql_timeout)
        prepared = self._prepare(principal, purpose, sql, params, require_params=False)
        clock.check()
        values = prepared.params or [None] * prepared.statement.parameters
        sandbox = self._sandbox(clock)
        try:
            for ref in prepared.refs:
                schema = pa.schema([prepared.schemas[ref.dataset].field(c) for c in ref.columns])
                sandbox.register_table(ref.view, schema.empty_table())
            relation = sandbox.query(prepared.sql, values)
            names = list(relation.columns)
            schema = relation.limit(0).to_arrow_table().schema
            fields = [f.with_name(n) for f, n in zip(schema, names, strict=True)]
            if prepared.guard.min_group is not None:  # the hidden group counts are not part of the answer
                fields = fields[:prepared.guard.min_group.outputs]
            return pa.schema(fields)
        except BaseException as exc:
            error = self._error(exc, prepared, sandbox)
            raise (error if isinstance(error, GovernError) else SqlError("the query failed")) from None
        finally:
            sandbox.close()

    def run(self, principal: Principal, purpose: str, sql: str, params: list | None = None, *,
            deadline: float | None = None) -> SqlResult:
        """Run ``sql`` over masked views; the first batch is computed before this returns, so
        errors that happen before any row exists (most) are raised here.

        ``deadline`` (``time.monotonic()`` based; default: ``sql_timeout`` from now) covers the
        whole query: checked after parsing and validating, then DuckDB is interrupted when it
        passes. Work stuck in Python (a parse) cannot be interrupted in-process: the worker
        processes of :class:`govern.sql.isolation.SqlService` are killed at the deadline."""
        clock = _Clock.of(deadline, self.settings.sql_timeout)
        prepared = self._prepare(principal, purpose, sql, params, require_params=True)
        clock.check()
        try:
            return self._execute_streaming_first(principal, purpose, prepared, clock)
        except SqlError as exc:
            if not (prepared.pruned and _misses_visible_column(exc, prepared)):
                raise
        # sqlglot's reading of the query missed a column DuckDB needs: read every visible column
        prepared = self._prepare(principal, purpose, sql, params, require_params=True, prune=False)
        clock.check()
        return self._execute_streaming_first(principal, purpose, prepared, clock)

    def _execute_streaming_first(self, principal: Principal, purpose: str, prepared: _Prepared,
                                 clock: _Clock) -> SqlResult:
        try:
            return self._execute(principal, purpose, prepared, clock, materialize_all=False)
        except Rescan:  # DuckDB scanned a stream twice in a way the planner did not foresee
            clock.check()
            return self._execute(principal, purpose, prepared, clock, materialize_all=True)

    # -- preparing -----------------------------------------------------------------------------
    def _prepare(self, principal: Principal, purpose: str, sql: str, params: Sequence[Any] | None, *,
                 require_params: bool, prune: bool = True) -> _Prepared:
        try:
            return self._prepare_checked(principal, purpose, sql, params, require_params=require_params,
                                         prune=prune)
        except RecursionError:  # sqlglot parses and generates recursively
            raise SqlError("the query is nested too deeply", sqlstate="54001") from None

    def _prepare_checked(self, principal: Principal, purpose: str, sql: str, params: Sequence[Any] | None, *,
                         require_params: bool, prune: bool) -> _Prepared:
        statement = validate(sql, max_length=self.settings.sql_max_length)
        values = _check_params(statement, params, required=require_params)
        state = self.governor.state
        readable = self._readable(principal, purpose, state)
        refs = resolve.bind(statement, readable, purpose)
        plans: dict[str, AccessPlan] = {}
        schemas: dict[str, pa.Schema] = {}
        for ref in refs:
            if ref.dataset not in plans:
                plans[ref.dataset] = self.governor.plan(principal, ref.dataset, purpose, state=state)
                schemas[ref.dataset] = self._masked_schema(plans[ref.dataset], state)
        usage = prune_reads.analyze(statement.tree, refs, schemas, values) if prune else None
        for ref in refs:
            visible = [f.name for f in schemas[ref.dataset]]
            if usage is None:
                ref.columns = visible
                continue
            ref.columns = usage.columns.get(ref.index) or [_cheapest(plans[ref.dataset], schemas[ref.dataset])]
            filters = usage.filters.get(ref.index)
            ref.filter = " AND ".join(f"({f})" for f in filters) if filters else None
        guard = result_policies.guard(statement, refs, plans)
        for ref in refs:
            if ref.index in guard.k_anonymity:  # classes are counted over every visible column
                ref.columns = [f.name for f in schemas[ref.dataset]]
        text = resolve.rewrite(statement, refs)
        if guard.min_group is not None:
            assert isinstance(statement.tree, exp.Select)  # check_aggregate insisted
            guard.min_group = result_policies.rewrite(guard.min_group, statement.tree, refs, values, refs[0].view)
        return _Prepared(statement, refs, plans, schemas, text, values, state, purpose, usage is not None, guard)

    def _readable(self, principal: Principal, purpose: str, state: PolicyState) -> dict[str, str]:
        """Lower-case name → dataset, for datasets readable under ``purpose``."""
        authorize_purpose(state.decider, principal, purpose)
        out: dict[str, str] = {}
        for name in sorted(state.policy.datasets):
            if state.decider.decide(principal, f"dataset:{name}", "read", purpose).allowed:
                out.setdefault(name.lower(), name)
        return out

    def _masked_schema(self, plan: AccessPlan, state: PolicyState) -> pa.Schema:
        """The schema of the masked view, as the governed read produces it (no data read)."""
        request = resolve_request(plan, None, None, None)
        raw = self.governor.schema(plan.dataset, state)
        inputs = pa.schema([raw.field(c) for c in scan_columns(plan, request)])
        executor = ArrowExecutor(plan, request, self.governor.keys, threads=1, row_filter_applied=True)
        return executor.output_schema(inputs)

    # -- running -------------------------------------------------------------------------------
    def _sandbox(self, clock: _Clock) -> Sandbox:
        s = self.settings
        if self.sandboxes is not None:
            sandbox = self.sandboxes.take(clock.remaining())
        else:
            sandbox = Sandbox(memory_limit=s.sql_memory_limit, threads=s.sql_threads, timeout=clock.remaining())
        sandbox.timeout = clock.total  # what a timeout reports: the query's whole time limit
        return sandbox

    def _execute(self, principal: Principal, purpose: str, prepared: _Prepared, clock: _Clock, *,
                 materialize_all: bool) -> SqlResult:
        sandbox = self._sandbox(clock)
        max_rows = self.settings.max_rows
        try:
            cached: list[str] = []
            with sandbox.busy:
                for ref in prepared.refs:
                    if self._register(sandbox, principal, purpose, prepared, ref, materialize_all or ref.materialize):
                        cached.append(ref.dataset)
                suppressed: int | None = None
                if prepared.guard.min_group is not None:
                    table, suppressed = self._min_group(sandbox, prepared, prepared.guard.min_group)
                    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(self.settings.batch_size))
                else:
                    relation = sandbox.query(prepared.sql, prepared.params)
                    reader = relation.to_arrow_reader(self.settings.batch_size)
                try:
                    first: pa.RecordBatch | None = reader.read_next_batch()
                except StopIteration:
                    first = None
            if first is not None and first.num_rows > max_rows:
                raise _too_many(max_rows)
        except BaseException as exc:
            sandbox.close()
            error = self._error(exc, prepared, sandbox)
            if isinstance(error, Rescan) and materialize_all:
                error = SqlError("the query reads a dataset more often than the engine can stream it",
                                 sqlstate="0A000")
            raise error from None
        columns: dict[str, list[str]] = {}
        for ref in prepared.refs:
            seen = columns.setdefault(ref.dataset, [])
            seen.extend(c for c in ref.columns if c not in seen)
        return SqlResult(
            schema=reader.schema,
            reader=pa.RecordBatchReader.from_batches(
                reader.schema, self._stream(first, reader, prepared, sandbox, max_rows)),
            datasets=sorted(prepared.plans),
            plans={name: plan.hash for name, plan in sorted(prepared.plans.items())},
            columns=columns,
            access_plans=dict(sorted(prepared.plans.items())),
            cached=sorted(set(cached)),
            suppressed_groups=suppressed,
            _sandbox=sandbox,
        )

    def _min_group(self, sandbox: Sandbox, prepared: _Prepared,
                   query: result_policies.MinGroupQuery) -> tuple[pa.Table, int]:
        """The analyst's groups with those under ``min_group`` folded (or refused); the answer
        carries the number in its schema metadata (``govern.suppressed_groups``)."""
        groups = sandbox.query(query.groups_sql, None).to_arrow_table()
        if groups.num_rows > self.settings.max_rows:
            raise _too_many(self.settings.max_rows)

        def run(sql: str) -> pa.Table:
            return sandbox.query(sql, None).to_arrow_table()

        done = result_policies.suppress(query, groups, run, sandbox.register_table)
        meta = {b"govern.suppressed_groups": str(done.suppressed_groups).encode()}
        return done.table.replace_schema_metadata(meta), done.suppressed_groups

    def _register(self, sandbox: Sandbox, principal: Principal, purpose: str, prepared: _Prepared,
                  ref: Reference, materialize: bool) -> bool:
        """Register ``ref``'s masked view in the sandbox; ``True`` when it came from the cache."""
        max_rows = self.settings.max_rows
        cache, key = self.cache, self._cache_key(prepared, ref)
        if cache is not None and key is not None:
            hit = cache.get(key)
            if hit is not None:  # the whole view; a pushed-down filter is still in the query
                sandbox.register_table(ref.view, hit)
                return True
        # what this read may store: the whole view only, never a filtered part of it
        store = cache if key is not None and ref.filter is None else None
        governed = self.governor.read(principal, ref.dataset, purpose, columns=list(ref.columns),
                                      filter=ref.filter, limit=max_rows + 1 if materialize else None,
                                      state=prepared.state, dictionaries=True,
                                      # the conjuncts stay in the query: DuckDB applies them again
                                      # (a materialized read counts its rows: filter exactly)
                                      filter_exact=materialize)
        if not materialize:
            reader = governed.reader
            if store is not None and key is not None:
                reader = store.filling(key, reader, max_rows)
            sandbox.register_stream(ref.view, reader)
            return False
        table = governed.reader.read_all()
        spec = prepared.guard.k_anonymity.get(ref.index)
        if spec is not None:  # generalize and suppress the whole view before the query sees it
            table, _dropped = kanonymize(table, spec)
        if table.num_rows > max_rows:
            raise LimitExceeded(f"dataset '{ref.dataset}' is used more than once (or recursively) and has more "
                                f"than {max_rows} matching rows; filter it in a CTE used once", limit=max_rows)
        if sandbox.expired():
            raise QueryTimeout(f"the query ran longer than {sandbox.timeout:g} s and was stopped",
                               limit=sandbox.timeout, sqlstate="57014")
        if store is not None and key is not None:
            store.put(key, table)
        sandbox.register_table(ref.view, table)
        return False

    def _cache_key(self, prepared: _Prepared, ref: Reference) -> tuple[Hashable, ...] | None:
        """The view cache's key for ``ref``'s whole view (view_cache module docstring), or
        ``None`` without a cache. A reference with a pushed-down filter may be served a cached
        whole view — the filter stays in the query, so DuckDB applies it
        (:mod:`govern.sql.prune`) — but its own read is never stored. The data version is the
        location's listing, the one ``Governor.dataset`` reopens on."""
        if self.cache is None or prepared.guard.active:
            return None  # a view under a result policy is recomputed for every query
        try:
            files = storage_scan.fingerprint(prepared.state.policy.datasets[ref.dataset].location, self.settings)
        except GovernError:
            return None  # the read itself reports the problem
        return (prepared.plans[ref.dataset].hash, tuple(ref.columns), files)

    def _stream(self, first: pa.RecordBatch | None, reader: pa.RecordBatchReader, prepared: _Prepared,
                sandbox: Sandbox, max_rows: int) -> Iterator[pa.RecordBatch]:
        rows = 0
        try:
            for batch in itertools.chain([first] if first is not None else [], _fetch(reader, sandbox)):
                rows += batch.num_rows
                if rows > max_rows:
                    raise _too_many(max_rows)
                if batch.num_rows:
                    yield batch
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = self._error(exc, prepared, sandbox)
            raise (error if isinstance(error, GovernError) else SqlError("the query failed")) from None
        finally:
            sandbox.close()

    def _error(self, exc: BaseException, prepared: _Prepared, sandbox: Sandbox) -> GovernError | Rescan:
        if isinstance(exc, GovernError):
            return exc
        if sandbox.source_errors:  # the governed read failed: report that, not DuckDB's wrapper
            return sandbox.source_errors[0] if isinstance(sandbox.source_errors[0], GovernError) else \
                SqlError("reading a masked view failed")
        return diagnose(exc, text=prepared.statement.text, datasets=prepared.datasets,
                        purpose=prepared.purpose, timed_out=sandbox.timed_out,
                        timeout=sandbox.timeout, memory_limit=self.settings.sql_memory_limit)


@dataclass(frozen=True)
class _Clock:
    """One query's deadline (``time.monotonic()``) and the time limit it stands for."""

    deadline: float
    total: float

    @classmethod
    def of(cls, deadline: float | None, timeout: float) -> _Clock:
        """A deadline stands for ``timeout`` (``sql_timeout``: what a timeout reports), however
        much of it is left when the engine starts (the request may have waited for a worker)."""
        now = time.monotonic()
        if deadline is None:
            return cls(now + timeout, timeout)
        return cls(deadline, timeout)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        if time.monotonic() >= self.deadline:
            raise QueryTimeout(f"the query ran longer than {self.total:g} s and was stopped",
                               limit=self.total, sqlstate="57014")


def _fetch(reader: pa.RecordBatchReader, sandbox: Sandbox) -> Iterator[pa.RecordBatch]:
    while True:
        with sandbox.busy:
            if sandbox.closed:
                raise SqlError("the query was cancelled", sqlstate="57014")
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
        yield batch


def _misses_visible_column(exc: SqlError, prepared: _Prepared) -> bool:
    missing = {str(c).lower() for c in exc.extra.get("columns") or ()}
    visible = {f.name.lower() for schema in prepared.schemas.values() for f in schema}
    return bool(missing & visible)


def _too_many(max_rows: int) -> LimitExceeded:
    return LimitExceeded(f"the result has more than {max_rows} rows; aggregate, filter or add a LIMIT",
                         limit=max_rows, sqlstate="54000")


def _cheapest(plan: AccessPlan, schema: pa.Schema) -> str:
    """A column to read when the query needs only row counts: an unmasked one (no mask to
    compute), of a fixed-width type if possible (no strings to copy)."""
    keep = {c.name for c in plan.columns if c.visible and c.action == "keep"}

    def cost(field: pa.Field) -> tuple[int, int]:
        fixed = pa.types.is_primitive(field.type) or pa.types.is_date(field.type)
        return (0 if field.name in keep else 1, 0 if fixed else 1)

    return min(schema, key=cost).name


def _check_params(statement: Statement, params: Sequence[Any] | None, *, required: bool) -> list[Any]:
    values = list(params or [])
    for i, value in enumerate(values, start=1):
        # a list (a PostgreSQL array parameter: ``x = ANY($1)``) holds scalars of those types
        if not isinstance(value, PARAMETER_TYPES) and not (
                isinstance(value, list) and all(isinstance(v, PARAMETER_TYPES) for v in value)):
            raise SqlError(f"parameter ${i} must be a string, number, boolean, date, time, null or a list of those",
                           sqlstate="22023")
    if values or required:
        if len(values) != statement.parameters:
            raise SqlError(f"the query has {statement.parameters} parameter(s) but {len(values)} value(s) "
                           "were given", sqlstate="08P01")
    return values
