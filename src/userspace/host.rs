//! The "host IP" of userspace mode: where node-originated service traffic is DNATed
//! (KUBE-PORTALS-HOST, KUBE-NODEPORT-HOST) when the proxy listens on every address.
//!
//! It must be the address the node itself sends from toward the service: the proxy's UDP replies
//! leave from the address the kernel picks for the client, and conntrack only un-DNATs them when
//! that is the DNAT target. kube-proxy used the address of the default-route interface, which is
//! the same address on an ordinary node (service CIDRs are reached through the default route).
//! Asking the kernel directly also covers nodes that route the service CIDR elsewhere.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::model::{ClusterState, IpFamily};

/// The source address the kernel picks for packets to `dst` (a connected UDP socket; nothing
/// is sent), or `None` when there is no route.
pub fn source_toward(dst: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = if dst.is_ipv4() { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([0u16; 8]) };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    // The port only has to be non-zero for connect; no datagram leaves.
    socket.connect(SocketAddr::new(dst, 9)).ok()?;
    let local = socket.local_addr().ok()?.ip();
    (!local.is_unspecified()).then_some(local)
}

/// Picks the host IP for `family`, in order: the operator's `--node-ip` (`explicit`); the
/// node's source address toward the first cluster IP of `state`; the first of `node_ips`
/// (the Node object's addresses).
pub fn host_ip(
    explicit: Option<IpAddr>,
    state: &ClusterState,
    family: IpFamily,
    node_ips: &[IpAddr],
) -> Option<IpAddr> {
    if let Some(ip) = explicit.filter(|ip| family.contains(ip)) {
        return Some(ip);
    }
    let cluster_ip = state.services.values().find_map(|svc| svc.cluster_ip(family));
    cluster_ip
        .and_then(source_toward)
        .filter(|ip| family.contains(ip))
        .or_else(|| node_ips.iter().copied().find(|ip| family.contains(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServicePort, ServicePortName};

    fn state_with(cluster_ip: &str) -> ClusterState {
        let name = ServicePortName {
            namespace: "ns".into(),
            name: "svc".into(),
            port: String::new().into(),
            protocol: Protocol::Udp,
        };
        let mut state = ClusterState::default();
        state.services.insert(name.clone(), ServicePort::new(name, vec![cluster_ip.parse().unwrap()], 53).into());
        state
    }

    #[test]
    fn source_toward_loopback_is_loopback() {
        assert_eq!(source_toward("127.0.0.5".parse().unwrap()), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn explicit_node_ip_wins() {
        let explicit = Some("192.0.2.10".parse().unwrap());
        let got = host_ip(explicit, &state_with("127.0.0.5"), IpFamily::V4, &["198.51.100.1".parse().unwrap()]);
        assert_eq!(got, explicit);
    }

    #[test]
    fn without_the_flag_the_source_toward_the_cluster_ip_beats_the_node_object() {
        let node_ips = ["198.51.100.1".parse().unwrap()];
        let got = host_ip(None, &state_with("127.0.0.5"), IpFamily::V4, &node_ips);
        assert_eq!(got, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn without_services_the_node_object_address_is_used() {
        let node_ips = ["2001:db8::1".parse().unwrap(), "198.51.100.1".parse().unwrap()];
        let got = host_ip(None, &ClusterState::default(), IpFamily::V4, &node_ips);
        assert_eq!(got, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(host_ip(None, &ClusterState::default(), IpFamily::V4, &[]), None);
    }
}
