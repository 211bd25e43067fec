//! Filter-table verdicts on rules rendered by `rules::render::render`: the rule that accepts,
//! rejects or drops a packet no service DNATs is reported with its chain and text.

use super::{assert_endpoints, packet, NODE};
use crate::inspect::trace::{trace, Packet, Trace, TraceEnv, Verdict};
use crate::model::build;
use crate::model::TrafficPolicy;
use crate::model::{ClusterState, Endpoint, LocalDetector, NodeConfig, Protocol, ServicePort, ServicePortName};
use crate::rules::render::render;

fn name(service: &str, port: &str) -> ServicePortName {
    ServicePortName { namespace: "default".into(), name: service.into(), port: port.into(), protocol: Protocol::Tcp }
}

/// `default/lb:http`: LoadBalancer 5.6.7.9:80 (source range 203.0.113.0/25), NodePort 30090,
/// eTP=Local with healthCheckNodePort 32100, one local endpoint; `default/db`: 10.96.0.80:5432
/// without endpoints.
fn state() -> ClusterState {
    let endpoint = Endpoint { node_name: Some("node-1".into()), ..build::endpoint("10.244.1.5:8080".parse().unwrap()) };
    let lb = ServicePort {
        node_port: Some(30090),
        load_balancer_ips: vec!["5.6.7.9".parse().unwrap()],
        source_ranges: vec!["203.0.113.0/25".parse().unwrap()],
        external_policy: TrafficPolicy::Local,
        health_check_node_port: Some(32100),
        endpoints: vec![endpoint],
        ..ServicePort::new(name("lb", "http"), vec!["10.96.0.70".parse().unwrap()], 80)
    };
    let db = ServicePort::new(name("db", ""), vec!["10.96.0.80".parse().unwrap()], 5432);
    ClusterState { services: [lb, db].into_iter().map(|s| (s.name.clone(), s.into())).collect() }
}

fn run(p: &Packet) -> Trace {
    let node = NodeConfig {
        node_name: "node-1".into(),
        node_ips: vec![NODE.parse().unwrap()],
        local_detector: LocalDetector::Cidr("10.244.0.0/16".parse().unwrap()),
        ..NodeConfig::default()
    };
    let env = TraceEnv { local_ips: vec![NODE.parse().unwrap()] };
    trace(&render(&state(), &node), p, &env)
}

fn only(t: &Trace) -> (&Verdict, &str) {
    assert_eq!(t.outcomes.len(), 1, "{t}");
    (&t.outcomes[0].verdict, t.outcomes[0].rule.as_deref().unwrap_or_else(|| panic!("no deciding rule:\n{t}")))
}

#[test]
fn health_check_node_port_is_accepted_by_filter_nodeports() {
    let from_node = {
        let mut p = packet(NODE, "192.168.1.10:32100");
        p.from_node = true;
        p
    };
    for p in [packet("203.0.113.200", "192.168.1.10:32100"), from_node] {
        let t = run(&p);
        let (verdict, rule) = only(&t);
        let want = Verdict::FilterAccept {
            chain: "filter/KUBE-NODEPORTS".into(),
            comment: Some("default/lb:http health check node port".into()),
        };
        assert_eq!(verdict, &want, "{t}");
        assert!(
            rule.starts_with("-A KUBE-NODEPORTS ") && rule.contains("--dport 32100") && rule.ends_with("-j ACCEPT"),
            "{rule}"
        );
        assert!(!t.is_accept(), "not \"no service matched\":\n{t}");
        let text = t.to_string();
        assert!(
            text.starts_with("ACCEPT (default/lb:http health check node port) in filter/KUBE-NODEPORTS p=1.000"),
            "{text}"
        );
        assert!(text.contains(&format!("; rule: {rule}")), "{text}");
        assert!(t.outcomes[0].chains.contains(&"filter/INPUT".to_string()), "{t}");
    }
}

#[test]
fn service_without_endpoints_is_rejected_by_its_rule() {
    let t = run(&packet("10.244.1.20", "10.96.0.80:5432"));
    let (verdict, rule) = only(&t);
    let want =
        Verdict::Reject { chain: "filter/KUBE-SERVICES".into(), comment: Some("default/db has no endpoints".into()) };
    assert_eq!(verdict, &want, "{t}");
    assert!(
        rule.starts_with("-A KUBE-SERVICES ") && rule.contains("-d 10.96.0.80") && rule.ends_with("-j REJECT"),
        "{rule}"
    );
    assert!(t.to_string().starts_with("REJECT (default/db has no endpoints) in filter/KUBE-SERVICES p=1.000"), "{t}");
}

#[test]
fn source_outside_the_ranges_is_dropped_by_the_proxy_firewall() {
    let t = run(&packet("203.0.113.200", "5.6.7.9:80"));
    let (verdict, rule) = only(&t);
    let Verdict::Drop { chain, comment } = verdict else { panic!("{t}") };
    assert_eq!(chain, "filter/KUBE-PROXY-FIREWALL");
    assert!(
        comment.as_deref().is_some_and(|c| c.starts_with("default/lb:http traffic not accepted by KUBE-FW-")),
        "{t}"
    );
    assert!(
        rule.starts_with("-A KUBE-PROXY-FIREWALL ") && rule.contains("-d 5.6.7.9") && rule.ends_with("-j DROP"),
        "{rule}"
    );
    assert!(t.to_string().contains("; rule: -A KUBE-PROXY-FIREWALL "), "{t}");

    // A source inside the ranges reaches the endpoint; DNATed paths carry no deciding rule.
    let t = run(&packet("203.0.113.5", "5.6.7.9:80"));
    assert_endpoints(&t, &[("10.244.1.5:8080", 1.0)]);
    assert!(t.outcomes.iter().all(|o| o.rule.is_none()), "{t}");
}
