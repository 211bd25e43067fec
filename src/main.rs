//! The `kubenat` command line: the node daemon (no subcommand) and the offline tools
//! (`render`, `diff`, `trace`, `apply`, `explain`).
#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: faster, and it gives memory back (measurements
/// next to the dependency in Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kubenat: kube-proxy-compatible service NAT with iptables-restore.
#[derive(Debug, Parser)]
#[command(name = "kubenat", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `kubenat=debug` [default: info
    /// for the daemon, warn for the offline tools].
    #[arg(long, env = "KUBENAT_LOG", global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: cli::daemon::DaemonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render manifests into the iptables-restore input the daemon would apply.
    Render(cli::render::Args),
    /// Semantic diff of two iptables-save / iptables-restore dumps (exit 0 equal, 1 differ, 2 error).
    Diff(cli::diff::Args),
    /// Explain where a packet goes through the rules.
    Trace(cli::trace::Args),
    /// Render manifests and apply them to this network namespace with iptables-restore (one-shot sync).
    Apply(cli::apply::Args),
    /// Why a Service does (not) work on this node, or the node's own checks (exit 0 ok, 1 degraded/broken, 2 error).
    Explain(cli::explain::Args),
}

impl Command {
    /// The logging flags given to an offline tool (`-v`, `--logging-format`).
    fn logging(&self) -> kubenat::config::types::Logging {
        let flags = match self {
            Command::Render(args) => Some(args.kube()),
            Command::Trace(args) => Some(args.kube()),
            Command::Apply(args) => Some(args.kube()),
            Command::Explain(args) => Some(args.kube()),
            Command::Diff(_) => None,
        };
        kubenat::config::types::Logging {
            verbosity: flags.and_then(|f| f.verbosity).unwrap_or(0),
            format: flags.and_then(|f| f.logging_format.clone()).unwrap_or_else(|| "text".into()),
            ..Default::default()
        }
    }
}

/// A command-line error as one line (plus clap's tip, if any), like kube-proxy's flag errors;
/// `--help` and `--version` print as usual.
fn parse_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let text = err.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid command line").trim_start_matches("error: ");
    let tip = lines.find(|l| l.starts_with("tip:")).map(|t| format!("; {t}")).unwrap_or_default();
    eprintln!("kubenat: error: {first}{tip} (kubenat --help lists every flag)");
    ExitCode::from(2)
}

/// Makes mimalloc return the memory freed on this thread (and abandoned by others) to the system
/// now rather than later: run by the daemon after a full sync.
#[allow(unsafe_code)]
fn release_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> ExitCode {
    kubenat::sync::set_release_memory(release_memory);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return parse_error(err),
    };
    // The daemon sets up logging from its effective configuration; the offline tools stay quiet
    // (warnings only) unless -v or --log says otherwise.
    if let Some(command) = &cli.command {
        let logging = command.logging();
        cli::logging::init(cli.log.as_deref(), &logging, "warn");
    }
    let result = match cli.command {
        Some(Command::Render(args)) => cli::render::run(args),
        Some(Command::Diff(args)) => cli::diff::run(args),
        Some(Command::Trace(args)) => cli::trace::run(args),
        Some(Command::Apply(args)) => cli::apply::run(args),
        Some(Command::Explain(args)) => cli::explain::run(args),
        None => cli::daemon::run(cli.daemon, cli.log.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kubenat: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
