use super::*;
use crate::model::{ClusterState, Endpoint, NodeConfig, ServicePort, ServicePortName};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ep(addr: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        ready,
        serving,
        terminating,
        node_name: Some("n1".into()),
        zone_hints: vec![],
        node_hints: vec![],
    }
}

fn ready(addr: &str) -> Endpoint {
    ep(addr, true, true, false)
}

/// UDP `ns/dns:dns`, ClusterIP 10.96.0.10 (+ fd00::10), port 53, NodePort 30053, externalIP
/// 192.0.2.1, LB IP 198.51.100.1.
fn dns(protocol: Protocol, endpoints: Vec<Endpoint>) -> ServicePort {
    let name = ServicePortName { namespace: "ns".into(), name: "dns".into(), port: "dns".into(), protocol };
    ServicePort {
        node_port: Some(30053),
        external_ips: vec![ip("192.0.2.1")],
        load_balancer_ips: vec![ip("198.51.100.1")],
        endpoints,
        ..ServicePort::new(name, vec![ip("10.96.0.10"), ip("fd00:96::10")], 53)
    }
}

fn state(ports: Vec<ServicePort>) -> ClusterState {
    ClusterState { services: ports.into_iter().map(|p| (p.name.clone(), p)).collect() }
}

fn plan(old: Vec<ServicePort>, new: Vec<ServicePort>, family: IpFamily) -> Vec<String> {
    let node = NodeConfig { family, node_name: "n1".into(), ..NodeConfig::default() };
    stale_udp_flows(&state(old), &state(new), &node).iter().map(|f| f.to_string()).collect()
}

fn v4(old: Vec<ServicePort>, new: Vec<ServicePort>) -> Vec<String> {
    plan(old, new, IpFamily::V4)
}

const ALL_V4: [&str; 4] =
    ["udp dport=30053", "udp dst=10.96.0.10 dport=53", "udp dst=192.0.2.1 dport=53", "udp dst=198.51.100.1 dport=53"];

#[test]
fn a_removed_endpoint_clears_its_dnat_flows() {
    let old = dns(Protocol::Udp, vec![ready("10.244.1.5:5353"), ready("10.244.2.7:5353")]);
    let new = dns(Protocol::Udp, vec![ready("10.244.2.7:5353")]);
    assert_eq!(
        v4(vec![old], vec![new]),
        [
            "udp dport=30053 dnat=10.244.1.5",
            "udp dst=10.96.0.10 dport=53 dnat=10.244.1.5",
            "udp dst=192.0.2.1 dport=53 dnat=10.244.1.5",
            "udp dst=198.51.100.1 dport=53 dnat=10.244.1.5",
        ]
    );
}

#[test]
fn a_endpoint_no_longer_serving_counts_as_removed() {
    let old = dns(Protocol::Udp, vec![ready("10.244.1.5:5353"), ready("10.244.2.7:5353")]);
    let new = dns(Protocol::Udp, vec![ep("10.244.1.5:5353", false, false, false), ready("10.244.2.7:5353")]);
    assert_eq!(v4(vec![old], vec![new]).len(), 4);
    // Ready → serving-terminating: still allowed to finish its flows.
    let old = dns(Protocol::Udp, vec![ready("10.244.1.5:5353"), ready("10.244.2.7:5353")]);
    let new = dns(Protocol::Udp, vec![ep("10.244.1.5:5353", false, true, true), ready("10.244.2.7:5353")]);
    assert!(v4(vec![old], vec![new]).is_empty());
}

#[test]
fn b_zero_to_some_endpoints_clears_everything_to_the_service() {
    let old = dns(Protocol::Udp, vec![]);
    let new = dns(Protocol::Udp, vec![ready("10.244.1.5:5353")]);
    assert_eq!(v4(vec![old], vec![new]), ALL_V4);
    // Not-ready endpoints were not usable: going from them to a ready one is 0 → 1.
    let old = dns(Protocol::Udp, vec![ep("10.244.1.5:5353", false, false, false)]);
    let new = dns(Protocol::Udp, vec![ready("10.244.1.5:5353")]);
    assert_eq!(v4(vec![old], vec![new]), ALL_V4);
    // A service port that is new and has endpoints at once.
    assert_eq!(v4(vec![], vec![dns(Protocol::Udp, vec![ready("10.244.1.5:5353")])]), ALL_V4);
    // A new service port without endpoints: nothing yet.
    assert!(v4(vec![], vec![dns(Protocol::Udp, vec![])]).is_empty());
}

#[test]
fn b_serving_terminating_fallback_is_usable() {
    let old = dns(Protocol::Udp, vec![]);
    let new = dns(Protocol::Udp, vec![ep("10.244.1.5:5353", false, true, true)]);
    assert_eq!(v4(vec![old], vec![new]), ALL_V4);
}

#[test]
fn c_some_to_zero_endpoints_clears_the_service_ips() {
    let old = dns(Protocol::Udp, vec![ready("10.244.1.5:5353")]);
    let new = dns(Protocol::Udp, vec![]);
    assert_eq!(
        v4(vec![old], vec![new]),
        // (a)'s per-endpoint filters on the service IPs are covered by (c)'s broader ones.
        [
            "udp dport=30053 dnat=10.244.1.5",
            "udp dst=10.96.0.10 dport=53",
            "udp dst=192.0.2.1 dport=53",
            "udp dst=198.51.100.1 dport=53",
        ]
    );
}

#[test]
fn d_removed_service_port_clears_everything_to_it() {
    let old = dns(Protocol::Udp, vec![ready("10.244.1.5:5353")]);
    assert_eq!(v4(vec![old], vec![]), ALL_V4);
}

#[test]
fn e_removed_destinations_of_a_surviving_port() {
    let old = dns(Protocol::Udp, vec![ready("10.244.1.5:5353")]);
    let mut new = old.clone();
    new.external_ips.clear();
    new.node_port = Some(30054);
    assert_eq!(v4(vec![old], vec![new]), ["udp dport=30053", "udp dst=192.0.2.1 dport=53"]);
}

#[test]
fn unchanged_or_growing_services_need_nothing() {
    let old = dns(Protocol::Udp, vec![ready("10.244.1.5:5353")]);
    assert!(v4(vec![old.clone()], vec![old.clone()]).is_empty());
    let grown = dns(Protocol::Udp, vec![ready("10.244.1.5:5353"), ready("10.244.2.7:5353")]);
    assert!(v4(vec![old], vec![grown]).is_empty());
}

#[test]
fn tcp_and_sctp_are_ignored() {
    for proto in [Protocol::Tcp, Protocol::Sctp] {
        let old = dns(proto, vec![ready("10.244.1.5:5353")]);
        assert!(v4(vec![old.clone()], vec![dns(proto, vec![])]).is_empty());
        assert!(v4(vec![old], vec![]).is_empty());
        assert!(v4(vec![dns(proto, vec![])], vec![dns(proto, vec![ready("10.244.1.5:5353")])]).is_empty());
    }
}

#[test]
fn ipv6_uses_only_ipv6_addresses() {
    let old =
        dns(Protocol::Udp, vec![ready("10.244.1.5:5353"), ready("[fd00:244::5]:5353"), ready("[fd00:244::7]:5353")]);
    let new = dns(Protocol::Udp, vec![ready("[fd00:244::7]:5353")]);
    assert_eq!(
        plan(vec![old.clone()], vec![new.clone()], IpFamily::V6),
        ["udp dport=30053 dnat=fd00:244::5", "udp dst=fd00:96::10 dport=53 dnat=fd00:244::5"]
    );
    // The IPv4 side lost its only endpoint: (a) and (c) for IPv4 addresses only.
    let v4_plan = plan(vec![old], vec![new], IpFamily::V4);
    assert!(v4_plan.contains(&"udp dst=10.96.0.10 dport=53".to_string()), "{v4_plan:?}");
    assert!(v4_plan.iter().all(|f| !f.contains("fd00")), "{v4_plan:?}");
}

#[test]
fn a_port_without_a_cluster_ip_of_the_family_is_not_rendered() {
    let mut old = dns(Protocol::Udp, vec![ready("[fd00:244::5]:5353")]);
    old.cluster_ips = vec![ip("10.96.0.10")];
    assert!(plan(vec![old], vec![], IpFamily::V6).is_empty());
}

#[test]
fn delete_args_are_conntrack_cli_flags() {
    let f = FlowFilter::udp_to(ip("10.96.0.10"), 53, Some(ip("10.244.1.5")));
    assert_eq!(
        f.delete_args(IpFamily::V4).join(" "),
        "-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.244.1.5"
    );
    let f = FlowFilter::udp_node_port(30053, None);
    assert_eq!(f.delete_args(IpFamily::V6).join(" "), "-D -f ipv6 -p udp --orig-port-dst 30053");
}

#[test]
fn unsafe_filters_are_refused() {
    let everything =
        FlowFilter { protocol: Protocol::Udp, orig_dst: None, orig_dport: None, dnat_to: Some(ip("10.0.0.1")) };
    assert!(matches!(everything.validate(IpFamily::V4), Err(Error::BadFilter { .. })));
    let mixed = FlowFilter::udp_to(ip("10.96.0.10"), 53, None);
    assert!(matches!(mixed.validate(IpFamily::V6), Err(Error::BadFilter { .. })));
    let fake = FakeConntrack::new();
    assert!(fake.delete(IpFamily::V6, &mixed).is_err());
    assert!(ExecConntrack::default().delete(IpFamily::V6, &mixed).is_err(), "refused before running anything");
    assert!(fake.calls().is_empty());
}

#[test]
fn parses_the_deleted_count() {
    let line = |n: &str| format!("conntrack v1.4.7 (conntrack-tools): {n} flow entries have been deleted.\n");
    assert_eq!(deleted_count(&line("3")), Some(3));
    assert_eq!(deleted_count(&line("0")), Some(0));
    assert_eq!(deleted_count("conntrack v1.4.7 (conntrack-tools): unknown option `--bogus'\n"), None);
}

fn flow(src: &str, dst: &str, reply_src: &str) -> Flow {
    Flow {
        protocol: Protocol::Udp,
        orig_src: src.parse().unwrap(),
        orig_dst: dst.parse().unwrap(),
        reply_src: reply_src.parse().unwrap(),
    }
}

#[test]
fn fake_deletes_exactly_the_matching_flows() {
    let to_a = flow("10.244.0.2:40000", "10.96.0.10:53", "10.244.1.5:5353");
    let to_b = flow("10.244.0.2:40001", "10.96.0.10:53", "10.244.2.7:5353");
    let other_port = flow("10.244.0.2:40002", "10.96.0.10:54", "10.244.1.5:5353");
    let direct = flow("10.244.0.2:40003", "10.244.1.5:5353", "10.244.1.5:5353");
    let node_port = flow("192.0.2.9:40004", "192.168.1.10:30053", "10.244.1.5:5353");
    let v6 = flow("[fd00::2]:40000", "[fd00:96::10]:53", "[fd00:244::5]:5353");
    let fake = FakeConntrack::with_flows(vec![
        to_a,
        to_b.clone(),
        other_port.clone(),
        direct.clone(),
        node_port.clone(),
        v6.clone(),
    ]);

    let n = fake.delete(IpFamily::V4, &FlowFilter::udp_to(ip("10.96.0.10"), 53, Some(ip("10.244.1.5")))).unwrap();
    assert_eq!(n, 1);
    // Not DNATed: `--dst-nat` does not match a direct flow to the endpoint.
    let n = fake.delete(IpFamily::V4, &FlowFilter::udp_node_port(5353, Some(ip("10.244.1.5")))).unwrap();
    assert_eq!(n, 0);
    let n = fake.delete(IpFamily::V4, &FlowFilter::udp_node_port(30053, None)).unwrap();
    assert_eq!(n, 1);
    assert_eq!(fake.flows(), [to_b, other_port, direct, v6]);
    assert_eq!(fake.calls().len(), 3);
}
