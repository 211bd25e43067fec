//! Property tests over random cluster states: the rendered text parses back to itself, every
//! jump has a target, chain names fit iptables' limit, and the statistic probabilities give
//! every endpoint an equal share.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use kubenat::model::{
    ClusterState, Endpoint, LocalDetector, NodeConfig, NodePortAddresses, Protocol, ServicePort, ServicePortName,
    TrafficPolicy,
};
use kubenat::{inspect::check, rules::parse, rules::render};
use proptest::prelude::*;

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (0u8..40, prop::sample::select(vec![80u16, 8080]), 0u8..4, 0u8..3, prop::option::of(0u8..3)).prop_map(
        |(host, port, cond, node, zone)| Endpoint {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, host % 4, host)), port),
            ready: cond == 0,
            serving: cond <= 1,
            terminating: cond >= 1,
            node_name: Some(format!("node-{node}")),
            zone_hints: zone.map(|z| vec![format!("zone-{z}")]).unwrap_or_default(),
            node_hints: vec![],
        },
    )
}

fn service(index: usize) -> impl Strategy<Value = ServicePort> {
    (
        prop::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp]),
        prop::option::of(30000u16..30010),
        prop::collection::vec(0u8..3, 0..3),
        prop::collection::vec(0u8..3, 0..3),
        prop::collection::vec(0u8..3, 0..3),
        prop::option::of(1u32..86400),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(endpoint(), 0..7),
        prop::sample::select(vec!["", "http", "dns-tcp"]),
    )
        .prop_map(
            move |(protocol, node_port, ext, lb, ranges, affinity, etp_local, itp_local, mut eps, port_name)| {
                let name = ServicePortName {
                    namespace: "ns".into(),
                    name: format!("svc-{index}").into(),
                    port: port_name.into(),
                    protocol,
                };
                eps.sort_by_cached_key(|e| e.key());
                eps.dedup_by(|a, b| a.key() == b.key());
                let lb_ips: Vec<IpAddr> = lb.iter().map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 0, *i))).collect();
                let external = node_port.is_some() || !ext.is_empty() || !lb_ips.is_empty();
                ServicePort {
                    name,
                    cluster_ips: vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, index as u8 + 1))],
                    port: 80,
                    node_port,
                    external_ips: ext.iter().map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, *i))).collect(),
                    load_balancer_ips: lb_ips,
                    source_ranges: ranges.iter().map(|i| format!("198.51.{i}.0/24").parse().expect("cidr")).collect(),
                    affinity_timeout: affinity,
                    external_policy: if etp_local { TrafficPolicy::Local } else { TrafficPolicy::Cluster },
                    internal_policy: if itp_local { TrafficPolicy::Local } else { TrafficPolicy::Cluster },
                    health_check_node_port: (etp_local && external).then_some(32000 + index as u16),
                    endpoints: eps,
                }
            },
        )
}

fn state() -> impl Strategy<Value = ClusterState> {
    (0usize..6).prop_flat_map(|n| {
        (0..n).map(service).collect::<Vec<_>>().prop_map(|services| ClusterState {
            services: services.into_iter().map(|s| (s.name.clone(), s.into())).collect::<BTreeMap<_, _>>(),
        })
    })
}

fn node() -> impl Strategy<Value = NodeConfig> {
    (any::<bool>(), 0u8..4, any::<bool>(), any::<bool>(), prop::option::of(0u8..3), any::<bool>()).prop_map(
        |(masq_all, detector, localhost, nodeport_cidrs, zone, nfacct)| NodeConfig {
            node_name: "node-0".into(),
            zone: zone.map(|z| format!("zone-{z}")),
            node_ips: vec!["198.51.0.10".parse().expect("ip")],
            local_addresses: vec!["198.51.0.10/24".parse().expect("cidr")],
            local_detector: match detector {
                0 => LocalDetector::None,
                1 => LocalDetector::Cidr("10.244.0.0/16".parse().expect("cidr")),
                2 => LocalDetector::Bridge("cni0".into()),
                _ => LocalDetector::InterfacePrefix("veth".into()),
            },
            masquerade_all: masq_all,
            localhost_nodeports: localhost,
            nodeport_addresses: if nodeport_cidrs {
                NodePortAddresses::Cidrs(vec!["198.51.0.0/16".parse().expect("cidr")])
            } else {
                NodePortAddresses::All
            },
            nfacct,
            ..NodeConfig::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parse_render_round_trips(state in state(), node in node()) {
        let ruleset = render::render(&state, &node);
        let text = ruleset.to_string();
        let parsed = parse::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn every_jump_has_a_target_and_names_fit(state in state(), node in node()) {
        let ruleset = render::render(&state, &node);
        let problems = check::check(&ruleset);
        prop_assert!(problems.is_empty(), "{:?}\n{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ruleset);
        for table in &ruleset.tables {
            for chain in &table.chains {
                prop_assert!(chain.name.as_str().len() <= 28, "{}", chain.name);
            }
        }
    }

    #[test]
    fn probabilities_give_equal_shares(state in state(), node in node()) {
        let ruleset = render::render(&state, &node);
        let Some(nat) = ruleset.table(kubenat::rules::ruleset::TableName::Nat) else {
            return Err(TestCaseError::fail("no nat table"));
        };
        for chain in nat.chains.iter().filter(|c| c.name.as_str().starts_with("KUBE-SVC-") || c.name.as_str().starts_with("KUBE-SVL-")) {
            let dispatch: Vec<_> = nat
                .chain_rules(chain.name.as_str())
                .filter(|r| r.target().is_some_and(|t| t.starts_with("KUBE-SEP-")) && !r.has("-m", "recent"))
                .collect();
            let n = dispatch.len();
            let mut remaining = 1.0f64;
            for (i, rule) in dispatch.iter().enumerate() {
                let p: f64 = match rule.get("--probability").and_then(|a| a.value()) {
                    Some(v) => v.parse().map_err(|_| TestCaseError::fail("bad probability"))?,
                    None => {
                        prop_assert_eq!(i, n - 1, "only the last rule has no statistic match");
                        1.0
                    }
                };
                let share = remaining * p;
                prop_assert!((share - 1.0 / n as f64).abs() < 1e-9, "endpoint {} of {} gets {}", i, n, share);
                remaining *= 1.0 - p;
            }
        }
    }
}
