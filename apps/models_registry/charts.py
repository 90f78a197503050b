"""Small inline SVG bar charts for admin pages: no plotting library in the API image."""

from html import escape

COLORS = ("#79aec8", "#e07b39", "#417690")


def bars_svg(
    series: list[tuple[str, list[float]]],
    labels: list[str],
    *,
    title: str,
    threshold: float | None = None,
    width: int = 640,
    height: int = 194,
) -> str:
    """Grouped bars, one colour per series, a dashed line at `threshold`; an <svg> string.

    The legend is a row of its own between the title and the bars, never over them."""
    left, bottom, legend_y = 44, 22, 20
    top = legend_y + 18  # the tallest bar starts below the legend's row
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max([v for _, values in series for v in values] + [threshold or 0, 1e-9])
    group_w = plot_w / max(len(labels), 1)
    bar_w = max(group_w * 0.8 / max(len(series), 1), 1)

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" style="font:11px sans-serif">',
        f'<text x="{left}" y="14" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak:.3g}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    legend_x = float(left)
    for s, (name, values) in enumerate(series):
        color = COLORS[s % len(COLORS)]
        parts.append(
            f'<g class="legend"><rect x="{legend_x:.1f}" y="{legend_y}" width="9" height="9" fill="{color}"/>'
            f'<text x="{legend_x + 13:.1f}" y="{legend_y + 8}">{escape(name)}</text></g>'
        )
        legend_x += 13 + 7 * len(name) + 14
        for i, value in enumerate(values):
            x = left + i * group_w + group_w * 0.1 + s * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{y(value):.1f}" width="{bar_w:.1f}" '
                f'height="{top + plot_h - y(value):.1f}" fill="{color}"><title>{escape(labels[i])}: '
                f"{value:.4g}</title></rect>"
            )
    step = max(1, len(labels) // 16)
    for i in range(0, len(labels), step):
        x = left + i * group_w + group_w / 2
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{escape(labels[i])}</text>')
    if threshold is not None:
        parts.append(
            f'<line x1="{left}" y1="{y(threshold):.1f}" x2="{width - 8}" y2="{y(threshold):.1f}" '
            f'stroke="#ba2121" stroke-dasharray="4 3"><title>threshold {threshold}</title></line>'
        )
    parts.append("</svg>")
    return "".join(parts)
