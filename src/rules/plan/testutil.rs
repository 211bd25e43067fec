//! A small random generator of cluster states for property tests (hand-built values come from
//! `model::build`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use crate::model::{build, ClusterState, Endpoint, Protocol, ServicePort, ServicePortName, TrafficPolicy};

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (0u8..12, prop::sample::select(vec![8080u16, 9090]), 0u8..3, any::<bool>()).prop_map(|(host, port, cond, v6)| {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, host as u16 + 1))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 244, host % 3, host + 1))
        };
        Endpoint {
            ready: cond == 0,
            serving: cond <= 1,
            terminating: cond >= 1,
            node_name: Some(format!("node-{}", host % 3)),
            ..build::endpoint(SocketAddr::new(ip, port))
        }
    })
}

fn service(index: u8) -> impl Strategy<Value = Option<ServicePort>> {
    let fields = (
        prop::sample::select(vec![Protocol::Tcp, Protocol::Udp]),
        prop::option::of(30000u16..30003),
        prop::option::of(1u32..100),
        any::<bool>(),
        prop::collection::vec(endpoint(), 0..5),
    );
    prop::option::weighted(0.8, fields).prop_map(move |f| {
        f.map(|(protocol, node_port, affinity, etp_local, mut endpoints)| {
            endpoints.sort_by_cached_key(Endpoint::key);
            endpoints.dedup_by(|a, b| a.key() == b.key());
            ServicePort {
                name: ServicePortName { protocol, ..build::port_name("default", &format!("svc-{index}"), "http") },
                cluster_ips: vec![
                    IpAddr::V4(Ipv4Addr::new(10, 96, 0, index + 1)),
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, index as u16 + 1)),
                ],
                node_port,
                affinity_timeout: affinity,
                external_policy: if etp_local { TrafficPolicy::Local } else { TrafficPolicy::Cluster },
                endpoints,
                ..build::service("unused", "10.0.0.1", &[])
            }
        })
    })
}

/// Up to five dual-stack services (some absent), each with up to four endpoints.
pub(crate) fn cluster_state() -> impl Strategy<Value = ClusterState> {
    (service(0), service(1), service(2), service(3), service(4))
        .prop_map(|(a, b, c, d, e)| build::state([a, b, c, d, e].into_iter().flatten().collect()))
}
