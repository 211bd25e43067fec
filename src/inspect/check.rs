//! Jump-consistency checker (upstream's `checkIPTablesRuleJumps`): every jump lands on a
//! declared chain with rules, every rule's chain is declared, no `KUBE-*` chain is orphaned.
//!
//! It checks one complete ruleset. A partial `--noflush` restore input legitimately jumps to
//! chains it does not redeclare; check the merged result (e.g. `iptables-save`) instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::rules::chain_names::{
    KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_POSTROUTING,
    KUBE_PROXY_CANARY, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};
use crate::rules::ruleset::{Ruleset, TableName};

/// Chains that are entry points or helpers and so may be unreferenced or empty.
pub const TOP_LEVEL_CHAINS: [&str; 9] = [
    KUBE_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
    KUBE_FORWARD,
    KUBE_EXTERNAL_SERVICES,
    KUBE_PROXY_FIREWALL,
    KUBE_FIREWALL,
    KUBE_PROXY_CANARY,
];

/// Chains kubelet creates next to kube-proxy's (canary, backend hint, old drop mark).
const KUBELET_CHAINS: [&str; 3] = ["KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT", "KUBE-MARK-DROP"];

/// Targets built into iptables or provided by common extensions.
const STANDARD_TARGETS: [&str; 16] = [
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "MARK",
    "REDIRECT",
    "LOG",
    "CONNMARK",
    "NOTRACK",
    "CT",
    "TPROXY",
    "QUEUE",
    "NFLOG",
];

/// One inconsistency in a ruleset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// A rule jumps (`-j`/`-g`) to a chain that is not declared in its table and is not a
    /// built-in chain or a known target.
    UndeclaredTarget {
        /// The table.
        table: TableName,
        /// The chain holding the jump.
        chain: String,
        /// The missing chain.
        target: String,
    },
    /// Rules are added to a user chain that the table does not declare.
    UndeclaredChain {
        /// The table.
        table: TableName,
        /// The chain.
        chain: String,
    },
    /// A declared `KUBE-*` chain that no rule jumps to.
    UnusedChain {
        /// The table.
        table: TableName,
        /// The chain.
        chain: String,
    },
    /// A rule jumps to a declared chain that has no rules.
    JumpToEmptyChain {
        /// The table.
        table: TableName,
        /// The chain holding the jump.
        chain: String,
        /// The empty chain.
        target: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UndeclaredTarget { table, chain, target } => {
                write!(f, "{table}/{chain} jumps to {target}, which is not declared in table {table}")
            }
            Problem::UndeclaredChain { table, chain } => {
                write!(f, "{table}/{chain} has rules but is not declared")
            }
            Problem::UnusedChain { table, chain } => {
                write!(f, "{table}/{chain} is declared but nothing jumps to it")
            }
            Problem::JumpToEmptyChain { table, chain, target } => {
                write!(f, "{table}/{chain} jumps to {target}, which has no rules")
            }
        }
    }
}

/// Whether `name` looks like a target extension (`TCPMSS`, `CLASSIFY`, …) rather than a chain.
fn is_extension_target(name: &str) -> bool {
    !name.starts_with("KUBE-")
        && name.chars().any(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_builtin_chain(name: &str) -> bool {
    matches!(name, "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING")
}

/// What one table (all of its sections, merged) declares, fills, deletes and jumps to.
#[derive(Default)]
struct TableFacts<'a> {
    declared: BTreeSet<&'a str>,
    deleted: BTreeSet<&'a str>,
    with_rules: BTreeSet<&'a str>,
    /// Rule chains in order of first appearance, for deterministic reports.
    rule_chains: Vec<&'a str>,
    /// `(chain, target)` for every jump, in rule order.
    jumps: Vec<(&'a str, &'a str)>,
}

fn facts(ruleset: &Ruleset) -> BTreeMap<TableName, TableFacts<'_>> {
    let mut out: BTreeMap<TableName, TableFacts<'_>> = BTreeMap::new();
    for table in &ruleset.tables {
        let f = out.entry(table.name).or_default();
        f.declared.extend(table.chains.iter().map(|c| c.name.as_str()));
        f.deleted.extend(table.deletes.iter().map(|c| c.as_str()));
        for rule in &table.rules {
            let chain = rule.chain.as_str();
            if f.with_rules.insert(chain) {
                f.rule_chains.push(chain);
            }
            if let Some(target) = rule.target() {
                f.jumps.push((chain, target));
            }
        }
    }
    for f in out.values_mut() {
        let deleted = f.deleted.clone();
        f.declared.retain(|c| !deleted.contains(c));
    }
    out
}

/// Reports every inconsistency, table by table (tables in name order, rules in file order).
pub fn check(ruleset: &Ruleset) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (table, f) in facts(ruleset) {
        let name = |s: &str| s.to_string();
        for chain in &f.rule_chains {
            if !is_builtin_chain(chain) && !f.declared.contains(chain) {
                problems.push(Problem::UndeclaredChain { table, chain: name(chain) });
            }
        }
        let mut reported = BTreeSet::new();
        for &(chain, target) in &f.jumps {
            let problem = if f.declared.contains(target) {
                let exempt = TOP_LEVEL_CHAINS.contains(&target);
                (!exempt && !f.with_rules.contains(target)).then(|| Problem::JumpToEmptyChain {
                    table,
                    chain: name(chain),
                    target: name(target),
                })
            } else if is_builtin_chain(target) || STANDARD_TARGETS.contains(&target) || is_extension_target(target) {
                None
            } else {
                Some(Problem::UndeclaredTarget { table, chain: name(chain), target: name(target) })
            };
            if let Some(p) = problem {
                if reported.insert(p.clone()) {
                    problems.push(p);
                }
            }
        }
        let jumped_to: BTreeSet<&str> = f.jumps.iter().map(|&(_, target)| target).collect();
        for chain in &f.declared {
            let exempt = TOP_LEVEL_CHAINS.contains(chain) || KUBELET_CHAINS.contains(chain);
            if chain.starts_with("KUBE-") && !exempt && !jumped_to.contains(chain) {
                problems.push(Problem::UnusedChain { table, chain: name(chain) });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::trace::testutil::{fixtures, rules};

    fn problems(text: &str) -> Vec<String> {
        check(&rules(text)).iter().map(ToString::to_string).collect()
    }

    const CONSISTENT: &str = r#"
*filter
:INPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A INPUT -j KUBE-NODEPORTS
-A INPUT -j TCPMSS --clamp-mss-to-pmtu
-A KUBE-SERVICES -d 10.96.0.2 -p tcp --dport 80 -j REJECT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SVC-OLD - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1 -j KUBE-SVC-A
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-A -j KUBE-SEP-A
-A KUBE-SEP-A -s 10.244.0.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-A -p tcp -j DNAT --to-destination 10.244.0.5:80
-A KUBE-SEP-A -j MARK --or-mark 0x1
-X KUBE-SVC-OLD
COMMIT
"#;

    #[test]
    fn consistent_ruleset_has_no_problems() {
        assert_eq!(problems(CONSISTENT), Vec::<String>::new());
    }

    #[test]
    fn kube_proxy_dumps_are_consistent() {
        for text in [fixtures::SAVE, fixtures::RESTORE, fixtures::FEATURES] {
            assert_eq!(problems(text), Vec::<String>::new());
        }
    }

    #[test]
    fn jump_to_undeclared_chain() {
        let text = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-MISSING\n\
                    -A KUBE-SERVICES -j KUBE-SVC-MISSING\n-A KUBE-SERVICES -j my-chain\n-A KUBE-SERVICES -g FLANNEL-X\n";
        assert_eq!(
            problems(text),
            [
                "nat/KUBE-SERVICES jumps to KUBE-SVC-MISSING, which is not declared in table nat",
                "nat/KUBE-SERVICES jumps to my-chain, which is not declared in table nat",
            ]
        );
    }

    #[test]
    fn chains_are_per_table() {
        let text = "*filter\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -j ACCEPT\n-A INPUT -j KUBE-SVC-A\nCOMMIT\n\
                    *nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-A\nCOMMIT\n";
        assert_eq!(problems(text), ["nat/KUBE-SERVICES jumps to KUBE-SVC-A, which is not declared in table nat"]);
    }

    #[test]
    fn jump_to_deleted_chain_is_undeclared() {
        let text =
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLD - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-OLD\n-X KUBE-SVC-OLD\n";
        assert_eq!(problems(text), ["nat/KUBE-SERVICES jumps to KUBE-SVC-OLD, which is not declared in table nat"]);
    }

    #[test]
    fn rules_in_undeclared_chain() {
        let text = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SEP-X -j DNAT --to-destination 10.0.0.1:80\n\
                    -A POSTROUTING -j MASQUERADE\n";
        assert_eq!(problems(text), ["nat/KUBE-SEP-X has rules but is not declared"]);
    }

    #[test]
    fn unused_kube_chain() {
        let text = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SVC-ORPHAN - [0:0]\n\
                    :OTHER-CHAIN - [0:0]\n-A KUBE-SVC-ORPHAN -j KUBE-MARK-MASQ\n";
        assert_eq!(problems(text), ["nat/KUBE-SVC-ORPHAN is declared but nothing jumps to it"]);
    }

    #[test]
    fn jump_to_empty_chain() {
        let text = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
                    :KUBE-SVC-EMPTY - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-EMPTY\n\
                    -A KUBE-SERVICES -j KUBE-NODEPORTS\n-A KUBE-SERVICES -j KUBE-MARK-MASQ\n";
        assert_eq!(problems(text), ["nat/KUBE-SERVICES jumps to KUBE-SVC-EMPTY, which has no rules"]);
    }

    #[test]
    fn problems_carry_structured_fields() {
        let text = "*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-GONE\n";
        assert_eq!(
            check(&rules(text)),
            [Problem::UndeclaredTarget {
                table: TableName::Filter,
                chain: "KUBE-SERVICES".into(),
                target: "KUBE-GONE".into(),
            }]
        );
    }
}
