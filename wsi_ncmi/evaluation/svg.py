"""Small inline-SVG charts for the HTML reports: crisp at any zoom, a few kB each, no plotting library needed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

LEGEND_LINE = 14
"""Height of one legend line below a chart, in px."""
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


@dataclass(frozen=True)
class Series:
    """One named curve: `style` is line, points or both; `dash` draws it dashed (a reference line)."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    style: str = "line"
    dash: bool = False
    color: str | None = None
    labels: Sequence[str] | None = None


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if not high > low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= step * factor:
            step *= factor
            break
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def chart(
    series: Sequence[Series],
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    xticks: Sequence[tuple[float, str]] | None = None,
    width: int = 380,
    height: int = 270,
) -> str:
    """An SVG line/point chart with axes, ticks, a legend and a <title> tooltip per point.

    `height` is the plot's; the legend goes below the axis label, one line per named series, so it never covers
    the data and the SVG grows by its lines."""
    left, right, top, bottom = 60, 12, 26, 40
    named = sum(1 for s in series if s.name)
    legend_top = height + 4
    total = height + (named * LEGEND_LINE + 8 if named else 0)
    xs = [v for s in series for v in _finite(s.x)] or [0.0, 1.0]
    ys = [v for s in series for v in _finite(s.y)] or [0.0, 1.0]
    x0, x1 = xlim or (min(xs), max(xs))
    pad = 0.05 * (max(ys) - min(ys))
    y0, y1 = ylim or (min(ys) - pad, max(ys) + pad)
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {total}" '
        f'width="{width}" height="{total}" role="img" aria-label="{escape(title)}">',
        f'<text x="{width / 2}" y="16" class="ct">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>',
    ]
    for value in _ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(value):.1f}" y2="{py(value):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 4}" y="{py(value) + 4:.1f}" class="yt">{_fmt(value)}</text>')
    for value, label in xticks or [(v, _fmt(v)) for v in _ticks(x0, x1)]:
        parts.append(f'<text x="{px(value):.1f}" y="{top + ph + 14}" class="xt">{escape(label)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" class="xl">{escape(xlabel)}</text>')
    parts.append(f'<text transform="translate(12 {top + ph / 2}) rotate(-90)" class="xl">{escape(ylabel)}</text>')
    legend_y = legend_top + LEGEND_LINE / 2
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        points = [
            (float(x), float(y))
            for x, y in zip(s.x, s.y, strict=True)
            if y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
        ]
        dash = ' stroke-dasharray="4 3"' if s.dash else ""
        if s.style in ("line", "both") and len(points) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.8"{dash}/>')
        if s.style in ("points", "both"):
            labels = list(s.labels) if s.labels is not None else [""] * len(s.x)
            for (x, y), label in zip(points, labels, strict=False):
                tip = escape(f"{s.name}: {label + ' ' if label else ''}({_fmt(x)}, {_fmt(y)})")
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}"><title>{tip}</title></circle>'
                )
        if s.name:
            parts.append(
                f'<g class="legend"><line x1="{left}" x2="{left + 14}" y1="{legend_y}" y2="{legend_y}" '
                f'stroke="{color}" stroke-width="2.5"{dash}/><text x="{left + 18}" y="{legend_y + 4}" '
                f'class="lg">{escape(s.name)}</text></g>'
            )
            legend_y += LEGEND_LINE
    parts.append("</svg>")
    return "".join(parts)
