//! Proxy configuration shared by the daemon and the offline commands: kube-proxy's
//! `KubeProxyConfiguration` and flags (decoded, defaulted, overlaid and validated as kube-proxy
//! does), and the options that shape the rules, combined with the Node object and flannel's
//! subnet.env into a per-family `NodeConfig`.
//!
//! - `types`: the configuration type, every field; `decode`: reading a file; `defaults`:
//!   kube-proxy's defaults; `flags`: every kube-proxy flag; `validate`: start-up validation;
//!   `effective`: file → defaults → flags → validation, plus the start-up notes; `daemon`: the
//!   daemon's resolved configuration (mode, node options, periods, addresses); `features`:
//!   feature gates; `duration`: Go durations; `watch`: exit when the `--config` file changes.

pub mod daemon;
pub mod decode;
pub mod defaults;
pub mod duration;
pub mod effective;
pub mod features;
pub mod flags;
pub mod types;
pub mod validate;
pub mod watch;

pub use daemon::{DaemonConfig, ProxyMode};
pub use effective::{resolve, Effective};
pub use flags::KubeProxyFlags;
pub use types::KubeProxyConfiguration;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::flannel::subnet_env::SubnetEnv;
use crate::model::NodeFacts;
use crate::model::{
    contains_ipv4_loopback, IpFamily, LocalDetector, NodeConfig, NodePortAddresses, NodePortEntry, ServicesDispatch,
};

/// Errors turning options into a node configuration; each names the flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A detect-local mode that needs more information than was given.
    #[error("--detect-local-mode {mode}: {reason}")]
    DetectLocal {
        /// The mode.
        mode: &'static str,
        /// What is missing or wrong.
        reason: String,
    },
    /// A `--nodeport-addresses` entry that is neither a CIDR nor a keyword.
    #[error("--nodeport-addresses: {}", crate::model::BadEntry(.0.clone()))]
    NodePortAddress(String),
    /// A configuration value (from the file or a flag) that kube-proxy would reject.
    #[error("{field} ({flag}): {reason}")]
    Field {
        /// The `KubeProxyConfiguration` field.
        field: &'static str,
        /// The flag that sets it.
        flag: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A flag value that does not parse.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// The configuration file could not be used.
    #[error("--config {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `--detect-local-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetectLocalMode {
    /// Source inside the cluster CIDR.
    #[default]
    ClusterCidr,
    /// Source inside this node's pod CIDR.
    NodeCidr,
    /// Arrives on the pod bridge.
    BridgeInterface,
    /// Arrives on an interface with the pod prefix.
    InterfaceNamePrefix,
    /// No detector.
    None,
}

impl DetectLocalMode {
    /// Parses kube-proxy's names (case-insensitive) plus `none`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "clustercidr" | "" => DetectLocalMode::ClusterCidr,
            "nodecidr" => DetectLocalMode::NodeCidr,
            "bridgeinterface" => DetectLocalMode::BridgeInterface,
            "interfacenameprefix" => DetectLocalMode::InterfaceNamePrefix,
            "none" => DetectLocalMode::None,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            DetectLocalMode::ClusterCidr => "ClusterCIDR",
            DetectLocalMode::NodeCidr => "NodeCIDR",
            DetectLocalMode::BridgeInterface => "BridgeInterface",
            DetectLocalMode::InterfaceNamePrefix => "InterfaceNamePrefix",
            DetectLocalMode::None => "none",
        }
    }
}

/// The options that shape the rendered rules (flags, config file, probed facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOptions {
    /// This node's name.
    pub node_name: String,
    /// `--cluster-cidr` (any families).
    pub cluster_cidrs: Vec<IpNet>,
    /// `--detect-local-mode`.
    pub detect_local_mode: DetectLocalMode,
    /// `--pod-bridge-interface`.
    pub pod_bridge_interface: Option<String>,
    /// `--pod-interface-name-prefix`.
    pub pod_interface_name_prefix: Option<String>,
    /// Explicit node IPs (otherwise the Node's addresses).
    pub node_ips: Vec<IpAddr>,
    /// The node's interface addresses: probed by the daemon on every sync, a flag offline;
    /// empty means the node IPs.
    pub node_addresses: Vec<IpNet>,
    /// `--nodeport-addresses` entries: CIDRs and the keywords `primary`, `localhost`, `all`.
    pub nodeport_addresses: Vec<String>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit`.
    pub masquerade_bit: u8,
    /// Localhost NodePorts are on: `--iptables-localhost-nodeports` and `--nodeport-addresses`
    /// admitting IPv4 loopback (kube-proxy's condition; then route_localnet is needed).
    pub localhost_nodeports: bool,
    /// `MASQUERADE --random-fully` is supported (the daemon probes the iptables version).
    pub random_fully: bool,
    /// nfacct counters exist (the daemon ensures them through netlink).
    pub nfacct: bool,
    /// `nf_conntrack_tcp_be_liberal` is set (the daemon reads it at start).
    pub conntrack_tcp_be_liberal: bool,
    /// `--services-dispatch`.
    pub services_dispatch: ServicesDispatch,
    /// The PreferSameTrafficDistribution feature gate (node hints).
    pub prefer_same_node: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            node_name: String::new(),
            cluster_cidrs: Vec::new(),
            detect_local_mode: DetectLocalMode::ClusterCidr,
            pod_bridge_interface: None,
            pod_interface_name_prefix: None,
            node_ips: Vec::new(),
            node_addresses: Vec::new(),
            nodeport_addresses: Vec::new(),
            masquerade_all: false,
            masquerade_bit: 14,
            localhost_nodeports: true,
            random_fully: true,
            nfacct: false,
            conntrack_tcp_be_liberal: false,
            services_dispatch: ServicesDispatch::Flat,
            prefer_same_node: true,
        }
    }
}

/// Linux interface names: 1–15 characters, no `/`, whitespace, quotes or `+`.
pub fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '"' | '\'' | '\\' | '+' | '!'))
}

impl NodeOptions {
    /// Checks the options that do not depend on the node (run at start, before any sync).
    pub fn validate(&self) -> Result<()> {
        let detect = |reason: &str| Error::DetectLocal { mode: self.detect_local_mode.name(), reason: reason.into() };
        match self.detect_local_mode {
            DetectLocalMode::BridgeInterface => match &self.pod_bridge_interface {
                Some(name) if valid_interface(name) => {}
                Some(name) => return Err(detect(&format!("--pod-bridge-interface {name:?} is not an interface name"))),
                None => return Err(detect("needs --pod-bridge-interface")),
            },
            DetectLocalMode::InterfaceNamePrefix => match &self.pod_interface_name_prefix {
                Some(prefix) if valid_interface(prefix) => {}
                Some(prefix) => {
                    return Err(detect(&format!("--pod-interface-name-prefix {prefix:?} is not an interface name")))
                }
                None => return Err(detect("needs --pod-interface-name-prefix")),
            },
            _ => {}
        }
        self.nodeport_entries().map(|_| ())
    }

    /// Whether kube-proxy's iptables proxier serves NodePorts on IPv4 loopback (and so sets
    /// `route_localnet`): `--iptables-localhost-nodeports` is on and the IPv4 entries of
    /// `--nodeport-addresses` include loopback (see [`contains_ipv4_loopback`]).
    pub fn ipv4_localhost_nodeports(&self) -> bool {
        self.localhost_nodeports && self.nodeport_entries().is_ok_and(|e| contains_ipv4_loopback(&e))
    }

    /// The parsed `--nodeport-addresses` entries.
    pub fn nodeport_entries(&self) -> Result<Vec<NodePortEntry>> {
        NodePortEntry::parse_all(&self.nodeport_addresses).map_err(|bad| Error::NodePortAddress(bad.0))
    }

    /// The cluster CIDR of `family`: the flag, else flannel's network.
    pub fn cluster_cidr(&self, family: IpFamily, flannel: Option<&SubnetEnv>) -> Option<IpNet> {
        let in_family = |net: &&IpNet| family.contains(&net.addr());
        self.cluster_cidrs
            .iter()
            .find(in_family)
            .or_else(|| flannel.and_then(|f| f.networks.iter().find(in_family)))
            .copied()
    }

    /// The node configuration for `family`, from these options, the Node's facts and flannel.
    pub fn node_config(
        &self,
        family: IpFamily,
        facts: Option<&NodeFacts>,
        flannel: Option<&SubnetEnv>,
    ) -> Result<NodeConfig> {
        self.validate()?;
        let in_family = |net: &&IpNet| family.contains(&net.addr());
        let node_cidr = flannel
            .and_then(|f| f.subnets.iter().find(in_family).copied())
            .or_else(|| facts.and_then(|f| f.pod_cidrs.iter().find(in_family).copied()));
        let local_detector = match self.detect_local_mode {
            DetectLocalMode::None => LocalDetector::None,
            DetectLocalMode::ClusterCidr => {
                self.cluster_cidr(family, flannel).map_or(LocalDetector::None, LocalDetector::Cidr)
            }
            DetectLocalMode::NodeCidr => match node_cidr {
                Some(cidr) => LocalDetector::Cidr(cidr),
                None => {
                    return Err(Error::DetectLocal {
                        mode: "NodeCIDR",
                        reason: format!(
                            "no {family} pod CIDR for this node (Node spec.podCIDRs or flannel's FLANNEL_SUBNET)"
                        ),
                    })
                }
            },
            DetectLocalMode::BridgeInterface => {
                LocalDetector::Bridge(self.pod_bridge_interface.clone().unwrap_or_default())
            }
            DetectLocalMode::InterfaceNamePrefix => {
                LocalDetector::InterfacePrefix(self.pod_interface_name_prefix.clone().unwrap_or_default())
            }
        };
        let mut node_ips: Vec<IpAddr> = self.node_ips.clone();
        if node_ips.is_empty() {
            node_ips = facts.map(|f| f.internal_ips.clone()).unwrap_or_default();
        }
        let mut local_addresses = self.node_addresses.clone();
        if local_addresses.is_empty() {
            local_addresses = node_ips.iter().map(|ip| IpNet::from(*ip)).collect();
        }
        let nodeport_addresses = NodePortAddresses::for_family(&self.nodeport_entries()?, family, &node_ips);
        Ok(NodeConfig {
            family,
            node_name: self.node_name.clone(),
            zone: facts.and_then(|f| f.zone.clone()),
            node_ips,
            local_addresses,
            local_detector,
            masquerade_all: self.masquerade_all,
            masquerade_bit: self.masquerade_bit,
            nodeport_addresses,
            localhost_nodeports: self.localhost_nodeports,
            random_fully: self.random_fully,
            nfacct: self.nfacct,
            conntrack_tcp_be_liberal: self.conntrack_tcp_be_liberal,
            services_dispatch: self.services_dispatch,
            prefer_same_node: self.prefer_same_node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_cidr_detector_per_family_and_flannel_fallback() {
        let opts = NodeOptions { cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()], ..NodeOptions::default() };
        let v4 = opts.node_config(IpFamily::V4, None, None).unwrap();
        assert_eq!(v4.local_detector, LocalDetector::Cidr("10.244.0.0/16".parse().unwrap()));
        let v6 = opts.node_config(IpFamily::V6, None, None).unwrap();
        assert_eq!(v6.local_detector, LocalDetector::None);
        let flannel =
            crate::flannel::subnet_env::parse("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n").unwrap();
        let opts = NodeOptions { detect_local_mode: DetectLocalMode::NodeCidr, ..NodeOptions::default() };
        let n = opts.node_config(IpFamily::V4, None, Some(&flannel)).unwrap();
        assert_eq!(n.local_detector, LocalDetector::Cidr("10.42.3.0/24".parse().unwrap()));
        let n = NodeOptions::default().node_config(IpFamily::V4, None, Some(&flannel)).unwrap();
        assert_eq!(n.local_detector, LocalDetector::Cidr("10.42.0.0/16".parse().unwrap()));
    }

    #[test]
    fn ipv4_localhost_nodeports_follow_nodeport_addresses() {
        let with = |addresses: &[&str], on: bool| NodeOptions {
            nodeport_addresses: addresses.iter().map(|a| a.to_string()).collect(),
            localhost_nodeports: on,
            ..NodeOptions::default()
        };
        assert!(with(&[], true).ipv4_localhost_nodeports(), "every address includes loopback");
        assert!(!with(&[], false).ipv4_localhost_nodeports(), "turned off");
        assert!(with(&["127.0.0.0/8"], true).ipv4_localhost_nodeports());
        assert!(with(&["10.0.0.0/8", "127.0.0.1/32"], true).ipv4_localhost_nodeports());
        assert!(with(&["0.0.0.0/0"], true).ipv4_localhost_nodeports());
        assert!(!with(&["10.0.0.0/8"], true).ipv4_localhost_nodeports(), "no loopback among the IPv4 ones");
        assert!(!with(&["primary"], true).ipv4_localhost_nodeports(), "the node's IPs");
        assert!(with(&["fd00::/64"], true).ipv4_localhost_nodeports(), "no IPv4 entry: every IPv4 address");
    }

    #[test]
    fn errors_name_the_flag() {
        let opts = NodeOptions { detect_local_mode: DetectLocalMode::BridgeInterface, ..NodeOptions::default() };
        assert!(opts.validate().unwrap_err().to_string().contains("--pod-bridge-interface"));
        let opts = NodeOptions { nodeport_addresses: vec!["bogus".into()], ..NodeOptions::default() };
        assert!(opts.validate().unwrap_err().to_string().contains("--nodeport-addresses"));
        let opts = NodeOptions { detect_local_mode: DetectLocalMode::NodeCidr, ..NodeOptions::default() };
        assert!(opts.node_config(IpFamily::V4, None, None).unwrap_err().to_string().contains("NodeCIDR"));
        assert_eq!(DetectLocalMode::parse("interfaceNamePrefix"), Some(DetectLocalMode::InterfaceNamePrefix));
        assert_eq!(DetectLocalMode::parse("bogus"), None);
    }
}
