//! The HTTP servers over real sockets on 127.0.0.1: `/healthz` + `/livez` (status, kube-proxy's
//! JSON and headers, node eligibility), the metrics port (`/metrics` in both formats,
//! `/proxyMode`, `/healthz`, `/configz`, `/debug/services`), and the healthCheckNodePort
//! servers following endpoint counts, proxy health, port changes, removal and busy ports.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kubenat::health::{serve_healthz, serve_metrics, HealthState, MetricsServer};
use kubenat::healthcheck::{desired, Error, HealthCheckServers, NamespacedName, ServiceHealth};
use kubenat::metrics::Metrics;
use kubenat::model::build;
use kubenat::model::{
    ClusterState, Endpoint, IpFamily, NodeConfig, Protocol, ServicePort, ServicePortName, TrafficPolicy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A hand-written HTTP/1.1 GET with `Connection: close`; every step bounded by [`WAIT`].
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    get_with(addr, path, "").await
}

/// [`get`] with extra header lines (each ending in `\r\n`).
async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> std::io::Result<Reply> {
    let timed_out = |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.map_err(timed_out)??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.map_err(timed_out)??;
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Ok(Reply { status, headers, body: body.to_string() })
}

async fn get_ok(addr: SocketAddr, path: &str) -> Reply {
    get(addr, path).await.unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
}

async fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// A test clock: `set` moves it.
#[derive(Clone)]
struct TestClock(Arc<Mutex<SystemTime>>);

impl TestClock {
    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }
    fn new() -> Self {
        TestClock(Arc::new(Mutex::new(Self::at(0))))
    }
    fn set(&self, secs: u64) {
        *self.0.lock().unwrap() = Self::at(secs);
    }
    fn health(&self) -> HealthState {
        let clock = self.0.clone();
        HealthState::new(HEALTH_TIMEOUT).with_clock(Arc::new(move || *clock.lock().unwrap()))
    }
}

fn assert_kube_proxy_headers(reply: &Reply) {
    assert_eq!(reply.header("content-type"), Some("application/json"), "{reply:?}");
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{reply:?}");
}

#[tokio::test]
async fn healthz_and_livez_follow_queued_and_updated() {
    let clock = TestClock::new();
    let (metrics, registry) = Metrics::new();
    let health = clock.health().with_metrics(metrics);
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_healthz(listener, health.clone(), shutdown.clone()));

    let reply = get_ok(addr, "/healthz").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_kube_proxy_headers(&reply);
    assert_eq!(
        reply.body,
        r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:20Z","nodeEligible":true,"healthy":true}"#
    );

    health.updated(IpFamily::V4, TestClock::at(5));
    health.updated(IpFamily::V6, TestClock::at(6));
    health.queued(IpFamily::V6, TestClock::at(10));
    clock.set(69);
    assert_eq!(get_ok(addr, "/healthz").await.status, 200, "59 s pending is not late");
    clock.set(70);
    for path in ["/healthz", "/livez"] {
        let reply = get_ok(addr, path).await;
        assert_eq!(reply.status, 503, "{path}: {reply:?}");
        assert_kube_proxy_headers(&reply);
        let json = reply.json();
        assert_eq!(json["lastUpdated"], "2023-11-14T22:13:26Z", "{path}: the last successful sync");
        assert_eq!(json["currentTime"], "2023-11-14T22:14:30Z");
        assert_eq!(json["healthy"], false);
        assert_eq!(json["status"]["IPv4"], serde_json::json!({"lastUpdated": "2023-11-14T22:13:25Z", "healthy": true}));
        assert_eq!(
            json["status"]["IPv6"],
            serde_json::json!({"lastUpdated": "2023-11-14T22:13:26Z", "healthy": false})
        );
    }
    assert!(get_ok(addr, "/livez").await.json().get("nodeEligible").is_none(), "livez has no nodeEligible");

    health.updated(IpFamily::V6, TestClock::at(71));
    health.set_node_eligible(false);
    let reply = get_ok(addr, "/healthz").await;
    assert_eq!((reply.status, &reply.json()["nodeEligible"]), (503, &serde_json::Value::Bool(false)));
    assert_eq!(reply.json()["healthy"], true, "the proxy itself is healthy");
    assert_eq!(get_ok(addr, "/livez").await.status, 200, "livez ignores node eligibility");
    assert_eq!(get_ok(addr, "/nope").await.status, 404);

    let text = kubenat::metrics::encode(&registry);
    for line in [
        r#"kubeproxy_proxy_healthz_total{code="200"} 2"#,
        r#"kubeproxy_proxy_healthz_total{code="503"} 2"#,
        r#"kubeproxy_proxy_livez_total{code="503"} 2"#,
        r#"kubeproxy_proxy_livez_total{code="200"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }

    shutdown.cancel();
    tokio::time::timeout(WAIT, server).await.expect("server stops on shutdown").unwrap().unwrap();
    assert!(refused(addr).await, "listener closed after shutdown");
}

#[tokio::test]
async fn metrics_server_serves_metrics_proxy_mode_healthz_and_configz() {
    let (metrics, registry) = Metrics::new();
    metrics.inc_service_changes(4);
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let configz = serde_json::json!({"kubeproxy.config.k8s.io": {"mode": "iptables", "clusterCIDR": "10.244.0.0/16"}});
    let server = MetricsServer {
        registry: Arc::new(registry),
        before_scrape: None,
        proxy_mode: "iptables",
        configz: Arc::new(configz),
        services: kubenat::health::ServicesView::default(),
    };
    let server = tokio::spawn(serve_metrics(listener, server, shutdown.clone()));

    let reply = get_ok(addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"), "{reply:?}");
    assert!(reply.body.lines().any(|l| l == "kubeproxy_sync_proxy_rules_service_changes_total 4"), "{}", reply.body);
    assert!(reply.body.contains("# TYPE kubeproxy_sync_proxy_rules_service_changes_total counter\n"));
    assert!(!reply.body.contains("# EOF"), "{}", reply.body);

    metrics.inc_service_changes(1);
    let prometheus =
        "Accept: application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2\r\n";
    let reply = get_with(addr, "/metrics", prometheus).await.unwrap();
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{reply:?}");
    assert!(reply.body.lines().any(|l| l == "kubeproxy_sync_proxy_rules_service_changes_total 5"));
    assert!(reply.body.ends_with("# EOF\n"));

    let mode = get_ok(addr, "/proxyMode").await;
    assert_eq!((mode.status, mode.body.as_str()), (200, "iptables"));
    assert_eq!(mode.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(mode.header("x-content-type-options"), Some("nosniff"));
    for path in ["/healthz", "/healthz/ping"] {
        let ok = get_ok(addr, path).await;
        assert_eq!((ok.status, ok.body.as_str()), (200, "ok"), "{path}");
    }
    let configz = get_ok(addr, "/configz").await;
    assert_kube_proxy_headers(&configz);
    assert_eq!(configz.json()["kubeproxy.config.k8s.io"]["clusterCIDR"], "10.244.0.0/16");

    shutdown.cancel();
    tokio::time::timeout(WAIT, server).await.expect("server stops on shutdown").unwrap().unwrap();
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

fn endpoint(addr: &str, node: &str, ready: bool) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        ready,
        serving: ready,
        terminating: false,
        node_name: Some(node.into()),
        zone_hints: vec![],
        node_hints: vec![],
    }
}

/// LoadBalancer `ns/web` with externalTrafficPolicy=Local and healthCheckNodePort `hc`.
fn lb_state(hc: u16, endpoints: Vec<Endpoint>) -> ClusterState {
    let name =
        ServicePortName { namespace: "ns".into(), name: "web".into(), port: "http".into(), protocol: Protocol::Tcp };
    let port = ServicePort {
        name: name.clone(),
        cluster_ips: vec!["10.96.0.20".parse().unwrap()],
        port: 80,
        node_port: Some(30080),
        external_ips: vec![],
        load_balancer_ips: vec!["198.51.100.7".parse().unwrap()],
        source_ranges: vec![],
        affinity_timeout: None,
        external_policy: TrafficPolicy::Local,
        internal_policy: TrafficPolicy::Cluster,
        health_check_node_port: Some(hc),
        endpoints,
    };
    ClusterState { services: BTreeMap::from([(name, port.into())]) }
}

fn node() -> NodeConfig {
    NodeConfig { node_name: "n1".into(), ..NodeConfig::default() }
}

fn web() -> NamespacedName {
    NamespacedName { namespace: "ns".into(), name: "web".into() }
}

#[tokio::test]
async fn healthcheck_server_follows_local_endpoints_and_goes_away() {
    let clock = TestClock::new();
    let health = clock.health();
    let shutdown = CancellationToken::new();
    let mut servers = HealthCheckServers::new(LOCALHOST, shutdown.clone()).with_health(health.clone());
    let port = free_port();
    let addr = SocketAddr::new(LOCALHOST, port);

    let two_local = vec![
        endpoint("10.244.1.5:8080", "n1", true),
        endpoint("10.244.1.6:8080", "n1", true),
        endpoint("10.244.2.5:8080", "n2", true),
    ];
    let errors = servers.sync(&desired(&lb_state(port, two_local), &node())).await;
    assert!(errors.is_empty(), "{errors:?}");
    let reply = get_ok(addr, "/any/path").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_kube_proxy_headers(&reply);
    assert_eq!(reply.header("x-load-balancing-endpoint-weight"), Some("2"));
    let json = reply.json();
    assert_eq!(json["service"]["namespace"], "ns");
    assert_eq!(json["service"]["name"], "web");
    assert_eq!(json["localEndpoints"], 2);
    assert_eq!(json["serviceProxyHealthy"], true);

    // The only local endpoint becomes unready: 503, weight 0, same listener.
    let none_ready = vec![endpoint("10.244.1.5:8080", "n1", false), endpoint("10.244.2.5:8080", "n2", true)];
    assert!(servers.sync(&desired(&lb_state(port, none_ready), &node())).await.is_empty());
    let reply = get_ok(addr, "/").await;
    assert_eq!((reply.status, reply.header("x-load-balancing-endpoint-weight")), (503, Some("0")), "{reply:?}");
    assert_eq!(reply.json()["localEndpoints"], 0);

    // Endpoints back, but the proxy is unhealthy: 503 with serviceProxyHealthy=false.
    let one_local = vec![endpoint("10.244.1.5:8080", "n1", true)];
    assert!(servers.sync(&desired(&lb_state(port, one_local.clone()), &node())).await.is_empty());
    assert_eq!(get_ok(addr, "/").await.status, 200);
    health.queued(IpFamily::V4, TestClock::at(0));
    clock.set(61);
    let reply = get_ok(addr, "/").await;
    assert_eq!((reply.status, &reply.json()["serviceProxyHealthy"]), (503, &serde_json::Value::Bool(false)));
    health.updated(IpFamily::V4, TestClock::at(61));

    // The healthCheckNodePort changes: the old port closes, the new one answers.
    let new_port = free_port();
    assert!(servers.sync(&desired(&lb_state(new_port, one_local.clone()), &node())).await.is_empty());
    assert!(refused(addr).await, "old port still open");
    assert_eq!(get_ok(SocketAddr::new(LOCALHOST, new_port), "/").await.status, 200);
    assert_eq!(servers.ports(), BTreeMap::from([(web(), new_port)]));

    // Back to the first port at once: the freed port is bound again.
    assert!(servers.sync(&desired(&lb_state(port, one_local), &node())).await.is_empty());
    assert_eq!(get_ok(addr, "/").await.status, 200);

    // The service goes away: nothing listens any more.
    assert!(servers.sync(&BTreeMap::new()).await.is_empty());
    assert!(refused(addr).await, "port still open after the service went away");
    assert!(servers.ports().is_empty());
    shutdown.cancel();
}

#[tokio::test]
async fn busy_port_is_reported_and_retried_not_fatal() {
    let health = TestClock::new().health();
    let shutdown = CancellationToken::new();
    let mut servers = HealthCheckServers::new(LOCALHOST, shutdown.clone()).with_health(health);
    let blocker = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let busy = blocker.local_addr().unwrap().port();
    let free = free_port();
    let other = NamespacedName { namespace: "ns".into(), name: "other".into() };
    let want = BTreeMap::from([
        (web(), ServiceHealth { port: busy, local_endpoints: 1 }),
        (other.clone(), ServiceHealth { port: free, local_endpoints: 1 }),
    ]);

    let errors = servers.sync(&want).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let Error::Bind { service, addr, source } = &errors[0];
    assert_eq!((service, addr.port()), (&web(), busy));
    assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
    assert!(errors[0].to_string().contains("ns/web"), "{}", errors[0]);
    assert_eq!(servers.ports(), BTreeMap::from([(other, free)]), "the other service still runs");
    assert_eq!(get_ok(SocketAddr::new(LOCALHOST, free), "/").await.status, 200);

    // Still busy: reported again. Freed: started on the next sync.
    assert_eq!(servers.sync(&want).await.len(), 1);
    drop(blocker);
    assert!(servers.sync(&want).await.is_empty());
    let reply = get_ok(SocketAddr::new(LOCALHOST, busy), "/").await;
    assert_eq!((reply.status, &reply.json()["service"]["name"]), (200, &serde_json::Value::from("web")));

    // Shutdown stops every server.
    shutdown.cancel();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(refused(SocketAddr::new(LOCALHOST, busy)).await && refused(SocketAddr::new(LOCALHOST, free)).await) {
        assert!(tokio::time::Instant::now() < deadline, "servers still listening after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn unspecified_address_listens_on_both_families() {
    let shutdown = CancellationToken::new();
    let mut servers = HealthCheckServers::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), shutdown.clone());
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let port =
        if ipv6 { std::net::TcpListener::bind("[::]:0").unwrap().local_addr().unwrap().port() } else { free_port() };
    let want = BTreeMap::from([(web(), ServiceHealth { port, local_endpoints: 1 })]);
    assert!(servers.sync(&want).await.is_empty());

    let reply = get_ok(SocketAddr::new(LOCALHOST, port), "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["serviceProxyHealthy"], true, "no HealthState given: the proxy counts as healthy");
    if ipv6 {
        let reply = get_ok(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port), "/").await;
        assert_eq!(reply.status, 200, "IPv6 too, like kube-proxy's Go listener: {reply:?}");
    } else {
        eprintln!("no IPv6 loopback: checked IPv4 only");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn metrics_server_serves_debug_services_from_the_published_view() {
    use kubenat::health::services::{FamilyContext, SyncOutcome};
    use kubenat::health::ServicesView;
    let (_, registry) = Metrics::new();
    let services = ServicesView::default();
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = MetricsServer {
        registry: Arc::new(registry),
        before_scrape: None,
        proxy_mode: "iptables",
        configz: Arc::new(serde_json::json!({})),
        services: services.clone(),
    };
    let server = tokio::spawn(serve_metrics(listener, server, shutdown.clone()));

    let empty = get_ok(addr, "/debug/services").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), serde_json::json!({"lastSync": null, "servicePorts": []}));

    // The syncer publishes; the next request sees it.
    let name = ServicePortName {
        namespace: "default".into(),
        name: "web".into(),
        port: "http".into(),
        protocol: Protocol::Tcp,
    };
    let endpoint = Endpoint { node_name: Some("node-1".into()), ..build::endpoint("10.244.1.5:8080".parse().unwrap()) };
    let web = ServicePort {
        endpoints: vec![endpoint],
        ..ServicePort::new(name.clone(), vec!["10.96.0.10".parse().unwrap()], 80)
    };
    let state = ClusterState { services: BTreeMap::from([(name, web.into())]) };
    let node = NodeConfig { node_name: "node-1".into(), ..NodeConfig::default() };
    let now = SystemTime::now();
    services.programmed(&state, &[FamilyContext { node: &node, large_cluster: false }], now);
    services.sync_finished(SyncOutcome { time: now, kind: None, error: Some("IPv4 restore failed".into()) });

    let one = get_ok(addr, "/debug/services/default/web").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.header("content-type"), Some("application/json"));
    assert_eq!(one.header("x-content-type-options"), Some("nosniff"));
    let body = one.json();
    assert_eq!(body["lastSync"]["result"], "failed");
    assert_eq!(body["ports"][0]["chains"]["SVC"], "KUBE-SVC-CDGGSHYLG3RE2FKL");
    assert_eq!(body["ports"][0]["endpoints"][0]["chain"], "KUBE-SEP-AFGSLHOD2HFNCBX4");
    let list = get_ok(addr, "/debug/services").await.json();
    assert_eq!(list["servicePorts"][0]["servicePort"], "default/web:http");

    let missing = get_ok(addr, "/debug/services/default/nope").await;
    assert_eq!((missing.status, missing.header("content-type")), (404, Some("application/json")));
    assert!(missing.json()["error"].is_string(), "{missing:?}");

    shutdown.cancel();
    tokio::time::timeout(WAIT, server).await.expect("server stops on shutdown").unwrap().unwrap();
}
