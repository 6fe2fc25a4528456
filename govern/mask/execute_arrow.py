"""Execute an access plan on a stream of Arrow record batches.

Memory is bounded: batches flow through a small window of in-flight work (``threads`` batches
masked in parallel; pyarrow kernels and the HMAC kernel release the GIL), so peak memory does
not grow with the dataset. Per batch, in this order:

1. row filters (unless the scan already applied them exactly);
2. masks, then cell rules (``CASE WHEN coalesce(when, true) THEN cell mask ELSE column``);
3. the caller's filter, on *masked* values — never on the raw values behind a mask (when it
   reads only columns kept as they are, raw and masked values coincide and, unless the scan
   applied it, it runs before step 2, so masks run on fewer rows);
4. projection to the requested columns, and the row limit.

A dictionary-encoded column stays encoded where that is exact: a mask that reads only the value
runs once per distinct value, a one-column predicate is evaluated once per distinct value.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from govern.errors import GovernError, MaskError, PredicateError, UnknownColumn
from govern.mask import registry
from govern.mask.function import MaskContext
from govern.mask.keys import KeyRing
from govern.mask.predicate_arrow import evaluate, to_expression
from govern.plan.model import AccessPlan, ColumnPlan
from govern.plan.predicates import Predicate


@dataclass(frozen=True)
class Request:
    """What the caller asked for, already validated against the plan."""

    columns: tuple[str, ...]  # output columns, in order
    filter: Predicate | None = None
    limit: int | None = None


def resolve_request(plan: AccessPlan, columns: list[str] | None, client_filter: Predicate | None,
                    limit: int | None) -> Request:
    """Check the caller's columns and filter against the plan (withheld = unknown)."""
    visible = plan.visible_names
    if columns:
        bad = [c for c in columns if c not in visible]
        if bad:
            raise UnknownColumn(f"unknown or withheld column(s): {', '.join(bad)}", columns=bad)
        out = tuple(dict.fromkeys(columns))
    else:
        out = tuple(visible)
    if client_filter is not None:
        bad = [c for c in client_filter.columns if c not in visible]
        if bad:
            raise UnknownColumn(f"filter refers to unknown or withheld column(s): {', '.join(bad)}", columns=bad)
    if limit is not None and limit < 0:
        raise UnknownColumn("limit must be non-negative")
    return Request(out, client_filter, limit)


def scan_columns(plan: AccessPlan, request: Request) -> list[str]:
    """Raw columns the scan must read for this request (and nothing else)."""
    computed = list(request.columns)
    if request.filter is not None:
        computed += [c for c in request.filter.columns if c not in computed]
    needed = plan.raw_columns_needed(computed)
    for name in computed:
        col = plan.column(name)
        if col.mask is not None:
            fn = registry.get(col.mask.function)
            needed += [c for c in fn.inputs(col.mask.kwargs, plan.privacy_unit) if c not in needed]
        for rule in plan.cell_rules:
            if rule.column == name:
                fn = registry.get(rule.mask.function)
                needed += [c for c in fn.inputs(rule.mask.kwargs, plan.privacy_unit) if c not in needed]
    return list(dict.fromkeys(needed))


def on_raw_values(plan: AccessPlan, request: Request) -> bool:
    """Whether the caller's filter reads only columns kept unmasked with no cell rule: raw and
    masked values coincide in every row, so it may run before masking (or in the scan)."""
    if request.filter is None:
        return False
    cell_ruled = {r.column for r in plan.cell_rules}
    return all(plan.column(c).action == "keep" and c not in cell_ruled for c in request.filter.columns)


def pushdown_filter(plan: AccessPlan, request: Request) -> pc.Expression | None:
    """The filter the scan may apply on raw data: row filters, plus the caller's filter when
    every column it names is kept unmasked with no cell rule (so raw and masked values coincide
    in every row)."""
    parts = [to_expression(rf.predicate) for rf in plan.row_filters]
    if on_raw_values(plan, request):
        assert request.filter is not None
        parts.append(to_expression(request.filter.sql))
    if not parts:
        return None
    expr = parts[0]
    for p in parts[1:]:
        expr = pc.and_kleene(expr, p)
    return expr


class ArrowExecutor:
    """Applies one plan to batches. Stateless apart from its keys and a cache of predicate
    answers per dictionary's values (:func:`~govern.mask.predicate_arrow.evaluate`); safe to
    share."""

    def __init__(self, plan: AccessPlan, request: Request, keys: KeyRing, *, threads: int = 1,
                 row_filter_applied: bool = False, filter_exact: bool = True) -> None:
        """``filter_exact=False``: the consumer filters again, so the caller's filter runs only
        where it spares work (before masks, on raw-equal columns, when there are masks to
        spare); rows it rejects may be delivered. Row filters always run exactly."""
        self.plan = plan
        self.request = request
        self.keys = keys
        self.threads = max(1, threads)
        self.row_filter_applied = row_filter_applied
        self._computed = list(request.columns) + [
            c for c in (request.filter.columns if request.filter else ()) if c not in request.columns
        ]
        self._cell_rules = {c: [r for r in plan.cell_rules if r.column == c] for c in self._computed}
        # When the scan did not filter, a filter on raw-equal values runs before the masks do,
        # so they mask only the rows that pass.
        self._early_filter = not row_filter_applied and on_raw_values(plan, request) and (
            filter_exact or any(plan.column(c).mask is not None or self._cell_rules[c] for c in self._computed))
        self._late_filter = request.filter is not None and not self._early_filter and filter_exact
        # Columns read only for the row filters are dropped before filtering: less to copy.
        self._after_rows = set(scan_columns(dataclasses.replace(plan, row_filters=()), request))
        # Worth a thread pool only when a batch has masks, rules or filters to compute.
        self._has_work = (bool(plan.row_filters) and not row_filter_applied) or self._early_filter or \
            self._late_filter or any(plan.column(c).mask is not None or self._cell_rules[c] for c in self._computed)
        self._memo: dict[object, object] = {}  # predicates' answers per dictionary (predicate_arrow)
        # Every input row gives one output row (no filter runs here): a limit can cut the input
        # before the masks run, since every mask is row-local (each has a DuckDB twin).
        self._keeps_rows = not (plan.row_filters and not row_filter_applied) and \
            not self._early_filter and not self._late_filter

    # -- one batch ---------------------------------------------------------------------------
    def _mask_column(self, col: ColumnPlan, batch: pa.RecordBatch, kernel_threads: int,
                     cache: dict | None = None) -> pa.Array:
        raw = batch.column(col.name)
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        rules = self._cell_rules.get(col.name, ())
        if rules and pa.types.is_dictionary(raw.type):
            raw = raw.dictionary_decode()  # a cell rule picks, row by row, between two results
        out = raw
        if col.mask is not None:
            if pa.types.is_dictionary(raw.type) and self._value_only(col.mask.function, col.mask.kwargs):
                out = self._apply_to_dictionary(col.mask.function, col.mask.kwargs, raw, batch, kernel_threads)
            else:
                out = self._apply(col.mask.function, col.mask.kwargs, raw, batch, kernel_threads, cache)
        for rule in rules:
            cond = evaluate(rule.when, batch, self._memo)
            cond = pc.fill_null(cond, True)  # unknown means masked (fail closed)
            masked = self._apply(rule.mask.function, rule.mask.kwargs, raw, batch, kernel_threads, cache)
            out = pc.if_else(cond, masked, out)
        return out

    def _apply(self, function: str, params: dict, raw: pa.Array, batch: pa.RecordBatch, kernel_threads: int,
               cache: dict | None = None) -> pa.Array:
        fn = registry.get(function)
        fn.check_type(raw.type, params)
        inputs = {name: batch.column(name) for name in fn.inputs(params, self.plan.privacy_unit)}
        ctx = MaskContext(keys=self.keys, inputs=inputs, privacy_unit=self.plan.privacy_unit,
                                   threads=kernel_threads, cache={} if cache is None else cache)
        result = fn.arrow(raw, params, ctx)
        if len(result) != len(raw):
            raise MaskError(f"mask '{function}' changed the number of rows")
        return result

    def _value_only(self, function: str, params: dict) -> bool:
        """Whether the mask reads nothing but the value: no privacy unit or other column.

        Such a mask is a function of the value alone — its SQL form is an expression of that
        one column and must agree with the Arrow form row by row — so on a dictionary array it
        can run once per distinct value instead of once per row."""
        return not registry.get(function).inputs(params, self.plan.privacy_unit)

    def _apply_to_dictionary(self, function: str, params: dict, raw: pa.DictionaryArray, batch: pa.RecordBatch,
                             kernel_threads: int) -> pa.Array:
        registry.get(function).check_type(raw.type, params)
        values = self._apply(function, params, raw.dictionary, batch.slice(0, 0), kernel_threads)
        if values.null_count:  # the value became null (the `null` mask): no dictionary to keep
            return values.take(raw.indices)
        return pa.DictionaryArray.from_arrays(raw.indices, values)

    def transform(self, batch: pa.RecordBatch, kernel_threads: int = 1) -> pa.RecordBatch:
        if self.plan.row_filters and not self.row_filter_applied:
            keep: pa.Array | None = None
            for rf in self.plan.row_filters:
                truth = evaluate(rf.predicate, batch, self._memo)
                keep = truth if keep is None else pc.and_kleene(keep, truth)
            batch = batch.select([n for n in batch.schema.names if n in self._after_rows])
            batch = batch.filter(keep, null_selection_behavior="drop")
        if self._early_filter:
            assert self.request.filter is not None
            batch = batch.filter(self._client_filter(batch), null_selection_behavior="drop")
        cache: dict = {}  # shared by the masks of this batch only (MaskContext.cache)
        arrays = [self._mask_column(self.plan.column(name), batch, kernel_threads, cache) for name in self._computed]
        masked = pa.RecordBatch.from_arrays(arrays, names=self._computed)
        if self._late_filter:
            assert self.request.filter is not None
            masked = masked.filter(self._client_filter(masked), null_selection_behavior="drop")
        if len(self._computed) != len(self.request.columns):
            masked = masked.select(list(self.request.columns))
        return masked

    def _client_filter(self, batch: pa.RecordBatch) -> pa.Array:
        """The caller's filter on ``batch``; a filter that is not boolean or compares values of
        different types is the caller's mistake (PredicateError, 400), found on the empty batch
        of :meth:`output_schema` before any row is read."""
        assert self.request.filter is not None
        try:
            return evaluate(self.request.filter.sql, batch, self._memo)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            # On an empty batch the message names types and the caller's own literals; on data
            # it may quote a stored value, so only its kind is told.
            why = str(exc).splitlines()[0] if batch.num_rows == 0 else f"it fails on the data ({type(exc).__name__})"
            raise PredicateError(f"invalid filter: {why}") from None

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """The schema of the masked stream, found by masking an empty batch (which also checks
        the caller's filter). Remembered per (plan hash, request, input schema): the answer
        depends on nothing else, and small reads would otherwise pay for it every time."""
        key = (self.plan.hash, self.request, input_schema)
        found = _SCHEMAS.get(key)
        if found is None:
            empty = pa.RecordBatch.from_pylist([], schema=input_schema)
            found = self.transform(empty).schema
            if len(_SCHEMAS) >= _SCHEMAS_MAX:
                _SCHEMAS.clear()
            _SCHEMAS[key] = found
        return found

    # -- a stream ------------------------------------------------------------------------------
    def batches(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        remaining = self.request.limit
        if remaining == 0:
            return
        source: Iterable[pa.RecordBatch] = reader
        if remaining is not None and self._keeps_rows:
            source = _head(reader, remaining)  # rows past the limit are neither read on nor masked
        if self.threads == 1 or not self._has_work:
            stream: Iterator[pa.RecordBatch] = (self.transform(b, 1) for b in source)
        else:
            stream = self._parallel(source)
        for out in stream:
            if remaining is not None:
                if out.num_rows >= remaining:
                    yield out.slice(0, remaining)
                    return
                remaining -= out.num_rows
            if out.num_rows:
                yield out

    def _parallel(self, reader: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = iter(reader)
        first = next(batches, None)
        if first is None:
            return
        second = next(batches, None)
        if second is None:  # one batch (a small table): no pool to start, kernels use the threads
            yield self.transform(first, self.threads)
            return
        window: deque[Future[pa.RecordBatch]] = deque()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="govern-mask") as pool:
            try:
                for batch in itertools.chain([first, second], batches):
                    window.append(pool.submit(self.transform, batch, 1))
                    if len(window) >= self.threads + 1:
                        yield window.popleft().result()
                while window:
                    yield window.popleft().result()
            finally:
                for f in window:
                    f.cancel()

    def reader(self, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        schema = self.output_schema(reader.schema)
        return pa.RecordBatchReader.from_batches(schema, self._checked(self.batches(reader), schema))

    @staticmethod
    def _checked(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """Every batch has the plan's schema; an Arrow failure midway becomes a MaskError."""
        try:
            for b in batches:
                if not b.schema.equals(schema):
                    b = b.cast(schema)
                yield b
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            # The Arrow message may quote a raw value: keep it out of the error and the audit.
            raise MaskError(f"masking failed ({type(exc).__name__})") from None


_SCHEMAS: dict[tuple[str, Request, pa.Schema], pa.Schema] = {}
_SCHEMAS_MAX = 4096


def _head(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The first ``rows`` rows of ``batches``; stops pulling once they are there."""
    for b in batches:
        if b.num_rows >= rows:
            yield b.slice(0, rows)
            return
        rows -= b.num_rows
        yield b


def execute(plan: AccessPlan, reader: pa.RecordBatchReader, keys: KeyRing, *,
            columns: list[str] | None = None, client_filter: Predicate | None = None,
            limit: int | None = None, threads: int = 1, row_filter_applied: bool = False) -> pa.RecordBatchReader:
    """Apply ``plan`` to ``reader`` and return a masked stream (fails closed on any error)."""
    request = resolve_request(plan, columns, client_filter, limit)
    try:
        return ArrowExecutor(plan, request, keys, threads=threads,
                             row_filter_applied=row_filter_applied).reader(reader)
    except GovernError:
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise MaskError(f"masking failed ({type(exc).__name__})") from None


def mask_batches(plan: AccessPlan, batches: Iterable[pa.RecordBatch], keys: KeyRing, *,
                 schema: pa.Schema | None = None, columns: list[str] | None = None,
                 threads: int = 1) -> Iterator[pa.RecordBatch]:
    """``plan`` applied to raw record batches: row filters, then every mask — the gateway's
    bytes, batch by batch, with bounded memory.

    The one engine function a distributed framework builds on (a Ray ``map_batches`` or a Dask
    ``map_partitions`` over raw files, on *trusted* workers that hold the keys — like Spark's
    Tier 2): each worker calls it on its own partition's batches. Masks are functions of a row's
    values and the keys, never of its position, so any split gives the same rows. ``schema``:
    the raw batches' schema (needed when ``batches`` may be empty; else the first batch's). A
    batch of another schema, or a failure midway, raises and yields nothing more (fail closed)."""
    it = iter(batches)
    first = next(it, None)
    if first is None and schema is None:
        raise ValueError("mask_batches: pass schema= when the batches may be empty")
    raw_schema = schema if schema is not None else first.schema  # type: ignore[union-attr]

    def raw() -> Iterator[pa.RecordBatch]:
        for b in itertools.chain([first] if first is not None else [], it):
            if not b.schema.equals(raw_schema):
                raise MaskError("mask_batches: a batch's schema differs from the others")
            yield b

    yield from execute(plan, pa.RecordBatchReader.from_batches(raw_schema, raw()), keys, columns=columns,
                       threads=threads)
