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

use super::{serve_tcp, serve_udp, Balancer, Limits, PortAllocator, PortRange, SharedBalancer};
use crate::iptables::render::userspace::PortPlan;
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
}

/// The set of open proxies.
pub struct Proxier {
    config: ProxierConfig,
    allocator: PortAllocator,
    proxies: BTreeMap<ServicePortName, Proxy>,
    shutdown: CancellationToken,
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
        Proxier { config, allocator, proxies: BTreeMap::new(), shutdown }
    }

    /// Opens, updates and closes proxies to match `state` (service ports with a cluster IP of
    /// `family`) and returns the proxy port of each.
    pub fn sync(&mut self, state: &ClusterState, family: IpFamily) -> PortPlan {
        let wanted: BTreeMap<&ServicePortName, &ServicePort> =
            state.services.iter().filter(|(_, s)| s.cluster_ip(family).is_some()).collect();
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
            if let Some(proxy) = self.proxies.get(name) {
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
                tokio::spawn(serve_tcp(listener, balancer.clone(), self.config.tcp, cancel.clone()));
                port
            }
        };
        if bound != port {
            // Port 0 (empty range): the kernel chose; remember that one.
            self.allocator.reserve(bound);
        }
        Ok(Proxy { port: bound, protocol: svc.name.protocol, affinity: svc.affinity_timeout, balancer, cancel })
    }

    /// The proxy port of each open proxy.
    pub fn ports(&self) -> BTreeMap<ServicePortName, u16> {
        self.proxies.iter().map(|(n, p)| (n.clone(), p.port)).collect()
    }
}
