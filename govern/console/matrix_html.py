"""The effective-access matrix as an HTML table, built in one pass.

A 50 × 20 × 30 matrix is 36,600 cells, each with its reason in a tooltip: a template loop
spends seconds on that many attribute lookups and filter calls, so the table is built here,
each distinct text escaped once. Every value is escaped (:func:`html.escape`, quotes too).
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

from govern.console.access import DatasetMatrix

__all__ = ["matrix_table"]


def matrix_table(m: DatasetMatrix) -> Markup:
    memo: dict[str, str] = {}

    def e(text: str) -> str:
        found = memo.get(text)
        if found is None:
            found = memo[text] = escape(text, quote=True)
        return found

    out = [f'<table class="grid matrix" data-dataset="{e(m.dataset)}"><thead><tr><th>subject</th><th>purpose</th>',
           *(f'<th class="col">{e(c)}</th>' for c in m.columns), "<th>rows</th></tr></thead><tbody>"]
    for r in m.rows:
        out.append(f'<tr><th scope="row">{e(r.subject)}</th><td>{e(r.purpose)}</td>')
        out.extend(f'<td class="cell {c.action}" title="{e(c.detail)}: {e(c.reason)}">{e(c.label)}</td>'
                   for c in r.cells)
        if r.denied:
            rows = f'<span class="muted">{e(r.denied)}</span>'
        else:
            rules = f' <span class="tag">{len(r.cell_rules)} cell rule(s)</span>' if r.cell_rules else ""
            rows = f"<code>{e(r.row_filter)}</code>{rules}"
        out.append(f'<td class="rows" title="{e("; ".join(r.cell_rules))}">{rows}</td></tr>')
    out.append("</tbody></table>")
    return Markup("".join(out))
