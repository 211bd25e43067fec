//! Proxy health as kube-proxy's ProxyHealthServer reports it: per-IP-family staleness (a change
//! queued and not applied within `health_timeout`) plus node eligibility. The HTTP servers
//! (`/healthz` + `/livez`, and the metrics port) are `server`; the per-service
//! healthCheckNodePort servers are `healthcheck`; the metrics themselves are `metrics`;
//! `services` is the daemon's own view of what it programmed (`/debug/services`).
//!
//! Deliberate difference: kube-proxy ignores a family that has never completed a sync, so a
//! proxy whose first sync never succeeds stays healthy forever; here a change pending longer
//! than the timeout is late whether or not the family ever synced.

mod server;
pub mod services;

pub use server::{serve_healthz, serve_metrics, MetricsServer, ScrapeHook};
pub use services::ServicesView;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::metrics::Metrics;
use crate::model::IpFamily;

/// Errors of the health and metrics servers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP server stopped with an I/O error (accept loop). Not retryable in place: the
    /// caller decides whether to bind again.
    #[error("{server} server failed")]
    Serve {
        /// `healthz` or `metrics`.
        server: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where "now" comes from (the system clock, or a test's).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What the syncer reported for one family.
#[derive(Debug, Clone, Copy, Default)]
struct FamilyTimes {
    last_updated: Option<SystemTime>,
    oldest_pending: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
struct Times {
    families: BTreeMap<IpFamily, FamilyTimes>,
    node_eligible: bool,
}

/// Shared proxy health: the syncer reports `queued`/`updated` per family, the Node watch
/// reports eligibility, the servers read it. Cheap to clone (`Arc`s inside).
#[derive(Clone)]
pub struct HealthState {
    times: Arc<Mutex<Times>>,
    timeout: Duration,
    clock: Clock,
    metrics: Option<Metrics>,
}

impl fmt::Debug for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthState").field("times", &self.times()).field("timeout", &self.timeout).finish()
    }
}

/// One family's health at one instant (`status.IPv4` / `status.IPv6` in the JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyHealth {
    /// The family's last successful sync (`None` before its first one).
    pub last_updated: Option<SystemTime>,
    /// No change has been pending for this family for `health_timeout` or longer.
    pub healthy: bool,
}

/// The proxy's health at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHealth {
    /// Every family is healthy (node eligibility not included, as kube-proxy's `IsHealthy`).
    pub healthy: bool,
    /// The most recent successful sync of any family (`None` before the first one).
    pub last_updated: Option<SystemTime>,
    /// The instant the verdict is for.
    pub current_time: SystemTime,
    /// Families that have synced or have a change pending.
    pub families: BTreeMap<IpFamily, FamilyHealth>,
    /// The node is not being deleted or drained by the cluster autoscaler.
    pub node_eligible: bool,
}

impl HealthState {
    /// Healthy-at-start state with the system clock; `health_timeout` is kube-proxy's
    /// `2 × --iptables-sync-period`. The node counts as eligible until its Node says otherwise.
    pub fn new(health_timeout: Duration) -> Self {
        HealthState {
            times: Arc::new(Mutex::new(Times { families: BTreeMap::new(), node_eligible: true })),
            timeout: health_timeout,
            clock: Arc::new(SystemTime::now),
            metrics: None,
        }
    }

    /// Uses `clock` for the servers' "now" (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Counts `/healthz` and `/livez` answers in `kubeproxy_proxy_{healthz,livez}_total{code}`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn times(&self) -> Times {
        self.times.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Times)) {
        f(&mut self.times.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The clock's current time.
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// A change arrived that `family`'s rules must follow. Only the oldest pending change of a
    /// family counts.
    pub fn queued(&self, family: IpFamily, now: SystemTime) {
        self.update(|t| {
            t.families.entry(family).or_default().oldest_pending.get_or_insert(now);
        });
    }

    /// `family`'s rules were synced: nothing is pending for it any more.
    pub fn updated(&self, family: IpFamily, now: SystemTime) {
        self.update(|t| {
            let times = t.families.entry(family).or_default();
            times.oldest_pending = None;
            times.last_updated = Some(now);
        });
    }

    /// Whether the node may receive load-balancer traffic (false while its Node is being
    /// deleted or tainted `ToBeDeletedByClusterAutoscaler`). Affects `/healthz` only.
    pub fn set_node_eligible(&self, eligible: bool) {
        self.update(|t| {
            if t.node_eligible != eligible {
                tracing::info!(eligible, "node eligibility changed");
            }
            t.node_eligible = eligible;
        });
    }

    /// The verdict at `now`.
    pub fn health(&self, now: SystemTime) -> ProxyHealth {
        let t = self.times();
        let families: BTreeMap<IpFamily, FamilyHealth> = t
            .families
            .iter()
            .map(|(&family, times)| {
                let healthy = match times.oldest_pending {
                    None => true,
                    // A pending time in the future (clock stepped back) is not late.
                    Some(queued) => now.duration_since(queued).map_or(true, |age| age < self.timeout),
                };
                (family, FamilyHealth { last_updated: times.last_updated, healthy })
            })
            .collect();
        ProxyHealth {
            healthy: families.values().all(|f| f.healthy),
            last_updated: families.values().filter_map(|f| f.last_updated).max(),
            current_time: now,
            families,
            node_eligible: t.node_eligible,
        }
    }

    /// Proxy health (every family, node eligibility ignored) at the clock's current time.
    pub fn is_healthy(&self) -> bool {
        self.health(self.now()).healthy
    }
}

#[cfg(test)]
mod tests;
