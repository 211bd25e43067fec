//! One reconciliation of one family: stream the UDP flows, keep the stale ones (only those are
//! held in memory), delete them one by one.

use std::time::{Duration, Instant};

use super::{Conntrack, Error, Flow, Frontends};

/// The flows among `flows` that `frontends` says are stale, in their order (pure).
pub fn stale_flows(flows: impl IntoIterator<Item = Flow>, frontends: &Frontends) -> Vec<Flow> {
    flows.into_iter().filter(|flow| frontends.is_stale(flow)).collect()
}

/// What one reconciliation did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// UDP flows of the family read from the table.
    pub listed: usize,
    /// Of those, stale ones.
    pub stale: usize,
    /// Stale flows deleted (those already gone when deleted are not counted).
    pub deleted: usize,
    /// How long it took.
    pub elapsed: Duration,
    /// Why it stopped early: listing failed (nothing deleted), or a delete failed (the flows
    /// after it were not tried). `None` when the table was reconciled completely.
    pub error: Option<Error>,
}

/// Lists `frontends.family()`'s UDP flows from `ct` and deletes the stale ones. Memory holds
/// the stale flows only, never the table.
pub fn reconcile(ct: &dyn Conntrack, frontends: &Frontends) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let mut stale = Vec::new();
    let listed = ct.for_each_udp_flow(frontends.family(), &mut |flow| {
        outcome.listed += 1;
        if frontends.is_stale(&flow) {
            stale.push(flow);
        }
    });
    outcome.stale = stale.len();
    if let Err(err) = listed {
        outcome.error = Some(err);
        outcome.elapsed = started.elapsed();
        return outcome;
    }
    for flow in &stale {
        match ct.delete(flow) {
            Ok(true) => {
                outcome.deleted += 1;
                tracing::trace!(%flow, "stale conntrack flow deleted");
            }
            Ok(false) => {}
            Err(err) => {
                outcome.error = Some(err);
                break;
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}
