//! `FakeIptables`: an in-memory model of the kernel's tables behind the `Iptables` trait, for
//! tests and `--dry-run`. It parses restore input like `iptables-restore` (per-table atomic
//! COMMIT, `--noflush`, jumps validated) and keeps state across calls; it runs no process.
//!
//! Differences from the real thing, none of which kubenat's input exercises: rules are kept
//! (and saved) as written rather than in the kernel's canonical spelling; `-N` of an existing
//! chain flushes it instead of failing; `-X` lines take effect after all rule lines of their
//! section; loops are rejected even in chains no built-in chain reaches (as nft does).

#[cfg(test)]
mod chunk_tests;
#[cfg(test)]
mod edit_props;
mod input;
mod state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use self::input::{facts, parse_section, sections, Reject, Section};
use self::state::TableState;
use super::exec::{Backend, Error, Iptables, RestoreFailure, RestoreOptions, Result, Tool};
use crate::model::IpFamily;
use crate::rules::ruleset::TableName;

/// Exit status the fake reports for a rejected input (what iptables-restore exits with).
const FAILED_STATUS: &str = "exit status: 2";

/// The kernel's tables of one family.
type Tables = BTreeMap<TableName, TableState>;

/// An in-memory `iptables`/`ip6tables` with a log of every restore; `Send + Sync`.
#[derive(Debug, Default)]
pub struct FakeIptables {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: BTreeMap<IpFamily, Tables>,
    /// Every restore input received, with its family, in order.
    log: Vec<(IpFamily, String)>,
    /// How many of the next restores fail without looking at their input.
    injected_failures: usize,
}

impl FakeIptables {
    /// Empty tables for both families (a table appears once something loads it).
    pub fn new() -> Self {
        FakeIptables::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock leaves consistent state: every change
        // is built on a copy and swapped in whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every input `restore` received for `family` (failed ones included), oldest first.
    pub fn restore_log(&self, family: IpFamily) -> Vec<String> {
        self.lock().log.iter().filter(|(f, _)| *f == family).map(|(_, text)| text.clone()).collect()
    }

    /// Makes the next `n` restores (of either family) fail with an injected error; they are
    /// logged and change nothing.
    pub fn fail_next(&self, n: usize) {
        self.lock().injected_failures = n;
    }

    /// Every loaded table of `family` as `iptables-save` prints it.
    pub fn state_text(&self, family: IpFamily) -> String {
        let inner = self.lock();
        let mut out = String::new();
        for table in inner.tables.get(&family).into_iter().flat_map(BTreeMap::values) {
            table.write_save(&mut out);
        }
        out
    }

    /// Resets `table` to its built-in chains with no rules, as `iptables -t T -F; iptables
    /// -t T -X` (or a firewall reload) does behind our back: our chains and canary vanish.
    pub fn flush_table(&self, family: IpFamily, table: TableName) {
        let mut inner = self.lock();
        inner.tables.entry(family).or_default().insert(table, TableState::new(table));
    }

    /// Replaces the tables `text` mentions with its content, as `iptables-restore` without
    /// `--noflush` would (not logged, never an injected failure): preloads kube-proxy's old
    /// rules or flannel's chains.
    pub fn set_rules(&self, family: IpFamily, text: &str) -> Result<()> {
        let mut inner = self.lock();
        let tables = inner.tables.entry(family).or_default();
        restore_into(tables, family, text, false)
    }
}

impl Iptables for FakeIptables {
    fn restore(&self, family: IpFamily, input: &str, opts: RestoreOptions) -> Result<()> {
        let mut inner = self.lock();
        inner.log.push((family, input.to_string()));
        if inner.injected_failures > 0 {
            inner.injected_failures -= 1;
            let reject = Reject { line: None, message: "injected failure".into() };
            return Err(failure(family, input, reject));
        }
        let tables = inner.tables.entry(family).or_default();
        restore_into(tables, family, input, opts.noflush)
    }

    fn save(&self, family: IpFamily, table: Option<TableName>) -> Result<String> {
        let Some(table) = table else {
            return Ok(self.state_text(family));
        };
        let inner = self.lock();
        let mut out = String::new();
        match inner.tables.get(&family).and_then(|t| t.get(&table)) {
            Some(state) => state.write_save(&mut out),
            // Like `iptables-save -t T` on a table nothing loaded yet: its empty built-ins.
            None => TableState::new(table).write_save(&mut out),
        }
        Ok(out)
    }
}

/// Applies `input` section by section; each committed section replaces its table. Stops at
/// the first rejected section (earlier ones stay committed, as with iptables-restore).
fn restore_into(tables: &mut Tables, family: IpFamily, input: &str, noflush: bool) -> Result<()> {
    let lines: Vec<&str> = input.lines().collect();
    for section in sections(&lines) {
        let applied = apply_section(tables, &section, noflush).map_err(|reject| failure(family, input, reject))?;
        tables.insert(applied.name, applied);
    }
    Ok(())
}

/// The table `section` leaves behind, built on a copy of the live one (`--noflush`) or on a
/// fresh one; the live table is untouched.
fn apply_section(tables: &Tables, section: &Section<'_>, noflush: bool) -> Result<TableState, Reject> {
    let facts = facts(section);
    let live = facts.table.filter(|_| noflush).and_then(|t| tables.get(&t));
    let parsed = parse_section(section, facts.table, live.into_iter().flat_map(TableState::user_chains))?;
    let mut table = live.cloned().unwrap_or_else(|| TableState::new(parsed.name));
    table.apply(&parsed, &facts)?;
    Ok(table)
}

/// A restore error shaped like the real one: binary, status, failing line and the input lines
/// around it (and the jump that probably caused a missing-chain error).
fn failure(family: IpFamily, input: &str, reject: Reject) -> Error {
    let binary = format!("fake-{}", Backend::Default.binary(family, Tool::Restore));
    let mut stderr = format!("{binary}: {}\n", reject.message);
    if let Some(line) = reject.line {
        stderr.push_str(&format!("Error occurred at line: {line}\n"));
    }
    let mut failure = RestoreFailure::new(&binary, FAILED_STATUS.to_string(), &stderr, input);
    failure.message = reject.message;
    Error::Restore(Box::new(failure))
}
