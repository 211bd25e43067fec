#!/usr/bin/env python3
"""Writes a synthetic cluster for `kubenat render --objects`: node-1, N ClusterIP Services
(`ns{s%100}/svc-{s}`, 172.30.x.y:80, port `http`) and one EndpointSlice each with E ready
endpoints (10.128.0.0/9, port 8080, on node-0 … node-49) — the benchmarks' synthetic state.

Usage: scripts/gen-objects.py N E [--yaml] > objects.json
Default output is one JSON `v1` List (what `kubectl get -o json` prints); with --yaml it is a
multi-document YAML stream (block style), one object per document.
"""
import json
import sys


def objects(n, e):
    yield {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "spec": {"podCIDR": "10.128.1.0/24", "podCIDRs": ["10.128.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]},
    }
    for s in range(n):
        yield {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"svc-{s}", "namespace": f"ns{s % 100}"},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": f"172.30.{s >> 8 & 255}.{s & 255}",
                "clusterIPs": [f"172.30.{s >> 8 & 255}.{s & 255}"],
                "ipFamilies": ["IPv4"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                "sessionAffinity": "None",
            },
        }
    for s in range(n):
        endpoints = []
        for i in range(e):
            k = s * e + i
            endpoints.append({
                "addresses": [f"10.{128 + (k >> 16)}.{k >> 8 & 255}.{k & 255}"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{k % 50}",
            })
        yield {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"svc-{s}-1",
                "namespace": f"ns{s % 100}",
                "labels": {"kubernetes.io/service-name": f"svc-{s}"},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }


def scalar(value):
    """A YAML scalar: JSON quoting for strings (always valid YAML), plain for the rest."""
    return json.dumps(value)


def block(value, indent):
    """Block-style YAML lines for a mapping, as `kubectl get -o yaml` writes them."""
    pad = " " * indent
    for key, item in value.items():
        if isinstance(item, dict):
            yield f"{pad}{key}:\n"
            yield from block(item, indent + 2)
        elif isinstance(item, list):
            yield f"{pad}{key}:\n"
            for element in item:
                if isinstance(element, dict):
                    lines = list(block(element, indent + 2))
                    yield f"{pad}- {lines[0][indent + 2:]}"
                    yield from lines[1:]
                else:
                    yield f"{pad}- {scalar(element)}\n"
        else:
            yield f"{pad}{key}: {scalar(item)}\n"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    n, e = int(args[0]), int(args[1])
    out = sys.stdout
    if "--yaml" in sys.argv:
        for obj in objects(n, e):
            out.write("---\n")
            out.write("".join(block(obj, 0)))
    else:
        json.dump({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                   "items": list(objects(n, e))}, out)
        out.write("\n")


if __name__ == "__main__":
    main()
