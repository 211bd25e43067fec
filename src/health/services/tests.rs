use std::time::Duration;

use axum::http::StatusCode;

use super::json::{list_reply, service_reply};
use super::*;
use crate::model::Protocol;
use crate::rules::chain_names::{endpoint_chain, ServiceChains};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn ep(addr: &str, ready: bool, terminating: bool, node: &str) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        ready,
        serving: ready || terminating,
        terminating,
        node_name: Some(node.into()),
        zone_hints: vec![],
        node_hints: vec![],
    }
}

fn port(name: &str, port: &str, ip: &str, endpoints: Vec<Endpoint>) -> ServicePort {
    let spn =
        ServicePortName { namespace: "default".into(), name: name.into(), port: port.into(), protocol: Protocol::Tcp };
    ServicePort { endpoints, ..ServicePort::new(spn, vec![ip.parse().unwrap()], 80) }
}

fn state(ports: Vec<ServicePort>) -> ClusterState {
    ClusterState { services: ports.into_iter().map(|p| (p.name.clone(), p.into())).collect() }
}

fn node() -> NodeConfig {
    NodeConfig { node_name: "node-1".into(), ..NodeConfig::default() }
}

fn publish(view: &ServicesView, state: &ClusterState, node: &NodeConfig, now: SystemTime) {
    view.programmed(state, &[FamilyContext { node, large_cluster: false }], now);
    view.sync_finished(SyncOutcome { time: now, kind: Some(SyncKind::Partial), error: None });
}

fn web(endpoints: Vec<Endpoint>) -> ServicePort {
    port("web", "http", "10.96.0.10", endpoints)
}

#[test]
fn summary_names_the_chains_and_every_endpoint() {
    let svc = web(vec![
        ep("10.244.1.5:8080", true, false, "node-1"),
        ep("10.244.2.7:8080", false, true, "node-2"),
        ep("10.244.3.9:8080", false, false, "node-2"),
    ]);
    let n = node();
    let view = summarize(&Arc::new(svc.clone()), &[FamilyContext { node: &n, large_cluster: false }], None, at(0));
    assert_eq!(view.chains.cluster, Some(ServiceChains::for_service(&svc.name).cluster));
    assert_eq!((view.chains.local.as_ref(), view.chains.external.as_ref()), (None, None));
    assert_eq!(view.families, [IpFamily::V4]);
    let sep = endpoint_chain(&svc.name, &"10.244.1.5:8080".parse().unwrap()).to_string();
    let summary: Vec<(bool, bool, Option<&str>)> =
        view.endpoints.iter().map(|e| (e.endpoint.ready, e.local, e.chain.as_deref())).collect();
    assert_eq!(summary, [(true, true, Some(sep.as_str())), (false, false, None), (false, false, None)]);
    assert_eq!((view.first_programmed, view.last_programmed), (at(0), at(0)));
}

#[test]
fn last_programmed_moves_only_when_the_rules_change() {
    let view = ServicesView::default();
    let n = node();
    let one = vec![ep("10.244.1.5:8080", true, false, "node-1")];
    let db = port("db", "", "10.96.0.11", vec![]);
    publish(&view, &state(vec![web(one.clone()), db.clone()]), &n, at(0));
    let name = web(vec![]).name;
    let first = view.current().ports[&name].clone();
    assert_eq!((first.first_programmed, first.last_programmed), (at(0), at(0)));

    // Same inputs (a periodic sync): nothing moves, the summary is shared.
    publish(&view, &state(vec![web(one.clone()), db.clone()]), &n, at(10));
    assert!(Arc::ptr_eq(&first, &view.current().ports[&name]));

    // A not-ready endpoint appears: the inputs changed, the rules did not.
    let mut with_unready = one.clone();
    with_unready.push(ep("10.244.9.9:8080", false, false, "node-2"));
    publish(&view, &state(vec![web(with_unready), db.clone()]), &n, at(20));
    let p = view.current().ports[&name].clone();
    assert_eq!((p.last_programmed, p.endpoints.len()), (at(0), 2));

    // A second ready endpoint: new rules for web, none for db.
    let mut two = one.clone();
    two.push(ep("10.244.2.7:8080", true, false, "node-2"));
    publish(&view, &state(vec![web(two), db.clone()]), &n, at(30));
    let current = view.current();
    assert_eq!((current.ports[&name].first_programmed, current.ports[&name].last_programmed), (at(0), at(30)));
    assert_eq!(current.ports[&db.name].last_programmed, at(0));

    // A node setting that changes no rule of web re-renders it and keeps the time.
    let other_zone = NodeConfig { zone: Some("z1".into()), ..n.clone() };
    publish(&view, &state(vec![web(one.clone())]), &n, at(40));
    publish(&view, &state(vec![web(one)]), &other_zone, at(50));
    let current = view.current();
    assert_eq!(current.ports[&name].last_programmed, at(40));
    assert!(!current.ports.contains_key(&db.name), "deleted service ports leave the view");
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn list_and_service_bodies_have_the_documented_fields() {
    let view = ServicesView::default();
    let (code, body) = list_reply(&view.current());
    assert_eq!((code, json(&body)), (StatusCode::OK, serde_json::json!({"lastSync": null, "servicePorts": []})));

    let n = node();
    let dns = port("web", "dns", "10.96.0.10", vec![]);
    publish(&view, &state(vec![web(vec![ep("10.244.1.5:8080", true, false, "node-1")]), dns]), &n, at(0));
    let (code, body) = list_reply(&view.current());
    assert_eq!(code, StatusCode::OK);
    let list = json(&body);
    assert_eq!(
        list["lastSync"],
        serde_json::json!({"result": "ok", "kind": "partial", "time": "2023-11-14T22:13:20Z", "error": null})
    );
    assert_eq!(list["servicePorts"].as_array().map(Vec::len), Some(2));

    let (code, body) = service_reply(&view.current(), "default", "web");
    assert_eq!(code, StatusCode::OK);
    let svc = json(&body);
    assert_eq!((svc["namespace"].as_str(), svc["name"].as_str()), (Some("default"), Some("web")));
    let http = &svc["ports"][1];
    let keys: Vec<&str> = http.as_object().unwrap().keys().map(String::as_str).collect();
    for key in [
        "namespace",
        "name",
        "port",
        "protocol",
        "servicePort",
        "clusterIPs",
        "families",
        "chains",
        "endpoints",
        "firstProgrammed",
        "lastProgrammed",
    ] {
        assert!(keys.contains(&key), "{key} missing in {http}");
    }
    assert_eq!(http["servicePort"], "default/web:http");
    assert_eq!(http["protocol"], "TCP");
    assert_eq!(http["chains"]["SVC"], "KUBE-SVC-CDGGSHYLG3RE2FKL");
    assert!(http["chains"]["SVL"].is_null() && http["chains"]["EXT"].is_null() && http["chains"]["FW"].is_null());
    let endpoint = &http["endpoints"][0];
    assert_eq!(endpoint["address"], "10.244.1.5:8080");
    assert_eq!(endpoint["chain"], "KUBE-SEP-AFGSLHOD2HFNCBX4");
    assert_eq!((endpoint["ready"].as_bool(), endpoint["local"].as_bool()), (Some(true), Some(true)));
    assert_eq!(endpoint["nodeName"], "node-1");
    assert_eq!(svc["ports"][0]["chains"]["SVC"], serde_json::Value::Null, "dns has no endpoints");

    let (code, body) = service_reply(&view.current(), "default", "nope");
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"].as_str().is_some_and(|e| e.contains("default/nope")), "{body}");
}

#[test]
fn a_failed_sync_keeps_the_programmed_view() {
    let view = ServicesView::default();
    publish(&view, &state(vec![web(vec![ep("10.244.1.5:8080", true, false, "node-1")])]), &node(), at(0));
    view.sync_finished(SyncOutcome { time: at(5), kind: None, error: Some("IPv4 restore failed: boom".into()) });
    let (_, body) = list_reply(&view.current());
    let list = json(&body);
    assert_eq!(list["lastSync"]["result"], "failed");
    assert_eq!(list["lastSync"]["error"], "IPv4 restore failed: boom");
    assert!(list["lastSync"]["kind"].is_null());
    assert_eq!(list["servicePorts"][0]["lastProgrammed"], "2023-11-14T22:13:20Z");
}
