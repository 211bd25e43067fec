//! `kubenat diff A B`: semantic diff of two iptables-save / iptables-restore dumps, for CI.
//! Exit 0 when equal, 1 when different (report on stdout), 2 on error (via `Err`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use kubenat::inspect::diff::{diff, DiffOptions};
use kubenat::rules::parse::parse;
use kubenat::rules::ruleset::Ruleset;

/// Arguments of `kubenat diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// First dump (`-` reads stdin).
    #[arg(value_name = "A")]
    a: PathBuf,
    /// Second dump (`-` reads stdin; at most one of A and B).
    #[arg(value_name = "B")]
    b: PathBuf,
    /// Compare only the chains kube-proxy/kubenat own (KUBE-*, not the kubelet's), and in
    /// built-in chains only the jumps to them.
    #[arg(long)]
    kube_only: bool,
    /// Print nothing; the exit code says whether the dumps differ.
    #[arg(long, short)]
    quiet: bool,
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Reads and parses one dump; errors name the file (and the line, from the parser).
fn load(path: &Path) -> anyhow::Result<Ruleset> {
    let (name, text) = if is_stdin(path) {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading stdin")?;
        ("<stdin>".to_string(), text)
    } else {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        (path.display().to_string(), text)
    };
    parse(&text).with_context(|| format!("parsing {name}"))
}

/// Runs `kubenat diff`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if is_stdin(&args.a) && is_stdin(&args.b) {
        bail!("only one of A and B can be - (stdin)");
    }
    let a = load(&args.a)?;
    let b = load(&args.b)?;
    let opts = DiffOptions { kube_only: args.kube_only };
    let result = diff(&a, &b, &opts);
    if result.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.quiet {
        let mut stdout = std::io::stdout().lock();
        write!(stdout, "{result}").context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
    }
    Ok(ExitCode::from(1))
}
