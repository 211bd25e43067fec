//! The hostile objects of `fixtures/bad/`, delivered through the test API server to the real
//! daemon in a lab's node namespace: the daemon logs the specific skip for each, keeps syncing
//! (no restore failure), programs the valid objects next to them, and a good Service still
//! carries real TCP traffic. Needs root (skips otherwise, fails under CI=true).

use std::collections::BTreeSet;
use std::time::Duration;

use kubenat::apply::exec::{Backend, Tool};
use kubenat::model::IpFamily;
use serde_json::{json, Value};
use testkit::apiserver::ApiServer;
use testkit::daemon::{poll, Daemon, DaemonOptions, RESTORE_FAILURES};
use testkit::lab::Lab;
use testkit::traffic::{self, Proto, Reply, Server};

const WAIT: Duration = Duration::from_secs(15);

/// What the daemon must log for the objects of each file (the live form of `bad_input.rs`'s
/// expectations: no file or document, the object and the reason).
const LOGGED: &[&str] = &[
    "Service bad-01/web: invalid clusterIP \"10.96.1.300\", Service skipped",
    "Service bad-04/web: port \"high\": port 65536 out of range 1-65535",
    "Service bad-05/web: port \"ping\": unknown protocol \"ICMP\"",
    "Service bad-06/web: port \"alt\": duplicate port 80/TCP",
    "EndpointSlice bad-09/web-abcde: no kubernetes.io/service-name label",
    "EndpointSlice bad-10/web-v4: endpoint address fd00:10:244::7 is IPv6",
    "Service bad-15/web: port \"http -j ACCEPT\": invalid name",
    "Service bad-17/z-second: port \"http\": nodePort 30080/TCP is already used by Service bad-17/a-first",
    "EndpointSlice bad-20/web-1: endpoint address \"10.244.20.7 -j ACCEPT\" is not a valid IP",
    "Service bad-25/web: loadBalancerSourceRanges: invalid CIDR \"10.0.0.0/8 -j ACCEPT\"",
    "Service bad-26/web: status.loadBalancer.ingress: invalid IP",
    "Service bad-30/web: healthCheckNodePort 99999 out of range 1-65535",
    "Service bad-31/long: sessionAffinityConfig.clientIP.timeoutSeconds 86401 out of range",
    "Service bad-34/web: unknown type",
    "Service bad-39/*filter: invalid name",
    "EndpointSlice bad-41/ghost-1: Service bad-41/ghost does not exist; endpoints ignored",
    "EndpointSlice bad-43/web-1: endpoint nodeName",
    "EndpointSlice bad-44/web-1: endpoint 10.244.44.7: zone hint",
    "EndpointSlice bad-45/web-1: unsupported addressType \"IPv5\"",
    "Service bad-52/b-second: port \"http\": 10.96.52.2:80/TCP is already used by Service bad-52/a-first",
    "EndpointSlice bad-57/web-1: label kubernetes.io/service-name: invalid Service name",
];

/// Every Service and EndpointSlice in `fixtures/bad/` that an API server could hold: readable
/// YAML, the right apiVersion, a name, and fields of the right JSON types (a real API server
/// refuses the rest before any client sees them).
fn deliverable_objects() -> Vec<Value> {
    let mut files: Vec<_> =
        std::fs::read_dir("fixtures/bad").expect("fixtures/bad").map(|e| e.expect("e").path()).collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for document in text.split("\n---") {
            let Ok(yaml) = serde_yaml::from_str::<serde_yaml::Value>(document) else { continue };
            let Ok(value) = serde_json::to_value(&yaml) else { continue };
            let kind = value["kind"].as_str().unwrap_or_default();
            let typed_ok = match (value["apiVersion"].as_str(), kind) {
                (Some("v1"), "Service") => {
                    serde_json::from_value::<k8s_openapi::api::core::v1::Service>(value.clone()).is_ok()
                }
                (Some("discovery.k8s.io/v1"), "EndpointSlice") => {
                    serde_json::from_value::<k8s_openapi::api::discovery::v1::EndpointSlice>(value.clone()).is_ok()
                }
                _ => false,
            };
            if typed_ok && value["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty()) {
                objects.push(value);
            }
        }
    }
    objects
}

fn good_service() -> (Value, Value) {
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.1.2"], "nodeName": "node-1"},
            {"addresses": ["10.244.2.2"], "nodeName": "node-1"},
        ],
    });
    (svc, slice)
}

#[test]
fn hostile_objects_from_the_api_are_skipped_by_name_and_good_services_keep_working() {
    for backend in [Backend::Nft, Backend::Legacy] {
        if !testkit::require_root() || !testkit::require_program(&backend.binary(IpFamily::V4, Tool::Restore)) {
            return;
        }
        let lab = Lab::new(3);
        let _servers: Vec<Server> =
            (0..2).map(|i| Server::start(&lab.pod(i).ns, Proto::Tcp, 8080, &format!("pod-{i}"))).collect();
        let api = ApiServer::start_in_netns(lab.node.name());
        api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
        let hostile = deliverable_objects();
        assert!(hostile.len() >= 80, "only {} objects delivered", hostile.len());
        for object in &hostile {
            api.apply(object.clone());
        }
        let (svc, slice) = good_service();
        api.apply(svc);
        api.apply(slice);
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("kubenat.log");
        let mut daemon =
            Daemon::start(&lab.node, &api.kubeconfig(dir.path()), &log, &DaemonOptions::new(backend.as_str()));
        let scrape = daemon.wait_full_syncs(1.0, WAIT);
        assert_eq!(scrape.get(RESTORE_FAILURES), 0.0, "{backend}: a restore failed:\n{}", daemon.log());

        // Each bad object is named in the log with its reason.
        let logged = poll(WAIT, Duration::from_millis(200), || {
            let text = daemon.log();
            LOGGED.iter().all(|needle| text.contains(needle)).then_some(text)
        });
        let text = daemon.log();
        let missing: Vec<&&str> = LOGGED.iter().filter(|n| !text.contains(**n)).collect();
        assert!(logged.is_some(), "{backend}: not logged: {missing:#?}\n{text}");

        // The valid neighbours of every file reached the kernel; nothing hostile did.
        let saved = lab.node_save(backend);
        let neighbours: BTreeSet<&str> = saved
            .lines()
            .filter_map(|l| l.split("--comment \"").nth(1))
            .filter_map(|c| c.split(['/', ':']).next())
            .filter(|ns| ns.starts_with("bad-"))
            .collect();
        assert!(neighbours.len() >= 45, "{backend}: only {} namespaces rendered: {neighbours:?}", neighbours.len());
        for line in saved.lines() {
            assert!(!line.contains("-j ACCEPT\"") && !line.contains("ghost"), "{backend}: {line}");
        }

        // The good Service carries traffic to both backends.
        let client = &lab.pod(2).ns;
        let replies = traffic::requests(client, Proto::Tcp, ([10, 96, 0, 10], 80).into(), Duration::from_secs(2), 16);
        let tally = traffic::tally(&replies);
        assert_eq!(tally.keys().collect::<Vec<_>>(), ["pod-0", "pod-1"], "{backend}: {replies:?}");
        assert!(replies.iter().all(|r| matches!(r, Reply::Answer { .. })), "{backend}: {replies:?}");
        daemon.terminate();
    }
}
