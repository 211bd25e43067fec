#!/usr/bin/env python3
"""Draws apply time vs number of services from bench-sync results.json as a plain SVG: one panel
per backend, log-scale time, lines for kubenat's partial sync (service added / removed), the
kube-proxy-style partial sync (whole KUBE-SERVICES + the service) and the floor.
Usage: bench-sync-chart.py results.json out.svg"""

import json
import math
import sys

SERIES = [
    ("add.kubeproxy", "kube-proxy-style partial (service added)", "#d62728", ""),
    ("add.kubenat", "kubenat partial (service added)", "#1f77b4", ""),
    ("remove.kubenat", "kubenat partial (service removed)", "#1f77b4", "6,4"),
    ("floor", "floor: one service's SVC+SEP chains", "#2ca02c", "2,3"),
]
W, H = 440, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 36, 48


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def panel(rows, backend, x0):
    rows = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["services"])
    if not rows:
        return []
    values = [r["median_s"][k] for r in rows for k, *_ in SERIES if k in r["median_s"]]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    ns = [r["services"] for r in rows]
    nmax = max(ns)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(n):
        return x0 + LEFT + pw * n / nmax

    def py(t):
        return TOP + ph * (1 - (math.log10(t) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out = [f'<text x="{x0 + LEFT + pw / 2}" y="20" text-anchor="middle" font-weight="bold">'
           f'iptables-{esc(backend)}-restore</text>',
           f'<rect x="{x0 + LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    decade = lo
    while decade <= hi * 1.0001:
        y = py(decade)
        label = f"{decade * 1000:g} ms" if decade < 1 else f"{decade:g} s"
        out.append(f'<line x1="{x0 + LEFT}" y1="{y:.1f}" x2="{x0 + LEFT + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        decade *= 10
    for n in ns:
        out.append(f'<text x="{px(n):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{n:,}</text>')
    out.append(f'<text x="{x0 + LEFT + pw / 2}" y="{H - 10}" text-anchor="middle">services (× 10 endpoints)</text>')
    for key, _, colour, dash in SERIES:
        points = [(px(r["services"]), py(r["median_s"][key])) for r in rows if key in r["median_s"]]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dashed}/>')
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points]
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        rows = json.load(f)
    backends = sorted({r["backend"] for r in rows}, key=lambda b: (b != "nft", b))
    width, legend = W * len(backends), 22 * len(SERIES) + 10
    body = []
    for i, backend in enumerate(backends):
        body += panel(rows, backend, i * W)
    for i, (_, label, colour, dash) in enumerate(SERIES):
        y = H + 14 + 22 * i
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        body.append(f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + 36}" y2="{y}" stroke="{colour}" stroke-width="2"{dashed}/>')
        body.append(f'<text x="{LEFT + 44}" y="{y + 4}">{esc(label)}</text>')
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H + legend}" '
           f'viewBox="0 0 {width} {H + legend}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{H + legend}" fill="white"/>'] + body + ["</svg>"]
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
