#!/usr/bin/env bash
# `kubenat render` of a whole synthetic cluster from one file, against the floor it is meant to
# stay far below: a legacy `iptables-legacy-restore` of its own output into a fresh network
# namespace. N ClusterIP Services × E ready endpoints (+ node-1) from scripts/gen-objects.py,
# as one JSON List (default) or multi-document YAML. Reports the render's wall time (median of
# RUNS, default 5) and peak RSS, the restore's wall time (median of RESTORES, default 3), and
# their ratio; the goal is at most 5 %. Usage: sudo scripts/bench-render.sh [N=10000] [E=10]
# [json|yaml]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
E=${2:-10}
FORMAT=${3:-json}
RUNS=${RUNS:-5}
RESTORES=${RESTORES:-3}
[ "$(id -u)" = 0 ] || { echo "bench-render: run as root (network namespaces)" >&2; exit 1; }
command -v iptables-legacy-restore >/dev/null || { echo "bench-render: iptables-legacy-restore missing" >&2; exit 1; }
case "$FORMAT" in json) flag= ;; yaml) flag=--yaml ;; *) echo "bench-render: json or yaml" >&2; exit 1 ;; esac
cargo build --release --quiet --bin kubenat
work=$(mktemp -d)
ns="kn-render-$$-$RANDOM"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 scripts/gen-objects.py "$N" "$E" $flag > "$work/objects.$FORMAT"
args=(render --objects "$work/objects.$FORMAT" --hostname-override node-1 --cluster-cidr 10.128.0.0/9)
median() { sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }

target/release/kubenat "${args[@]}" > "$work/rules.txt"   # also warms the page cache
for _ in $(seq "$RUNS"); do
  /usr/bin/time -f '%e %M' -o "$work/time" target/release/kubenat "${args[@]}" > /dev/null
  cat "$work/time" >> "$work/times"
done
render_s=$(cut -d' ' -f1 "$work/times" | median)
rss_kb=$(cut -d' ' -f2 "$work/times" | sort -g | tail -1)

for _ in $(seq "$RESTORES"); do
  ip netns add "$ns"
  start=$(date +%s.%N)
  # A lock file of its own: the namespace is ours alone, and waiting for other users of the
  # host-wide /run/xtables.lock would be timed as restore work.
  XTABLES_LOCKFILE="$work/xtables.lock" ip netns exec "$ns" iptables-legacy-restore -w 5 < "$work/rules.txt"
  end=$(date +%s.%N)
  ip netns del "$ns"
  awk "BEGIN{print $end - $start}" >> "$work/restores"
done
restore_s=$(median < "$work/restores")

printf 'input: %s, %d Services x %d endpoints, %d bytes; output: %d bytes, %d lines\n' "$FORMAT" "$N" "$E" \
  "$(wc -c < "$work/objects.$FORMAT")" "$(wc -c < "$work/rules.txt")" "$(wc -l < "$work/rules.txt")"
printf 'kubenat render: %.3f s (median of %d), peak RSS %d MB\n' "$render_s" "$RUNS" $((rss_kb / 1024))
printf 'iptables-legacy-restore of its output into a fresh namespace: %.2f s (median of %d)\n' \
  "$restore_s" "$RESTORES"
printf 'render / restore: %.1f %% (goal: at most 5 %%)\n' "$(awk "BEGIN{print 100 * $render_s / $restore_s}")"
