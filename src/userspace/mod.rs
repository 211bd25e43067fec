//! Legacy userspace proxy mode (kube-proxy ≤ 1.25): per service port a real socket whose traffic
//! is relayed to a backend. Owns balancing, proxy-port allocation, the TCP (spliced or copied)
//! and UDP relays, holding the local ports services claim, and choosing the host IP; does not own
//! the iptables portal rules that steer service traffic to those sockets.

pub mod balancer;
pub mod claims;
pub mod host;
pub mod pipes;
pub mod ports;
pub mod proxier;
pub mod splice;
pub mod tcp;
pub mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use balancer::Balancer;
pub use pipes::{PipePool, PoolConfig};
pub use ports::{PortAllocator, PortRange};
pub use tcp::{serve_tcp, Limits};
pub use udp::{serve_udp, DEFAULT_UDP_IDLE_TIMEOUT};

/// A balancer shared between a proxy socket's tasks and the sync loop that updates it.
pub type SharedBalancer = Arc<Mutex<Balancer>>;

/// Picks an endpoint for `client` now; a poisoned lock is recovered (the balancer has no
/// invariant a panicking holder could break half-way).
pub(crate) fn choose(balancer: &SharedBalancer, client: IpAddr, skip_affinity: bool) -> Option<SocketAddr> {
    let mut guard = balancer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    guard.next(client, Instant::now(), skip_affinity)
}
