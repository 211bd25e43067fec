//! Kubernetes objects for the fault tests, as the API server stores them: Services,
//! EndpointSlices (one per Service, named `<service>-slice`) and the Node.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// The node every daemon runs as.
pub const NODE: &str = "node-1";

/// A Service port: name, port, targetPort, protocol (`TCP`/`UDP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Port name.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Target (endpoint) port.
    pub target: u16,
    /// `TCP` or `UDP`.
    pub protocol: &'static str,
}

impl Port {
    /// A port named `name`.
    pub fn new(name: &str, port: u16, target: u16, protocol: &'static str) -> Port {
        Port { name: name.to_string(), port, target, protocol }
    }
}

/// The probed Services' ports: `http` 80→8080/TCP and `dns` 53→5353/UDP.
pub fn web_ports() -> Vec<Port> {
    vec![Port::new("http", 80, 8080, "TCP"), Port::new("dns", 53, 5353, "UDP")]
}

/// An endpoint's conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EpState {
    /// ready, serving.
    Ready,
    /// not ready, not serving (failing its readiness probe).
    NotReady,
    /// terminating and still serving.
    Terminating,
}

impl EpState {
    fn conditions(self) -> Value {
        match self {
            EpState::Ready => json!({ "ready": true, "serving": true, "terminating": false }),
            EpState::NotReady => json!({ "ready": false, "serving": false, "terminating": false }),
            EpState::Terminating => json!({ "ready": false, "serving": true, "terminating": true }),
        }
    }
}

/// A `ClusterIP` (or, with `node_port`, `NodePort`) Service in `default`.
pub fn service(name: &str, ip: Ipv4Addr, ports: &[Port], node_port: Option<u16>) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut port = json!({ "name": p.name, "port": p.port, "targetPort": p.target, "protocol": p.protocol });
            if let Some(np) = node_port {
                // One NodePort per Service port, consecutive.
                port["nodePort"] = json!(np + i as u16);
            }
            port
        })
        .collect();
    let kind = if node_port.is_some() { "NodePort" } else { "ClusterIP" };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "type": kind, "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()], "ports": ports },
    })
}

/// The EndpointSlice `<service>-slice` of `service`, endpoints on this node.
pub fn slice(service: &str, endpoints: &[(Ipv4Addr, EpState)], ports: &[Port]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, state)| json!({ "addresses": [ip.to_string()], "conditions": state.conditions(), "nodeName": NODE }))
        .collect();
    let ports: Vec<Value> =
        ports.iter().map(|p| json!({ "name": p.name, "port": p.target, "protocol": p.protocol })).collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(service),
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// The name of `service`'s EndpointSlice.
pub fn slice_name(service: &str) -> String {
    format!("{service}-slice")
}

/// The Node the daemon runs as, with `ip` as its InternalIP.
pub fn node(ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": NODE },
        "spec": { "podCIDR": "10.244.0.0/24" },
        "status": { "addresses": [{ "type": "InternalIP", "address": ip.to_string() }] },
    })
}
