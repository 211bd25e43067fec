//! Kubernetes objects the integration tests write to the test API server or to manifest files,
//! as the API server stores them: Services, EndpointSlices (one per Service, named
//! `<service>-slice`) and Nodes. Variants are the base object with a JSON [`merge`] patch.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// The node every daemon runs as (`--hostname-override node-1`).
pub const NODE: &str = "node-1";

/// A Service port: name, port, targetPort, protocol (`TCP`/`UDP`), optional nodePort.
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
    /// `nodePort`, when the Service is a NodePort.
    pub node_port: Option<u16>,
}

impl Port {
    /// A port named `name`.
    pub fn new(name: &str, port: u16, target: u16, protocol: &'static str) -> Port {
        Port { name: name.to_string(), port, target, protocol, node_port: None }
    }

    /// A TCP port.
    pub fn tcp(name: &str, port: u16, target: u16) -> Port {
        Port::new(name, port, target, "TCP")
    }

    /// A UDP port.
    pub fn udp(name: &str, port: u16, target: u16) -> Port {
        Port::new(name, port, target, "UDP")
    }

    /// This port with `nodePort`.
    pub fn node_port(self, node_port: u16) -> Port {
        Port { node_port: Some(node_port), ..self }
    }
}

/// `ports` with consecutive nodePorts from `first` (unchanged when `first` is `None`).
pub fn with_node_ports(ports: &[Port], first: Option<u16>) -> Vec<Port> {
    let mut out = ports.to_vec();
    if let Some(first) = first {
        for (i, port) in out.iter_mut().enumerate() {
            port.node_port = Some(first + i as u16);
        }
    }
    out
}

/// The usual probed ports: `http` 80→8080/TCP and `dns` 53→5353/UDP.
pub fn web_ports() -> Vec<Port> {
    vec![Port::tcp("http", 80, 8080), Port::udp("dns", 53, 5353)]
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

/// One endpoint of a slice: address, node, conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ep {
    /// The pod address.
    pub ip: Ipv4Addr,
    /// `nodeName`.
    pub node: String,
    /// Its conditions.
    pub state: EpState,
}

/// Ready endpoints at `addresses`, all on `node`.
pub fn ready_on(addresses: &[Ipv4Addr], node: &str) -> Vec<Ep> {
    addresses.iter().map(|ip| Ep { ip: *ip, node: node.to_string(), state: EpState::Ready }).collect()
}

/// Endpoints on [`NODE`] with the given conditions.
pub fn on_this_node(endpoints: &[(Ipv4Addr, EpState)]) -> Vec<Ep> {
    endpoints.iter().map(|(ip, state)| Ep { ip: *ip, node: NODE.to_string(), state: *state }).collect()
}

/// A Service in `default` on cluster IP `ip`: `ClusterIP`, or `NodePort` when a port has a
/// nodePort.
pub fn service(name: &str, ip: Ipv4Addr, ports: &[Port]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            let mut port = json!({ "name": p.name, "port": p.port, "targetPort": p.target, "protocol": p.protocol });
            if let Some(node_port) = p.node_port {
                port["nodePort"] = json!(node_port);
            }
            port
        })
        .collect();
    let kind = if ports.iter().any(|p| p.get("nodePort").is_some()) { "NodePort" } else { "ClusterIP" };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "type": kind, "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()], "ports": ports },
    })
}

/// The EndpointSlice [`slice_name`]`(service)` of `default/<service>`, with the target ports of
/// `ports`.
pub fn slice(service: &str, endpoints: &[Ep], ports: &[Port]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|ep| json!({ "addresses": [ep.ip.to_string()], "conditions": ep.state.conditions(), "nodeName": ep.node }))
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

/// Node `name` with pod CIDR 10.244.0.0/24 and, when given, `ip` as its InternalIP.
pub fn node(name: &str, ip: Option<Ipv4Addr>) -> Value {
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name },
        "spec": { "podCIDR": "10.244.0.0/24" },
    });
    if let Some(ip) = ip {
        node["status"] = json!({ "addresses": [{ "type": "InternalIP", "address": ip.to_string() }] });
    }
    node
}

/// `base` with `patch` merged in (JSON merge patch: objects merge key by key, `null` removes,
/// anything else replaces).
pub fn merge(mut base: Value, patch: Value) -> Value {
    merge_into(&mut base, patch);
    base
}

fn merge_into(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge_into(base.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (base, patch) => *base = patch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patches_nested_objects() {
        let base = json!({ "a": { "b": 1, "c": 2 }, "d": [1] });
        let merged = merge(base, json!({ "a": { "b": 3, "c": null }, "d": [2], "e": "x" }));
        assert_eq!(merged, json!({ "a": { "b": 3 }, "d": [2], "e": "x" }));
    }

    #[test]
    fn a_node_port_makes_a_node_port_service() {
        let svc = service("web", Ipv4Addr::new(10, 96, 0, 10), &[Port::tcp("http", 80, 8080).node_port(30080)]);
        assert_eq!(svc["spec"]["type"], "NodePort");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    }
}
