//! The incremental rendering always equals a from-scratch render, and the partial plan built
//! from its changes leaves the fake kernel exactly as a full apply of the new state does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::apply::exec::{Iptables, RestoreOptions};
use crate::apply::fake::FakeIptables;
use crate::model::build::{self, node};
use crate::model::{Endpoint, LocalDetector, Protocol};
use crate::rules::plan::plan_partial;
use crate::rules::plan::testutil::cluster_state;
use crate::rules::render::render;

const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: true };

fn restore(fake: &FakeIptables, family: IpFamily, input: &Ruleset) {
    if input.tables.is_empty() {
        return;
    }
    if let Err(e) = fake.restore(family, &input.to_string(), NOFLUSH) {
        panic!("{e}\ninput:\n{input}");
    }
}

/// What a full apply of `ruleset` leaves in an empty kernel.
fn kernel_of(family: IpFamily, ruleset: &Ruleset) -> String {
    let fake = FakeIptables::new();
    restore(&fake, family, ruleset);
    fake.state_text(family)
}

/// Checks one update: the rendering equals `render`, the totals count its rules, and the plan
/// from the change moves `kernel` to what a full apply leaves.
fn step(inc: &mut Incremental, kernel: &FakeIptables, state: &ClusterState, node: &NodeConfig) -> Change {
    let change = inc.update(state, node);
    let expected = render(state, node);
    assert_eq!(inc.ruleset(), expected, "incremental rendering differs from a fresh render");
    for table in TABLES {
        assert_eq!(inc.rules_total(table), expected.table(table).map_or(0, |t| t.rules.len()), "{table} total");
    }
    let plan = plan_partial(&change.last, &change.next);
    restore(kernel, node.family, &plan);
    assert_eq!(kernel.state_text(node.family), kernel_of(node.family, &expected), "plan:\n{plan}");
    change
}

fn start(state: &ClusterState, node: &NodeConfig) -> (Incremental, FakeIptables) {
    let inc = Incremental::new(state, node);
    assert_eq!(inc.ruleset(), render(state, node));
    let kernel = FakeIptables::new();
    restore(&kernel, node.family, &inc.ruleset());
    (inc, kernel)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_match_a_fresh_render(
        states in prop::collection::vec(cluster_state(), 2..7),
        v6 in any::<bool>(),
        masquerade_all in prop::collection::vec(prop::bool::weighted(0.15), 7),
    ) {
        let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
        let base = node(family);
        let (mut inc, kernel) = start(&states[0], &base);
        for (state, masquerade_all) in states[1..].iter().zip(masquerade_all) {
            // Now and then a new node configuration, which re-renders everything.
            let node = NodeConfig { masquerade_all, ..base.clone() };
            let before = inc.node().clone();
            let change = step(&mut inc, &kernel, state, &node);
            // Five small services never reach large-cluster mode: only a new node rebuilds.
            prop_assert_eq!(change.rebuilt, before != node);
        }
    }
}

fn endpoint(i: u32) -> Endpoint {
    let ip = Ipv4Addr::from(0x0af4_0000 + i);
    Endpoint { node_name: Some(format!("node-{}", i % 3)), ..build::endpoint(SocketAddr::new(IpAddr::V4(ip), 8080)) }
}

/// `n` ClusterIP services (some NodePort) with `endpoints` endpoints each.
fn cluster(n: u32, endpoints: u32) -> ClusterState {
    let ports = (0..n).map(|i| {
        let name = build::port_name(&format!("ns{}", i % 5), &format!("svc-{i}"), "http");
        let mut svc = ServicePort::new(name, vec![IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i * 7919 % 65_000))], 80);
        svc.node_port = (i % 4 == 0).then_some(30_000 + i as u16);
        svc.endpoints = (0..endpoints).map(|e| endpoint(i * 16 + e)).collect();
        svc.endpoints.sort_by_cached_key(Endpoint::key);
        svc
    });
    build::state(ports.collect())
}

fn set_endpoints(state: &mut ClusterState, i: u32, endpoints: Vec<Endpoint>) {
    let name = state.services.keys().nth(i as usize).cloned().unwrap();
    let mut svc = ServicePort::clone(&state.services[&name]);
    svc.endpoints = endpoints;
    svc.endpoints.sort_by_cached_key(Endpoint::key);
    state.services.insert(name, Arc::new(svc));
}

#[test]
fn an_endpoint_change_writes_only_that_service() {
    let node = node(IpFamily::V4);
    let mut state = cluster(40, 3);
    let (mut inc, kernel) = start(&state, &node);
    set_endpoints(&mut state, 7, vec![endpoint(9000), endpoint(9001), endpoint(9002)]);
    let change = step(&mut inc, &kernel, &state, &node);
    assert_eq!(change.ports, 1);
    assert!(!change.rebuilt);
    let nat = change.next.table(TableName::Nat).unwrap();
    assert!(nat
        .chains
        .iter()
        .all(|c| c.name.as_str().starts_with("KUBE-SVC-") || c.name.as_str().starts_with("KUBE-SEP-")));
    assert!(change.next.table(TableName::Filter).is_none(), "no filter chain changed");
}

#[test]
fn a_copy_of_an_unchanged_port_is_not_re_rendered() {
    let node = node(IpFamily::V4);
    let state = cluster(10, 2);
    let (mut inc, kernel) = start(&state, &node);
    // Same values in new allocations (a source that converted everything again).
    let copy = ClusterState {
        services: state.services.iter().map(|(k, v)| (k.clone(), Arc::new(ServicePort::clone(v)))).collect(),
    };
    let change = step(&mut inc, &kernel, &copy, &node);
    assert!(change.is_empty());
    assert_eq!(change.ports, 0);
    assert!(inc.ports.values().zip(copy.services.values()).all(|(p, s)| Arc::ptr_eq(&p.input, s)));
}

#[test]
fn losing_the_last_endpoint_changes_the_filter_chains() {
    let node = node(IpFamily::V4);
    let mut state = cluster(12, 2);
    let (mut inc, kernel) = start(&state, &node);
    set_endpoints(&mut state, 4, vec![]);
    let change = step(&mut inc, &kernel, &state, &node);
    assert!(change.next.table(TableName::Filter).is_some(), "a REJECT rule appears in filter KUBE-SERVICES");
    set_endpoints(&mut state, 4, vec![endpoint(5000)]);
    step(&mut inc, &kernel, &state, &node);
}

#[test]
fn services_come_and_go_in_tree_mode() {
    let node = NodeConfig { services_dispatch: ServicesDispatch::Tree, ..node(IpFamily::V4) };
    let mut state = cluster(120, 2);
    let (mut inc, kernel) = start(&state, &node);
    let names: Vec<ServicePortName> = state.services.keys().cloned().collect();
    for (round, name) in names.iter().step_by(9).enumerate() {
        let gone = state.services.remove(name).unwrap();
        step(&mut inc, &kernel, &state, &node);
        if round % 2 == 0 {
            let mut back = ServicePort::clone(&gone);
            back.cluster_ips = vec![IpAddr::V4(Ipv4Addr::new(10, 100, round as u8, 1))];
            state.services.insert(name.clone(), Arc::new(back));
            step(&mut inc, &kernel, &state, &node);
        }
    }
    set_endpoints(&mut state, 3, vec![endpoint(7000)]);
    let change = step(&mut inc, &kernel, &state, &node);
    assert!(change.next.table(TableName::Nat).unwrap().chains.len() <= 3, "an endpoint change leaves the tree alone");
}

#[test]
fn crossing_into_large_cluster_mode_re_renders_everything() {
    let node = node(IpFamily::V4);
    let mut state = cluster(100, 10);
    let (mut inc, kernel) = start(&state, &node);
    assert!(!inc.large_cluster());
    set_endpoints(&mut state, 0, (0..11).map(|e| endpoint(20_000 + e)).collect());
    let change = step(&mut inc, &kernel, &state, &node);
    assert!(inc.large_cluster() && change.rebuilt);
    set_endpoints(&mut state, 0, vec![endpoint(30_000)]);
    let change = step(&mut inc, &kernel, &state, &node);
    assert!(!inc.large_cluster() && change.rebuilt);
}

#[test]
fn a_new_node_address_re_renders_everything() {
    let node = NodeConfig {
        nodeport_addresses: crate::model::NodePortAddresses::Cidrs(vec!["192.168.0.0/16".parse().unwrap()]),
        local_addresses: vec!["192.168.1.10/24".parse().unwrap()],
        ..node(IpFamily::V4)
    };
    let state = cluster(8, 1);
    let (mut inc, kernel) = start(&state, &node);
    let moved = NodeConfig { local_addresses: vec!["192.168.2.20/24".parse().unwrap()], ..node.clone() };
    let change = step(&mut inc, &kernel, &state, &moved);
    assert!(change.rebuilt);
    let unchanged = step(&mut inc, &kernel, &state, &moved);
    assert!(unchanged.is_empty() && !unchanged.rebuilt);
}

#[test]
fn udp_and_local_policy_ports_follow_too() {
    let node = NodeConfig { local_detector: LocalDetector::None, ..node(IpFamily::V4) };
    let mut state = cluster(6, 2);
    let (mut inc, kernel) = start(&state, &node);
    let name = build::port_name("kube-system", "dns", "dns");
    let name = ServicePortName { protocol: Protocol::Udp, ..name };
    let mut dns = ServicePort::new(name.clone(), vec!["10.96.0.10".parse().unwrap()], 53);
    dns.node_port = Some(31_053);
    dns.external_policy = crate::model::TrafficPolicy::Local;
    dns.endpoints = vec![endpoint(1)];
    state.services.insert(name.clone(), Arc::new(dns));
    step(&mut inc, &kernel, &state, &node);
    state.services.remove(&name);
    step(&mut inc, &kernel, &state, &node);
}
