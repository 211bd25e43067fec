//! Holds the local ports a Service answers on — its NodePort on every address, its service port
//! on each external IP and load-balancer IP that is an address of this node — by binding a
//! socket there, so no other process can take them. The sockets never carry traffic (the portal
//! rules redirect it to the proxy port). Does not decide which services exist (the proxier does).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::model::{IpFamily, Protocol, ServicePort, ServicePortName};

/// A local port a Service claims: `ip` `None` means every address (a NodePort).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeldPort {
    /// The address, or `None` for all of them.
    pub ip: Option<IpAddr>,
    /// The port.
    pub port: u16,
    /// TCP (SCTP is held as TCP) or UDP.
    pub protocol: Protocol,
}

impl std::fmt::Display for HeldPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{}/{}", SocketAddr::new(ip, self.port), self.protocol),
            None => write!(f, "*:{}/{}", self.port, self.protocol),
        }
    }
}

/// The ports `svc` claims in `family`: its NodePort, and its port on each external/LB IP.
pub fn wanted(svc: &ServicePort, family: IpFamily) -> BTreeSet<HeldPort> {
    let protocol = svc.name.protocol;
    let mut ports: BTreeSet<HeldPort> =
        svc.node_port.map(|port| HeldPort { ip: None, port, protocol }).into_iter().collect();
    let external = svc.external_ips.iter().chain(&svc.load_balancer_ips).filter(|ip| family.contains(ip));
    ports.extend(external.map(|ip| HeldPort { ip: Some(*ip), port: svc.port, protocol }));
    ports
}

/// The state of one claim.
#[derive(Debug)]
enum State {
    /// The socket holding the port.
    Held(#[allow(dead_code)] Socket),
    /// The address is not one of this node's: nothing to hold (checked again every sync).
    NotLocal,
    /// Another socket has the port (checked again every sync).
    Conflict(String),
}

/// A bound socket, kept only for the port it holds.
#[derive(Debug)]
enum Socket {
    Tcp(#[allow(dead_code)] std::net::TcpListener),
    Udp(#[allow(dead_code)] std::net::UdpSocket),
}

/// A port that could not be claimed because something else holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The port.
    pub port: HeldPort,
    /// The bind error.
    pub error: String,
}

/// The claims of one service port.
#[derive(Debug, Default)]
pub struct Claims {
    ports: BTreeMap<HeldPort, State>,
}

impl Claims {
    /// Releases claims no longer `wanted` and (re)tries every wanted one not yet held. Conflicts
    /// are logged at warn when they first appear, then at debug while they last.
    pub fn update(&mut self, service: &ServicePortName, wanted: &BTreeSet<HeldPort>) {
        self.ports.retain(|port, _| wanted.contains(port));
        for port in wanted {
            if matches!(self.ports.get(port), Some(State::Held(_))) {
                continue;
            }
            let was_conflict = matches!(self.ports.get(port), Some(State::Conflict(_)));
            let state = match bind(port) {
                Ok(socket) => {
                    if was_conflict {
                        tracing::info!(service = %service, %port, "claimed the port now that it is free");
                    }
                    State::Held(socket)
                }
                Err(err) if err.kind() == io::ErrorKind::AddrNotAvailable => State::NotLocal,
                Err(err) => {
                    if was_conflict {
                        tracing::debug!(service = %service, %port, error = %err, "port still taken");
                    } else {
                        tracing::warn!(service = %service, %port, error = %err, "could not claim the port; another process may be using it");
                    }
                    State::Conflict(err.to_string())
                }
            };
            self.ports.insert(*port, state);
        }
    }

    /// The ports held now.
    pub fn held(&self) -> impl Iterator<Item = HeldPort> + '_ {
        self.ports.iter().filter(|(_, s)| matches!(s, State::Held(_))).map(|(p, _)| *p)
    }

    /// The ports taken by someone else.
    pub fn conflicts(&self) -> impl Iterator<Item = Conflict> + '_ {
        self.ports.iter().filter_map(|(port, s)| match s {
            State::Conflict(error) => Some(Conflict { port: *port, error: error.clone() }),
            _ => None,
        })
    }

    /// Releases every claim.
    pub fn clear(&mut self) {
        self.ports.clear();
    }
}

/// Binds the socket holding `port` (a TCP listener, so the port is really in use).
fn bind(port: &HeldPort) -> io::Result<Socket> {
    let ip = port.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let addr = SocketAddr::new(ip, port.port);
    match port.protocol {
        Protocol::Udp => std::net::UdpSocket::bind(addr).map(Socket::Udp),
        Protocol::Tcp | Protocol::Sctp => std::net::TcpListener::bind(addr).map(Socket::Tcp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spn(protocol: Protocol) -> ServicePortName {
        ServicePortName { namespace: "ns".into(), name: "svc".into(), port: "p".into(), protocol }
    }

    fn free_port(ip: &str) -> u16 {
        std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
    }

    #[test]
    fn wanted_covers_node_port_external_and_lb_ips_of_the_family() {
        let svc = ServicePort {
            node_port: Some(30080),
            external_ips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            load_balancer_ips: vec!["198.51.100.7".parse().unwrap()],
            ..ServicePort::new(spn(Protocol::Tcp), vec!["10.96.0.1".parse().unwrap()], 80)
        };
        let got: Vec<String> = wanted(&svc, IpFamily::V4).iter().map(|p| p.to_string()).collect();
        assert_eq!(got, ["*:30080/tcp", "192.0.2.1:80/tcp", "198.51.100.7:80/tcp"]);
    }

    #[test]
    fn local_ports_are_held_non_local_skipped_conflicts_retried_and_released() {
        let (held_port, taken_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        let squatter = std::net::TcpListener::bind(("127.0.0.3", taken_port)).unwrap();
        let local = HeldPort { ip: Some("127.0.0.2".parse().unwrap()), port: held_port, protocol: Protocol::Tcp };
        let taken = HeldPort { ip: Some("127.0.0.3".parse().unwrap()), port: taken_port, protocol: Protocol::Tcp };
        // TEST-NET-1 is never a local address here.
        let remote = HeldPort { ip: Some("192.0.2.1".parse().unwrap()), port: held_port, protocol: Protocol::Tcp };
        let wanted: BTreeSet<HeldPort> = [local, taken, remote].into();
        let mut claims = Claims::default();
        claims.update(&spn(Protocol::Tcp), &wanted);
        assert_eq!(claims.held().collect::<Vec<_>>(), [local]);
        assert_eq!(claims.conflicts().map(|c| c.port).collect::<Vec<_>>(), [taken]);
        assert!(std::net::TcpListener::bind(("127.0.0.2", held_port)).is_err(), "held");
        drop(squatter);
        claims.update(&spn(Protocol::Tcp), &wanted);
        assert_eq!(claims.held().count(), 2, "the conflict is retried");
        assert_eq!(claims.conflicts().count(), 0);
        claims.update(&spn(Protocol::Tcp), &[taken].into());
        assert!(std::net::TcpListener::bind(("127.0.0.2", held_port)).is_ok(), "released when no longer wanted");
        claims.clear();
        assert!(std::net::TcpListener::bind(("127.0.0.3", taken_port)).is_ok(), "released on clear");
    }

    #[test]
    fn udp_ports_are_held_with_udp_sockets() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).unwrap().port();
        let held = HeldPort { ip: Some("127.0.0.1".parse().unwrap()), port, protocol: Protocol::Udp };
        let mut claims = Claims::default();
        claims.update(&spn(Protocol::Udp), &[held].into());
        assert_eq!(claims.held().count(), 1);
        assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_err());
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "only the UDP port is held");
    }
}
