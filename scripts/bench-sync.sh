#!/usr/bin/env bash
# Sync/apply benchmark: times the real iptables-restore (nft and legacy) in throwaway network
# namespaces for the inputs kubenat itself plans for N ClusterIP services × 10 endpoints —
# one endpoint changed, one service added, one removed, full sync — each next to the floor of
# the same run, plus a kube-proxy-style partial sync, deletes by rule number, iptables-save and
# large-cluster mode; writes results.json, a Markdown table and an SVG chart.
#
# Usage: sudo scripts/bench-sync.sh [OUT_DIR=bench/sync]
# Environment: SERVICES="1000 10000 20000"  BACKENDS="nft legacy"  REPS=3  FULL_REPS=3
#              LARGE=10000 (N at which large-cluster mode is measured; 0 = never)
#              NOFLUSH_FULL_MAX=2000 (largest N for the nft --noflush full sync: superlinear)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/sync}
SERVICES=${SERVICES:-1000 10000 20000}
BACKENDS=${BACKENDS:-nft legacy}
REPS=${REPS:-3}
FULL_REPS=${FULL_REPS:-$REPS}
LARGE=${LARGE:-10000}
NOFLUSH_FULL_MAX=${NOFLUSH_FULL_MAX:-2000}
[ "$(id -u)" = 0 ] || { echo "bench-sync: run as root (network namespaces, iptables)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-sync: python3 is needed" >&2; exit 1; }
cargo build --release --quiet --example bench_sync_inputs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for n in $SERVICES; do
  flags=()
  [ "$n" = "$LARGE" ] && flags=(--comments)
  target/release/examples/bench_sync_inputs "$n" "$work/$n" "${flags[@]}"
done
mkdir -p "$OUT"
python3 scripts/bench-sync.py --inputs "$work" --services "$SERVICES" --backends "$BACKENDS" \
  --reps "$REPS" --full-reps "$FULL_REPS" --large "$LARGE" \
  --noflush-full-max "$NOFLUSH_FULL_MAX" --out "$OUT/results.json" | tee "$OUT/results.md"
python3 scripts/bench-sync-chart.py "$OUT/results.json" "$OUT/apply-time.svg"
echo "bench-sync: wrote $OUT/results.json, $OUT/results.md and $OUT/apply-time.svg" >&2
