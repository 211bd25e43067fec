//! What the renderer knows about the node it programs: identity, addresses and proxy settings.
//! Facts a daemon probes on a live node (addresses, sysctls, iptables features) are plain fields.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{IpFamily, NodePortAddresses};

/// How traffic from a local pod is recognised (`--detect-local-mode`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalDetector {
    /// No detector: no ClusterIP masquerade rule and no pod short-circuit in EXT chains.
    #[default]
    None,
    /// `ClusterCIDR`/`NodeCIDR`: the pod CIDR of this family (`-s cidr` / `! -s cidr`).
    Cidr(IpNet),
    /// `BridgeInterface`: `-i bridge` / `! -i bridge`.
    Bridge(String),
    /// `InterfaceNamePrefix`: `-i prefix+` / `! -i prefix+`.
    InterfacePrefix(String),
}

impl LocalDetector {
    /// Whether a detector is configured.
    pub fn is_implemented(&self) -> bool {
        !matches!(self, LocalDetector::None)
    }
}

/// How nat `KUBE-SERVICES` finds a service's rule (`--services-dispatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServicesDispatch {
    /// kube-proxy's layout: one rule per service destination, scanned in order (O(N) per new
    /// connection, byte-identical to kube-proxy's rules).
    #[default]
    Flat,
    /// Dispatch on the destination address, 4 bits per level, into sub-chains (O(log N)).
    Tree,
}

impl ServicesDispatch {
    /// Parses `flat` or `tree` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "flat" => Some(ServicesDispatch::Flat),
            "tree" => Some(ServicesDispatch::Tree),
            _ => None,
        }
    }
}

/// Everything about the node and the proxy configuration that changes the rendered rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The family this ruleset is for.
    pub family: IpFamily,
    /// This node's name (`--hostname-override`): endpoints with this `nodeName` are local.
    pub node_name: String,
    /// This node's `topology.kubernetes.io/zone` label, for topology hints.
    pub zone: Option<String>,
    /// The node's primary IPs (used for loadBalancerSourceRanges that include the node).
    pub node_ips: Vec<IpAddr>,
    /// Addresses configured on the node's interfaces (with prefix lengths).
    pub local_addresses: Vec<IpNet>,
    /// Pod-traffic detector for this family.
    pub local_detector: LocalDetector,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit` (0..=31).
    pub masquerade_bit: u8,
    /// `--nodeport-addresses`.
    pub nodeport_addresses: NodePortAddresses,
    /// `--iptables-localhost-nodeports` (only meaningful for IPv4).
    pub localhost_nodeports: bool,
    /// Whether iptables supports `MASQUERADE --random-fully`.
    pub random_fully: bool,
    /// Whether the nfacct counters exist (kube-proxy's `-m nfacct` metric rules).
    pub nfacct: bool,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` is set (omits the INVALID drop rule).
    pub conntrack_tcp_be_liberal: bool,
    /// `--services-dispatch`: layout of nat `KUBE-SERVICES`.
    pub services_dispatch: ServicesDispatch,
    /// Honour node hints (`trafficDistribution: PreferSameNode`, the
    /// PreferSameTrafficDistribution feature gate, on by default since kube-proxy 1.34).
    pub prefer_same_node: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            family: IpFamily::V4,
            node_name: String::new(),
            zone: None,
            node_ips: Vec::new(),
            local_addresses: Vec::new(),
            local_detector: LocalDetector::None,
            masquerade_all: false,
            masquerade_bit: 14,
            nodeport_addresses: NodePortAddresses::All,
            localhost_nodeports: true,
            random_fully: true,
            nfacct: false,
            conntrack_tcp_be_liberal: false,
            services_dispatch: ServicesDispatch::Flat,
            prefer_same_node: true,
        }
    }
}

impl NodeConfig {
    /// The masquerade mark value, `1 << masquerade_bit`.
    pub fn masquerade_mark(&self) -> u32 {
        1u32 << (self.masquerade_bit.min(31) as u32)
    }

    /// Whether localhost NodePorts apply to this family (IPv4 and the flag on).
    pub fn localhost_nodeports_active(&self) -> bool {
        self.family == IpFamily::V4 && self.localhost_nodeports
    }
}
