//! The userspace proxy's port plan: which local port proxies each service port. The proxier
//! allocates it; the userspace portal rules are rendered from it.

use std::collections::BTreeMap;

use super::{ClusterState, ServicePortName};

/// The proxy port (local listening socket) of each service port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortPlan(pub BTreeMap<ServicePortName, u16>);

/// The port range ran out before every service port had a proxy port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proxy port range starting at {start} cannot hold {needed} service ports")]
pub struct PortPlanError {
    /// First port of the range.
    pub start: u16,
    /// How many service ports needed one.
    pub needed: usize,
}

impl PortPlan {
    /// Deterministic plan for offline rendering: `start`, `start+1`, … in service order (every
    /// service port of `state`, whatever its family, so both families agree). Upstream picked
    /// random free ports from `--proxy-port-range` at runtime; this only has to be stable.
    pub fn sequential(state: &ClusterState, start: u16) -> Result<Self, PortPlanError> {
        let needed = state.services.len();
        if usize::from(u16::MAX - start) + 1 < needed || (start == 0 && needed > 0) {
            return Err(PortPlanError { start, needed });
        }
        Ok(PortPlan(state.services.keys().cloned().zip(start..=u16::MAX).collect()))
    }

    /// The proxy port of `name`, if planned.
    pub fn get(&self, name: &ServicePortName) -> Option<u16> {
        self.0.get(name).copied()
    }
}
