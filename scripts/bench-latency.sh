#!/usr/bin/env bash
# First-packet latency: how long a fresh TCP connect takes through the node's NAT rules, for
# N services with ClusterIPs allocated at random across 10.96.0.0/12 (seeded), with the flat
# (kube-proxy) and the tree (--services-dispatch=tree) layout, on the nft and legacy backends.
#
# Per configuration it builds three namespaces — pod (10.244.1.2), node (routes, holds the
# rules: `kubenat render --jumps` piped to the backend's iptables-restore, which unlike
# `kubenat apply` has no time limit, as a 20k-service nft load can exceed one minute) and
# backend (10.244.2.2, accept-and-close server on :8080) — and measures ROUNDS × COUNT
# connects from the pod to
#   svc: the ClusterIP of zzz/target, whose rule is the LAST one in the flat KUBE-SERVICES;
#   pod: the backend pod directly (no Service: pays only for walking KUBE-SERVICES).
# Rounds alternate svc/pod so both see the same machine load; medians and p90 are over all
# COUNT × ROUNDS samples, the spread is the min–max of the per-round medians.
#
# Usage: sudo scripts/bench-latency.sh [SIZES="100 10000 20000"] [COUNT=2000] [ROUNDS=3]
#        env: E=3 (endpoints per service), SEED=1, BACKENDS="nft legacy", LAYOUTS="flat tree"
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-"100 10000 20000"}
COUNT=${2:-2000}
ROUNDS=${3:-3}
E=${E:-3}
SEED=${SEED:-1}
BACKENDS=${BACKENDS:-"nft legacy"}
LAYOUTS=${LAYOUTS:-"flat tree"}
[ "$(id -u)" = 0 ] || { echo "bench-latency: run as root" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-latency: needs python3" >&2; exit 1; }
cargo build --release --quiet
kubenat=target/release/kubenat
helper=scripts/bench-latency.py
work=$(mktemp -d)
tag="knl-$$"
server_pid=""

teardown() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=""
  for role in pod node be; do ip netns del "$tag-$role" 2>/dev/null || true; done
}
trap 'teardown; rm -rf "$work"' EXIT

setup() {
  for role in pod node be; do ip netns add "$tag-$role"; done
  local node="ip netns exec $tag-node"
  $node sysctl -qw net.ipv4.ip_forward=1
  $node ip link set lo up
  $node ip route add 10.96.0.0/12 dev lo
  local i=1
  for role in pod be; do
    $node ip link add "v$role" type veth peer name eth0 netns "$tag-$role"
    $node ip addr add "10.244.$i.1/24" dev "v$role"
    $node ip link set "v$role" up
    ip netns exec "$tag-$role" ip link set lo up
    ip netns exec "$tag-$role" ip addr add "10.244.$i.2/24" dev eth0
    ip netns exec "$tag-$role" ip link set eth0 up
    ip netns exec "$tag-$role" ip route add default via "10.244.$i.1"
    i=$((i + 1))
  done
  ip netns exec "$tag-be" python3 "$helper" serve 8080 > "$work/server.out" &
  server_pid=$!
  for _ in $(seq 50); do grep -q ready "$work/server.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench-latency: server did not start" >&2
  exit 1
}

now() { date +%s.%N; }
elapsed() { awk "BEGIN{printf \"%.1f\", $2 - $1}"; }

results="$work/results.txt"
: > "$results"
for n in $SIZES; do
  python3 "$helper" gen "$n" "$E" "$SEED" 10.244.2.2 > "$work/objects-$n.yaml" 2> "$work/target-$n.txt"
  target=$(cat "$work/target-$n.txt")
  for layout in $LAYOUTS; do
    $kubenat render --jumps --objects "$work/objects-$n.yaml" --hostname-override node-1 \
      --cluster-cidr 10.244.0.0/16 --services-dispatch "$layout" > "$work/rules-$n-$layout.txt"
  done
  for backend in $BACKENDS; do
    for layout in $LAYOUTS; do
      setup
      start=$(now)
      # A fresh namespace: no --noflush (one nft --noflush transaction is superlinear in the
      # chains it declares; without it 20k services load in about two minutes).
      ip netns exec "$tag-node" "iptables-$backend-restore" -w 5 < "$work/rules-$n-$layout.txt"
      load=$(elapsed "$start" "$(now)")
      json=$(ip netns exec "$tag-pod" python3 "$helper" client "$target:80" 10.244.2.2:8080 "$COUNT" "$ROUNDS")
      teardown
      python3 - "$n" "$backend" "$layout" "$load" "$json" >> "$results" <<'PY'
import json, sys
n, backend, layout, load, data = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
s, p = data["svc"], data["pod"]
spread = lambda r: f"{min(r['round_medians_us']):.0f}–{max(r['round_medians_us']):.0f}"
print(f"| {n} | {backend} | {layout} | {s['median_us']:.0f} | {s['p90_us']:.0f} | {spread(s)} "
      f"| {p['median_us']:.0f} | {p['p90_us']:.0f} | {spread(p)} | {load} |")
PY
      tail -n 1 "$results"
    done
  done
done

echo
echo "connects per cell: $COUNT × $ROUNDS rounds; E=$E endpoints/service; seed $SEED; times in µs"
echo "| services | backend | layout | svc median | svc p90 | svc round medians | pod median | pod p90 | pod round medians | load (s) |"
echo "|---:|---|---|---:|---:|---|---:|---:|---|---:|"
cat "$results"
