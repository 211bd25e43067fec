//! healthCheckNodePort servers: for each LoadBalancer Service with externalTrafficPolicy=Local,
//! an HTTP server on its `healthCheckNodePort` that tells load balancers whether this node has
//! local ready endpoints (200) or not (503). The proxy's own `/healthz` is `health`.
//!
//! As kube-proxy: the answer is 200 only when the service has ≥1 local *ready* endpoint and
//! the proxy itself is healthy; local endpoints that are only serving-terminating do not count
//! (so load balancers drain the node), and endpoints are counted by distinct IP across the
//! service's ports (`10.0.0.1:80` and `10.0.0.1:443` are one endpoint).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::health::HealthState;
use crate::model::{ClusterState, NodeConfig};

/// How long `sync` waits for a stopped server to release its port.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the healthcheck servers. None is fatal: `sync` returns them and retries the
/// service on the next sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port could not be bound (in use, or the address is not local). Retryable.
    #[error("cannot listen on {addr} for the health check of service {service}")]
    Bind {
        /// The service.
        service: NamespacedName,
        /// The address that failed.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Service's `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What one service's health check server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHealth {
    /// `spec.healthCheckNodePort`.
    pub port: u16,
    /// Distinct IPs of local ready endpoints of the rendered family.
    pub local_endpoints: usize,
}

/// The health check servers `node` should run for `state`: services of `node.family` that
/// have a healthCheckNodePort, with their local ready endpoint counts (kube-proxy's
/// `HealthCheckNodePorts` + `LocalReadyEndpoints` for one family).
pub fn desired(state: &ClusterState, node: &NodeConfig) -> BTreeMap<NamespacedName, ServiceHealth> {
    let mut ips: BTreeMap<NamespacedName, (u16, BTreeSet<IpAddr>)> = BTreeMap::new();
    for svc in state.services.values() {
        let Some(port) = svc.health_check_node_port else {
            continue;
        };
        if svc.cluster_ip(node.family).is_none() {
            continue;
        }
        let key = NamespacedName { namespace: svc.name.namespace.to_string(), name: svc.name.name.to_string() };
        let entry = ips.entry(key).or_insert_with(|| (port, BTreeSet::new()));
        let local_ready = svc
            .endpoints
            .iter()
            .filter(|e| e.ready && e.is_local(&node.node_name) && node.family.contains(&e.addr.ip()));
        entry.1.extend(local_ready.map(|e| e.addr.ip()));
    }
    ips.into_iter().map(|(k, (port, ips))| (k, ServiceHealth { port, local_endpoints: ips.len() })).collect()
}

/// One running server (one listener per bind IP).
struct Instance {
    port: u16,
    local_endpoints: Arc<AtomicUsize>,
    stop: CancellationToken,
    /// Resolve (with an error) once each listener has been dropped.
    released: Vec<oneshot::Receiver<()>>,
}

/// What a request handler needs.
#[derive(Clone)]
struct Shared {
    service: NamespacedName,
    local_endpoints: Arc<AtomicUsize>,
    health: Option<HealthState>,
}

/// The set of running healthCheckNodePort servers; `sync` makes it match the desired map.
pub struct HealthCheckServers {
    bind_ips: Vec<IpAddr>,
    health: Option<HealthState>,
    shutdown: CancellationToken,
    services: BTreeMap<NamespacedName, Instance>,
}

impl fmt::Debug for HealthCheckServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: BTreeMap<_, _> = self.services.iter().map(|(k, i)| (k.to_string(), i.port)).collect();
        f.debug_struct("HealthCheckServers").field("bind_ips", &self.bind_ips).field("ports", &ports).finish()
    }
}

impl HealthCheckServers {
    /// Servers listen on `bind_ip` and stop on `shutdown`. An unspecified address (`0.0.0.0`
    /// or `::`) means every address of both families, as Go's listener does for kube-proxy
    /// (`[::]`, falling back to `0.0.0.0` where IPv6 is unavailable).
    pub fn new(bind_ip: IpAddr, shutdown: CancellationToken) -> Self {
        HealthCheckServers { bind_ips: vec![bind_ip], health: None, shutdown, services: BTreeMap::new() }
    }

    /// Listen on each of `bind_ips` instead (kube-proxy with `--nodeport-addresses`: every
    /// node IP inside those CIDRs).
    pub fn with_bind_ips(mut self, bind_ips: Vec<IpAddr>) -> Self {
        self.bind_ips = bind_ips;
        self
    }

    /// Servers started from now on listen on `bind_ips` (the daemon decides them once, at its
    /// first sync, as kube-proxy does when it starts; running servers keep their listeners).
    pub fn set_bind_ips(&mut self, bind_ips: Vec<IpAddr>) {
        self.bind_ips = bind_ips;
    }

    /// Answer 503 (`"serviceProxyHealthy": false`) while `health` is unhealthy, as kube-proxy.
    /// Without it the proxy is taken as healthy.
    pub fn with_health(mut self, health: HealthState) -> Self {
        self.health = Some(health);
        self
    }

    /// The port each running server listens on.
    pub fn ports(&self) -> BTreeMap<NamespacedName, u16> {
        self.services.iter().map(|(k, i)| (k.clone(), i.port)).collect()
    }

    /// Stops servers no longer wanted (or whose port changed), updates endpoint counts and
    /// starts new servers. Ports that cannot be bound are logged, returned, and retried on the
    /// next call.
    pub async fn sync(&mut self, desired: &BTreeMap<NamespacedName, ServiceHealth>) -> Vec<Error> {
        let stale: Vec<NamespacedName> = self
            .services
            .iter()
            .filter(|(name, inst)| desired.get(*name).is_none_or(|d| d.port != inst.port))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(inst) = self.services.remove(&name) {
                tracing::info!(service = %name, port = inst.port, "closing healthcheck");
                stop(inst).await;
            }
        }
        let mut errors = Vec::new();
        for (name, want) in desired {
            if let Some(inst) = self.services.get(name) {
                inst.local_endpoints.store(want.local_endpoints, Ordering::Relaxed);
                continue;
            }
            match self.start(name, *want).await {
                Ok(inst) => {
                    tracing::info!(service = %name, port = want.port, "opened healthcheck");
                    self.services.insert(name.clone(), inst);
                }
                Err(err) => {
                    let Error::Bind { addr, source, .. } = &err;
                    tracing::warn!(service = %name, %addr, error = %source, "failed to start healthcheck; will retry");
                    errors.push(err);
                }
            }
        }
        errors
    }

    async fn start(&self, name: &NamespacedName, want: ServiceHealth) -> Result<Instance> {
        let mut listeners = Vec::with_capacity(self.bind_ips.len());
        for ip in &self.bind_ips {
            match bind(*ip, want.port).await {
                Ok(l) => listeners.push(l),
                // Dropping the listeners bound so far releases them for the retry.
                Err((addr, source)) => return Err(Error::Bind { service: name.clone(), addr, source }),
            }
        }
        let local_endpoints = Arc::new(AtomicUsize::new(want.local_endpoints));
        let stop = self.shutdown.child_token();
        let shared =
            Shared { service: name.clone(), local_endpoints: local_endpoints.clone(), health: self.health.clone() };
        let mut released = Vec::new();
        for listener in listeners {
            let (tx, rx) = oneshot::channel();
            released.push(rx);
            let router = Router::new().fallback(answer).with_state(shared.clone());
            let serve = axum::serve(ReleasingListener { inner: listener, _released: tx }, router)
                .with_graceful_shutdown(stop.clone().cancelled_owned());
            let service = name.clone();
            tokio::spawn(async move {
                if let Err(err) = serve.await {
                    tracing::warn!(%service, error = %err, "healthcheck server failed");
                }
            });
        }
        Ok(Instance { port: want.port, local_endpoints, stop, released })
    }
}

/// Binds `ip:port`; an unspecified `ip` binds `[::]` (dual-stack) or, when the node has no
/// IPv6, `0.0.0.0`.
async fn bind(ip: IpAddr, port: u16) -> std::result::Result<TcpListener, (SocketAddr, std::io::Error)> {
    let addr = SocketAddr::new(ip, port);
    if !ip.is_unspecified() {
        return TcpListener::bind(addr).await.map_err(|e| (addr, e));
    }
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    match TcpListener::bind(any6).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err((any6, e)),
        Err(e) => {
            tracing::debug!(port, error = %e, "no IPv6 wildcard; listening on IPv4 only");
            let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
            TcpListener::bind(any4).await.map_err(|e| (any4, e))
        }
    }
}

/// Stops `inst` and waits (bounded) until its ports are free again.
async fn stop(inst: Instance) {
    inst.stop.cancel();
    for rx in inst.released {
        // The sender is never used: an error means it was dropped with the listener.
        if tokio::time::timeout(RELEASE_TIMEOUT, rx).await.is_err() {
            tracing::warn!(port = inst.port, "healthcheck listener not released in time");
        }
    }
}

/// kube-proxy's answer on any path: 200 with ≥1 local endpoint and a healthy proxy, else 503.
async fn answer(State(shared): State<Shared>) -> Response {
    let count = shared.local_endpoints.load(Ordering::Relaxed);
    let healthy = shared.health.as_ref().is_none_or(HealthState::is_healthy);
    let status = if count != 0 && healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::HeaderName::from_static("x-load-balancing-endpoint-weight"), HeaderValue::from(count)),
    ];
    (status, headers, body(&shared.service, count, healthy)).into_response()
}

/// kube-proxy's body, byte for byte (tab-indented JSON, no trailing newline).
fn body(service: &NamespacedName, count: usize, healthy: bool) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        quote(&service.namespace),
        quote(&service.name),
    )
}

/// A `TcpListener` that signals (by dropping `_released`) when axum drops it, so `sync` knows
/// the port is free before it may bind it again.
struct ReleasingListener {
    inner: TcpListener,
    _released: oneshot::Sender<()>,
}

impl axum::serve::Listener for ReleasingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        axum::serve::Listener::accept(&mut self.inner).await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests;
