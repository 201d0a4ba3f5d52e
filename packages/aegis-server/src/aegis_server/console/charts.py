"""Charts as inline SVG, drawn on the server (no library, no script): stacked bars over time, vertical bars
(a histogram) and horizontal bars (a top list).

Each chart is an `<svg role="img">` with a `<title>` and an `aria-label` that says what it shows; its
text (axes, values, legend) is SVG text, so it scales and can be read. Colours are CSS classes whose rules
take custom properties (`.chart-allow { fill: var(--chart-allow) }`, in `static/charts.css`), so one
stylesheet serves the light and the dark scheme (a file: the console's CSP allows no inline style).
Every label is escaped here: capability and actor names come from users. A chart is a picture of a
table the page shows beside it; it carries no data of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Series", "horizontal_bars", "nice_ceiling", "stacked_bars", "vertical_bars"]

_WIDTH = 720
_LABEL_CHARS = 32  # a longer name is cut (with "…") in the picture; the table beside it has it whole
_MAX_X_LABELS = 12


@dataclass(frozen=True)
class Series:
    """One stacked series: the key of its values, its legend label and its CSS class (e.g. `chart-allow`)."""

    key: str
    label: str
    css_class: str


def nice_ceiling(value: float) -> float:
    """The top of an axis at or above `value` whose half is a whole number when it can be: 1, then even
    numbers up to 10, then 1, 2, 5 × 10ⁿ."""
    if value <= 1:
        return 1.0
    if value <= 10:
        return float(math.ceil(value / 2) * 2)
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    raise AssertionError("unreachable: 10 × 10ⁿ is above any value of that magnitude")


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def _svg(chart_id: str, title: str, summary: str, height: int, body: list[str]) -> Markup:
    label = f"{title}. {summary}" if summary else title
    head = (
        f'<svg class="chart" id="{escape(chart_id)}" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {_WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
    )
    # Safe: every text in `head` and `body` went through `escape` where it was put in; the rest is numbers.
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704


def _y_axis(top: float, left: int, right: int, y0: int, plot_height: int) -> list[str]:
    parts = []
    for fraction in (0.0, 0.5, 1.0) if top > 1 else (0.0, 1.0):  # no "0.5" on an axis of counts
        y = y0 - fraction * plot_height
        parts.append(f'<line class="chart-grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(top * fraction)}</text>')
    return parts


def stacked_bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    values: Sequence[Mapping[str, int]],
    *,
    summary: str = "",
) -> Markup:
    """Bars over time (one per label, e.g. an hour), each stacked by series, with a legend. `values[i]`
    maps a series key to its count in bar `i`; a missing key counts 0."""
    if len(labels) != len(values):
        raise ValueError("stacked_bars needs one mapping of values per label")
    left, right, top_margin, plot_height = 48, _WIDTH - 8, 36, 180
    y0 = top_margin + plot_height
    totals = [sum(value.get(s.key, 0) for s in series) for value in values]
    top = nice_ceiling(max(totals, default=0))
    body = _y_axis(top, left, right, y0, plot_height)
    x = left + 4.0
    for index, item in enumerate(series):  # the legend, across the top
        legend_x = left + index * 150
        body.append(f'<rect class="{escape(item.css_class)}" x="{legend_x}" y="8" width="12" height="12"/>')
        body.append(f'<text x="{legend_x + 18}" y="18">{escape(_short(item.label))}</text>')
    slot = (right - x) / max(len(labels), 1)
    every = max(1, math.ceil(len(labels) / _MAX_X_LABELS))
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        bar_x = x + index * slot + slot * 0.15
        y = float(y0)
        for item in series:
            count = value.get(item.key, 0)
            if count <= 0:
                continue
            height = count / top * plot_height
            y -= height
            body.append(
                f'<rect class="{escape(item.css_class)}" x="{bar_x:.1f}" y="{y:.1f}" '
                f'width="{slot * 0.7:.1f}" height="{height:.1f}">'
                f"<title>{escape(label)}: {count} {escape(item.label)}</title></rect>"
            )
        if index % every == 0:
            centre = x + index * slot + slot / 2
            body.append(f'<text x="{centre:.1f}" y="{y0 + 18}" text-anchor="middle">{escape(_short(label))}</text>')
    return _svg(chart_id, title, summary, y0 + 28, body)


def vertical_bars(
    chart_id: str, title: str, labels: Sequence[str], values: Sequence[int], *, summary: str = ""
) -> Markup:
    """One bar per label (a histogram), its count written above it."""
    if len(labels) != len(values):
        raise ValueError("vertical_bars needs one value per label")
    left, right, top_margin, plot_height = 48, _WIDTH - 8, 16, 160
    y0 = top_margin + plot_height
    top = nice_ceiling(max(values, default=0))
    body = _y_axis(top, left, right, y0, plot_height)
    slot = (right - left - 4) / max(len(labels), 1)
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        centre = left + 4 + index * slot + slot / 2
        height = value / top * plot_height
        if value > 0:
            body.append(
                f'<rect class="chart-bar" x="{centre - slot * 0.35:.1f}" y="{y0 - height:.1f}" '
                f'width="{slot * 0.7:.1f}" height="{height:.1f}"><title>{escape(label)}: {value}</title></rect>'
            )
        body.append(f'<text x="{centre:.1f}" y="{y0 - height - 4:.1f}" text-anchor="middle">{value}</text>')
        body.append(f'<text x="{centre:.1f}" y="{y0 + 18}" text-anchor="middle">{escape(_short(label))}</text>')
    return _svg(chart_id, title, summary, y0 + 28, body)


def horizontal_bars(
    chart_id: str, title: str, labels: Sequence[str], values: Sequence[int], *, summary: str = ""
) -> Markup:
    """One row per label (a top list): the label, a bar, the count. Nothing to show draws one line that says so."""
    if len(labels) != len(values):
        raise ValueError("horizontal_bars needs one value per label")
    label_width, row_height, right = 250, 24, _WIDTH - 48
    if not labels:
        return _svg(chart_id, title, summary, row_height, ['<text x="0" y="16">No decisions in this window.</text>'])
    top = nice_ceiling(max(values))
    body: list[str] = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = index * row_height
        width = value / top * (right - label_width)
        body.append(f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end">{escape(_short(label))}</text>')
        body.append(
            f'<rect class="chart-bar" x="{label_width}" y="{y + 4}" width="{width:.1f}" height="{row_height - 8}">'
            f"<title>{escape(label)}: {value}</title></rect>"
        )
        body.append(f'<text x="{label_width + width + 6:.1f}" y="{y + 16}">{value}</text>')
    return _svg(chart_id, title, summary, len(labels) * row_height, body)
