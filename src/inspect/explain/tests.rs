use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::conntrack::Flow;
use crate::inspect::trace::testutil::rules;
use crate::model::build;
use crate::model::{ClusterState, Endpoint, NodeConfig, Protocol, ServicePortName};
use crate::rules::render::{jump_rules, render};
use crate::rules::ruleset::{RuleOp, Ruleset, TableName};
use crate::startup::{Facts, FlannelRules, SysctlValue};

const NODE: &str = "node-1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn endpoint(addr: &str, node: &str) -> Endpoint {
    Endpoint { node_name: Some(node.into()), ..build::endpoint(sa(addr)) }
}

fn name(port: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName { namespace: "default".into(), name: "web".into(), port: port.into(), protocol }
}

/// default/web: `http` (TCP 80, NodePort 30080) and `dns` (UDP 53), endpoints on node-1 and
/// node-2; plus default/other (UDP 53) so flows to other services are around.
fn state() -> ClusterState {
    let http = ServicePort {
        node_port: Some(30080),
        endpoints: vec![endpoint("10.244.1.5:8080", NODE), endpoint("10.244.2.7:8080", "node-2")],
        ..ServicePort::new(name("http", Protocol::Tcp), vec![ip("10.96.0.10")], 80)
    };
    let dns = ServicePort {
        endpoints: vec![endpoint("10.244.1.5:5353", NODE), endpoint("10.244.2.7:5353", "node-2")],
        ..ServicePort::new(name("dns", Protocol::Udp), vec![ip("10.96.0.10")], 53)
    };
    let other_name = ServicePortName { name: "other".into(), ..name("", Protocol::Udp) };
    let other = ServicePort {
        endpoints: vec![endpoint("10.244.3.3:53", "node-2")],
        ..ServicePort::new(other_name, vec![ip("10.96.0.20")], 53)
    };
    let ports = [http, dns, other];
    ClusterState { services: ports.into_iter().map(|p| (p.name.clone(), p.into())).collect() }
}

fn node() -> NodeConfig {
    NodeConfig {
        node_name: NODE.into(),
        node_ips: vec![ip("192.168.1.10")],
        localhost_nodeports: false,
        ..NodeConfig::default()
    }
}

/// What `render --jumps` writes.
fn desired_rules(state: &ClusterState, node: &NodeConfig) -> Ruleset {
    let mut ruleset = render(state, node);
    for jump in jump_rules(node) {
        let mut rule = jump.rule.clone();
        rule.op = RuleOp::Insert(Some(1));
        ruleset.table_mut(jump.table).rules.push(rule);
    }
    ruleset
}

fn healthy_facts() -> Facts {
    Facts {
        bridge_nf_call_iptables: SysctlValue::Set(1),
        bridge_nf_call_ip6tables: SysctlValue::Set(1),
        ip_forward: SysctlValue::Set(1),
        ipv6_forwarding: SysctlValue::Set(1),
        route_localnet: SysctlValue::Set(1),
        nf_conntrack_tcp_be_liberal: SysctlValue::Set(0),
        flannel_rules: FlannelRules::default(),
    }
}

/// A healthy node: live rules as desired, one backend, a good flow, sysctls right.
fn observed(state: &ClusterState, node: &NodeConfig) -> Observed {
    let rules = desired_rules(state, node);
    let chains = kube_proxy_chains(&rules);
    let good = Flow::new(Protocol::Udp, sa("10.244.1.9:40000"), sa("10.96.0.10:53"), sa("10.244.2.7:5353"));
    Observed {
        rules,
        backends: BackendChains { nft: Some(chains), legacy: Some(0) },
        flows: Some(vec![good]),
        facts: Some(healthy_facts()),
        daemon: Some(DaemonHealth {
            healthy: true,
            last_updated: "2026-01-01T00:00:10Z".into(),
            current_time: "2026-01-01T00:00:10Z".into(),
        }),
    }
}

fn query(port: Option<&str>, from: Option<&str>) -> Query {
    Query { namespace: "default".into(), name: "web".into(), port: port.map(PortSelector::parse), from: from.map(ip) }
}

fn explain(state: &ClusterState, node: &NodeConfig, observed: &Observed, q: &Query) -> Report {
    let rules = desired_rules(state, node);
    explain_service(q, Desired { state, node, rules: &rules }, observed).unwrap()
}

fn codes(report: &Report) -> Vec<&'static str> {
    report.problems.iter().map(|p| p.code.as_str()).collect()
}

#[test]
fn a_healthy_service_on_a_healthy_node_is_ok_with_no_problems() {
    let (state, node) = (state(), node());
    let report = explain(&state, &node, &observed(&state, &node), &query(None, None));
    assert_eq!(report.verdict, Verdict::Ok, "{:#?}", report.problems);
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.ports.len(), 2);
    let http = report.ports.iter().find(|p| p.name == "http").unwrap();
    assert_eq!(http.endpoints.len(), 2);
    for e in &http.endpoints {
        assert!((e.probability - 0.5).abs() < 1e-6, "{e:?}");
    }
    assert!(http.endpoints.iter().any(|e| e.local) && http.endpoints.iter().any(|e| !e.local));
    let kinds: Vec<&str> = http.paths.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["cluster-ip", "node-port"]);
    assert!(http.paths.iter().all(|p| p.outcomes.iter().all(|o| o.verdict == "dnat")), "{:#?}", http.paths);
    assert!(
        http.chains.iter().any(|c| c.starts_with("KUBE-SVC-"))
            && http.chains.iter().any(|c| c.starts_with("KUBE-SEP-"))
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"], "ok");
    assert_eq!(json["service"], "default/web");
    assert_eq!(json["problems"], serde_json::json!([]));
    assert_eq!(json["ports"][0]["endpoints"][0]["ready"], true);
}

#[test]
fn the_same_healthy_node_read_back_from_save_text_is_ok() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    obs.rules = rules(&obs.rules.to_string());
    let report = explain(&state, &node, &obs, &query(None, None));
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

#[test]
fn no_live_rules_is_rules_missing() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    obs.rules = Ruleset::default();
    let report = explain(&state, &node, &obs, &query(Some("http"), None));
    assert_eq!(codes(&report), ["rules-missing"]);
    assert_eq!(report.verdict, Verdict::Broken);
    assert!(report.problems[0].message.contains("default/web:http"));
}

#[test]
fn a_deleted_rule_is_drift_naming_its_chain() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    let nat = obs.rules.table_mut(TableName::Nat);
    let index =
        nat.rules.iter().position(|r| r.has("-j", "DNAT") && r.to_string().contains("10.244.2.7:8080")).unwrap();
    let chain = nat.rules.remove(index).chain.to_string();
    let report = explain(&state, &node, &obs, &query(None, None));
    assert_eq!(codes(&report), ["rules-drift"], "{:#?}", report.problems);
    assert!(report.problems[0].message.contains(&format!("nat/{chain}")), "{}", report.problems[0].message);
    assert!(report.problems[0].message.contains("1 rule(s) missing"));
    assert_eq!(report.verdict, Verdict::Broken);
    // Only the http port drifted: asking for dns alone finds nothing.
    assert!(explain(&state, &node, &obs, &query(Some("53"), None)).problems.is_empty());
}

#[test]
fn an_extra_chain_is_drift() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    let mut text = obs.rules.to_string();
    let fw = crate::rules::chain_names::ServiceChains::for_service(&name("http", Protocol::Tcp)).firewall;
    text = text.replacen("*nat\n", &format!("*nat\n:{fw} - [0:0]\n-A {fw} -j DROP\n"), 1);
    obs.rules = rules(&text);
    let report = explain(&state, &node, &obs, &query(Some("http"), None));
    assert_eq!(codes(&report), ["rules-drift"]);
    assert!(report.problems[0].message.contains("should not exist"), "{}", report.problems[0].message);
}

#[test]
fn no_endpoints() {
    let (mut state, node) = (state(), node());
    state.services.get_mut(&name("http", Protocol::Tcp)).map(std::sync::Arc::make_mut).unwrap().endpoints.clear();
    let report = explain(&state, &node, &observed(&state, &node), &query(Some("http"), None));
    assert_eq!(codes(&report), ["no-endpoints"]);
    assert_eq!(report.verdict, Verdict::Broken);
    assert!(
        report.ports[0].paths.iter().all(|p| p.outcomes.iter().all(|o| o.verdict == "reject")),
        "{:#?}",
        report.ports[0].paths
    );
}

#[test]
fn only_terminating_endpoints() {
    let (mut state, node) = (state(), node());
    for e in &mut state.services.get_mut(&name("http", Protocol::Tcp)).map(std::sync::Arc::make_mut).unwrap().endpoints
    {
        e.ready = false;
        e.terminating = true;
    }
    let report = explain(&state, &node, &observed(&state, &node), &query(Some("http"), None));
    assert_eq!(codes(&report), ["no-ready-endpoints"]);
    assert_eq!((report.problems[0].severity, report.verdict), (Severity::Warning, Verdict::Degraded));

    for e in &mut state.services.get_mut(&name("http", Protocol::Tcp)).map(std::sync::Arc::make_mut).unwrap().endpoints
    {
        e.serving = false;
    }
    let report = explain(&state, &node, &observed(&state, &node), &query(Some("http"), None));
    assert_eq!(codes(&report), ["no-ready-endpoints"]);
    assert_eq!(report.verdict, Verdict::Broken);
}

#[test]
fn local_policy_without_local_endpoints() {
    let (mut state, node) = (state(), node());
    let http = state.services.get_mut(&name("http", Protocol::Tcp)).map(std::sync::Arc::make_mut).unwrap();
    http.external_policy = TrafficPolicy::Local;
    let report = explain(&state, &node, &observed(&state, &node), &query(Some("http"), None));
    assert!(report.problems.is_empty(), "a local endpoint exists: {:#?}", report.problems);

    state
        .services
        .get_mut(&name("http", Protocol::Tcp))
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .endpoints
        .retain(|e| !e.is_local(NODE));
    let report = explain(&state, &node, &observed(&state, &node), &query(Some("http"), None));
    assert_eq!(codes(&report), ["no-local-endpoints"]);
    assert!(report.problems[0].message.contains("externalTrafficPolicy"));
    let node_port = report.ports[0].paths.iter().find(|p| p.kind == AddressKind::NodePort).unwrap();
    assert!(node_port.outcomes.iter().all(|o| o.verdict == "drop"), "{:#?}", node_port.outcomes);
}

#[test]
fn source_outside_the_ranges_is_blocked() {
    let (mut state, node) = (state(), node());
    let http = state.services.get_mut(&name("http", Protocol::Tcp)).map(std::sync::Arc::make_mut).unwrap();
    http.load_balancer_ips = vec![ip("198.51.100.7")];
    http.source_ranges = vec!["10.0.0.0/8".parse().unwrap()];
    let obs = observed(&state, &node);
    let report = explain(&state, &node, &obs, &query(Some("http"), Some("192.0.2.1")));
    assert_eq!(codes(&report), ["source-range-blocked"]);
    let lb = report.ports[0].paths.iter().find(|p| p.kind == AddressKind::LoadBalancer).unwrap();
    assert!(lb.outcomes.iter().all(|o| o.verdict == "drop"), "{:#?}", lb.outcomes);
    let report = explain(&state, &node, &obs, &query(Some("http"), Some("10.1.2.3")));
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    let report = explain(&state, &node, &obs, &query(Some("http"), None));
    assert!(report.problems.is_empty(), "no --from, nothing to judge: {:#?}", report.problems);
}

#[test]
fn a_flow_answered_by_a_wrong_port_is_stale() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    let flows = obs.flows.as_mut().unwrap();
    // Another service's stale flow is not this service's problem.
    flows.push(Flow::new(Protocol::Udp, sa("10.244.1.9:40001"), sa("10.96.0.20:53"), sa("10.244.9.9:53")));
    let report = explain(&state, &node, &obs, &query(None, None));
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    obs.flows.as_mut().unwrap().push(Flow::new(
        Protocol::Udp,
        sa("10.244.1.9:40002"),
        sa("10.96.0.10:53"),
        sa("10.244.2.7:5354"),
    ));
    let report = explain(&state, &node, &obs, &query(None, None));
    assert_eq!(codes(&report), ["stale-conntrack"]);
    assert!(report.problems[0].message.contains("reply-from 10.244.2.7:5354"), "{}", report.problems[0].message);
    assert_eq!(report.verdict, Verdict::Degraded);
}

#[test]
fn node_sysctls() {
    let (state, mut node) = (state(), node());
    let mut obs = observed(&state, &node);
    let facts = obs.facts.as_mut().unwrap();
    facts.ip_forward = SysctlValue::Set(0);
    facts.bridge_nf_call_iptables = SysctlValue::Missing;
    facts.route_localnet = SysctlValue::Set(0);
    let report = explain(&state, &node, &obs, &query(None, None));
    assert_eq!(codes(&report), ["node-forwarding-off", "br-netfilter-off"], "localhost NodePorts are off");
    assert!(report.problems[0].fix.contains("net.ipv4.ip_forward=1"), "{:?}", report.problems[0]);
    assert!(!report.problems[0].message.contains("Fix:"));
    node.localhost_nodeports = true;
    let report = explain(&state, &node, &observed_with(&state, &node, obs.facts.clone()), &query(None, None));
    assert_eq!(codes(&report), ["node-forwarding-off", "br-netfilter-off", "route-localnet-off"]);
    assert_eq!(report.verdict, Verdict::Broken);
}

fn observed_with(state: &ClusterState, node: &NodeConfig, facts: Option<Facts>) -> Observed {
    Observed { facts, ..observed(state, node) }
}

#[test]
fn kube_proxy_chains_in_both_backends() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    obs.backends.legacy = Some(3);
    let report = explain(&state, &node, &obs, &query(None, None));
    assert_eq!(codes(&report), ["backend-split"]);
    obs.backends.legacy = None;
    assert!(explain(&state, &node, &obs, &query(None, None)).problems.is_empty(), "unread backend: no judgement");
}

#[test]
fn flannel_masquerade_ahead_of_ours() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    let flannel = ":FLANNEL-POSTRTG - [0:0]\n-A FLANNEL-POSTRTG -j MASQUERADE\n";
    let text = obs.rules.to_string();
    // flanneld started after kubenat: its jump is inserted ahead of ours.
    let nat = text.find("*nat\n").unwrap();
    let commit = nat + text[nat..].find("COMMIT\n").unwrap();
    let ahead = format!("{}-I POSTROUTING 1 -j FLANNEL-POSTRTG\n{}", &text[..commit], &text[commit..]);
    let ahead = ahead.replacen("*nat\n", &format!("*nat\n{flannel}"), 1);
    obs.rules = rules(&ahead);
    let report = explain(&state, &node, &obs, &query(None, None));
    assert_eq!(codes(&report), ["flannel-order"], "{:#?}", report.problems);
    let behind = text.replacen("*nat\n", &format!("*nat\n{flannel}-A POSTROUTING -j FLANNEL-POSTRTG\n"), 1);
    obs.rules = rules(&behind);
    let report = explain(&state, &node, &obs, &query(None, None));
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

#[test]
fn unknown_service_and_port_are_errors() {
    let (state, node) = (state(), node());
    let rules = desired_rules(&state, &node);
    let desired = Desired { state: &state, node: &node, rules: &rules };
    let obs = observed(&state, &node);
    let q = Query { name: "nope".into(), ..query(None, None) };
    let err = explain_service(&q, desired, &obs).unwrap_err();
    assert_eq!(err, Error::UnknownService { service: "default/nope".into() });
    let err = explain_service(&query(Some("grpc"), None), desired, &obs).unwrap_err().to_string();
    assert!(err.contains("no port grpc") && err.contains("http (80/tcp)"), "{err}");
}

#[test]
fn node_report_counts_problems_per_service() {
    let (mut state, node) = (state(), node());
    let healthy = observed(&state, &node);
    let rules = desired_rules(&state, &node);
    let report = explain_node(Desired { state: &state, node: &node, rules: &rules }, &healthy);
    assert_eq!((report.verdict, report.services), (Verdict::Ok, 2));
    assert!(report.counts.is_empty() && report.problems.is_empty());

    state.services.get_mut(&name("http", Protocol::Tcp)).map(std::sync::Arc::make_mut).unwrap().endpoints.clear();
    let rules = desired_rules(&state, &node);
    let mut obs = observed(&state, &node);
    obs.facts.as_mut().unwrap().ip_forward = SysctlValue::Set(0);
    let report = explain_node(Desired { state: &state, node: &node, rules: &rules }, &obs);
    assert_eq!(report.counts, BTreeMap::from([(Code::NoEndpoints, 1)]));
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.verdict, Verdict::Broken, "ip_forward is off");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["counts"]["no-endpoints"], 1);
    assert_eq!(json["verdicts"]["broken"], 2, "every service shares the node's problem");

    // Endpoint problems are the cluster's, not the node's: without node problems the node is ok.
    let obs = observed(&state, &node);
    let report = explain_node(Desired { state: &state, node: &node, rules: &rules }, &obs);
    assert_eq!(report.verdict, Verdict::Ok);
    // A drifted rule is the node's.
    let mut obs = observed(&state, &node);
    obs.rules = Ruleset::default();
    let report = explain_node(Desired { state: &state, node: &node, rules: &rules }, &obs);
    assert_eq!((report.verdict, report.counts.get(&Code::RulesMissing)), (Verdict::Broken, Some(&2)));
}

#[test]
fn text_has_the_verdict_problems_with_fixes_and_paths() {
    let (mut state, node) = (state(), node());
    state.services.get_mut(&name("http", Protocol::Tcp)).map(std::sync::Arc::make_mut).unwrap().endpoints.clear();
    let report = explain(&state, &node, &observed(&state, &node), &query(Some("http"), None));
    let text = write_text(&report, false);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("default/web: broken (1 problem)"));
    assert!(lines.next().unwrap().starts_with("error no-endpoints: default/web:http has no ipv4 endpoints"));
    assert!(lines.next().unwrap().starts_with("  fix: "));
    assert!(text.contains("  cluster-ip 10.96.0.10:80 from the node 192.168.1.10:\n    REJECT"), "{text}");
    assert!(!text.contains('\x1b'));
    assert!(write_text(&report, true).contains("\x1b[31mbroken\x1b[0m"));
}

#[test]
fn every_code_is_kebab_case_in_json() {
    for code in Code::ALL {
        assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
    }
}

#[test]
fn node_text_lists_problems_and_counts() {
    let (mut state, node) = (state(), node());
    state.services.get_mut(&name("http", Protocol::Tcp)).map(std::sync::Arc::make_mut).unwrap().endpoints.clear();
    let rules = desired_rules(&state, &node);
    let mut obs = observed(&state, &node);
    obs.facts.as_mut().unwrap().ip_forward = SysctlValue::Set(0);
    let report = explain_node(Desired { state: &state, node: &node, rules: &rules }, &obs);
    let text = write_node_text(&report, false);
    assert!(text.starts_with("node node-1: broken\nerror node-forwarding-off: "), "{text}");
    assert!(text.contains("\n  fix: sysctl -w net.ipv4.ip_forward=1"), "{text}");
    assert!(text.ends_with("services: 2 (broken 2)\n  no-endpoints: 1\n"), "{text}");
}

#[test]
fn a_daemon_behind_on_its_syncs_is_stale_sync() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    obs.daemon = Some(DaemonHealth {
        healthy: false,
        last_updated: "2026-01-01T00:00:00Z".into(),
        current_time: "2026-01-01T00:02:00Z".into(),
    });
    let report = explain(&state, &node, &obs, &query(None, None));
    assert_eq!(codes(&report), ["stale-sync"]);
    assert!(report.problems[0].message.contains("2026-01-01T00:00:00Z"));
    assert_eq!(report.verdict, Verdict::Degraded);
    let health: DaemonHealth = serde_json::from_str(
        r#"{"lastUpdated":"2026-01-01T00:00:00Z","currentTime":"2026-01-01T00:02:00Z","healthy":false,"status":{}}"#,
    )
    .unwrap();
    assert_eq!(health, obs.daemon.unwrap());
}

#[test]
fn a_missing_jump_in_a_saved_builtin_chain() {
    let (state, node) = (state(), node());
    let mut obs = observed(&state, &node);
    // As iptables-save prints it: built-in chains declared with their policies, jumps as -A.
    let original = obs.rules.to_string();
    let saved = |skip: &str| {
        let mut text = String::new();
        for line in original.lines() {
            let line = match line.strip_prefix("-I ") {
                Some(rest) => format!("-A {}", rest.replacen(" 1 -", " -", 1)),
                None => line.to_string(),
            };
            if line.starts_with(skip) {
                continue;
            }
            text.push_str(&line);
            text.push('\n');
            if line == "*nat" {
                text.push_str(":PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
            }
        }
        rules(&text)
    };
    obs.rules = saved("nothing to skip");
    let report = explain(&state, &node, &obs, &query(None, None));
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    obs.rules = saved("-A PREROUTING");
    let report = explain(&state, &node, &obs, &query(None, None));
    assert_eq!(codes(&report), ["jumps-missing"], "{:#?}", report.problems);
    assert!(report.problems[0].message.starts_with("nat/PREROUTING has no jump to KUBE-SERVICES"));
}
