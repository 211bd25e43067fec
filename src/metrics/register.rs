//! Registers every metric under its kube-proxy (or kubenat) name and help text, and builds
//! `kubernetes_build_info`'s labels.

use prometheus_client::registry::{Metric, Registry};

use super::{Inner, Labels};

/// Help text escaped for OpenMetrics (`\\`, `\n`, `\"`); the text encoder turns `\"` back
/// into `"` (see `exposition`). prometheus-client writes help texts as given.
fn escape_help(help: &str) -> String {
    help.replace('\\', r"\\").replace('\n', r"\n").replace('"', "\\\"")
}

fn add(r: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    r.register(name, escape_help(help), metric);
}

/// `kubernetes_build_info`'s labels, alphabetical. kubenat fills kube-proxy's label set with
/// its own build: `git_version` is `v` + the crate version, `compiler` is `rustc`,
/// `go_version` carries the rustc version when the build provides `KUBENAT_RUSTC_VERSION`
/// (empty otherwise), and the git and date fields come from `KUBENAT_GIT_COMMIT`,
/// `KUBENAT_GIT_TREE_STATE` and `KUBENAT_BUILD_DATE` when set at build time.
pub(super) fn build_info_labels() -> Labels {
    let platform = format!("{}/{}", std::env::consts::OS, go_arch(std::env::consts::ARCH));
    vec![
        ("build_date", option_env!("KUBENAT_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z").to_string()),
        ("compiler", "rustc".to_string()),
        ("git_commit", option_env!("KUBENAT_GIT_COMMIT").unwrap_or_default().to_string()),
        ("git_tree_state", option_env!("KUBENAT_GIT_TREE_STATE").unwrap_or_default().to_string()),
        ("git_version", format!("v{}", env!("CARGO_PKG_VERSION"))),
        ("go_version", option_env!("KUBENAT_RUSTC_VERSION").unwrap_or_default().to_string()),
        ("major", env!("CARGO_PKG_VERSION_MAJOR").to_string()),
        ("minor", env!("CARGO_PKG_VERSION_MINOR").to_string()),
        ("platform", platform),
    ]
}

/// Go's name for a CPU architecture (`platform` is `GOOS/GOARCH` in Kubernetes).
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub(super) fn register(r: &mut Registry, m: &Inner) {
    register_sync(r, m);
    // Counters are registered without `_total`: prometheus-client appends it.
    add(r, "kubeproxy_proxy_healthz", "Cumulative proxy healthz HTTP status", m.healthz.clone());
    add(r, "kubeproxy_proxy_livez", "Cumulative proxy livez HTTP status", m.livez.clone());
    add(
        r,
        "kubeproxy_conntrack_reconciler_sync_duration_seconds",
        "ReconcileConntrackFlowsLatency latency in seconds",
        m.conntrack_reconcile_duration.clone(),
    );
    add(
        r,
        "kubeproxy_conntrack_reconciler_deleted_entries",
        "Cumulative conntrack flows deleted by conntrack reconciler",
        m.conntrack_deleted_entries.clone(),
    );
    add(
        r,
        "kubeproxy_iptables_ct_state_invalid_dropped_packets",
        "packets dropped by iptables to work around conntrack problems",
        m.ct_state_invalid_dropped.clone(),
    );
    add(
        r,
        "kubeproxy_iptables_localhost_nodeports_accepted_packets",
        "Number of packets accepted on nodeports of loopback interface",
        m.localhost_nodeports_accepted.clone(),
    );
    add(
        r,
        "kubernetes_build_info",
        "A metric with a constant '1' value labeled by major, minor, git version, git commit, git tree state, \
         build date, Go version, and compiler from which Kubernetes was built, and platform on which it is running.",
        m.build_info.clone(),
    );
    add(r, "kubenat_restore_bytes", "Size of iptables-restore inputs in bytes", m.restore_bytes.clone());
    add(
        r,
        "kubenat_startup_checks_failed",
        "Startup requirement checks that failed (1) or passed (0)",
        m.startup_checks_failed.clone(),
    );
    add(
        r,
        "kubenat_userspace_port_conflicts",
        "Userspace mode: ports claimed by Services that another socket holds",
        m.userspace_port_conflicts.clone(),
    );
}

/// The `kubeproxy_sync_*` and `kubeproxy_network_programming_*` metrics.
fn register_sync(r: &mut Registry, m: &Inner) {
    let kp = |name: &str| format!("kubeproxy_{name}");
    add(r, &kp("sync_proxy_rules_duration_seconds"), "SyncProxyRules latency in seconds", m.sync_duration.clone());
    add(
        r,
        &kp("sync_full_proxy_rules_duration_seconds"),
        "SyncProxyRules latency in seconds for full resyncs",
        m.sync_full_duration.clone(),
    );
    add(
        r,
        &kp("sync_partial_proxy_rules_duration_seconds"),
        "SyncProxyRules latency in seconds for partial resyncs",
        m.sync_partial_duration.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_last_timestamp_seconds"),
        "The last time proxy rules were successfully synced",
        m.last_sync.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_last_queued_timestamp_seconds"),
        "The last time a sync of proxy rules was queued",
        m.last_queued.clone(),
    );
    add(
        r,
        &kp("network_programming_duration_seconds"),
        "In Cluster Network Programming Latency in seconds",
        m.network_programming.clone(),
    );
    // Counters are registered without `_total`: prometheus-client appends it.
    add(
        r,
        &kp("sync_proxy_rules_iptables_restore_failures"),
        "Cumulative proxy iptables restore failures",
        m.restore_failures.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_iptables_partial_restore_failures"),
        "Cumulative proxy iptables partial restore failures",
        m.partial_restore_failures.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_endpoint_changes"),
        "Cumulative proxy rules Endpoint changes",
        m.endpoint_changes.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_service_changes"),
        "Cumulative proxy rules Service changes",
        m.service_changes.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_endpoint_changes_pending"),
        "Pending proxy rules Endpoint changes",
        m.endpoint_changes_pending.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_service_changes_pending"),
        "Pending proxy rules Service changes",
        m.service_changes_pending.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_iptables_total"),
        "Total number of iptables rules owned by kube-proxy",
        m.rules_total.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_iptables_last"),
        "Number of iptables rules written by kube-proxy in last sync",
        m.rules_last.clone(),
    );
    add(
        r,
        &kp("sync_proxy_rules_no_local_endpoints_total"),
        "Number of services with a Local traffic policy and no endpoints",
        m.no_local_endpoints.clone(),
    );
}
