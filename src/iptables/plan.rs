//! Partial sync: the smallest `--noflush` restore input that turns the ruleset last applied into
//! the next one — changed chains rewritten whole, removed `KUBE-*` chains flushed and deleted.
//! Pure; jumps from built-in chains, canaries and stale chains found by a save are `apply`'s job.
//!
//! Why this is safe under `--noflush`: a `:CHAIN - [0:0]` line flushes (or creates) the chain,
//! so a changed chain is declared and all its rules written. A removed chain can only be jumped
//! to from chains that changed too (a valid `next` does not jump to an undeclared chain), and
//! the writer puts the removed chain's flush with the declarations and its `-X` after every
//! rule, so the jumps are gone before the chain is deleted, in the same transaction.

mod chains;

use std::fmt;

use self::chains::{ChainView, Chains};
use super::parse::is_builtin_chain;
use super::ruleset::{ChainName, Ruleset, Table, TableName};

/// Only chains with this prefix are ever deleted: the others are not ours.
const OWNED_PREFIX: &str = "KUBE-";

/// How a chain differs between the last applied and the next ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Only in `next`: created and written.
    Added,
    /// In both, with different rules (or policy): flushed and rewritten.
    Changed,
    /// Only in `last` and ours (`KUBE-*`): flushed and deleted.
    Removed,
}

/// One chain a partial plan writes or deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainChange {
    /// The chain's table.
    pub table: TableName,
    /// The chain.
    pub chain: ChainName,
    /// What happens to it.
    pub kind: ChangeKind,
}

/// What a planned restore input writes; `bytes` is the length of its restore text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Chains declared (created or flushed), deleted chains not included.
    pub chains_written: usize,
    /// Rule lines written.
    pub rules_written: usize,
    /// Chains flushed and deleted (`-X`).
    pub chains_deleted: usize,
    /// Size of the restore text, in bytes.
    pub bytes: usize,
}

impl PlanStats {
    /// Counts what `plan` writes (formats it once, without keeping the text).
    pub fn of(plan: &Ruleset) -> Self {
        let mut counter = ByteCounter(0);
        // Writing into a counter cannot fail: `ByteCounter::write_str` always returns Ok.
        let _ = fmt::write(&mut counter, format_args!("{plan}"));
        PlanStats {
            chains_written: plan.tables.iter().map(|t| t.chains.len()).sum(),
            rules_written: plan.rule_count(),
            chains_deleted: plan.tables.iter().map(|t| t.deletes.len()).sum(),
            bytes: counter.0,
        }
    }
}

/// A `fmt::Write` that only counts bytes.
struct ByteCounter(usize);

impl fmt::Write for ByteCounter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// The restore input (for `--noflush`) that turns the tables `last` left behind into what
/// `next` leaves behind, writing only chains whose rules changed. Empty when nothing changed.
/// Both are rendered rulesets (not saves), each section declaring a chain at most once (as
/// the parser and `Table::declare` ensure). Rules in undeclared (built-in) chains cannot be
/// flushed by a declaration; when they changed they are written as in `next`, appended.
/// Linear in the size of both; about 60 ms for 10,000 services × 10 endpoints (release).
pub fn plan_partial(last: &Ruleset, next: &Ruleset) -> Ruleset {
    let mut plan = Ruleset::default();
    for name in table_names(last, next) {
        let (old, new) = (Chains::of(last, name), Chains::of(next, name));
        let mut table = Table::new(name);
        for (kind, view) in changes(&old, &new) {
            if kind == ChangeKind::Removed {
                table.deletes.push(view.name.clone());
            } else {
                table.chains.extend(view.decl.cloned());
                table.rules.extend(view.runs.rules().cloned());
            }
        }
        if !(table.chains.is_empty() && table.rules.is_empty() && table.deletes.is_empty()) {
            plan.tables.push(table);
        }
    }
    plan
}

/// The chains [`plan_partial`] writes or deletes, in the order it writes them.
pub fn changed_chains(last: &Ruleset, next: &Ruleset) -> Vec<ChainChange> {
    let mut out = Vec::new();
    for table in table_names(last, next) {
        let (old, new) = (Chains::of(last, table), Chains::of(next, table));
        for (kind, view) in changes(&old, &new) {
            out.push(ChainChange { table, chain: view.name.clone(), kind });
        }
    }
    out
}

/// Tables of `next` in its order, then those only in `last`.
fn table_names(last: &Ruleset, next: &Ruleset) -> Vec<TableName> {
    let mut names = Vec::new();
    for table in next.tables.iter().chain(&last.tables) {
        if !names.contains(&table.name) {
            names.push(table.name);
        }
    }
    names
}

/// Changed and added chains of `new` in its order (their `new` view), then removed chains of
/// `old` in its order (their `old` view).
fn changes<'c, 'a>(old: &'c Chains<'a>, new: &'c Chains<'a>) -> Vec<(ChangeKind, &'c ChainView<'a>)> {
    let (pairs, paired) = chains::pair(old, new);
    let mut out = Vec::new();
    for (j, i) in pairs {
        let view = &new.views[j];
        match i {
            None => out.push((ChangeKind::Added, view)),
            Some(i) if !old.views[i].same_as(view) => out.push((ChangeKind::Changed, view)),
            Some(_) => {}
        }
    }
    for (view, _) in old.views.iter().zip(paired).filter(|(_, paired)| !paired) {
        let name = view.name.as_str();
        let ours = name.starts_with(OWNED_PREFIX) && !is_builtin_chain(old.table, name);
        if view.live && view.decl.is_some() && ours {
            out.push((ChangeKind::Removed, view));
        }
    }
    out
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
