//! What a full apply adds to the rendered rules, planned purely: missing jumps into the
//! built-in chains, stale per-service chains to delete and the canaries; and the count of what
//! an apply writes.

use std::collections::BTreeSet;

use super::canonical::canonical;
use super::chain_names::{self, KUBE_PROXY_CANARY};
use super::render::JumpRule;
use super::ruleset::{ChainName, Rule, RuleOp, Ruleset, TableName};

/// What one apply wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Chains declared (created or flushed), canaries included.
    pub chains: usize,
    /// Rules appended to our chains.
    pub rules: usize,
    /// Jump rules inserted into built-in chains because they were missing.
    pub jumps_inserted: usize,
    /// Stale per-service chains deleted.
    pub chains_deleted: usize,
}

impl ApplyReport {
    /// Counts what `input` (a planned restore input) writes.
    pub fn of(input: &Ruleset) -> Self {
        let mut report = ApplyReport::default();
        for table in &input.tables {
            report.chains += table.chains.len();
            report.chains_deleted += table.deletes.len();
            for rule in &table.rules {
                match rule.op {
                    RuleOp::Insert(_) => report.jumps_inserted += 1,
                    RuleOp::Append | RuleOp::Delete => report.rules += 1,
                }
            }
        }
        report
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ApplyReport) {
        self.chains += other.chains;
        self.rules += other.rules;
        self.jumps_inserted += other.jumps_inserted;
        self.chains_deleted += other.chains_deleted;
    }
}

/// The restore input that makes `current` (parsed `iptables-save` of filter, nat and mangle)
/// match `desired` when applied with `--noflush`: `desired` itself, missing `jumps` inserted at
/// position 1 (in `jumps` order, so the first ends up last, as with kube-proxy), stale
/// per-service nat chains deleted, and `KUBE-PROXY-CANARY` declared in filter, nat and mangle.
/// Idempotent: planning again against the applied result inserts no jumps.
/// `Merged(desired, &extras(..))` writes the same text without copying `desired`.
pub fn plan(desired: &Ruleset, jumps: &[JumpRule], current: &Ruleset) -> Ruleset {
    let mut out = desired.clone();
    for table in extras(desired, jumps, current).tables {
        let target = out.table_mut(table.name);
        for chain in &table.chains {
            target.declare(&chain.name);
        }
        target.rules.extend(table.rules);
        target.deletes.extend(table.deletes);
    }
    out
}

/// What [`plan`] adds to `desired`: the canaries, stale per-service nat chains to delete and
/// missing jumps, per table (mangle, which only holds a canary, last: its canary appearing means
/// the tables before it were committed). Only ever small, whatever the size of `desired`.
pub fn extras(desired: &Ruleset, jumps: &[JumpRule], current: &Ruleset) -> Ruleset {
    let canary = chain_names::fixed(KUBE_PROXY_CANARY);
    let mut out = Ruleset::default();
    for table in [TableName::Filter, TableName::Nat] {
        if !desired.table(table).is_some_and(|t| t.is_declared(KUBE_PROXY_CANARY)) {
            out.table_mut(table).declare(&canary);
        }
    }

    let declared: BTreeSet<&str> =
        desired.table(TableName::Nat).map(|t| t.chains.iter().map(|c| c.name.as_str()).collect()).unwrap_or_default();
    let already: Vec<_> = desired.table(TableName::Nat).map(|t| t.deletes.clone()).unwrap_or_default();
    let stale: Vec<_> = current
        .table(TableName::Nat)
        .map(|t| t.chains.iter().map(|c| &c.name).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|name| chain_names::is_service_chain(name.as_str()) && !declared.contains(name.as_str()))
        .cloned()
        .collect();
    for chain in stale {
        let nat = out.table_mut(TableName::Nat);
        if !nat.deletes.contains(&chain) && !already.contains(&chain) {
            nat.deletes.push(chain);
        }
    }

    for jump in jumps.iter().filter(|j| !has_rule(current, j.table, &j.rule)) {
        // Like kube-proxy's EnsureChain: a target neither rendered nor present is created
        // empty (declaring a present chain would flush it, e.g. kubelet's KUBE-FIREWALL).
        let target = jump.rule.target().filter(|t| t.starts_with("KUBE-")).and_then(|t| ChainName::new(t).ok());
        if let Some(target) = target {
            let exists = |r: &Ruleset| r.table(jump.table).is_some_and(|t| t.is_declared(target.as_str()));
            if !exists(desired) && !exists(current) && !exists(&out) {
                out.table_mut(jump.table).declare(&target);
            }
        }
        // The jump's own op says where it goes (kube-proxy's are `-I … 1`).
        out.table_mut(jump.table).rules.push(jump.rule.clone());
    }
    out.table_mut(TableName::Mangle).declare(&canary);
    out
}

/// Whether `table` of `ruleset` holds a rule meaning the same as `rule`, in the same chain
/// (compared in the diff's canonical form, so iptables-save spellings match ours).
fn has_rule(ruleset: &Ruleset, table: TableName, rule: &Rule) -> bool {
    let wanted = canonical(rule);
    ruleset.table(table).is_some_and(|t| t.chain_rules(rule.chain.as_str()).any(|r| canonical(r) == wanted))
}

#[cfg(test)]
mod tests;
