//! The effective rules of every chain, after `-A`/`-I`/`-D` and `-X`, plus kube-proxy's entry jumps
//! for built-in chains a restore input leaves out. Knows nothing about packets.

use std::collections::{HashMap, HashSet};

use crate::rules::chain_names::{
    fixed, KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
};
use crate::rules::ruleset::{Arg, Rule, RuleOp, Ruleset, TableName};

/// One table's chains.
#[derive(Debug, Default)]
struct TableIndex<'a> {
    rules: HashMap<&'a str, Vec<&'a Rule>>,
    declared: HashSet<&'a str>,
    policies: HashMap<&'a str, &'a str>,
    implicit: HashSet<&'a str>,
}

/// Chains and their rules, per table.
#[derive(Debug, Default)]
pub(super) struct ChainIndex<'a> {
    tables: HashMap<TableName, TableIndex<'a>>,
}

impl<'a> ChainIndex<'a> {
    /// Indexes `ruleset`; `entry_rules` (see [`kube_proxy_entry_rules`]) stand in for built-in
    /// chains that have no rules of their own.
    pub fn new(ruleset: &'a Ruleset, entry_rules: &'a [(TableName, Rule)]) -> Self {
        let mut index = ChainIndex::default();
        for table in &ruleset.tables {
            let t = index.tables.entry(table.name).or_default();
            for decl in &table.chains {
                t.declared.insert(decl.name.as_str());
                t.rules.entry(decl.name.as_str()).or_default();
                if let Some(policy) = decl.policy.as_deref() {
                    t.policies.insert(decl.name.as_str(), policy);
                }
            }
            for rule in &table.rules {
                apply(t.rules.entry(rule.chain.as_str()).or_default(), rule);
            }
            for gone in &table.deletes {
                t.rules.remove(gone.as_str());
                t.declared.remove(gone.as_str());
            }
        }
        for (table, rule) in entry_rules {
            let Some(t) = index.tables.get_mut(table) else {
                continue;
            };
            let chain = rule.chain.as_str();
            let has_own = t.rules.get(chain).is_some_and(|r| !r.is_empty()) && !t.implicit.contains(chain);
            let target_exists = rule.target().is_some_and(|c| t.rules.contains_key(c));
            if !has_own && target_exists {
                t.implicit.insert(chain);
                t.rules.entry(chain).or_default().push(rule);
            }
        }
        index
    }

    /// The rules of `chain` in `table`, in evaluation order.
    pub fn rules(&self, table: TableName, chain: &str) -> &[&'a Rule] {
        self.tables.get(&table).and_then(|t| t.rules.get(chain)).map_or(&[], Vec::as_slice)
    }

    /// Whether `chain` exists in `table` (declared, or given rules).
    pub fn exists(&self, table: TableName, chain: &str) -> bool {
        self.tables.get(&table).is_some_and(|t| t.rules.contains_key(chain))
    }

    /// The declared policy of a built-in chain.
    pub fn policy(&self, table: TableName, chain: &str) -> Option<&'a str> {
        self.tables.get(&table).and_then(|t| t.policies.get(chain).copied())
    }

    /// Whether `chain`'s rules are kube-proxy's assumed entry jumps rather than the input's.
    pub fn is_implicit(&self, table: TableName, chain: &str) -> bool {
        self.tables.get(&table).is_some_and(|t| t.implicit.contains(chain))
    }
}

/// Applies one rule line to its chain's rule list.
fn apply<'a>(rules: &mut Vec<&'a Rule>, rule: &'a Rule) {
    match rule.op {
        RuleOp::Append => rules.push(rule),
        RuleOp::Insert(pos) => {
            let at = pos.map_or(0, |p| (p as usize).saturating_sub(1)).min(rules.len());
            rules.insert(at, rule);
        }
        RuleOp::Delete => {
            if let Some(i) = rules.iter().position(|r| r.args == rule.args) {
                rules.remove(i);
            }
        }
    }
}

/// The jump rules kube-proxy ensures in built-in chains (reference section 2.2), in their final
/// order on a fresh node. Used only for built-in chains the traced input has no rules for
/// (an `iptables-restore` input never carries them), and only when the target chain exists.
pub(super) fn kube_proxy_entry_rules() -> Vec<(TableName, Rule)> {
    use TableName::{Filter, Nat};
    let new = || [Arg::new("-m", "conntrack"), Arg::new("--ctstate", "NEW")];
    let jump = |chain: &'static str, extra: &[Arg], comment: Option<&str>, target: &str| {
        let mut b = Rule::append(&fixed(chain)).args(extra.iter().cloned());
        if let Some(c) = comment {
            b = b.comment(c);
        }
        b.jump(target)
    };
    let firewall = "kubernetes load balancer firewall";
    let portals = "kubernetes service portals";
    let external = "kubernetes externally-visible service portals";
    vec![
        (Filter, jump("INPUT", &[], None, KUBE_FIREWALL)),
        (Filter, jump("INPUT", &new(), Some(firewall), KUBE_PROXY_FIREWALL)),
        (Filter, jump("INPUT", &[], Some("kubernetes health check service ports"), KUBE_NODEPORTS)),
        (Filter, jump("INPUT", &new(), Some(external), KUBE_EXTERNAL_SERVICES)),
        (Filter, jump("FORWARD", &new(), Some(firewall), KUBE_PROXY_FIREWALL)),
        (Filter, jump("FORWARD", &[], Some("kubernetes forwarding rules"), KUBE_FORWARD)),
        (Filter, jump("FORWARD", &new(), Some(portals), KUBE_SERVICES)),
        (Filter, jump("FORWARD", &new(), Some(external), KUBE_EXTERNAL_SERVICES)),
        (Filter, jump("OUTPUT", &[], None, KUBE_FIREWALL)),
        (Filter, jump("OUTPUT", &new(), Some(firewall), KUBE_PROXY_FIREWALL)),
        (Filter, jump("OUTPUT", &new(), Some(portals), KUBE_SERVICES)),
        (Nat, jump("PREROUTING", &[], Some(portals), KUBE_SERVICES)),
        (Nat, jump("OUTPUT", &[], Some(portals), KUBE_SERVICES)),
        (Nat, jump("POSTROUTING", &[], Some("kubernetes postrouting rules"), KUBE_POSTROUTING)),
    ]
}
