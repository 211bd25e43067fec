#!/usr/bin/env python3
"""Helpers for bench-latency.sh (standard library only).

  gen N E SEED BACKEND_IP    manifests: N services with ClusterIPs drawn at random (seeded)
                             across 10.96.0.0/12, E endpoints each on addresses nobody has,
                             plus zzz/target (sorts last, so its rule is last in the flat
                             KUBE-SERVICES) whose one endpoint is BACKEND_IP:8080; prints the
                             target's ClusterIP on stderr
  serve PORT                 accept-and-close TCP server (runs until killed)
  client SVC POD COUNT ROUNDS
                             ROUNDS × (COUNT fresh connects to SVC, then COUNT to POD), each
                             closed with RST so no TIME_WAIT piles up; prints one JSON line
"""
import json
import random
import socket
import struct
import sys
import time


def gen(n, e, seed, backend_ip):
    rng = random.Random(seed)
    used = set()

    def cluster_ip():
        while True:
            x = rng.randrange(1 << 20)
            ip = "10.%d.%d.%d" % (96 + (x >> 16), (x >> 8) & 255, x & 255)
            if x & 255 not in (0, 255) and ip not in used and ip != "10.96.0.1":
                used.add(ip)
                return ip

    out = []

    def service(ns, name, ip, endpoints):
        out.append(f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  clusterIP: {ip}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:""")
        for addr in endpoints:
            out.append(f"- {{addresses: [{addr}], nodeName: node-2}}")

    for s in range(n):
        eps = []
        for i in range(e):
            k = s * e + i
            eps.append("10.%d.%d.%d" % (128 + (k >> 16), (k >> 8) & 255, k & 255))
        service(f"ns{s % 100}", f"svc-{s}", cluster_ip(), eps)
    target = cluster_ip()
    service("zzz", "target", target, [backend_ip])
    print("\n".join(out))
    print(target, file=sys.stderr)


def serve(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(4096)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.close()


def connect_times(host, port, count):
    linger = struct.pack("ii", 1, 0)
    times = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.settimeout(2.0)
        t0 = time.perf_counter_ns()
        s.connect((host, port))
        t1 = time.perf_counter_ns()
        s.close()
        times.append((t1 - t0) / 1000.0)
    return times


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def client(svc, pod, count, rounds):
    targets = {"svc": svc.rsplit(":", 1), "pod": pod.rsplit(":", 1)}
    for host, port in targets.values():
        connect_times(host, int(port), 20)  # warm-up: neighbours, routes, caches
    samples = {k: [] for k in targets}
    round_medians = {k: [] for k in targets}
    for _ in range(rounds):
        for key, (host, port) in targets.items():
            t = connect_times(host, int(port), count)
            samples[key].extend(t)
            round_medians[key].append(pct(sorted(t), 0.5))
    result = {}
    for key, values in samples.items():
        values.sort()
        result[key] = {
            "median_us": round(pct(values, 0.5), 1),
            "p90_us": round(pct(values, 0.9), 1),
            "round_medians_us": [round(m, 1) for m in round_medians[key]],
            "n": len(values),
        }
    print(json.dumps(result))


def main(argv):
    if len(argv) >= 2 and argv[1] == "gen":
        gen(int(argv[2]), int(argv[3]), int(argv[4]), argv[5])
    elif len(argv) >= 2 and argv[1] == "serve":
        serve(int(argv[2]))
    elif len(argv) >= 2 and argv[1] == "client":
        client(argv[2], argv[3], int(argv[4]), int(argv[5]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
