//! The report `explain` produces — problems with their codes and severities, per-port facts,
//! the paths traced — and its JSON shape (the contract documented in `docs/explain.md`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::inspect::trace::Trace;

/// What is wrong, as a stable machine-readable code (`rules-drift`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// None of the service port's rules are in the live ruleset.
    RulesMissing,
    /// Some of the service port's chains differ from the desired rules.
    RulesDrift,
    /// A jump from a built-in chain to kube-proxy's chains is missing (node-level).
    JumpsMissing,
    /// The service port has no endpoints at all.
    NoEndpoints,
    /// Endpoints exist but none is ready (only terminating ones, or none serving).
    NoReadyEndpoints,
    /// A Local traffic policy and no usable endpoint on this node.
    NoLocalEndpoints,
    /// `--from` is outside `loadBalancerSourceRanges`.
    SourceRangeBlocked,
    /// A UDP flow to the service whose reply source is not a serving endpoint.
    StaleConntrack,
    /// IP forwarding is off.
    NodeForwardingOff,
    /// br_netfilter missing or `bridge-nf-call-iptables` off.
    BrNetfilterOff,
    /// kube-proxy chains in both iptables-nft and iptables-legacy.
    BackendSplit,
    /// flannel's masquerade runs before kube-proxy's in nat POSTROUTING.
    FlannelOrder,
    /// Localhost NodePorts on but `route_localnet` is not 1.
    RouteLocalnetOff,
    /// The daemon's `/livez` says a change has been pending longer than twice its sync period.
    StaleSync,
}

impl Code {
    /// Every code, in report order.
    pub const ALL: [Code; 14] = [
        Code::RulesMissing,
        Code::RulesDrift,
        Code::JumpsMissing,
        Code::NoEndpoints,
        Code::NoReadyEndpoints,
        Code::NoLocalEndpoints,
        Code::SourceRangeBlocked,
        Code::StaleConntrack,
        Code::NodeForwardingOff,
        Code::BrNetfilterOff,
        Code::BackendSplit,
        Code::FlannelOrder,
        Code::RouteLocalnetOff,
        Code::StaleSync,
    ];

    /// The code as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::RulesMissing => "rules-missing",
            Code::RulesDrift => "rules-drift",
            Code::JumpsMissing => "jumps-missing",
            Code::NoEndpoints => "no-endpoints",
            Code::NoReadyEndpoints => "no-ready-endpoints",
            Code::NoLocalEndpoints => "no-local-endpoints",
            Code::SourceRangeBlocked => "source-range-blocked",
            Code::StaleConntrack => "stale-conntrack",
            Code::NodeForwardingOff => "node-forwarding-off",
            Code::BrNetfilterOff => "br-netfilter-off",
            Code::BackendSplit => "backend-split",
            Code::FlannelOrder => "flannel-order",
            Code::RouteLocalnetOff => "route-localnet-off",
            Code::StaleSync => "stale-sync",
        }
    }

    /// Whether the problem is about the node, not one service.
    pub fn is_node_level(self) -> bool {
        matches!(
            self,
            Code::JumpsMissing
                | Code::NodeForwardingOff
                | Code::BrNetfilterOff
                | Code::BackendSplit
                | Code::FlannelOrder
                | Code::RouteLocalnetOff
        )
    }

    /// Whether the problem is a fact of this node's state (rules, conntrack) rather than of the
    /// cluster's objects: `explain node` judges a node by these and the node-level ones.
    pub fn is_node_specific(self) -> bool {
        self.is_node_level() || matches!(self, Code::RulesMissing | Code::RulesDrift | Code::StaleConntrack)
    }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Some traffic fails or may fail.
    Warning,
    /// The service (or the node) does not work as configured.
    Error,
}

impl Severity {
    /// The severity as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// The overall judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No problem.
    Ok,
    /// Only warnings.
    Degraded,
    /// At least one error.
    Broken,
}

impl Verdict {
    /// `broken` with any error, `degraded` with only warnings, else `ok`.
    pub fn of<'a>(problems: impl IntoIterator<Item = &'a Problem>) -> Verdict {
        problems.into_iter().map(|p| p.severity).max().map_or(Verdict::Ok, |s| match s {
            Severity::Warning => Verdict::Degraded,
            Severity::Error => Verdict::Broken,
        })
    }

    /// The verdict as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Degraded => "degraded",
            Verdict::Broken => "broken",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind of problem.
    pub code: Code,
    /// How bad.
    pub severity: Severity,
    /// What was found, naming the chain, address or sysctl.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// `explain service`: one service on one node.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `namespace/name`.
    pub service: String,
    /// The judgement over every problem.
    pub verdict: Verdict,
    /// The ports explained (one, with `--port`).
    pub ports: Vec<PortReport>,
    /// Problems of the ports and of the node, in code order.
    pub problems: Vec<Problem>,
}

/// One service port.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    /// The port's name (empty for an unnamed port).
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The service port number.
    pub port: u16,
    /// The nat chains the desired rules use for this port (SVC, SVL, EXT, FW, SEP), sorted.
    pub chains: Vec<String>,
    /// Where the port is reachable.
    pub addresses: Vec<Address>,
    /// Traffic policies, affinity and source ranges.
    pub policies: Policies,
    /// Every endpoint of this family.
    pub endpoints: Vec<EndpointReport>,
    /// The paths traced through the live rules.
    pub paths: Vec<PathReport>,
}

/// What kind of address a frontend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressKind {
    /// The cluster IP.
    ClusterIp,
    /// A node address with the NodePort.
    NodePort,
    /// An external IP.
    ExternalIp,
    /// A load-balancer ingress IP.
    LoadBalancer,
}

impl AddressKind {
    /// The kind as written in reports (`cluster-ip`, `node-port`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressKind::ClusterIp => "cluster-ip",
            AddressKind::NodePort => "node-port",
            AddressKind::ExternalIp => "external-ip",
            AddressKind::LoadBalancer => "load-balancer",
        }
    }
}

/// One frontend address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// What kind.
    pub kind: AddressKind,
    /// `IP:port`.
    pub address: SocketAddr,
}

/// The port's policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policies {
    /// `Cluster` or `Local`.
    pub external_traffic_policy: &'static str,
    /// `Cluster` or `Local`.
    pub internal_traffic_policy: &'static str,
    /// ClientIP affinity timeout in seconds, `null` when off.
    pub session_affinity_seconds: Option<u32>,
    /// `loadBalancerSourceRanges`.
    pub source_ranges: Vec<String>,
}

/// One endpoint of the port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointReport {
    /// `IP:port`.
    pub address: SocketAddr,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// Runs on this node.
    pub local: bool,
    /// Its node, when known.
    pub node: Option<String>,
    /// Share of new connections it gets on the first path traced (the cluster IP), 0 to 1.
    pub probability: f64,
}

/// One packet walked through the live rules.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// Which frontend.
    pub kind: AddressKind,
    /// The packet's source address.
    pub source: IpAddr,
    /// Sent by the node itself (nat OUTPUT) rather than arriving from the network.
    pub from_node: bool,
    /// The frontend address.
    pub destination: SocketAddr,
    /// Where it ends, one entry per path.
    pub outcomes: Vec<OutcomeReport>,
    /// The trace itself (text output prints it as `kubenat trace` does).
    #[serde(skip)]
    pub trace: Trace,
}

/// Where one path ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeReport {
    /// `dnat`, `redirect`, `accept` (no service matched), `filter-accept` (no service matched,
    /// a filter rule accepted it), `drop`, `reject` or `aborted`.
    pub verdict: &'static str,
    /// The endpoint (`dnat`), local port (`redirect`) or chain (the others but `accept`).
    pub target: Option<String>,
    /// Probability of this path.
    pub probability: f64,
    /// Source-NATed on the way out.
    pub masquerade: bool,
    /// The rule that accepted, dropped or rejected the packet (`-A CHAIN …`), when one did.
    pub rule: Option<String>,
}

/// `explain node`: the node's own checks and problem counts over every service.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The node's name (`--hostname-override` or the host name), may be empty offline.
    pub node: String,
    /// Judged from the node-level problems and the node-specific service problems
    /// (`rules-missing`, `rules-drift`, `stale-conntrack`).
    pub verdict: Verdict,
    /// Node-level problems.
    pub problems: Vec<Problem>,
    /// Number of services looked at.
    pub services: usize,
    /// Services per verdict (`ok`, `degraded`, `broken`), counting every problem.
    pub verdicts: BTreeMap<Verdict, usize>,
    /// For each service-level code, the number of services with that problem.
    pub counts: BTreeMap<Code, usize>,
}
