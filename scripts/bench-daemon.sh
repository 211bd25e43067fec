#!/usr/bin/env bash
# The daemon at scale: N ClusterIP services × E endpoints served by the project's test API
# server, the real daemon (release build) syncing them into a throwaway network namespace.
# - tests/scale_daemon.rs: time to the first full sync, RSS, and event-to-rules latency (object
#   written to the API → first TCP connection answered through the new rule) with the partial
#   restore size, and what quiet sync periods cost against one full sync (CPU of the daemon and
#   its iptables tools);
# - tests/scale_changes.rs: cost per change — peak RSS of the first full sync, the daemon's own
#   CPU and the partial sync duration per single-endpoint change against the floor (one
#   service's chains rewritten with iptables-restore --noflush), and 100 changes/s for 60 s
#   (CPU in cores, event → kernel latency, every change in the kernel).
# Usage: sudo scripts/bench-daemon.sh [N=10000] [E=10] [backends="nft legacy"]
#   N may be a list ("1000 10000 20000"): every test runs once per N and backend.
#   Defaults come from KUBENAT_SCALE_SERVICES / KUBENAT_SCALE_ENDPOINTS / KUBENAT_SCALE_BACKEND
#   when set; KUBENAT_SCALE_REPORT names a report file to append to (kept), otherwise a
#   temporary one is used. TESTS picks the test files (default "scale_daemon scale_changes").
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES=${1:-${KUBENAT_SCALE_SERVICES:-10000}}
E=${2:-${KUBENAT_SCALE_ENDPOINTS:-10}}
BACKENDS=${3:-${KUBENAT_SCALE_BACKEND:-nft legacy}}
TESTS=${TESTS:-scale_daemon scale_changes}
[ "$(id -u)" = 0 ] || { echo "bench-daemon: run as root" >&2; exit 1; }
if [ -n "${KUBENAT_SCALE_REPORT:-}" ]; then
  report=$KUBENAT_SCALE_REPORT
else
  report=$(mktemp)
  trap 'rm -f "$report"' EXIT
fi
for n in $SERVICES; do
  for backend in $BACKENDS; do
    for test in $TESTS; do
      KUBENAT_SCALE_SERVICES=$n KUBENAT_SCALE_ENDPOINTS=$E KUBENAT_SCALE_BACKEND=$backend \
        KUBENAT_SCALE_REPORT=$report \
        cargo test --release --quiet --test "$test" -- --ignored --nocapture --test-threads=1 >/dev/null
    done
  done
done
cat "$report"
