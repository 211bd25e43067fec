//! UDP conntrack reconciliation after a sync (the rule and the netlink I/O are the
//! `conntrack` room's).

use super::Syncer;
use crate::conntrack::{self, Frontends};
use crate::k8s::watch::Snapshot;

impl Syncer {
    /// Deletes stale UDP conntrack flows (kube-proxy's reconciler): after the first sync, and
    /// after every sync that changed a family's UDP frontends or serving endpoints, or that
    /// follows a failed reconciliation. Not in userspace mode, where service traffic is
    /// DNATed to the proxy's own sockets, never to endpoints.
    pub(super) fn reconcile_conntrack(&mut self, snapshot: &Snapshot) {
        if self.userspace.is_some() {
            return;
        }
        for family in self.opts.families.clone() {
            let Ok(node) = self.opts.node.node_config(family, snapshot.node.as_ref(), self.opts.flannel.as_ref())
            else {
                continue;
            };
            let desired = Frontends::new(&snapshot.state, &node);
            let previous = self.reconciled.get(&family);
            let unchanged = previous == Some(&desired) || (previous.is_none() && desired.is_empty());
            if unchanged && !self.reconcile_failed.contains(&family) {
                self.reconciled.insert(family, desired);
                continue;
            }
            let frontends = match previous {
                Some(previous) => desired.clone().with_retired(previous),
                None => desired.clone(),
            };
            let outcome = conntrack::reconcile(self.conntrack.as_ref(), &frontends);
            self.metrics.observe_conntrack_reconcile(family, outcome.elapsed.as_secs_f64());
            self.metrics.inc_conntrack_deleted_entries(family, outcome.deleted as u64);
            let elapsed_ms = outcome.elapsed.as_millis() as u64;
            let (listed, stale, deleted) = (outcome.listed, outcome.stale, outcome.deleted);
            match outcome.error {
                None => {
                    tracing::debug!(%family, listed, stale, deleted, elapsed_ms, "conntrack reconciled");
                    self.reconcile_failed.remove(&family);
                    self.reconciled.insert(family, desired);
                }
                Some(err) => {
                    self.reconcile_failed.insert(family);
                    tracing::warn!(%family, listed, stale, deleted, error = %err, "conntrack reconciliation failed; retrying after the next sync");
                }
            }
        }
    }
}
