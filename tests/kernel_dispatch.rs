//! Real kernel: a `--services-dispatch=tree` ruleset of 400 services with random ClusterIPs in
//! 10.96.0.0/12 is loaded into a node namespace with the real nft and legacy
//! `iptables-restore`, and real TCP connections from a pod namespace reach their backend
//! through two or more levels of dispatch chains; pod → pod traffic passes untouched; the
//! kernel's `iptables-save` compares equal to the flat render; `cleanup` removes every chain.
//! An IPv6 tree loads with `ip6tables-restore` and reads back equal to the flat render.
//! Needs root (skips otherwise, fails under CI).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use kubenat::apply::exec::{Backend, ExecIptables, Iptables, Tool};
use kubenat::apply::{Applier, Mode};
use kubenat::inspect::diff::{diff, DiffOptions};
use kubenat::model::{
    build, ClusterState, Endpoint, IpFamily, LocalDetector, NodeConfig, Protocol, ServicePort, ServicePortName,
    ServicesDispatch,
};
use kubenat::rules::chain_names::is_dispatch_chain;
use kubenat::rules::parse::parse;
use kubenat::rules::render::{jump_rules, render};
use kubenat::rules::ruleset::{Ruleset, TableName};
use kubenat::{apply::apply_once, rules::extras::plan};
use testkit::lab::Lab;
use testkit::netns::NetNs;
use testkit::traffic::{self, Proto, Reply, Server};

const V4: IpFamily = IpFamily::V4;
const SERVICES: u32 = 400;
const TARGET_PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(2);

fn available(backend: Backend) -> bool {
    testkit::require_root() && testkit::require_program(&backend.binary(V4, Tool::Restore))
}

fn node(dispatch: ServicesDispatch) -> NodeConfig {
    NodeConfig { services_dispatch: dispatch, ..build::node(V4) }
}

fn endpoint(ip: Ipv4Addr) -> Endpoint {
    build::endpoint(SocketAddr::new(IpAddr::V4(ip), TARGET_PORT))
}

/// `SERVICES` services at distinct pseudo-random addresses of 10.96.0.0/12, each with one
/// endpoint; every 50th (and the last by name) is served by `backend`, the others point at
/// addresses nobody has. Returns the state and the served ClusterIPs.
fn cluster(backend: Ipv4Addr) -> (ClusterState, Vec<Ipv4Addr>) {
    let mut state = ClusterState::default();
    let mut served = Vec::new();
    let mut used = BTreeSet::new();
    let mut x: u32 = 0x9e37_79b9;
    for s in 0..SERVICES {
        let ip = loop {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let ip = Ipv4Addr::from(0x0a60_0000 | (x & 0x000f_ffff));
            if ip.octets()[3] != 0 && used.insert(ip) {
                break ip;
            }
        };
        let name = ServicePortName {
            namespace: "default".into(),
            name: format!("svc-{s:04}").into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        };
        let real = s % 50 == 7 || s == SERVICES - 1;
        let target = if real { backend } else { Ipv4Addr::new(10, 244, 200, (s % 250) as u8 + 1) };
        let mut svc = ServicePort::new(name.clone(), vec![IpAddr::V4(ip)], 80);
        svc.endpoints = vec![endpoint(target)];
        state.services.insert(name, svc.into());
        if real {
            served.push(ip);
        }
    }
    (state, served)
}

/// Number of dispatch levels below KUBE-SERVICES on the deepest path of `saved`.
fn depth(saved: &Ruleset, chain: &str, level: usize) -> usize {
    let nat = saved.table(TableName::Nat).expect("nat");
    let children: Vec<&str> =
        nat.chain_rules(chain).filter_map(|r| r.target()).filter(|t| is_dispatch_chain(t)).collect();
    children.into_iter().map(|c| depth(saved, c, level + 1)).max().unwrap_or(level).max(level)
}

fn carries_traffic_through_the_tree(backend: Backend) {
    if !available(backend) {
        return;
    }
    let lab = Lab::new(2);
    let server = lab.pod(1);
    let _srv = Server::start(&server.ns, Proto::Tcp, TARGET_PORT, "backend");
    let (state, served) = cluster(server.ip);
    let tree = render(&state, &node(ServicesDispatch::Tree));
    let ipt = lab.node_iptables(backend);
    apply_once(&ipt, V4, &tree, &jump_rules(&node(ServicesDispatch::Tree)))
        .unwrap_or_else(|e| panic!("{backend}: loading the tree: {e}"));
    let dump = lab.node_save(backend);
    let saved = parse(&dump).expect("save parses");
    let levels = depth(&saved, "KUBE-SERVICES", 0);
    assert!(levels >= 2, "{backend}: only {levels} dispatch level(s) in the kernel");

    let client = &lab.pod(0).ns;
    for ip in &served {
        let replies = traffic::requests(client, Proto::Tcp, SocketAddr::new(IpAddr::V4(*ip), 80), WAIT, 2);
        for reply in &replies {
            assert!(
                matches!(reply, Reply::Answer { server, .. } if server == "backend"),
                "{backend}: {ip}:80 through the tree gave {reply}"
            );
        }
    }
    // Pod → pod traffic walks the root's dispatch rules, matches none, and is not NATed.
    let direct = traffic::request(client, Proto::Tcp, server.addr(TARGET_PORT), WAIT);
    let me = lab.pod(0).ip;
    assert_eq!(direct, Reply::Answer { server: "backend".into(), client: IpAddr::V4(me) }, "{backend}");

    // The kernel's dump, flattened by diff, is the flat layout of the same services (with the
    // jump rules and canary a first apply adds).
    let flat_node = node(ServicesDispatch::Flat);
    let flat = plan(&render(&state, &flat_node), &jump_rules(&flat_node), &Ruleset::default());
    let nat_only = |r: &Ruleset| Ruleset { tables: r.table(TableName::Nat).into_iter().cloned().collect() };
    let d = diff(&nat_only(&flat), &nat_only(&saved), &DiffOptions { kube_only: true });
    assert!(d.is_empty(), "{backend}: kernel tree differs from the flat render:\n{d}");

    let report = Applier::new(&ipt, V4, Mode::Iptables).cleanup().unwrap_or_else(|e| panic!("{backend}: cleanup: {e}"));
    assert!(report.chains > 0);
    let after = lab.node_save(backend);
    assert!(!after.contains("KUBE-DISP-"), "{backend}: dispatch chains survived cleanup:\n{after}");
}

/// IPv6: 300 services at random addresses of fd00:10:96::/108 load with ip6tables-restore, the
/// kernel keeps every dispatch rule on a nibble boundary, and the dump diffs equal to flat.
fn loads_on_ipv6(backend: Backend) {
    if !(available(backend) && testkit::require_program(&backend.binary(IpFamily::V6, Tool::Restore))) {
        return;
    }
    let ns = NetNs::new("disp6");
    let ipt = ExecIptables::new(backend).in_netns(ns.name());
    let mut state = ClusterState::default();
    let mut x: u32 = 0x1234_5678;
    for s in 0..300u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let ip: Ipv6Addr = Ipv6Addr::from(0xfd00_0010_0096_0000_0000_0000_0000_0000u128 | u128::from(x & 0xf_ffff));
        let name = ServicePortName {
            namespace: "default".into(),
            name: format!("svc6-{s:04}").into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        };
        let mut svc = ServicePort::new(name.clone(), vec![IpAddr::V6(ip)], 80);
        let ep = Ipv6Addr::new(0xfd00, 0x10, 0x244, 2, 0, 0, 0, 2);
        svc.endpoints =
            vec![Endpoint { addr: SocketAddr::new(IpAddr::V6(ep), TARGET_PORT), ..endpoint(Ipv4Addr::LOCALHOST) }];
        state.services.insert(name, svc.into());
    }
    let v6 = |dispatch| NodeConfig {
        family: IpFamily::V6,
        local_detector: LocalDetector::Cidr("fd00:10:244::/56".parse().expect("cidr")),
        ..node(dispatch)
    };
    let tree = render(&state, &v6(ServicesDispatch::Tree));
    apply_once(&ipt, IpFamily::V6, &tree, &jump_rules(&v6(ServicesDispatch::Tree)))
        .unwrap_or_else(|e| panic!("{backend}: loading the IPv6 tree: {e:?}"));
    let saved = parse(&ipt.save(IpFamily::V6, Some(TableName::Nat)).expect("ip6tables-save")).expect("parses");
    assert!(depth(&saved, "KUBE-SERVICES", 0) >= 2, "{backend}: IPv6 tree too shallow");
    let flat_node = v6(ServicesDispatch::Flat);
    let flat = plan(&render(&state, &flat_node), &jump_rules(&flat_node), &Ruleset::default());
    let nat_only = |r: &Ruleset| Ruleset { tables: r.table(TableName::Nat).into_iter().cloned().collect() };
    let d = diff(&nat_only(&flat), &saved, &DiffOptions { kube_only: true });
    assert!(d.is_empty(), "{backend}: IPv6 kernel tree differs from the flat render:\n{d}");
}

#[test]
fn tree_dispatch_ipv6_nft() {
    loads_on_ipv6(Backend::Nft);
}

#[test]
fn tree_dispatch_ipv6_legacy() {
    loads_on_ipv6(Backend::Legacy);
}

#[test]
fn tree_dispatch_nft() {
    carries_traffic_through_the_tree(Backend::Nft);
}

#[test]
fn tree_dispatch_legacy() {
    carries_traffic_through_the_tree(Backend::Legacy);
}
