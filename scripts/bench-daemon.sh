#!/usr/bin/env bash
# The daemon at scale: N ClusterIP services × E endpoints served by the project's test API
# server, the real daemon (release build) syncing them into a throwaway network namespace.
# Reports time to the first full sync, RSS, and event-to-rules latency (object written to the
# API → first TCP connection answered through the new rule) with the partial restore size, and
# what quiet sync periods cost against one full sync (CPU of the daemon and its iptables tools).
# Usage: sudo scripts/bench-daemon.sh [N=10000] [E=10] [backends="nft legacy"]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
E=${2:-10}
BACKENDS=${3:-nft legacy}
[ "$(id -u)" = 0 ] || { echo "bench-daemon: run as root" >&2; exit 1; }
report=$(mktemp)
trap 'rm -f "$report"' EXIT
for backend in $BACKENDS; do
  KUBENAT_SCALE_SERVICES=$N KUBENAT_SCALE_ENDPOINTS=$E KUBENAT_SCALE_BACKEND=$backend \
    KUBENAT_SCALE_REPORT=$report \
    cargo test --release --quiet --test scale_daemon -- --ignored --nocapture --test-threads=1 >/dev/null
done
cat "$report"
