//! The node daemon as a library: [`run`] wires the rooms together — the state source (API or
//! manifest files), flannel's lease, the sync loop, the health and metrics servers — and runs
//! until told to stop. Signals, logging set-up and the exit code belong to the binary.
//!
//! - `client`: the rate-limited Kubernetes API client.
//! - `servers`: the healthz and metrics servers and how they bind.
//! - `dry_run`: `--dry-run`'s logging in-memory kernel.
//! - `nofile`: the userspace proxy's open-file limit.

mod client;
mod dry_run;
mod nofile;
mod servers;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use self::client::{client as api_client, Error as ClientError};
pub use self::dry_run::DryRun;
pub use self::servers::BindError;
use crate::apply::cleanup::CleanupReport;
use crate::apply::exec::{Backend, ExecIptables, Iptables};
use crate::apply::{Applier, Mode};
use crate::config::duration::GoDuration;
use crate::config::{DaemonConfig, NodeOptions, ProxyMode};
use crate::conntrack::{Conntrack, FakeConntrack, NetlinkConntrack};
use crate::flannel::subnet_env::SubnetEnv;
use crate::flannel::watch::{self as subnet_watch, SubnetWatch};
use crate::health::{HealthState, ScrapeHook, ServicesView};
use crate::healthcheck::HealthCheckServers;
use crate::host::{self, NetlinkAddresses, SyncProbes};
use crate::k8s::convert::EndpointsSource;
use crate::k8s::watch::{ApiSource, ChangeFeed, FileSource, StateSource};
use crate::metrics::Metrics;
use crate::model::IpFamily;
use crate::startup::tuning::{self, TuningConfig};
use crate::startup::{self, CheckConfig, SysctlReader};
use crate::sync::{SyncLoop, SyncOptions, Syncer};
use crate::userspace::proxier::{Proxier, ProxierConfig};
use crate::userspace::Limits;

/// kubenat's own daemon options (the flags kube-proxy does not have).
#[derive(Debug, Clone)]
pub struct Options {
    /// The iptables backend; `None` detects it like kubelet and flannel do.
    pub backend: Option<Backend>,
    /// Log restore inputs and keep the rules in memory instead of applying them.
    pub dry_run: bool,
    /// Serve the cluster state from these manifest files instead of the API.
    pub objects: Vec<PathBuf>,
    /// Where endpoints come from.
    pub endpoints_source: EndpointsSource,
    /// flannel's subnet.env.
    pub flannel_subnet_file: PathBuf,
    /// Userspace mode: idle time after which a UDP session is dropped.
    pub udp_timeout: Duration,
    /// Userspace mode: TCP relay bounds (splice pipes or copying).
    pub tcp: Limits,
    /// Program IPv6 too; `None`: when an IPv6 cluster CIDR is configured.
    pub ipv6: Option<bool>,
}

/// The whole daemon configuration: kube-proxy's, resolved, and kubenat's own.
#[derive(Debug, Clone)]
pub struct Config {
    /// From kube-proxy's flags and configuration file.
    pub proxy: DaemonConfig,
    /// kubenat's own options.
    pub options: Options,
}

/// Why the daemon stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A server address could not be bound (`--bind-address-hard-fail`).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// No API client.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The sync loop ended although nobody asked it to (rules stay in place).
    #[error("the sync loop stopped unexpectedly (rules stay in place)")]
    LoopStopped,
}

impl Config {
    /// The iptables implementation and the backend it writes (`None` for `--dry-run`).
    pub fn iptables(&self) -> (Arc<dyn Iptables + Send + Sync>, Option<Backend>) {
        if self.options.dry_run {
            return (Arc::new(DryRun::default()), None);
        }
        let exec = match self.options.backend {
            None => ExecIptables::detected(None),
            Some(backend) => ExecIptables::new(backend),
        };
        let backend = exec.backend;
        (Arc::new(exec), Some(backend))
    }

    /// The conntrack table the reconciler reads and trims: the kernel's over netlink, or an
    /// empty in-memory one for `--dry-run` (which must not touch the node).
    pub fn conntrack(&self) -> Arc<dyn Conntrack + Send + Sync> {
        if self.options.dry_run {
            return Arc::new(FakeConntrack::new());
        }
        Arc::new(NetlinkConntrack::new())
    }

    /// The IP families to program: IPv4, and IPv6 with `--ipv6` or an IPv6 cluster CIDR (the
    /// userspace proxy listens on one IPv4 address, as kube-proxy's did).
    pub fn families(&self, flannel: Option<&SubnetEnv>) -> Vec<IpFamily> {
        let v6_cidr = self.proxy.node.cluster_cidr(IpFamily::V6, flannel).is_some();
        if self.proxy.mode == ProxyMode::Iptables && self.options.ipv6.unwrap_or(v6_cidr) {
            vec![IpFamily::V4, IpFamily::V6]
        } else {
            vec![IpFamily::V4]
        }
    }

    /// The start-up checks for this configuration, with the backend already chosen.
    fn checks(&self, families: usize, backend: Option<Backend>) -> CheckConfig {
        CheckConfig { localhost_nodeports: self.localhost_nodeports(), ipv6: families > 1, backend }
    }

    /// IPv4 NodePorts are served on 127.0.0.1 (iptables mode), so `route_localnet` must be 1.
    fn localhost_nodeports(&self) -> bool {
        self.proxy.mode == ProxyMode::Iptables && self.proxy.node.ipv4_localhost_nodeports()
    }

    /// What node tuning sets: kube-proxy's `conntrack` settings (defaulted) and `route_localnet`.
    pub fn tuning(&self) -> TuningConfig {
        let ct = &self.proxy.effective.config.conntrack;
        let duration = |d: Option<GoDuration>| d.and_then(GoDuration::to_std).unwrap_or_default();
        TuningConfig {
            max_per_core: i64::from(ct.max_per_core.unwrap_or(0)),
            min: i64::from(ct.min.unwrap_or(0)),
            tcp_established_timeout: duration(ct.tcp_established_timeout),
            tcp_close_wait_timeout: duration(ct.tcp_close_wait_timeout),
            tcp_be_liberal: ct.tcp_be_liberal,
            udp_timeout: duration(Some(ct.udp_timeout)),
            udp_stream_timeout: duration(Some(ct.udp_stream_timeout)),
            route_localnet: self.localhost_nodeports(),
        }
    }
}

/// The process-level start-up steps kube-proxy takes before anything else (`--init-only`
/// stops after them): the OOM score, then node tuning (conntrack limits and timeouts,
/// `route_localnet`; with `--dry-run` only logged). Returns how many tuning steps failed.
/// Failures are logged, never fatal (an unprivileged container cannot lower its score, which
/// kube-proxy logs at info too; a value that cannot be written is one warning each).
pub fn init(config: &Config) -> usize {
    if let Some(adj) = config.proxy.effective.config.oom_score_adj {
        match startup::oom::set_oom_score_adj(adj) {
            Ok(value) => tracing::info!(oom_score_adj = value, "set the process's OOM score"),
            Err(err) => {
                tracing::info!(oom_score_adj = adj, error = %err, "could not set the process's OOM score (lowering it needs CAP_SYS_RESOURCE)")
            }
        }
    }
    let sysctls = tuning::ProcSysctls::host();
    let results = tuning::tune(&config.tuning(), tuning::online_cpus(), &sysctls, config.options.dry_run);
    results.iter().filter(|r| matches!(r.outcome, tuning::Outcome::Failed(_))).count()
}

/// `--init-only`: the start-up checks, logged and counted; returns how many failed.
pub fn check_host(config: &Config) -> usize {
    let (metrics, _) = Metrics::new();
    let (_, backend) = config.iptables();
    startup::check_host(&config.checks(1, backend), &metrics).iter().filter(|r| !r.ok).count()
}

/// `--cleanup`: removes kube-proxy's and kubenat's rules in both families, through the one
/// applier; one result per family.
pub fn cleanup(config: &Config) -> Vec<(IpFamily, Result<CleanupReport, crate::apply::Error>)> {
    let (ipt, _) = config.iptables();
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .map(|family| (family, Applier::new(ipt.as_ref(), family, Mode::Iptables).cleanup()))
        .collect()
}

/// Runs the daemon until `shutdown` is cancelled (`Ok`) or it cannot go on (`Err`; the rules
/// stay in place either way).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let watch = SubnetWatch::start(
        config.options.flannel_subnet_file.clone(),
        subnet_watch::DEFAULT_INTERVAL,
        shutdown.clone(),
    );
    let flannel = watch.current();
    let families = config.families(flannel.as_ref());
    let (metrics, registry) = Metrics::new();
    // Backend detection runs iptables-save of both backends: once, shared by every user below.
    let (ipt, backend) = config.iptables();
    let (checks, tuned) = (config.checks(families.len(), backend), config.tuning());
    let check_metrics = metrics.clone();
    let _ = tokio::task::spawn_blocking(move || {
        startup::check_host(&checks, &check_metrics);
        tuning::report_current(&tuned, tuning::online_cpus(), &tuning::ProcSysctls::host(), &check_metrics)
    })
    .await;
    let health = HealthState::new(config.proxy.sync_period * 2).with_metrics(metrics.clone());
    let (node, probes) = probe_host(&config, backend.unwrap_or_default()).await;
    let before_scrape = probes.nfacct.clone().map(|nfacct| {
        let metrics = metrics.clone();
        ScrapeHook(Arc::new(move || host::publish_counters(nfacct.as_ref(), &metrics)))
    });
    let services = ServicesView::default();
    servers::start_servers(&config.proxy, (&health, &services), (registry, before_scrape), &shutdown).await?;
    let (feed, changes) = ChangeFeed::new();
    let source = state_source(&config, feed.clone(), &shutdown).await?;
    let opts = SyncOptions {
        min_sync_period: config.proxy.min_sync_period,
        sync_period: config.proxy.sync_period,
        families,
        node,
        flannel,
    };
    tracing::info!(node = %opts.node.node_name, families = ?opts.families, mode = config.proxy.mode.as_str(), "starting kubenat");
    let health_checks =
        Some(HealthCheckServers::new(IpAddr::from([0, 0, 0, 0]), shutdown.clone()).with_health(health.clone()));
    let mut syncer =
        Syncer::new(opts, ipt, config.conntrack(), metrics, health).with_probes(probes).with_view(services);
    if let Some(proxier) = proxier(&config, &shutdown) {
        syncer = syncer.with_userspace(proxier.0, proxier.1);
    }
    let sync_loop = SyncLoop { syncer, source, feed, changes, health_checks, flannel: Some(watch.subscribe()) };
    let mut handle = tokio::spawn(sync_loop.run(shutdown.clone()));
    tokio::select! {
        _ = shutdown.cancelled() => {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
            Ok(())
        }
        _ = &mut handle => {
            shutdown.cancel();
            Err(Error::LoopStopped)
        }
    }
}

/// Probes the host once, as kube-proxy does at start (blocking work off the async workers):
/// `--random-fully` from the iptables version, `nf_conntrack_tcp_be_liberal` (or
/// `conntrack.tcpBeLiberal`, which makes it 1), nfacct (not touched with `--dry-run`); the
/// interface addresses are re-read by every sync.
async fn probe_host(config: &Config, backend: Backend) -> (NodeOptions, SyncProbes) {
    let dry_run = config.options.dry_run;
    let probed = tokio::task::spawn_blocking(move || {
        let mut facts = host::probe_at_start(backend, &SysctlReader::Local(PathBuf::from("/")));
        if dry_run {
            facts.nfacct = None;
        }
        facts
    })
    .await;
    let mut node = config.proxy.node.clone();
    let Ok(facts) = probed else {
        return (node, SyncProbes { addresses: Arc::new(NetlinkAddresses), nfacct: None });
    };
    node.random_fully = facts.random_fully;
    node.conntrack_tcp_be_liberal = facts.tcp_be_liberal || config.proxy.effective.config.conntrack.tcp_be_liberal;
    tracing::info!(
        random_fully = node.random_fully,
        tcp_be_liberal = node.conntrack_tcp_be_liberal,
        nfacct = facts.nfacct.is_some(),
        localhost_nodeports = node.localhost_nodeports,
        "host probed"
    );
    (node, SyncProbes { addresses: Arc::new(NetlinkAddresses), nfacct: facts.nfacct })
}

/// Userspace mode's proxier and the address it listens on (with the open-file limit raised).
fn proxier(config: &Config, shutdown: &CancellationToken) -> Option<(Proxier, IpAddr)> {
    let userspace = config.proxy.userspace.clone()?;
    nofile::raise_nofile_limit();
    let proxier_config = ProxierConfig {
        bind: userspace.bind,
        range: userspace.range,
        udp_timeout: config.options.udp_timeout,
        max_udp_sessions: 10_000,
        tcp: config.options.tcp.clone(),
    };
    let node_ip = config.proxy.node.node_ips.iter().copied().find(|ip| ip.is_ipv4());
    Some((Proxier::new(proxier_config, shutdown.clone()).with_node_ip(node_ip), userspace.bind))
}

/// Where the cluster state comes from: the API, or `--objects` manifest files.
async fn state_source(
    config: &Config,
    feed: Arc<ChangeFeed>,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn StateSource>, Error> {
    let node = config.proxy.node.node_name.clone();
    let endpoints = config.options.endpoints_source;
    Ok(if config.options.objects.is_empty() {
        let client = client::client(&config.proxy).await?;
        Arc::new(ApiSource::start(client, &node, endpoints, feed, shutdown.clone()))
    } else {
        let objects = config.options.objects.clone();
        Arc::new(FileSource::start(objects, node, endpoints, Duration::from_secs(1), feed, shutdown.clone()))
    })
}
