"""Human renderings of plans and rows: what ``govern policy explain`` and ``preview`` print."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv

from govern.plan.model import AccessPlan


def explain_text(plan: AccessPlan) -> str:
    out = [f"{plan.principal} reads {plan.dataset} for purpose '{plan.purpose}' ({plan.action})"]
    if plan.decision:
        out.append(f"  dataset: {plan.decision}")
    out.append(f"  plan {plan.hash[:16]}  policy version {plan.policy_version}")
    width = max(len(c.name) for c in plan.columns)
    out.append("")
    out.append(f"  {'COLUMN'.ljust(width)}  {'ACTION':<9} {'AS':<34} WHY")
    for c in plan.columns:
        shown = str(c.mask) if c.mask else ("-" if c.action == "withhold" else "clear")
        out.append(f"  {c.name.ljust(width)}  {c.action:<9} {shown[:34]:<34} {c.reason}")
    out.append("")
    if plan.row_filters:
        for rf in plan.row_filters:
            out.append(f"  rows:  only where {rf.predicate}   [{rf.reason}]")
    else:
        out.append("  rows:  all rows (no row filter applies)")
    for cr in plan.cell_rules:
        out.append(f"  cells: {cr.column} → {cr.mask} where {cr.when}   [{cr.reason.source}]")
    out.extend(_result_lines(plan))
    return "\n".join(out)


def _result_lines(plan: AccessPlan) -> list[str]:
    """The result policy: what any answer built from this dataset must look like."""
    r = plan.result
    if r is None:
        return ["  results: no result policy (aggregates and rows as the masks leave them)"]
    out = [f"  results: {r.reason}"]
    if r.min_group:
        m = r.min_group
        what = "distinct privacy units" if m.count == "units" else "rows"
        fate = ("folded into one remainder row (keys NULL)" if m.semantics == "remainder"
                else "refuse the whole query")
        out.append(f"    min_group: every group of an aggregate holds >= {m.k} {what}; smaller groups {fate}; "
                   "only count/sum/avg over columns, filters on group keys only")
    if r.projection:
        out.append(f"    projection: {', '.join(r.projection)} may be joined (col = col) or grouped on, "
                   "never output, compared or ordered by")
    if r.k_anonymity:
        ka = r.k_anonymity
        qis = ", ".join(f"{c} [{' > '.join(levels) or 'suppress'}]" for c, levels in ka.quasi_identifiers)
        out.append(f"    k_anonymity: k={ka.k} over {qis}; at most {ka.max_suppression:g} of rows dropped")
    return out


def render_rows(table: pa.Table, fmt: str) -> str:
    if fmt == "csv":
        sink = io.BytesIO()
        pacsv.write_csv(table, sink)
        return sink.getvalue().decode()
    if fmt == "jsonl":
        return "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in table.to_pylist())
    return _table(table)


def _table(table: pa.Table) -> str:
    names = table.column_names
    rows = [["NULL" if v is None else str(v) for v in row.values()] for row in table.to_pylist()]
    widths = [min(40, max([len(n)] + [len(r[i]) for r in rows])) for i, n in enumerate(names)]
    def line(cells: list[str]) -> str:
        return "  ".join(c[:w].ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    out = [line(names), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out) + "\n"
