//! Prometheus metrics with kube-proxy's names (`kubeproxy_*`) plus a few of our own
//! (`kubenat_*`); typed setters for the syncer and the health servers. Serving them is `health`.
//!
//! Names, types, help texts and buckets follow kube-proxy's `pkg/proxy/metrics`. The
//! exposition is OpenMetrics text: counters are registered without `_total` and
//! prometheus-client appends it, so every sample carries exactly kube-proxy's series name.
//! kube-proxy's `…_iptables_total` and `…_no_local_endpoints_total` are gauges despite the
//! suffix, and stay gauges here.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::iptables::ruleset::TableName;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which kind of sync (or restore) a measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncKind {
    /// Every chain rewritten (startup, after a failure, periodic resync).
    Full,
    /// Only changed service chains rewritten.
    Partial,
}

impl SyncKind {
    /// `full` / `partial`, the `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        }
    }
}

/// The `traffic_policy` label of `kubeproxy_sync_proxy_rules_no_local_endpoints_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// internalTrafficPolicy=Local (`internal`).
    Internal,
    /// externalTrafficPolicy=Local (`external`).
    External,
}

impl PolicyKind {
    fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Internal => "internal",
            PolicyKind::External => "external",
        }
    }
}

/// A one-label label set, e.g. `[("table", "nat")]`.
type Label = [(&'static str, String); 1];
type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

/// kube-proxy's sync duration buckets: 1 ms doubling, 15 buckets (up to ~16 s).
fn sync_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// kube-proxy's network programming buckets: 0 (kube-proxy's merge helper starts with a
/// zero bucket), 0.25 s, 0.5 s, 1..59 s by 1 s, 60..115 s by 5 s, 2..5 min by 30 s.
fn network_programming_buckets() -> impl Iterator<Item = f64> {
    std::iter::once(0.0)
        .chain(linear_buckets(0.25, 0.25, 2))
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
}

/// Restore input sizes: 1 KiB to 256 MiB, ×4.
fn restore_bytes_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 10))
}

#[derive(Debug)]
struct Inner {
    sync_duration: Histogram,
    sync_full_duration: Histogram,
    sync_partial_duration: Histogram,
    last_sync: FloatGauge,
    last_queued: FloatGauge,
    network_programming: Histogram,
    restore_failures: Counter,
    partial_restore_failures: Counter,
    endpoint_changes: Counter,
    service_changes: Counter,
    endpoint_changes_pending: Gauge,
    service_changes_pending: Gauge,
    rules_total: Family<Label, Gauge>,
    rules_last: Family<Label, Gauge>,
    no_local_endpoints: Family<Label, Gauge>,
    healthz: Family<Label, Counter>,
    livez: Family<Label, Counter>,
    restore_bytes: HistogramFamily,
    startup_checks_failed: Family<Label, Gauge>,
    userspace_port_conflicts: Gauge,
}

/// Handle to every metric; cheap to clone (one `Arc`), safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Metrics {
    /// Creates the metrics and a registry holding all of them (serve it with
    /// `health::serve_metrics`).
    pub fn new() -> (Metrics, Registry) {
        let inner = Inner {
            sync_duration: sync_buckets(),
            sync_full_duration: sync_buckets(),
            sync_partial_duration: sync_buckets(),
            last_sync: FloatGauge::default(),
            last_queued: FloatGauge::default(),
            network_programming: Histogram::new(network_programming_buckets()),
            restore_failures: Counter::default(),
            partial_restore_failures: Counter::default(),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            service_changes_pending: Gauge::default(),
            rules_total: Family::default(),
            rules_last: Family::default(),
            no_local_endpoints: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
            restore_bytes: Family::new_with_constructor(restore_bytes_histogram),
            startup_checks_failed: Family::default(),
            userspace_port_conflicts: Gauge::default(),
        };
        let mut registry = Registry::default();
        register(&mut registry, &inner);
        (Metrics { inner: Arc::new(inner) }, registry)
    }

    /// One sync took `seconds`: observed in the overall and the full/partial histogram.
    pub fn observe_sync(&self, kind: SyncKind, seconds: f64) {
        self.inner.sync_duration.observe(seconds);
        match kind {
            SyncKind::Full => self.inner.sync_full_duration.observe(seconds),
            SyncKind::Partial => self.inner.sync_partial_duration.observe(seconds),
        }
    }

    /// Time (Unix seconds) of the last successful sync.
    pub fn set_last_sync(&self, unix_seconds: f64) {
        self.inner.last_sync.set(unix_seconds);
    }

    /// Time (Unix seconds) a sync was last queued (a change arrived).
    pub fn set_last_queued(&self, unix_seconds: f64) {
        self.inner.last_queued.set(unix_seconds);
    }

    /// EndpointSlice change trigger time → rules installed, in seconds.
    pub fn observe_network_programming(&self, seconds: f64) {
        self.inner.network_programming.observe(seconds);
    }

    /// A restore failed. As kube-proxy: a failed partial restore counts only in
    /// `…_partial_restore_failures_total` (it falls back to a full one), a failed full restore
    /// only in `…_restore_failures_total`.
    pub fn inc_restore_failure(&self, kind: SyncKind) {
        match kind {
            SyncKind::Full => self.inner.restore_failures.inc(),
            SyncKind::Partial => self.inner.partial_restore_failures.inc(),
        };
    }

    /// `n` EndpointSlice changes were seen.
    pub fn inc_endpoint_changes(&self, n: u64) {
        self.inner.endpoint_changes.inc_by(n);
    }

    /// `n` Service changes were seen.
    pub fn inc_service_changes(&self, n: u64) {
        self.inner.service_changes.inc_by(n);
    }

    /// EndpointSlice changes not yet synced.
    pub fn set_endpoint_changes_pending(&self, n: usize) {
        self.inner.endpoint_changes_pending.set(to_i64(n));
    }

    /// Service changes not yet synced.
    pub fn set_service_changes_pending(&self, n: usize) {
        self.inner.service_changes_pending.set(to_i64(n));
    }

    /// Rules kubenat owns in `table` (`kubeproxy_sync_proxy_rules_iptables_total{table}`).
    pub fn set_rules_total(&self, table: TableName, n: usize) {
        self.inner.rules_total.get_or_create(&label("table", table.as_str())).set(to_i64(n));
    }

    /// Rules written to `table` by the last sync (`kubeproxy_sync_proxy_rules_iptables_last`).
    pub fn set_rules_last(&self, table: TableName, n: usize) {
        self.inner.rules_last.get_or_create(&label("table", table.as_str())).set(to_i64(n));
    }

    /// Services with a Local `policy` and no local endpoints, as of the last sync (a gauge,
    /// set each sync, like kube-proxy's).
    pub fn set_no_local_endpoints(&self, policy: PolicyKind, n: usize) {
        self.inner.no_local_endpoints.get_or_create(&label("traffic_policy", policy.as_str())).set(to_i64(n));
    }

    /// A `/healthz` answer with HTTP status `code` (`kubeproxy_proxy_healthz_total{code}`).
    pub fn inc_healthz(&self, code: u16) {
        self.inner.healthz.get_or_create(&label("code", &code.to_string())).inc();
    }

    /// A `/livez` answer with HTTP status `code` (`kubeproxy_proxy_livez_total{code}`).
    pub fn inc_livez(&self, code: u16) {
        self.inner.livez.get_or_create(&label("code", &code.to_string())).inc();
    }

    /// Size of one `iptables-restore` input (`kubenat_restore_bytes{kind}`).
    pub fn observe_restore_bytes(&self, kind: SyncKind, bytes: usize) {
        self.inner.restore_bytes.get_or_create(&label("kind", kind.as_str())).observe(bytes as f64);
    }

    /// Records whether the startup requirement `check` (e.g. `br_netfilter`) failed
    /// (`kubenat_startup_checks_failed{check}` is 1 when it did, 0 when it passed).
    pub fn set_startup_check_failed(&self, check: &str, failed: bool) {
        self.inner.startup_checks_failed.get_or_create(&label("check", check)).set(i64::from(failed));
    }

    /// Userspace mode: ports Services claim (NodePorts, local external/LB IPs) that another
    /// socket holds, as of the last sync (`kubenat_userspace_port_conflicts`).
    pub fn set_userspace_port_conflicts(&self, n: usize) {
        self.inner.userspace_port_conflicts.set(to_i64(n));
    }
}

fn label(key: &'static str, value: &str) -> Label {
    [(key, value.to_string())]
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn register(r: &mut Registry, m: &Inner) {
    let kp = |name: &str| format!("kubeproxy_{name}");
    r.register(kp("sync_proxy_rules_duration_seconds"), "SyncProxyRules latency in seconds", m.sync_duration.clone());
    r.register(
        kp("sync_full_proxy_rules_duration_seconds"),
        "SyncProxyRules latency in seconds for full resyncs",
        m.sync_full_duration.clone(),
    );
    r.register(
        kp("sync_partial_proxy_rules_duration_seconds"),
        "SyncProxyRules latency in seconds for partial resyncs",
        m.sync_partial_duration.clone(),
    );
    r.register(
        kp("sync_proxy_rules_last_timestamp_seconds"),
        "The last time proxy rules were successfully synced",
        m.last_sync.clone(),
    );
    r.register(
        kp("sync_proxy_rules_last_queued_timestamp_seconds"),
        "The last time a sync of proxy rules was queued",
        m.last_queued.clone(),
    );
    r.register(
        kp("network_programming_duration_seconds"),
        "In Cluster Network Programming Latency in seconds",
        m.network_programming.clone(),
    );
    // Counters: prometheus-client appends `_total`.
    r.register(
        kp("sync_proxy_rules_iptables_restore_failures"),
        "Cumulative proxy iptables restore failures",
        m.restore_failures.clone(),
    );
    r.register(
        kp("sync_proxy_rules_iptables_partial_restore_failures"),
        "Cumulative proxy iptables partial restore failures",
        m.partial_restore_failures.clone(),
    );
    r.register(
        kp("sync_proxy_rules_endpoint_changes"),
        "Cumulative proxy rules Endpoint changes",
        m.endpoint_changes.clone(),
    );
    r.register(
        kp("sync_proxy_rules_service_changes"),
        "Cumulative proxy rules Service changes",
        m.service_changes.clone(),
    );
    r.register(kp("proxy_healthz"), "Cumulative proxy healthz HTTP status", m.healthz.clone());
    r.register(kp("proxy_livez"), "Cumulative proxy livez HTTP status", m.livez.clone());
    r.register(
        kp("sync_proxy_rules_endpoint_changes_pending"),
        "Pending proxy rules Endpoint changes",
        m.endpoint_changes_pending.clone(),
    );
    r.register(
        kp("sync_proxy_rules_service_changes_pending"),
        "Pending proxy rules Service changes",
        m.service_changes_pending.clone(),
    );
    r.register(
        kp("sync_proxy_rules_iptables_total"),
        "Total number of iptables rules owned by kube-proxy",
        m.rules_total.clone(),
    );
    r.register(
        kp("sync_proxy_rules_iptables_last"),
        "Number of iptables rules written by kube-proxy in last sync",
        m.rules_last.clone(),
    );
    r.register(
        kp("sync_proxy_rules_no_local_endpoints_total"),
        "Number of services with a Local traffic policy and no endpoints",
        m.no_local_endpoints.clone(),
    );
    r.register("kubenat_restore_bytes", "Size of iptables-restore inputs in bytes", m.restore_bytes.clone());
    r.register(
        "kubenat_startup_checks_failed",
        "Startup requirement checks that failed (1) or passed (0)",
        m.startup_checks_failed.clone(),
    );
    r.register(
        "kubenat_userspace_port_conflicts",
        "Userspace mode: ports claimed by Services that another socket holds",
        m.userspace_port_conflicts.clone(),
    );
}

/// The registry in OpenMetrics text (serve with [`CONTENT_TYPE`]).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, registry) {
        // Writing into a String cannot fail; keep whatever was written.
        tracing::error!(error = %err, "encoding metrics failed");
    }
    out
}

#[cfg(test)]
mod tests;
