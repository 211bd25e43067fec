#!/usr/bin/env bash
# Times one UDP conntrack reconciliation against a large table, in a throwaway network
# namespace: examples/bench_conntrack.rs fills the namespace's table with N UDP flows to 100
# services (STALE% of them DNATed to pods that are no endpoints), then reports a plain netlink
# dump of the table (the floor), one reconciliation (dump + deletes) and their peak RSS growth.
# For scale, `conntrack -L -p udp > /dev/null` of the same table is timed here too.
# Usage: sudo scripts/bench-conntrack.sh [N=100000] [STALE%=10]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
STALE=${2:-10}
[ "$(id -u)" = 0 ] || { echo "bench-conntrack: run as root" >&2; exit 1; }
command -v conntrack >/dev/null || { echo "bench-conntrack: conntrack (conntrack-tools) not installed" >&2; exit 1; }
max=$(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo 0)
[ "$max" -ge $((N + 1000)) ] || { echo "bench-conntrack: nf_conntrack_max=$max is below $N flows" >&2; exit 1; }
cargo build --release --quiet --example bench_conntrack
ns="kn-ctbench-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"

# The example deletes the stale share; the CLI listing is timed on a second, full table.
ip netns exec "$ns" target/release/examples/bench_conntrack "$N" "$STALE"

ip netns del "$ns"
ip netns add "$ns"
ip netns exec "$ns" target/release/examples/bench_conntrack "$N" 0 >/dev/null
start=$(date +%s%N)
ip netns exec "$ns" conntrack -L -p udp >/dev/null 2>&1
end=$(date +%s%N)
echo "cli: conntrack -L -p udp of $N flows in $(( (end - start) / 1000000 )) ms"
