//! Behaviour of the tracer on kube-proxy-shaped rules, in both restore and save forms.

mod edge;
mod filter;

use std::net::SocketAddr;

use super::*;
use crate::inspect::trace::testutil::{fixtures, rules};

const NODE: &str = "192.168.1.10";

pub(super) fn packet(src: &str, dst: &str) -> Packet {
    let dst: SocketAddr = dst.parse().unwrap();
    Packet::new(src.parse().unwrap(), dst, Protocol::Tcp)
}

pub(super) fn node_env() -> TraceEnv {
    TraceEnv { local_ips: vec![NODE.parse().unwrap()] }
}

pub(super) fn run(text: &str, packet: &Packet) -> Trace {
    trace(&rules(text), packet, &node_env())
}

/// Asserts the DNAT destinations and their probabilities (within 1e-9), and that nothing else
/// happens to the packet.
pub(super) fn assert_endpoints(t: &Trace, want: &[(&str, f64)]) {
    let got = t.endpoints();
    assert_eq!(got.len(), want.len(), "{t}");
    for (addr, p) in want {
        let addr: SocketAddr = addr.parse().unwrap();
        let have = got.get(&addr).copied().unwrap_or_else(|| panic!("{addr} missing in\n{t}"));
        assert!((have - p).abs() < 1e-9, "{addr}: p={have}, want {p}\n{t}");
    }
    let total: f64 = t.outcomes.iter().map(|o| o.probability).sum();
    assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}\n{t}");
    assert!(t.outcomes.iter().all(|o| matches!(o.verdict, Verdict::Dnat(_))), "{t}");
}

fn masquerade_of(t: &Trace, endpoint: &str) -> bool {
    let addr: SocketAddr = endpoint.parse().unwrap();
    let o = t.outcomes.iter().find(|o| o.verdict == Verdict::Dnat(addr)).unwrap();
    o.masquerade
}

const THIRD: f64 = 1.0 / 3.0;
const WEB: [(&str, f64); 3] = [("10.244.1.5:8080", THIRD), ("10.244.2.7:8080", THIRD), ("10.244.3.9:8080", THIRD)];

#[test]
fn pod_to_cluster_ip_spreads_evenly_in_both_forms() {
    for text in [fixtures::SAVE, fixtures::RESTORE] {
        let t = run(text, &packet("10.244.1.20", "10.96.100.10:80"));
        assert_endpoints(&t, &WEB);
        assert!(t.outcomes.iter().all(|o| !o.masquerade), "{t}");
        assert_eq!(t.outcomes.len(), 3);
    }
}

#[test]
fn path_lists_table_qualified_chains() {
    let t = run(fixtures::SAVE, &packet("10.244.1.20", "10.96.100.10:80"));
    let first = &t.outcomes[0];
    assert_eq!(first.verdict, Verdict::Dnat("10.244.1.5:8080".parse().unwrap()));
    assert_eq!(
        first.chains[..4],
        ["nat/PREROUTING", "nat/KUBE-SERVICES", "nat/KUBE-SVC-CDGGSHYLG3RE2FKL", "nat/KUBE-SEP-AFGSLHOD2HFNCBX4"]
    );
    assert!(first.chains.contains(&"filter/FORWARD".to_string()), "{t}");
    assert!(first.chains.contains(&"nat/KUBE-POSTROUTING".to_string()), "{t}");
    assert!(t.notes.is_empty(), "{t}");
}

#[test]
fn restore_form_gets_kube_proxy_entry_jumps_with_a_note() {
    let t = run(fixtures::RESTORE, &packet("10.244.1.20", "10.96.100.10:80"));
    assert!(t.notes.iter().any(|n| n.contains("nat/PREROUTING has no rules")), "{t}");
    assert!(t.outcomes[0].chains.contains(&"filter/KUBE-FORWARD".to_string()), "{t}");
}

#[test]
fn hairpin_is_masqueraded() {
    for text in [fixtures::SAVE, fixtures::RESTORE] {
        let t = run(text, &packet("10.244.2.7", "10.96.100.10:80"));
        assert_endpoints(&t, &WEB);
        assert!(masquerade_of(&t, "10.244.2.7:8080"), "{t}");
        assert!(!masquerade_of(&t, "10.244.1.5:8080"), "{t}");
        assert!(!masquerade_of(&t, "10.244.3.9:8080"), "{t}");
    }
}

#[test]
fn outside_source_to_cluster_ip_is_masqueraded() {
    let t = run(fixtures::SAVE, &packet("192.168.1.77", "10.96.100.10:80"));
    assert_endpoints(&t, &WEB);
    assert!(t.outcomes.iter().all(|o| o.masquerade), "{t}");
}

#[test]
fn external_client_to_node_port_is_masqueraded() {
    for text in [fixtures::SAVE, fixtures::RESTORE] {
        let t = run(text, &packet("203.0.113.7", "192.168.1.10:30080"));
        assert_endpoints(&t, &WEB);
        assert!(t.outcomes.iter().all(|o| o.masquerade), "{t}");
        assert!(t.outcomes[0].chains.contains(&"nat/KUBE-EXT-CDGGSHYLG3RE2FKL".into()), "{t}");
    }
}

#[test]
fn node_port_needs_a_local_destination() {
    let t = trace(&rules(fixtures::SAVE), &packet("203.0.113.7", "192.168.1.10:30080"), &TraceEnv::default());
    assert!(t.is_accept(), "{t}");
    assert!(t.to_string().starts_with("no service matched (packet continues to 192.168.1.10:30080)"), "{t}");
}

#[test]
fn service_without_endpoints_is_rejected() {
    for text in [fixtures::SAVE, fixtures::RESTORE] {
        let t = run(text, &packet("10.244.1.20", "10.96.200.20:5432"));
        assert!(t.is_reject(), "{t}");
        let Verdict::Reject { chain, comment } = &t.outcomes[0].verdict else { unreachable!() };
        assert_eq!(chain, "filter/KUBE-SERVICES");
        assert_eq!(comment.as_deref(), Some("default/db has no endpoints"));
        assert!(t.to_string().starts_with("REJECT (default/db has no endpoints) in filter/KUBE-SERVICES"), "{t}");
    }
}

#[test]
fn wrong_port_or_protocol_matches_no_service() {
    let t = run(fixtures::SAVE, &packet("10.244.1.20", "10.96.100.10:81"));
    assert!(t.is_accept(), "{t}");
    let mut udp = packet("10.244.1.20", "10.96.100.10:80");
    udp.protocol = Protocol::Udp;
    assert!(run(fixtures::SAVE, &udp).is_accept());
}

#[test]
fn node_originated_traffic_starts_at_output_and_is_masqueraded() {
    for text in [fixtures::SAVE, fixtures::RESTORE] {
        let mut p = packet(NODE, "10.96.100.10:80");
        p.from_node = true;
        let t = run(text, &p);
        assert_endpoints(&t, &WEB);
        assert!(t.outcomes.iter().all(|o| o.masquerade), "{t}");
        let chains = &t.outcomes[0].chains;
        assert_eq!(chains[0], "nat/OUTPUT");
        assert!(chains.contains(&"filter/OUTPUT".to_string()), "{t}");
        assert!(!chains.iter().any(|c| c == "filter/FORWARD"), "{t}");
    }
}

#[test]
fn localnet_guard_drops_outside_traffic_to_loopback() {
    for text in [fixtures::SAVE, fixtures::RESTORE] {
        let t = run(text, &packet("10.1.1.1", "127.0.0.1:9999"));
        assert!(t.is_drop(), "{t}");
        let Verdict::Drop { chain, comment } = &t.outcomes[0].verdict else { unreachable!() };
        assert_eq!(chain, "filter/KUBE-FIREWALL");
        assert_eq!(comment.as_deref(), Some("block incoming localnet connections"));
        // A localhost NodePort is DNATed first, so the guard lets it through.
        let mut p = packet("127.0.0.1", "127.0.0.1:30080");
        p.from_node = true;
        assert_endpoints(&run(text, &p), &WEB);
    }
}

#[test]
fn load_balancer_source_ranges() {
    let allowed = run(fixtures::FEATURES, &packet("203.0.113.5", "5.6.7.8:80"));
    assert_endpoints(&allowed, &[("10.244.1.5:8080", 1.0)]);
    assert!(allowed.outcomes[0].masquerade, "{allowed}");

    let denied = run(fixtures::FEATURES, &packet("203.0.113.200", "5.6.7.8:80"));
    assert!(denied.is_drop(), "{denied}");
    let Verdict::Drop { chain, comment } = &denied.outcomes[0].verdict else { unreachable!() };
    assert_eq!(chain, "filter/KUBE-PROXY-FIREWALL");
    assert_eq!(comment.as_deref(), Some("default/lb:http traffic not accepted by KUBE-FW-LB"));
    assert!(denied.to_string().starts_with("DROP (default/lb:http traffic not accepted"), "{denied}");

    // NodePorts are not subject to source ranges.
    let node_port = run(fixtures::FEATURES, &packet("203.0.113.200", "192.168.1.10:30081"));
    assert_endpoints(&node_port, &[("10.244.1.5:8080", 1.0)]);
}

#[test]
fn external_traffic_policy_local() {
    // Outside clients keep their source and only reach the local endpoint.
    let t = run(fixtures::FEATURES, &packet("203.0.113.7", "192.168.1.10:30082"));
    assert_endpoints(&t, &[("10.244.1.5:8080", 1.0)]);
    assert!(!t.outcomes[0].masquerade, "{t}");
    assert!(t.outcomes[0].chains.contains(&"nat/KUBE-SVL-LOCAL".into()), "{t}");

    // The node itself (source type LOCAL) is masqueraded and uses every endpoint.
    let mut p = packet(NODE, "192.168.1.10:30082");
    p.from_node = true;
    let t = run(fixtures::FEATURES, &p);
    assert_endpoints(&t, &[("10.244.1.5:8080", 0.5), ("10.244.2.7:8080", 0.5)]);
    assert!(t.outcomes.iter().all(|o| o.masquerade), "{t}");

    // Pods short-circuit to the cluster policy without masquerade.
    let t = run(fixtures::FEATURES, &packet("10.244.3.3", "192.168.1.10:30082"));
    assert_endpoints(&t, &[("10.244.1.5:8080", 0.5), ("10.244.2.7:8080", 0.5)]);
    assert!(t.outcomes.iter().all(|o| !o.masquerade), "{t}");
}

#[test]
fn affinity_rules_are_skipped_and_noted() {
    let t = run(fixtures::FEATURES, &packet("10.244.3.3", "10.96.0.60:80"));
    assert_endpoints(&t, &[("10.244.1.5:80", 0.5), ("10.244.2.7:80", 0.5)]);
    assert!(t.outcomes.iter().all(|o| o.affinity_checked), "{t}");
    assert!(t.notes.iter().any(|n| n == AFFINITY_NOTE), "{t}");

    let plain = run(fixtures::FEATURES, &packet("10.244.3.3", "10.96.0.50:80"));
    assert!(plain.outcomes.iter().all(|o| !o.affinity_checked), "{plain}");
    assert!(!plain.notes.iter().any(|n| n == AFFINITY_NOTE), "{plain}");
}

#[test]
fn display_has_one_line_per_outcome_then_notes() {
    let t = run(fixtures::FEATURES, &packet("10.244.3.3", "10.96.0.60:80"));
    let text = t.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + t.notes.len(), "{text}");
    assert!(
        lines[0].starts_with(
            "10.244.1.5:80 p=0.500 masquerade=no via nat/PREROUTING > nat/KUBE-SERVICES > nat/KUBE-SVC-STICKY > nat/KUBE-SEP-STICKY1"
        ),
        "{text}"
    );
    assert!(lines[1].starts_with("10.244.2.7:80 p=0.500 masquerade=no via "), "{text}");
    assert!(lines[2..].iter().all(|l| l.starts_with("note: ")), "{text}");
    assert!(lines.contains(&format!("note: {AFFINITY_NOTE}").as_str()), "{text}");

    let t = run(fixtures::SAVE, &packet("10.244.1.20", "10.96.100.10:80"));
    assert!(t.to_string().starts_with("10.244.1.5:8080 p=0.333 masquerade=no via nat/PREROUTING > "), "{t}");
}

#[test]
fn real_parser_output_traces_the_same() {
    let packets = [
        packet("10.244.1.20", "10.96.100.10:80"),
        packet("203.0.113.7", "192.168.1.10:30080"),
        packet("203.0.113.200", "5.6.7.8:80"),
        packet("10.244.3.3", "10.96.0.60:80"),
        packet("10.244.1.20", "10.96.200.20:5432"),
    ];
    for text in [fixtures::SAVE, fixtures::RESTORE, fixtures::FEATURES] {
        let parsed = crate::rules::parse::parse(text).expect("fixture parses");
        let ours = rules(text);
        for p in &packets {
            assert_eq!(trace(&parsed, p, &node_env()), trace(&ours, p, &node_env()));
        }
    }
}
