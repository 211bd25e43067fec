//! `stale-conntrack`: UDP flows to one service port whose reply source is not a serving
//! endpoint — judged by the conntrack room's own rule ([`Frontends::is_stale`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use super::report::{Code, Problem, Severity};
use crate::conntrack::{Flow, Frontends};
use crate::model::{ClusterState, IpFamily, Protocol, ServicePort};

/// The UDP flows of the family by original destination, and — for those addressed to an IP
/// that is no service's — by destination port (NodePort flows), built once per question.
pub(super) struct FlowIndex<'a> {
    by_dst: HashMap<SocketAddr, Vec<&'a Flow>>,
    by_node_port: HashMap<u16, Vec<&'a Flow>>,
}

impl<'a> FlowIndex<'a> {
    pub(super) fn new(flows: &'a [Flow], state: &ClusterState, family: IpFamily) -> Self {
        let service_ips: HashSet<IpAddr> = state.services.values().flat_map(|p| service_ips(p, family)).collect();
        let mut index = FlowIndex { by_dst: HashMap::new(), by_node_port: HashMap::new() };
        for flow in flows.iter().filter(|f| f.protocol == Protocol::Udp) {
            index.by_dst.entry(flow.orig_dst).or_default().push(flow);
            if !service_ips.contains(&flow.orig_dst.ip()) {
                index.by_node_port.entry(flow.orig_dst.port()).or_default().push(flow);
            }
        }
        index
    }
}

/// The stale flows addressed to `port`: to one of its service addresses, or to its NodePort on
/// an address that is no service's (a flow to another service's IP is that service's).
pub(super) fn stale_problems(
    port: &ServicePort,
    family: IpFamily,
    frontends: &Frontends,
    flows: &FlowIndex<'_>,
) -> Vec<Problem> {
    if port.name.protocol != Protocol::Udp {
        return Vec::new();
    }
    let own: BTreeSet<SocketAddr> = service_ips(port, family).map(|ip| SocketAddr::new(ip, port.port)).collect();
    let to_addresses = own.iter().filter_map(|addr| flows.by_dst.get(addr)).flatten();
    let to_node_port = port.node_port.and_then(|p| flows.by_node_port.get(&p)).into_iter().flatten();
    let stale: Vec<&Flow> = to_addresses.chain(to_node_port).copied().filter(|f| frontends.is_stale(f)).collect();
    let Some(first) = stale.first() else {
        return Vec::new();
    };
    let message = format!(
        "{} UDP flow(s) to {} get replies from an address that is not a serving endpoint, so those clients \
         talk to a gone backend until the flow times out (e.g. {first})",
        stale.len(),
        port.name
    );
    let fix = format!(
        "kubenat deletes such flows after each sync: check that it runs here; to clear them now: conntrack -D -p \
         udp --orig-dst {} --dport {}",
        first.orig_dst.ip(),
        first.orig_dst.port()
    );
    vec![Problem { code: Code::StaleConntrack, severity: Severity::Warning, message, fix }]
}

/// The port's cluster, external and load-balancer IPs of `family`.
fn service_ips(port: &ServicePort, family: IpFamily) -> impl Iterator<Item = IpAddr> + '_ {
    let cluster = port.cluster_ip(family);
    let others = port.external_ips.iter().chain(&port.load_balancer_ips).copied().filter(move |ip| family.contains(ip));
    cluster.into_iter().chain(others)
}
