//! The synthetic cluster every benchmark uses: N ClusterIP services (`ns{s%100}/svc-{s}:http`,
//! 172.30.x.y:80) × E ready endpoints (10.128.0.0/9, port 8080) on 50 nodes.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use kubenat::model::build;
use kubenat::model::{ClusterState, Endpoint, LocalDetector, NodeConfig, Protocol, ServicePort, ServicePortName};

/// Endpoints per service in the benchmarks.
pub const ENDPOINTS: u32 = 10;

/// The name of service `s`.
pub fn name(s: u32) -> ServicePortName {
    ServicePortName {
        namespace: format!("ns{}", s % 100).into(),
        name: format!("svc-{s}").into(),
        port: "http".into(),
        protocol: Protocol::Tcp,
    }
}

/// The `n`-th endpoint overall.
pub fn endpoint(n: u32) -> Endpoint {
    let ip = Ipv4Addr::new(10, 128 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
    Endpoint { node_name: Some(format!("node-{}", n % 50)), ..build::endpoint(SocketAddr::new(IpAddr::V4(ip), 8080)) }
}

/// Service `s` with `endpoints` ready endpoints, sorted like the converter sorts them.
pub fn service(s: u32, endpoints: u32) -> ServicePort {
    let mut eps: Vec<Endpoint> = (0..endpoints).map(|e| endpoint(s * endpoints + e)).collect();
    eps.sort_by_cached_key(|e| e.key());
    let vip = Ipv4Addr::new(172, 30, (s >> 8) as u8, s as u8);
    ServicePort { endpoints: eps, ..ServicePort::new(name(s), vec![IpAddr::V4(vip)], 80) }
}

/// `services` services × `endpoints` endpoints.
pub fn state(services: u32, endpoints: u32) -> ClusterState {
    let mut state = ClusterState::default();
    for s in 0..services {
        state.services.insert(name(s), service(s, endpoints).into());
    }
    state
}

/// node-1 with the pod network as its local-traffic detector.
pub fn node() -> NodeConfig {
    NodeConfig {
        node_name: "node-1".into(),
        local_detector: LocalDetector::Cidr("10.128.0.0/9".parse().expect("cidr")),
        ..NodeConfig::default()
    }
}
