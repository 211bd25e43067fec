//! Real kernel: UDP conntrack reconciliation over netlink. Flows are inserted with
//! `conntrack -I` into a namespace's table *before* the reconciler runs (as flows older than
//! the daemon would be); the reconciler (`NetlinkConntrack`, opened inside that namespace)
//! then deletes exactly the stale ones, and `conntrack -L` — an independent reader — shows
//! which survived. Also the daemon itself: started against the test API server, it deletes a
//! stale flow that existed before it started. Needs root and conntrack-tools (skips otherwise,
//! fails under CI=true).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kubenat::conntrack::{reconcile, Conntrack, Flow, Frontends, NetlinkConntrack, Outcome};
use kubenat::model::build;
use kubenat::model::{ClusterState, Endpoint, IpFamily, NodeConfig, Protocol, ServicePort, ServicePortName};
use testkit::apiserver::ApiServer;
use testkit::conntrack::{insert, list, Listed};
use testkit::daemon::{poll, Daemon, DaemonOptions};
use testkit::netns::NetNs;
use testkit::objects::{self, Port};

fn available() -> bool {
    testkit::require_root() && testkit::require_program("conntrack")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ready(addr: &str) -> Endpoint {
    Endpoint { node_name: None, ..build::endpoint(addr.parse().unwrap()) }
}

fn port(name: &str, protocol: Protocol, cluster_ips: &[&str], endpoints: &[&str]) -> ServicePort {
    let name = ServicePortName { namespace: "default".into(), name: name.into(), port: "p".into(), protocol };
    let ips = cluster_ips.iter().map(|s| ip(s)).collect();
    ServicePort { endpoints: endpoints.iter().map(|e| ready(e)).collect(), ..ServicePort::new(name, ips, 53) }
}

/// `dns` (UDP 10.96.0.10 + fd00:96::10 :53, NodePort 30053, externalIP 192.0.2.10) served by
/// 10.244.1.7:5353 and [fd00:244::7]:5353; `drained` (UDP 10.96.0.20:53) without endpoints;
/// `web` (TCP 10.96.0.10:53) served by a pod that is gone for `dns`.
fn cluster() -> ClusterState {
    let mut dns =
        port("dns", Protocol::Udp, &["10.96.0.10", "fd00:96::10"], &["10.244.1.7:5353", "[fd00:244::7]:5353"]);
    dns.node_port = Some(30053);
    dns.external_ips = vec![ip("192.0.2.10")];
    let drained = port("drained", Protocol::Udp, &["10.96.0.20"], &[]);
    let web = port("web", Protocol::Tcp, &["10.96.0.10"], &["10.244.2.9:5353"]);
    ClusterState { services: [dns, drained, web].into_iter().map(|p| (p.name.clone(), p.into())).collect() }
}

fn node(family: IpFamily) -> NodeConfig {
    let local_addresses = vec!["192.168.50.1/24".parse().unwrap(), "fd00:50::1/64".parse().unwrap()];
    NodeConfig { family, local_addresses, ..NodeConfig::default() }
}

/// Reconciles `family` of `ns`'s table with `cluster()` through netlink, from inside `ns`.
fn reconcile_in(ns: &NetNs, family: IpFamily) -> Outcome {
    let frontends = Frontends::new(&cluster(), &node(family));
    ns.inside(move || reconcile(&NetlinkConntrack::new(), &frontends))
}

/// Inserts `flows` (`(proto, src, dst, reply_src)`), each with its own client port.
fn insert_all(ns: &NetNs, flows: &[(&str, &str, &str, Option<&str>)]) {
    for (proto, src, dst, reply) in flows {
        insert(ns, proto, src, dst, *reply);
    }
}

fn sources(flows: &[Listed]) -> BTreeSet<String> {
    flows.iter().map(|f| format!("{} {}", f.proto, f.orig_src)).collect()
}

#[test]
fn reconciler_deletes_exactly_the_stale_udp_flows() {
    if !available() {
        return;
    }
    let ns = NetNs::new("ctrec");
    let kept = [
        ("udp", "10.244.0.5:40000", "10.96.0.10:53", Some("10.244.1.7:5353")), // serving endpoint
        ("udp", "192.0.2.99:40008", "192.168.50.1:30053", Some("10.244.1.7:5353")), // NodePort, serving
        ("tcp", "10.244.0.5:40009", "10.96.0.10:53", Some("10.244.2.9:5353")), // TCP: never touched
        ("udp", "10.244.0.5:40010", "10.96.0.99:53", Some("10.244.2.9:5353")), // not a service
        ("udp", "192.168.50.1:40011", "203.0.113.8:30053", None),              // to a remote server's port 30053
    ];
    let stale = [
        ("udp", "10.244.0.5:40001", "10.96.0.10:53", Some("10.244.1.7:53")), // right pod, wrong port
        ("udp", "10.244.0.5:40002", "10.96.0.10:53", Some("10.244.2.9:5353")), // endpoint gone
        ("udp", "10.244.0.5:40003", "10.96.0.10:53", None),                  // never DNATed: black hole
        ("udp", "10.244.0.5:40004", "10.96.0.20:53", Some("10.244.3.3:5353")), // N → 0 endpoints
        ("udp", "10.244.0.5:40005", "10.96.0.20:53", None),                  // 0 endpoints, never DNATed
        ("udp", "10.244.0.5:40006", "192.0.2.10:53", Some("10.244.2.9:5353")), // external IP
        ("udp", "192.0.2.99:40007", "192.168.50.1:30053", Some("10.244.2.9:5353")), // NodePort
    ];
    let kept6 = [("udp", "[fd00::5]:40000", "[fd00:96::10]:53", Some("[fd00:244::7]:5353"))];
    let stale6 = [
        ("udp", "[fd00::5]:40001", "[fd00:96::10]:53", Some("[fd00:244::9]:5353")),
        ("udp", "[fd00::5]:40002", "[fd00:50::1]:30053", None),
    ];
    for flows in [&kept[..], &stale[..], &kept6[..], &stale6[..]] {
        insert_all(&ns, flows);
    }
    assert_eq!(list(&ns, "ipv4").len(), 12, "{:#?}", list(&ns, "ipv4"));

    let outcome = reconcile_in(&ns, IpFamily::V4);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!((outcome.listed, outcome.stale, outcome.deleted), (11, 7, 7), "{outcome:?}");
    let left = list(&ns, "ipv4");
    let expected: BTreeSet<String> = kept.iter().map(|(p, s, ..)| format!("{p} {s}")).collect();
    assert_eq!(sources(&left), expected, "{left:#?}");
    assert_eq!(list(&ns, "ipv6").len(), 3, "IPv4 reconciliation leaves IPv6 alone");

    let outcome6 = reconcile_in(&ns, IpFamily::V6);
    assert_eq!((outcome6.listed, outcome6.deleted), (3, 2), "{outcome6:?}");
    let left6 = list(&ns, "ipv6");
    assert_eq!(sources(&left6), BTreeSet::from(["udp [fd00::5]:40000".to_string()]), "{left6:#?}");

    let again = reconcile_in(&ns, IpFamily::V4);
    assert_eq!((again.stale, again.deleted), (0, 0), "a second pass finds nothing: {again:?}");
}

#[test]
fn a_flow_deleted_meanwhile_is_not_an_error() {
    if !available() {
        return;
    }
    let ns = NetNs::new("ctgone");
    insert(&ns, "udp", "10.244.0.5:40002", "10.96.0.10:53", Some("10.244.2.9:5353"));
    let frontends = Frontends::new(&cluster(), &node(IpFamily::V4));
    let flow = Flow::new(
        Protocol::Udp,
        "10.244.0.5:40002".parse().unwrap(),
        "10.96.0.10:53".parse().unwrap(),
        "10.244.2.9:5353".parse().unwrap(),
    );
    let deleted_twice = ns.inside(move || {
        let ct = NetlinkConntrack::new();
        let first = reconcile(&ct, &frontends);
        // The same flow again, now gone: `delete` says so instead of failing.
        (first.deleted, ct.delete(&flow).map_err(|e| e.to_string()))
    });
    assert_eq!(deleted_twice, (1, Ok(false)));
}

/// The daemon, started against the test API server in a namespace whose table already holds a
/// flow of `default/dns` DNATed to a pod that is no longer an endpoint, deletes it at its first
/// sync and keeps the flow to the serving endpoint.
#[test]
fn daemon_deletes_a_stale_flow_older_than_itself() {
    if !available() || !testkit::require_program("iptables-nft-restore") {
        return;
    }
    let ns = NetNs::new("ctdmn");
    insert(&ns, "udp", "10.244.0.5:40000", "10.96.0.10:53", Some("10.244.1.7:5353"));
    insert(&ns, "udp", "10.244.0.5:40001", "10.96.0.10:53", Some("10.244.2.9:5353"));
    let api = ApiServer::start_in_netns(ns.name());
    api.apply(objects::node(objects::NODE, None));
    let ports = [Port::udp("dns", 53, 5353)];
    api.apply(objects::service("dns", Ipv4Addr::new(10, 96, 0, 10), &ports));
    api.apply(objects::slice("dns", &objects::ready_on(&[Ipv4Addr::new(10, 244, 1, 7)], objects::NODE), &ports));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let mut daemon = Daemon::start(&ns, &kubeconfig, &dir.path().join("kubenat.log"), &DaemonOptions::new("nft"));
    let deleted = poll(Duration::from_secs(20), Duration::from_millis(100), || {
        let scrape = daemon.metrics()?;
        scrape.value(r#"kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="IPv4"}"#).filter(|n| *n >= 1.0)
    });
    // Only UDP: the daemon's own TCP connections to the API server are in the table too.
    let left: Vec<Listed> = list(&ns, "ipv4").into_iter().filter(|f| f.proto == "udp").collect();
    let log = daemon.log();
    daemon.terminate();
    assert_eq!(deleted, Some(1.0), "no deletion counted; log:\n{log}");
    assert_eq!(sources(&left), BTreeSet::from(["udp 10.244.0.5:40000".to_string()]), "{left:#?}\n{log}");
}
