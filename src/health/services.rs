//! `/debug/services`: what the daemon believes it programmed, per service port — its chains,
//! its endpoints, when its rules last changed — and how the last sync went. The syncer
//! publishes a compact summary after each sync ([`ServicesView::programmed`],
//! [`ServicesView::sync_finished`]); the HTTP handler only reads it (`json`), never renders.
//!
//! `lastProgrammed` of a service port is the time of the last successful sync whose rules for
//! that service port (every rule render writes for it, in every programmed family) differ from
//! the ones the previous successful sync had; a service port whose rules never changed since
//! it appeared keeps the time of the first successful sync that had it (`firstProgrammed`).
//! Syncs that rewrite the same rules (periodic, full, repair) do not move it. Only a service
//! port whose inputs changed (its Service port or endpoints, the node configuration) is
//! rendered again to find out: work proportional to the change.

pub(super) mod json;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use crate::metrics::SyncKind;
use crate::model::{ClusterState, Endpoint, IpFamily, NodeConfig, ServicePort, ServicePortName};
use crate::rules::render::summary::{service_port_chains, service_port_rules, ServicePortChains};
use crate::rules::ruleset::ChainName;

/// How the last sync ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// When it ended.
    pub time: SystemTime,
    /// Full or partial (a partial that failed and fell back to full is full); `None` for a
    /// failed sync.
    pub kind: Option<SyncKind>,
    /// The error of a failed sync (the previous rules stay in place).
    pub error: Option<String>,
}

/// One endpoint as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// The endpoint's conditions and node, as read from the API.
    pub endpoint: Endpoint,
    /// It runs on this node.
    pub local: bool,
    /// Its `KUBE-SEP-…` chain; `None` when no policy chain uses it (not ready, not local for a
    /// Local-only policy, outside the topology hints …).
    pub chain: Option<String>,
}

/// One service port's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct PortView {
    /// Its cluster IPs.
    pub cluster_ips: Vec<std::net::IpAddr>,
    /// Families whose rules include it (those of its cluster IPs that are programmed).
    pub families: Vec<IpFamily>,
    /// Its chains, in any programmed family (the names do not depend on the family).
    pub chains: ServicePortChains,
    /// Every endpoint, ready or not, sorted by address.
    pub endpoints: Vec<EndpointView>,
    /// The first successful sync that had it.
    pub first_programmed: SystemTime,
    /// The last successful sync that changed its rules (see the module docs).
    pub last_programmed: SystemTime,
    /// What it was built from, to tell whether the next sync must look again.
    input: Arc<ServicePort>,
    /// Fingerprint of its rendered rules.
    rules: u64,
}

/// Everything `/debug/services` serves, as of one instant.
#[derive(Debug, Default)]
pub struct Published {
    /// How the last sync ended (`None` before the first one).
    pub last_sync: Option<SyncOutcome>,
    /// Every service port the last successful sync programmed.
    pub ports: Arc<BTreeMap<ServicePortName, Arc<PortView>>>,
    /// The per-family render context the ports were built with.
    context: Vec<(NodeConfig, bool)>,
}

/// Shared between the syncer (writes after each sync) and the metrics server (reads). Cheap
/// to clone; a read copies one `Arc`.
#[derive(Debug, Clone, Default)]
pub struct ServicesView {
    current: Arc<RwLock<Arc<Published>>>,
}

/// One programmed family: its node configuration and whether it is in large-cluster mode.
#[derive(Debug, Clone, Copy)]
pub struct FamilyContext<'a> {
    /// The node configuration the family was rendered with.
    pub node: &'a NodeConfig,
    /// kube-proxy's large-cluster mode for the family (it changes the rules' comments).
    pub large_cluster: bool,
}

impl ServicesView {
    /// What the handler serves now.
    pub fn current(&self) -> Arc<Published> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn replace(&self, f: impl FnOnce(&Published) -> Published) {
        let old = self.current();
        let new = Arc::new(f(&old));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = new;
    }

    /// A sync succeeded and programmed `state` in `families`, at `now`.
    pub fn programmed(&self, state: &ClusterState, families: &[FamilyContext<'_>], now: SystemTime) {
        self.replace(|old| {
            let context: Vec<(NodeConfig, bool)> = families.iter().map(|f| (f.node.clone(), f.large_cluster)).collect();
            let ports = build(old, state, families, context != old.context, now);
            Published { last_sync: old.last_sync.clone(), ports, context }
        });
    }

    /// A sync ended (successfully or not).
    pub fn sync_finished(&self, outcome: SyncOutcome) {
        self.replace(|old| Published {
            last_sync: Some(outcome),
            ports: Arc::clone(&old.ports),
            context: old.context.clone(),
        });
    }
}

/// The summaries of every service port of `state`: unchanged inputs reuse the previous one
/// (by pointer first: a port the sync did not touch is the same allocation), and when no
/// input changed the previous map itself is reused.
fn build(
    old: &Published,
    state: &ClusterState,
    families: &[FamilyContext<'_>],
    context_changed: bool,
    now: SystemTime,
) -> Arc<BTreeMap<ServicePortName, Arc<PortView>>> {
    let same = |p: &PortView, svc: &Arc<ServicePort>| Arc::ptr_eq(&p.input, svc) || *p.input == **svc;
    let unchanged = !context_changed
        && old.ports.len() == state.services.len()
        && old.ports.iter().zip(&state.services).all(|((a, p), (b, svc))| a == b && same(p, svc));
    if unchanged {
        return Arc::clone(&old.ports);
    }
    let ports = state.services.iter().map(|(name, svc)| {
        let previous = old.ports.get(name);
        let view = match previous {
            Some(p) if !context_changed && same(p, svc) => p.clone(),
            _ => Arc::new(summarize(svc, families, previous.map(Arc::as_ref), now)),
        };
        (name.clone(), view)
    });
    Arc::new(ports.collect())
}

/// One service port's summary, rendered afresh; `previous` gives its programming times.
pub(super) fn summarize(
    svc: &Arc<ServicePort>,
    families: &[FamilyContext<'_>],
    previous: Option<&PortView>,
    now: SystemTime,
) -> PortView {
    let mut chains = ServicePortChains::default();
    let mut in_families = Vec::new();
    let mut fingerprint = Fingerprint(DefaultHasher::new());
    for family in families {
        let Some(c) = service_port_chains(svc, family.node) else { continue };
        in_families.push(family.node.family);
        chains.cluster = chains.cluster.or(c.cluster);
        chains.local = chains.local.or(c.local);
        chains.external = chains.external.or(c.external);
        chains.firewall = chains.firewall.or(c.firewall);
        chains.endpoints.extend(c.endpoints);
        let rules = service_port_rules(svc, family.node, family.large_cluster);
        let _ = write!(fingerprint, "{}\n{rules}", family.node.family);
    }
    let rules = fingerprint.0.finish();
    let node_name = families.first().map(|f| f.node.node_name.as_str()).unwrap_or_default();
    let seps: HashMap<SocketAddr, &ChainName> = chains.endpoints.iter().map(|(addr, c)| (*addr, c)).collect();
    let endpoints = svc
        .endpoints
        .iter()
        .map(|ep| EndpointView {
            endpoint: ep.clone(),
            local: ep.is_local(node_name),
            chain: seps.get(&ep.addr).map(|c| c.to_string()),
        })
        .collect();
    let first_programmed = previous.map_or(now, |p| p.first_programmed);
    let last_programmed = match previous {
        Some(p) if p.rules == rules => p.last_programmed,
        _ => now,
    };
    PortView {
        cluster_ips: svc.cluster_ips.clone(),
        families: in_families,
        chains,
        endpoints,
        first_programmed,
        last_programmed,
        input: Arc::clone(svc),
        rules,
    }
}

/// Hashes text written into it (the rules' restore text) without keeping it.
struct Fingerprint(DefaultHasher);

impl std::fmt::Write for Fingerprint {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
