//! `FakeConntrack`: an in-memory conntrack table with the kernel's semantics for what the
//! reconciler uses (the syncer's tests, `--dry-run`).

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{Conntrack, Error, Flow, Result};
use crate::model::{IpFamily, Protocol};

/// An in-memory conntrack table that records every deletion.
#[derive(Debug, Default)]
pub struct FakeConntrack {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    flows: Vec<Flow>,
    deleted: Vec<Flow>,
    listings: usize,
    refuse_listing: bool,
}

impl FakeConntrack {
    /// An empty table.
    pub fn new() -> Self {
        FakeConntrack::default()
    }

    /// A table holding `flows`.
    pub fn with_flows(flows: Vec<Flow>) -> Self {
        let fake = FakeConntrack::new();
        fake.state().flows = flows;
        fake
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one entry.
    pub fn add_flow(&self, flow: Flow) {
        self.state().flows.push(flow);
    }

    /// The entries still present.
    pub fn flows(&self) -> Vec<Flow> {
        self.state().flows.clone()
    }

    /// Every flow deleted so far, in order.
    pub fn deleted(&self) -> Vec<Flow> {
        self.state().deleted.clone()
    }

    /// How many times the table was listed.
    pub fn listings(&self) -> usize {
        self.state().listings
    }

    /// Makes listing fail (as the kernel does without CAP_NET_ADMIN) while `refuse` is set.
    pub fn refuse_listing(&self, refuse: bool) {
        self.state().refuse_listing = refuse;
    }
}

impl Conntrack for FakeConntrack {
    fn for_each_udp_flow(&self, family: IpFamily, visit: &mut dyn FnMut(Flow)) -> Result<()> {
        let flows = {
            let mut state = self.state();
            if state.refuse_listing {
                let source = std::io::Error::from_raw_os_error(1); // EPERM
                return Err(Error::Kernel { operation: "dump", family, source });
            }
            state.listings += 1;
            state.flows.clone()
        };
        for flow in flows.into_iter().filter(|f| f.protocol == Protocol::Udp && f.family() == family) {
            visit(flow);
        }
        Ok(())
    }

    /// Deletes the entry with the same original tuple (and the same id, when both have one).
    fn delete(&self, flow: &Flow) -> Result<bool> {
        let mut state = self.state();
        let same = |f: &Flow| {
            (f.protocol, f.orig_src, f.orig_dst) == (flow.protocol, flow.orig_src, flow.orig_dst)
                && (f.id.is_none() || flow.id.is_none() || f.id == flow.id)
        };
        let Some(at) = state.flows.iter().position(same) else {
            return Ok(false);
        };
        let gone = state.flows.remove(at);
        state.deleted.push(gone);
        Ok(true)
    }
}
