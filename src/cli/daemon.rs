//! The node daemon (`kubenat` with no subcommand): kube-proxy's flags and `--config` file,
//! merged flag > file > default, then the watchers, the sync loop and the HTTP servers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ipnet::IpNet;
use kubenat::config::{self, DetectLocalMode, KubeProxyConfiguration, NodeOptions};
use kubenat::conntrack::ExecConntrack;
use kubenat::flannel::subnet_env;
use kubenat::flannel::watch::{self, SubnetWatch};
use kubenat::health::{self, HealthState};
use kubenat::healthcheck::HealthCheckServers;
use kubenat::iptables::cleanup;
use kubenat::iptables::exec::{Backend, ExecIptables, Iptables};
use kubenat::iptables::fake::FakeIptables;
use kubenat::k8s::convert::EndpointsSource;
use kubenat::k8s::watch::{ApiSource, ChangeFeed, FileSource, StateSource};
use kubenat::metrics::Metrics;
use kubenat::model::{IpFamily, ServicesDispatch};
use kubenat::startup::{self, CheckConfig};
use kubenat::sync::{self, SyncOptions, Syncer};
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

/// The daemon's flags (kube-proxy's names; each also from a `KUBENAT_*` environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Proxy mode.
    #[arg(long = "proxy-mode", alias = "mode", value_enum, env = "KUBENAT_PROXY_MODE")]
    proxy_mode: Option<ProxyMode>,
    /// A `KubeProxyConfiguration` file; flags given on the command line override it.
    #[arg(long, value_name = "FILE", env = "KUBENAT_CONFIG")]
    config: Option<PathBuf>,
    /// kubeconfig for the API server (default: in-cluster config, then ~/.kube/config).
    #[arg(long, value_name = "FILE", env = "KUBENAT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// API server address (overrides the kubeconfig's).
    #[arg(long, value_name = "URL", env = "KUBENAT_MASTER")]
    master: Option<String>,
    /// Node name (default: $NODE_NAME, else the hostname).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    hostname_override: Option<String>,
    /// Pod network CIDR(s), comma-separated (default: flannel's FLANNEL_NETWORK).
    #[arg(long, value_name = "CIDR", value_delimiter = ',', env = "KUBENAT_CLUSTER_CIDR")]
    cluster_cidr: Option<Vec<IpNet>>,
    /// ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix or none.
    #[arg(long, value_name = "MODE", env = "KUBENAT_DETECT_LOCAL_MODE")]
    detect_local_mode: Option<String>,
    /// Bridge for `--detect-local-mode BridgeInterface`.
    #[arg(long, value_name = "NAME", env = "KUBENAT_POD_BRIDGE_INTERFACE")]
    pod_bridge_interface: Option<String>,
    /// Interface prefix for `--detect-local-mode InterfaceNamePrefix`.
    #[arg(long, value_name = "PREFIX", env = "KUBENAT_POD_INTERFACE_NAME_PREFIX")]
    pod_interface_name_prefix: Option<String>,
    /// Masquerade all ClusterIP traffic.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", env = "KUBENAT_MASQUERADE_ALL")]
    masquerade_all: Option<bool>,
    /// Bit of the packet mark used for masquerading (0–31).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=31), env = "KUBENAT_IPTABLES_MASQUERADE_BIT")]
    iptables_masquerade_bit: Option<u8>,
    /// Forced full sync interval (default 30s).
    #[arg(long, value_parser = humantime::parse_duration, env = "KUBENAT_IPTABLES_SYNC_PERIOD")]
    iptables_sync_period: Option<Duration>,
    /// Minimum gap between syncs (default 1s).
    #[arg(long, value_parser = humantime::parse_duration, env = "KUBENAT_IPTABLES_MIN_SYNC_PERIOD")]
    iptables_min_sync_period: Option<Duration>,
    /// CIDRs (or `primary`) whose addresses accept NodePorts (default: all local addresses).
    #[arg(long, value_delimiter = ',', value_name = "CIDR", env = "KUBENAT_NODEPORT_ADDRESSES")]
    nodeport_addresses: Option<Vec<String>>,
    /// Allow NodePorts on 127.0.0.1.
    #[arg(long, value_name = "BOOL", env = "KUBENAT_IPTABLES_LOCALHOST_NODEPORTS")]
    iptables_localhost_nodeports: Option<bool>,
    /// `/healthz` and `/livez` address; empty disables.
    #[arg(long, value_name = "IP:PORT", env = "KUBENAT_HEALTHZ_BIND_ADDRESS")]
    healthz_bind_address: Option<String>,
    /// `/metrics` address; empty disables.
    #[arg(long, value_name = "IP:PORT", env = "KUBENAT_METRICS_BIND_ADDRESS")]
    metrics_bind_address: Option<String>,
    /// Remove kube-proxy's and kubenat's rules and exit.
    #[arg(long, env = "KUBENAT_CLEANUP")]
    cleanup: bool,
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
    /// Userspace mode: range for the proxy ports (`begin-end`, `begin+offset`; empty = any).
    #[arg(long, value_name = "RANGE", env = "KUBENAT_PROXY_PORT_RANGE")]
    proxy_port_range: Option<String>,
    /// Userspace mode: idle time after which a UDP session is dropped.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms", env = "KUBENAT_UDP_TIMEOUT")]
    udp_timeout: Duration,
    /// Userspace mode: how TCP bytes are relayed: `splice` (zero-copy through a bounded pool of
    /// pipes, copying when none is free) or `copy` (through buffers only).
    #[arg(long, value_enum, default_value = "splice", env = "KUBENAT_USERSPACE_RELAY")]
    userspace_relay: RelayArg,
    /// Userspace mode: address the proxy sockets listen on (0.0.0.0 = all; loopback refused).
    #[arg(long, value_name = "IP", env = "KUBENAT_BIND_ADDRESS")]
    bind_address: Option<IpAddr>,
    /// The node's IP(s) (default: the Node object's InternalIP); userspace mode DNATs
    /// node-originated service traffic to it (default there: the node's own source address
    /// toward the cluster IPs, i.e. the default-route interface's on most nodes).
    #[arg(long, value_name = "IP", value_delimiter = ',', env = "KUBENAT_NODE_IP")]
    node_ip: Vec<IpAddr>,
    /// Layout of nat KUBE-SERVICES: `flat` (kube-proxy's, default) or `tree` (destination-prefix
    /// dispatch: a new connection walks O(log N) rules instead of every service's).
    #[arg(long, value_name = "flat|tree", env = "KUBENAT_SERVICES_DISPATCH")]
    services_dispatch: Option<String>,
    /// Also program IPv6 (ip6tables); default: when an IPv6 cluster CIDR is configured.
    #[arg(long, value_name = "BOOL", env = "KUBENAT_IPV6")]
    ipv6: Option<bool>,
}

/// Everything resolved from flags, file and defaults.
struct Resolved {
    mode: ProxyMode,
    userspace: Option<(ProxierConfig, IpAddr)>,
    node: NodeOptions,
    sync_period: Duration,
    min_sync_period: Duration,
    healthz: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    kubeconfig: Option<PathBuf>,
}

fn bind_address(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    // kube-proxy accepts a bare IP (port defaulted) or IP:port.
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    bail!("{flag} {value:?} is not IP:PORT (or empty to disable)")
}

fn go_duration(flag: &str, value: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(value).with_context(|| format!("{flag}: {value:?} is not a duration like 30s"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_lowercase()).unwrap_or_default()
}

impl DaemonArgs {
    fn resolve(&self) -> anyhow::Result<Resolved> {
        let file = match &self.config {
            Some(path) => config::load_file(path)?,
            None => KubeProxyConfiguration::default(),
        };
        let mode = self.detect_local_mode.clone().or(file.detect_local_mode.clone()).unwrap_or_default();
        let detect_local_mode = DetectLocalMode::parse(&mode).with_context(|| {
            format!("--detect-local-mode {mode:?}: expected ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix or none")
        })?;
        let cluster_cidrs = match (&self.cluster_cidr, &file.cluster_cidr) {
            (Some(flag), _) => flag.clone(),
            (None, Some(text)) => text
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().with_context(|| format!("--config clusterCIDR: {s:?} is not a CIDR")))
                .collect::<anyhow::Result<_>>()?,
            (None, None) => Vec::new(),
        };
        let masquerade_bit = match (self.iptables_masquerade_bit, file.iptables.masquerade_bit) {
            (Some(bit), _) => bit,
            (None, Some(bit)) => u8::try_from(bit)
                .ok()
                .filter(|b| *b <= 31)
                .with_context(|| format!("--config iptables.masqueradeBit {bit} is not in 0-31"))?,
            (None, None) => 14,
        };
        let node_name = self
            .hostname_override
            .clone()
            .or(file.hostname_override.clone())
            .filter(|h| !h.trim().is_empty())
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(hostname);
        if node_name.is_empty() {
            bail!("--hostname-override: no node name (set it, or NODE_NAME)");
        }
        let node = NodeOptions {
            node_name,
            cluster_cidrs,
            detect_local_mode,
            pod_bridge_interface: self.pod_bridge_interface.clone().or(file.detect_local.bridge_interface.clone()),
            pod_interface_name_prefix: self
                .pod_interface_name_prefix
                .clone()
                .or(file.detect_local.interface_name_prefix.clone()),
            node_ips: self.node_ip.clone(),
            nodeport_addresses: self
                .nodeport_addresses
                .clone()
                .or(file.node_port_addresses.clone())
                .unwrap_or_default(),
            masquerade_all: self.masquerade_all.or(file.iptables.masquerade_all).unwrap_or(false),
            masquerade_bit,
            localhost_nodeports: self
                .iptables_localhost_nodeports
                .or(file.iptables.localhost_node_ports)
                .unwrap_or(true),
            services_dispatch: {
                let text = self.services_dispatch.clone().or(file.iptables.services_dispatch.clone());
                let text = text.unwrap_or_else(|| "flat".into());
                ServicesDispatch::parse(&text)
                    .with_context(|| format!("--services-dispatch {text:?}: expected flat or tree"))?
            },
            ..NodeOptions::default()
        };
        node.validate()?;
        let sync_period = match (self.iptables_sync_period, &file.iptables.sync_period) {
            (Some(d), _) => d,
            (None, Some(text)) => go_duration("--config iptables.syncPeriod", text)?,
            (None, None) => Duration::from_secs(30),
        };
        let min_sync_period = match (self.iptables_min_sync_period, &file.iptables.min_sync_period) {
            (Some(d), _) => d,
            (None, Some(text)) => go_duration("--config iptables.minSyncPeriod", text)?,
            (None, None) => Duration::from_secs(1),
        };
        if sync_period.is_zero() {
            bail!("--iptables-sync-period must be greater than 0");
        }
        let healthz_text =
            self.healthz_bind_address.clone().or(file.healthz_bind_address.clone()).unwrap_or("0.0.0.0:10256".into());
        let metrics_text =
            self.metrics_bind_address.clone().or(file.metrics_bind_address.clone()).unwrap_or("127.0.0.1:10249".into());
        let mode = match (self.proxy_mode, file.mode.as_deref()) {
            (Some(mode), _) => mode,
            (None, None | Some("") | Some("iptables")) => ProxyMode::Iptables,
            (None, Some("userspace")) => ProxyMode::Userspace,
            (None, Some(other)) => bail!("--config mode {other:?}: kubenat supports iptables and userspace"),
        };
        let userspace = match mode {
            ProxyMode::Iptables => None,
            ProxyMode::Userspace => {
                let range_text = self.proxy_port_range.clone().or(file.port_range.clone()).unwrap_or_default();
                let range = PortRange::parse(&range_text).map_err(|e| anyhow::anyhow!("--proxy-port-range: {e}"))?;
                let bind = match (self.bind_address, &file.bind_address) {
                    (Some(ip), _) => ip,
                    (None, Some(text)) if !text.is_empty() => {
                        text.parse().with_context(|| format!("--config bindAddress {text:?} is not an IP"))?
                    }
                    _ => IpAddr::from([0, 0, 0, 0]),
                };
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
                Some((config, bind))
            }
        };
        Ok(Resolved {
            mode,
            userspace,
            node,
            sync_period,
            min_sync_period,
            healthz: bind_address("--healthz-bind-address", &healthz_text)?,
            metrics: bind_address("--metrics-bind-address", &metrics_text)?,
            kubeconfig: self.kubeconfig.clone().or(file.client_connection.kubeconfig.clone().map(PathBuf::from)),
        })
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
        opts: kubenat::iptables::exec::RestoreOptions,
    ) -> kubenat::iptables::exec::Result<()> {
        tracing::info!(%family, bytes = input.len(), "dry run: restore input follows\n{input}");
        self.0.restore(family, input, opts)
    }

    fn save(
        &self,
        family: IpFamily,
        table: Option<kubenat::iptables::ruleset::TableName>,
    ) -> kubenat::iptables::exec::Result<String> {
        self.0.save(family, table)
    }
}

async fn client(resolved: &Resolved, master: &Option<String>) -> anyhow::Result<kube::Client> {
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
    kube::Client::try_from(config).context("building the API client")
}

/// Runs the daemon until SIGTERM/SIGINT (or `--cleanup` and exit).
pub fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let resolved = args.resolve()?;
    if args.cleanup {
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
        return Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, resolved))
}

async fn serve(args: DaemonArgs, resolved: Resolved) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let subnet_watch = SubnetWatch::start(args.flannel_subnet_file.clone(), watch::DEFAULT_INTERVAL, shutdown.clone());
    let flannel = subnet_watch.current();
    let v6_cidr = resolved.node.cluster_cidr(IpFamily::V6, flannel.as_ref()).is_some();
    let mut families = vec![IpFamily::V4];
    // The userspace proxy listens on one IPv4 address, as kube-proxy's did.
    if resolved.mode == ProxyMode::Iptables && args.ipv6.unwrap_or(v6_cidr) {
        families.push(IpFamily::V6);
    }
    let (metrics, registry) = Metrics::new();
    let (ipt, backend) = args.iptables();
    let checks = CheckConfig {
        localhost_nodeports: resolved.node.localhost_nodeports,
        ipv6: families.contains(&IpFamily::V6),
        backend,
    };
    let check_metrics = metrics.clone();
    let _ = tokio::task::spawn_blocking(move || startup::check_host(&checks, &check_metrics)).await;
    let health = HealthState::new(resolved.sync_period * 2).with_metrics(metrics.clone());
    if let Some(addr) = resolved.healthz {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--healthz-bind-address {addr}"))?;
        tokio::spawn(health::serve_healthz(listener, health.clone(), shutdown.clone()));
    }
    if let Some(addr) = resolved.metrics {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--metrics-bind-address {addr}"))?;
        let mode = match resolved.mode {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Userspace => "userspace",
        };
        let configz = Arc::new(configz_body(&resolved, mode));
        let server = health::MetricsServer { registry: Arc::new(registry), proxy_mode: mode, configz };
        tokio::spawn(health::serve_metrics(listener, server, shutdown.clone()));
    }
    let (feed, changes) = ChangeFeed::new();
    let endpoints_source = match args.endpoints_source {
        EndpointsSourceArg::Endpoints => EndpointsSource::Endpoints,
        EndpointsSourceArg::Endpointslices => EndpointsSource::EndpointSlices,
        EndpointsSourceArg::Auto => EndpointsSource::Auto,
    };
    let source: Arc<dyn StateSource> = if args.objects.is_empty() {
        let client = client(&resolved, &args.master).await?;
        Arc::new(ApiSource::start(client, &resolved.node.node_name, endpoints_source, feed.clone(), shutdown.clone()))
    } else {
        Arc::new(FileSource::start(
            args.objects.clone(),
            resolved.node.node_name.clone(),
            endpoints_source,
            Duration::from_secs(1),
            feed.clone(),
            shutdown.clone(),
        ))
    };
    let conntrack = Arc::new(ExecConntrack { netns: None });
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
    let mut syncer = Syncer::new(opts, ipt, conntrack, metrics, health);
    if let Some((config, bind)) = resolved.userspace.clone() {
        raise_nofile_limit();
        let node_ip = args.node_ip.iter().copied().find(|ip| ip.is_ipv4());
        syncer = syncer.with_userspace(Proxier::new(config, shutdown.clone()).with_node_ip(node_ip), bind);
    }
    let loop_handle = tokio::spawn(sync::run(
        syncer,
        source,
        feed,
        changes,
        health_checks,
        Some(subnet_watch.subscribe()),
        shutdown.clone(),
    ));

    let mut loop_handle = loop_handle;
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = &mut loop_handle => {
            shutdown.cancel();
            bail!("the sync loop stopped unexpectedly (rules stay in place); exiting so the node agent is restarted");
        }
    }
    tracing::info!("shutting down; rules stay in place");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), loop_handle).await;
    Ok(ExitCode::SUCCESS)
}

/// `/configz`'s body, `{"kubeproxy.config.k8s.io": {…}}`, from what the daemon resolved:
/// a stand-in until the effective configuration is one serializable `KubeProxyConfiguration`.
fn configz_body(resolved: &Resolved, mode: &str) -> serde_json::Value {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let node = &resolved.node;
    let cidrs: Vec<String> = node.cluster_cidrs.iter().map(ToString::to_string).collect();
    let config = serde_json::json!({
        "bindAddress": resolved.userspace.as_ref().map(|(_, bind)| bind.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
        "healthzBindAddress": addr(resolved.healthz),
        "metricsBindAddress": addr(resolved.metrics),
        "hostnameOverride": node.node_name,
        "mode": mode,
        "clusterCIDR": cidrs.join(","),
        "nodePortAddresses": node.nodeport_addresses,
        "iptables": {
            "masqueradeAll": node.masquerade_all,
            "masqueradeBit": node.masquerade_bit,
            "localhostNodePorts": node.localhost_nodeports,
            "syncPeriod": go_duration_text(resolved.sync_period),
            "minSyncPeriod": go_duration_text(resolved.min_sync_period),
        },
    });
    serde_json::json!({ "kubeproxy.config.k8s.io": config })
}

/// A duration as Go's `time.Duration.String()` writes whole seconds (`30s`, `1m0s`, `1h0m0s`).
fn go_duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let millis = d.subsec_millis();
    let s = if millis == 0 { s.to_string() } else { format!("{s}.{millis:03}").trim_end_matches('0').to_string() };
    match (h, m) {
        (0, 0) if secs == 0 && millis > 0 => format!("{millis}ms"),
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
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
