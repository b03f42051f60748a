"""A small log-log line plot as SVG: seconds against N, one line per measurement.
Written by hand so the benchmark needs nothing beyond the project's dependencies."""

from __future__ import annotations

import math
from pathlib import Path

SERIES = [
    ("topoctl apply (cold)", "#1f77b4"),
    ("topoctl plan (no-op)", "#2ca02c"),
    ("topoctl destroy", "#9467bd"),
    ("script build", "#d62728"),
    ("script teardown", "#ff7f0e"),
    ("pyroute2 floor build", "#7f7f7f"),
    ("ip -j reads (1 per netns)", "#8c564b"),
]
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 440, 70, 250, 30, 50


def write_svg(results: dict[int, dict], path: Path) -> None:
    sizes = sorted(results)
    values = [results[n][m]["seconds"] for n in sizes for m, _ in SERIES if m in results[n]]
    if not sizes or not values:
        return
    lo_y, hi_y = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    lo_x, hi_x = math.log10(min(sizes)), math.log10(max(sizes))
    hi_x = hi_x if hi_x > lo_x else lo_x + 1
    hi_y = hi_y if hi_y > lo_y else lo_y + 1

    def x(n: float) -> float:
        return LEFT + (math.log10(n) - lo_x) / (hi_x - lo_x) * (W - LEFT - RIGHT)

    def y(s: float) -> float:
        return H - BOTTOM - (math.log10(s) - lo_y) / (hi_y - lo_y) * (H - TOP - BOTTOM)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{LEFT}" y="18" font-size="14">seconds against N containers (log-log, lower is better)</text>']
    for e in range(lo_y, hi_y + 1):
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(10 ** e):.1f}" y2="{y(10 ** e):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{y(10 ** e) + 4:.1f}" text-anchor="end">{10.0 ** e:g}</text>')
    for n in sizes:
        parts.append(f'<line x1="{x(n):.1f}" x2="{x(n):.1f}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#eee"/>')
        parts.append(f'<text x="{x(n):.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">N={n}</text>')
    for row, (metric, colour) in enumerate(SERIES):
        points = [(x(n), y(results[n][metric]["seconds"])) for n in sizes if metric in results[n]]
        if not points:
            continue
        path_d = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points))
        parts.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>' for px, py in points)
        ly = TOP + 20 + row * 20
        parts.append(f'<line x1="{W - RIGHT + 15}" x2="{W - RIGHT + 40}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{W - RIGHT + 46}" y="{ly + 4}">{metric}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
