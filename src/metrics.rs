//! Prometheus metrics with kube-proxy's names, types and labels (`kubeproxy_*`,
//! `kubernetes_build_info`) plus a few of our own (`kubenat_*`); typed setters for the syncer
//! and the health servers. Registration is `register`, the text formats `exposition`; serving
//! them is `health`.
//!
//! Names, help texts, labels and buckets follow kube-proxy 1.33+ (`pkg/proxy/metrics`): every
//! per-proxier metric carries `ip_family` (`IPv4`/`IPv6`). Counters are registered without
//! `_total` and prometheus-client appends it to the samples. kube-proxy's
//! `…_iptables_total` and `…_no_local_endpoints_total` are gauges despite the suffix, and stay
//! gauges here.

pub mod exposition;
mod register;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::model::IpFamily;
use crate::rules::ruleset::TableName;

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

/// A label set, names in alphabetical order (as kube-proxy's Go client writes them).
type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// kube-proxy's sync duration buckets: 1 ms doubling, 15 buckets (up to ~16 s). kube-proxy
/// uses the same for the conntrack reconciler.
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

fn network_programming_histogram() -> Histogram {
    Histogram::new(network_programming_buckets())
}

/// Restore input sizes: 1 KiB to 256 MiB, ×4.
fn restore_bytes_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 10))
}

#[derive(Debug)]
struct Inner {
    sync_duration: HistogramFamily,
    sync_full_duration: HistogramFamily,
    sync_partial_duration: HistogramFamily,
    last_sync: Family<Labels, FloatGauge>,
    last_queued: Family<Labels, FloatGauge>,
    network_programming: HistogramFamily,
    restore_failures: Family<Labels, Counter>,
    partial_restore_failures: Family<Labels, Counter>,
    endpoint_changes: Counter,
    service_changes: Counter,
    endpoint_changes_pending: Gauge,
    service_changes_pending: Gauge,
    rules_total: Family<Labels, Gauge>,
    rules_last: Family<Labels, Gauge>,
    no_local_endpoints: Family<Labels, Gauge>,
    healthz: Family<Labels, Counter>,
    livez: Family<Labels, Counter>,
    conntrack_reconcile_duration: HistogramFamily,
    conntrack_deleted_entries: Family<Labels, Counter>,
    ct_state_invalid_dropped: Counter,
    localhost_nodeports_accepted: Counter,
    build_info: Family<Labels, Gauge>,
    restore_bytes: HistogramFamily,
    startup_checks_failed: Family<Labels, Gauge>,
    userspace_port_conflicts: Gauge,
}

/// Handle to every metric; cheap to clone (one `Arc`), safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

fn histograms(constructor: fn() -> Histogram) -> HistogramFamily {
    Family::new_with_constructor(constructor)
}

impl Metrics {
    /// Creates the metrics and a registry holding all of them (serve it with
    /// `health::serve_metrics`). `kubernetes_build_info` is set here, once.
    pub fn new() -> (Metrics, Registry) {
        let inner = Inner {
            sync_duration: histograms(sync_buckets),
            sync_full_duration: histograms(sync_buckets),
            sync_partial_duration: histograms(sync_buckets),
            last_sync: Family::default(),
            last_queued: Family::default(),
            network_programming: histograms(network_programming_histogram),
            restore_failures: Family::default(),
            partial_restore_failures: Family::default(),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            service_changes_pending: Gauge::default(),
            rules_total: Family::default(),
            rules_last: Family::default(),
            no_local_endpoints: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
            conntrack_reconcile_duration: histograms(sync_buckets),
            conntrack_deleted_entries: Family::default(),
            ct_state_invalid_dropped: Counter::default(),
            localhost_nodeports_accepted: Counter::default(),
            build_info: Family::default(),
            restore_bytes: histograms(restore_bytes_histogram),
            startup_checks_failed: Family::default(),
            userspace_port_conflicts: Gauge::default(),
        };
        inner.build_info.get_or_create(&register::build_info_labels()).set(1);
        let mut registry = Registry::default();
        register::register(&mut registry, &inner);
        (Metrics { inner: Arc::new(inner) }, registry)
    }

    /// One sync of `family` took `seconds`: observed in the overall and the full/partial
    /// histogram.
    pub fn observe_sync(&self, family: IpFamily, kind: SyncKind, seconds: f64) {
        let labels = family_label(family);
        self.inner.sync_duration.get_or_create(&labels).observe(seconds);
        let by_kind = match kind {
            SyncKind::Full => &self.inner.sync_full_duration,
            SyncKind::Partial => &self.inner.sync_partial_duration,
        };
        by_kind.get_or_create(&labels).observe(seconds);
    }

    /// Time (Unix seconds) of `family`'s last successful sync.
    pub fn set_last_sync(&self, family: IpFamily, unix_seconds: f64) {
        self.inner.last_sync.get_or_create(&family_label(family)).set(unix_seconds);
    }

    /// Time (Unix seconds) a sync of `family` was last queued (a change arrived).
    pub fn set_last_queued(&self, family: IpFamily, unix_seconds: f64) {
        self.inner.last_queued.get_or_create(&family_label(family)).set(unix_seconds);
    }

    /// EndpointSlice change trigger time → `family`'s rules installed, in seconds.
    pub fn observe_network_programming(&self, family: IpFamily, seconds: f64) {
        self.inner.network_programming.get_or_create(&family_label(family)).observe(seconds);
    }

    /// A restore of `family` failed. As kube-proxy: a failed partial restore counts only in
    /// `…_partial_restore_failures_total` (it falls back to a full one), a failed full restore
    /// only in `…_restore_failures_total`.
    pub fn inc_restore_failure(&self, family: IpFamily, kind: SyncKind) {
        let counters = match kind {
            SyncKind::Full => &self.inner.restore_failures,
            SyncKind::Partial => &self.inner.partial_restore_failures,
        };
        counters.get_or_create(&family_label(family)).inc();
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

    /// Rules kubenat owns in `family`'s `table`
    /// (`kubeproxy_sync_proxy_rules_iptables_total{ip_family,table}`).
    pub fn set_rules_total(&self, family: IpFamily, table: TableName, n: usize) {
        self.inner.rules_total.get_or_create(&table_labels(family, table)).set(to_i64(n));
    }

    /// Rules written to `family`'s `table` by the last sync
    /// (`kubeproxy_sync_proxy_rules_iptables_last{ip_family,table}`).
    pub fn set_rules_last(&self, family: IpFamily, table: TableName, n: usize) {
        self.inner.rules_last.get_or_create(&table_labels(family, table)).set(to_i64(n));
    }

    /// Services with a Local `policy` and no local `family` endpoints, as of the last sync (a
    /// gauge, set each sync, like kube-proxy's).
    pub fn set_no_local_endpoints(&self, family: IpFamily, policy: PolicyKind, n: usize) {
        let labels =
            vec![("ip_family", family.api_name().to_string()), ("traffic_policy", policy.as_str().to_string())];
        self.inner.no_local_endpoints.get_or_create(&labels).set(to_i64(n));
    }

    /// A `/healthz` answer with HTTP status `code` (`kubeproxy_proxy_healthz_total{code}`).
    pub fn inc_healthz(&self, code: u16) {
        self.inner.healthz.get_or_create(&label("code", &code.to_string())).inc();
    }

    /// A `/livez` answer with HTTP status `code` (`kubeproxy_proxy_livez_total{code}`).
    pub fn inc_livez(&self, code: u16) {
        self.inner.livez.get_or_create(&label("code", &code.to_string())).inc();
    }

    /// One conntrack reconciliation of `family` took `seconds`
    /// (`kubeproxy_conntrack_reconciler_sync_duration_seconds{ip_family}`).
    pub fn observe_conntrack_reconcile(&self, family: IpFamily, seconds: f64) {
        self.inner.conntrack_reconcile_duration.get_or_create(&family_label(family)).observe(seconds);
    }

    /// The conntrack reconciler deleted `n` flows of `family`
    /// (`kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family}`).
    pub fn inc_conntrack_deleted_entries(&self, family: IpFamily, n: u64) {
        self.inner.conntrack_deleted_entries.get_or_create(&family_label(family)).inc_by(n);
    }

    /// The kernel's packet count of the nfacct object behind the rule that drops packets
    /// conntrack marked INVALID (`kubeproxy_iptables_ct_state_invalid_dropped_packets_total`).
    /// The kernel counts; this only publishes its current value.
    pub fn set_ct_state_invalid_dropped_packets(&self, packets: u64) {
        self.inner.ct_state_invalid_dropped.inner().store(packets, Ordering::Relaxed);
    }

    /// The kernel's packet count of the nfacct object behind the rule accepting NodePort
    /// traffic on loopback (`kubeproxy_iptables_localhost_nodeports_accepted_packets_total`).
    pub fn set_localhost_nodeports_accepted_packets(&self, packets: u64) {
        self.inner.localhost_nodeports_accepted.inner().store(packets, Ordering::Relaxed);
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

fn label(key: &'static str, value: &str) -> Labels {
    vec![(key, value.to_string())]
}

fn family_label(family: IpFamily) -> Labels {
    label("ip_family", family.api_name())
}

fn table_labels(family: IpFamily, table: TableName) -> Labels {
    vec![("ip_family", family.api_name().to_string()), ("table", table.as_str().to_string())]
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The registry in Prometheus text format (what `/metrics` serves by default).
pub fn encode(registry: &Registry) -> String {
    exposition::encode(registry, exposition::Format::Text)
}

#[cfg(test)]
mod tests;
