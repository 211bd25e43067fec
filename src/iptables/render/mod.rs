//! Pure rendering: `ClusterState` + `NodeConfig` → the kube-proxy restore input, as a `Ruleset`.
//! (being written: signatures are final)

use super::ruleset::{Rule, Ruleset, TableName};
use crate::model::{ClusterState, NodeConfig};

/// A jump rule from a built-in chain into one of our chains (ensured, never restored blindly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpRule {
    /// The table of the built-in chain.
    pub table: TableName,
    /// The rule, as `-A BUILTIN ... -j KUBE-...` (the applier inserts it at position 1).
    pub rule: Rule,
}

/// Renders the restore input (filter then nat) for one IP family.
pub fn render(_state: &ClusterState, _node: &NodeConfig) -> Ruleset {
    todo!("renderer being written")
}

/// The jump rules kube-proxy ensures in built-in chains, in the order it ensures them.
pub fn jump_rules(_node: &NodeConfig) -> Vec<JumpRule> {
    todo!("renderer being written")
}
