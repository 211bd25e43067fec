//! `kubenat apply`: one-shot sync — render the manifests and apply them to this (or a named)
//! network namespace with `iptables-restore --noflush` through the daemon's applier (a full
//! sync): only missing jump rules inserted, stale per-service chains and the userspace mode's
//! chains deleted, big inputs written in pieces on nft. Safe to run repeatedly.

use std::process::ExitCode;

use anyhow::Context;
use kubenat::apply::exec::{Backend, ExecIptables};
use kubenat::{
    apply::{self, Applier, Mode},
    rules::extras::ApplyReport,
};

use super::common::RenderInput;

/// `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// Detect like kubelet and flannel do (the backend that holds the node's rules).
    Auto,
    /// `iptables-nft-restore`
    Nft,
    /// `iptables-legacy-restore`
    Legacy,
}

/// Arguments of `kubenat apply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: RenderInput,
    /// iptables backend.
    #[arg(long = "iptables-backend", alias = "backend", value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Apply inside this network namespace (`ip netns exec NAME`).
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Print the restore input that would be applied instead of applying it (one `*table …
    /// COMMIT` section per transaction, in order).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = kubenat::config::flags::parse_go_bool)]
    dry_run: Option<bool>,
}

impl Args {
    /// The kube-proxy flags given.
    pub fn kube(&self) -> &kubenat::config::KubeProxyFlags {
        &self.input.kube
    }
}

/// Runs `kubenat apply`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let prepared = args.input.prepare()?;
    let ruleset = prepared.ruleset();
    let jumps = prepared.jumps();
    let family = prepared.node.family;
    let ipt = match args.backend {
        BackendArg::Auto => ExecIptables::detected(args.netns.clone()),
        BackendArg::Nft => with_netns(ExecIptables::new(Backend::Nft), &args.netns),
        BackendArg::Legacy => with_netns(ExecIptables::new(Backend::Legacy), &args.netns),
    };
    if args.dry_run == Some(true) {
        let applier = Applier::new(&ipt, family, Mode::Iptables);
        let texts = applier.full_dry_run(&ruleset, &jumps).context("planning the apply")?;
        for text in texts {
            print!("{text}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report: ApplyReport = apply::apply_once(&ipt, family, &ruleset, &jumps)
        .with_context(|| format!("applying the {family} rules with {}", ipt.backend))?;
    println!(
        "applied {family} rules with {} backend: {} chains, {} rules, {} jump rules inserted, {} stale chains deleted",
        ipt.backend, report.chains, report.rules, report.jumps_inserted, report.chains_deleted
    );
    Ok(ExitCode::SUCCESS)
}

fn with_netns(ipt: ExecIptables, netns: &Option<String>) -> ExecIptables {
    match netns {
        Some(name) => ipt.in_netns(name.clone()),
        None => ipt,
    }
}
