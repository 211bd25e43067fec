//! Real kernel: real UDP flows through DNAT rules in a lab namespace create conntrack entries;
//! `NetlinkConntrack` (ctnetlink, opened inside that namespace) lists them exactly as the
//! `conntrack` CLI does, and the reconciler deletes exactly the flows whose reply source is
//! not a serving endpoint. Needs root and conntrack-tools (skips otherwise, fails under
//! CI=true).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kubenat::conntrack::{reconcile, Conntrack, Flow, Frontends, NetlinkConntrack, Outcome};
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

/// The UDP entries of `ns`'s conntrack table as the `conntrack` CLI shows them.
fn udp_flows(ns: &NetNs, family: IpFamily) -> Vec<Flow> {
    let listed = testkit::conntrack::list(ns, &family.to_string());
    let mut flows: Vec<Flow> = listed
        .into_iter()
        .filter(|f| f.proto == "udp")
        .map(|f| Flow::new(Protocol::Udp, f.orig_src, f.orig_dst, f.reply_src))
        .collect();
    flows.sort_by_key(|f| (f.orig_dst, f.reply_src, f.orig_src));
    flows
}

/// Reconciles `ns`'s table with `state` through netlink, from inside `ns`.
fn reconcile_in(ns: &NetNs, state: &ClusterState, family: IpFamily) -> Outcome {
    let frontends = Frontends::new(state, &NodeConfig { family, ..NodeConfig::default() });
    let outcome = ns.inside(move || reconcile(&NetlinkConntrack::new(), &frontends));
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    outcome
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
    ClusterState { services: BTreeMap::from([(name, port.into())]) }
}

#[test]
fn netlink_lists_what_the_cli_lists() {
    if !available() {
        return;
    }
    let (lab, _servers) = lab_with_flows();
    let mut listed = lab.node.inside(|| {
        let mut flows = Vec::new();
        NetlinkConntrack::new().for_each_udp_flow(IpFamily::V4, &mut |f| flows.push(f)).expect("dump");
        flows
    });
    assert!(listed.iter().all(|f| f.id.is_some()), "every entry carries its id: {listed:#?}");
    for flow in &mut listed {
        flow.id = None;
    }
    listed.sort_by_key(|f| (f.orig_dst, f.reply_src, f.orig_src));
    assert_eq!(listed, udp_flows(&lab.node, IpFamily::V4));
}

#[test]
fn reconcile_removes_only_flows_to_the_gone_endpoint() {
    if !available() {
        return;
    }
    let (lab, _servers) = lab_with_flows();
    let b = lab.pod(2).addr(TARGET_PORT);
    let outcome = reconcile_in(&lab.node, &dns_state(vec![endpoint(b)]), IpFamily::V4);
    assert_eq!((outcome.listed, outcome.stale, outcome.deleted), (7, 4, 4), "2 service and 2 NodePort flows went to a");
    let left = udp_flows(&lab.node, IpFamily::V4);
    assert_eq!(left.len(), 3, "{left:#?}");
    assert!(left.iter().all(|f| f.reply_src == b), "only flows to b survive: {left:#?}");
}

#[test]
fn a_changed_target_port_makes_flows_stale() {
    if !available() {
        return;
    }
    let (lab, _servers) = lab_with_flows();
    // Same pods, another target port: every DNATed flow is stale, the direct one is not ours.
    let moved = |i: usize| endpoint(SocketAddr::new(lab.pod(i).ip.into(), TARGET_PORT + 1));
    let outcome = reconcile_in(&lab.node, &dns_state(vec![moved(1), moved(2)]), IpFamily::V4);
    assert_eq!(outcome.deleted, 6);
    let left = udp_flows(&lab.node, IpFamily::V4);
    assert_eq!((left.len(), left[0].is_dnat()), (1, false), "{left:#?}");
}

#[test]
fn zero_endpoints_clear_every_flow_to_the_service() {
    if !available() {
        return;
    }
    let (lab, _servers) = lab_with_flows();
    let outcome = reconcile_in(&lab.node, &dns_state(vec![]), IpFamily::V4);
    assert_eq!(outcome.deleted, 6, "4 service flows and 2 NodePort flows");
    let left = udp_flows(&lab.node, IpFamily::V4);
    let b: IpAddr = lab.pod(2).ip.into();
    assert_eq!(left.len(), 1, "only the direct flow: {left:#?}");
    assert_eq!((left[0].orig_dst.ip(), left[0].is_dnat()), (b, false));
}

#[test]
fn ipv6_flows_are_reconciled_in_their_family() {
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

    let state = |endpoints: Vec<Endpoint>| {
        let mut state = dns_state(endpoints);
        for port in state.services.values_mut().map(std::sync::Arc::make_mut) {
            port.cluster_ips = vec![ip("fd00:96::53")];
            port.node_port = None;
        }
        state
    };
    let serving = endpoint("[fd00:ce::2]:5353".parse().unwrap());
    assert_eq!(reconcile_in(&node, &state(vec![serving]), IpFamily::V6).deleted, 0);
    assert_eq!(reconcile_in(&node, &state(vec![]), IpFamily::V4).listed, 0, "IPv4 sees no IPv6 flow");
    assert_eq!(reconcile_in(&node, &state(vec![]), IpFamily::V6).deleted, 2);
    assert!(udp_flows(&node, IpFamily::V6).is_empty());
}
