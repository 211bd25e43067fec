//! Semantic diff of two rulesets: compares the chains and rules they leave behind, with each
//! rule in canonical form (restore-input and iptables-save spellings of a rule are equal).
//! Counters never count; rule order counts only in chains where it has a meaning.
//!
//! Canonical rule form: long flags shortened (`--jump` → `-j`), `-s`/`-d` as CIDRs with host
//! bits cleared (`10.0.0.1` → `10.0.0.1/32`), protocol names lower-case and the `-m tcp`
//! implied by `-p tcp` dropped, MARK's `--or-mark`/`--xor-mark`/`--set-mark`/`--and-mark` as
//! `--set-xmark value/mask`, `--mark` numeric with its mask, REJECT's default
//! `--reject-with` and `-m recent`'s default `--mask`/`--rsource` dropped, statistic
//! probabilities quantised like the kernel (`round(p × 2^31)`), `--ctstate` lists as sets,
//! and each option tagged with its match module, so group order does not matter.

mod report;
mod sequence;
mod state;

use std::collections::BTreeSet;

use self::sequence::{lcs_edits, multiset, Edit};
use self::state::{state, ChainState, Entry, State};
use crate::rules::canonical::CanonicalRule;
use crate::rules::parse::builtin_chains;
use crate::rules::render::dispatch::flatten;
use crate::rules::ruleset::{ChainName, Rule, Ruleset, TableName};

/// Chains whose rules are alternatives, not steps: compared as multisets.
const UNORDERED_CHAINS: [&str; 4] =
    ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"];

/// Comment text of the rule that must stay last in an unordered chain.
const MUST_BE_LAST: &str = "must be the last rule";

/// What the diff takes into account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Only chains kube-proxy/kubenat own (`KUBE-*` except the kubelet's), and in built-in
    /// chains only the rules jumping to them.
    pub kube_only: bool,
}

/// Which of the two compared rulesets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The first (left, old) ruleset.
    A,
    /// The second (right, new) ruleset.
    B,
}

/// A rule present in one ruleset but not (or not at the same place) in the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleChange {
    /// The rule is only in A.
    OnlyInA(Rule),
    /// The rule is only in B.
    OnlyInB(Rule),
    /// The rule is in both, at a different place relative to the others.
    Moved {
        /// The rule (as written in A).
        rule: Rule,
        /// 1-based position in A's chain.
        position_a: usize,
        /// 1-based position in B's chain.
        position_b: usize,
    },
}

/// A difference in a chain that is not about one rule's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// The built-in chain's declared policies differ.
    PolicyDiffers {
        /// Policy in A.
        a: String,
        /// Policy in B.
        b: String,
    },
    /// The rule whose comment says it "must be the last rule" is not last.
    NotLast {
        /// Where it is not last.
        side: Side,
        /// Its 1-based position.
        position: usize,
        /// Number of rules in that chain.
        len: usize,
    },
    /// The rules present in both are ordered differently, in a chain too long for a detailed
    /// sequence diff (its changes are then listed as for an unordered chain).
    OrderDiffers,
}

/// The differences in one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDiff {
    /// The chain.
    pub chain: ChainName,
    /// Set when the chain exists in one ruleset only (built-in chains always exist).
    pub only_in: Option<Side>,
    /// Rules added, removed or moved, in chain order.
    pub changes: Vec<RuleChange>,
    /// Other differences.
    pub problems: Vec<ChainProblem>,
}

/// The differences in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDiff {
    /// The table.
    pub table: TableName,
    /// Chains that differ: built-in chains first, then by name.
    pub chains: Vec<ChainDiff>,
}

/// All differences between two rulesets; tables in `TableName` order. `Display` gives the
/// report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Tables that differ.
    pub tables: Vec<TableDiff>,
}

impl Diff {
    /// Whether the rulesets are equivalent.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    fn chains(&self) -> impl Iterator<Item = &ChainDiff> {
        self.tables.iter().flat_map(|t| &t.chains)
    }

    /// Number of rules only in `side` (rules of chains only in `side` included).
    pub fn rules_only_in(&self, side: Side) -> usize {
        self.chains()
            .flat_map(|c| &c.changes)
            .filter(|change| {
                matches!((change, side), (RuleChange::OnlyInA(_), Side::A) | (RuleChange::OnlyInB(_), Side::B))
            })
            .count()
    }

    /// Number of rules present in both but at different places.
    pub fn moved(&self) -> usize {
        let changes = self.chains().flat_map(|c| &c.changes);
        changes.filter(|c| matches!(c, RuleChange::Moved { .. })).count()
    }

    /// Number of chains only in `side`.
    pub fn chains_only_in(&self, side: Side) -> usize {
        self.chains().filter(|c| c.only_in == Some(side)).count()
    }

    /// Number of chain-level problems (policies, misplaced last rules, order).
    pub fn problems(&self) -> usize {
        self.chains().map(|c| c.problems.len()).sum()
    }
}

/// Compares `a` with `b`. Tree-dispatch chains (`--services-dispatch=tree`) are first inlined
/// back into nat `KUBE-SERVICES` ([`flatten`]), so the two layouts of the same services
/// compare equal and a difference names the service rule, not a dispatch chain.
pub fn diff(a: &Ruleset, b: &Ruleset, opts: &DiffOptions) -> Diff {
    let (a, b) = (flatten(a), flatten(b));
    let (a, b) = (state(&a, opts.kube_only), state(&b, opts.kube_only));
    let tables: BTreeSet<TableName> = a.keys().chain(b.keys()).copied().collect();
    let tables = tables.into_iter().filter_map(|table| diff_table(table, &a, &b)).collect();
    Diff { tables }
}

fn diff_table(table: TableName, a: &State, b: &State) -> Option<TableDiff> {
    let (a, b) = (a.get(&table), b.get(&table));
    let mut names: Vec<&ChainName> = a.iter().chain(b.iter()).flat_map(|c| c.keys()).collect();
    let builtins = builtin_chains(table);
    let rank = |name: &ChainName| {
        let position = builtins.iter().position(|b| *b == name.as_str());
        (position.unwrap_or(builtins.len()), name.clone())
    };
    names.sort_by_key(|name| rank(name));
    names.dedup();
    let chains: Vec<ChainDiff> = names
        .into_iter()
        .filter_map(|name| {
            let builtin = builtins.contains(&name.as_str());
            diff_chain(name, builtin, a.and_then(|c| c.get(name)), b.and_then(|c| c.get(name)))
        })
        .collect();
    (!chains.is_empty()).then_some(TableDiff { table, chains })
}

fn diff_chain(name: &ChainName, builtin: bool, a: Option<&ChainState>, b: Option<&ChainState>) -> Option<ChainDiff> {
    let only_in = match (builtin, a, b) {
        (false, Some(_), None) => Some(Side::A),
        (false, None, Some(_)) => Some(Side::B),
        _ => None,
    };
    let empty = ChainState::default();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    let mut problems = Vec::new();
    if let (Some(pa), Some(pb)) = (&a.policy, &b.policy) {
        if pa != pb {
            problems.push(ChainProblem::PolicyDiffers { a: pa.clone(), b: pb.clone() });
        }
    }
    let changes = if builtin || UNORDERED_CHAINS.contains(&name.as_str()) {
        problems.extend(not_last(Side::A, &a.entries));
        problems.extend(not_last(Side::B, &b.entries));
        unordered_changes(&a.entries, &b.entries)
    } else {
        ordered_changes(&a.entries, &b.entries, &mut problems)
    };
    let differs = only_in.is_some() || !changes.is_empty() || !problems.is_empty();
    differs.then(|| ChainDiff { chain: name.clone(), only_in, changes, problems })
}

fn keys(entries: &[Entry]) -> Vec<&CanonicalRule> {
    entries.iter().map(|e| &e.key).collect()
}

fn unordered_changes(a: &[Entry], b: &[Entry]) -> Vec<RuleChange> {
    let (only_a, only_b) = multiset(&keys(a), &keys(b));
    let removed = only_a.into_iter().map(|i| RuleChange::OnlyInA(a[i].rule.clone()));
    let added = only_b.into_iter().map(|j| RuleChange::OnlyInB(b[j].rule.clone()));
    removed.chain(added).collect()
}

/// The "must be the last rule" rule, when present and not last.
fn not_last(side: Side, entries: &[Entry]) -> Option<ChainProblem> {
    let is_last_rule = |e: &Entry| e.rule.comment().is_some_and(|c| c.contains(MUST_BE_LAST));
    let index = entries.iter().position(is_last_rule)?;
    (index + 1 != entries.len()).then_some(ChainProblem::NotLast { side, position: index + 1, len: entries.len() })
}

/// LCS edit script, with a removed and an added copy of the same rule paired up as a move.
fn ordered_changes(a: &[Entry], b: &[Entry], problems: &mut Vec<ChainProblem>) -> Vec<RuleChange> {
    let (ka, kb) = (keys(a), keys(b));
    let Some(edits) = lcs_edits(&ka, &kb) else {
        if common_order_differs(&ka, &kb) {
            problems.push(ChainProblem::OrderDiffers);
        }
        return unordered_changes(a, b);
    };
    let mut added: Vec<Option<usize>> = edits
        .iter()
        .filter_map(|e| match e {
            Edit::Add(j) => Some(Some(*j)),
            Edit::Remove(_) => None,
        })
        .collect();
    let mut moved_to: Vec<Option<usize>> = vec![None; a.len()];
    for edit in &edits {
        if let Edit::Remove(i) = edit {
            let pair = added.iter_mut().find(|j| j.is_some_and(|j| kb[j] == ka[*i]));
            moved_to[*i] = pair.and_then(Option::take);
        }
    }
    let still_added: BTreeSet<usize> = added.into_iter().flatten().collect();
    edits
        .iter()
        .filter_map(|edit| match *edit {
            Edit::Remove(i) => Some(match moved_to[i] {
                Some(j) => RuleChange::Moved { rule: a[i].rule.clone(), position_a: i + 1, position_b: j + 1 },
                None => RuleChange::OnlyInA(a[i].rule.clone()),
            }),
            Edit::Add(j) if still_added.contains(&j) => Some(RuleChange::OnlyInB(b[j].rule.clone())),
            Edit::Add(_) => None,
        })
        .collect()
}

/// Whether the rules present in both lists appear in a different order.
fn common_order_differs(a: &[&CanonicalRule], b: &[&CanonicalRule]) -> bool {
    fn common<'k>(keys: &[&'k CanonicalRule], only: Vec<usize>) -> Vec<&'k CanonicalRule> {
        let only: BTreeSet<usize> = only.into_iter().collect();
        let kept = keys.iter().enumerate().filter(|(i, _)| !only.contains(i));
        kept.map(|(_, key)| *key).collect()
    }
    let (only_a, only_b) = multiset(a, b);
    common(a, only_a) != common(b, only_b)
}

#[cfg(test)]
mod tests;
