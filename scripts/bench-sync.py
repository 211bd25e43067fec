#!/usr/bin/env python3
"""Times the real iptables-restore for kubenat's sync inputs, in throwaway network namespaces.

Driven by scripts/bench-sync.sh (which builds the input generator); run that instead. For each
N and backend: a full load into an empty namespace (without --noflush: see --noflush-full-max),
then REPS rounds of the floor (one
service's SVC+SEP chains rewritten), each change as kubenat plans it for this backend, as a
kube-proxy-style rewrite and with deletes by rule number (each followed by the plan that reverts
it, so every round starts from the same tables), a periodic full sync as the daemon writes it
(--noflush), and `iptables-save -t nat`. Medians and ratios to the floor of the same run go to
results.json and a Markdown table. iptables-nft-restore 1.8.9 takes superlinear time for a
--noflush input that declares many chains (1k services ≈8 s, 2k ≈105 s, 10k > 600 s, against
0.9 s / 1.7 s / ≈25 s without --noflush), so the nft full sync is only timed up to
--noflush-full-max services.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHANGES = ["endpoint", "add", "remove"]
VARIANTS = ["kubenat", "kubeproxy", "bynum"]
TIMEOUT = 600  # seconds for one iptables process (a 20k nft load takes about a minute)


class Namespace:
    """A network namespace named uniquely for this process, removed on exit."""

    counter = 0

    def __init__(self):
        Namespace.counter += 1
        self.name = f"kn-bsync-{os.getpid()}-{Namespace.counter}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def run(self, argv, stdin=None):
        start = time.perf_counter()
        done = subprocess.run(["ip", "netns", "exec", self.name] + argv, input=stdin,
                              capture_output=True, timeout=TIMEOUT)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"bench-sync: {' '.join(argv)} failed in {self.name}: {done.stderr.decode()[:2000]}")
        return elapsed, done.stdout


def restore(ns, backend, text, noflush=True):
    # legacy takes the host-wide xtables lock, which other iptables users may hold for a while.
    flags = ["--noflush"] if noflush else []
    return ns.run([f"iptables-{backend}-restore"] + flags + ["-w", "60"], text)[0]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def measure(inputs, n, backend, reps, full_reps, large, noflush_full_max):
    files = {name: read(os.path.join(inputs, name)) for name in os.listdir(inputs) if name.endswith(".txt")}
    times = {}

    def add(key, seconds):
        times.setdefault(key, []).append(seconds)

    with Namespace() as ns:
        add("first_full", restore(ns, backend, files["base.txt"], noflush=False))
        save_time, saved = ns.run([f"iptables-{backend}-save", "-t", "nat"])
        add("save_nat", save_time)
        for rep in range(reps):
            add("floor", restore(ns, backend, files["floor.txt"]))
            for change in CHANGES:
                for variant in VARIANTS:
                    name = f"{change}.{backend if variant == 'kubenat' else variant}.txt"
                    add(f"{change}.{variant}", restore(ns, backend, files[name]))
                    restore(ns, backend, files[f"{change}.revert.txt"])
            if rep < full_reps and (backend != "nft" or n <= noflush_full_max):
                add("full", restore(ns, backend, files["full.txt"]))
        save_time, after = ns.run([f"iptables-{backend}-save", "-t", "nat"])
        add("save_nat", save_time)
        if strip_counters(after) != strip_counters(saved):
            sys.exit(f"bench-sync: N={n} {backend}: the tables changed across the rounds (a revert is wrong)")
    if large:
        for _ in range(full_reps):
            for key, name in [("load_no_comments", "base.txt"), ("load_comments", "base-comments.txt")]:
                with Namespace() as fresh:
                    add(key, restore(fresh, backend, files[name], noflush=False))
    sizes = {name: len(text) for name, text in files.items()}
    return times, sizes


def strip_counters(saved):
    return [line for line in saved.decode().splitlines() if not line.startswith("#")]


def summarize(n, backend, times, sizes, stats):
    med = {key: statistics.median(values) for key, values in times.items()}
    floor = med["floor"]
    row = {"services": n, "backend": backend, "median_s": med, "runs": times, "bytes": sizes,
           "render_ms": stats["render_ms"],
           "plan_ms": {c: stats[f"{c}.{backend}.plan_ms"] for c in CHANGES}}
    row["ratio_to_floor"] = {key: value / floor for key, value in med.items() if key != "floor"}
    full = med.get("first_full")
    if full:
        worst_plan = max(row["plan_ms"].values())
        row["render_plan_share_of_full"] = (stats["render_ms"] + worst_plan) / 1000 / full
    return row


def table(rows):
    out = ["| backend | services | change | kubenat | bytes | × floor | kube-proxy style | bytes | × floor "
           "| `-D` by number | floor |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, b, x = r["median_s"], r["bytes"], r["ratio_to_floor"]
        for c in CHANGES:
            out.append(f"| {r['backend']} | {r['services']:,} | {c} | {m[c + '.kubenat'] * 1000:.0f} ms "
                       f"| {b[c + '.' + r['backend'] + '.txt']:,} | {x[c + '.kubenat']:.2f} "
                       f"| {m[c + '.kubeproxy'] * 1000:.0f} ms | {b[c + '.kubeproxy.txt']:,} | {x[c + '.kubeproxy']:.2f} "
                       f"| {m[c + '.bynum'] * 1000:.0f} ms | {m['floor'] * 1000:.0f} ms |")
    out += ["", "| backend | services | full load, empty namespace | bytes | full sync (`--noflush`) "
            "| `iptables-save -t nat` "
            "| render | plan (worst change) | render + plan ÷ full load |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_s"]
        full = f"{m['full']:.2f} s" if "full" in m else "not timed"
        share = r.get("render_plan_share_of_full")
        out.append(f"| {r['backend']} | {r['services']:,} | {m['first_full']:.2f} s | {r['bytes']['base.txt']:,} "
                   f"| {full} | {m['save_nat']:.2f} s | {r['render_ms']:.0f} ms | {max(r['plan_ms'].values()):.0f} ms "
                   f"| {share * 100:.1f} % |")
    large = [r for r in rows if "load_comments" in r["median_s"]]
    if large:
        out += ["", "| backend | services | full load, no comments (large-cluster mode) | bytes "
                "| with per-endpoint comments | bytes | saved |", "|---|---|---|---|---|---|---|"]
        for r in large:
            m, b = r["median_s"], r["bytes"]
            out.append(f"| {r['backend']} | {r['services']:,} | {m['load_no_comments']:.2f} s | {b['base.txt']:,} "
                       f"| {m['load_comments']:.2f} s | {b['base-comments.txt']:,} "
                       f"| {1 - m['load_no_comments'] / m['load_comments']:.0%} time, "
                       f"{1 - b['base.txt'] / b['base-comments.txt']:.0%} bytes |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--inputs", required=True, help="directory with one sub-directory of inputs per N")
    p.add_argument("--services", required=True, help="space-separated N list")
    p.add_argument("--backends", default="nft legacy")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--full-reps", type=int, default=3)
    p.add_argument("--large", type=int, default=10000, help="N at which large-cluster mode is measured")
    p.add_argument("--noflush-full-max", type=int, default=2000, help="largest N for a --noflush nft full sync")
    p.add_argument("--out", required=True, help="results.json to write")
    a = p.parse_args()
    rows = []
    for n in [int(x) for x in a.services.split()]:
        inputs = os.path.join(a.inputs, str(n))
        with open(os.path.join(inputs, "stats.json")) as f:
            stats = json.load(f)
        for backend in a.backends.split():
            print(f"bench-sync: N={n} {backend} …", file=sys.stderr, flush=True)
            times, sizes = measure(inputs, n, backend, a.reps, a.full_reps, n == a.large, a.noflush_full_max)
            rows.append(summarize(n, backend, times, sizes, stats))
            with open(a.out, "w") as f:
                json.dump(rows, f, indent=1)
    print(table(rows))


if __name__ == "__main__":
    main()
