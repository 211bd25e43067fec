//! Keeps one proxy socket per service port in step with the cluster state: opens a TCP listener
//! or UDP socket on a port from `--proxy-port-range` for each new service port, feeds its
//! balancer the usable endpoints, and closes it (releasing the port) when the port goes away.
//! Existing TCP connections of a closed proxy finish on their own.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::claims::{self, Claims, Conflict, HeldPort};
use super::{serve_tcp, serve_udp, Balancer, Limits, PortAllocator, PortRange, SharedBalancer};
use crate::model::PortPlan;
use crate::model::{ClusterState, IpFamily, Protocol, ServicePort, ServicePortName};

/// Listen backlog of the TCP proxy sockets (a connect burst must not overflow the accept queue).
const BACKLOG: u32 = 4096;

/// How the proxies are set up.
#[derive(Debug, Clone)]
pub struct ProxierConfig {
    /// `--bind-address`: where the proxy sockets listen.
    pub bind: IpAddr,
    /// `--proxy-port-range`.
    pub range: PortRange,
    /// `--udp-timeout`: idle time after which a UDP session is dropped.
    pub udp_timeout: Duration,
    /// Bound on concurrent UDP sessions per service port.
    pub max_udp_sessions: usize,
    /// Bound on concurrent TCP connections per service port.
    pub tcp: Limits,
}

/// One open proxy socket.
struct Proxy {
    port: u16,
    protocol: Protocol,
    affinity: Option<u32>,
    balancer: SharedBalancer,
    cancel: CancellationToken,
    /// Local ports the service answers on (NodePort, local external and LB IPs), held open.
    claims: Claims,
}

/// The set of open proxies.
pub struct Proxier {
    config: ProxierConfig,
    allocator: PortAllocator,
    proxies: BTreeMap<ServicePortName, Proxy>,
    shutdown: CancellationToken,
    /// `--node-ip` as given by the operator (not derived from the Node object).
    node_ip: Option<IpAddr>,
}

/// Ready endpoints of `family`, or the serving terminating ones when none is ready.
fn usable_endpoints(svc: &ServicePort, family: IpFamily) -> Vec<SocketAddr> {
    let of_family = || svc.endpoints.iter().filter(|e| family.contains(&e.addr.ip()));
    let ready: Vec<SocketAddr> = of_family().filter(|e| e.ready).map(|e| e.addr).collect();
    if !ready.is_empty() {
        return ready;
    }
    of_family().filter(|e| e.serving && e.terminating).map(|e| e.addr).collect()
}

impl Proxier {
    /// A proxier with nothing open; proxies stop when `shutdown` is cancelled.
    pub fn new(config: ProxierConfig, shutdown: CancellationToken) -> Self {
        let allocator = PortAllocator::new(config.range);
        Proxier { config, allocator, proxies: BTreeMap::new(), shutdown, node_ip: None }
    }

    /// Uses `ip` (the operator's `--node-ip`) as the DNAT target of node-originated traffic.
    pub fn with_node_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.node_ip = ip;
        self
    }

    /// Where node-originated service traffic of `family` is DNATed when the proxy listens on
    /// every address: see [`host::host_ip`](super::host::host_ip).
    pub fn host_ip(&self, state: &ClusterState, family: IpFamily, node_ips: &[IpAddr]) -> Option<IpAddr> {
        super::host::host_ip(self.node_ip, state, family, node_ips)
    }

    /// Opens, updates and closes proxies to match `state` (service ports with a cluster IP of
    /// `family`) and returns the proxy port of each.
    pub fn sync(&mut self, state: &ClusterState, family: IpFamily) -> PortPlan {
        let wanted: BTreeMap<&ServicePortName, &ServicePort> = state
            .services
            .iter()
            .map(|(k, s)| (k, s.as_ref()))
            .filter(|(_, s)| s.cluster_ip(family).is_some())
            .collect();
        let gone: Vec<ServicePortName> = self
            .proxies
            .iter()
            .filter(|(name, p)| {
                wanted.get(name).is_none_or(|s| s.name.protocol != p.protocol || s.affinity_timeout != p.affinity)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(proxy) = self.proxies.remove(&name) {
                proxy.cancel.cancel();
                self.allocator.release(proxy.port);
                tracing::info!(service = %name, port = proxy.port, "closed userspace proxy");
            }
        }
        let now = Instant::now();
        let mut plan = BTreeMap::new();
        for (name, svc) in wanted {
            if !self.proxies.contains_key(name) {
                match self.open(svc) {
                    Ok(proxy) => {
                        tracing::info!(service = %name, port = proxy.port, protocol = %svc.name.protocol, "opened userspace proxy");
                        self.proxies.insert(name.clone(), proxy);
                    }
                    Err(err) => {
                        tracing::warn!(service = %name, error = %err, "could not open a userspace proxy; retrying next sync");
                        continue;
                    }
                }
            }
            if let Some(proxy) = self.proxies.get_mut(name) {
                // Hold the NodePort and local external/LB ports (released when they change,
                // retried while taken).
                proxy.claims.update(name, &claims::wanted(svc, family));
                let mut balancer = proxy.balancer.lock().unwrap_or_else(|p| p.into_inner());
                balancer.update(usable_endpoints(svc, family));
                balancer.sweep(now);
                plan.insert(name.clone(), proxy.port);
            }
        }
        PortPlan(plan)
    }

    fn open(&mut self, svc: &ServicePort) -> std::io::Result<Proxy> {
        let port = self.allocator.allocate().map_err(std::io::Error::other)?;
        let affinity = svc.affinity_timeout.map(|s| Duration::from_secs(u64::from(s)));
        let balancer: SharedBalancer = Arc::new(Mutex::new(Balancer::new(affinity)));
        let cancel = self.shutdown.child_token();
        let addr = SocketAddr::new(self.config.bind, port);
        let bound = match svc.name.protocol {
            Protocol::Udp => {
                let std_socket = std::net::UdpSocket::bind(addr)?;
                std_socket.set_nonblocking(true)?;
                let socket = UdpSocket::from_std(std_socket)?;
                let port = socket.local_addr()?.port();
                let cfg = &self.config;
                tokio::spawn(serve_udp(
                    socket,
                    balancer.clone(),
                    cfg.udp_timeout,
                    cfg.max_udp_sessions,
                    cancel.clone(),
                ));
                port
            }
            Protocol::Tcp | Protocol::Sctp => {
                let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                let listener = socket.listen(BACKLOG)?;
                let port = listener.local_addr()?.port();
                tokio::spawn(serve_tcp(listener, balancer.clone(), self.config.tcp.clone(), cancel.clone()));
                port
            }
        };
        if bound != port {
            // Port 0 (empty range): the kernel chose; remember that one.
            self.allocator.reserve(bound);
        }
        Ok(Proxy {
            port: bound,
            protocol: svc.name.protocol,
            affinity: svc.affinity_timeout,
            balancer,
            cancel,
            claims: Claims::default(),
        })
    }

    /// The local ports currently held open, per service port.
    pub fn claimed(&self) -> BTreeMap<ServicePortName, Vec<HeldPort>> {
        let held = self.proxies.iter().map(|(n, p)| (n.clone(), p.claims.held().collect::<Vec<_>>()));
        held.filter(|(_, ports)| !ports.is_empty()).collect()
    }

    /// The ports services claim that another socket holds (retried every sync).
    pub fn conflicts(&self) -> Vec<(ServicePortName, Conflict)> {
        self.proxies.iter().flat_map(|(n, p)| p.claims.conflicts().map(move |c| (n.clone(), c))).collect()
    }

    /// The proxy port of each open proxy.
    pub fn ports(&self) -> BTreeMap<ServicePortName, u16> {
        self.proxies.iter().map(|(n, p)| (n.clone(), p.port)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServicePort;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("0.0.0.0:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
    }

    fn node_port_service(name: &str, ip: &str, node_port: u16) -> ServicePort {
        let spn = ServicePortName {
            namespace: "ns".into(),
            name: name.into(),
            port: String::new().into(),
            protocol: Protocol::Tcp,
        };
        ServicePort { node_port: Some(node_port), ..ServicePort::new(spn, vec![ip.parse().unwrap()], 80) }
    }

    #[tokio::test]
    async fn node_ports_are_claimed_and_conflicts_are_not_fatal() {
        let (held, taken) = (free_port(), free_port());
        let squatter = std::net::TcpListener::bind(("0.0.0.0", taken)).unwrap();
        let shutdown = CancellationToken::new();
        let config = ProxierConfig {
            bind: "127.0.0.1".parse().unwrap(),
            range: PortRange::default(),
            udp_timeout: Duration::from_millis(250),
            max_udp_sessions: 4,
            tcp: Limits::default(),
        };
        let mut proxier = Proxier::new(config, shutdown.clone());
        let mut state = ClusterState::default();
        for svc in [node_port_service("a", "10.96.0.1", held), node_port_service("b", "10.96.0.2", taken)] {
            state.services.insert(svc.name.clone(), svc.into());
        }
        let plan = proxier.sync(&state, IpFamily::V4);
        assert_eq!(plan.0.len(), 2, "both services get a proxy even though one NodePort is taken");
        let claimed: Vec<u16> = proxier.claimed().values().flatten().map(|p| p.port).collect();
        assert_eq!(claimed, [held]);
        let conflicts: Vec<u16> = proxier.conflicts().iter().map(|(_, c)| c.port.port).collect();
        assert_eq!(conflicts, [taken], "the taken NodePort is reported");
        assert!(std::net::TcpListener::bind(("0.0.0.0", held)).is_err(), "the NodePort is held");
        drop(squatter);
        proxier.sync(&state, IpFamily::V4);
        assert_eq!(proxier.claimed().len(), 2, "the claim is retried once the port is free");
        assert!(proxier.conflicts().is_empty());
        state.services.clear();
        proxier.sync(&state, IpFamily::V4);
        assert!(std::net::TcpListener::bind(("0.0.0.0", held)).is_ok(), "released with the service");
        shutdown.cancel();
    }
}
