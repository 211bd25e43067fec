//! Stale UDP conntrack flows, reconciled as kube-proxy does since 1.32: list the UDP flows of a
//! family, and delete every flow addressed to a UDP service frontend (service IP:port, or a
//! NodePort on a local address) whose reply source IP:port is not a serving endpoint of that
//! service port. The decision is pure ([`Frontends`], [`stale_flows`]); the kernel sits behind
//! [`Conntrack`]: [`NetlinkConntrack`] (ctnetlink, no `conntrack` process) and
//! [`FakeConntrack`] (in memory). Conntrack *tuning* (nf_conntrack_max) is not here.
//!
//! Only UDP is reconciled (TCP flows end with FIN/RST or time out), as kube-proxy. The rule,
//! its upstream sources and where kubenat differs are in `docs/conntrack.md`.

mod fake;
mod frontends;
mod netlink;
mod reconcile;

pub use fake::FakeConntrack;
pub use frontends::Frontends;
pub use netlink::NetlinkConntrack;
pub use reconcile::{reconcile, stale_flows, Outcome};

use std::fmt;
use std::net::SocketAddr;

use crate::model::{IpFamily, Protocol};

/// Errors talking to the kernel's conntrack table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened or configured (netfilter netlink missing, no
    /// permission). Retryable: the next call opens a new socket.
    #[error("opening the conntrack netlink socket")]
    Open(#[source] std::io::Error),
    /// Sending or receiving on the socket failed, or timed out. Retryable.
    #[error("conntrack netlink {operation} for {family}")]
    Io {
        /// What was being done (`dump`, `delete`).
        operation: &'static str,
        /// The family.
        family: IpFamily,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel answered a request with an error (e.g. EPERM without CAP_NET_ADMIN).
    /// Retryable unless the cause is a missing capability.
    #[error("kernel refused conntrack {operation} for {family}")]
    Kernel {
        /// What was being done (`dump`, `delete`).
        operation: &'static str,
        /// The family.
        family: IpFamily,
        /// The errno the kernel returned.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's answer could not be decoded (truncated or malformed message). Retryable.
    #[error("undecodable conntrack netlink answer for {family}: {reason}")]
    Decode {
        /// The family.
        family: IpFamily,
        /// What was wrong.
        reason: String,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One conntrack entry, as much of it as the reconciler looks at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// Layer-4 protocol.
    pub protocol: Protocol,
    /// Original direction source (the client).
    pub orig_src: SocketAddr,
    /// Original direction destination (service IP:port, or node IP:NodePort).
    pub orig_dst: SocketAddr,
    /// Reply direction source: the endpoint when the flow was DNATed, else `orig_dst`.
    pub reply_src: SocketAddr,
    /// The kernel's id of the entry, when known: a delete names it, so an entry re-created
    /// with the same tuple since the listing is not deleted by mistake.
    pub id: Option<u32>,
}

impl Flow {
    /// A flow without a kernel id (tests, the fake).
    pub fn new(protocol: Protocol, orig_src: SocketAddr, orig_dst: SocketAddr, reply_src: SocketAddr) -> Self {
        Flow { protocol, orig_src, orig_dst, reply_src, id: None }
    }

    /// Whether the flow was destination-NATed (its reply comes from another address or port).
    pub fn is_dnat(&self) -> bool {
        self.reply_src != self.orig_dst
    }

    /// The family of its addresses.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.orig_dst.ip())
    }
}

impl fmt::Display for Flow {
    /// `udp 10.244.0.5:40000 -> 10.96.0.10:53 reply-from 10.244.1.7:5353`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {} reply-from {}", self.protocol.as_str(), self.orig_src, self.orig_dst, self.reply_src)
    }
}

/// The kernel's conntrack table, as the reconciler needs it. Blocking: async callers use
/// `spawn_blocking`.
pub trait Conntrack {
    /// Calls `visit` with every UDP flow of `family`, as the table is read: the table is never
    /// held in memory whole.
    fn for_each_udp_flow(&self, family: IpFamily, visit: &mut dyn FnMut(Flow)) -> Result<()>;

    /// Deletes one flow, found by its original tuple (and its id when known). `Ok(false)` when
    /// it was already gone (expired, or deleted by someone else) — not an error.
    fn delete(&self, flow: &Flow) -> Result<bool>;
}

#[cfg(test)]
mod tests;
