//! The sync loop, level-triggered: snapshot the sources → `ClusterState` → render → plan →
//! apply, rate-limited by the min sync period and forced (as a full sync) every sync period.
//!
//! A sync is *partial* when the kernel is known to hold what we last applied: only the chains
//! whose rules changed are written (nothing at all when nothing changed). It is *full* at
//! start, after any failure, on a new flannel lease, whenever the canary chains show that
//! someone flushed the tables, and when the last full sync is [`FULL_SYNC_PERIOD`] old —
//! except in kube-proxy's large-cluster mode, which skips that hourly one and deletes stale
//! service chains at most once a sync period: the current rules are read back
//! (`iptables-save`), missing jumps are inserted and stale chains removed. The last good rules
//! always stay in place when a restore fails.

mod conntrack_sync;
mod error;
mod probes;
mod run;
mod view;

pub use error::{Error, Result};
pub use run::SyncLoop;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::apply::exec::Iptables;
use crate::apply::{Applied, Applier, History, Mode, StaleChains};
use crate::config::NodeOptions;
use crate::conntrack::{Conntrack, Frontends};
use crate::flannel::subnet_env::SubnetEnv;
use crate::health::HealthState;
use crate::host::SyncProbes;
use crate::k8s::watch::{Changes, Snapshot};
use crate::metrics::{Metrics, PolicyKind, SyncKind};
use crate::model::{IpFamily, NodeConfig};
use crate::rules::plan::stale::StaleChain;
use crate::rules::render::incremental::Incremental;
use crate::rules::render::userspace::{render_portals, userspace_jump_rules};
use crate::rules::render::{jump_rules, large_cluster, no_local_endpoints, JumpRule};
use crate::rules::ruleset::{Ruleset, TableName};
use crate::userspace::proxier::Proxier;

/// How old the last full sync may get before a sync is full again (kube-proxy's
/// `FullSyncPeriod`), outside large-cluster mode.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// Called on the sync thread after a sync that was full in some family, once its big
/// temporary allocations (the whole ruleset, its restore text, the tables read back) are freed,
/// and after other syncs at most once per [`RELEASE_INTERVAL`]: the binary sets it to make its
/// allocator hand freed memory back to the system now. Choosing the allocator is the binary's
/// business, not the library's.
static RELEASE_MEMORY: OnceLock<fn()> = OnceLock::new();

/// How often partial syncs run the [`RELEASE_MEMORY`] hook at most.
const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// Sets the hook run after full syncs (see [`RELEASE_MEMORY`]); the first call wins.
pub fn set_release_memory(hook: fn()) {
    let _ = RELEASE_MEMORY.set(hook);
}

/// How the loop is paced and what it programs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// `--iptables-min-sync-period`.
    pub min_sync_period: Duration,
    /// `--iptables-sync-period`: how often the canaries are checked and a sync runs anyway (also
    /// the health timeout base).
    pub sync_period: Duration,
    /// IP families to program.
    pub families: Vec<IpFamily>,
    /// The options that shape the rules.
    pub node: NodeOptions,
    /// flannel's subnet.env, when present.
    pub flannel: Option<SubnetEnv>,
}

/// What one family's sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyReport {
    /// Family.
    pub family: IpFamily,
    /// Full or partial (a failed partial that fell back to full reports full).
    pub kind: SyncKind,
    /// Bytes of restore input (0 when nothing changed and no restore ran).
    pub bytes: usize,
    /// Whether a partial restore failed first.
    pub partial_failed: bool,
}

/// Keeps the kernel's rules equal to the rendered state; owns what was last applied.
pub struct Syncer {
    opts: SyncOptions,
    ipt: Arc<dyn Iptables + Send + Sync>,
    conntrack: Arc<dyn Conntrack + Send + Sync>,
    metrics: Metrics,
    health: HealthState,
    /// Families whose kernel holds what we last rendered (absent: unknown, full sync next).
    applied: BTreeSet<IpFamily>,
    /// Per family, the rules last rendered in iptables mode, kept per service port: a sync
    /// re-renders only the ports that changed.
    rendered: BTreeMap<IpFamily, Incremental>,
    /// Per family, the portal rules last rendered in userspace mode.
    portals: BTreeMap<IpFamily, Ruleset>,
    /// When each family's last full sync succeeded.
    last_full: BTreeMap<IpFamily, Instant>,
    /// When each family's stale service chains were last deleted.
    last_cleanup: BTreeMap<IpFamily, Instant>,
    /// Large-cluster mode: stale service chains left in place until the next clean-up.
    deferred: BTreeMap<IpFamily, Vec<StaleChain>>,
    /// Per family, the UDP frontends the conntrack table was last reconciled with; absent
    /// until the first complete reconciliation (and retried while it fails).
    reconciled: BTreeMap<IpFamily, Frontends>,
    /// Families whose last reconciliation failed: the next sync reconciles them again.
    reconcile_failed: BTreeSet<IpFamily>,
    /// Problems already logged, so each bad object is reported once.
    logged_problems: BTreeSet<String>,
    /// The last flannel-vs-Node pod CIDR mismatch logged.
    pod_cidr_warning: Option<String>,
    /// Userspace mode: the proxy sockets and the address they listen on.
    userspace: Option<(Proxier, IpAddr)>,
    /// Host probes consulted by every sync (the daemon's; none offline and in most tests).
    probes: Option<SyncProbes>,
    /// Where each sync's summary is published (`/debug/services`).
    view: Option<crate::health::ServicesView>,
    /// When the [`RELEASE_MEMORY`] hook last ran.
    last_release: Option<Instant>,
}

impl Syncer {
    /// A syncer that has applied nothing yet (its first sync is full).
    pub fn new(
        opts: SyncOptions,
        ipt: Arc<dyn Iptables + Send + Sync>,
        conntrack: Arc<dyn Conntrack + Send + Sync>,
        metrics: Metrics,
        health: HealthState,
    ) -> Self {
        Syncer {
            opts,
            ipt,
            conntrack,
            metrics,
            health,
            applied: BTreeSet::new(),
            rendered: BTreeMap::new(),
            portals: BTreeMap::new(),
            last_full: BTreeMap::new(),
            last_cleanup: BTreeMap::new(),
            deferred: BTreeMap::new(),
            reconciled: BTreeMap::new(),
            reconcile_failed: BTreeSet::new(),
            logged_problems: BTreeSet::new(),
            pod_cidr_warning: None,
            userspace: None,
            probes: None,
            view: None,
            last_release: None,
        }
    }

    /// Switches this syncer to the legacy userspace mode: portal rules steer service traffic to
    /// `proxier`'s sockets listening on `bind`.
    pub fn with_userspace(mut self, proxier: Proxier, bind: IpAddr) -> Self {
        self.userspace = Some((proxier, bind));
        self
    }

    /// Renders `family`'s rules in the active mode. Returns the chains that changed since the
    /// last rendering, as they were and as they are now (`None` on the first rendering).
    fn render_family(
        &mut self,
        family: IpFamily,
        snapshot: &Snapshot,
        node: &NodeConfig,
    ) -> Result<Option<(Ruleset, Ruleset)>> {
        let Some((proxier, bind)) = self.userspace.as_mut() else {
            let (internal, external) = no_local_endpoints(&snapshot.state, node);
            self.metrics.set_no_local_endpoints(family, PolicyKind::Internal, internal);
            self.metrics.set_no_local_endpoints(family, PolicyKind::External, external);
            let change = match self.rendered.get_mut(&family) {
                Some(rendered) => Some(rendered.update(&snapshot.state, node)),
                None => {
                    self.rendered.insert(family, Incremental::new(&snapshot.state, node));
                    None
                }
            };
            if let Some(rendered) = self.rendered.get(&family) {
                for table in [TableName::Filter, TableName::Nat] {
                    self.metrics.set_rules_total(family, table, rendered.rules_total(table));
                }
            }
            return Ok(change.map(|c| (c.last, c.next)));
        };
        let plan = proxier.sync(&snapshot.state, family);
        self.metrics.set_userspace_port_conflicts(proxier.conflicts().len());
        let host = if bind.is_unspecified() {
            proxier.host_ip(&snapshot.state, family, &node.node_ips).ok_or(Error::NoNodeIp { family })?
        } else {
            *bind
        };
        let desired = render_portals(&snapshot.state, node, &plan, *bind, host);
        for table in &desired.tables {
            self.metrics.set_rules_total(family, table.name, table.rules.len());
        }
        Ok(self.portals.insert(family, desired.clone()).map(|last| (last, desired)))
    }

    /// The whole ruleset last rendered for `family` and its jumps from the built-in chains.
    fn full_ruleset(&self, family: IpFamily, node: &NodeConfig) -> (Ruleset, Vec<JumpRule>) {
        if self.userspace.is_some() {
            (self.portals.get(&family).cloned().unwrap_or_default(), userspace_jump_rules())
        } else {
            (self.rendered.get(&family).map(Incremental::ruleset).unwrap_or_default(), jump_rules(node))
        }
    }

    /// The options in use.
    pub fn options(&self) -> &SyncOptions {
        &self.opts
    }

    /// Uses a new flannel lease (subnet.env changed): the next sync is full.
    pub fn set_flannel(&mut self, env: Option<SubnetEnv>) {
        self.opts.flannel = env;
        self.invalidate();
    }

    /// Forgets what was applied, so the next sync is full.
    pub fn invalidate(&mut self) {
        self.applied.clear();
    }

    /// Whether a canary chain is missing from any programmed family's tables (someone
    /// flushed the tables behind our back).
    pub fn canary_missing(&self) -> bool {
        self.opts.families.iter().any(|&family| self.applier(family).canary_missing())
    }

    /// The applier for `family` in the active mode.
    fn applier(&self, family: IpFamily) -> Applier<'_> {
        let mode = if self.userspace.is_some() { Mode::Userspace } else { Mode::Iptables };
        Applier::new(self.ipt.as_ref(), family, mode)
    }

    /// Whether `family` is in kube-proxy's large-cluster mode (iptables mode only), as last
    /// rendered (counted from `snapshot` before the first rendering).
    fn large_cluster(&self, family: IpFamily, snapshot: &Snapshot) -> bool {
        self.userspace.is_none()
            && self
                .rendered
                .get(&family)
                .map_or_else(|| large_cluster(&snapshot.state, family), Incremental::large_cluster)
    }

    /// Whether `family`'s next sync must be full although nothing forces it: its last full
    /// sync is [`FULL_SYNC_PERIOD`] old, outside large-cluster mode.
    fn full_sync_due(&self, family: IpFamily, snapshot: &Snapshot) -> bool {
        let old = self.last_full.get(&family).is_none_or(|t| t.elapsed() > FULL_SYNC_PERIOD);
        old && !self.large_cluster(family, snapshot)
    }

    /// One sync of every family. `full` forces reading back and repairing the kernel state.
    /// Its outcome (and, when it succeeded, what it programmed) is published to the view.
    pub fn sync(&mut self, snapshot: &Snapshot, changes: &Changes, full: bool) -> Result<Vec<FamilyReport>> {
        let result = self.sync_families(snapshot, changes, full);
        self.publish_view(snapshot, &result);
        result
    }

    fn sync_families(&mut self, snapshot: &Snapshot, changes: &Changes, full: bool) -> Result<Vec<FamilyReport>> {
        let started = Instant::now();
        self.probe_host(full);
        self.log_new_problems(snapshot);
        self.check_pod_cidr(snapshot);
        let mut reports = Vec::new();
        for family in self.opts.families.clone() {
            let family_started = Instant::now();
            let full = full || self.full_sync_due(family, snapshot);
            match self.sync_family(family, snapshot, full) {
                Ok(report) => {
                    self.family_synced(&report, family_started.elapsed().as_secs_f64(), changes);
                    reports.push(report);
                }
                Err(err) => {
                    self.applied.remove(&family);
                    if matches!(err, Error::Restore { .. }) {
                        self.metrics.inc_restore_failure(family, SyncKind::Full);
                    }
                    return Err(err);
                }
            }
        }
        self.reconcile_conntrack(snapshot);
        let elapsed = started.elapsed().as_secs_f64();
        let kind = if reports.iter().any(|r| r.kind == SyncKind::Full) { SyncKind::Full } else { SyncKind::Partial };
        let due = self.last_release.is_none_or(|t| t.elapsed() >= RELEASE_INTERVAL);
        if let (true, Some(release)) = (kind == SyncKind::Full || due, RELEASE_MEMORY.get()) {
            release();
            self.last_release = Some(Instant::now());
        }
        self.metrics.inc_service_changes(changes.services);
        self.metrics.inc_endpoint_changes(changes.endpoints);
        let bytes: usize = reports.iter().map(|r| r.bytes).sum();
        tracing::info!(
            services = snapshot.state.services.len(),
            kind = ?kind,
            bytes,
            elapsed_ms = (elapsed * 1000.0) as u64,
            "synced"
        );
        Ok(reports)
    }

    /// Reports one family's successful sync to the metrics and the health state, as
    /// kube-proxy's per-family proxier does.
    fn family_synced(&self, report: &FamilyReport, seconds: f64, changes: &Changes) {
        let family = report.family;
        let now = SystemTime::now();
        self.metrics.observe_sync(family, report.kind, seconds);
        self.metrics.set_last_sync(family, unix_seconds(now));
        for (_, trigger) in changes.trigger_times.iter().filter(|(f, _)| *f == family) {
            if let Ok(age) = now.duration_since(*trigger) {
                self.metrics.observe_network_programming(family, age.as_secs_f64());
            }
        }
        self.health.updated(family, now);
    }

    fn sync_family(&mut self, family: IpFamily, snapshot: &Snapshot, full: bool) -> Result<FamilyReport> {
        let node = self.opts.node.node_config(family, snapshot.node.as_ref(), self.opts.flannel.as_ref())?;
        let change = self.render_family(family, snapshot, &node)?;
        let mut partial_failed = false;
        if let (false, true, Some((last, next))) = (full, self.applied.contains(&family), &change) {
            // A chain a service renders again is no longer stale.
            if let Some(deferred) = self.deferred.get_mut(&family) {
                deferred.retain(|(table, chain)| !next.table(*table).is_some_and(|t| t.is_declared(chain.as_str())));
            }
            let cleanup_due = !self.large_cluster(family, snapshot)
                || self.last_cleanup.get(&family).is_none_or(|t| t.elapsed() > self.opts.sync_period);
            let earlier = self.deferred.get(&family).map(Vec::as_slice).unwrap_or_default();
            let stale = if cleanup_due { StaleChains::Delete(earlier) } else { StaleChains::Defer };
            match self.applier(family).partial_with(last, next, stale) {
                Ok(applied) => {
                    self.stale_chains(family, cleanup_due, &applied);
                    self.rules_written(family, &applied);
                    if applied.transactions > 0 {
                        self.metrics.observe_restore_bytes(SyncKind::Partial, applied.bytes);
                    }
                    // The kernel now holds what was rendered (chains left for a later clean-up
                    // are tracked in `deferred`), even when nothing had to be written.
                    return Ok(FamilyReport { family, kind: SyncKind::Partial, bytes: applied.bytes, partial_failed });
                }
                Err(err) => {
                    let err = Error::from(err);
                    tracing::warn!(%family, error = %err, "partial restore failed; falling back to a full sync");
                    self.metrics.inc_restore_failure(family, SyncKind::Partial);
                    partial_failed = true;
                }
            }
        }
        drop(change);
        let history = if self.applied.remove(&family) { History::Applied } else { History::Unknown };
        let (desired, jumps) = self.full_ruleset(family, &node);
        let applied = self.applier(family).full(&desired, &jumps, history).map_err(Error::from)?;
        drop(desired);
        let now = Instant::now();
        self.last_full.insert(family, now);
        self.last_cleanup.insert(family, now);
        self.deferred.remove(&family);
        self.rules_written(family, &applied);
        self.metrics.observe_restore_bytes(SyncKind::Full, applied.bytes);
        self.applied.insert(family);
        Ok(FamilyReport { family, kind: SyncKind::Full, bytes: applied.bytes, partial_failed })
    }

    /// Follows what a partial apply did with stale service chains: deleted (a clean-up) or
    /// left for the next one.
    fn stale_chains(&mut self, family: IpFamily, cleaned: bool, applied: &Applied) {
        if cleaned {
            self.deferred.remove(&family);
            self.last_cleanup.insert(family, Instant::now());
        } else if !applied.deferred.is_empty() {
            tracing::debug!(%family, chains = applied.deferred.len(), "large cluster: stale chains left for the next clean-up");
            self.deferred.entry(family).or_default().extend(applied.deferred.iter().cloned());
        }
    }

    /// `kubeproxy_sync_proxy_rules_iptables_last{table}`: what this sync wrote (0 in a table it
    /// did not touch).
    fn rules_written(&self, family: IpFamily, applied: &Applied) {
        for table in [TableName::Filter, TableName::Nat, TableName::Mangle] {
            let n = applied.rules_written.iter().find(|(t, _)| *t == table).map_or(0, |(_, n)| *n);
            self.metrics.set_rules_last(family, table, n);
        }
    }

    /// Warns (once per distinct mismatch) when flannel's lease is not the Node's pod CIDR.
    fn check_pod_cidr(&mut self, snapshot: &Snapshot) {
        let (Some(env), Some(node)) = (&self.opts.flannel, &snapshot.node) else {
            return;
        };
        let warning = crate::flannel::watch::check_pod_cidr(env, &node.pod_cidrs);
        if warning != self.pod_cidr_warning {
            if let Some(message) = &warning {
                tracing::warn!(check = "pod_cidr", "{message}");
            }
            self.metrics.set_startup_check_failed("pod_cidr", warning.is_some());
            self.pod_cidr_warning = warning;
        }
    }

    fn log_new_problems(&mut self, snapshot: &Snapshot) {
        let current: BTreeSet<String> = snapshot.problems.iter().map(ToString::to_string).collect();
        for problem in current.difference(&self.logged_problems) {
            tracing::warn!(problem = %problem, "object skipped");
        }
        self.logged_problems = current;
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
