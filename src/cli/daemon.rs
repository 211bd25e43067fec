//! The node daemon (`kubenat` with no subcommand): kube-proxy's flags and `--config` file,
//! merged flag > file > default, then the watchers, the sync loop and the HTTP servers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use kubenat::apply::cleanup;
use kubenat::apply::exec::{Backend, ExecIptables, Iptables};
use kubenat::apply::fake::FakeIptables;
use kubenat::config::effective::Level;
use kubenat::config::flags::parse_go_bool;
use kubenat::config::watch::ConfigWatch;
use kubenat::config::{self, Effective, KubeProxyConfiguration, KubeProxyFlags, NodeOptions};
use kubenat::conntrack::ExecConntrack;
use kubenat::flannel::subnet_env;
use kubenat::flannel::watch::{self, SubnetWatch};
use kubenat::health::{self, HealthState};
use kubenat::healthcheck::HealthCheckServers;
use kubenat::k8s::convert::EndpointsSource;
use kubenat::k8s::watch::{ApiSource, ChangeFeed, FileSource, StateSource};
use kubenat::metrics::Metrics;
use kubenat::model::IpFamily;
use kubenat::startup::{self, CheckConfig};
use kubenat::sync::{SyncLoop, SyncOptions, Syncer};
use kubenat::userspace::proxier::{Proxier, ProxierConfig};
use kubenat::userspace::{Limits, PortRange};
use tokio_util::sync::CancellationToken;

use super::apply::BackendArg;
use super::common::EndpointsSourceArg;

/// `--proxy-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    /// NAT rules in iptables (kube-proxy's default).
    Iptables,
    /// The legacy userspace proxy.
    Userspace,
}

/// `--userspace-relay` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RelayArg {
    /// splice(2) through pooled pipes.
    Splice,
    /// Buffered copy.
    Copy,
}

/// The daemon's flags: every kube-proxy flag (shared with the offline tools) plus kubenat's own.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    kube: KubeProxyFlags,
    /// Remove kube-proxy's and kubenat's rules and exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, env = "KUBENAT_CLEANUP")]
    cleanup: Option<bool>,
    /// iptables backend.
    #[arg(long, value_enum, default_value = "auto", env = "KUBENAT_IPTABLES_BACKEND")]
    iptables_backend: BackendArg,
    /// Log the restore input instead of applying it (rules are kept in memory).
    #[arg(long, env = "KUBENAT_DRY_RUN")]
    dry_run: bool,
    /// Serve the cluster state from these manifest files instead of the API (re-read on change).
    #[arg(long = "objects", value_name = "PATH", num_args = 1.., env = "KUBENAT_OBJECTS", value_delimiter = ',')]
    objects: Vec<PathBuf>,
    /// Where endpoints come from.
    #[arg(long, value_enum, default_value = "endpointslices", env = "KUBENAT_ENDPOINTS_SOURCE")]
    endpoints_source: EndpointsSourceArg,
    /// flannel's subnet.env (cluster CIDR and node pod CIDR when not given).
    #[arg(long, value_name = "FILE", default_value = subnet_env::DEFAULT_PATH, env = "KUBENAT_FLANNEL_SUBNET_FILE")]
    flannel_subnet_file: PathBuf,
    /// Userspace mode: idle time after which a UDP session is dropped.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms", env = "KUBENAT_UDP_TIMEOUT")]
    udp_timeout: Duration,
    /// Userspace mode: how TCP bytes are relayed: `splice` (zero-copy through a bounded pool of
    /// pipes, copying when none is free) or `copy` (through buffers only).
    #[arg(long, value_enum, default_value = "splice", env = "KUBENAT_USERSPACE_RELAY")]
    userspace_relay: RelayArg,
    /// Also program IPv6 (ip6tables); default: when an IPv6 cluster CIDR is configured.
    #[arg(long, value_name = "BOOL", env = "KUBENAT_IPV6")]
    ipv6: Option<bool>,
}

/// Everything resolved from flags, file and defaults.
struct Resolved {
    effective: Effective,
    mode: ProxyMode,
    userspace: Option<(ProxierConfig, IpAddr)>,
    node: NodeOptions,
    sync_period: Duration,
    min_sync_period: Duration,
    healthz: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    kubeconfig: Option<PathBuf>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_lowercase()).unwrap_or_default()
}

impl DaemonArgs {
    fn resolve(&self) -> anyhow::Result<Resolved> {
        let effective = config::resolve(&self.kube)?;
        let c = &effective.config;
        // kube-proxy: the override is trimmed and lower-cased; empty means the hostname.
        let node_name = effective.hostname_override().unwrap_or_else(hostname);
        if node_name.is_empty() {
            bail!("--hostname-override: no node name (set it, or NODE_NAME)");
        }
        let node = effective.node_options(node_name, self.kube.node_ip.clone())?;
        let mode = if c.mode == "userspace" { ProxyMode::Userspace } else { ProxyMode::Iptables };
        let userspace = match mode {
            ProxyMode::Iptables => None,
            ProxyMode::Userspace => Some(self.userspace(c)?),
        };
        let kubeconfig = Some(&c.client_connection.kubeconfig).filter(|p| !p.is_empty()).map(PathBuf::from);
        Ok(Resolved {
            mode,
            userspace,
            node,
            sync_period: effective.sync_period(),
            min_sync_period: effective.min_sync_period(),
            healthz: effective.healthz_address(),
            metrics: effective.metrics_address(),
            kubeconfig,
            effective,
        })
    }

    fn userspace(&self, c: &KubeProxyConfiguration) -> anyhow::Result<(ProxierConfig, IpAddr)> {
        let range = PortRange::parse(&c.port_range).map_err(|e| anyhow::anyhow!("--proxy-port-range: {e}"))?;
        let bind: IpAddr =
            c.bind_address.parse().with_context(|| format!("--bind-address {:?} is not an IP", c.bind_address))?;
        if bind.is_loopback() {
            bail!("--bind-address {bind}: the userspace proxy cannot listen on loopback (pods could not reach it)");
        }
        let config = ProxierConfig {
            bind,
            range,
            udp_timeout: self.udp_timeout,
            max_udp_sessions: 10_000,
            tcp: match self.userspace_relay {
                RelayArg::Splice => Limits::default(),
                RelayArg::Copy => Limits { pipes: None, ..Limits::default() },
            },
        };
        Ok((config, bind))
    }

    /// The iptables implementation and the backend it writes (`None` for `--dry-run`).
    fn iptables(&self) -> (Arc<dyn Iptables + Send + Sync>, Option<Backend>) {
        if self.dry_run {
            return (Arc::new(DryRun(FakeIptables::new())), None);
        }
        let exec = match self.iptables_backend {
            BackendArg::Auto => ExecIptables::detected(None),
            BackendArg::Nft => ExecIptables::new(Backend::Nft),
            BackendArg::Legacy => ExecIptables::new(Backend::Legacy),
        };
        let backend = exec.backend;
        (Arc::new(exec), Some(backend))
    }
}

/// `--dry-run`: logs every restore input and applies it to an in-memory model instead.
struct DryRun(FakeIptables);

impl Iptables for DryRun {
    fn restore(
        &self,
        family: IpFamily,
        input: &str,
        opts: kubenat::apply::exec::RestoreOptions,
    ) -> kubenat::apply::exec::Result<()> {
        tracing::info!(%family, bytes = input.len(), "dry run: restore input follows\n{input}");
        self.0.restore(family, input, opts)
    }

    fn save(
        &self,
        family: IpFamily,
        table: Option<kubenat::rules::ruleset::TableName>,
    ) -> kubenat::apply::exec::Result<String> {
        self.0.save(family, table)
    }
}

async fn client(resolved: &Resolved, master: Option<&String>) -> anyhow::Result<kube::Client> {
    let mut config = match &resolved.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}: not usable", path.display()))?
        }
        None => kube::Config::infer().await.context("no --kubeconfig and no in-cluster configuration")?,
    };
    if let Some(url) = master {
        config.cluster_url = url.parse().with_context(|| format!("--master {url:?} is not a URL"))?;
    }
    // clientConnection.qps / burst, as client-go's token bucket: at most `burst` requests in
    // any window of burst/qps seconds (qps 0 after defaulting cannot happen; guard anyway).
    let client = &resolved.effective.config.client_connection;
    let burst = u64::try_from(client.burst.max(1)).unwrap_or(1);
    let window = Duration::from_secs_f64(burst as f64 / f64::from(client.qps.max(0.001)));
    let builder = kube::client::ClientBuilder::try_from(config).context("building the API client")?;
    Ok(builder.with_layer(&tower::limit::RateLimitLayer::new(burst, window)).build())
}

/// Runs the daemon until SIGTERM/SIGINT, or until the `--config` file changes (or performs
/// `--write-config-to`, `--cleanup` or `--init-only` and exits). Sets up logging itself, from
/// the effective configuration; `log_filter` is `--log`.
pub fn run(args: DaemonArgs, log_filter: Option<&str>) -> anyhow::Result<ExitCode> {
    // Fingerprint the file as it was read: a change from here on restarts the pod.
    let config_watch = args.kube.config.clone().map(ConfigWatch::new);
    let resolved = args.resolve()?;
    super::logging::init(log_filter, &resolved.effective.config.logging, "info");
    for note in &resolved.effective.notes {
        match note.level {
            Level::Info => tracing::info!("{}", note.text),
            Level::Warn => tracing::warn!("{}", note.text),
        }
    }
    if let Some(path) = &args.kube.write_config_to {
        std::fs::write(path, resolved.effective.to_yaml())
            .with_context(|| format!("--write-config-to {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote the effective configuration");
        return Ok(ExitCode::SUCCESS);
    }
    if args.cleanup == Some(true) {
        return Ok(cleanup_rules(&args));
    }
    if let Some(adj) = resolved.effective.config.oom_score_adj {
        match startup::oom::set_oom_score_adj(adj) {
            Ok(value) => tracing::info!(oom_score_adj = value, "set the process's OOM score"),
            Err(err) => {
                // kube-proxy logs this at info too: an unprivileged container cannot lower it.
                tracing::info!(oom_score_adj = adj, error = %err, "could not set the process's OOM score (lowering it needs CAP_SYS_RESOURCE)")
            }
        }
    }
    if args.kube.init_only == Some(true) {
        let (_, backend) = args.iptables();
        let checks = CheckConfig { localhost_nodeports: resolved.node.localhost_nodeports, ipv6: false, backend };
        let (metrics, _) = Metrics::new();
        let failed = startup::check_host(&checks, &metrics).iter().filter(|r| !r.ok).count();
        tracing::info!(failed_checks = failed, "--init-only: start-up steps done, exiting");
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, resolved, config_watch))
}

/// `--cleanup`: removes kube-proxy's and kubenat's rules in both families.
fn cleanup_rules(args: &DaemonArgs) -> ExitCode {
    let (ipt, _) = args.iptables();
    let mut failed = false;
    for family in [IpFamily::V4, IpFamily::V6] {
        match cleanup::cleanup(ipt.as_ref(), family) {
            Ok(report) => println!("{family}: removed {} jump rules and {} chains", report.jumps, report.chains),
            Err(err) => {
                eprintln!("kubenat: cleanup: {err}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn serve(args: DaemonArgs, resolved: Resolved, config_watch: Option<ConfigWatch>) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let subnet_watch = SubnetWatch::start(args.flannel_subnet_file.clone(), watch::DEFAULT_INTERVAL, shutdown.clone());
    let flannel = subnet_watch.current();
    let families = families(&args, &resolved, flannel.as_ref());
    let (metrics, registry) = Metrics::new();
    let (ipt, backend) = args.iptables();
    let checks =
        CheckConfig { localhost_nodeports: resolved.node.localhost_nodeports, ipv6: families.len() > 1, backend };
    let check_metrics = metrics.clone();
    let _ = tokio::task::spawn_blocking(move || startup::check_host(&checks, &check_metrics)).await;
    let health = HealthState::new(resolved.sync_period * 2).with_metrics(metrics.clone());
    start_servers(&resolved, &health, registry, &shutdown).await?;
    let (feed, changes) = ChangeFeed::new();
    let source = state_source(&args, &resolved, feed.clone(), &shutdown).await?;
    let opts = SyncOptions {
        min_sync_period: resolved.min_sync_period,
        sync_period: resolved.sync_period,
        families,
        node: resolved.node.clone(),
        flannel,
    };
    tracing::info!(node = %opts.node.node_name, families = ?opts.families, mode = ?resolved.mode, "starting kubenat");
    let health_checks =
        Some(HealthCheckServers::new(IpAddr::from([0, 0, 0, 0]), shutdown.clone()).with_health(health.clone()));
    let mut syncer = Syncer::new(opts, ipt, Arc::new(ExecConntrack { netns: None }), metrics, health);
    if let Some((config, bind)) = resolved.userspace.clone() {
        raise_nofile_limit();
        let node_ip = args.kube.node_ip.iter().copied().find(|ip| ip.is_ipv4());
        syncer = syncer.with_userspace(Proxier::new(config, shutdown.clone()).with_node_ip(node_ip), bind);
    }
    let sync_loop = SyncLoop { syncer, source, feed, changes, health_checks, flannel: Some(subnet_watch.subscribe()) };
    let loop_handle = tokio::spawn(sync_loop.run(shutdown.clone()));
    run_until_stopped(loop_handle, config_watch, shutdown).await
}

/// The IP families to program: IPv4, and IPv6 with `--ipv6` or an IPv6 cluster CIDR (the
/// userspace proxy listens on one IPv4 address, as kube-proxy's did).
fn families(args: &DaemonArgs, resolved: &Resolved, flannel: Option<&subnet_env::SubnetEnv>) -> Vec<IpFamily> {
    let v6_cidr = resolved.node.cluster_cidr(IpFamily::V6, flannel).is_some();
    if resolved.mode == ProxyMode::Iptables && args.ipv6.unwrap_or(v6_cidr) {
        vec![IpFamily::V4, IpFamily::V6]
    } else {
        vec![IpFamily::V4]
    }
}

/// The healthz and metrics servers (`/configz` serves the effective configuration).
async fn start_servers(
    resolved: &Resolved,
    health: &HealthState,
    registry: prometheus_client::registry::Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let hard_fail = resolved.effective.config.bind_address_hard_fail;
    if let Some(addr) = resolved.healthz {
        let (state, stop) = (health.clone(), shutdown.clone());
        let serve = move |listener| health::serve_healthz(listener, state, stop);
        start_server("--healthz-bind-address", addr, hard_fail, shutdown.clone(), serve).await?;
    }
    if let Some(addr) = resolved.metrics {
        let mode = match resolved.mode {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Userspace => "userspace",
        };
        let config = serde_json::to_value(&resolved.effective.config).unwrap_or_default();
        let configz = Arc::new(serde_json::json!({ "kubeproxy.config.k8s.io": config }));
        let server = health::MetricsServer { registry: Arc::new(registry), proxy_mode: mode, configz };
        let stop = shutdown.clone();
        let serve = move |listener| health::serve_metrics(listener, server, stop);
        start_server("--metrics-bind-address", addr, hard_fail, shutdown.clone(), serve).await?;
    }
    Ok(())
}

/// Where the cluster state comes from: the API, or `--objects` manifest files.
async fn state_source(
    args: &DaemonArgs,
    resolved: &Resolved,
    feed: Arc<ChangeFeed>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn StateSource>> {
    let endpoints_source = match args.endpoints_source {
        EndpointsSourceArg::Endpoints => EndpointsSource::Endpoints,
        EndpointsSourceArg::Endpointslices => EndpointsSource::EndpointSlices,
        EndpointsSourceArg::Auto => EndpointsSource::Auto,
    };
    let node = resolved.node.node_name.clone();
    Ok(if args.objects.is_empty() {
        let client = client(resolved, args.kube.master.as_ref()).await?;
        Arc::new(ApiSource::start(client, &node, endpoints_source, feed, shutdown.clone()))
    } else {
        let objects = args.objects.clone();
        Arc::new(FileSource::start(objects, node, endpoints_source, Duration::from_secs(1), feed, shutdown.clone()))
    })
}

/// Waits for SIGTERM/SIGINT (exit 0), the sync loop's end (an error), or a changed `--config`
/// file (exit 1, as kube-proxy, so the kubelet restarts the pod with it); rules stay in place.
async fn run_until_stopped(
    mut loop_handle: tokio::task::JoinHandle<()>,
    config_watch: Option<ConfigWatch>,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let config_changed = async {
        match config_watch {
            Some(watch) => watch.changed(config::watch::POLL_INTERVAL, CancellationToken::new()).await,
            None => std::future::pending().await,
        }
    };
    let code = tokio::select! {
        _ = wait_for_signal() => {
            tracing::info!("shutting down; rules stay in place");
            ExitCode::SUCCESS
        }
        _ = &mut loop_handle => {
            shutdown.cancel();
            bail!("the sync loop stopped unexpectedly (rules stay in place); exiting so the node agent is restarted");
        }
        change = config_changed => {
            tracing::error!(change = %change, "the configuration file changed; exiting so kubenat restarts with it (rules stay in place)");
            ExitCode::FAILURE
        }
    };
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), loop_handle).await;
    Ok(code)
}

/// How long kube-proxy waits before binding a healthz/metrics address again.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// Binds `addr` and runs `serve` on it in a task. A bind failure is fatal with
/// `--bind-address-hard-fail`; otherwise it is logged and retried every 5 s, as kube-proxy does.
async fn start_server<F, Fut>(
    flag: &'static str,
    addr: SocketAddr,
    hard_fail: bool,
    shutdown: CancellationToken,
    serve: F,
) -> anyhow::Result<()>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send,
{
    let first = tokio::net::TcpListener::bind(addr).await;
    let listener = match first {
        Ok(listener) => listener,
        Err(err) if hard_fail => {
            return Err(anyhow::Error::new(err).context(format!("{flag} {addr} (--bind-address-hard-fail is set)")))
        }
        Err(err) => {
            tracing::warn!(%addr, error = %err, "{flag}: cannot bind; retrying every 5 s (--bind-address-hard-fail=true makes this fatal)");
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(BIND_RETRY) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(listener) => {
                            tracing::info!(%addr, "{flag}: bound after retrying");
                            serve(listener).await;
                            return;
                        }
                        Err(err) => tracing::warn!(%addr, error = %err, "{flag}: still cannot bind; retrying in 5 s"),
                    }
                }
            });
            return Ok(());
        }
    };
    tokio::spawn(async move {
        serve(listener).await;
    });
    Ok(())
}

/// The current (soft, hard) open-file limits, from `/proc/self/limits`.
fn nofile_limits() -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.trim_start_matches("Max open files").split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
}

/// Userspace mode holds two descriptors per proxied connection: raise RLIMIT_NOFILE to 64000
/// like kube-proxy did (or at least the soft limit to the hard one), via `prlimit`, without
/// unsafe code.
fn raise_nofile_limit() {
    let pid = std::process::id().to_string();
    let set = |value: &str| {
        std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={value}:{value}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let hard = nofile_limits().map(|(_, hard)| hard).unwrap_or_default();
    let enough = hard == "unlimited" || hard.parse::<u64>().is_ok_and(|h| h >= 64_000);
    if (enough && set("64000")) || (!enough && (set("64000") || set(&hard))) {
        let (soft, hard) = nofile_limits().unwrap_or_default();
        tracing::info!(soft, hard, "open-file limit for the userspace proxy");
    } else {
        tracing::warn!(
            "could not raise the open-file limit (prlimit); the userspace proxy may run out of descriptors under load"
        );
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
