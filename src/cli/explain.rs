//! `kubenat explain service NS/NAME` and `kubenat explain node`: why a Service does (not) work
//! on this node. Desired state from `--objects` (with every render flag) or, without them, from
//! the API server (`--kubeconfig`, `--master` or in-cluster); observed state from
//! this (or `--netns`'s) rules, conntrack table and sysctls — or from `--rules DUMP` offline.
//! Exit 0 when ok, 1 when degraded or broken, 2 on error (via `Err`).

mod gather;

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use kubenat::inspect::explain::{self, Desired, Observed, PortSelector, Query, Verdict};

use super::common::{Prepared, RenderInput};
use super::render::with_jumps;

/// `-o` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: verdict, problems with fixes, paths.
    Text,
    /// One JSON object on one line (the contract in docs/explain.md).
    Json,
}

/// Arguments of `kubenat explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Why one Service does (not) work on this node.
    Service(ServiceArgs),
    /// The node's own checks, and per problem code how many services have it.
    Node(Source),
}

#[derive(Debug, clap::Args)]
struct ServiceArgs {
    /// The Service.
    #[arg(value_name = "NAMESPACE/NAME")]
    service: String,
    /// Only this port (its name or number).
    #[arg(long, value_name = "NAME|NUMBER")]
    port: Option<String>,
    /// Walk the paths from this client address (and check loadBalancerSourceRanges for it).
    #[arg(long, value_name = "IP")]
    from: Option<IpAddr>,
    #[command(flatten)]
    source: Source,
}

/// Where desired and observed state come from, and the output format.
#[derive(Debug, clap::Args)]
struct Source {
    /// The objects and every kube-proxy flag, as `kubenat render` takes them.
    #[command(flatten)]
    render: RenderInput,
    /// Judge this iptables-save dump (`-` reads stdin) instead of the node: offline, so no
    /// conntrack, sysctl or backend checks.
    #[arg(long, value_name = "DUMP", conflicts_with = "netns")]
    rules: Option<PathBuf>,
    /// Read the rules, conntrack table and sysctls of this network namespace (`ip netns`).
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
}

impl Args {
    /// The kube-proxy flags given.
    pub fn kube(&self) -> &kubenat::config::KubeProxyFlags {
        match &self.what {
            What::Service(args) => &args.source.render.kube,
            What::Node(source) => &source.render.kube,
        }
    }
}

impl Source {
    /// Desired state (objects rendered with the jumps) and observed state.
    fn load(&self) -> anyhow::Result<(Prepared, kubenat::rules::ruleset::Ruleset, Observed)> {
        let mut prepared =
            if self.render.objects.is_empty() { self.prepare_from_api()? } else { self.render.prepare()? };
        let live = self.rules.is_none();
        if live && self.render.node_addresses.is_empty() {
            // As the daemon does before every sync: the addresses NodePorts answer on.
            let family = prepared.node.family;
            let probed = gather::interface_addresses(self.netns.as_deref())?;
            prepared.node.local_addresses = probed.into_iter().filter(|net| family.contains(&net.addr())).collect();
        }
        let rules = with_jumps(prepared.ruleset(), &prepared.jumps());
        let observed = match &self.rules {
            Some(path) => gather::offline(path)?,
            None => {
                let health = gather::health_address(&prepared.config.healthz_bind_address);
                gather::live(self.netns.as_deref(), prepared.node.family, health)?
            }
        };
        Ok((prepared, rules, observed))
    }
}

impl Source {
    /// Desired state from the API server (`--kubeconfig`, `--master` or in-cluster), listed
    /// once with the daemon's client and label selectors.
    fn prepare_from_api(&self) -> anyhow::Result<Prepared> {
        let (opts, config) = self.render.options()?;
        let daemon = kubenat::config::DaemonConfig::resolve(&self.render.kube)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
        let endpoints = self.render.endpoints_source();
        let objects = runtime
            .block_on(async {
                let client = kubenat::daemon::api_client(&daemon).await?;
                anyhow::Ok(kubenat::k8s::list::list_objects(client, &opts.node_name, endpoints).await?)
            })
            .context("no --objects given, so reading them from the API server")?;
        self.render.prepare_objects(&objects, Vec::new(), opts, config)
    }
}

/// Parses `NAMESPACE/NAME`.
fn service_name(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => bail!("{text:?} is not NAMESPACE/NAME (e.g. kube-system/kube-dns)"),
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn exit_code(verdict: Verdict) -> ExitCode {
    if verdict == Verdict::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_service(args: ServiceArgs) -> anyhow::Result<ExitCode> {
    let (namespace, name) = service_name(&args.service)?;
    let (prepared, rules, observed) = args.source.load()?;
    let query = Query { namespace, name, port: args.port.as_deref().map(PortSelector::parse), from: args.from };
    let desired = Desired { state: &prepared.state, node: &prepared.node, rules: &rules };
    let report = explain::explain_service(&query, desired, &observed)?;
    match args.source.output {
        Format::Json => print(&format!("{}\n", serde_json::to_string(&report).context("encoding JSON")?))?,
        Format::Text => print(&explain::write_text(&report, colour()))?,
    }
    Ok(exit_code(report.verdict))
}

fn run_node(source: Source) -> anyhow::Result<ExitCode> {
    let (prepared, rules, observed) = source.load()?;
    let desired = Desired { state: &prepared.state, node: &prepared.node, rules: &rules };
    let report = explain::explain_node(desired, &observed);
    match source.output {
        Format::Json => print(&format!("{}\n", serde_json::to_string(&report).context("encoding JSON")?))?,
        Format::Text => print(&explain::write_node_text(&report, colour()))?,
    }
    Ok(exit_code(report.verdict))
}

/// Runs `kubenat explain`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Service(args) => run_service(args),
        What::Node(source) => run_node(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert_eq!(service_name("kube-system/kube-dns").unwrap(), ("kube-system".into(), "kube-dns".into()));
        for bad in ["kube-dns", "/x", "x/", "a/b/c"] {
            assert!(service_name(bad).unwrap_err().to_string().contains("NAMESPACE/NAME"), "{bad}");
        }
    }
}
