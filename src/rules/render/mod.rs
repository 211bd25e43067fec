//! Pure rendering: `ClusterState` + `NodeConfig` → the restore input kube-proxy would write,
//! as a typed `Ruleset`. No clock, no environment, no process calls.
//!
//! Rules are emitted in exactly the order kube-proxy writes them (services sorted by name,
//! since upstream iterates a Go map), so the text diffs clean against kube-proxy's.

mod capture;
pub mod dispatch;
mod endpoint_chains;
mod endpoints;
pub mod incremental;
mod jumps;
mod policy_chains;
mod service;
mod service_ctx;
mod static_rules;
pub mod summary;
pub mod userspace;

pub use endpoints::no_local_endpoints;
pub use jumps::{jump_rules, JumpRule};
pub use static_rules::{NFACCT_INVALID, NFACCT_LOCALHOST_NODEPORTS};

use super::chain_names::{self, fixed};
use super::ruleset::{Arg, ChainName, Rule, Ruleset, Table, TableName};
use crate::model::{ClusterState, IpFamily, LocalDetector, NodeConfig, ServicesDispatch};

/// Above this many endpoints kube-proxy drops the per-endpoint comments (≈40 % less input).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// kube-proxy's "large cluster mode" for `family`: more than [`LARGE_CLUSTER_ENDPOINTS`]
/// endpoints over the services with a cluster IP of that family. Per-endpoint comments are
/// then left out, the hourly full sync is skipped and stale chains are deleted at most once a
/// sync period.
pub fn large_cluster(state: &ClusterState, family: IpFamily) -> bool {
    let total: usize = state
        .services
        .values()
        .filter(|s| s.cluster_ip(family).is_some())
        .map(|s| s.endpoints.iter().filter(|e| family.contains(&e.addr.ip())).count())
        .sum();
    total > LARGE_CLUSTER_ENDPOINTS
}

/// The two tables being written, plus what every writer needs to know.
pub(crate) struct Output<'a> {
    pub node: &'a NodeConfig,
    pub filter: Table,
    pub nat: Table,
    /// Per-endpoint comments are omitted (kube-proxy's "large cluster mode").
    pub large_cluster: bool,
}

impl Output<'_> {
    /// `-A chain` in the nat table.
    pub fn nat_rule(&mut self, rule: Rule) {
        self.nat.rules.push(rule);
    }

    /// `-A chain` in the filter table.
    pub fn filter_rule(&mut self, rule: Rule) {
        self.filter.rules.push(rule);
    }
}

/// The masquerade mark as kube-proxy writes it (`0x4000` for bit 14).
pub(crate) fn mark(node: &NodeConfig) -> String {
    format!("{:#x}", node.masquerade_mark())
}

/// Arguments that match traffic from a local pod (`-s cidr`, `-i bridge`, `-i prefix+`).
pub(crate) fn if_local(detector: &LocalDetector) -> Option<Arg> {
    match detector {
        LocalDetector::None => None,
        LocalDetector::Cidr(net) => Some(Arg::new("-s", net.to_string())),
        LocalDetector::Bridge(name) => Some(Arg::new("-i", name.clone())),
        LocalDetector::InterfacePrefix(prefix) => Some(Arg::new("-i", format!("{prefix}+"))),
    }
}

/// The negation of [`if_local`].
pub(crate) fn if_not_local(detector: &LocalDetector) -> Option<Arg> {
    if_local(detector).map(Arg::negate)
}

/// Renders the restore input (filter, then nat) for `node.family`; with
/// `--services-dispatch=tree` nat `KUBE-SERVICES` is then rearranged by [`dispatch`].
pub fn render(state: &ClusterState, node: &NodeConfig) -> Ruleset {
    let family = node.family;
    let mut out = Output {
        node,
        filter: Table::new(TableName::Filter),
        nat: Table::new(TableName::Nat),
        large_cluster: large_cluster(state, family),
    };
    static_rules::preamble(&mut out);
    for svc in state.services.values() {
        service::render_service(&mut out, svc);
    }
    static_rules::postamble(&mut out);
    if node.services_dispatch == ServicesDispatch::Tree {
        dispatch::dispatch_tree(&mut out.nat, family);
    }
    Ruleset { tables: vec![out.filter, out.nat] }
}

/// The chains a ruleset for `node` always declares in nat (the rest are per service).
pub fn top_level_nat_chains() -> [ChainName; 4] {
    [
        fixed(chain_names::KUBE_SERVICES),
        fixed(chain_names::KUBE_NODEPORTS),
        fixed(chain_names::KUBE_POSTROUTING),
        fixed(chain_names::KUBE_MARK_MASQ),
    ]
}

#[cfg(test)]
mod tests;
