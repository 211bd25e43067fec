//! Deferred deletion of stale service chains, as kube-proxy's large-cluster mode does: a
//! partial sync stops referencing a removed service's chains at once, but deletes them only
//! when the last clean-up is a sync period old (unreferenced chains are harmless). Pure: what
//! a plan deletes is taken out of it, and given back to a later plan.

use crate::rules::chain_names::is_service_chain;
use crate::rules::ruleset::{ChainName, Ruleset, TableName};

/// A chain left in the kernel for a later clean-up.
pub type StaleChain = (TableName, ChainName);

/// Takes the per-service chain deletions out of `plan` and returns them (other deletions
/// stay). Tables left with nothing to write are dropped from the plan.
pub fn defer_deletions(plan: &mut Ruleset) -> Vec<StaleChain> {
    let mut deferred = Vec::new();
    for table in &mut plan.tables {
        let name = table.name;
        table.deletes.retain(|chain| {
            let stale = is_service_chain(chain.as_str());
            if stale {
                deferred.push((name, chain.clone()));
            }
            !stale
        });
    }
    plan.tables.retain(|t| !(t.chains.is_empty() && t.rules.is_empty() && t.deletes.is_empty()));
    deferred
}

/// Adds to `plan` the deletion of every `stale` chain that `desired` does not declare (a
/// service that came back owns its chain again) and that `plan` does not delete already.
pub fn add_deletions(plan: &mut Ruleset, stale: &[StaleChain], desired: &Ruleset) {
    for (table, chain) in stale {
        if desired.table(*table).is_some_and(|t| t.is_declared(chain.as_str())) {
            continue;
        }
        let target = plan.table_mut(*table);
        if !target.deletes.contains(chain) {
            target.deletes.push(chain.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ruleset::Table;

    fn chain(name: &str) -> ChainName {
        ChainName::new(name).unwrap()
    }

    #[test]
    fn defers_only_service_chains() {
        let mut nat = Table::new(TableName::Nat);
        nat.deletes = vec![chain("KUBE-SVC-AAAAAAAAAAAAAAAA"), chain("KUBE-OTHER")];
        let mut plan = Ruleset { tables: vec![nat] };
        let deferred = defer_deletions(&mut plan);
        assert_eq!(deferred, [(TableName::Nat, chain("KUBE-SVC-AAAAAAAAAAAAAAAA"))]);
        assert_eq!(plan.tables[0].deletes, [chain("KUBE-OTHER")]);

        let mut only_stale =
            Ruleset { tables: vec![Table { deletes: vec![chain("KUBE-SEP-B")], ..Table::new(TableName::Nat) }] };
        assert_eq!(defer_deletions(&mut only_stale).len(), 1);
        assert!(only_stale.tables.is_empty(), "nothing left to write");
    }

    #[test]
    fn deletes_later_unless_the_chain_is_rendered_again() {
        let stale = [(TableName::Nat, chain("KUBE-SEP-GONE")), (TableName::Nat, chain("KUBE-SEP-BACK"))];
        let mut desired = Table::new(TableName::Nat);
        desired.declare(&chain("KUBE-SEP-BACK"));
        let desired = Ruleset { tables: vec![desired] };
        let mut plan = Ruleset::default();
        add_deletions(&mut plan, &stale, &desired);
        add_deletions(&mut plan, &stale, &desired);
        assert_eq!(plan.tables.len(), 1);
        assert_eq!(plan.tables[0].deletes, [chain("KUBE-SEP-GONE")]);
    }
}
