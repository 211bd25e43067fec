#!/usr/bin/env python3
"""Draws the daemon's cost per change against the number of services as a plain SVG: two
panels (CPU per change, log scale; RSS after 100 changes), one line per backend and sync
implementation, from the rows of tests/scale_changes.rs kept in a CSV.
CSV columns: sync,backend,services,cpu_ms,rss_mib (sync: before | after).
Usage: bench-change-chart.py results.csv out.svg"""

import csv
import math
import sys

W, H = 440, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 36, 48
STYLE = {
    ("before", "nft"): ("#d62728", ""),
    ("before", "legacy"): ("#d62728", "6,4"),
    ("after", "nft"): ("#1f77b4", ""),
    ("after", "legacy"): ("#1f77b4", "6,4"),
}


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def scale(values, log):
    lo, hi = min(values), max(values)
    if log:
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        return lo, hi, lambda v: (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    lo, hi = 0, hi * 1.1
    return lo, hi, lambda v: (v - lo) / (hi - lo)


def panel(rows, key, title, unit, log, x0):
    xs = sorted({r["services"] for r in rows})
    values = [r[key] for r in rows]
    lo, hi, frac = scale(values, log)
    xmin, xmax = math.log10(min(xs)), math.log10(max(xs))
    px = lambda n: x0 + LEFT + (math.log10(n) - xmin) / ((xmax - xmin) or 1) * (W - LEFT - RIGHT)
    py = lambda v: TOP + (1 - frac(v)) * (H - TOP - BOTTOM)
    out = [f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-size="13">{esc(title)}</text>']
    ticks = [lo * 10**i for i in range(int(round(math.log10(hi / lo))) + 1)] if log else [lo + (hi - lo) * i / 4 for i in range(5)]
    for t in ticks:
        out.append(f'<line x1="{x0 + LEFT}" x2="{x0 + W - RIGHT}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="10">{t:g} {unit}</text>')
    for n in xs:
        out.append(f'<text x="{px(n):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="10">{n:,}</text>')
    out.append(f'<text x="{x0 + W / 2}" y="{H - 12}" text-anchor="middle" font-size="11">services (× 10 endpoints)</text>')
    for (sync, backend), (colour, dash) in STYLE.items():
        line = sorted((r["services"], r[key]) for r in rows if r["sync"] == sync and r["backend"] == backend)
        if not line:
            continue
        points = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in line)
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        for n, v in line:
            out.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{colour}"/>')
    return out


def main():
    rows = []
    with open(sys.argv[1], newline="") as f:
        for r in csv.DictReader(f):
            rows.append({"sync": r["sync"], "backend": r["backend"], "services": int(r["services"]),
                         "cpu_ms": float(r["cpu_ms"]), "rss_mib": float(r["rss_mib"])})
    body = panel(rows, "cpu_ms", "daemon CPU per endpoint change", "ms", True, 0)
    body += panel(rows, "rss_mib", "RSS after 100 changes", "MiB", False, W)
    legend = []
    for i, ((sync, backend), (colour, dash)) in enumerate(STYLE.items()):
        y = H + 14 + 16 * (i // 2)
        x = 80 + 300 * (i % 2)
        legend.append(f'<line x1="{x}" x2="{x + 28}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        legend.append(f'<text x="{x + 34}" y="{y + 4}" font-size="11">{sync} ({backend})</text>')
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 48}" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>', *body, *legend, "</svg>"]
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
