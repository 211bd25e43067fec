//! Real kernel: real UDP flows through DNAT rules in a lab namespace create conntrack entries;
//! `ExecConntrack` (the `conntrack` CLI inside that namespace) deletes exactly the entries the
//! filters — and `stale_udp_flows`' plan — name, and agrees with `FlowFilter::matches` (the
//! fake's semantics). Needs root and conntrack-tools (skips otherwise, fails under CI=true).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kubenat::conntrack::{stale_udp_flows, Conntrack, Error, ExecConntrack, Flow, FlowFilter};
use kubenat::model::{ClusterState, Endpoint, IpFamily, NodeConfig, Protocol, ServicePort, ServicePortName};
use testkit::lab::Lab;
use testkit::netns::NetNs;
use testkit::traffic::{self, Proto, Server};

const WAIT: Duration = Duration::from_secs(2);
const SERVICE_IP: &str = "10.96.0.53";
const NODE_PORT: u16 = 30053;
const TARGET_PORT: u16 = 5353;

fn available() -> bool {
    testkit::require_root() && testkit::require_program("conntrack") && testkit::require_program("iptables")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The UDP entries of `ns`'s conntrack table (`conntrack -L -p udp`).
fn udp_flows(ns: &NetNs, family: IpFamily) -> Vec<Flow> {
    let out = ns.run_ok(&["conntrack", "-L", "-f", &family.to_string(), "-p", "udp"]);
    let mut flows: Vec<Flow> = out.lines().filter_map(parse_flow).collect();
    flows.sort_by_key(|f| (f.orig_dst, f.reply_src, f.orig_src));
    flows
}

/// `udp 17 29 src=A dst=B sport=P dport=Q [UNREPLIED] src=C dst=D sport=R dport=S …`.
fn parse_flow(line: &str) -> Option<Flow> {
    let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in line.split_whitespace().filter_map(|t| t.split_once('=')) {
        values.entry(k).or_default().push(v);
    }
    let get = |k: &str, i: usize| values.get(k).and_then(|v| v.get(i)).copied();
    let addr = |ip: &str, port: &str| Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?));
    Some(Flow {
        protocol: Protocol::Udp,
        orig_src: addr(get("src", 0)?, get("sport", 0)?)?,
        orig_dst: addr(get("dst", 0)?, get("dport", 0)?)?,
        reply_src: addr(get("src", 1)?, get("sport", 1)?)?,
    })
}

/// Deletes with the real CLI and checks the result against the model: the count and the
/// surviving entries are exactly what `FlowFilter::matches` predicts.
fn delete_and_check(ns: &NetNs, family: IpFamily, filter: &FlowFilter) -> usize {
    let before = udp_flows(ns, family);
    let predicted: Vec<Flow> = before.iter().filter(|f| !filter.matches(f)).cloned().collect();
    let ct = ExecConntrack { netns: Some(ns.name().to_string()) };
    let deleted = ct.delete(family, filter).unwrap_or_else(|e| panic!("delete {filter}: {e}"));
    let after = udp_flows(ns, family);
    assert_eq!(after, predicted, "{filter}: kernel and model disagree; before: {before:#?}");
    assert_eq!(deleted, before.len() - after.len(), "{filter}: reported count");
    deleted
}

/// Pod 0 (client, 10.244.1.2) → node → pods 1 "a" (10.244.2.2) and 2 "b" (10.244.3.2).
/// ClusterIP 10.96.0.53:53 alternates a, b (nth statistic); NodePort 10.244.1.1:30053 → a.
/// Makes 4 service flows (2 per endpoint), 2 NodePort flows and 1 direct flow to b.
fn lab_with_flows() -> (Lab, Vec<Server>) {
    let lab = Lab::new(3);
    let servers = vec![
        Server::start(&lab.pod(1).ns, Proto::Udp, TARGET_PORT, "a"),
        Server::start(&lab.pod(2).ns, Proto::Udp, TARGET_PORT, "b"),
    ];
    let (a, b) = (lab.pod(1).addr(TARGET_PORT).to_string(), lab.pod(2).addr(TARGET_PORT).to_string());
    let node_ip = lab.pod(0).gateway.to_string();
    let nat = |args: &[&str]| {
        let mut argv = vec!["iptables", "-w", "5", "-t", "nat", "-A", "PREROUTING"];
        argv.extend_from_slice(args);
        lab.node.run_ok(&argv);
    };
    let svc = ["-d", SERVICE_IP, "-p", "udp", "--dport", "53"];
    nat(&[
        &svc[..],
        &["-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0", "-j", "DNAT", "--to-destination", &a],
    ]
    .concat());
    nat(&[&svc[..], &["-j", "DNAT", "--to-destination", &b]].concat());
    nat(&["-d", &node_ip, "-p", "udp", "--dport", "30053", "-j", "DNAT", "--to-destination", &a]);

    let client = &lab.pod(0).ns;
    let service = SocketAddr::new(ip(SERVICE_IP), 53);
    let tally = traffic::tally(&traffic::requests(client, Proto::Udp, service, WAIT, 4));
    assert_eq!(tally, BTreeMap::from([("a".into(), 2), ("b".into(), 2)]), "service flows");
    let node_port = SocketAddr::new(ip(&node_ip), NODE_PORT);
    let tally = traffic::tally(&traffic::requests(client, Proto::Udp, node_port, WAIT, 2));
    assert_eq!(tally, BTreeMap::from([("a".into(), 2)]), "NodePort flows");
    assert_eq!(traffic::request(client, Proto::Udp, lab.pod(2).addr(TARGET_PORT), WAIT).server(), Some("b"));
    assert_eq!(udp_flows(&lab.node, IpFamily::V4).len(), 7, "{:#?}", udp_flows(&lab.node, IpFamily::V4));
    (lab, servers)
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        addr,
        ready: true,
        serving: true,
        terminating: false,
        node_name: None,
        zone_hints: vec![],
        node_hints: vec![],
    }
}

fn dns_state(endpoints: Vec<Endpoint>) -> ClusterState {
    let name = ServicePortName {
        namespace: "kube-system".into(),
        name: "dns".into(),
        port: "dns".into(),
        protocol: Protocol::Udp,
    };
    let port = ServicePort {
        node_port: Some(NODE_PORT),
        endpoints,
        ..ServicePort::new(name.clone(), vec![ip(SERVICE_IP)], 53)
    };
    ClusterState { services: BTreeMap::from([(name, port)]) }
}

#[test]
fn planned_cleanup_removes_only_flows_to_the_gone_endpoint() {
    if !available() {
        return;
    }
    let (lab, _servers) = lab_with_flows();
    let (a, b) = (lab.pod(1).addr(TARGET_PORT), lab.pod(2).addr(TARGET_PORT));
    let old = dns_state(vec![endpoint(a), endpoint(b)]);
    let new = dns_state(vec![endpoint(b)]);
    let plan = stale_udp_flows(&old, &new, &NodeConfig::default());
    let shown: Vec<String> = plan.iter().map(|f| f.to_string()).collect();
    assert_eq!(shown, ["udp dport=30053 dnat=10.244.2.2", "udp dst=10.96.0.53 dport=53 dnat=10.244.2.2"]);

    let deleted: usize = plan.iter().map(|f| delete_and_check(&lab.node, IpFamily::V4, f)).sum();
    assert_eq!(deleted, 4, "2 service flows and 2 NodePort flows went to a");
    let left = udp_flows(&lab.node, IpFamily::V4);
    assert_eq!(left.len(), 3, "{left:#?}");
    assert!(left.iter().all(|f| f.reply_src.ip() == b.ip()), "only flows to b survive: {left:#?}");
}

#[test]
fn each_filter_field_is_honoured_and_nothing_matched_is_zero() {
    if !available() {
        return;
    }
    let (lab, _servers) = lab_with_flows();
    let (a, b): (IpAddr, IpAddr) = (lab.pod(1).ip.into(), lab.pod(2).ip.into());
    let v4 = IpFamily::V4;
    // Nothing matches (exit status 1, "0 flow entries have been deleted"): Ok(0).
    assert_eq!(delete_and_check(&lab.node, v4, &FlowFilter::udp_node_port(NODE_PORT, Some(b))), 0);
    // A direct flow to b's port is not DNATed: `--dst-nat` must not match it.
    assert_eq!(delete_and_check(&lab.node, v4, &FlowFilter::udp_node_port(TARGET_PORT, Some(b))), 0);
    // Another port of the service IP: nothing.
    assert_eq!(delete_and_check(&lab.node, v4, &FlowFilter::udp_to(ip(SERVICE_IP), 54, None)), 0);
    assert_eq!(delete_and_check(&lab.node, v4, &FlowFilter::udp_to(ip(SERVICE_IP), 53, Some(b))), 2);
    assert_eq!(delete_and_check(&lab.node, v4, &FlowFilter::udp_node_port(NODE_PORT, None)), 2);
    assert_eq!(delete_and_check(&lab.node, v4, &FlowFilter::udp_to(ip(SERVICE_IP), 53, None)), 2);
    let left = udp_flows(&lab.node, v4);
    assert_eq!(left.len(), 1, "only the direct flow: {left:#?}");
    assert_eq!((left[0].orig_dst.ip(), left[0].is_dnat()), (b, false));
    assert!(udp_flows(&lab.node, v4).iter().all(|f| f.reply_src.ip() != a));
}

#[test]
fn ipv6_flows_are_deleted_with_family_ipv6() {
    if !available() {
        return;
    }
    // Node namespace (client) → veth → pod namespace (server); node-originated traffic to the
    // service IP is DNATed in nat OUTPUT.
    let node = NetNs::new("ct6node");
    let pod = NetNs::new("ct6pod");
    node.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", pod.name()]);
    node.ip(&["-6", "addr", "add", "fd00:ce::1/64", "dev", "veth0", "nodad"]);
    pod.ip(&["-6", "addr", "add", "fd00:ce::2/64", "dev", "eth0", "nodad"]);
    node.ip(&["link", "set", "veth0", "up"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    node.ip(&["-6", "route", "add", "fd00:96::/64", "dev", "lo"]);
    let _server = Server::start(&pod, Proto::Udp, TARGET_PORT, "v6");
    let dnat = ["ip6tables", "-w", "5", "-t", "nat", "-A", "OUTPUT", "-d", "fd00:96::53", "-p", "udp", "--dport", "53"];
    node.run_ok(&[&dnat[..], &["-j", "DNAT", "--to-destination", "[fd00:ce::2]:5353"]].concat());
    let service: SocketAddr = "[fd00:96::53]:53".parse().unwrap();
    let tally = traffic::tally(&traffic::requests(&node, Proto::Udp, service, WAIT, 2));
    assert_eq!(tally, BTreeMap::from([("v6".into(), 2)]));
    assert_eq!(udp_flows(&node, IpFamily::V6).len(), 2, "{:#?}", udp_flows(&node, IpFamily::V6));

    let filter = FlowFilter::udp_to(ip("fd00:96::53"), 53, Some(ip("fd00:ce::2")));
    assert_eq!(delete_and_check(&node, IpFamily::V6, &filter), 2);
    assert!(udp_flows(&node, IpFamily::V6).is_empty());
}

#[test]
fn a_failing_command_is_an_error_not_zero() {
    if !available() {
        return;
    }
    let ct = ExecConntrack { netns: Some(format!("knt-ct-missing-{}", std::process::id())) };
    match ct.delete(IpFamily::V4, &FlowFilter::udp_node_port(NODE_PORT, None)) {
        Err(Error::Failed { command, stderr, .. }) => {
            assert!(command.starts_with("ip netns exec knt-ct-missing-"), "{command}");
            assert!(!stderr.is_empty());
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}
