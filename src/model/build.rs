//! Short constructors for model values, defined once for unit tests, integration tests,
//! benchmarks and examples: a ClusterIP service port with endpoints, a ready endpoint, a
//! cluster state, a node configuration. Every value is plain data; adjust fields with struct
//! update syntax (`NodeConfig { masquerade_all: true, ..build::node(IpFamily::V4) }`).

use std::net::SocketAddr;
use std::sync::Arc;

use super::{ClusterState, Endpoint, IpFamily, LocalDetector, NodeConfig, Protocol, ServicePort, ServicePortName};

/// The node the built node configurations are named.
pub const NODE: &str = "node-1";
/// The node built endpoints are on (so they are remote to [`NODE`]).
pub const OTHER_NODE: &str = "node-2";

/// `namespace/name:port` over TCP.
pub fn port_name(namespace: &str, name: &str, port: &str) -> ServicePortName {
    ServicePortName { namespace: namespace.into(), name: name.into(), port: port.into(), protocol: Protocol::Tcp }
}

/// A ClusterIP service port `default/<name>:http` on `ip`:80 with ready `endpoints`
/// (`IP:port`, in canonical order), each on [`OTHER_NODE`].
///
/// # Panics
/// When `ip` or an endpoint does not parse (a bug in the caller).
pub fn service(name: &str, ip: &str, endpoints: &[&str]) -> ServicePort {
    let mut endpoints: Vec<Endpoint> = endpoints.iter().map(|e| endpoint(e.parse().expect("IP:port"))).collect();
    endpoints.sort_by_cached_key(Endpoint::key);
    let ip = ip.parse().expect("cluster IP");
    ServicePort { endpoints, ..ServicePort::new(port_name("default", name, "http"), vec![ip], 80) }
}

/// A ready, serving endpoint at `addr` on [`OTHER_NODE`], without hints.
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        addr,
        ready: true,
        serving: true,
        terminating: false,
        node_name: Some(OTHER_NODE.into()),
        zone_hints: vec![],
        node_hints: vec![],
    }
}

/// The cluster view holding `services`.
pub fn state(services: Vec<ServicePort>) -> ClusterState {
    ClusterState { services: services.into_iter().map(|s| (s.name.clone(), Arc::new(s))).collect() }
}

/// [`NODE`] for `family`, detecting local traffic by the pod CIDR (10.244.0.0/16 or
/// fd00:10:244::/56), everything else kube-proxy's defaults.
///
/// # Panics
/// Never: the CIDRs are constants.
pub fn node(family: IpFamily) -> NodeConfig {
    let cidr = match family {
        IpFamily::V4 => "10.244.0.0/16",
        IpFamily::V6 => "fd00:10:244::/56",
    };
    NodeConfig {
        family,
        node_name: NODE.into(),
        local_detector: LocalDetector::Cidr(cidr.parse().expect("pod CIDR")),
        ..NodeConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_service_with_sorted_ready_endpoints() {
        let svc = service("web", "10.96.0.10", &["10.244.2.7:8080", "10.244.1.5:8080"]);
        assert_eq!(svc.name.to_string(), "default/web:http");
        assert_eq!(svc.port, 80);
        let addrs: Vec<String> = svc.endpoints.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, ["10.244.1.5:8080", "10.244.2.7:8080"]);
        assert!(svc.endpoints.iter().all(|e| e.ready && e.serving && !e.terminating));
        assert_eq!(node(IpFamily::V6).family, IpFamily::V6);
    }
}
