"""k-anonymity of a masked view, computed at query time (a plan's ``result.k_anonymity``).

Full-domain generalization, one step at a time: at step 0 every quasi-identifier is as the
masks left it; at step *s* each takes its *s*-th level (or its last one). The first step at
which the rows in equivalence classes smaller than ``k`` are at most ``max_suppression`` of the
view wins, and those rows are dropped (suppression); at the last step they are dropped however
many they are. Classes are counted by DuckDB over the whole view (``NULL`` is one value, as in
``GROUP BY``). Nothing is stored: every query recomputes it from the view it reads, so there
is no sample to leak (the gap in Immuta's k-anonymization).

Levels (the column keeps its type): ``month``/``year``/``decade`` truncate dates and
timestamps, ``bucket:N`` floors numbers to a multiple of N, ``prefix:N`` keeps the first N
characters of a string and appends ``*``, ``*`` suppresses the value (NULL).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from govern.errors import PlanError
from govern.plan.model import KAnonymity

__all__ = ["generalize_sql", "kanonymize"]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def generalize_sql(column: str, arrow_type: pa.DataType, level: str | None) -> str:
    """The DuckDB expression that generalizes ``column`` (of ``arrow_type``) to ``level``."""
    c = _quote(column)
    if level is None:
        return c
    if level == "*":
        return "NULL"
    temporal = pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type)
    if level in ("month", "year", "decade"):
        if not temporal:
            raise PlanError(f"k_anonymity: level '{level}' needs a date column; '{column}' is {arrow_type}")
        if level == "decade":
            return f"make_date(CAST(floor(year({c}) / 10) * 10 AS INTEGER), 1, 1)"
        return f"date_trunc('{level}', {c})"
    kind, _, arg = level.partition(":")
    n = int(arg)
    if kind == "bucket":
        if not (pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type)):
            raise PlanError(f"k_anonymity: level '{level}' needs a number column; '{column}' is {arrow_type}")
        return f"floor({c} / {n}) * {n}"
    if kind == "prefix":
        if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
                or (pa.types.is_dictionary(arrow_type) and pa.types.is_string(arrow_type.value_type))):
            raise PlanError(f"k_anonymity: level '{level}' needs a string column; '{column}' is {arrow_type}")
        return f"left({c}, {n}) || '*'"
    raise PlanError(f"k_anonymity: unknown level '{level}'")


def kanonymize(table: pa.Table, spec: KAnonymity) -> tuple[pa.Table, int]:
    """``table`` generalized and suppressed to be k-anonymous over the spec's quasi-identifiers
    present in it; returns (table, rows dropped). The schema is unchanged."""
    qis = [(c, levels) for c, levels in spec.quasi_identifiers if c in table.column_names]
    if not qis or table.num_rows == 0:
        return table, 0
    depth = max(len(levels) for _c, levels in qis)
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.register("view", table)
        types = dict(zip(table.column_names, (str(t) for t in con.sql("SELECT * FROM view LIMIT 0").types), strict=True))
        for step in range(depth + 1):
            exprs = {c: generalize_sql(c, table.schema.field(c).type, levels[min(step, len(levels)) - 1]
                                       if step and levels else None) for c, levels in qis}
            select = ", ".join(
                f"CAST({exprs[f.name]} AS {types[f.name]}) AS {_quote(f.name)}" if f.name in exprs
                else _quote(f.name) for f in table.schema)
            partition = ", ".join(exprs[c] for c, _levels in qis)
            sized = f"SELECT {select}, count(*) OVER (PARTITION BY {partition}) AS __govern_class FROM view"
            small = con.sql(f"SELECT count(*) FROM ({sized}) WHERE __govern_class < {spec.k}").fetchall()
            dropped = int(small[0][0])
            if dropped <= spec.max_suppression * table.num_rows or step == depth:
                names = ", ".join(_quote(f.name) for f in table.schema)
                out = con.sql(f"SELECT {names} FROM ({sized}) WHERE __govern_class >= {spec.k}").to_arrow_table()
                return out.cast(table.schema), dropped
    finally:
        con.close()
    raise AssertionError("unreachable")  # pragma: no cover

