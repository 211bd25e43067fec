//! Host probing, the I/O edge that tells the rules what this node has, as kube-proxy probes it:
//! the interface addresses (rtnetlink, every sync), the iptables version (`--random-fully`),
//! `nf_conntrack_tcp_be_liberal` and the nfacct counters (nfnetlink_acct). Deciding what the
//! facts mean for the rules stays pure in `model` and `rules`.
//!
//! - `addresses`: [`InterfaceAddresses`] (netlink, fake).
//! - `nfacct`: [`Nfacct`] (netlink with its message codec, fake).
//! - `iptables_version`: `--version` parsing and the `--random-fully` threshold.
//! - `netlink`: one request/response exchange on a netlink socket.

pub mod addresses;
pub mod iptables_version;
mod netlink;
pub mod nfacct;

pub use addresses::{FakeAddresses, InterfaceAddresses, NetlinkAddresses};
pub use nfacct::{Counter, FakeNfacct, NetlinkNfacct, Nfacct};

use std::sync::Arc;

use crate::apply::exec::Backend;
use crate::metrics::Metrics;
use crate::rules::render::{NFACCT_INVALID, NFACCT_LOCALHOST_NODEPORTS};
use crate::startup::{Sysctl, SysctlReader, SysctlValue};

/// Errors of one probe; none is fatal: the caller logs it and renders without the fact.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address dump failed (retried on the next sync).
    #[error("listing the interface addresses through netlink: {0}")]
    Addresses(#[source] std::io::Error),
    /// An nfacct request failed (e.g. no nfnetlink_acct in the kernel, or no permission).
    #[error("nfacct counter {name}: {source}")]
    Nfacct {
        /// The counter.
        name: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A counter name the kernel would refuse (empty, or longer than 31 bytes).
    #[error("nfacct counter name {0:?} is empty or longer than 31 bytes")]
    NfacctName(String),
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The counters kube-proxy's `-m nfacct` rules count into, in the order it ensures them.
pub const NFACCT_COUNTERS: [&str; 2] = [NFACCT_INVALID, NFACCT_LOCALHOST_NODEPORTS];

/// What the daemon probes once at start.
#[derive(Clone)]
pub struct StartFacts {
    /// iptables accepts `MASQUERADE --random-fully` (version ≥ 1.6.2).
    pub random_fully: bool,
    /// `nf_conntrack_tcp_be_liberal` is non-zero: no INVALID drop rule.
    pub tcp_be_liberal: bool,
    /// The kernel's nfacct, when it has one.
    pub nfacct: Option<Arc<dyn Nfacct>>,
}

impl std::fmt::Debug for StartFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartFacts")
            .field("random_fully", &self.random_fully)
            .field("tcp_be_liberal", &self.tcp_be_liberal)
            .field("nfacct", &self.nfacct.is_some())
            .finish()
    }
}

/// Probes this host (blocking): the iptables version of `backend`'s tools, the sysctl read
/// through `sysctls`, and whether nfacct answers. Each missing fact is logged once, at info,
/// with what the rules do without it.
pub fn probe_at_start(backend: Backend, sysctls: &SysctlReader) -> StartFacts {
    let random_fully = match iptables_version::probe(backend) {
        Some(version) => {
            let supported = iptables_version::supports_random_fully(version);
            tracing::info!(%version, random_fully = supported, "iptables version");
            supported
        }
        None => {
            tracing::info!("cannot read the iptables version; MASQUERADE without --random-fully");
            false
        }
    };
    let tcp_be_liberal = match sysctls.read(Sysctl::NfConntrackTcpBeLiberal) {
        SysctlValue::Set(n) => n != 0,
        _ => false,
    };
    if tcp_be_liberal {
        tracing::info!("nf_conntrack_tcp_be_liberal set, not installing DROP rules for INVALID packets");
    }
    let nfacct = match NetlinkNfacct::probe() {
        Ok(nfacct) => Some(Arc::new(nfacct) as Arc<dyn Nfacct>),
        Err(err) => {
            tracing::info!(error = %err, "nfacct is not available: no -m nfacct rules, the nfacct metrics stay 0");
            None
        }
    };
    StartFacts { random_fully, tcp_be_liberal, nfacct }
}

/// Ensures every counter of [`NFACCT_COUNTERS`]; `true` when all exist (the rules may then
/// use them). Failures are logged per counter, as kube-proxy does on every full sync.
pub fn ensure_counters(nfacct: &dyn Nfacct) -> bool {
    let mut all = true;
    for name in NFACCT_COUNTERS {
        if let Err(err) = nfacct.ensure(name) {
            tracing::error!(counter = name, error = %err, "cannot create the nfacct counter; its metric will not be updated");
            all = false;
        }
    }
    all
}

/// Publishes the counters' packet counts in `kubeproxy_iptables_ct_state_invalid_dropped_
/// packets_total` and `kubeproxy_iptables_localhost_nodeports_accepted_packets_total` (kube-
/// proxy reads them at every scrape). A counter that cannot be read keeps its last value.
pub fn publish_counters(nfacct: &dyn Nfacct, metrics: &Metrics) {
    for name in NFACCT_COUNTERS {
        let packets = match nfacct.get(name) {
            Ok(Some(counter)) => counter.packets,
            Ok(None) => continue,
            Err(err) => {
                tracing::debug!(counter = name, error = %err, "cannot read the nfacct counter");
                continue;
            }
        };
        if name == NFACCT_INVALID {
            metrics.set_ct_state_invalid_dropped_packets(packets);
        } else {
            metrics.set_localhost_nodeports_accepted_packets(packets);
        }
    }
}

/// The probes a sync consults: addresses every sync, nfacct on full syncs.
#[derive(Clone)]
pub struct SyncProbes {
    /// The node's interface addresses.
    pub addresses: Arc<dyn InterfaceAddresses>,
    /// The kernel's nfacct, when it has one.
    pub nfacct: Option<Arc<dyn Nfacct>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_ensured_and_published() {
        let nfacct = FakeNfacct::default();
        let (metrics, registry) = Metrics::new();
        publish_counters(&nfacct, &metrics); // nothing yet: nothing published
        assert!(ensure_counters(&nfacct));
        nfacct.count(NFACCT_INVALID, 3);
        nfacct.count(NFACCT_LOCALHOST_NODEPORTS, 5);
        publish_counters(&nfacct, &metrics);
        let text = crate::metrics::encode(&registry);
        assert!(text.contains("kubeproxy_iptables_ct_state_invalid_dropped_packets_total 3"), "{text}");
        assert!(text.contains("kubeproxy_iptables_localhost_nodeports_accepted_packets_total 5"), "{text}");
    }
}
