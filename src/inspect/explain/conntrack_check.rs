//! `stale-conntrack`: UDP flows to one service port whose reply source is not a serving
//! endpoint — judged by the conntrack room's own rule ([`Frontends::is_stale`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use super::report::{Code, Problem, Severity};
use crate::conntrack::{Flow, Frontends};
use crate::model::{ClusterState, IpFamily, Protocol, ServicePort};

/// The stale flows addressed to `port`: to one of its service addresses, or to its NodePort on
/// an address that is no service's (a flow to another service's IP is that service's).
pub(super) fn stale_problems(
    port: &ServicePort,
    family: IpFamily,
    state: &ClusterState,
    frontends: &Frontends,
    flows: &[Flow],
) -> Vec<Problem> {
    if port.name.protocol != Protocol::Udp {
        return Vec::new();
    }
    let own: BTreeSet<SocketAddr> = service_ips(port, family).map(|ip| SocketAddr::new(ip, port.port)).collect();
    let all_service_ips: BTreeSet<IpAddr> = state.services.values().flat_map(|p| service_ips(p, family)).collect();
    let to_port = |flow: &&Flow| {
        own.contains(&flow.orig_dst)
            || (port.node_port == Some(flow.orig_dst.port()) && !all_service_ips.contains(&flow.orig_dst.ip()))
    };
    let stale: Vec<&Flow> = flows.iter().filter(to_port).filter(|f| frontends.is_stale(f)).collect();
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
