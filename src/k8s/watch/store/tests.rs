use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use serde_json::{json, Value};

use super::*;
use crate::k8s::convert::StateBuilder;
use crate::k8s::watch::ingest::Ingest;
use crate::k8s::watch::kinds::Watched;

/// A Service in `ns` named `name` with `clusterIPs` and `ports` (API JSON).
pub(super) fn service(ns: &str, name: &str, ips: &[&str], ports: Value) -> Service {
    let kind = if ports.to_string().contains("nodePort") { "NodePort" } else { "ClusterIP" };
    let spec = json!({ "type": kind, "clusterIP": ips.first(), "clusterIPs": ips, "ports": ports });
    from_json(json!({ "metadata": { "namespace": ns, "name": name }, "spec": spec }))
}

/// An IPv4 EndpointSlice `name` of Service `svc` with `ports` and `endpoints` (API JSON).
pub(super) fn slice(ns: &str, name: &str, svc: &str, ports: Value, endpoints: Value) -> EndpointSlice {
    let labels = json!({ "kubernetes.io/service-name": svc });
    from_json(json!({
        "metadata": { "namespace": ns, "name": name, "labels": labels },
        "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
    }))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object")
}

/// Feeds one event of kind `K` through its ingest into the store.
pub(super) fn feed<K: Watched>(store: &mut Store, ingest: &mut Ingest<K>, event: Event<K>) {
    if let Some(change) = ingest.event(event).change {
        change.apply(store);
    }
}

/// Lists `objects` as a (re)list: Init, one InitApply each, InitDone.
pub(super) fn relist<K: Watched>(store: &mut Store, objects: Vec<K>) {
    let mut ingest = Ingest::<K>::default();
    feed(store, &mut ingest, Event::Init);
    for obj in objects {
        feed(store, &mut ingest, Event::InitApply(obj));
    }
    feed(store, &mut ingest, Event::InitDone);
}

/// What `StateBuilder` makes of the objects: Services, then slices, then Endpoints, each in
/// namespace/name order.
pub(super) fn expected<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    endpoints: impl IntoIterator<Item = &'a Endpoints>,
) -> (ClusterState, Vec<Problem>) {
    let mut builder = StateBuilder::new();
    for svc in services {
        builder.add_service(svc, None);
    }
    for s in slices {
        builder.add_endpoint_slice(s, None);
    }
    for e in endpoints {
        builder.add_endpoints(e, None);
    }
    let converted = builder.finish();
    (converted.state, converted.problems)
}

fn listed_store() -> Store {
    let mut store = Store::new();
    relist::<Service>(&mut store, vec![]);
    relist::<EndpointSlice>(&mut store, vec![]);
    relist::<Node>(&mut store, vec![]);
    store
}

fn apply<K: Watched>(store: &mut Store, obj: K) {
    feed(store, &mut Ingest::default(), Event::Apply(obj));
}

fn delete<K: Watched>(store: &mut Store, obj: K) {
    feed(store, &mut Ingest::default(), Event::Delete(obj));
}

fn messages(store: &Store) -> Vec<String> {
    store.problems().iter().map(ToString::to_string).collect()
}

fn web(ip: &str) -> Service {
    service("default", "web", &[ip], json!([{ "name": "http", "port": 80 }]))
}

fn web_slice(name: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<Value> = ips.iter().map(|ip| json!({ "addresses": [ip] })).collect();
    slice("default", name, "web", json!([{ "name": "http", "port": 8080 }]), json!(endpoints))
}

#[test]
fn snapshot_waits_for_services_endpoints_and_node() {
    let mut store = Store::new();
    relist::<Service>(&mut store, vec![web("10.96.0.1")]);
    assert!(store.snapshot().is_none());
    relist::<EndpointSlice>(&mut store, vec![web_slice("web-1", &["10.1.0.1"])]);
    assert!(store.snapshot().is_none(), "the Node was not listed yet");
    let node: Node =
        from_json(json!({ "metadata": { "name": "n1", "labels": { "topology.kubernetes.io/zone": "z" } } }));
    relist::<Node>(&mut store, vec![node]);
    let snapshot = store.snapshot().expect("all listed");
    assert_eq!(snapshot.node.and_then(|n| n.zone).as_deref(), Some("z"));
    let ports: Vec<_> = snapshot.state.services.values().collect();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].endpoints.len(), 1);
}

#[test]
fn an_absent_node_counts_as_listed() {
    let store = listed_store();
    let snapshot = store.snapshot().expect("listed");
    assert!(snapshot.node.is_none() && snapshot.state.services.is_empty());
}

#[test]
fn an_endpoint_change_replaces_only_that_services_ports() {
    let mut store = listed_store();
    let other = service("default", "other", &["10.96.0.2"], json!([{ "port": 53, "protocol": "UDP" }]));
    apply(&mut store, web("10.96.0.1"));
    apply(&mut store, other.clone());
    apply(&mut store, web_slice("web-1", &["10.1.0.1"]));
    let before = store.state().clone();
    apply(&mut store, web_slice("web-1", &["10.1.0.1", "10.1.0.2"]));
    let after = store.state().clone();
    let (web_key, other_key) = {
        let mut keys = after.services.keys();
        (keys.next().cloned(), keys.next().cloned())
    };
    let (other_key, web_key) = (web_key.expect("two ports"), other_key.expect("two ports"));
    assert_eq!(&*other_key.name, "other");
    assert!(Arc::ptr_eq(&before.services[&other_key], &after.services[&other_key]));
    assert!(!Arc::ptr_eq(&before.services[&web_key], &after.services[&web_key]));
    assert_eq!(after.services[&web_key].endpoints.len(), 2);
    // The same object again changes nothing.
    apply(&mut store, web_slice("web-1", &["10.1.0.1", "10.1.0.2"]));
    assert!(Arc::ptr_eq(&after.services[&web_key], &store.state().services[&web_key]));
    assert_eq!(
        store.state(),
        &expected([&web("10.96.0.1"), &other], [&web_slice("web-1", &["10.1.0.1", "10.1.0.2"])], []).0
    );
}

#[test]
fn relist_replaces_the_set_and_keeps_unchanged_ports() {
    let mut store = listed_store();
    let a = service("default", "a", &["10.96.0.1"], json!([{ "port": 80 }]));
    let b = service("default", "b", &["10.96.0.2"], json!([{ "port": 80 }]));
    let c = service("default", "c", &["10.96.0.3"], json!([{ "port": 80 }]));
    relist::<Service>(&mut store, vec![a.clone(), b.clone()]);
    let before = store.state().clone();
    let b2 = service("default", "b", &["10.96.0.2"], json!([{ "port": 81 }]));
    relist::<Service>(&mut store, vec![a.clone(), b2.clone(), c.clone()]);
    let after = store.state().clone();
    assert_eq!(after, expected([&a, &b2, &c], [], []).0);
    let a_key = before.services.keys().next().cloned().expect("a");
    assert!(Arc::ptr_eq(&before.services[&a_key], &after.services[&a_key]), "a is unchanged");
    // A relist with fewer objects drops the rest.
    relist::<Service>(&mut store, vec![c.clone()]);
    assert_eq!(store.state(), &expected([&c], [], []).0);
    // A relist that was interrupted (Init again) starts over.
    let mut ingest = Ingest::<Service>::default();
    feed(&mut store, &mut ingest, Event::Init);
    feed(&mut store, &mut ingest, Event::InitApply(a.clone()));
    feed(&mut store, &mut ingest, Event::Init);
    feed(&mut store, &mut ingest, Event::InitApply(b.clone()));
    assert_eq!(store.state(), &expected([&c], [], []).0, "nothing applies before InitDone");
    feed(&mut store, &mut ingest, Event::InitDone);
    assert_eq!(store.state(), &expected([&b], [], []).0);
}

#[test]
fn endpoints_of_a_missing_service_are_a_problem_until_it_exists() {
    let mut store = listed_store();
    apply(&mut store, web_slice("web-1", &["10.1.0.1"]));
    assert_eq!(
        messages(&store),
        ["EndpointSlice default/web-1: Service default/web does not exist; endpoints ignored"]
    );
    apply(&mut store, web("10.96.0.1"));
    assert!(messages(&store).is_empty());
    assert_eq!(store.state().services.values().next().map(|p| p.endpoints.len()), Some(1));
    delete(&mut store, web("10.96.0.1"));
    assert_eq!(messages(&store).len(), 1);
    assert!(store.state().services.is_empty());
    delete(&mut store, web_slice("web-1", &[]));
    assert!(messages(&store).is_empty());
}

#[test]
fn endpoints_of_a_service_that_is_not_proxied_are_ignored_quietly() {
    let mut store = listed_store();
    let external = from_json::<Service>(json!({
        "metadata": { "namespace": "default", "name": "web" },
        "spec": { "type": "ExternalName", "externalName": "example.com" },
    }));
    apply(&mut store, external);
    apply(&mut store, web_slice("web-1", &["10.1.0.1"]));
    assert!(messages(&store).is_empty());
    assert!(store.state().services.is_empty());
}

#[test]
fn a_cluster_ip_clash_moves_to_the_next_service_when_the_first_goes() {
    let mut store = listed_store();
    let a = service("default", "a", &["10.96.0.1"], json!([{ "port": 80 }]));
    let b = service("default", "b", &["10.96.0.1"], json!([{ "port": 80 }, ]));
    apply(&mut store, b.clone());
    apply(&mut store, a.clone());
    assert_eq!(
        messages(&store),
        ["Service default/b: port #1: 10.96.0.1:80/TCP is already used by Service default/a; port skipped"]
    );
    assert_eq!(store.state(), &expected([&a, &b], [], []).0);
    assert_eq!(store.problems(), expected([&a, &b], [], []).1);
    delete(&mut store, a);
    assert!(messages(&store).is_empty());
    assert_eq!(store.state(), &expected([&b], [], []).0);
}

#[test]
fn a_node_port_clash_drops_only_the_node_port() {
    let mut store = listed_store();
    let a = service("default", "a", &["10.96.0.1"], json!([{ "port": 80, "nodePort": 30000 }]));
    let b = service("default", "b", &["10.96.0.2"], json!([{ "port": 80, "nodePort": 30000 }]));
    apply(&mut store, a.clone());
    apply(&mut store, b.clone());
    let (state, problems) = expected([&a, &b], [], []);
    assert_eq!(store.state(), &state);
    assert_eq!(store.problems(), problems);
    assert_eq!(problems.len(), 1);
    assert_eq!(store.state().services.values().filter(|p| p.node_port.is_some()).count(), 1);
    let b2 = service("default", "b", &["10.96.0.2"], json!([{ "port": 80, "nodePort": 30001 }]));
    apply(&mut store, b2.clone());
    assert!(store.problems().is_empty());
    assert_eq!(store.state(), &expected([&a, &b2], [], []).0);
}

#[test]
fn a_clash_is_resolved_through_services_in_between() {
    // b loses 10.96.0.1:80 to a, so it does not claim fd00::1:80 either and c keeps it; once a
    // is gone, b gets both and c's port is skipped although c never shared anything with a.
    let mut store = listed_store();
    let a = service("default", "a", &["10.96.0.1"], json!([{ "port": 80 }]));
    let b = service("default", "b", &["10.96.0.1", "fd00::1"], json!([{ "port": 80 }]));
    let c = service("default", "c", &["10.96.0.3", "fd00::1"], json!([{ "port": 80 }]));
    for svc in [&c, &b, &a] {
        apply(&mut store, svc.clone());
    }
    assert_eq!((store.state().clone(), store.problems()), expected([&a, &b, &c], [], []));
    delete(&mut store, a);
    assert_eq!((store.state().clone(), store.problems()), expected([&b, &c], [], []));
    assert_eq!(store.state().services.keys().map(|k| &*k.name).collect::<Vec<_>>(), ["b"]);
}

#[test]
fn problems_of_bad_objects_are_kept_and_the_rest_works() {
    let mut store = listed_store();
    let bad = service("default", "bad", &["300.0.0.1"], json!([{ "port": 80 }]));
    let bad_slice = web_slice("web-1", &["10.1.0.1", "not-an-ip"]);
    apply(&mut store, bad.clone());
    apply(&mut store, web("10.96.0.1"));
    apply(&mut store, bad_slice.clone());
    let (state, problems) = expected([&bad, &web("10.96.0.1")], [&bad_slice], []);
    assert_eq!(store.state(), &state);
    assert_eq!(store.problems(), problems);
    assert_eq!(problems.len(), 2, "{problems:?}");
    delete(&mut store, bad);
    delete(&mut store, bad_slice);
    assert!(store.problems().is_empty());
}

#[test]
fn core_endpoints_feed_the_same_way() {
    let mut store = Store::new();
    relist::<Service>(&mut store, vec![web("10.96.0.1")]);
    let ep: Endpoints = from_json(json!({
        "metadata": { "namespace": "default", "name": "web" },
        "subsets": [{ "addresses": [{ "ip": "10.1.0.1" }], "ports": [{ "name": "http", "port": 8080 }] }],
    }));
    relist::<Endpoints>(&mut store, vec![ep.clone()]);
    relist::<Node>(&mut store, vec![]);
    let snapshot = store.snapshot().expect("listed");
    assert_eq!(snapshot.state, expected([&web("10.96.0.1")], [], [&ep]).0);
    delete(&mut store, ep);
    assert!(store.state().services.values().all(|p| p.endpoints.is_empty()));
}

#[test]
fn the_node_follows_its_events() {
    let mut store = listed_store();
    let node: Node = from_json(json!({ "metadata": { "name": "n1" }, "spec": { "podCIDR": "10.244.1.0/24" } }));
    apply(&mut store, node.clone());
    assert_eq!(store.node().map(|n| n.pod_cidrs.len()), Some(1));
    delete(&mut store, node);
    assert!(store.node().is_none());
}
