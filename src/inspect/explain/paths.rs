//! The port's frontends (cluster IP, NodePorts, external and load-balancer IPs) and a packet
//! to each, walked through the live rules with the tracer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::report::{Address, AddressKind, OutcomeReport, PathReport};
use crate::inspect::trace::{self, Outcome, Packet, TraceEnv, Verdict};
use crate::model::{IpFamily, NodeConfig, ServicePort};
use crate::rules::ruleset::Ruleset;

/// Where a client outside the node is assumed to be without `--from` (documentation ranges).
fn outside_client(family: IpFamily) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
    }
}

/// The node's own addresses of its family (node IPs first), loopback left out (the tracer
/// counts it as local anyway).
fn node_addresses(node: &NodeConfig) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> =
        node.node_ips.iter().copied().chain(node.local_addresses.iter().map(|n| n.addr())).collect();
    ips.retain(|ip| node.family.contains(ip) && !ip.is_loopback());
    let mut seen = Vec::new();
    ips.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });
    ips
}

/// Every frontend of `port` on this node.
pub(super) fn addresses(port: &ServicePort, node: &NodeConfig) -> Vec<Address> {
    let family = node.family;
    let at = |kind, ip: IpAddr, p: u16| Address { kind, address: SocketAddr::new(ip, p) };
    let mut out: Vec<Address> =
        port.cluster_ip(family).map(|ip| at(AddressKind::ClusterIp, ip, port.port)).into_iter().collect();
    if let Some(node_port) = port.node_port {
        let node_ips = node_addresses(node);
        out.extend(node_ips.first().map(|ip| at(AddressKind::NodePort, *ip, node_port)));
    }
    let of_family = |ips: &[IpAddr]| ips.iter().copied().filter(|ip| family.contains(ip)).collect::<Vec<_>>();
    out.extend(of_family(&port.external_ips).into_iter().map(|ip| at(AddressKind::ExternalIp, ip, port.port)));
    out.extend(of_family(&port.load_balancer_ips).into_iter().map(|ip| at(AddressKind::LoadBalancer, ip, port.port)));
    out
}

/// A packet to every frontend, traced through `live`. Without `from`, the cluster IP is tried
/// from the node itself and the other frontends from an outside client.
pub(super) fn paths(port: &ServicePort, node: &NodeConfig, from: Option<IpAddr>, live: &Ruleset) -> Vec<PathReport> {
    let local_ips = node_addresses(node);
    let env = TraceEnv { local_ips: local_ips.clone() };
    addresses(port, node)
        .into_iter()
        .map(|address| {
            let (source, from_node) = match (from, address.kind, local_ips.first()) {
                (Some(ip), _, _) => (ip, local_ips.contains(&ip)),
                (None, AddressKind::ClusterIp, Some(node_ip)) => (*node_ip, true),
                (None, _, _) => (outside_client(node.family), false),
            };
            let mut packet = Packet::new(source, address.address, port.name.protocol);
            packet.from_node = from_node;
            let trace = trace::trace(live, &packet, &env);
            let outcomes = trace.outcomes.iter().map(outcome_report).collect();
            PathReport { kind: address.kind, source, from_node, destination: address.address, outcomes, trace }
        })
        .collect()
}

fn outcome_report(outcome: &Outcome) -> OutcomeReport {
    let (verdict, target) = match &outcome.verdict {
        Verdict::Dnat(to) => ("dnat", Some(to.to_string())),
        Verdict::Redirect(port) => ("redirect", Some(port.to_string())),
        Verdict::Accept => ("accept", None),
        Verdict::FilterAccept { chain, .. } => ("filter-accept", Some(chain.clone())),
        Verdict::Drop { chain, .. } => ("drop", Some(chain.clone())),
        Verdict::Reject { chain, .. } => ("reject", Some(chain.clone())),
        Verdict::Aborted { chain, .. } => ("aborted", Some(chain.clone())),
    };
    OutcomeReport {
        verdict,
        target,
        probability: outcome.probability,
        masquerade: outcome.masquerade,
        rule: outcome.rule.clone(),
    }
}
