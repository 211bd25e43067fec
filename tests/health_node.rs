//! `/healthz` follows this node's Node object on the real daemon, fed by the test API server
//! through the real `kube` client: the `ToBeDeletedByClusterAutoscaler` taint and a
//! `deletionTimestamp` turn `/healthz` into 503 with `nodeEligible: false` while `/livez` stays
//! 200; removing the taint brings 200 back. The metrics port's kube-proxy surface (labels,
//! `/configz`, `/proxyMode`) is checked on the same daemon. Needs root (skips otherwise, fails
//! under CI=true).

use std::time::Duration;

use kubenat::apply::exec::{Backend, Tool};
use kubenat::model::IpFamily;
use serde_json::{json, Value};
use tempfile::TempDir;
use testkit::apiserver::ApiServer;
use testkit::daemon::{poll, Daemon, DaemonOptions};
use testkit::lab::Lab;
use testkit::objects;

/// Every "eventually" here is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

/// The daemon's Node (`--hostname-override node-1`), with `metadata` merged into its metadata
/// and `taints` as `spec.taints`.
fn node(metadata: Value, taints: Value) -> Value {
    objects::merge(objects::node(objects::NODE, None), json!({ "metadata": metadata, "spec": { "taints": taints } }))
}

fn autoscaler_taint() -> Value {
    json!([{ "key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule" }])
}

/// The node namespace with the API server in it and the daemon; drops daemon first.
struct Env {
    daemon: Daemon,
    api: ApiServer,
    _lab: Lab,
    _dir: TempDir,
}

impl Env {
    /// `None` (test skipped) when not root or no iptables backend is installed.
    fn start() -> Option<Env> {
        if !testkit::require_root() {
            return None;
        }
        let backend = [Backend::Nft, Backend::Legacy]
            .into_iter()
            .find(|b| testkit::require_program(&b.binary(IpFamily::V4, Tool::Restore)))?;
        let lab = Lab::new(0);
        let api = ApiServer::start_in_netns(lab.node.name());
        api.apply(node(json!({}), json!([])));
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = api.kubeconfig(dir.path());
        let opts = DaemonOptions::new(if backend == Backend::Nft { "nft" } else { "legacy" });
        let mut daemon = Daemon::start(&lab.node, &kubeconfig, &dir.path().join("kubenat.log"), &opts);
        daemon.wait_full_syncs(1.0, WAIT);
        Some(Env { daemon, api, _lab: lab, _dir: dir })
    }

    /// Waits until `/healthz` answers `code` with `nodeEligible == eligible`; returns the body.
    fn until_healthz(&self, code: u16, eligible: bool, what: &str) -> Value {
        let mut last = None;
        let found = poll(WAIT, Duration::from_millis(100), || {
            last = self.daemon.health("/healthz");
            let (got, body) = last.clone()?;
            (got == code && body["nodeEligible"] == eligible).then_some(body)
        });
        found.unwrap_or_else(|| panic!("{what}: /healthz never {code}, last {last:?}; log:\n{}", self.daemon.log()))
    }

    /// `/livez` is 200, healthy, and has no `nodeEligible`.
    fn assert_livez_ok(&self, what: &str) {
        let (code, body) = self.daemon.health("/livez").unwrap_or_else(|| panic!("{what}: /livez did not answer"));
        assert_eq!(code, 200, "{what}: /livez {body}");
        assert_eq!(body["healthy"], true, "{what}: {body}");
        assert!(body.get("nodeEligible").is_none(), "{what}: {body}");
    }
}

#[test]
fn healthz_follows_node_deletion_and_autoscaler_taint() {
    let Some(env) = Env::start() else { return };
    let body = env.until_healthz(200, true, "at start");
    assert_eq!(body["healthy"], true, "{body}");
    assert_eq!(body["status"]["IPv4"]["healthy"], true, "per-family status: {body}");
    assert!(body["status"].get("IPv6").is_none(), "IPv4 only: {body}");

    env.api.apply(node(json!({}), autoscaler_taint()));
    let body = env.until_healthz(503, false, "tainted ToBeDeletedByClusterAutoscaler");
    assert_eq!(body["healthy"], true, "the proxy itself stays healthy: {body}");
    env.assert_livez_ok("tainted");

    env.api.apply(node(json!({}), json!([{ "key": "other", "effect": "NoSchedule" }])));
    env.until_healthz(200, true, "taint removed");

    // The real API never clears a deletionTimestamp, so this comes last.
    env.api.apply(node(json!({ "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["test/hold"] }), json!([])));
    env.until_healthz(503, false, "deletionTimestamp set");
    env.assert_livez_ok("being deleted");
    env.api.delete("Node", "", "node-1");
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = env.daemon.health("/healthz").expect("/healthz answers");
    assert_eq!((code, &body["nodeEligible"]), (503, &json!(false)), "Node gone: {body}");

    let scrape = env.daemon.metrics().expect("/metrics answers");
    assert!(scrape.get(r#"kubeproxy_proxy_healthz_total{code="503"}"#) >= 2.0, "{}", scrape.0);
    assert!(scrape.get(r#"kubeproxy_proxy_livez_total{code="200"}"#) >= 2.0, "{}", scrape.0);
}

#[test]
fn metrics_port_speaks_kube_proxys_surface() {
    let Some(env) = Env::start() else { return };
    let scrape = env.daemon.metrics().expect("/metrics answers");
    let text = &scrape.0;
    assert!(scrape.get(r#"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"}"#) >= 1.0, "{text}");
    assert!(scrape.get(r#"kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}"#) > 1.6e9, "{text}");
    assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_service_changes_total counter\n"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("kubernetes_build_info{")), "{text}");
    assert!(!text.contains("# EOF"), "Prometheus text by default: {text}");
    // The full sync wrote the nat table's rules (the canary and jumps at least).
    let nat_last = scrape.get(r#"kubeproxy_sync_proxy_rules_iptables_last{ip_family="IPv4",table="nat"}"#);
    assert!(nat_last >= 1.0, "{text}");
    for policy in ["internal", "external"] {
        let series = format!(
            r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{{ip_family="IPv4",traffic_policy="{policy}"}}"#
        );
        assert_eq!(scrape.value(&series), Some(0.0), "no Local-policy service here: {text}");
    }

    let (code, mode) = env.daemon.metrics_port_get("/proxyMode").expect("/proxyMode answers");
    assert_eq!((code, mode.as_str()), (200, "iptables"));
    let (code, body) = env.daemon.metrics_port_get("/configz").expect("/configz answers");
    let configz: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/configz not JSON ({e}): {body}"));
    assert_eq!(code, 200);
    let config = &configz["kubeproxy.config.k8s.io"];
    assert_eq!((config["mode"].as_str(), config["clusterCIDR"].as_str()), (Some("iptables"), Some("10.244.0.0/16")));
    assert_eq!(config["iptables"]["syncPeriod"], "5s", "{configz}");
    assert_eq!(config["iptables"]["minSyncPeriod"], "100ms", "{configz}");
}
