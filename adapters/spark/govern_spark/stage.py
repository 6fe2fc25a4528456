"""The ``mapInArrow`` stage: govern's own Arrow execution, run on the executors.

What Spark cannot compute exactly (keyed masks, RE2 patterns, predicates whose semantics differ)
is computed here, per Arrow record batch, by the code the gateway runs: an
:class:`~govern.mask.execute_arrow.ArrowExecutor` over the plan — its row filters, when they are
assigned here (then all of them, on every row, before any mask: as the gateway does), and the
masks and cell rules of the columns assigned here. The bytes are the gateway's by construction.

Every output is a function of the raw input columns of its row only; the stage passes through
the raw columns that Spark's own expressions need, so the final projection reads raw inputs
and this stage's results side by side (one projection, no mask reads another's output).

The stage is pickled into the Spark plan: it holds the plan (plain data, also in every audit
record), column names and a :class:`~govern_spark.keys.KeySource` — a location, never key bytes.
Keys are read on the executor, once per partition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from govern.errors import GovernError, MaskError
from govern.mask.execute_arrow import ArrowExecutor, Request
from govern.mask.keys import KeyRing
from govern.mask.predicate_arrow import evaluate
from govern.plan.model import AccessPlan
from govern_spark.keys import KeySource
from govern_spark.types import arrow_type

__all__ = ["ArrowStage"]


@dataclass(frozen=True)
class ArrowStage:
    """``mapInArrow`` function. Input columns arrive under Spark-safe names (``inputs`` maps
    each to its plan name). With ``row_filters``, rows the plan's row filters reject are dropped
    first. Outputs are ``passthrough`` (raw, unchanged), then each of ``columns`` (masked by the
    plan)."""

    plan: AccessPlan
    inputs: tuple[tuple[str, str], ...]  # (safe name, plan name)
    passthrough: tuple[str, ...]  # safe names
    columns: tuple[tuple[str, str], ...]  # (output name, plan column)
    row_filters: bool
    output: pa.Schema
    keys: KeySource | None = None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        keys = self.keys.load() if self.keys is not None else _unkeyed()
        plan = self.plan if self.row_filters else dataclasses.replace(self.plan, row_filters=())
        executor = ArrowExecutor(plan, Request(tuple(c for _, c in self.columns)), keys,
                                 row_filter_applied=True)
        filters = [rf.predicate for rf in self.plan.row_filters] if self.row_filters else []
        names = dict(self.inputs)
        # Spark's Arrow form of a raw column may differ from the type in storage (the zone of an
        # instant, date64, a timestamp unit, large_string): restore the plan's type first, so
        # govern's code sees exactly what the gateway sees (a zone decides year() and more).
        types = {n: arrow_type(self.plan.column(n).type) for n in names.values()}
        for batch in batches:
            plan_names = [names[n] for n in batch.schema.names]
            raw = pa.RecordBatch.from_arrays(
                [a if a.type == types[n] else a.cast(types[n]) for a, n in zip(batch.columns, plan_names, strict=True)],
                names=plan_names)
            try:
                if filters:  # every row filter on every row, then masks on the rows kept
                    keep = evaluate(filters[0], raw)
                    for sql in filters[1:]:
                        keep = pc.and_kleene(keep, evaluate(sql, raw))
                    raw = raw.filter(keep, null_selection_behavior="drop")
                    batch = batch.filter(keep, null_selection_behavior="drop")
                arrays = [batch.column(n) for n in self.passthrough]
                if self.columns:
                    masked = executor.transform(raw)
                    arrays += [masked.column(c) for _, c in self.columns]
                yield pa.RecordBatch.from_arrays(
                    [a.cast(f.type) if a.type != f.type else a for a, f in zip(arrays, self.output, strict=True)],
                    schema=self.output)
            except GovernError:
                raise
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                # the Arrow message may quote a raw value: keep it out of Spark's logs
                raise MaskError(f"masking failed ({type(exc).__name__})") from None


def _unkeyed() -> KeyRing:
    """A throwaway ring for a stage whose masks read no key (the compiler checks which)."""
    return KeyRing.ephemeral("unkeyed")
