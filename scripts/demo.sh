#!/usr/bin/env bash
# kubenat demo, no cluster needed: builds a one-node "cluster" out of network namespaces
# (a node that routes, two backend pods, one client pod), renders the bundled example
# (examples/demo) and applies it to the node with `kubenat apply`, then sends real TCP and UDP
# requests through the ClusterIP and a NodePort. Everything is removed on exit.
# Run on Debian/Ubuntu as root, or as a user with sudo: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  # As a user: run again with sudo, keeping the user's Rust toolchain.
  if ! command -v sudo >/dev/null; then echo "demo: run as root (it creates network namespaces)" >&2; exit 1; fi
  export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
  exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME "$0" "$@"
fi
missing=()
command -v iptables-nft-restore >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
cargo build --quiet
KUBENAT=target/debug/kubenat
P="kn-demo-$$"
NODE="$P-node"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for n in node pod1 pod2 client; do ip netns del "$P-$n" 2>/dev/null || true; done
}
trap cleanup EXIT

SERVER='
import socket, sys, threading
name = sys.argv[1]
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8080)); s.listen(64)
    while True:
        c, a = s.accept(); c.sendall(f"hello from {name}, you are {a[0]}\n".encode()); c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5353))
    while True:
        d, a = s.recvfrom(2048); text = d.decode(errors="replace")
        s.sendto(f"udp echo from {name}: {text}".encode(), a)
threading.Thread(target=udp, daemon=True).start(); tcp()
'
CLIENT='
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=2); print("  " + s.recv(200).decode().strip())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        s.sendto(b"ping", (host, port)); print("  " + s.recv(200).decode().strip())
except ConnectionRefusedError: print("  connection refused")
except OSError as e: print(f"  {e}")
'

ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" sysctl -qw net.ipv4.ip_forward=1
# What the daemon sets at start for localhost NodePorts (`kubenat apply` does not tune the node).
ip netns exec "$NODE" sysctl -qw net.ipv4.conf.all.route_localnet=1
ip -n "$NODE" route add 10.96.0.0/12 dev lo   # service CIDR: routable before DNAT
i=0
for pod in pod1 pod2 client; do
  i=$((i + 1))
  ns="$P-$pod"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$NODE" link add "veth$i" type veth peer name eth0 netns "$ns"
  ip -n "$NODE" addr add "10.244.$i.1/24" dev "veth$i"
  ip -n "$NODE" link set "veth$i" up
  ip -n "$ns" addr add "10.244.$i.2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "10.244.$i.1"
done
for pod in pod1 pod2; do
  ip netns exec "$P-$pod" python3 -c "$SERVER" "$pod" & pids+=($!)
done
sleep 1

ARGS=(--objects examples/demo --hostname-override node-1 --cluster-cidr 10.244.0.0/16)
echo "== kubenat render ${ARGS[*]}  (nat rules of demo/hello:http)"
"$KUBENAT" render "${ARGS[@]}" | grep -E 'demo/hello:http|^\*nat' | head -12
echo
echo "== kubenat apply (into the node namespace)"
"$KUBENAT" apply "${ARGS[@]}" --netns "$NODE"
echo
echo "== 6 TCP connections from the client pod to ClusterIP 10.96.0.10:80"
for _ in 1 2 3 4 5 6; do ip netns exec "$P-client" python3 -c "$CLIENT" tcp 10.96.0.10 80; done
echo "== UDP to 10.96.0.10:53"
ip netns exec "$P-client" python3 -c "$CLIENT" udp 10.96.0.10 53
echo "== NodePort 30080 on the node's address 10.244.3.1 (masqueraded)"
ip netns exec "$P-client" python3 -c "$CLIENT" tcp 10.244.3.1 30080
echo "== demo/nobody-home (no endpoints) at 10.96.0.20:80"
ip netns exec "$P-client" python3 -c "$CLIENT" tcp 10.96.0.20 80
echo
echo "== kubenat trace over the node's live rules"
ip netns exec "$NODE" iptables-save > "/tmp/$P.rules"
"$KUBENAT" trace --rules "/tmp/$P.rules" --src 10.244.3.2 --dst 10.96.0.10:80/tcp
rm -f "/tmp/$P.rules"
echo
echo "== kubenat explain: does demo/hello work on this node? (live rules, conntrack and sysctls)"
"$KUBENAT" explain service demo/hello "${ARGS[@]}" --netns "$NODE" --port http 2>/dev/null | head -6 || true
echo
echo "== applying again changes nothing"
"$KUBENAT" apply "${ARGS[@]}" --netns "$NODE"
