//! `kubenat render`: manifests → the iptables-restore input the daemon would apply.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use kubenat::iptables::ruleset::{RuleOp, Ruleset};

use super::common::RenderInput;

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
}

/// Adds the built-in jumps as `-I CHAIN 1` rules, in the order kube-proxy ensures them.
pub fn with_jumps(mut ruleset: Ruleset, jumps: &[kubenat::iptables::render::JumpRule]) -> Ruleset {
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
    let mut ruleset = prepared.ruleset();
    if args.jumps {
        ruleset = with_jumps(ruleset, &prepared.jumps());
    }
    if args.check {
        let problems = kubenat::iptables::check::check(&ruleset);
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("kubenat: check: {p}");
            }
            anyhow::bail!("{} jump-consistency problem(s) in the rendered rules", problems.len());
        }
    }
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{ruleset}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}
