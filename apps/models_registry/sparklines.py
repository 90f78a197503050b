"""Small inline SVG line charts (sparklines) for admin pages: one figure over time, a line per
series, drawn on the server (no plotting library in the API image, nothing fetched by the page)."""

from collections.abc import Callable, Sequence
from html import escape

from apps.models_registry.charts import COLORS


def sparkline_svg(
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    title: str,
    shown: Callable[[float], str] = lambda v: f"{v:.3g}",
    marks: Sequence[float] = (),
    colors: Sequence[str] = COLORS,
    width: int = 300,
    height: int = 92,
) -> str:
    """An <svg> string: `series` share one x axis (index i of n, evenly spaced); a value of None
    is a gap in its line. `marks` are x positions (0..1) drawn as dotted vertical lines (a
    rollout's steps). The y axis runs from 0 (or the least value, if negative) to the largest,
    labelled with `shown` (0 to 1 when every value is 0); the legend names each series with its
    last value."""
    left, right, legend_y, bottom = 46, 6, 22, 6
    top = legend_y + 10
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, line in series for v in line if v is not None]
    low, high = min([0.0, *values]), max([*values, 0.0])
    if high == low:  # all zero (or no value): an axis of one unit, the line along its foot
        high = low + 1.0
    span = high - low
    points = max((len(line) for _, line in series), default=0)

    def x(i: int) -> float:
        return left + (plot_w * i / (points - 1) if points > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h - plot_h * (value - low) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" class="sparkline" style="font:11px sans-serif">',
        f'<text x="{left}" y="12" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ddd"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{escape(shown(high))}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{escape(shown(low))}</text>',
    ]
    for mark in marks:
        at = left + plot_w * min(max(mark, 0.0), 1.0)
        parts.append(
            f'<line x1="{at:.1f}" y1="{top}" x2="{at:.1f}" y2="{top + plot_h}" stroke="#999" '
            'stroke-dasharray="2 2"/>'
        )
    legend_x = float(left)
    for s, (name, line) in enumerate(series):
        color = colors[s % len(colors)]
        last = next((v for v in reversed(line) if v is not None), None)
        label = f"{name}: {'-' if last is None else shown(last)}"
        parts.append(
            f'<g class="legend"><rect x="{legend_x:.1f}" y="{legend_y - 8}" width="9" height="9" '
            f'fill="{color}"/><text x="{legend_x + 13:.1f}" y="{legend_y}">{escape(label)}</text></g>'
        )
        legend_x += 13 + 6.5 * len(label) + 10
        for run in _runs(line):
            coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
            if len(run) == 1:  # a lone value between gaps: a dot, a line needs two
                i, v = run[0]
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="1.5" fill="{color}"/>')
            else:
                parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def _runs(line: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The stretches of `line` without a gap, as (index, value) pairs."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, value in enumerate(line):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, value))
    if current:
        runs.append(current)
    return runs
