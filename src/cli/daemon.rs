//! The daemon's command line: kube-proxy's flags plus kubenat's own, the process-level steps
//! (logging, `--write-config-to`, `--cleanup`, `--init-only`), and signals and the
//! configuration-file watch around [`kubenat::daemon::run`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kubenat::apply::exec::Backend;
use kubenat::config::effective::Level;
use kubenat::config::flags::parse_go_bool;
use kubenat::config::watch::ConfigWatch;
use kubenat::config::{self, DaemonConfig, KubeProxyFlags};
use kubenat::daemon::{self, Config, Options};
use kubenat::flannel::subnet_env;
use kubenat::k8s::convert::EndpointsSource;
use kubenat::userspace::Limits;
use tokio_util::sync::CancellationToken;

use super::apply::BackendArg;
use super::common::EndpointsSourceArg;

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

impl DaemonArgs {
    /// kubenat's own options, as the library takes them.
    fn options(&self) -> Options {
        Options {
            backend: match self.iptables_backend {
                BackendArg::Auto => None,
                BackendArg::Nft => Some(Backend::Nft),
                BackendArg::Legacy => Some(Backend::Legacy),
            },
            dry_run: self.dry_run,
            objects: self.objects.clone(),
            endpoints_source: match self.endpoints_source {
                EndpointsSourceArg::Endpoints => EndpointsSource::Endpoints,
                EndpointsSourceArg::Endpointslices => EndpointsSource::EndpointSlices,
                EndpointsSourceArg::Auto => EndpointsSource::Auto,
            },
            flannel_subnet_file: self.flannel_subnet_file.clone(),
            udp_timeout: self.udp_timeout,
            tcp: match self.userspace_relay {
                RelayArg::Splice => Limits::default(),
                RelayArg::Copy => Limits { pipes: None, ..Limits::default() },
            },
            ipv6: self.ipv6,
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT, or until the `--config` file changes (or performs
/// `--write-config-to`, `--cleanup` or `--init-only` and exits). Sets up logging itself, from
/// the effective configuration; `log_filter` is `--log`.
pub fn run(args: DaemonArgs, log_filter: Option<&str>) -> anyhow::Result<ExitCode> {
    // Fingerprint the file as it was read: a change from here on restarts the pod.
    let config_watch = args.kube.config.clone().map(ConfigWatch::new);
    let proxy = DaemonConfig::resolve(&args.kube)?;
    super::logging::init(log_filter, &proxy.effective.config.logging, "info");
    for note in &proxy.effective.notes {
        match note.level {
            Level::Info => tracing::info!("{}", note.text),
            Level::Warn => tracing::warn!("{}", note.text),
        }
    }
    if let Some(path) = &args.kube.write_config_to {
        std::fs::write(path, proxy.effective.to_yaml())
            .with_context(|| format!("--write-config-to {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote the effective configuration");
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config { proxy, options: args.options() };
    if args.cleanup == Some(true) {
        return Ok(cleanup(&config));
    }
    let failed_steps = daemon::init(&config);
    if args.kube.init_only == Some(true) {
        let failed = daemon::check_host(&config);
        tracing::info!(failed_steps, failed_checks = failed, "--init-only: start-up steps done, exiting");
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_until_stopped(config, config_watch))
}

/// `--cleanup`: removes kube-proxy's and kubenat's rules in both families.
fn cleanup(config: &Config) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for (family, result) in daemon::cleanup(config) {
        match result {
            Ok(report) => println!("{family}: removed {} jump rules and {} chains", report.jumps, report.chains),
            Err(err) => {
                eprintln!("kubenat: cleanup: {:#}", anyhow::Error::new(err));
                code = ExitCode::FAILURE;
            }
        }
    }
    code
}

/// Runs the daemon until SIGTERM/SIGINT (exit 0), its own end (an error), or a changed
/// `--config` file (exit 1, as kube-proxy, so the kubelet restarts the pod with it); rules stay
/// in place.
async fn run_until_stopped(config: Config, config_watch: Option<ConfigWatch>) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let mut daemon = tokio::spawn(daemon::run(config, shutdown.clone()));
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
        ended = &mut daemon => {
            let err = match ended {
                Ok(Ok(())) => anyhow::anyhow!("the daemon stopped unexpectedly"),
                Ok(Err(err)) => anyhow::Error::new(err),
                Err(join) => anyhow::Error::new(join).context("the daemon task failed"),
            };
            return Err(err.context("exiting so the node agent restarts kubenat"));
        }
        change = config_changed => {
            tracing::error!(change = %change, "the configuration file changed; exiting so kubenat restarts with it (rules stay in place)");
            ExitCode::FAILURE
        }
    };
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(12), daemon).await;
    Ok(code)
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
