#!/usr/bin/env bash
# Userspace proxy vs iptables DNAT, on the real kernel, in throwaway namespaces: a node that
# routes between a server pod (10.244.1.2, gw 10.244.1.1) and a client pod (10.244.2.2, gw
# 10.244.2.1), Service default/bench 10.96.0.10 (sink 80→5001/TCP, echo 81→5002/TCP).
# Measures, through (a) `kubenat apply` (iptables mode, DNAT) and (b) the daemon with
# `--proxy-mode userspace --objects`:
#   - single-stream TCP throughput (send SIZE_MB MB to a sink, time until it acknowledges),
#   - latency of 1,000 sequential 64-byte request/response round trips on one connection,
# prints the userspace/DNAT ratios, then opens CONNS concurrent TCP connections through the
# userspace proxy (python asyncio) and checks all are established and echo.
# Usage: sudo scripts/bench-userspace.sh [SIZE_MB=500] [CONNS=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-500}
CONNS=${2:-10000}
[ "$(id -u)" = 0 ] || { echo "bench-userspace: run as root" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-userspace: python3 needed" >&2; exit 1; }
cargo build --release --quiet
BIN=$PWD/target/release/kubenat
# The daemon needs two descriptors per proxied connection (client side + backend side).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "ulimit -n: $(ulimit -n) (hard $(ulimit -Hn))"
if [ "$(ulimit -n)" -lt $((2 * CONNS + 100)) ]; then
    echo "warning: ulimit -n $(ulimit -n) < 2×$CONNS+100: the proxy cannot hold $CONNS connections here (no CAP_SYS_RESOURCE to raise the hard limit)" >&2
fi

tag=$$
node="kn-bu-node-$tag"; srv="kn-bu-srv-$tag"; cli="kn-bu-cli-$tag"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "$cli" "$srv" "$node"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# --- Namespaces (like tests/common/lab.rs, routed topology).
ip netns add "$node"; ip netns add "$srv"; ip netns add "$cli"
for n in "$node" "$srv" "$cli"; do ip -n "$n" link set lo up; done
ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
ip -n "$node" route add 10.96.0.0/12 dev lo
i=1
for pod in "$srv" "$cli"; do
    ip -n "$node" link add "veth$i" type veth peer name eth0 netns "$pod"
    ip -n "$node" addr add "10.244.$i.1/24" dev "veth$i"
    ip -n "$node" link set "veth$i" up
    ip -n "$pod" addr add "10.244.$i.2/24" dev eth0
    ip -n "$pod" link set eth0 up
    ip -n "$pod" route add default via "10.244.$i.1"
    i=$((i + 1))
done
NODE_IP=10.244.2.1   # the node's address facing the client

cat > "$work/objects.yaml" <<EOF
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.0.0/24}
status: {addresses: [{type: InternalIP, address: $NODE_IP}]}
---
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports:
  - {name: sink, port: 80, targetPort: 5001, protocol: TCP}
  - {name: echo, port: 81, targetPort: 5002, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-1, namespace: default, labels: {kubernetes.io/service-name: bench}}
addressType: IPv4
ports:
- {name: sink, port: 5001, protocol: TCP}
- {name: echo, port: 5002, protocol: TCP}
endpoints:
- {addresses: [10.244.1.2], nodeName: node-1, conditions: {ready: true}}
EOF

# --- Server: 5001 sink (reads to EOF, answers the byte count), 5002 echo (asyncio).
cat > "$work/server.py" <<'PY'
import asyncio, socket, sys
async def sink(r, w):
    n = 0
    while True:
        b = await r.read(1 << 20)
        if not b:
            break
        n += len(b)
    w.write(b"%d\n" % n); await w.drain(); w.close()
async def echo(r, w):
    try:
        while True:
            b = await r.read(65536)
            if not b:
                break
            w.write(b); await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    a = await asyncio.start_server(sink, "0.0.0.0", 5001, backlog=4096)
    b = await asyncio.start_server(echo, "0.0.0.0", 5002, backlog=16384)
    print("ready", flush=True)
    await asyncio.gather(a.serve_forever(), b.serve_forever())
asyncio.run(main())
PY
ip netns exec "$srv" sysctl -qw net.core.somaxconn=16384
ip netns exec "$srv" python3 "$work/server.py" > "$work/server.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q ready "$work/server.out" 2>/dev/null && break; sleep 0.1; done

cat > "$work/client.py" <<'PY'
import socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "wait":   # until one echo round trip works (≤ 10 s)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=1); s.sendall(b"x"); s.settimeout(1)
            if s.recv(1) == b"x":
                print("ok"); sys.exit(0)
        except OSError:
            time.sleep(0.1)
    print("never answered"); sys.exit(1)
if mode == "throughput":
    size = int(sys.argv[4]) << 20
    buf = b"\0" * (1 << 20)
    s = socket.create_connection((host, port), timeout=60)
    t = time.perf_counter(); sent = 0
    while sent < size:
        s.sendall(buf); sent += len(buf)
    s.shutdown(socket.SHUT_WR)
    got = int(s.makefile().readline())
    dt = time.perf_counter() - t
    assert got == size, (got, size)
    print("%.1f" % (size / dt / 1e6))
if mode == "latency":
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * 64; lat = []
    for _ in range(1000):
        t = time.perf_counter(); s.sendall(msg); got = b""
        while len(got) < 64:
            got += s.recv(64 - len(got))
        lat.append(time.perf_counter() - t)
    lat.sort()
    print("%.1f %.1f" % (lat[499] * 1e6, lat[989] * 1e6))
PY

cat > "$work/conns.py" <<'PY'
import asyncio, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    sem = asyncio.Semaphore(512)   # connects in flight at once; all stay open
    conns, errors = [], []
    async def one(i):
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
                conns.append((i, r, w))
            except Exception as e:
                errors.append(repr(e))
    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    opened = time.perf_counter() - t
    async def ping(i, r, w):
        msg = b"%d\n" % i
        w.write(msg); await w.drain()
        return await asyncio.wait_for(r.readexactly(len(msg)), 20) == msg
    t = time.perf_counter()
    ok = await asyncio.gather(*(ping(*c) for c in conns), return_exceptions=True)
    echoed = sum(1 for x in ok if x is True)
    pinged = time.perf_counter() - t
    print("established %d/%d in %.2fs, echoed %d/%d in %.2fs, connect errors %d %s"
          % (len(conns), n, opened, echoed, n, pinged, len(errors), errors[:3]))
    for _, _, w in conns:
        w.close()
    sys.exit(0 if echoed == n else 1)
asyncio.run(main())
PY

measure() {   # label
    ip netns exec "$cli" python3 "$work/client.py" wait 10.96.0.10 81 >/dev/null || { echo "$1: service never answered" >&2; exit 1; }
    tput=$(ip netns exec "$cli" python3 "$work/client.py" throughput 10.96.0.10 80 "$SIZE_MB")
    read -r p50 p99 < <(ip netns exec "$cli" python3 "$work/client.py" latency 10.96.0.10 81)
    printf '%-22s throughput %8s MB/s   latency p50 %7s us  p99 %7s us\n' "$1" "$tput" "$p50" "$p99"
}

# --- (a) iptables mode, DNAT.
ip netns exec "$node" "$BIN" apply --objects "$work/objects.yaml" --hostname-override node-1 \
    --cluster-cidr 10.244.0.0/16 >/dev/null
measure "iptables (DNAT)"
read -r dnat_tput dnat_p50 dnat_p99 <<<"$tput $p50 $p99"
ip netns exec "$node" "$BIN" --cleanup --iptables-backend nft >/dev/null 2>&1 || true

# --- (b) userspace mode: the daemon is the proxy.
ip netns exec "$node" "$BIN" --proxy-mode userspace --objects "$work/objects.yaml" \
    --hostname-override node-1 --cluster-cidr 10.244.0.0/16 --flannel-subnet-file /nonexistent \
    --proxy-port-range 36000-36999 --udp-timeout 250ms --bind-address 0.0.0.0 --node-ip "$NODE_IP" \
    --healthz-bind-address 127.0.0.1:20100 --metrics-bind-address 127.0.0.1:20101 --log warn \
    > "$work/daemon.log" 2>&1 &
pids+=($!)
measure "userspace proxy"
read -r us_tput us_p50 us_p99 <<<"$tput $p50 $p99"

python3 - "$dnat_tput" "$us_tput" "$dnat_p50" "$us_p50" "$dnat_p99" "$us_p99" <<'PY'
import sys
a = [float(x) for x in sys.argv[1:]]
print("userspace/DNAT: throughput x%.2f, latency p50 x%.2f, p99 x%.2f" % (a[1] / a[0], a[3] / a[2], a[5] / a[4]))
PY

# --- Concurrency through the userspace proxy.
echo "daemon fds before: $(ls /proc/"${pids[-1]}"/fd | wc -l)"
if ip netns exec "$cli" python3 "$work/conns.py" 10.96.0.10 81 "$CONNS"; then
    echo "concurrency: $CONNS connections OK"
else
    echo "concurrency: FAILED"; tail -20 "$work/daemon.log"; exit 1
fi
if ! kill -0 "${pids[-1]}" 2>/dev/null; then echo "daemon died:"; tail -20 "$work/daemon.log"; exit 1; fi
