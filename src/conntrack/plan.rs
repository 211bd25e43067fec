//! Which UDP conntrack entries went stale between two cluster states (pure).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::FlowFilter;
use crate::model::{ClusterState, Endpoint, IpFamily, NodeConfig, Protocol, ServicePort};

/// One UDP service port as seen by one family's rules.
struct PortView {
    /// (service IP, port): ClusterIP, external IPs, LB IPs.
    service_dsts: BTreeSet<(IpAddr, u16)>,
    node_port: Option<u16>,
    /// IPs of endpoints traffic may be DNATed to (ready or serving).
    in_use: BTreeSet<IpAddr>,
    /// The rules send traffic somewhere: a ready endpoint, or a serving-terminating one as
    /// fallback (kube-proxy's usable endpoints).
    has_usable: bool,
}

impl PortView {
    /// `None` for non-UDP ports and ports without a cluster IP of `family` (not rendered).
    fn of(svc: &ServicePort, family: IpFamily) -> Option<PortView> {
        if svc.name.protocol != Protocol::Udp {
            return None;
        }
        let cluster_ip = svc.cluster_ip(family)?;
        let extra = svc.external_ips.iter().chain(&svc.load_balancer_ips).filter(|ip| family.contains(ip));
        let service_dsts = std::iter::once(cluster_ip).chain(extra.copied()).map(|ip| (ip, svc.port)).collect();
        let endpoints: Vec<&Endpoint> = svc.endpoints.iter().filter(|e| family.contains(&e.addr.ip())).collect();
        let in_use = endpoints.iter().filter(|e| e.ready || e.serving).map(|e| e.addr.ip()).collect();
        let has_usable = endpoints.iter().any(|e| e.ready || (e.serving && e.terminating));
        Some(PortView { service_dsts, node_port: svc.node_port, in_use, has_usable })
    }

    /// Every entry to the service's IPs and NodePort.
    fn all(&self, out: &mut BTreeSet<FlowFilter>) {
        self.to_service_ips(out);
        if let Some(np) = self.node_port {
            out.insert(FlowFilter::udp_node_port(np, None));
        }
    }

    /// Every entry to the service's IPs (not the NodePort).
    fn to_service_ips(&self, out: &mut BTreeSet<FlowFilter>) {
        out.extend(self.service_dsts.iter().map(|&(ip, port)| FlowFilter::udp_to(ip, port, None)));
    }

    /// Entries to the service's IPs and NodePort that were DNATed to `endpoint`.
    fn to_endpoint(&self, endpoint: IpAddr, out: &mut BTreeSet<FlowFilter>) {
        out.extend(self.service_dsts.iter().map(|&(ip, port)| FlowFilter::udp_to(ip, port, Some(endpoint))));
        if let Some(np) = self.node_port {
            out.insert(FlowFilter::udp_node_port(np, Some(endpoint)));
        }
    }
}

/// The conntrack entries of `node.family` to delete after the rules for `new` replaced those
/// for `old` (call it after the restore succeeded). For each UDP service port:
///
/// - (a) an endpoint IP that was in use (ready or serving) and is gone or no longer serving:
///   entries to each service IP:port and to the NodePort that were DNATed to it;
/// - (b) no usable endpoints → some (also a new service port with endpoints): every entry to
///   its service IPs:port and NodePort, which were black-holed until now;
/// - (c) some usable endpoints → none: every entry to its service IPs:port (kubernetes#139628:
///   clients otherwise stay stuck on a DNAT to a gone endpoint);
/// - (d) the port was removed (or lost its cluster IP of this family): every entry to its
///   service IPs:port and NodePort;
/// - (e) a service IP, the port number or the NodePort was removed from a port that stays:
///   every entry to the removed destination.
///
/// Sorted, without duplicates, and without filters that a broader one in the list already
/// covers. TCP and SCTP ports are ignored.
pub fn stale_udp_flows(old: &ClusterState, new: &ClusterState, node: &NodeConfig) -> Vec<FlowFilter> {
    let family = node.family;
    let mut out = BTreeSet::new();
    for (name, svc) in &old.services {
        let Some(before) = PortView::of(svc, family) else {
            continue;
        };
        let Some(after) = new.services.get(name).and_then(|s| PortView::of(s, family)) else {
            before.all(&mut out); // (d)
            continue;
        };
        for &endpoint in before.in_use.difference(&after.in_use) {
            before.to_endpoint(endpoint, &mut out); // (a)
        }
        match (before.has_usable, after.has_usable) {
            (false, true) => after.all(&mut out),             // (b)
            (true, false) => before.to_service_ips(&mut out), // (c)
            _ => {}
        }
        for &(ip, port) in before.service_dsts.difference(&after.service_dsts) {
            out.insert(FlowFilter::udp_to(ip, port, None)); // (e)
        }
        if let Some(np) = before.node_port.filter(|np| after.node_port != Some(*np)) {
            out.insert(FlowFilter::udp_node_port(np, None)); // (e)
        }
    }
    for (name, svc) in &new.services {
        if old.services.get(name).and_then(|s| PortView::of(s, family)).is_some() {
            continue;
        }
        if let Some(after) = PortView::of(svc, family).filter(|v| v.has_usable) {
            after.all(&mut out); // (b) for a port that is new to this family
        }
    }
    let covered = |f: &FlowFilter| f.dnat_to.is_some() && out.contains(&FlowFilter { dnat_to: None, ..f.clone() });
    out.iter().filter(|f| !covered(f)).cloned().collect()
}
