//! Renderer unit tests on hand-built states (goldens from manifests live in `fixtures/`).

use super::*;
use crate::model::{build, Endpoint, IpFamily, NodePortAddresses, Protocol, ServicePort, ServicePortName};

fn spn(ns: &str, name: &str, port: &str) -> ServicePortName {
    ServicePortName { namespace: ns.into(), name: name.into(), port: port.into(), protocol: Protocol::Tcp }
}

fn svc(name: ServicePortName, ip: &str, port: u16) -> ServicePort {
    ServicePort::new(name, vec![ip.parse().unwrap()], port)
}

fn ep(addr: &str, node: &str) -> Endpoint {
    Endpoint { node_name: Some(node.into()), ..build::endpoint(addr.parse().unwrap()) }
}

fn state(services: Vec<ServicePort>) -> ClusterState {
    ClusterState { services: services.into_iter().map(|s| (s.name.clone(), s.into())).collect() }
}

fn node() -> NodeConfig {
    NodeConfig {
        node_ips: vec!["192.168.1.10".parse().unwrap()],
        local_addresses: vec!["192.168.1.10/24".parse().unwrap()],
        ..build::node(IpFamily::V4)
    }
}

/// The example of the reference notes (§2.6), in kube-proxy's restore-input form.
fn reference_example() -> ClusterState {
    let mut web = svc(spn("default", "web", "http"), "10.96.100.10", 80);
    web.node_port = Some(30080);
    web.endpoints = vec![ep("10.244.1.5:8080", "n1"), ep("10.244.2.7:8080", "n2"), ep("10.244.3.9:8080", "n3")];
    let db = svc(spn("default", "db", ""), "10.96.200.20", 5432);
    state(vec![web, db])
}

const REFERENCE_EXAMPLE: &str = include_str!("../../../fixtures/dumps/reference-2.6.restore");

#[test]
fn reference_example_is_byte_identical() {
    let text = render(&reference_example(), &node()).to_string();
    assert_eq!(text, REFERENCE_EXAMPLE, "\n{text}");
}

#[test]
fn render_is_deterministic_and_pure() {
    let a = render(&reference_example(), &node());
    let b = render(&reference_example(), &node());
    assert_eq!(a, b);
}

#[test]
fn no_detector_omits_clusterip_masquerade_and_masquerade_all_keeps_it() {
    let mut n = node();
    n.local_detector = LocalDetector::None;
    let text = render(&reference_example(), &n).to_string();
    assert!(!text.contains("--dport 80 ! -s"), "{text}");
    assert!(!text.contains("-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment \"default/web:http cluster IP\""));
    n.masquerade_all = true;
    let text = render(&reference_example(), &n).to_string();
    assert!(text.contains(
        "-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.100.10 --dport 80 -j KUBE-MARK-MASQ\n"
    ));
}

#[test]
fn detector_variants_and_mark_bit() {
    let mut n = node();
    n.local_detector = LocalDetector::Bridge("cni0".into());
    n.masquerade_bit = 5;
    let text = render(&reference_example(), &n).to_string();
    assert!(text.contains("--dport 80 ! -i cni0 -j KUBE-MARK-MASQ"), "{text}");
    assert!(text.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x20\n"));
    n.local_detector = LocalDetector::InterfacePrefix("veth".into());
    let text = render(&reference_example(), &n).to_string();
    assert!(text.contains("--dport 80 ! -i veth+ -j KUBE-MARK-MASQ"), "{text}");
}

#[test]
fn nodeport_addresses_and_localhost_variants() {
    let mut n = node();
    n.localhost_nodeports = false;
    let text = render(&reference_example(), &n).to_string();
    assert!(text.contains("-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS\n"), "{text}");
    assert!(!text.contains("KUBE-FIREWALL"));
    n.nodeport_addresses = NodePortAddresses::Cidrs(vec!["192.168.0.0/16".parse().unwrap()]);
    n.local_addresses.push("10.0.0.5/8".parse().unwrap());
    let text = render(&reference_example(), &n).to_string();
    assert!(text.contains(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -d 192.168.1.10 -j KUBE-NODEPORTS\n"
    ));
    assert!(!text.contains("-d 10.0.0.5"));
}

#[test]
fn large_cluster_mode_drops_endpoint_comments() {
    let mut big = svc(spn("ns", "big", ""), "10.96.0.50", 80);
    big.endpoints =
        (0..1001u32).map(|i| ep(&format!("10.{}.{}.{}:80", 1 + i / 65536, (i / 256) % 256, i % 256), "n")).collect();
    big.endpoints.sort_by_key(|e| e.key());
    let text = render(&state(vec![big]), &node()).to_string();
    assert!(!text.contains(" -> "), "per-endpoint comments must be gone");
    assert!(text.contains("--comment \"ns/big cluster IP\""));
    let sep_rule = text.lines().find(|l| l.starts_with("-A KUBE-SEP-")).unwrap();
    assert!(sep_rule.starts_with("-A KUBE-SEP-") && !sep_rule.contains("--comment"), "{sep_rule}");
}

#[test]
fn ipv6_family_filters_addresses() {
    let mut dual = svc(spn("default", "dual", "http"), "10.96.0.7", 80);
    dual.cluster_ips.push("fd00:96::7".parse().unwrap());
    dual.endpoints = vec![ep("10.244.1.2:80", "n1"), ep("[fd00:244::2]:80", "n1")];
    let mut n = node();
    n.family = IpFamily::V6;
    n.local_detector = LocalDetector::Cidr("fd00:244::/56".parse().unwrap());
    let text = render(&state(vec![dual]), &n).to_string();
    assert!(text.contains("-d fd00:96::7 --dport 80 -j KUBE-SVC-"), "{text}");
    assert!(text.contains("--to-destination [fd00:244::2]:80"));
    assert!(!text.contains("10.244.1.2"));
    assert!(text.contains("! -d ::1/128 -j KUBE-NODEPORTS"));
    assert!(!text.contains("KUBE-FIREWALL"));
}
