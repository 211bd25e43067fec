//! `--cleanup`: remove exactly what kube-proxy's cleanup removes — the jump rules from the
//! built-in chains into kube-proxy's chains, then the chains themselves (iptables and legacy
//! userspace mode) — and leave everything else (flannel, Docker, kubelet's KUBE-FIREWALL,
//! KUBE-MARK-MASQ, the canaries) untouched. Planned here, purely; [`super::Applier::cleanup`] reads
//! the tables and writes the plan.

use crate::rules::chain_names::{self, is_service_chain};
use crate::rules::parse::is_builtin_chain;
use crate::rules::ruleset::{ChainName, RuleOp, Ruleset, Table, TableName};

/// Chains `--cleanup` deletes, per table, besides the per-service chains in nat.
const NAT_CHAINS: [&str; 7] = [
    chain_names::KUBE_SERVICES,
    chain_names::KUBE_NODEPORTS,
    chain_names::KUBE_POSTROUTING,
    "KUBE-PORTALS-CONTAINER",
    "KUBE-PORTALS-HOST",
    "KUBE-NODEPORT-CONTAINER",
    "KUBE-NODEPORT-HOST",
];
const FILTER_CHAINS: [&str; 6] = [
    chain_names::KUBE_SERVICES,
    chain_names::KUBE_EXTERNAL_SERVICES,
    chain_names::KUBE_FORWARD,
    chain_names::KUBE_NODEPORTS,
    chain_names::KUBE_PROXY_FIREWALL,
    "KUBE-NODEPORT-NON-LOCAL",
];

/// The legacy userspace mode's chains (a subset of the cleanup set).
const USERSPACE_CHAINS: [&str; 5] = [
    "KUBE-PORTALS-CONTAINER",
    "KUBE-PORTALS-HOST",
    "KUBE-NODEPORT-CONTAINER",
    "KUBE-NODEPORT-HOST",
    "KUBE-NODEPORT-NON-LOCAL",
];

/// Which chains a cleanup removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything kube-proxy's `--cleanup` removes (both modes).
    All,
    /// Only the iptables mode's chains (when starting in userspace mode).
    IptablesMode,
    /// Only the userspace mode's chains (when starting in iptables mode).
    UserspaceMode,
}

fn owned(table: TableName, chain: &str, scope: Scope) -> bool {
    let ours = match table {
        TableName::Nat => NAT_CHAINS.contains(&chain) || is_service_chain(chain),
        TableName::Filter => FILTER_CHAINS.contains(&chain),
        _ => false,
    };
    let userspace = USERSPACE_CHAINS.contains(&chain);
    ours && match scope {
        Scope::All => true,
        Scope::IptablesMode => !userspace,
        Scope::UserspaceMode => userspace,
    }
}

/// The restore input that removes kube-proxy's rules and chains from `current` (a parsed
/// `iptables-save` of filter and nat). Empty when there is nothing to remove.
pub fn plan_cleanup(current: &Ruleset) -> Ruleset {
    plan_scoped_cleanup(current, Scope::All)
}

/// [`plan_cleanup`] limited to one mode's chains: a node switching modes loses the other
/// mode's rules in its first full sync.
pub fn plan_scoped_cleanup(current: &Ruleset, scope: Scope) -> Ruleset {
    let mut out = Ruleset::default();
    for table in &current.tables {
        let mut section = Table::new(table.name);
        for rule in &table.rules {
            let into_ours = rule.target().is_some_and(|t| owned(table.name, t, scope));
            if is_builtin_chain(table.name, rule.chain.as_str()) && into_ours {
                let mut delete = rule.clone();
                delete.op = RuleOp::Delete;
                section.rules.push(delete);
            }
        }
        let chains: Vec<ChainName> =
            table.chains.iter().filter(|c| owned(table.name, c.name.as_str(), scope)).map(|c| c.name.clone()).collect();
        section.deletes = chains;
        if !section.rules.is_empty() || !section.deletes.is_empty() {
            out.tables.push(section);
        }
    }
    out
}

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Jump rules deleted from built-in chains.
    pub jumps: usize,
    /// Chains flushed and deleted.
    pub chains: usize,
}

impl CleanupReport {
    /// Counts what a cleanup plan (from [`plan_cleanup`]) removes.
    pub fn of(plan: &Ruleset) -> Self {
        CleanupReport {
            jumps: plan.tables.iter().map(|t| t.rules.len()).sum(),
            chains: plan.tables.iter().map(|t| t.deletes.len()).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse;

    const NODE: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.0.0.1:6443
COMMIT
"#;

    #[test]
    fn removes_only_kube_proxy_chains_and_jumps() {
        let plan = plan_cleanup(&parse::parse(NODE).unwrap());
        let text = plan.to_string();
        assert!(text.contains("-D FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"));
        assert!(text.contains("-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"));
        assert!(
            text.contains("-D POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING")
        );
        for gone in ["-X KUBE-SERVICES", "-X KUBE-FORWARD", "-X KUBE-SVC-A", "-X KUBE-SEP-A", "-X KUBE-POSTROUTING"] {
            assert!(text.contains(gone), "{gone} missing:\n{text}");
        }
        for kept in ["FLANNEL", "-X KUBE-MARK-MASQ", "-X KUBE-FIREWALL", "-D INPUT"] {
            assert!(!text.contains(kept), "{kept} must survive:\n{text}");
        }
    }

    #[test]
    fn scoped_cleanup_removes_only_the_other_mode() {
        let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-PORTALS-CONTAINER - [0:0]\n:KUBE-SERVICES - [0:0]\n\
             -A PREROUTING -j KUBE-PORTALS-CONTAINER\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
        let current = parse::parse(text).unwrap();
        let userspace_gone = plan_scoped_cleanup(&current, Scope::UserspaceMode).to_string();
        assert!(userspace_gone.contains("-X KUBE-PORTALS-CONTAINER") && !userspace_gone.contains("KUBE-SERVICES"));
        let iptables_gone = plan_scoped_cleanup(&current, Scope::IptablesMode).to_string();
        assert!(iptables_gone.contains("-X KUBE-SERVICES") && !iptables_gone.contains("PORTALS"));
    }

    #[test]
    fn removes_tree_dispatch_chains() {
        let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-DISP-ABC - [0:0]\n\
             :KUBE-SVC-A - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -d 10.96.0.0/16 -j KUBE-DISP-ABC\n\
             -A KUBE-DISP-ABC -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A\nCOMMIT\n";
        let plan = plan_cleanup(&parse::parse(text).unwrap()).to_string();
        assert!(plan.contains("-X KUBE-DISP-ABC") && plan.contains("-X KUBE-SERVICES"), "{plan}");
        let userspace_only = plan_scoped_cleanup(&parse::parse(text).unwrap(), Scope::UserspaceMode);
        assert!(!userspace_only.to_string().contains("KUBE-DISP"));
    }

    #[test]
    fn nothing_to_do_on_a_clean_node() {
        let clean = "*nat\n:PREROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\nCOMMIT\n";
        assert!(plan_cleanup(&parse::parse(clean).unwrap()).tables.is_empty());
    }
}
