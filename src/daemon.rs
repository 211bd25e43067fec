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

pub use self::client::Error as ClientError;
pub use self::dry_run::DryRun;
pub use self::servers::BindError;
use crate::apply::cleanup::CleanupReport;
use crate::apply::exec::{Backend, ExecIptables, Iptables};
use crate::apply::{Applier, Mode};
use crate::config::{DaemonConfig, ProxyMode};
use crate::conntrack::{Conntrack, FakeConntrack, NetlinkConntrack};
use crate::flannel::subnet_env::SubnetEnv;
use crate::flannel::watch::{self as subnet_watch, SubnetWatch};
use crate::health::HealthState;
use crate::healthcheck::HealthCheckServers;
use crate::k8s::convert::EndpointsSource;
use crate::k8s::watch::{ApiSource, ChangeFeed, FileSource, StateSource};
use crate::metrics::Metrics;
use crate::model::IpFamily;
use crate::startup::{self, CheckConfig};
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

    /// The start-up checks for this configuration.
    fn checks(&self, families: usize) -> CheckConfig {
        let (_, backend) = self.iptables();
        CheckConfig { localhost_nodeports: self.proxy.node.localhost_nodeports, ipv6: families > 1, backend }
    }
}

/// The process-level start-up steps kube-proxy takes before anything else (`--init-only`
/// stops after them): the OOM score. Failures are logged, never fatal (an unprivileged
/// container cannot lower its score; kube-proxy logs this at info too).
pub fn init(config: &Config) {
    if let Some(adj) = config.proxy.effective.config.oom_score_adj {
        match startup::oom::set_oom_score_adj(adj) {
            Ok(value) => tracing::info!(oom_score_adj = value, "set the process's OOM score"),
            Err(err) => {
                tracing::info!(oom_score_adj = adj, error = %err, "could not set the process's OOM score (lowering it needs CAP_SYS_RESOURCE)")
            }
        }
    }
}

/// `--init-only`: the start-up checks, logged and counted; returns how many failed.
pub fn check_host(config: &Config) -> usize {
    let (metrics, _) = Metrics::new();
    startup::check_host(&config.checks(1), &metrics).iter().filter(|r| !r.ok).count()
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
    let checks = config.checks(families.len());
    let check_metrics = metrics.clone();
    let _ = tokio::task::spawn_blocking(move || startup::check_host(&checks, &check_metrics)).await;
    let health = HealthState::new(config.proxy.sync_period * 2).with_metrics(metrics.clone());
    servers::start_servers(&config.proxy, &health, registry, &shutdown).await?;
    let (feed, changes) = ChangeFeed::new();
    let source = state_source(&config, feed.clone(), &shutdown).await?;
    let opts = SyncOptions {
        min_sync_period: config.proxy.min_sync_period,
        sync_period: config.proxy.sync_period,
        families,
        node: config.proxy.node.clone(),
        flannel,
    };
    tracing::info!(node = %opts.node.node_name, families = ?opts.families, mode = config.proxy.mode.as_str(), "starting kubenat");
    let health_checks =
        Some(HealthCheckServers::new(IpAddr::from([0, 0, 0, 0]), shutdown.clone()).with_health(health.clone()));
    let (ipt, _) = config.iptables();
    let mut syncer = Syncer::new(opts, ipt, config.conntrack(), metrics, health);
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
