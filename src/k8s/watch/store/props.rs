//! Random event sequences: after every event the store equals `StateBuilder` over the objects
//! the events leave, and every port whose value did not change keeps its `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::tests::{expected, feed, relist, service, slice};
use super::*;
use crate::k8s::watch::ingest::Ingest;

const NAMESPACES: [&str; 2] = ["a", "b"];
/// `s3` is never created: its endpoints always name a missing Service.
const SERVICES: [&str; 4] = ["s0", "s1", "s2", "s3"];
const SLICES: [&str; 3] = ["e0", "e1", "e2"];
/// Tiny pools so clusterIP:port and nodePort clashes happen.
const V4: [&str; 2] = ["10.96.0.1", "10.96.0.2"];
const V6: [&str; 2] = ["fd00::1", "fd00::2"];
const ENDPOINT_IPS: [&str; 4] = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "not-an-ip"];

#[derive(Debug, Clone)]
struct PortSpec {
    port: u16,
    node_port: Option<u16>,
    udp: bool,
}

#[derive(Debug, Clone)]
struct ServiceSpec {
    ns: usize,
    name: usize,
    v4: usize,
    v6: Option<usize>,
    /// An invalid clusterIP: the Service gives a problem and no ports.
    bad_ip: bool,
    ports: Vec<PortSpec>,
}

#[derive(Debug, Clone)]
struct SliceSpec {
    ns: usize,
    name: usize,
    service: usize,
    /// Port names ("", "p0", "p1") with their target ports.
    ports: Vec<(usize, u16)>,
    /// Endpoint IPs (indexes into `ENDPOINT_IPS`) with their ready condition.
    endpoints: Vec<(usize, bool)>,
}

#[derive(Debug, Clone)]
enum Op {
    PutService(ServiceSpec),
    DeleteService(usize, usize),
    PutSlice(SliceSpec),
    DeleteSlice(usize, usize),
    /// Services are listed again, after these changes (to Services) happened unseen.
    RelistServices(Vec<Op>),
    /// EndpointSlices are listed again, after these changes (to slices) happened unseen.
    RelistSlices(Vec<Op>),
}

fn port_spec() -> impl Strategy<Value = PortSpec> {
    (prop_oneof![Just(80u16), Just(81)], proptest::option::of(prop_oneof![Just(30000u16), Just(30001)]), any::<bool>())
        .prop_map(|(port, node_port, udp)| PortSpec { port, node_port, udp })
}

fn service_spec() -> impl Strategy<Value = ServiceSpec> {
    let ports = proptest::collection::vec(port_spec(), 1..=2);
    (0..2usize, 0..3usize, 0..2usize, proptest::option::of(0..2usize), proptest::bool::weighted(0.1), ports)
        .prop_map(|(ns, name, v4, v6, bad_ip, ports)| ServiceSpec { ns, name, v4, v6, bad_ip, ports })
}

fn slice_spec() -> impl Strategy<Value = SliceSpec> {
    let ports = proptest::collection::vec((0..3usize, prop_oneof![Just(8080u16), Just(8081)]), 1..=2);
    let endpoints = proptest::collection::vec((0..4usize, any::<bool>()), 0..=3);
    (0..2usize, 0..3usize, 0..4usize, ports, endpoints).prop_map(|(ns, name, service, ports, endpoints)| SliceSpec {
        ns,
        name,
        service,
        ports,
        endpoints,
    })
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => service_spec().prop_map(Op::PutService),
        1 => (0..2usize, 0..3usize).prop_map(|(ns, name)| Op::DeleteService(ns, name)),
        4 => slice_spec().prop_map(Op::PutSlice),
        1 => (0..2usize, 0..3usize).prop_map(|(ns, name)| Op::DeleteSlice(ns, name)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => simple_op(),
        1 => proptest::collection::vec(simple_op(), 0..4).prop_map(Op::RelistServices),
        1 => proptest::collection::vec(simple_op(), 0..4).prop_map(Op::RelistSlices),
    ]
}

fn build_service(spec: &ServiceSpec) -> Service {
    let mut ips = vec![if spec.bad_ip { "300.0.0.1" } else { V4[spec.v4] }];
    ips.extend(spec.v6.map(|i| V6[i]));
    let named = spec.ports.len() > 1;
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut port = json!({ "port": p.port, "protocol": if p.udp { "UDP" } else { "TCP" } });
            if named {
                port["name"] = json!(format!("p{i}"));
            }
            if let Some(node_port) = p.node_port {
                port["nodePort"] = json!(node_port);
            }
            port
        })
        .collect();
    service(NAMESPACES[spec.ns], SERVICES[spec.name], &ips, json!(ports))
}

fn build_slice(spec: &SliceSpec) -> EndpointSlice {
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .map(|(name, port)| {
            let name = ["", "p0", "p1"][*name];
            json!({ "name": name, "port": port, "protocol": "TCP" })
        })
        .collect();
    let endpoints: Vec<Value> = spec
        .endpoints
        .iter()
        .map(|(ip, ready)| json!({ "addresses": [ENDPOINT_IPS[*ip]], "conditions": { "ready": ready } }))
        .collect();
    let name = SLICES[spec.name];
    slice(NAMESPACES[spec.ns], name, SERVICES[spec.service], json!(ports), json!(endpoints))
}

type Key = (String, String);

fn key(ns: usize, name: &str) -> Key {
    (NAMESPACES[ns].to_string(), name.to_string())
}

/// The objects the API holds.
#[derive(Default, Clone)]
struct World {
    services: BTreeMap<Key, Service>,
    slices: BTreeMap<Key, EndpointSlice>,
}

impl World {
    /// Applies `op` to the objects; the event the watcher would see, if any.
    fn change(&mut self, op: &Op) -> Option<Either> {
        match op {
            Op::PutService(spec) => {
                let svc = build_service(spec);
                self.services.insert(key(spec.ns, SERVICES[spec.name]), svc.clone());
                Some(Either::Service(Box::new(Event::Apply(svc))))
            }
            Op::DeleteService(ns, name) => {
                self.services.remove(&key(*ns, SERVICES[*name])).map(|s| Either::Service(Box::new(Event::Delete(s))))
            }
            Op::PutSlice(spec) => {
                let s = build_slice(spec);
                self.slices.insert(key(spec.ns, SLICES[spec.name]), s.clone());
                Some(Either::Slice(Box::new(Event::Apply(s))))
            }
            Op::DeleteSlice(ns, name) => {
                self.slices.remove(&key(*ns, SLICES[*name])).map(|s| Either::Slice(Box::new(Event::Delete(s))))
            }
            Op::RelistServices(ops) => {
                for op in ops.iter().filter(|op| matches!(op, Op::PutService(_) | Op::DeleteService(..))) {
                    self.change(op);
                }
                None
            }
            Op::RelistSlices(ops) => {
                for op in ops.iter().filter(|op| matches!(op, Op::PutSlice(_) | Op::DeleteSlice(..))) {
                    self.change(op);
                }
                None
            }
        }
    }
}

enum Either {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
}

fn check(store: &Store, world: &World, before: &ClusterState) -> Result<(), TestCaseError> {
    let (state, problems) = expected(world.services.values(), world.slices.values(), []);
    prop_assert_eq!(store.state(), &state);
    prop_assert_eq!(store.problems(), problems);
    for (name, port) in &store.state().services {
        if let Some(old) = before.services.get(name).filter(|old| ***old == **port) {
            prop_assert!(Arc::ptr_eq(old, port), "{} did not change but got a new Arc", name);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_store_matches_a_full_rebuild(ops in proptest::collection::vec(op(), 1..40)) {
        let mut store = Store::new();
        relist::<Service>(&mut store, vec![]);
        relist::<EndpointSlice>(&mut store, vec![]);
        relist::<Node>(&mut store, vec![]);
        let mut world = World::default();
        let mut services = Ingest::<Service>::default();
        let mut slices = Ingest::<EndpointSlice>::default();
        for op in &ops {
            let before = store.state().clone();
            match (world.change(op), op) {
                (Some(Either::Service(event)), _) => feed(&mut store, &mut services, *event),
                (Some(Either::Slice(event)), _) => feed(&mut store, &mut slices, *event),
                (None, Op::RelistServices(_)) => relist(&mut store, world.services.values().cloned().collect()),
                (None, Op::RelistSlices(_)) => relist(&mut store, world.slices.values().cloned().collect()),
                (None, _) => {}
            }
            check(&store, &world, &before)?;
            prop_assert!(store.snapshot().is_some());
        }
    }
}
