//! `rules-missing` and `rules-drift`: one service port's rules, desired against live, compared
//! chain by chain with the semantic diff (canonical rules, so spelling and counters never count).

use std::collections::BTreeSet;

use super::report::{Code, Problem, Severity};
use crate::inspect::diff::{diff, ChainDiff, ChainProblem, DiffOptions, RuleChange, Side};
use crate::model::{IpFamily, ServicePort, ServicePortName};
use crate::rules::chain_names::{endpoint_chain, ServiceChains};
use crate::rules::ruleset::{Rule, Ruleset, Table, TableName};

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

/// The part of `ruleset` that belongs to one service port: its chains (declarations and
/// rules), the rules jumping to them, and the rules whose comment names the port (the
/// `KUBE-SERVICES` REJECT of a port without endpoints, the firewall's DROP …).
pub(super) fn service_rules(ruleset: &Ruleset, name: &ServicePortName, chains: &BTreeSet<String>) -> Ruleset {
    let label = name.to_string();
    let ours = |rule: &Rule| {
        chains.contains(rule.chain.as_str())
            || rule.target().is_some_and(|t| chains.contains(t))
            || rule
                .comment()
                .is_some_and(|c| c == label || c.strip_prefix(label.as_str()).is_some_and(|r| r.starts_with(' ')))
    };
    let mut out = Ruleset::default();
    for table in &ruleset.tables {
        let mut part = Table::new(table.name);
        part.chains = table.chains.iter().filter(|c| chains.contains(c.name.as_str())).cloned().collect();
        part.rules = table.rules.iter().filter(|r| ours(r)).cloned().collect();
        if !part.chains.is_empty() || !part.rules.is_empty() {
            out.tables.push(part);
        }
    }
    out
}

/// The port's chains declared in the desired rules (nat), sorted.
pub(super) fn desired_chains(want: &Ruleset, chains: &BTreeSet<String>) -> Vec<String> {
    let nat = want.table(TableName::Nat).into_iter().flat_map(|t| &t.chains);
    let declared: BTreeSet<String> =
        nat.filter(|c| chains.contains(c.name.as_str())).map(|c| c.name.to_string()).collect();
    declared.into_iter().collect()
}

/// Compares the port's desired rules (`want`, flattened) with the live ones (`live`).
pub(super) fn rule_problems(port: &ServicePort, family: IpFamily, want: &Ruleset, live: &Ruleset) -> Vec<Problem> {
    let chains = port_chains(port, family);
    let (want, live) = (service_rules(want, &port.name, &chains), service_rules(live, &port.name, &chains));
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
