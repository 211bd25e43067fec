//! What each sync publishes for `/debug/services`: its outcome, and after a successful one the
//! per-service-port summary of what it programmed (`health::services` builds it).

use std::time::SystemTime;

use super::{FamilyReport, Result, Syncer};
use crate::health::services::{FamilyContext, SyncOutcome};
use crate::health::ServicesView;
use crate::k8s::watch::Snapshot;
use crate::metrics::SyncKind;
use crate::model::NodeConfig;

impl Syncer {
    /// Publishes every sync's outcome and summary to `view`.
    pub fn with_view(mut self, view: ServicesView) -> Self {
        self.view = Some(view);
        self
    }

    /// After a sync: its outcome, and (successful, iptables mode) what it programmed. In
    /// userspace mode no service port has iptables-mode chains: only the outcome is published.
    pub(super) fn publish_view(&self, snapshot: &Snapshot, result: &Result<Vec<FamilyReport>>) {
        let Some(view) = &self.view else { return };
        let now = SystemTime::now();
        let outcome = match result {
            Ok(reports) => {
                if self.userspace.is_none() {
                    let nodes: Vec<NodeConfig> = self
                        .opts
                        .families
                        .iter()
                        .filter_map(|&f| {
                            self.opts.node.node_config(f, snapshot.node.as_ref(), self.opts.flannel.as_ref()).ok()
                        })
                        .collect();
                    let families: Vec<FamilyContext<'_>> = nodes
                        .iter()
                        .map(|node| FamilyContext { node, large_cluster: self.large_cluster(node.family, snapshot) })
                        .collect();
                    view.programmed(&snapshot.state, &families, now);
                }
                let full = reports.iter().any(|r| r.kind == SyncKind::Full);
                SyncOutcome {
                    time: now,
                    kind: Some(if full { SyncKind::Full } else { SyncKind::Partial }),
                    error: None,
                }
            }
            Err(err) => SyncOutcome { time: now, kind: None, error: Some(err.to_string()) },
        };
        view.sync_finished(outcome);
    }
}
