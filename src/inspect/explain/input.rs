//! What `explain` looks at, as plain values: the question, the desired state (objects, node
//! configuration, rendered rules) and what was observed on the node (rules, flows, sysctls).

use std::net::IpAddr;

use crate::conntrack::Flow;
use crate::model::{ClusterState, NodeConfig};
use crate::rules::chain_names::{is_service_chain, KUBE_SERVICES};
use crate::rules::ruleset::Ruleset;
use crate::startup::Facts;

/// Which port of the service (`--port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelector {
    /// The port's name.
    Name(String),
    /// The service port number.
    Number(u16),
}

impl PortSelector {
    /// A number when `text` is one, else a name.
    pub fn parse(text: &str) -> Self {
        text.parse().map_or_else(|_| PortSelector::Name(text.to_string()), PortSelector::Number)
    }
}

/// The question asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// Only this port; every port when `None`.
    pub port: Option<PortSelector>,
    /// The client address to walk the paths from (and to check source ranges for).
    pub from: Option<IpAddr>,
}

/// What should be: the cluster view, the node configuration and the rules they render to
/// (with the built-in jumps).
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    /// The cluster view.
    pub state: &'a ClusterState,
    /// This node and family.
    pub node: &'a NodeConfig,
    /// `render(state, node)` plus the jump rules.
    pub rules: &'a Ruleset,
}

/// Per-service chains (and `KUBE-SERVICES`) found in each backend; `None` when that backend
/// was not read (offline, or its save tool failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendChains {
    /// In iptables-nft.
    pub nft: Option<usize>,
    /// In iptables-legacy.
    pub legacy: Option<usize>,
}

/// What was read on the node, or from a dump.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The live ruleset of the family (the backend holding kube-proxy's chains, or the dump).
    pub rules: Ruleset,
    /// kube-proxy's chains per backend.
    pub backends: BackendChains,
    /// The family's UDP conntrack flows; `None` when not read.
    pub flows: Option<Vec<Flow>>,
    /// Sysctls (flannel's rules are judged from `rules`); `None` when not read.
    pub facts: Option<Facts>,
    /// What the daemon's `/livez` answered; `None` when not asked or not reachable.
    pub daemon: Option<DaemonHealth>,
}

/// The daemon's own health report (`/livez`: node eligibility left out).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonHealth {
    /// No change has been pending for longer than twice the sync period.
    pub healthy: bool,
    /// Its last successful sync (RFC 3339), as it reports it.
    #[serde(default)]
    pub last_updated: String,
    /// Its clock when it answered (RFC 3339).
    #[serde(default)]
    pub current_time: String,
}

/// How many kube-proxy chains `ruleset` holds: per-service chains and `KUBE-SERVICES` — the
/// chains only kube-proxy (or kubenat) creates, not the kubelet's `KUBE-*` chains.
pub fn kube_proxy_chains(ruleset: &Ruleset) -> usize {
    let chains = ruleset.tables.iter().flat_map(|t| &t.chains);
    chains.filter(|c| c.name.as_str() == KUBE_SERVICES || is_service_chain(c.name.as_str())).count()
}
