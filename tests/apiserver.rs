//! The test API server (`tests/support/apiserver`) as the real `kube` client sees it: paginated
//! and selected lists, reflectors that converge through updates, bookmarks, dropped watches,
//! 410 after compaction, 503 outages, streaming lists, and serving inside a network namespace.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, GroupVersionKind, ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Scope;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};

use testkit::apiserver::{ApiServer, RequestRecord, ServerConfig, Verb};
use testkit::objects::{self, Port};
use testkit::reflect::Reflector;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(5);
/// kube-proxy's selectors for Services.
const PROXY_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
const SERVICES: &str = "/api/v1/services";

/// `namespace/name` with `labels`, one TCP port.
fn service(namespace: &str, name: &str, labels: Value, port: u16) -> Value {
    let service = objects::service(name, Ipv4Addr::new(10, 96, 0, 10), &[Port::tcp("http", port, port)]);
    objects::merge(service, json!({ "metadata": { "namespace": namespace, "labels": labels } }))
}

fn proxy_services(server: &ApiServer) -> Reflector<Service> {
    Reflector::start(Api::all(server.client()), watcher::Config::default().labels(PROXY_SELECTOR))
}

fn server_without_periodic_bookmarks() -> ApiServer {
    ApiServer::start_with(ServerConfig { bookmark_interval: None, ..ServerConfig::default() })
}

fn show(log: &[RequestRecord]) -> String {
    log.iter().map(|r| format!("\n  {r}")).collect()
}

/// Polls `done` (≤ [`WAIT`]) on the test's runtime.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Five plain services plus one of another proxy and one headless.
fn seven_services(server: &ApiServer) {
    for i in 0..5 {
        server.apply(service("default", &format!("svc-{i}"), json!({}), 80));
    }
    server.apply(service("kube-system", "other-proxy", json!({ "service.kubernetes.io/service-proxy-name": "x" }), 80));
    server.apply(service("kube-system", "headless", json!({ "service.kubernetes.io/headless": "" }), 80));
}

#[tokio::test]
async fn lists_paginate_at_one_resource_version() {
    let server = ApiServer::start();
    seven_services(&server);
    let api: Api<Service> = Api::all(server.client());

    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let snapshot_rv = first.metadata.resource_version.clone().unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(5));
    server.apply(service("default", "svc-late", json!({}), 80)); // not in the snapshot being paged
    let (mut names, mut pages, mut page) = (Vec::new(), 1, first);
    loop {
        assert!(page.items.len() <= 2);
        assert_eq!(page.metadata.resource_version.as_deref(), Some(snapshot_rv.as_str()), "pages share one RV");
        names.extend(page.items.iter().map(|s| format!("{}/{}", s.namespace().unwrap(), s.name_any())));
        let Some(token) = page.metadata.continue_.filter(|t| !t.is_empty()) else { break };
        page = api.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
        pages += 1;
    }
    assert_eq!(pages, 4);
    let expected = ["default/svc-0", "default/svc-1", "default/svc-2", "default/svc-3", "default/svc-4"]
        .into_iter()
        .chain(["kube-system/headless", "kube-system/other-proxy"]);
    assert_eq!(names, expected.collect::<Vec<_>>());
    let continued = server.requests(Verb::List, SERVICES).into_iter().filter(|r| r.param("continue").is_some());
    assert_eq!(continued.count(), 3, "{}", show(&server.request_log()));

    // A continue token from before a compaction can no longer give a consistent list.
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    server.apply(service("default", "svc-later", json!({}), 80));
    server.compact();
    let token = first.metadata.continue_.unwrap();
    match api.list(&ListParams::default().limit(2).continue_token(&token)).await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 for a compacted continue token, got {other:?}"),
    }
}

#[tokio::test]
async fn lists_honour_selectors_and_namespaces_and_answer_errors_as_status() {
    let server = ApiServer::start();
    seven_services(&server);
    let api: Api<Service> = Api::all(server.client());
    let count = |selector: &'static str| {
        let api = api.clone();
        async move { api.list(&ListParams::default().labels(selector)).await.unwrap().items.len() }
    };
    assert_eq!(count("!service.kubernetes.io/service-proxy-name").await, 6);
    assert_eq!(count(PROXY_SELECTOR).await, 5);
    assert_eq!(count("service.kubernetes.io/service-proxy-name=x").await, 1);
    assert_eq!(count("service.kubernetes.io/service-proxy-name!=x").await, 6);
    let in_kube_system: Api<Service> = Api::namespaced(server.client(), "kube-system");
    assert_eq!(in_kube_system.list(&ListParams::default()).await.unwrap().items.len(), 2);

    server.apply(objects::node("node-a", None));
    server.apply(objects::node("node-b", None));
    let nodes: Api<Node> = Api::all(server.client());
    let only_b = nodes.list(&ListParams::default().fields("metadata.name=node-b")).await.unwrap();
    assert_eq!(only_b.items.iter().map(|n| n.name_any()).collect::<Vec<_>>(), ["node-b"]);
    assert_eq!(nodes.get("node-a").await.unwrap().name_any(), "node-a");

    let in_default: Api<Service> = Api::namespaced(server.client(), "default");
    match in_default.get("nope").await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (404, "NotFound")),
        other => panic!("expected 404, got {other:?}"),
    }
    match api.list(&ListParams::default().labels("a b")).await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest")),
        other => panic!("expected 400 for a bad selector, got {other:?}"),
    }
}

#[tokio::test]
async fn reflector_converges_through_updates_deletes_and_selector_changes() {
    let server = ApiServer::start();
    let a = server.apply(service("default", "a", json!({}), 80));
    let b = server.apply(service("default", "b", json!({}), 80));
    server.apply(service("default", "mesh", json!({ "service.kubernetes.io/service-proxy-name": "mesh" }), 80));
    let listed_rv = server.resource_version().to_string();
    let reflector = proxy_services(&server);
    reflector.converges_to(&[&a, &b], WAIT).await;
    assert!(server.wait_for_watches(1, WAIT).await, "the watcher never opened its watch");

    let c = server.apply(service("kube-system", "c", json!({}), 53));
    let a = server.apply(service("default", "a", json!({}), 8080));
    server.delete("Service", "default", "b");
    reflector.converges_to(&[&a, &c], WAIT).await;

    // Leaving the selector is a DELETED for this watch; coming back an ADDED.
    server.apply(service("kube-system", "c", json!({ "service.kubernetes.io/headless": "" }), 53));
    reflector.converges_to(&[&a], WAIT).await;
    let c = server.apply(service("kube-system", "c", json!({}), 53));
    reflector.converges_to(&[&a, &c], WAIT).await;

    // kube-rs 5 default watcher: one paginated list, then one watch from the list's RV.
    let lists = server.requests(Verb::List, SERVICES);
    let watches = server.requests(Verb::Watch, SERVICES);
    let all = show(&server.request_log());
    assert_eq!((lists.len(), watches.len()), (1, 1), "no relist, no reconnect:{all}");
    let (list, watch) = (&lists[0], &watches[0]);
    assert_eq!(list.param("limit"), Some("500"), "{all}");
    assert_eq!(list.param("labelSelector"), Some(PROXY_SELECTOR));
    assert_eq!(list.param("resourceVersion"), None, "MostRecent list semantic: {all}");
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"), "{all}");
    assert_eq!(watch.param("timeoutSeconds"), Some("290"), "{all}");
    assert_eq!(watch.param("labelSelector"), Some(PROXY_SELECTOR));
    assert_eq!(watch.param("sendInitialEvents"), None);
    assert_eq!(watch.param("resourceVersion"), Some(listed_rv.as_str()), "from the list's RV:{all}");
    assert!(reflector.errors().is_empty(), "{:?}", reflector.errors());
}

#[tokio::test]
async fn kubeconfig_and_discovery_work_for_kube() {
    let server = ApiServer::start();
    server.apply(service("default", "web", json!({}), 80));
    let dir = tempfile::tempdir().unwrap();
    let path = server.kubeconfig(dir.path());
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let services: Api<Service> = Api::default_namespaced(client.clone());
    assert_eq!(services.get("web").await.unwrap().name_any(), "web");

    assert_eq!(client.apiserver_version().await.unwrap().minor, "33");
    let discovery = kube::Discovery::new(client).run().await.unwrap();
    let (slices, caps) =
        discovery.resolve_gvk(&GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice")).unwrap();
    assert_eq!((slices.plural.as_str(), caps.scope), ("endpointslices", Scope::Namespaced));
    let (nodes, caps) = discovery.resolve_gvk(&GroupVersionKind::gvk("", "v1", "Node")).unwrap();
    assert_eq!((nodes.plural.as_str(), caps.scope), ("nodes", Scope::Cluster));
}

/// What the daemon watches: Services and EndpointSlices (kube-proxy's selectors), Endpoints,
/// and its own Node by field selector — all at once over one client.
#[tokio::test]
async fn the_daemons_four_reflectors_converge_together() {
    let server = ApiServer::start();
    let web = server.apply(service("default", "web", json!({}), 80));
    let slice = server.apply(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": "web-abc", "labels": { "kubernetes.io/service-name": "web" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["10.244.1.5"], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    }));
    let endpoints = server.apply(json!({ "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": "web" } }));
    let me = server.apply(objects::node("node-a", None));
    server.apply(objects::node("node-b", None));
    let client = server.client();
    let services = proxy_services(&server);
    let slices: Reflector<EndpointSlice> =
        Reflector::start(Api::all(client.clone()), watcher::Config::default().labels(PROXY_SELECTOR));
    let old_endpoints: Reflector<Endpoints> = Reflector::start(Api::all(client.clone()), watcher::Config::default());
    let nodes: Reflector<Node> =
        Reflector::start(Api::all(client), watcher::Config::default().fields("metadata.name=node-a"));
    services.converges_to(&[&web], WAIT).await;
    slices.converges_to(&[&slice], WAIT).await;
    old_endpoints.converges_to(&[&endpoints], WAIT).await;
    nodes.converges_to(&[&me], WAIT).await;
    assert!(server.wait_for_watches(4, WAIT).await, "{}", show(&server.request_log()));
    let watched = ["/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/endpoints", "/api/v1/nodes", SERVICES];
    eventually("one logged watch per kind", || watched.iter().all(|p| server.requests(Verb::Watch, p).len() == 1))
        .await;

    server.delete("EndpointSlice", "default", "web-abc");
    let me = server.apply(
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-a", "labels": { "zone": "z1" } } }),
    );
    server.apply(
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-b", "labels": { "zone": "z2" } } }),
    );
    slices.converges_to(&[], WAIT).await;
    nodes.converges_to(&[&me], WAIT).await;
    for path in watched {
        assert_eq!(server.requests(Verb::Watch, path).len(), 1, "{path}:{}", show(&server.request_log()));
    }
}

#[tokio::test]
async fn raw_watch_sees_periodic_bookmarks_and_ends_at_its_timeout() {
    let server = ApiServer::start_with(ServerConfig {
        bookmark_interval: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    });
    let web = server.apply(service("default", "web", json!({}), 80));
    let api: Api<Service> = Api::all(server.client());
    let from = server.resource_version().to_string();
    let started = Instant::now();
    let stream = api.watch(&WatchParams::default().timeout(1), &from).await.unwrap();
    server.apply(service("default", "web", json!({}), 81));
    let events: Vec<WatchEvent<Service>> = tokio::time::timeout(WAIT, stream.try_collect()).await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3), "ended after {elapsed:?}");
    assert!(
        matches!(&events[0], WatchEvent::Modified(s) if s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port == 81)
    );
    let bookmarks: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.as_str()),
            _ => None,
        })
        .collect();
    assert!(bookmarks.len() >= 2, "expected periodic bookmarks, got {events:?}");
    let current = server.resource_version().to_string();
    assert!(bookmarks.iter().all(|rv| *rv == current), "{bookmarks:?} vs {current}");
    assert_ne!(web["metadata"]["resourceVersion"], json!(current));
}

#[tokio::test]
async fn dropped_watch_resumes_from_the_last_bookmark_without_losing_updates() {
    let server = server_without_periodic_bookmarks();
    let a = server.apply(service("default", "a", json!({}), 80));
    let reflector = proxy_services(&server);
    reflector.converges_to(&[&a], WAIT).await;
    assert!(server.wait_for_watches(1, WAIT).await);

    // Move the global RV past anything the Service watch has seen, then bookmark it.
    server.apply(objects::node("node-a", None));
    let bookmark_rv = server.resource_version().to_string();
    server.bookmark_now();

    let hold = server.hold_watches();
    server.drop_watches();
    let b = server.apply(service("default", "b", json!({}), 80)); // while disconnected
    let a = server.apply(service("default", "a", json!({}), 8080));
    assert_eq!(server.watch_count(), 0);
    drop(hold);
    reflector.converges_to(&[&a, &b], WAIT).await;

    let watches = server.requests(Verb::Watch, SERVICES);
    let all = show(&server.request_log());
    assert_eq!(watches.len(), 2, "{all}");
    assert_eq!(watches[1].param("resourceVersion"), Some(bookmark_rv.as_str()), "resumed from the bookmark:{all}");
    assert_eq!(server.requests(Verb::List, SERVICES).len(), 1, "no relist:{all}");
    assert!(reflector.errors().is_empty(), "a dropped watch is not an error: {:?}", reflector.errors());
}

#[tokio::test]
async fn compaction_while_disconnected_forces_a_relist_that_sees_deletions() {
    let server = server_without_periodic_bookmarks();
    let a = server.apply(service("default", "a", json!({}), 80));
    let b = server.apply(service("default", "b", json!({}), 80));
    let reflector = proxy_services(&server);
    reflector.converges_to(&[&a, &b], WAIT).await;
    assert!(server.wait_for_watches(1, WAIT).await);
    let stale_rv = server.resource_version().to_string();

    let hold = server.hold_watches();
    server.drop_watches();
    server.delete("Service", "default", "b");
    let c = server.apply(service("default", "c", json!({}), 80));
    server.compact();
    drop(hold);
    reflector.converges_to(&[&a, &c], WAIT).await;
    // The store is complete after the relist; the watch that follows it may still be on its way.
    eventually("the watch after the relist", || server.requests(Verb::Watch, SERVICES).len() == 3).await;

    let errors = reflector.errors();
    assert!(errors.iter().any(|e| e.contains("Expired") || e.contains("410")), "watcher saw no 410: {errors:?}");
    let log = server.request_log();
    let all = show(&log);
    let services: Vec<&RequestRecord> = log.iter().filter(|r| r.path == SERVICES).collect();
    let shape: Vec<(Verb, Option<&str>)> = services.iter().map(|r| (r.verb, r.param("resourceVersion"))).collect();
    let relist_rv = server.resource_version().to_string();
    assert_eq!(
        shape,
        [
            (Verb::List, None),
            (Verb::Watch, Some(stale_rv.as_str())),
            (Verb::Watch, Some(stale_rv.as_str())), // answered with a 410 ERROR event
            (Verb::List, None),
            (Verb::Watch, Some(relist_rv.as_str())),
        ],
        "{all}"
    );
}

#[tokio::test]
async fn watcher_rides_out_an_outage_of_503s() {
    let server = server_without_periodic_bookmarks();
    let a = server.apply(service("default", "a", json!({}), 80));
    let reflector = proxy_services(&server);
    reflector.converges_to(&[&a], WAIT).await;
    assert!(server.wait_for_watches(1, WAIT).await);

    server.set_unavailable(true);
    let outage = Instant::now();
    server.delete("Service", "default", "a");
    let b = server.apply(service("default", "b", json!({}), 80));
    let unavailable = |server: &ApiServer| server.request_log().into_iter().filter(|r| r.status == 503).count();
    eventually("two 503 answers", || unavailable(&server) >= 2).await;
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(outage.elapsed())).await;
    let refused = unavailable(&server);
    assert!(refused <= 10, "no backoff: {refused} requests in {:?}:{}", outage.elapsed(), show(&server.request_log()));
    assert_eq!(server.watch_count(), 0);

    server.set_unavailable(false);
    reflector.converges_to(&[&b], WAIT).await;
    let all = show(&server.request_log());
    assert_eq!(server.requests(Verb::List, SERVICES).len(), 1, "history intact, so no relist:{all}");

    // An outage during the initial list is retried the same way.
    server.set_unavailable(true);
    let late = proxy_services(&server);
    eventually("a refused initial list", || server.requests(Verb::List, SERVICES).iter().any(|r| r.status == 503))
        .await;
    server.set_unavailable(false);
    late.converges_to(&[&b], WAIT).await;
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_and_the_end_bookmark() {
    let server = server_without_periodic_bookmarks();
    let a = server.apply(service("default", "a", json!({}), 80));
    let config = watcher::Config::default().labels(PROXY_SELECTOR).streaming_lists();
    let reflector: Reflector<Service> = Reflector::start(Api::all(server.client()), config);
    reflector.converges_to(&[&a], WAIT).await;
    let b = server.apply(service("default", "b", json!({}), 80));
    reflector.converges_to(&[&a, &b], WAIT).await;
    let watches = server.requests(Verb::Watch, SERVICES);
    let all = show(&server.request_log());
    assert!(server.requests(Verb::List, SERVICES).is_empty(), "{all}");
    assert_eq!(watches.len(), 1, "{all}");
    assert_eq!(watches[0].param("sendInitialEvents"), Some("true"));
    assert_eq!(watches[0].param("resourceVersionMatch"), Some("NotOlderThan"));
}

// ---- serving inside a network namespace -------------------------------------------------------

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A throwaway namespace `knt-api-<pid>-<n>` with `lo` up; deleted on drop, also when the test
/// panics. (Self-contained on purpose: e2e tests pass `testkit::netns::NetNs::name()` instead.)
struct ThrowawayNetns {
    name: String,
}

impl ThrowawayNetns {
    fn new() -> ThrowawayNetns {
        let n = NETNS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let ns = ThrowawayNetns { name: format!("knt-api-{}-{n}", std::process::id()) };
        run_ok(&["ip", "netns", "add", &ns.name]);
        run_ok(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for ThrowawayNetns {
    fn drop(&mut self) {
        let out = run(&["ip", "netns", "delete", &self.name]);
        if !out.status.success() {
            eprintln!("warning: could not delete netns {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Runs `argv` (no shell) under coreutils `timeout`, so it cannot hang the test.
fn run(argv: &[&str]) -> Output {
    let limit = WAIT.as_secs().to_string();
    Command::new("timeout").arg(&limit).args(argv).stdin(Stdio::null()).output().unwrap()
}

fn run_ok(argv: &[&str]) -> String {
    let out = run(argv);
    assert!(out.status.success(), "{argv:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Root (effective uid 0) is needed for `ip netns`; without it the test skips, unless `CI=true`.
fn require_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2));
    if euid == Some("0") {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but not root: this test must run, not skip");
    eprintln!("skipped: not root (needed for ip netns)");
    false
}

/// Lists services and reads the first event of a watch, from inside the namespace.
const PYTHON_CLIENT: &str = r#"
import json, sys, urllib.request
base = sys.argv[1]
with urllib.request.urlopen(base + "/api/v1/services", timeout=5) as r:
    body = json.load(r)
    print(r.status, body["kind"], ",".join(i["metadata"]["name"] for i in body["items"]))
with urllib.request.urlopen(base + "/api/v1/services?watch=true&resourceVersion=0&timeoutSeconds=1", timeout=5) as r:
    event = json.loads(r.readline())
    print(r.headers.get("Transfer-Encoding"), event["type"], event["object"]["metadata"]["name"])
"#;

#[test]
fn serves_only_inside_its_network_namespace() {
    if !require_root() {
        return;
    }
    let ns = ThrowawayNetns::new();
    let server = ApiServer::start_in_netns(&ns.name);
    server.apply(service("default", "web", json!({}), 80));

    let inside = run_ok(&["ip", "netns", "exec", &ns.name, "python3", "-c", PYTHON_CLIENT, &server.url()]);
    assert_eq!(inside, "200 ServiceList web\nchunked ADDED web\n");

    // Same address and port from the test's own namespace: not this server.
    let before = server.request_log().len();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    if let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        use std::io::{Read, Write};
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = stream.write_all(b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        assert!(!reply.contains("ServiceList"), "the server answered outside its namespace: {reply}");
    }
    assert_eq!(server.request_log().len(), before, "{}", show(&server.request_log()));
    drop(server); // stops the thread that lives in the namespace before the namespace goes
}
