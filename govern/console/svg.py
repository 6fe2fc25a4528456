"""Plots as inline SVG, drawn on the server: no JavaScript, no CDN, nothing a strict
Content-Security-Policy would block (presentation attributes and classes, no ``style``).

Every label is escaped; numbers are formatted here, so a template only places the markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

__all__ = ["bars", "lines"]

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 200, 56, 12, 14, 30


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.3g}"


def _scale(lo: float, hi: float, a: float, b: float):  # -> Callable[[float], float]
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def lines(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, title: str, x_label: str = "",
          y_label: str = "", x_ticks: Sequence[tuple[float, str]] = ()) -> Markup:
    """A line chart: ``series`` is ``[(name, [(x, y), ...]), ...]`` (series 0, 1, 2 get the CSS
    classes ``s0``, ``s1``, ``s2``)."""
    points = [p for _, pts in series for p in pts]
    out = [f'<svg class="plot" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>"]
    if not points:
        out.append(f'<text x="{W / 2}" y="{H / 2}" class="empty" text-anchor="middle">no data</text></svg>')
        return Markup("".join(out))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(min(ys), 0.0), max(ys)
    sx = _scale(x0, x1, PAD_L, W - PAD_R)
    sy = _scale(y0, y1, H - PAD_B, PAD_T)
    out.append(f'<line class="axis" x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}"/>')
    out.append(f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}"/>')
    for v in (y0, (y0 + y1) / 2, y1):
        out.append(f'<text class="tick" x="{PAD_L - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    for x, label in x_ticks or [(x0, _fmt(x0)), (x1, _fmt(x1))]:
        out.append(f'<text class="tick" x="{sx(x):.1f}" y="{H - PAD_B + 14}" text-anchor="middle">'
                   f"{escape(label)}</text>")
    for i, (name, pts) in enumerate(series):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline class="line s{i % 3}" points="{path}"><title>{escape(name)}</title></polyline>')
        out.append(f'<text class="legend s{i % 3}" x="{W - PAD_R}" y="{PAD_T + 12 * i + 4}" '
                   f'text-anchor="end">{escape(name)}</text>')
    if x_label:
        out.append(f'<text class="label" x="{(PAD_L + W - PAD_R) / 2}" y="{H - 2}" text-anchor="middle">'
                   f"{escape(x_label)}</text>")
    if y_label:
        out.append(f'<text class="label" x="4" y="{PAD_T - 2}">{escape(y_label)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def bars(items: Sequence[tuple[str, float, bool]], *, title: str, threshold: float | None = None,
         unit: str = "") -> Markup:
    """Horizontal bars: ``items`` is ``[(label, value, flagged), ...]``; flagged bars get the
    class ``hot``; ``threshold`` draws a dashed line."""
    row = 18
    height = PAD_T + row * max(len(items), 1) + 20
    top = max([v for _, v, _ in items] + [threshold or 0.0, 1e-9])
    left = 150
    sx = _scale(0.0, top, left, W - 70)
    out = [f'<svg class="plot" viewBox="0 0 {W} {height}" role="img" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>"]
    for i, (label, value, hot) in enumerate(items):
        y = PAD_T + i * row
        shown = min(value, top)
        out.append(f'<text class="tick" x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(label[:24])}</text>')
        out.append(f'<rect class="bar{" hot" if hot else ""}" x="{left}" y="{y + 2}" '
                   f'width="{max(sx(shown) - left, 1):.1f}" height="{row - 5}"><title>{escape(label)}: '
                   f"{_fmt(value)}{escape(unit)}</title></rect>")
        out.append(f'<text class="tick" x="{sx(shown) + 4:.1f}" y="{y + 12}">{_fmt(value)}{escape(unit)}</text>')
    if threshold is not None:
        x = sx(threshold)
        out.append(f'<line class="threshold" x1="{x:.1f}" y1="{PAD_T - 4}" x2="{x:.1f}" y2="{height - 16}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{height - 4}" text-anchor="middle">threshold '
                   f"{_fmt(threshold)}</text>")
    out.append("</svg>")
    return Markup("".join(out))
