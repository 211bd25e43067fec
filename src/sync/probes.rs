//! What a sync asks the host before rendering (interface addresses, nfacct counters) and where
//! the healthCheckNodePort servers listen; the probing itself is `host`.

use std::net::IpAddr;

use super::Syncer;
use crate::host::{self, SyncProbes};
use crate::k8s::watch::Snapshot;
use crate::model::NodePortAddresses;

impl Syncer {
    /// Consults `probes` on every sync: the interface addresses (for `--nodeport-addresses`)
    /// each time, the nfacct counters (ensured) on full syncs, as kube-proxy does.
    pub fn with_probes(mut self, probes: SyncProbes) -> Self {
        self.probes = Some(probes);
        self
    }

    /// Re-reads what the probes know before rendering; failures keep the last known facts.
    pub(super) fn probe_host(&mut self, full: bool) {
        let Some(probes) = &self.probes else { return };
        if !self.opts.node.nodeport_addresses.is_empty() {
            match probes.addresses.addresses() {
                Ok(addresses) => self.opts.node.node_addresses = addresses,
                Err(err) => tracing::warn!(error = %err, "keeping the last known interface addresses"),
            }
        }
        if full {
            if let Some(nfacct) = &probes.nfacct {
                self.opts.node.nfacct = host::ensure_counters(nfacct.as_ref());
            }
        }
    }

    /// Where healthCheckNodePort servers listen, as kube-proxy decides it: every address
    /// (`0.0.0.0`, i.e. both families) unless `--nodeport-addresses` limits every programmed
    /// family, then the node's addresses it selects.
    pub fn health_check_bind_ips(&self, snapshot: &Snapshot) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for &family in &self.opts.families {
            let Ok(node) = self.opts.node.node_config(family, snapshot.node.as_ref(), self.opts.flannel.as_ref())
            else {
                continue;
            };
            if node.nodeport_addresses == NodePortAddresses::All {
                return vec![IpAddr::from([0, 0, 0, 0])];
            }
            ips.extend(node.nodeport_addresses.matching(family, &node.local_addresses));
        }
        ips
    }
}
