use std::net::IpAddr;

use super::*;
use crate::model::{ClusterState, Endpoint, NodeConfig, NodePortAddresses, ServicePort, ServicePortName};

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

/// `ns/dns:dns`, ClusterIP 10.96.0.10 (+ fd00:96::10), port 53, NodePort 30053, externalIP
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
    ClusterState { services: ports.into_iter().map(|p| (p.name.clone(), p.into())).collect() }
}

fn node(family: IpFamily) -> NodeConfig {
    let local_addresses = vec!["192.168.1.10/24".parse().unwrap(), "fd00:1::10/64".parse().unwrap()];
    NodeConfig { family, node_name: "n1".into(), local_addresses, ..NodeConfig::default() }
}

fn frontends(ports: Vec<ServicePort>) -> Frontends {
    Frontends::new(&state(ports), &node(IpFamily::V4))
}

fn udp(src: &str, dst: &str, reply_src: &str) -> Flow {
    Flow::new(Protocol::Udp, src.parse().unwrap(), dst.parse().unwrap(), reply_src.parse().unwrap())
}

/// The flows `f` deletes among `flows`, shown as `dst<-reply_src`.
fn stale(f: &Frontends, flows: &[Flow]) -> Vec<String> {
    stale_flows(flows.iter().cloned(), f).iter().map(|f| format!("{}<-{}", f.orig_dst, f.reply_src)).collect()
}

#[test]
fn flows_to_each_frontend_are_kept_only_when_dnated_to_a_serving_endpoint_ip_and_port() {
    let f = frontends(vec![dns(Protocol::Udp, vec![ready("10.244.1.5:5353")])]);
    let flows = [
        udp("10.244.0.2:40000", "10.96.0.10:53", "10.244.1.5:5353"), // right endpoint: kept
        udp("10.244.0.2:40001", "10.96.0.10:53", "10.244.1.5:53"),   // right IP, old target port
        udp("10.244.0.2:40002", "10.96.0.10:53", "10.244.2.7:5353"), // gone endpoint
        udp("10.244.0.2:40003", "10.96.0.10:53", "10.96.0.10:53"),   // never DNATed
        udp("10.244.0.2:40004", "192.0.2.1:53", "10.244.2.7:5353"),  // external IP
        udp("10.244.0.2:40005", "198.51.100.1:53", "198.51.100.1:53"), // LB IP, never DNATed
        udp("10.244.0.2:40006", "198.51.100.1:53", "10.244.1.5:5353"), // LB IP: kept
        udp("10.244.0.2:40007", "10.96.0.10:54", "10.244.2.7:5353"), // another port: not ours
        udp("10.244.0.2:40008", "10.244.2.7:5353", "10.244.2.7:5353"), // direct to a pod
    ];
    assert_eq!(
        stale(&f, &flows),
        [
            "10.96.0.10:53<-10.244.1.5:53",
            "10.96.0.10:53<-10.244.2.7:5353",
            "10.96.0.10:53<-10.96.0.10:53",
            "192.0.2.1:53<-10.244.2.7:5353",
            "198.51.100.1:53<-198.51.100.1:53",
        ]
    );
}

#[test]
fn node_ports_on_local_addresses_and_dnated_flows() {
    let f = frontends(vec![dns(Protocol::Udp, vec![ready("10.244.1.5:5353")])]);
    let flows = [
        udp("192.0.2.9:40000", "192.168.1.10:30053", "10.244.1.5:5353"), // kept
        udp("192.0.2.9:40001", "192.168.1.10:30053", "10.244.2.7:5353"), // gone endpoint
        udp("192.0.2.9:40002", "192.168.1.10:30053", "192.168.1.10:30053"), // not DNATed, local
        udp("127.0.0.1:40003", "127.0.0.1:30053", "127.0.0.1:30053"),    // localhost NodePort
        udp("192.0.2.9:40004", "192.168.1.77:30053", "10.244.2.7:5353"), // DNATed: local by nature
        // A client on this node talking to a remote server on port 30053: not a NodePort flow.
        udp("192.168.1.10:40005", "203.0.113.8:30053", "203.0.113.8:30053"),
        // The subnet of a local address is not local: 192.168.1.20 is another host.
        udp("192.168.1.10:40006", "192.168.1.20:30053", "192.168.1.20:30053"),
    ];
    assert_eq!(
        stale(&f, &flows),
        [
            "192.168.1.10:30053<-10.244.2.7:5353",
            "192.168.1.10:30053<-192.168.1.10:30053",
            "127.0.0.1:30053<-127.0.0.1:30053",
            "192.168.1.77:30053<-10.244.2.7:5353",
        ]
    );
}

#[test]
fn nodeport_addresses_cidrs_limit_node_port_flows() {
    let mut n = node(IpFamily::V4);
    n.nodeport_addresses = NodePortAddresses::Cidrs(vec!["192.168.1.0/24".parse().unwrap()]);
    let f = Frontends::new(&state(vec![dns(Protocol::Udp, vec![ready("10.244.1.5:5353")])]), &n);
    let flows = [
        udp("192.0.2.9:40001", "192.168.1.10:30053", "10.244.2.7:5353"),
        udp("192.0.2.9:40002", "10.0.0.1:30053", "10.244.2.7:5353"),
    ];
    assert_eq!(stale(&f, &flows), ["192.168.1.10:30053<-10.244.2.7:5353"]);
}

#[test]
fn a_service_without_serving_endpoints_has_every_flow_stale() {
    // kubernetes#139628: flows DNATed to a gone endpoint would otherwise bypass the REJECT rule.
    let f = frontends(vec![dns(Protocol::Udp, vec![ep("10.244.1.5:5353", false, false, false)])]);
    let flows = [
        udp("10.244.0.2:40000", "10.96.0.10:53", "10.244.1.5:5353"),
        udp("10.244.0.2:40001", "10.96.0.10:53", "10.96.0.10:53"),
        udp("192.0.2.9:40002", "192.168.1.10:30053", "10.244.1.5:5353"),
    ];
    assert_eq!(stale(&f, &flows).len(), 3);
}

#[test]
fn serving_terminating_endpoints_keep_their_flows() {
    let f = frontends(vec![dns(Protocol::Udp, vec![ep("10.244.1.5:5353", false, true, true)])]);
    assert!(stale(&f, &[udp("10.244.0.2:40000", "10.96.0.10:53", "10.244.1.5:5353")]).is_empty());
}

#[test]
fn tcp_sctp_and_other_family_flows_are_never_stale() {
    let f = frontends(vec![dns(Protocol::Udp, vec![])]);
    let tcp = Flow::new(
        Protocol::Tcp,
        "10.244.0.2:40000".parse().unwrap(),
        "10.96.0.10:53".parse().unwrap(),
        "10.244.2.7:53".parse().unwrap(),
    );
    assert!(!f.is_stale(&tcp));
    assert!(!f.is_stale(&udp("[fd00::2]:40000", "[fd00:96::10]:53", "[fd00:244::7]:5353")));
    // A TCP or SCTP service port has no frontends at all.
    for proto in [Protocol::Tcp, Protocol::Sctp] {
        assert!(frontends(vec![dns(proto, vec![])]).is_empty());
    }
}

#[test]
fn ipv6_frontends_use_ipv6_addresses_only() {
    let port = dns(Protocol::Udp, vec![ready("10.244.1.5:5353"), ready("[fd00:244::5]:5353")]);
    let f = Frontends::new(&state(vec![port]), &node(IpFamily::V6));
    let flows = [
        udp("[fd00::2]:40000", "[fd00:96::10]:53", "[fd00:244::5]:5353"),
        udp("[fd00::2]:40001", "[fd00:96::10]:53", "[fd00:244::7]:5353"),
        udp("[fd00::2]:40002", "[fd00:1::10]:30053", "[fd00:1::10]:30053"),
        udp("10.244.0.2:40003", "10.96.0.10:53", "10.244.2.7:5353"),
    ];
    assert_eq!(stale(&f, &flows), ["[fd00:96::10]:53<-[fd00:244::7]:5353", "[fd00:1::10]:30053<-[fd00:1::10]:30053"]);
}

#[test]
fn a_port_without_a_cluster_ip_of_the_family_has_no_frontends() {
    let mut port = dns(Protocol::Udp, vec![ready("[fd00:244::5]:5353")]);
    port.cluster_ips = vec![ip("10.96.0.10")];
    assert!(Frontends::new(&state(vec![port]), &node(IpFamily::V6)).is_empty());
}

#[test]
fn shared_external_ips_keep_the_endpoints_of_both_ports() {
    let mut other = dns(Protocol::Udp, vec![ready("10.244.3.3:5353")]);
    other.name.name = "dns2".into();
    other.cluster_ips = vec![ip("10.96.0.11")];
    other.node_port = Some(30054);
    let f = frontends(vec![dns(Protocol::Udp, vec![ready("10.244.1.5:5353")]), other]);
    let flows = [
        udp("10.244.0.2:40000", "192.0.2.1:53", "10.244.1.5:5353"),
        udp("10.244.0.2:40001", "192.0.2.1:53", "10.244.3.3:5353"),
        udp("10.244.0.2:40002", "10.96.0.10:53", "10.244.3.3:5353"),
    ];
    assert_eq!(stale(&f, &flows), ["10.96.0.10:53<-10.244.3.3:5353"]);
}

#[test]
fn retired_frontends_have_every_flow_stale() {
    let before = frontends(vec![dns(Protocol::Udp, vec![ready("10.244.1.5:5353")])]);
    let now = frontends(vec![]).with_retired(&before);
    assert!(!now.is_empty());
    let flows = [
        udp("10.244.0.2:40000", "10.96.0.10:53", "10.244.1.5:5353"),
        udp("192.0.2.9:40001", "192.168.1.10:30053", "10.244.1.5:5353"),
    ];
    assert_eq!(stale(&now, &flows).len(), 2);
    // Frontends still present keep their endpoints.
    let same = before.clone().with_retired(&before);
    assert_eq!(same, before);
}

#[test]
fn reconcile_deletes_the_stale_flows_and_counts_them() {
    let keep = udp("10.244.0.2:40000", "10.96.0.10:53", "10.244.1.5:5353");
    let gone = udp("10.244.0.2:40001", "10.96.0.10:53", "10.244.2.7:5353");
    let v6 = udp("[fd00::2]:40000", "[fd00:96::10]:53", "[fd00:244::7]:5353");
    let fake = FakeConntrack::with_flows(vec![keep.clone(), gone.clone(), v6.clone()]);
    let f = frontends(vec![dns(Protocol::Udp, vec![ready("10.244.1.5:5353")])]);
    let outcome = reconcile(&fake, &f);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!((outcome.listed, outcome.stale, outcome.deleted), (2, 1, 1));
    assert_eq!(fake.deleted(), [gone]);
    assert_eq!(fake.flows(), [keep, v6]);
    // Nothing left to do: a second pass deletes nothing.
    assert_eq!(reconcile(&fake, &f).deleted, 0);
}

#[test]
fn a_refused_listing_deletes_nothing_and_reports_the_error() {
    let fake = FakeConntrack::with_flows(vec![udp("10.244.0.2:40001", "10.96.0.10:53", "10.244.2.7:5353")]);
    fake.refuse_listing(true);
    let outcome = reconcile(&fake, &frontends(vec![dns(Protocol::Udp, vec![])]));
    assert!(matches!(outcome.error, Some(Error::Kernel { .. })), "{outcome:?}");
    assert_eq!(outcome.deleted, 0);
    assert_eq!(fake.flows().len(), 1);
}

#[test]
fn the_fake_deletes_by_tuple_and_id() {
    let mut flow = udp("10.244.0.2:40001", "10.96.0.10:53", "10.244.2.7:5353");
    flow.id = Some(7);
    let fake = FakeConntrack::with_flows(vec![flow.clone()]);
    let recreated = Flow { id: Some(8), ..flow.clone() };
    assert!(!fake.delete(&recreated).unwrap(), "another entry with the same tuple is not deleted");
    assert!(fake.delete(&flow).unwrap());
    assert!(!fake.delete(&flow).unwrap(), "already gone");
}
