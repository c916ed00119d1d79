"""Line charts as SVG text: the benchmarks' figures without a plotting dependency."""

from __future__ import annotations

from html import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
WIDTH, HEIGHT, MARGIN = 520, 260, 48


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def panel(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, top: int) -> str:
    """One chart (axes, ticks, a polyline and legend entry per series) whose top edge is at y=`top`."""
    points = [p for line in series.values() for p in line]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, bottom = MARGIN, WIDTH - 24, top + HEIGHT - MARGIN

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top - 24)

    out = [f'<text x="{left}" y="{top + 14}" font-size="13" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{top + 24}" stroke="black"/>',
           f'<text x="{(left + right) / 2}" y="{bottom + 30}" font-size="11" text-anchor="middle">'
           f'{escape(xlabel)}</text>']
    out += [f'<text x="{sx(x):.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle">{x:.3g}</text>'
            for x in _ticks(x0, x1)]
    out += [f'<text x="{left - 4}" y="{sy(y) + 3:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>'
            for y in _ticks(y0, y1)]
    for i, (name, line) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        out.append(f'<text x="{right - 150}" y="{top + 30 + 13 * i}" font-size="11" fill="{color}">'
                   f'{escape(name)}</text>')
    return "\n".join(out)


def figure(panels: list[tuple[dict[str, list[tuple[float, float]]], str, str]]) -> str:
    """Panels (series, title, x label) stacked vertically into one SVG document."""
    body = "\n".join(panel(series, title, xlabel, i * HEIGHT) for i, (series, title, xlabel) in enumerate(panels))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT * len(panels)}" '
            f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')
