//! Kubernetes objects the real-kernel tests write to the test API server.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// EndpointSlice `default/<service>-abcde` of `service`: one ready, serving endpoint per
/// `(address, node name)`, with `ports` (a JSON array of EndpointPorts).
pub fn ready_slice(service: &str, endpoints: &[(Ipv4Addr, String)], ports: Value) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node)| {
            json!({
                "addresses": [ip.to_string()],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "nodeName": node,
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abcde"),
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// `addresses`, each on node `node`.
pub fn on_node(addresses: &[Ipv4Addr], node: &str) -> Vec<(Ipv4Addr, String)> {
    addresses.iter().map(|ip| (*ip, node.to_string())).collect()
}
