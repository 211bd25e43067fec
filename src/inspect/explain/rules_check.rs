//! `rules-missing` and `rules-drift`: one service port's rules, desired against live, compared
//! chain by chain with the semantic diff (canonical rules, so spelling and counters never count).

use std::collections::{BTreeSet, HashMap};

use super::report::{Code, Problem, Severity};
use crate::inspect::diff::{diff, ChainDiff, ChainProblem, DiffOptions, RuleChange, Side};
use crate::model::{IpFamily, ServicePort, ServicePortName};
use crate::rules::chain_names::{endpoint_chain, ServiceChains};
use crate::rules::ruleset::{Ruleset, Table, TableName};

const FIX: &str = "kubenat rewrites its rules on every sync: check that it runs on this node and that its \
                   log shows syncs without errors, and look for another program writing KUBE-* rules \
                   (a second kube-proxy, a cleanup job); `kubenat apply` restores them at once";

/// The chains the port's rules may use: SVC, SVL, EXT, FW and one SEP per endpoint of `family`.
pub(super) fn port_chains(port: &ServicePort, family: IpFamily) -> BTreeSet<String> {
    let names = ServiceChains::for_service(&port.name);
    let mut chains: BTreeSet<String> =
        [names.cluster, names.local, names.external, names.firewall].iter().map(|c| c.to_string()).collect();
    let endpoints = port.endpoints.iter().filter(|e| family.contains(&e.addr.ip()));
    chains.extend(endpoints.map(|e| endpoint_chain(&port.name, &e.addr).to_string()));
    chains
}

/// A ruleset indexed by what ties a rule to a service port — its chain, its jump target and
/// the first word of its comment — so that picking one port's rules costs the size of that
/// port's rules, not of the ruleset (`explain node` picks every port's).
pub(super) struct Indexed {
    ruleset: Ruleset,
    /// Per table: rule indices by chain, by target and by the comment's first word.
    keys: Vec<HashMap<String, Vec<usize>>>,
    /// Per table: declaration index by chain name.
    decls: Vec<HashMap<String, usize>>,
}

impl Indexed {
    pub(super) fn new(ruleset: Ruleset) -> Self {
        let keys = ruleset
            .tables
            .iter()
            .map(|table| {
                let mut keys: HashMap<String, Vec<usize>> = HashMap::new();
                for (i, rule) in table.rules.iter().enumerate() {
                    let mut words = vec![rule.chain.as_str()];
                    words.extend(rule.target());
                    words.extend(rule.comment().and_then(|c| c.split(' ').next()));
                    words.dedup();
                    for word in words {
                        keys.entry(word.to_string()).or_default().push(i);
                    }
                }
                keys
            })
            .collect();
        let decls = ruleset
            .tables
            .iter()
            .map(|t| t.chains.iter().enumerate().map(|(i, c)| (c.name.to_string(), i)).collect())
            .collect();
        Indexed { ruleset, keys, decls }
    }

    /// The part that belongs to one service port: its chains (declarations and rules), the
    /// rules jumping to them, and the rules whose comment names the port (`ns/name:port …`:
    /// the `KUBE-SERVICES` REJECT of a port without endpoints, the firewall's DROP …).
    pub(super) fn service_rules(&self, name: &ServicePortName, chains: &BTreeSet<String>) -> Ruleset {
        let label = name.to_string();
        let mut out = Ruleset::default();
        for ((table, keys), decls) in self.ruleset.tables.iter().zip(&self.keys).zip(&self.decls) {
            let words = chains.iter().map(String::as_str).chain(std::iter::once(label.as_str()));
            let picked: BTreeSet<usize> = words.filter_map(|w| keys.get(w)).flatten().copied().collect();
            let declared: BTreeSet<usize> = chains.iter().filter_map(|c| decls.get(c)).copied().collect();
            let mut part = Table::new(table.name);
            part.chains = declared.into_iter().map(|i| table.chains[i].clone()).collect();
            part.rules = picked.into_iter().map(|i| table.rules[i].clone()).collect();
            if !part.chains.is_empty() || !part.rules.is_empty() {
                out.tables.push(part);
            }
        }
        out
    }
}

/// The port's chains declared in the desired rules (nat), sorted.
pub(super) fn desired_chains(want: &Indexed, chains: &BTreeSet<String>) -> Vec<String> {
    let nat = want.ruleset.tables.iter().zip(&want.decls).filter(|(t, _)| t.name == TableName::Nat);
    let declared = nat.flat_map(|(_, decls)| chains.iter().filter(|c| decls.contains_key(*c)));
    let declared: BTreeSet<String> = declared.cloned().collect();
    declared.into_iter().collect()
}

/// Compares the port's desired rules (`want`, flattened) with the live ones (`live`).
pub(super) fn rule_problems(port: &ServicePort, family: IpFamily, want: &Indexed, live: &Indexed) -> Vec<Problem> {
    let chains = port_chains(port, family);
    let (want, live) = (want.service_rules(&port.name, &chains), live.service_rules(&port.name, &chains));
    let found = diff(&want, &live, &DiffOptions::default());
    if found.is_empty() {
        return Vec::new();
    }
    if live.tables.is_empty() {
        let message = format!(
            "none of {}'s {} rules are in the live ruleset: traffic to it is not load-balanced on this node",
            port.name,
            want.rule_count()
        );
        return vec![problem(Code::RulesMissing, message)];
    }
    let mut problems = Vec::new();
    for table in &found.tables {
        for chain in &table.chains {
            let message = format!("{}/{} {}", table.table, chain.chain, describe(chain));
            problems.push(problem(Code::RulesDrift, format!("{}: {message}", port.name)));
        }
    }
    problems
}

fn problem(code: Code, message: String) -> Problem {
    Problem { code, severity: Severity::Error, message, fix: FIX.to_string() }
}

/// What differs in one chain, live against desired.
fn describe(chain: &ChainDiff) -> String {
    match chain.only_in {
        Some(Side::A) => return "is missing from the live rules".to_string(),
        Some(Side::B) => return "is in the live rules but should not exist".to_string(),
        None => {}
    }
    let count = |pred: fn(&RuleChange) -> bool| chain.changes.iter().filter(|c| pred(c)).count();
    let missing = count(|c| matches!(c, RuleChange::OnlyInA(_)));
    let extra = count(|c| matches!(c, RuleChange::OnlyInB(_)));
    let moved = count(|c| matches!(c, RuleChange::Moved { .. }));
    let mut parts = Vec::new();
    if missing > 0 {
        parts.push(format!("{missing} rule(s) missing"));
    }
    if extra > 0 {
        parts.push(format!("{extra} unexpected rule(s)"));
    }
    if moved > 0 {
        parts.push(format!("{moved} rule(s) out of order"));
    }
    if chain.problems.iter().any(|p| !matches!(p, ChainProblem::PolicyDiffers { .. })) {
        parts.push("rules out of order".to_string());
    }
    let first = chain.changes.iter().find_map(|c| match c {
        RuleChange::OnlyInA(rule) => Some(format!("; missing: {rule}")),
        RuleChange::OnlyInB(rule) => Some(format!("; unexpected: {rule}")),
        RuleChange::Moved { .. } => None,
    });
    format!("differs from the desired rules: {}{}", parts.join(", "), first.unwrap_or_default())
}
