use super::*;
use IpFamily::{V4, V6};

/// Every sample line of `text` whose series name is exactly `name`.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines().filter(|l| !l.starts_with('#')).filter(|l| l.split(['{', ' ']).next() == Some(name)).collect()
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no value in {line:?}"))
}

/// Metrics with one observation everywhere, encoded.
fn scrape_populated() -> String {
    let (m, registry) = Metrics::new();
    m.observe_sync(V4, SyncKind::Full, 0.003);
    m.observe_sync(V4, SyncKind::Partial, 0.5);
    m.observe_sync(V6, SyncKind::Full, 0.2);
    m.set_last_sync(V4, 1_700_000_000.5);
    m.set_last_queued(V4, 1_700_000_001.0);
    m.set_last_queued(V6, 1_700_000_002.0);
    m.observe_network_programming(V4, 1.5);
    m.inc_restore_failure(V4, SyncKind::Full);
    m.inc_restore_failure(V4, SyncKind::Partial);
    m.inc_restore_failure(V4, SyncKind::Partial);
    m.inc_endpoint_changes(7);
    m.inc_service_changes(3);
    m.set_endpoint_changes_pending(2);
    m.set_service_changes_pending(1);
    m.set_rules_total(V4, TableName::Nat, 42);
    m.set_rules_total(V4, TableName::Filter, 5);
    m.set_rules_total(V6, TableName::Nat, 40);
    m.set_rules_last(V4, TableName::Nat, 4);
    m.set_no_local_endpoints(V4, PolicyKind::Internal, 1);
    m.set_no_local_endpoints(V6, PolicyKind::External, 0);
    m.inc_healthz(200);
    m.inc_livez(503);
    m.observe_conntrack_reconcile(V6, 0.01);
    m.inc_conntrack_deleted_entries(V4, 9);
    m.set_ct_state_invalid_dropped_packets(11);
    m.set_localhost_nodeports_accepted_packets(12);
    m.observe_restore_bytes(SyncKind::Full, 4096);
    m.observe_restore_bytes(SyncKind::Partial, 100);
    m.set_startup_check_failed("br_netfilter", true);
    encode(&registry)
}

#[test]
fn exposes_kube_proxy_series_names() {
    let text = scrape_populated();
    let expected = [
        ("kubeproxy_sync_proxy_rules_endpoint_changes_total", 7.0),
        ("kubeproxy_sync_proxy_rules_service_changes_total", 3.0),
        ("kubeproxy_sync_proxy_rules_endpoint_changes_pending", 2.0),
        ("kubeproxy_sync_proxy_rules_service_changes_pending", 1.0),
        ("kubeproxy_iptables_ct_state_invalid_dropped_packets_total", 11.0),
        ("kubeproxy_iptables_localhost_nodeports_accepted_packets_total", 12.0),
    ];
    for (name, want) in expected {
        let lines = samples(&text, name);
        assert_eq!(lines.len(), 1, "{name} in:\n{text}");
        assert_eq!(value(lines[0]), want, "{}", lines[0]);
    }
    let labelled = [
        r#"kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2"#,
        r#"kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv6"} 1"#,
        r#"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1"#,
        r#"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv6"} 1"#,
        r#"kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1"#,
        r#"kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1700000000.5"#,
        r#"kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"} 1700000001.0"#,
        r#"kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv6"} 1700000002.0"#,
        r#"kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"} 1.5"#,
        r#"kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"} 1"#,
        r#"kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family="IPv4"} 2"#,
        r#"kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"} 42"#,
        r#"kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="filter"} 5"#,
        r#"kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv6",table="nat"} 40"#,
        r#"kubeproxy_sync_proxy_rules_iptables_last{ip_family="IPv4",table="nat"} 4"#,
        r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"} 1"#,
        r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv6",traffic_policy="external"} 0"#,
        r#"kubeproxy_proxy_healthz_total{code="200"} 1"#,
        r#"kubeproxy_proxy_livez_total{code="503"} 1"#,
        r#"kubeproxy_conntrack_reconciler_sync_duration_seconds_count{ip_family="IPv6"} 1"#,
        r#"kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="IPv4"} 9"#,
        r#"kubenat_restore_bytes_count{kind="full"} 1"#,
        r#"kubenat_restore_bytes_count{kind="partial"} 1"#,
        r#"kubenat_startup_checks_failed{check="br_netfilter"} 1"#,
    ];
    for line in labelled {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("# EOF"), "Prometheus text format by default");
}

#[test]
fn types_are_kube_proxys() {
    let text = scrape_populated();
    let types = [
        ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
        ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
        ("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "counter"),
        ("kubeproxy_sync_proxy_rules_iptables_total", "gauge"),
        ("kubeproxy_sync_proxy_rules_no_local_endpoints_total", "gauge"),
        ("kubeproxy_conntrack_reconciler_sync_duration_seconds", "histogram"),
        ("kubeproxy_conntrack_reconciler_deleted_entries_total", "counter"),
        ("kubeproxy_iptables_ct_state_invalid_dropped_packets_total", "counter"),
        ("kubeproxy_iptables_localhost_nodeports_accepted_packets_total", "counter"),
        ("kubernetes_build_info", "gauge"),
    ];
    for (name, kind) in types {
        let line = format!("# TYPE {name} {kind}");
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains(
        "# HELP kubeproxy_iptables_ct_state_invalid_dropped_packets_total packets dropped by iptables to work around conntrack problems\n"
    ));
}

#[test]
fn build_info_has_kubernetes_labels() {
    let text = scrape_populated();
    let lines = samples(&text, "kubernetes_build_info");
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    let version = format!(r#"git_version="v{}""#, env!("CARGO_PKG_VERSION"));
    let labels = ["build_date=", "compiler=\"rustc\"", "git_commit=", "git_tree_state=", &version, "go_version="];
    for label in labels.iter().chain(&["major=", "minor=", "platform=\"linux/"]) {
        assert!(line.contains(label), "{label} in {line}");
    }
    assert_eq!(value(line), 1.0);
}

#[test]
fn no_doubled_or_missing_total_suffix() {
    let text = scrape_populated();
    assert!(!text.contains("_total_total"), "{text}");
    // Gauges named `_total` by kube-proxy keep their exact name and type.
    assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_iptables_total gauge\n"), "{text}");
    assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge\n"), "{text}");
    assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_total counter\n"), "{text}");
    // Every sample belongs to kube-proxy's namespace or ours.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(["kubeproxy_", "kubenat_", "kubernetes_build_info"].iter().any(|p| line.starts_with(p)), "{line}");
    }
}

#[test]
fn sync_duration_buckets_are_kube_proxys() {
    let text = scrape_populated();
    let buckets: Vec<&str> = samples(&text, "kubeproxy_sync_proxy_rules_duration_seconds_bucket")
        .into_iter()
        .filter(|l| l.contains("IPv4"))
        .collect();
    assert_eq!(buckets.len(), 16, "15 buckets + +Inf: {buckets:#?}");
    // prometheus-client writes `le` first; label order carries no meaning.
    assert!(buckets[0].contains(r#"le="0.001""#), "{buckets:#?}");
    assert!(buckets[14].contains(r#"le="16.384""#), "{buckets:#?}");
    assert!(buckets[15].contains(r#"le="+Inf""#));
    // 0.003 s lands in le=0.004 (index 2), not in le=0.002.
    assert_eq!(value(buckets[1]), 0.0);
    assert_eq!(value(buckets[2]), 1.0);
}

#[test]
fn network_programming_buckets_are_kube_proxys() {
    let bounds: Vec<f64> = network_programming_buckets().collect();
    assert_eq!(bounds.len(), 1 + 2 + 59 + 12 + 7);
    assert_eq!(&bounds[..5], &[0.0, 0.25, 0.5, 1.0, 2.0]);
    assert_eq!(bounds[61], 59.0);
    assert_eq!(bounds[62], 60.0);
    assert_eq!(bounds[73], 115.0);
    assert_eq!(bounds[74], 120.0);
    assert_eq!(bounds.last(), Some(&300.0));
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    let text = scrape_populated();
    assert_eq!(samples(&text, "kubeproxy_network_programming_duration_seconds_bucket").len(), bounds.len() + 1);
}

#[test]
fn clones_share_the_same_metrics() {
    let (m, registry) = Metrics::new();
    let other = m.clone();
    other.inc_service_changes(5);
    m.inc_service_changes(1);
    let text = encode(&registry);
    assert_eq!(value(samples(&text, "kubeproxy_sync_proxy_rules_service_changes_total")[0]), 6.0);
}
