#!/usr/bin/env bash
# Userspace proxy vs iptables DNAT, on the real kernel, in throwaway namespaces: a node that
# routes between a server pod (10.244.1.2, gw 10.244.1.1) and a client pod (10.244.2.2, gw
# 10.244.2.1), Service default/bench 10.96.0.10 (sink 80→5001/TCP, echo 81→5002/TCP).
# Measures, in ROUNDS alternating rounds (median reported), through (a) `kubenat apply`
# (iptables mode, DNAT), (b) the daemon with `--proxy-mode userspace --userspace-relay copy`
# and (c) the same with `--userspace-relay splice` (the default):
#   - single-stream TCP throughput (send SIZE_MB MB to a sink, time until it acknowledges),
#   - latency of 1,000 sequential 64-byte request/response round trips on one connection,
#   - for the userspace paths, the proxy's CPU time (user + system) per GB of that stream, which
#     is far less sensitive to other load on the machine than the throughput itself,
# prints the userspace/DNAT ratios of the medians, then opens CONNS concurrent TCP connections
# through the userspace proxy (python asyncio, in processes other than the proxy) and checks all
# are established at once and echo. CONNS defaults to 10,000, or to what the proxy's open-file
# hard limit can hold ((hard - 600) / 2: two descriptors per connection, 600 for the pipe pool
# of 128 pipes and the daemon's own files) when that is less.
# Usage: sudo scripts/bench-userspace.sh [SIZE_MB=500] [CONNS=auto] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-500}
CONNS=${2:-auto}
ROUNDS=${3:-3}
[ "$(id -u)" = 0 ] || { echo "bench-userspace: run as root" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-userspace: python3 needed" >&2; exit 1; }
cargo build --release --quiet
BIN=$PWD/target/release/kubenat
# The daemon needs two descriptors per proxied connection (client side + backend side).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "ulimit -n: $(ulimit -n) (hard $(ulimit -Hn))"
fits=$(( ($(ulimit -n) - 600) / 2 ))
if [ "$CONNS" = auto ]; then
    CONNS=$(( fits < 10000 ? fits : 10000 ))
    [ "$CONNS" -lt 10000 ] && echo "note: open-file limit $(ulimit -n) holds $CONNS proxied connections, not 10,000 (no CAP_SYS_RESOURCE to raise the hard limit)"
elif [ "$CONNS" -gt "$fits" ]; then
    echo "warning: ulimit -n $(ulimit -n) holds about $fits proxied connections; $CONNS will likely fail" >&2
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

# --- Namespaces (like testkit/src/lab.rs, routed topology).
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
import asyncio, os, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd_dir = sys.argv[4] if len(sys.argv) > 4 else None   # the proxy's /proc/PID/fd
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
    await asyncio.sleep(0.5)   # let the proxy finish dialling the last backends
    proxy_fds = len(os.listdir(fd_dir)) if fd_dir else -1
    async def ping(i, r, w):
        msg = b"%d\n" % i
        w.write(msg); await w.drain()
        return await asyncio.wait_for(r.readexactly(len(msg)), 20) == msg
    t = time.perf_counter()
    ok = await asyncio.gather(*(ping(*c) for c in conns), return_exceptions=True)
    echoed = sum(1 for x in ok if x is True)
    pinged = time.perf_counter() - t
    print("established %d/%d in %.2fs (proxy holds %d descriptors), echoed %d/%d in %.2fs, connect errors %d %s"
          % (len(conns), n, opened, proxy_fds, echoed, n, pinged, len(errors), errors[:3]))
    for _, _, w in conns:
        w.close()
    sys.exit(0 if echoed == n else 1)
asyncio.run(main())
PY

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime of a process

measure() {   # label [proxy pid: also report its CPU seconds per GB moved]
    ip netns exec "$cli" python3 "$work/client.py" wait 10.96.0.10 81 >/dev/null || { echo "$1: service never answered" >&2; exit 1; }
    local t0=0 t1=0
    [ -n "${2:-}" ] && t0=$(cpu_ticks "$2")
    tput=$(ip netns exec "$cli" python3 "$work/client.py" throughput 10.96.0.10 80 "$SIZE_MB")
    [ -n "${2:-}" ] && t1=$(cpu_ticks "$2")
    cpu=$(python3 -c "print('%.2f' % (($t1 - $t0) / $(getconf CLK_TCK) / ($SIZE_MB * 1048576 / 1e9)))")
    read -r p50 p99 < <(ip netns exec "$cli" python3 "$work/client.py" latency 10.96.0.10 81)
    printf '%-22s throughput %8s MB/s   latency p50 %7s us  p99 %7s us   proxy CPU %5s s/GB\n' \
        "$1" "$tput" "$p50" "$p99" "$cpu"
}

start_daemon() {   # relay
    ip netns exec "$node" "$BIN" --proxy-mode userspace --objects "$work/objects.yaml" \
        --hostname-override node-1 --cluster-cidr 10.244.0.0/16 --flannel-subnet-file /nonexistent \
        --proxy-port-range 36000-36999 --udp-timeout 250ms --bind-address 0.0.0.0 --node-ip "$NODE_IP" \
        --userspace-relay "$1" --healthz-bind-address 127.0.0.1:20100 --metrics-bind-address 127.0.0.1:20101 \
        --log warn >> "$work/daemon.log" 2>&1 &
    daemon=$!
    pids+=("$daemon")
}
stop_daemon() {
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    ip netns exec "$node" "$BIN" --cleanup --iptables-backend nft >/dev/null 2>&1 || true
}

declare -A results
for round in $(seq "$ROUNDS"); do
    echo "--- round $round/$ROUNDS"
    # (a) iptables mode, DNAT.
    ip netns exec "$node" "$BIN" apply --objects "$work/objects.yaml" --hostname-override node-1 \
        --cluster-cidr 10.244.0.0/16 >/dev/null
    measure "iptables (DNAT)"
    results[dnat]+="$tput $p50 $p99 $cpu;"
    ip netns exec "$node" "$BIN" --cleanup --iptables-backend nft >/dev/null 2>&1 || true
    # (b), (c) userspace mode: the daemon is the proxy.
    for relay in copy splice; do
        start_daemon "$relay"
        measure "userspace ($relay)" "$daemon"
        results[$relay]+="$tput $p50 $p99 $cpu;"
        stop_daemon
    done
done

python3 - "${results[dnat]}" "${results[copy]}" "${results[splice]}" <<'PY'
import statistics, sys
def medians(text):
    rows = [[float(x) for x in r.split()] for r in text.split(";") if r.strip()]
    return [statistics.median(col) for col in zip(*rows)]
dnat, copy, splice = (medians(a) for a in sys.argv[1:])
print("medians of %d rounds:" % len(sys.argv[1].strip(";").split(";")))
for name, m in (("iptables (DNAT)", dnat), ("userspace (copy)", copy), ("userspace (splice)", splice)):
    cpu = "" if name.startswith("iptables") else "   proxy CPU %.2f s/GB" % m[3]
    print("  %-20s throughput %8.1f MB/s   latency p50 %7.1f us  p99 %7.1f us%s" % (name, *m[:3], cpu))
for name, m in (("copy", copy), ("splice", splice)):
    print("userspace %s/DNAT: throughput x%.2f, latency p50 x%.2f, p99 x%.2f"
          % (name, m[0] / dnat[0], m[1] / dnat[1], m[2] / dnat[2]))
PY

# --- Concurrency through the userspace proxy (default relay).
start_daemon splice
ip netns exec "$cli" python3 "$work/client.py" wait 10.96.0.10 81 >/dev/null || { echo "daemon never answered" >&2; exit 1; }
echo "daemon fds before: $(ls /proc/"$daemon"/fd | wc -l)"
if ip netns exec "$cli" python3 "$work/conns.py" 10.96.0.10 81 "$CONNS" "/proc/$daemon/fd"; then
    echo "concurrency: $CONNS connections open at once through the proxy, all echoed"
else
    echo "concurrency: FAILED"; tail -20 "$work/daemon.log"; exit 1
fi
if ! kill -0 "$daemon" 2>/dev/null; then echo "daemon died:"; tail -20 "$work/daemon.log"; exit 1; fi
