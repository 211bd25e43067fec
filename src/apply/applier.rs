//! The one applier: every caller that writes rules (the daemon's full and partial syncs,
//! `kubenat apply`) goes through it. It owns reading the live tables back, the extras a full
//! apply adds (missing jumps, stale chains, canaries, the other proxy mode's chains) and the
//! restore itself — one `--noflush` transaction, or bottom-up pieces on nft when the input
//! declares many chains (see `rules::chunks`). What to write is planned by pure functions
//! (`apply::extras`, `plan::plan_partial_with`, `cleanup::plan_scoped_cleanup`); this file
//! only decides which plan applies and runs it.

use std::time::Instant;

use tracing::{debug, info, trace, warn};

use super::cleanup::{plan_scoped_cleanup, CleanupReport, Scope};
use super::exec::{self, Backend, Iptables, RestoreOptions};
use crate::model::IpFamily;
use crate::rules::chain_names::KUBE_PROXY_CANARY;
use crate::rules::chunks::{self, NFT_CHAINS_PER_TRANSACTION};
use crate::rules::extras::{extras, ApplyReport};
use crate::rules::parse;
use crate::rules::plan::stale::{add_deletions, defer_deletions, StaleChain};
use crate::rules::plan::{plan_partial_with, PlanOptions};
use crate::rules::render::JumpRule;
use crate::rules::ruleset::{Ruleset, TableName};
use crate::rules::write::Merged;

/// Errors of one apply.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `iptables-save` failed; retryable when the cause is.
    #[error("reading the current {family} rules")]
    Save {
        /// The family being applied.
        family: IpFamily,
        /// What went wrong.
        #[source]
        source: exec::Error,
    },
    /// The saved rules could not be parsed. Not retryable.
    #[error("parsing the current {family} rules")]
    Parse {
        /// The family being applied.
        family: IpFamily,
        /// What went wrong.
        #[source]
        source: parse::Error,
    },
    /// `iptables-restore` failed (its error names the failing line); retryable when the cause is.
    #[error("restoring the {family} rules")]
    Restore {
        /// The family being applied.
        family: IpFamily,
        /// What went wrong.
        #[source]
        source: exec::Error,
    },
}

impl Error {
    /// Whether the same apply may succeed later (lock contention, a timeout).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Save { source, .. } | Error::Restore { source, .. } => source.is_retryable(),
            Error::Parse { .. } => false,
        }
    }
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `kubenat apply`: a full apply of `desired` in iptables mode for `family` (see
/// [`Applier::full`]), logged.
pub fn apply_once(ipt: &dyn Iptables, family: IpFamily, desired: &Ruleset, jumps: &[JumpRule]) -> Result<ApplyReport> {
    let started = Instant::now();
    let applied = Applier::new(ipt, family, Mode::Iptables).full(desired, jumps, History::Unknown)?;
    let report = applied.report;
    info!(
        %family,
        chains = report.chains,
        rules = report.rules,
        jumps_inserted = report.jumps_inserted,
        chains_deleted = report.chains_deleted,
        bytes = applied.bytes,
        transactions = applied.transactions,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "applied"
    );
    Ok(report)
}

/// Every restore keeps the counters of the chains it does not flush.
const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: true };

/// The tables read back before a full apply. Not mangle: naming it would make legacy iptables
/// create it needlessly (its canary is only written).
const READ_TABLES: [TableName; 2] = [TableName::Filter, TableName::Nat];

/// The proxy mode whose rules are applied; a full apply removes the other mode's chains and
/// jumps (a node switching modes keeps nothing of the old one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// kube-proxy's iptables mode (KUBE-SERVICES, KUBE-SVC-*, …).
    Iptables,
    /// The legacy userspace mode (KUBE-PORTALS-*, KUBE-NODEPORT-*).
    Userspace,
}

impl Mode {
    /// The chains a full apply in this mode removes: the other mode's.
    fn other(self) -> Scope {
        match self {
            Mode::Iptables => Scope::UserspaceMode,
            Mode::Userspace => Scope::IptablesMode,
        }
    }
}

/// How the applier writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplierOptions {
    /// The mode whose rules are applied.
    pub mode: Mode,
    /// How a partial apply writes changed chains.
    pub plan: PlanOptions,
    /// The most chains one nft transaction declares before the input is written in pieces.
    pub nft_chains_per_transaction: usize,
}

impl ApplierOptions {
    /// What measured fastest on `backend`, for `mode`.
    pub fn for_backend(backend: Backend, mode: Mode) -> Self {
        ApplierOptions {
            mode,
            plan: PlanOptions::for_backend(backend),
            nft_chains_per_transaction: NFT_CHAINS_PER_TRANSACTION,
        }
    }
}

/// What one apply wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// What the input declared, wrote and deleted.
    pub report: ApplyReport,
    /// Bytes of restore input (0 when nothing changed and no restore ran).
    pub bytes: usize,
    /// Restore transactions run (0 when nothing changed).
    pub transactions: usize,
    /// Rules written, per table (`kubeproxy_sync_proxy_rules_iptables_last`).
    pub rules_written: Vec<(TableName, usize)>,
    /// Stale service chains left in place for a later clean-up ([`StaleChains::Defer`]).
    pub deferred: Vec<StaleChain>,
}

/// What a partial apply does with the chains of services that are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleChains<'a> {
    /// Delete them now, together with these chains an earlier apply left behind.
    Delete(&'a [StaleChain]),
    /// Leave them (unreferenced) for a later clean-up; they are returned in
    /// [`Applied::deferred`]. kube-proxy's large-cluster mode.
    Defer,
}

/// Whether a full apply follows rules we applied ourselves, so missing canaries mean someone
/// flushed the tables behind our back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// Nothing applied yet (a first sync, `kubenat apply`): whatever is there is expected.
    Unknown,
    /// Our rules were in place: a missing canary is worth a warning.
    Applied,
}

/// Applies rulesets for one family through one [`Iptables`].
pub struct Applier<'a> {
    ipt: &'a dyn Iptables,
    family: IpFamily,
    opts: ApplierOptions,
}

impl<'a> Applier<'a> {
    /// An applier for `family` with the options measured best for `ipt`'s backend.
    pub fn new(ipt: &'a dyn Iptables, family: IpFamily, mode: Mode) -> Self {
        Applier { ipt, family, opts: ApplierOptions::for_backend(ipt.backend(), mode) }
    }

    /// An applier with explicit options.
    pub fn with_options(ipt: &'a dyn Iptables, family: IpFamily, opts: ApplierOptions) -> Self {
        Applier { ipt, family, opts }
    }

    /// Full apply: reads the live tables, adds to `desired` what they lack or hold too much of
    /// (see [`Applier::full_extras`]) and writes it all. The last good rules stay in place when
    /// a restore fails (pieces already written leave a consistent state).
    pub fn full(&self, desired: &Ruleset, jumps: &[JumpRule], history: History) -> Result<Applied> {
        let current = self.read_current()?;
        if history == History::Applied {
            warn_if_flushed(self.family, &current);
        }
        let extra = self.full_extras(desired, jumps, &current);
        drop(current);
        self.write(desired, &extra, "full")
    }

    /// The restore texts [`Applier::full`] would write now, in order; writes nothing.
    pub fn full_dry_run(&self, desired: &Ruleset, jumps: &[JumpRule]) -> Result<Vec<String>> {
        let current = self.read_current()?;
        let extra = self.full_extras(desired, jumps, &current);
        Ok(self.transactions(desired, &extra))
    }

    /// Partial apply: writes only what changed from `last` (what we applied last, still in the
    /// kernel) to `desired`. No restore runs when nothing changed.
    pub fn partial(&self, last: &Ruleset, desired: &Ruleset) -> Result<Applied> {
        self.partial_with(last, desired, StaleChains::Delete(&[]))
    }

    /// [`Applier::partial`], with stale service chains deleted or deferred as `stale` says.
    pub fn partial_with(&self, last: &Ruleset, desired: &Ruleset, stale: StaleChains<'_>) -> Result<Applied> {
        let mut input = plan_partial_with(last, desired, &self.opts.plan);
        let deferred = match stale {
            StaleChains::Delete(earlier) => {
                add_deletions(&mut input, earlier, desired);
                Vec::new()
            }
            StaleChains::Defer => defer_deletions(&mut input),
        };
        if input.tables.is_empty() {
            return Ok(Applied { deferred, ..Applied::default() });
        }
        let applied = self.write(&input, &Ruleset::default(), "partial")?;
        Ok(Applied { deferred, ..applied })
    }

    /// What a full apply adds to `desired` given the live tables `current`: the canaries,
    /// missing jumps, stale per-service chains to delete, and the other mode's jumps and chains
    /// to delete. Only ever small, whatever the size of `desired`.
    pub fn full_extras(&self, desired: &Ruleset, jumps: &[JumpRule], current: &Ruleset) -> Ruleset {
        let mut extra = extras(desired, jumps, current);
        merge_deletions(&mut extra, plan_scoped_cleanup(current, self.opts.mode.other()));
        extra
    }

    /// The live filter and nat tables, as far as a full apply needs them: every chain's
    /// declaration and the built-in chains' rules. The rules inside thousands of user chains
    /// are neither parsed nor kept.
    pub fn read_current(&self) -> Result<Ruleset> {
        let family = self.family;
        let mut saved = String::new();
        for table in READ_TABLES {
            let text = self.ipt.save(family, Some(table)).map_err(|source| Error::Save { family, source })?;
            saved.push_str(&without_user_chain_rules(&text));
        }
        parse::parse(&saved).map_err(|source| Error::Parse { family, source })
    }

    /// `--cleanup`: removes kube-proxy's and kubenat's jump rules and chains (both modes) from
    /// the live tables, as kube-proxy's cleanup does; nothing else is touched.
    pub fn cleanup(&self) -> Result<CleanupReport> {
        let plan = plan_scoped_cleanup(&self.read_current()?, Scope::All);
        let report = CleanupReport::of(&plan);
        if !plan.tables.is_empty() {
            self.write(&plan, &Ruleset::default(), "cleanup")?;
        }
        Ok(report)
    }

    /// Whether the canary chain is missing from the mangle, nat or filter table (someone flushed
    /// a table behind our back), as kube-proxy checks every sync period. A failed check counts
    /// as present, with a warning.
    pub fn canary_missing(&self) -> bool {
        let family = self.family;
        // One chain listed per table (a 10k-service nat table is never saved whole for this).
        let mut missing = Vec::new();
        for table in [TableName::Mangle, TableName::Nat, TableName::Filter] {
            match self.ipt.chain_exists(family, table, KUBE_PROXY_CANARY) {
                Ok(true) => {}
                Ok(false) => missing.push(table.as_str()),
                Err(err) => warn!(%family, %table, error = %err, "could not check the canary chain"),
            }
        }
        if !missing.is_empty() {
            warn!(%family, tables = ?missing, "KUBE-PROXY-CANARY is gone: a table was flushed behind our back; the next sync is full and restores every rule");
        }
        !missing.is_empty()
    }

    /// The restore texts, in order, that write `main` plus `extra` (`--noflush`): one, except
    /// on nft when a table declares more chains than one transaction should — nft's restore is
    /// superlinear in the chains one transaction declares, so the input goes in bottom-up
    /// pieces, each leaving a consistent state. Legacy replaces whole tables per transaction,
    /// so it is linear in one piece and never split.
    pub fn transactions(&self, main: &Ruleset, extra: &Ruleset) -> Vec<String> {
        let max = self.opts.nft_chains_per_transaction;
        if self.ipt.backend() == Backend::Nft && chunks::needs_split(main, extra, max) {
            chunks::split(main, extra, max)
        } else {
            vec![Merged(main, extra).to_string()]
        }
    }

    /// Restores `main` plus `extra`; stops at the first failure.
    fn write(&self, main: &Ruleset, extra: &Ruleset, kind: &'static str) -> Result<Applied> {
        let family = self.family;
        let mut report = ApplyReport::of(main);
        report.add(&ApplyReport::of(extra));
        let texts = self.transactions(main, extra);
        let bytes = texts.iter().map(String::len).sum();
        if texts.len() > 1 {
            debug!(%family, kind, transactions = texts.len(), bytes, "restore in pieces");
        }
        for text in &texts {
            trace!(%family, kind, input = %text, "restore");
            self.ipt.restore(family, text, NOFLUSH).map_err(|source| Error::Restore { family, source })?;
        }
        let rules_written = main
            .tables
            .iter()
            .map(|t| (t.name, t.rules.len() + extra.table(t.name).map_or(0, |e| e.rules.len())))
            .collect();
        Ok(Applied { report, bytes, transactions: texts.len(), rules_written, deferred: Vec::new() })
    }
}

/// Notes each table whose canary chain vanished although we had applied our rules (read here for
/// free, by the full apply that puts every rule back). Debug only: the periodic
/// [`Applier::canary_missing`] check that started this full sync has warned already.
fn warn_if_flushed(family: IpFamily, current: &Ruleset) {
    for table in READ_TABLES {
        if !current.table(table).is_some_and(|t| t.is_declared(KUBE_PROXY_CANARY)) {
            debug!(%family, %table, "KUBE-PROXY-CANARY was missing; this full sync restores every rule");
        }
    }
}

/// `iptables-save` text without the `-A` lines of user-defined chains.
pub(crate) fn without_user_chain_rules(saved: &str) -> String {
    let mut out = String::new();
    for line in saved.lines() {
        let user_chain_rule = line
            .strip_prefix("-A ")
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|chain| !matches!(chain, "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING"));
        if !user_chain_rule {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Adds `extra`'s deletions (`-D` rules and chain deletes) to `input`.
fn merge_deletions(input: &mut Ruleset, extra: Ruleset) {
    for table in extra.tables {
        let target = input.table_mut(table.name);
        target.rules.extend(table.rules);
        for chain in table.deletes {
            if !target.deletes.contains(&chain) {
                target.deletes.push(chain);
            }
        }
    }
}

#[cfg(test)]
mod tests;
