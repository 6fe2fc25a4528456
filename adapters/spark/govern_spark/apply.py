"""Apply an access plan to a Spark DataFrame: the plan as Spark Column expressions (Tier 2).

The shape of the result, whatever the plan::

    df ─► select raw columns under positional names (c0, c1, …: no identifier is ever parsed)
       ─► filter: the row filters, when Spark computes every one of them exactly
       ─► mapInArrow: govern's Arrow execution for what Spark cannot compute exactly (if any):
          the row filters if one of them is not exact (all of them, on every row, as the
          gateway does), then the masks of the columns assigned there
       ─► ONE projection: every visible column from raw inputs and the stage's results

No expression reads another mask's output, so chained masks cannot depend on order, and every
column is referenced by a quoted positional name, so unusual identifiers cannot break a mask.
Which part of the plan runs where is decided by :func:`assign` (plain data, testable) and shown
by :func:`explain_assignment`.

This is *not* a security boundary against whoever runs the cluster: the raw data, the job and
(on the executors) the key source are theirs. It enforces the plan on trusted operator clusters
with the gateway's exact results; see adapters/spark/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from govern.errors import KeyMaterialError, PlanError, UnknownColumn
from govern.mask import registry
from govern.plan.model import AccessPlan, ColumnPlan, MaskSpec
from govern_spark import masks
from govern_spark.keys import KeySource
from govern_spark.predicates import NotExact, Scope, to_column
from govern_spark.stage import ArrowStage
from govern_spark.types import arrow_type, cast_to_plan, spark_type

__all__ = ["Assignment", "apply_plan", "assign", "explain_assignment", "to_arrow"]

# Masks that never read a key: a stage running only these needs no KeySource. Any other mask,
# including one registered by a third party, is taken to need keys (fail closed).
UNKEYED = frozenset({"null", "redact", "generalize", "email_domain", "show_first", "show_last", "regex_replace"})


@dataclass
class Assignment:
    """Where each part of a plan runs: Spark expressions or govern's Arrow stage."""

    columns: dict[str, Column | None] = field(default_factory=dict)  # None: the Arrow stage
    filters: list[tuple[str, Column | None]] = field(default_factory=list)  # (SQL, None: the stage)
    why: dict[str, str] = field(default_factory=dict)  # column or predicate → why the stage runs it

    @property
    def stage_columns(self) -> list[str]:
        return [c for c, e in self.columns.items() if e is None]

    @property
    def stage_filters(self) -> bool:
        """Whether the row filters run in the stage (all or none of them do)."""
        return any(e is None for _, e in self.filters)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _safe(i: int) -> str:
    return f"c{i}"


def raw_columns(plan: AccessPlan, output: list[str]) -> list[str]:
    """Raw columns needed to compute ``output``: predicates' columns and mask inputs included."""
    needed = plan.raw_columns_needed(output)
    for name in output:
        specs = [plan.column(name).mask] + [r.mask for r in plan.cell_rules if r.column == name]
        for spec in specs:
            if spec is not None:
                needed += registry.get(spec.function).inputs(spec.kwargs, plan.privacy_unit)
    return list(dict.fromkeys(needed))


def _check_pairs(plan: AccessPlan, output: list[str]) -> None:
    """Every (mask × type) pair is implemented or refused here, before Spark sees anything."""
    for name in output:
        col = plan.column(name)
        t = arrow_type(col.type)
        for spec in [col.mask] + [r.mask for r in plan.cell_rules if r.column == name]:
            if spec is not None:
                registry.get(spec.function).check_type(t, spec.kwargs)
        spark_type(t)
        if col.result_type is not None:
            spark_type(arrow_type(col.result_type))


def _column(col: ColumnPlan, plan: AccessPlan, scope: Scope) -> Column:
    """The visible column as one Spark expression over raw inputs (raises NotExact)."""
    raw_name, _ = scope.columns[col.name]
    raw = F.col(raw_name)
    t = arrow_type(col.type)

    def masked(spec: MaskSpec | None) -> Column:
        if spec is None:
            return raw
        return masks.to_column(spec.function, spec.kwargs, raw, t, scope.ansi)

    rules = [r for r in plan.cell_rules if r.column == col.name]
    if rules and any(masks.can_fail(s.function, t) for s in [col.mask, *(r.mask for r in rules)] if s is not None):
        # the gateway computes every branch on every row (and fails if one fails); Spark's CASE
        # computes only the branch it takes
        raise NotExact("a mask that can fail at run time, under a cell rule")
    out = masked(col.mask)
    # Arrow: for rule in order, out = if_else(coalesce(when, true), rule mask, out): the last
    # rule that holds wins, so the CASE lists them last first.
    if rules:
        case: Column | None = None
        for rule in reversed(rules):
            cond = F.coalesce(to_column(rule.when, scope), F.lit(True))  # unknown means masked
            value = masked(rule.mask)
            case = F.when(cond, value) if case is None else case.when(cond, value)
        assert case is not None
        out = case.otherwise(out)
    if col.result_type is not None:
        want = spark_type(arrow_type(col.result_type))
        out = out.cast(want)  # a no-op where the types already agree (e.g. NULL literals)
    return out


def assign(plan: AccessPlan, schema: Mapping[str, tuple[str, T.DataType]], ansi: bool,
           output: list[str] | None = None) -> Assignment:
    """Decide, for each visible column and row filter, Spark expression or Arrow stage."""
    scope = Scope(schema, ansi)
    result = Assignment()
    for sql in (rf.predicate for rf in plan.row_filters):
        try:
            result.filters.append((sql, to_column(sql, scope)))
        except NotExact as exc:
            result.filters.append((sql, None))
            result.why[sql] = str(exc)
    if result.stage_filters:  # all of them on every row, as the gateway does (errors included)
        for sql, _ in result.filters:
            result.why.setdefault(sql, "another row filter runs in the Arrow stage")
        result.filters = [(sql, None) for sql, _ in result.filters]
    for name in output if output is not None else plan.visible_names:
        try:
            result.columns[name] = _column(plan.column(name), plan, scope)
        except NotExact as exc:
            result.columns[name] = None
            result.why[name] = str(exc)
    return result


def explain_assignment(plan: AccessPlan, df: DataFrame) -> dict[str, str]:
    """Where each visible column and row filter of ``plan`` runs on ``df`` ("spark" or
    "arrow: <why>"), for docs, tests and a person deciding whether to trust the numbers."""
    schema = _raw_schema(plan, df, raw_columns(plan, plan.visible_names))
    a = assign(plan, {n: (_safe(i), t) for i, (n, t) in enumerate(schema.items())}, _ansi(df))
    out = {c: "spark" if e is not None else f"arrow: {a.why[c]}" for c, e in a.columns.items()}
    out.update({f"filter {sql}": "spark" if e is not None else f"arrow: {a.why[sql]}" for sql, e in a.filters})
    return out


def _ansi(df: DataFrame) -> bool:
    return str(df.sparkSession.conf.get("spark.sql.ansi.enabled")).lower() == "true"


def _raw_schema(plan: AccessPlan, df: DataFrame, needed: list[str]) -> dict[str, T.DataType]:
    """The raw columns ``needed``, checked against the plan: same names (case-sensitive) and the
    Spark type of the type the plan was compiled for. A column of ``df`` the plan does not know
    is schema drift: refused, as the gateway withholds unclassified columns."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    known = {c.name for c in plan.columns}
    drift = [n for n in fields if n not in known]
    if drift:
        raise PlanError(f"the DataFrame has column(s) the plan does not know: {', '.join(sorted(drift))}; "
                        "compile the plan against this data's schema")
    out: dict[str, T.DataType] = {}
    for name in needed:
        if name not in fields:
            raise UnknownColumn(f"the plan needs column '{name}', which the DataFrame lacks", columns=[name])
        want = spark_type(arrow_type(plan.column(name).type))
        if fields[name] != want:
            raise PlanError(f"column '{name}' is {fields[name].simpleString()} in Spark but the plan was "
                            f"compiled for {plan.column(name).type}")
        out[name] = fields[name]
    return out


def apply_plan(df: DataFrame, plan: AccessPlan, keys: KeySource | None = None, *,
               columns: list[str] | None = None) -> DataFrame:
    """``df`` (raw data) as ``plan`` lets its principal see it: row filters applied, every
    visible column masked exactly as the gateway's Arrow engine masks it.

    ``keys`` says where executors read the masking keys (needed when a keyed mask runs);
    ``columns`` selects visible columns (default: all, in plan order). Raises
    :class:`~govern.errors.MaskError` for a (mask × type) pair govern does not implement,
    :class:`~govern.errors.Unsupported` for a type Spark cannot hold exactly,
    :class:`~govern.errors.PlanError` when ``df`` is not the data the plan was compiled for.
    """
    visible = plan.visible_names
    output = list(dict.fromkeys(columns)) if columns else visible
    bad = [c for c in output if c not in visible]
    if bad:
        raise UnknownColumn(f"unknown or withheld column(s): {', '.join(bad)}", columns=bad)
    _check_pairs(plan, output)
    schema = _raw_schema(plan, df, raw_columns(plan, output))
    safe = {name: _safe(i) for i, name in enumerate(schema)}
    ansi = _ansi(df)
    a = assign(plan, {n: (safe[n], t) for n, t in schema.items()}, ansi, output)

    staged = df.select(*[F.col(_quote(n)).alias(safe[n]) for n in schema])
    for _, condition in a.filters:
        if condition is not None:
            staged = staged.where(condition)
    results: dict[str, Column] = {}
    if a.stage_columns or a.stage_filters:
        staged, results = _run_stage(staged, plan, a, schema, safe, keys)
    projection = [_pick(a.columns[n], results.get(n)).alias(n) for n in output]
    return staged.select(*projection)


def _pick(expression: Column | None, staged: Column | None) -> Column:
    """A column's Spark expression, or else the Arrow stage's result for it."""
    chosen = expression if expression is not None else staged
    if chosen is None:  # cannot happen: assign() gives every column one of the two
        raise PlanError("a column was assigned neither to Spark nor to the Arrow stage")
    return chosen


def _run_stage(staged: DataFrame, plan: AccessPlan, a: Assignment, schema: dict[str, T.DataType],
               safe: dict[str, str], keys: KeySource | None) -> tuple[DataFrame, dict[str, Column]]:
    stage_specs = [s for c in a.stage_columns for s in
                   [plan.column(c).mask] + [r.mask for r in plan.cell_rules if r.column == c] if s is not None]
    keyed = sorted({s.function for s in stage_specs} - UNKEYED)
    if keyed and keys is None:
        raise KeyMaterialError(f"mask(s) {', '.join(keyed)} need the masking keys: pass keys=KeySource(...)")
    if keyed and keys is not None and plan.key_id is not None and keys.key_id != plan.key_id:
        raise KeyMaterialError(f"the plan was compiled for masking key id {plan.key_id!r}, the key source's "
                               f"active id is {keys.key_id!r}")
    session_tz = str(staged.sparkSession.conf.get("spark.sql.session.timeZone"))
    needed_by_spark = set()
    for name, expr in a.columns.items():
        if expr is not None:
            needed_by_spark.update(raw_columns(plan, [name]))
    passthrough = [n for n in schema if n in needed_by_spark]
    fields = [T.StructField(safe[n], schema[n]) for n in passthrough]
    stage_cols = [(f"m{i}", c) for i, c in enumerate(a.stage_columns)]
    for out_name, c in stage_cols:
        fields.append(T.StructField(out_name, spark_type(arrow_type(plan.column(c).result_type or ""))))
    out_schema = T.StructType(fields)
    stage = ArrowStage(
        plan=plan, inputs=tuple((safe[n], n) for n in schema), passthrough=tuple(safe[n] for n in passthrough),
        columns=tuple(stage_cols), row_filters=a.stage_filters,
        output=to_arrow_schema(out_schema, timezone=session_tz),
        keys=keys if keyed else None)
    return staged.mapInArrow(stage, out_schema), {c: F.col(n) for n, c in stage_cols}


def to_arrow(df: DataFrame, plan: AccessPlan) -> pa.Table:
    """Collect a DataFrame made by :func:`apply_plan` as Arrow, with the plan's result types
    (Spark keeps no zone names or dictionary encodings; see :func:`~govern_spark.types.cast_to_plan`)."""
    types = {c.name: arrow_type(c.result_type) for c in plan.visible_columns if c.result_type is not None}
    return cast_to_plan(df.toArrow(), {n: types[n] for n in df.columns})
