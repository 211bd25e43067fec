//! The desired conntrack state of one family (pure): every UDP service frontend — service
//! IP:port, NodePort — and the serving endpoints (IP:port) its flows may be DNATed to; and the
//! rule deciding whether one flow is stale.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::Flow;
use crate::model::{ClusterState, IpFamily, NodeConfig, NodePortAddresses, Protocol, ServicePort};

/// Serving endpoints (`IP:port`) of one service port.
type Serving = BTreeSet<SocketAddr>;

/// UDP service frontends of one family and their serving endpoints (kube-proxy's
/// `serviceIPEndpoints` / `serviceNodePortEndpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontends {
    family: IpFamily,
    /// ClusterIP, external IPs and load-balancer IPs, each with the service port.
    service_addrs: BTreeMap<SocketAddr, Serving>,
    /// NodePort number → serving endpoints.
    node_ports: BTreeMap<u16, Serving>,
    /// Which destination addresses count as "this node" for a NodePort flow.
    node_port_dsts: NodePortDsts,
}

/// Where NodePort traffic is accepted (`--nodeport-addresses`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodePortDsts {
    /// Every local address (the rules match `--dst-type LOCAL`): the node's known addresses
    /// and loopback — and the destination of any flow that was DNATed, since a NodePort rule
    /// DNATs only traffic to a local address and the node's address list may be incomplete.
    Local(Vec<IpNet>),
    /// Only node addresses inside these CIDRs.
    Cidrs(Vec<IpNet>),
}

impl Default for NodePortDsts {
    fn default() -> Self {
        NodePortDsts::Local(Vec::new())
    }
}

impl Frontends {
    /// The frontends of `state`'s UDP service ports that `node.family`'s rules program (a port
    /// needs a cluster IP of the family). Every frontend is listed, also those of service
    /// ports without serving endpoints: their flows are all stale (kubernetes#139628). Two
    /// ports sharing an external or load-balancer IP:port share their endpoints.
    pub fn new(state: &ClusterState, node: &NodeConfig) -> Self {
        let family = node.family;
        let mut out = Frontends { family, node_port_dsts: NodePortDsts::of(node), ..Frontends::default() };
        for port in state.services.values().filter(|p| p.name.protocol == Protocol::Udp) {
            let Some(cluster_ip) = port.cluster_ip(family) else {
                continue;
            };
            let serving = serving_endpoints(port, family);
            let extra = port.external_ips.iter().chain(&port.load_balancer_ips).filter(|ip| family.contains(ip));
            for ip in std::iter::once(&cluster_ip).chain(extra) {
                let addr = SocketAddr::new(*ip, port.port);
                out.service_addrs.entry(addr).or_default().extend(serving.iter().copied());
            }
            if let Some(node_port) = port.node_port {
                out.node_ports.entry(node_port).or_default().extend(serving.iter().copied());
            }
        }
        out
    }

    /// Adds `previous`' frontends that are gone from `self` (their service port was deleted, or
    /// lost that IP or NodePort) with no serving endpoints, so every flow still addressed to
    /// them is stale too. kube-proxy does not do this (it forgets a deleted service's flows).
    pub fn with_retired(mut self, previous: &Frontends) -> Self {
        for addr in previous.service_addrs.keys() {
            self.service_addrs.entry(*addr).or_default();
        }
        for node_port in previous.node_ports.keys() {
            self.node_ports.entry(*node_port).or_default();
        }
        self
    }

    /// The family these frontends belong to.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// Whether there is no UDP frontend at all (nothing can be stale).
    pub fn is_empty(&self) -> bool {
        self.service_addrs.is_empty() && self.node_ports.is_empty()
    }

    /// Whether `flow` is a UDP flow of this family addressed to a frontend whose serving
    /// endpoints do not include the flow's reply source IP:port. A flow to a service
    /// IP:port is judged by that service port alone; otherwise a flow to a NodePort on a
    /// node address by the NodePort's service port. Every other flow is not ours: kept.
    pub fn is_stale(&self, flow: &Flow) -> bool {
        if flow.protocol != Protocol::Udp || !self.family.contains(&flow.orig_dst.ip()) {
            return false;
        }
        if let Some(serving) = self.service_addrs.get(&flow.orig_dst) {
            return !serving.contains(&flow.reply_src);
        }
        match self.node_ports.get(&flow.orig_dst.port()) {
            Some(serving) if self.node_port_dsts.accepts(flow) => !serving.contains(&flow.reply_src),
            _ => false,
        }
    }
}

impl NodePortDsts {
    fn of(node: &NodeConfig) -> Self {
        let family = node.family;
        let (mut nets, local) = match &node.nodeport_addresses {
            NodePortAddresses::All => {
                let addrs = node.local_addresses.iter().map(|net| net.addr()).chain(node.node_ips.iter().copied());
                (addrs.map(IpNet::from).chain([family.loopback_net()]).collect::<Vec<_>>(), true)
            }
            NodePortAddresses::Cidrs(cidrs) => (cidrs.clone(), false),
        };
        nets.retain(|net| family.contains(&net.addr()));
        nets.sort();
        nets.dedup();
        if local {
            NodePortDsts::Local(nets)
        } else {
            NodePortDsts::Cidrs(nets)
        }
    }

    /// Whether `flow`'s original destination is one the NodePort rules accept.
    fn accepts(&self, flow: &Flow) -> bool {
        let ip = flow.orig_dst.ip();
        match self {
            NodePortDsts::Local(nets) => flow.is_dnat() || contains_ip(nets, ip),
            NodePortDsts::Cidrs(nets) => contains_ip(nets, ip),
        }
    }
}

/// Endpoints of `family` the rules may send new flows to, or whose flows may finish: kube-proxy
/// keeps flows to every serving endpoint (ready or terminating) whatever the traffic policy.
fn serving_endpoints(port: &ServicePort, family: IpFamily) -> Vec<SocketAddr> {
    let ours = port.endpoints.iter().filter(|e| family.contains(&e.addr.ip()));
    ours.filter(|e| e.ready || e.serving).map(|e| e.addr).collect()
}

fn contains_ip(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(&ip))
}
