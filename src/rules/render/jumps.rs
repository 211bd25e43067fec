//! Jump rules from the built-in chains into kube-proxy's chains. kube-proxy inserts each one
//! at position 1 when it is missing, in this order (its own twelve, then its two copies of
//! kubelet's KUBE-FIREWALL jumps), creating a missing target chain empty; they are never part
//! of the restore body.

use crate::model::NodeConfig;
use crate::rules::chain_names as names;
use crate::rules::ruleset::{Arg, ChainName, Rule, RuleOp, TableName};

/// A jump rule from a built-in chain into one of our chains (ensured, never restored blindly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpRule {
    /// The table of the built-in chain.
    pub table: TableName,
    /// The rule; its op says where it goes when missing: `-I BUILTIN 1 …` (kube-proxy's jumps,
    /// ahead of everyone else's) or `-A BUILTIN …` (userspace mode's "must be last" jumps).
    pub rule: Rule,
}

fn jump(table: TableName, from: &'static str, to: &'static str, comment: Option<&str>, new_only: bool) -> JumpRule {
    let mut rule = Rule::append(&ChainName::fixed(from));
    if new_only {
        rule = rule.module("conntrack").arg(Arg::new("--ctstate", "NEW"));
    }
    if let Some(comment) = comment {
        rule = rule.comment(comment);
    }
    let mut rule = rule.jump(to);
    rule.op = RuleOp::Insert(Some(1));
    JumpRule { table, rule }
}

/// The jump rules kube-proxy ensures in built-in chains, in the order it ensures them (the
/// same on every node today; the node stays a parameter so a node-dependent jump has a home).
pub fn jump_rules(_node: &NodeConfig) -> Vec<JumpRule> {
    use TableName::{Filter, Nat};
    const EXTERNAL: &str = "kubernetes externally-visible service portals";
    const PORTALS: &str = "kubernetes service portals";
    const LB_FIREWALL: &str = "kubernetes load balancer firewall";
    let mut rules = vec![
        jump(Filter, "INPUT", names::KUBE_EXTERNAL_SERVICES, Some(EXTERNAL), true),
        jump(Filter, "FORWARD", names::KUBE_EXTERNAL_SERVICES, Some(EXTERNAL), true),
        jump(Filter, "INPUT", names::KUBE_NODEPORTS, Some("kubernetes health check service ports"), false),
        jump(Filter, "FORWARD", names::KUBE_SERVICES, Some(PORTALS), true),
        jump(Filter, "OUTPUT", names::KUBE_SERVICES, Some(PORTALS), true),
        jump(Filter, "FORWARD", names::KUBE_FORWARD, Some("kubernetes forwarding rules"), false),
        jump(Filter, "INPUT", names::KUBE_PROXY_FIREWALL, Some(LB_FIREWALL), true),
        jump(Filter, "OUTPUT", names::KUBE_PROXY_FIREWALL, Some(LB_FIREWALL), true),
        jump(Filter, "FORWARD", names::KUBE_PROXY_FIREWALL, Some(LB_FIREWALL), true),
        jump(Nat, "OUTPUT", names::KUBE_SERVICES, Some(PORTALS), false),
        jump(Nat, "PREROUTING", names::KUBE_SERVICES, Some(PORTALS), false),
        jump(Nat, "POSTROUTING", names::KUBE_POSTROUTING, Some("kubernetes postrouting rules"), false),
    ];
    // kube-proxy's copies of kubelet's jumps: ensured in every family whatever the localhost
    // NodePort setting (only the rule inside KUBE-FIREWALL depends on it).
    rules.push(jump(Filter, "INPUT", names::KUBE_FIREWALL, None, false));
    rules.push(jump(Filter, "OUTPUT", names::KUBE_FIREWALL, None, false));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_match_precedes_comment() {
        let rules = jump_rules(&NodeConfig::default());
        assert_eq!(
            rules[0].rule.to_string(),
            "-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
        );
        assert_eq!(rules.last().map(|r| r.rule.to_string()).as_deref(), Some("-I OUTPUT 1 -j KUBE-FIREWALL"));
        // As kube-proxy: the KUBE-FIREWALL jumps in IPv6 and with localhost NodePorts off too.
        let v6 = NodeConfig { family: crate::model::IpFamily::V6, ..NodeConfig::default() };
        let off = NodeConfig { localhost_nodeports: false, ..NodeConfig::default() };
        for node in [v6, off] {
            let rules = jump_rules(&node);
            assert_eq!(rules.len(), 14);
            assert_eq!(rules[12].rule.to_string(), "-I INPUT 1 -j KUBE-FIREWALL");
        }
    }
}
