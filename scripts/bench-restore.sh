#!/usr/bin/env bash
# Times the real iptables-restore for a synthetic cluster: N ClusterIP services × E ready
# endpoints, rendered by kubenat, loaded into a throwaway network namespace with the nft and
# the legacy backend; then `kubenat apply` of the same manifests (the daemon's full sync: read
# back, plan, restore in pieces on nft) into a fresh namespace against a plain restore of
# `kubenat render --jumps` into another. Usage: sudo scripts/bench-restore.sh [N=10000] [E=10]
# The load runs without --noflush (the namespace is empty, so the result is the same): with
# --noflush iptables-nft-restore 1.8.9 is superlinear in declared chains (see bench-sync.sh,
# which times the inputs the daemon's syncs write).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
E=${2:-10}
[ "$(id -u)" = 0 ] || { echo "bench-restore: run as root" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
ns="kn-bench-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 - "$N" "$E" > "$work/objects.yaml" <<'PY'
import sys
n, e = int(sys.argv[1]), int(sys.argv[2])
out = []
for s in range(n):
    ns = f"ns{s % 100}"
    out.append(f"""---
apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: {ns}}}
spec:
  clusterIP: 172.30.{s >> 8 & 255}.{s & 255}
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{s}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: svc-{s}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:""")
    for i in range(e):
        k = s * e + i
        out.append(f"- {{addresses: [10.{128 + (k >> 16)}.{k >> 8 & 255}.{k & 255}], nodeName: node-{k % 50}}}")
print("\n".join(out))
PY

start=$(date +%s.%N)
target/release/kubenat render --objects "$work/objects.yaml" --hostname-override node-1 \
  --cluster-cidr 10.128.0.0/9 > "$work/rules.txt"
end=$(date +%s.%N)
printf 'services=%d endpoints/service=%d input=%d bytes lines=%d\n' "$N" "$E" \
  "$(wc -c < "$work/rules.txt")" "$(wc -l < "$work/rules.txt")"
printf 'kubenat render (load YAML + convert + render + write): %.2f s\n' "$(awk "BEGIN{print $end - $start}")"
# Runs "$@" in a fresh network namespace (@NS@ in an argument stands for its name) and sets
# $seconds to its wall time.
timed() {
  ip netns add "$ns"
  local start end
  start=$(date +%s.%N)
  "${@//@NS@/$ns}" > /dev/null
  end=$(date +%s.%N)
  ip netns del "$ns"
  seconds=$(awk "BEGIN{printf \"%.2f\", $end - $start}")
}
for backend in nft legacy; do
  timed ip netns exec @NS@ "iptables-$backend-restore" -w 5 < "$work/rules.txt"
  printf 'iptables-%s-restore, full load into an empty namespace: %s s\n' "$backend" "$seconds"
done
target/release/kubenat render --jumps --objects "$work/objects.yaml" --hostname-override node-1 \
  --cluster-cidr 10.128.0.0/9 > "$work/rules-jumps.txt"
for backend in nft legacy; do
  timed ip netns exec @NS@ "iptables-$backend-restore" -w 5 < "$work/rules-jumps.txt"
  plain=$seconds
  timed target/release/kubenat apply --objects "$work/objects.yaml" --hostname-override node-1 \
    --cluster-cidr 10.128.0.0/9 --netns @NS@ --iptables-backend "$backend"
  printf 'kubenat apply (%s, empty namespace): %s s; plain restore of render --jumps: %s s; ratio %s\n' \
    "$backend" "$seconds" "$plain" "$(awk "BEGIN{printf \"%.1f\", $seconds / $plain}")"
done
