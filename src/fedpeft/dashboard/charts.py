"""Line charts as SVG markup, drawn on the server.

No chart library, no script, nothing fetched from elsewhere: the page must work on a hospital
machine without internet and under a strict Content-Security-Policy. Every label is escaped
(institution names come from the institutions).
"""

from __future__ import annotations

from html import escape

_WIDTH, _PLOT_HEIGHT = 440, 152
_LEFT, _RIGHT, _TOP, _AXIS = 52, 12, 26, 44
_MARKED_POINTS = 40
_LEGEND_ROW, _CHAR_WIDTH, _NAME_CHARS = 13, 6.0, 28
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    step = (high - low) / count
    return [low + step * index for index in range(count + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}"


def _legend_layout(names: list[str], top: int) -> list[tuple[float, int]]:
    """(x, y) of each legend entry, in rows under the plot; the chart grows to fit them all."""
    places: list[tuple[float, int]] = []
    x, y = float(_LEFT), top + _LEGEND_ROW
    for name in names:
        width = 20 + _CHAR_WIDTH * min(len(name), _NAME_CHARS)
        if x > _LEFT and x + width > _WIDTH:
            x, y = float(_LEFT), y + _LEGEND_ROW
        places.append((x, y))
        x += width
    return places


def line_chart(title: str, series: dict[str, list[tuple[float, float]]],
               target: float | None = None, from_zero: bool = False, xlabel: str = "round") -> str:
    """An SVG chart, one polyline per series; `target` as a dashed horizontal line;
    `from_zero` for amounts (epsilon, bytes, seconds) read against zero, not their range."""
    points = [p for pts in series.values() for p in pts]
    xs = [x for x, _ in points] or [0.0]
    ys = [y for _, y in points] + ([target] if target is not None else []) + (
        [0.0] if from_zero else []) or [0.0]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if x_high == x_low:
        x_high = x_low + 1
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _PLOT_HEIGHT
    legend = _legend_layout(list(series), _TOP + plot_h + _AXIS)
    height = (legend[-1][1] if legend else _TOP + plot_h + _AXIS) + 8

    def sx(x: float) -> float:
        return _LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        return _TOP + (1 - (y - y_low) / (y_high - y_low)) * plot_h

    parts = [(f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" '
              f'width="{_WIDTH}" height="{height}" role="img" aria-label="{escape(title)}">'),
             f'<text x="{_LEFT}" y="16" class="title">{escape(title)}</text>',
             f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    for tick in _ticks(y_low, y_high):
        parts.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" class="grid"/>'
                     f'<text x="{_LEFT - 4}" y="{sy(tick) + 4:.1f}" class="tick" text-anchor="end">{_label(tick)}</text>')
    for tick in sorted({round(t) for t in _ticks(x_low, x_high)}):
        parts.append(f'<text x="{sx(tick):.1f}" y="{_TOP + plot_h + 14}" class="tick" text-anchor="middle">{tick}</text>')
    parts.append(f'<text x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h + 28}" class="tick" text-anchor="middle">{escape(xlabel)}</text>')
    if target is not None:
        parts.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{sy(target):.1f}" y2="{sy(target):.1f}" class="target"/>'
                     f'<text x="{_LEFT + plot_w - 2}" y="{sy(target) - 3:.1f}" class="tick" text-anchor="end">target {_label(target)}</text>')
    for index, ((name, pts), (legend_x, legend_y)) in enumerate(zip(series.items(), legend)):
        colour = _COLOURS[index % len(_COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline class="series" data-series="{escape(name)}" points="{coords}" '
                     f'fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(pts) <= _MARKED_POINTS:  # beyond, markers would hide the line and bloat the page
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"><title>'
                      f'{escape(name)} round {x:g}: {y:.4g}</title></circle>' for x, y in pts]
        parts.append(f'<rect x="{legend_x:.0f}" y="{legend_y - 8}" width="10" height="3" fill="{colour}"/>'
                     f'<text x="{legend_x + 13:.0f}" y="{legend_y - 4}" class="legend">'
                     f'{escape(name[:_NAME_CHARS])}</text>')
    parts.append("</svg>")
    return "".join(parts)
