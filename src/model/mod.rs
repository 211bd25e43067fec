//! Domain types the renderer reads: service ports, endpoints and the whole cluster view.
//! Nothing here knows about Kubernetes API structs; `k8s/` converts into these.

pub mod build;
mod node;
mod node_facts;
mod nodeport_addresses;
mod port_plan;

pub use node::{LocalDetector, NodeConfig, ServicesDispatch};
pub use node_facts::{Leaving, NodeFacts};
pub use nodeport_addresses::{contains_ipv4_loopback, BadEntry, NodePortAddresses, NodePortEntry};
pub use port_plan::{PortPlan, PortPlanError};

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// An IP family; one ruleset is rendered per family (`iptables` / `ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum IpFamily {
    /// IPv4, programmed with `iptables`.
    #[default]
    V4,
    /// IPv6, programmed with `ip6tables`.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// Whether `ip` belongs to this family.
    pub fn contains(self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self
    }

    /// `IPv4` / `IPv6`: the Kubernetes API's spelling (EndpointSlice `addressType`, Service
    /// `ipFamilies`), also kube-proxy's `ip_family` metric label and health `status` key.
    pub fn api_name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// The loopback network of this family (`127.0.0.0/8` or `::1/128`).
    pub fn loopback_net(self) -> IpNet {
        match self {
            IpFamily::V4 => "127.0.0.0/8".parse().expect("static CIDR"),
            IpFamily::V6 => "::1/128".parse().expect("static CIDR"),
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        })
    }
}

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP
    Tcp,
    /// UDP
    Udp,
    /// SCTP
    Sctp,
}

impl Protocol {
    /// Lower-case name as iptables and the chain-name hash use it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses `TCP`/`tcp`/`UDP`/`SCTP` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one port of one Service: `namespace/name:port` (or `namespace/name` for an
/// unnamed port) plus its protocol. Sorted by namespace, name, port name, protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// Service namespace.
    pub namespace: Arc<str>,
    /// Service name.
    pub name: Arc<str>,
    /// Port name; empty for the single unnamed port of a Service.
    pub port: Arc<str>,
    /// Port protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    /// `ns/name:port`, or `ns/name` when the port is unnamed (kube-proxy's string).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// A traffic policy (`externalTrafficPolicy` / `internalTrafficPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Use every usable endpoint in the cluster.
    #[default]
    Cluster,
    /// Use only endpoints on this node.
    Local,
}

/// One backend of a service port, already merged and de-duplicated across EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Address and target port.
    pub addr: SocketAddr,
    /// `conditions.ready` (unset means true).
    pub ready: bool,
    /// `conditions.serving` (unset means true).
    pub serving: bool,
    /// `conditions.terminating` (unset means false).
    pub terminating: bool,
    /// The node the endpoint runs on, if known.
    pub node_name: Option<String>,
    /// Zones this endpoint is hinted for (`hints.forZones`); empty when it has no hints.
    pub zone_hints: Vec<String>,
    /// Nodes this endpoint is hinted for (`hints.forNodes`, trafficDistribution
    /// PreferSameNode); empty when it has no node hints.
    pub node_hints: Vec<String>,
}

impl Endpoint {
    /// `IP:port` with IPv6 in brackets, as kube-proxy prints and sorts endpoints.
    pub fn key(&self) -> String {
        self.addr.to_string()
    }

    /// Whether the endpoint runs on the node named `node`.
    pub fn is_local(&self, node: &str) -> bool {
        self.node_name.as_deref() == Some(node)
    }
}

/// Everything the renderer needs about one Service port, for both IP families.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePort {
    /// Which service port this is.
    pub name: ServicePortName,
    /// `spec.clusterIPs` (at most one per family).
    pub cluster_ips: Vec<IpAddr>,
    /// `port`.
    pub port: u16,
    /// `nodePort` for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` in VIP mode.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`.
    pub source_ranges: Vec<IpNet>,
    /// ClientIP session affinity timeout in seconds; `None` when affinity is off.
    pub affinity_timeout: Option<u32>,
    /// `spec.externalTrafficPolicy` as given.
    pub external_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_policy: TrafficPolicy,
    /// `spec.healthCheckNodePort` (LoadBalancer with externalTrafficPolicy=Local).
    pub health_check_node_port: Option<u16>,
    /// Endpoints of every family, sorted by their `IP:port` string.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A ClusterIP service port with no endpoints, external addresses, affinity or Local
    /// policies; set the other fields with struct update syntax.
    pub fn new(name: ServicePortName, cluster_ips: Vec<IpAddr>, port: u16) -> Self {
        ServicePort {
            name,
            cluster_ips,
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            source_ranges: Vec::new(),
            affinity_timeout: None,
            external_policy: TrafficPolicy::Cluster,
            internal_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
            endpoints: Vec::new(),
        }
    }

    /// The cluster IP of `family`, if the Service has one.
    pub fn cluster_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips.iter().copied().find(|ip| family.contains(ip))
    }

    /// Whether traffic can reach the service from outside (NodePort, external or LB IPs).
    pub fn externally_accessible(&self, family: IpFamily) -> bool {
        self.node_port.is_some()
            || self.external_ips.iter().any(|ip| family.contains(ip))
            || self.load_balancer_ips.iter().any(|ip| family.contains(ip))
    }

    /// externalTrafficPolicy=Local on a service that has external destinations.
    pub fn external_policy_local(&self, family: IpFamily) -> bool {
        self.external_policy == TrafficPolicy::Local && self.externally_accessible(family)
    }

    /// internalTrafficPolicy=Local.
    pub fn internal_policy_local(&self) -> bool {
        self.internal_policy == TrafficPolicy::Local
    }
}

/// The cluster as the renderer sees it: every proxied service port, in sorted order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    /// Service ports keyed (and so ordered) by name. Shared: a snapshot of the state is a copy
    /// of this map, and a port that did not change is the same allocation in both (so a sync
    /// finds what changed by pointer before comparing values).
    pub services: BTreeMap<ServicePortName, Arc<ServicePort>>,
}

impl ClusterState {
    /// Total number of endpoints across all service ports of `family`.
    pub fn endpoint_count(&self, family: IpFamily) -> usize {
        self.services.values().map(|s| s.endpoints.iter().filter(|e| family.contains(&e.addr.ip())).count()).sum()
    }
}
