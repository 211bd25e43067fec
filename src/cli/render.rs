//! `kubenat render`: manifests → the iptables-restore input the daemon would apply.

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{bail, Context};
use kubenat::inspect::check::{self, Problem};
use kubenat::model::PortPlan;
use kubenat::rules::render::userspace;
use kubenat::rules::ruleset::{ChainName, RuleOp, Ruleset};

use super::common::{Prepared, RenderInput};

/// What `--proxy-mode` (or the file's `mode`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    /// kube-proxy's iptables mode (the restore body of KUBE-SERVICES and friends).
    Iptables,
    /// Legacy userspace mode: the KUBE-PORTALS-* / KUBE-NODEPORT-* portal rules only.
    Userspace,
}

/// Arguments of `kubenat render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: RenderInput,
    /// Also emit the jumps from the built-in chains (`-I PREROUTING 1 …`), for loading into an
    /// empty network namespace. Applying them twice duplicates them: on a live node use
    /// `kubenat apply`, which inserts only the missing ones.
    #[arg(long)]
    jumps: bool,
    /// Run the jump-consistency checker on the result and fail (exit 2) on any problem.
    #[arg(long)]
    check: bool,
    /// Userspace mode: first proxy port; service ports get consecutive ports in service order
    /// (a deterministic plan for offline use; a live userspace proxy picks free ports).
    #[arg(long, default_value_t = 36000, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    proxy_port_start: u16,
}

impl Args {
    /// The kube-proxy flags given.
    pub fn kube(&self) -> &kubenat::config::KubeProxyFlags {
        &self.input.kube
    }
}

/// The userspace portal rules, plus (with `--jumps`) the built-in jumps at their own positions.
fn userspace_ruleset(args: &Args, prepared: &Prepared) -> anyhow::Result<Ruleset> {
    let family = prepared.node.family;
    // Userspace mode: the address proxy sockets bind to (0.0.0.0/:: = REDIRECT, else DNAT).
    let bind: IpAddr = prepared.config.bind_address.parse().context("--bind-address")?;
    if bind.is_loopback() {
        bail!("--bind-address {bind}: a loopback bind address cannot serve portals (kube-proxy refused it too)");
    }
    let host_ip = if bind.is_unspecified() {
        prepared.node.node_ips.iter().copied().find(|ip| family.contains(ip)).with_context(|| {
            format!("userspace mode with an unspecified --bind-address needs an {family} node IP (--node-ip or the Node object)")
        })?
    } else if family.contains(&bind) {
        bind
    } else {
        bail!("--bind-address {bind} is not an {family} address");
    };
    let plan = PortPlan::sequential(&prepared.state, args.proxy_port_start)?;
    let ruleset = userspace::render_portals(&prepared.state, &prepared.node, &plan, bind, host_ip);
    Ok(if args.jumps { userspace::with_userspace_jumps(ruleset, &userspace::userspace_jump_rules()) } else { ruleset })
}

/// Jump-consistency problems of a userspace ruleset. Its chains are reached only through the
/// built-in jumps (checked with them even when not printed), and those jumps exist even when a
/// chain is empty (no NodePorts, say), as upstream always ensured them: that is not a problem.
fn userspace_problems(ruleset: Ruleset, has_jumps: bool) -> Vec<Problem> {
    let ruleset =
        if has_jumps { ruleset } else { userspace::with_userspace_jumps(ruleset, &userspace::userspace_jump_rules()) };
    let userspace_chain = |c: &str| userspace::userspace_jump_rules().iter().any(|j| j.rule.target() == Some(c));
    check::check(&ruleset)
        .into_iter()
        .filter(|p| !matches!(p, Problem::JumpToEmptyChain { chain, target, .. } if ChainName::new(chain.as_str()).is_ok_and(|c| c.is_builtin()) && userspace_chain(target)))
        .collect()
}

/// Adds the built-in jumps as `-I CHAIN 1` rules, in the order kube-proxy ensures them.
pub fn with_jumps(mut ruleset: Ruleset, jumps: &[kubenat::rules::render::JumpRule]) -> Ruleset {
    for jump in jumps {
        let mut rule = jump.rule.clone();
        rule.op = RuleOp::Insert(Some(1));
        ruleset.table_mut(jump.table).rules.push(rule);
    }
    ruleset
}

/// Runs `kubenat render`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let prepared = args.input.prepare()?;
    let mode = if prepared.config.mode == "userspace" { ProxyMode::Userspace } else { ProxyMode::Iptables };
    let ruleset = match mode {
        ProxyMode::Iptables if args.jumps => with_jumps(prepared.ruleset(), &prepared.jumps()),
        ProxyMode::Iptables => prepared.ruleset(),
        ProxyMode::Userspace => userspace_ruleset(&args, &prepared)?,
    };
    if args.check {
        let problems = match mode {
            ProxyMode::Iptables => check::check(&ruleset),
            ProxyMode::Userspace => userspace_problems(ruleset.clone(), args.jumps),
        };
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("kubenat: check: {p}");
            }
            anyhow::bail!("{} jump-consistency problem(s) in the rendered rules", problems.len());
        }
    }
    // Stdout is line-buffered: a 10k-service ruleset would be 430k writes. One large buffer.
    let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    write!(stdout, "{ruleset}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    // The process exits next: freeing a 10k-service ruleset and state object by object would
    // take longer than writing them (hundreds of thousands of allocations); exit frees it all.
    std::mem::forget(ruleset);
    std::mem::forget(prepared);
    Ok(ExitCode::SUCCESS)
}
