//! The live watcher's store: what conversion read from each object, already converted, and a
//! `ClusterState` kept up to date event by event. No Kubernetes object is kept.
//!
//! An event re-merges only the Service it concerns (its ports and its endpoint objects) and
//! replaces only the ports whose value changed: an unchanged port keeps its `Arc`. The result
//! is the one [`StateBuilder`](crate::k8s::convert::StateBuilder) gives over the same objects:
//! when Services share a clusterIP:port or nodePort, every Service linked to the changed one by
//! shared claims is weighed again with the same [`PortOwners`] rule (rare; the usual group is
//! the changed Service alone).

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::Snapshot;
use crate::k8s::convert::{
    claims, merge_endpoints, orphan_problem, Claim, EndpointGroup, Outcome, Partial, PortOwners, ServiceKey,
};
use crate::k8s::manifests::{object_label, Problem};
use crate::model::{ClusterState, NodeFacts, Protocol, ServicePort, ServicePortName};

/// The two kinds of endpoint objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointsKind {
    /// discovery.k8s.io/v1 EndpointSlice.
    Slice,
    /// core/v1 Endpoints.
    Endpoints,
}

impl EndpointsKind {
    /// The object kind, as problems name it.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointsKind::Slice => "EndpointSlice",
            EndpointsKind::Endpoints => "Endpoints",
        }
    }
}

/// Identifies one endpoint object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointsKey {
    /// EndpointSlice or Endpoints.
    pub kind: EndpointsKind,
    /// Its (namespace, name).
    pub object: ServiceKey,
}

/// A Service converted, and what its claims came to.
#[derive(Debug)]
struct ServiceRecord {
    /// Its ports (without endpoints) and conversion problems.
    converted: Partial<Vec<ServicePort>>,
    /// One per port: kept, without its nodePort, or skipped.
    outcomes: Vec<Outcome>,
    /// Why ports lost something to other Services.
    conflicts: Vec<Problem>,
}

/// Which first list has completed.
#[derive(Debug, Default, Clone, Copy)]
struct Listed {
    services: bool,
    endpoints: bool,
    node: bool,
}

/// Converted objects and the cluster state they make.
#[derive(Debug, Default)]
pub struct Store {
    services: BTreeMap<ServiceKey, ServiceRecord>,
    endpoints: BTreeMap<EndpointsKey, Partial<Option<EndpointGroup>>>,
    /// The endpoint objects (with a group) naming each Service, whether or not it exists.
    /// (Sorted; most Services have one or two.)
    by_service: HashMap<ServiceKey, Vec<EndpointsKey>>,
    /// The Services whose ports ask for each claim.
    /// (Sorted; almost always one.)
    claimers: HashMap<Claim, Vec<ServiceKey>>,
    /// Services and endpoint objects with conversion problems.
    service_problems: BTreeSet<ServiceKey>,
    endpoints_problems: BTreeSet<EndpointsKey>,
    /// Services that lost a port or nodePort to another.
    conflicted: BTreeSet<ServiceKey>,
    /// Endpoint objects naming a Service that does not exist.
    orphans: BTreeSet<(ServiceKey, EndpointsKey)>,
    node: Option<NodeFacts>,
    listed: Listed,
    state: ClusterState,
}

impl Store {
    /// An empty store; nothing listed yet.
    pub fn new() -> Self {
        Store::default()
    }

    /// The current state, or `None` until Services, endpoints and the Node have been listed.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let Listed { services, endpoints, node } = self.listed;
        (services && endpoints && node).then(|| Snapshot {
            state: self.state.clone(),
            node: self.node.clone(),
            problems: self.problems(),
        })
    }

    /// This node's facts, `None` while its Node object is unknown or gone.
    pub fn node(&self) -> Option<NodeFacts> {
        self.node.clone()
    }

    /// The state as it stands (listed or not).
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Every problem, in the order `StateBuilder` reports them when given Services, then
    /// EndpointSlices, then Endpoints, each in namespace/name order.
    pub fn problems(&self) -> Vec<Problem> {
        let services = self.service_problems.iter().filter_map(|k| self.services.get(k));
        let mut out: Vec<Problem> = services.flat_map(|r| r.converted.problems.iter().cloned()).collect();
        let endpoints = self.endpoints_problems.iter().filter_map(|k| self.endpoints.get(k));
        out.extend(endpoints.flat_map(|e| e.problems.iter().cloned()));
        out.extend(
            self.conflicted.iter().filter_map(|k| self.services.get(k)).flat_map(|r| r.conflicts.iter().cloned()),
        );
        for ((namespace, service), key) in &self.orphans {
            if let Some(group) = self.endpoints.get(key).and_then(|e| e.value.as_ref()) {
                let label = object_label(key.kind.as_str(), Some(&group.namespace), &group.name);
                out.push(orphan_problem(label, namespace, service));
            }
        }
        out
    }

    /// Sets (or, with `None`, clears) this node's facts.
    pub fn set_node(&mut self, node: Option<NodeFacts>) {
        self.node = node;
    }

    /// The Node was listed: `node` is what the list gave.
    pub fn relist_node(&mut self, node: Option<NodeFacts>) {
        self.node = node;
        self.listed.node = true;
    }

    /// A Service was added or changed.
    pub fn apply_service(&mut self, key: ServiceKey, converted: Partial<Vec<ServicePort>>) {
        let converted = Partial { value: compact(converted.value), problems: compact(converted.problems) };
        let record =
            ServiceRecord { outcomes: vec![Outcome::Kept; converted.value.len()], converted, conflicts: Vec::new() };
        let old_claims = match self.services.get_mut(&key) {
            Some(old) if old.converted == record.converted => return,
            Some(old) => {
                let claims = claim_set(&old.converted.value);
                // The old outcomes no longer describe these ports: resolving sets them again.
                *old = record;
                claims
            }
            None => {
                self.services.insert(key.clone(), record);
                self.adopt_orphans(&key);
                BTreeSet::new()
            }
        };
        self.after_service_change(&key, &old_claims);
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, key: &ServiceKey) {
        let Some(old) = self.services.remove(key) else {
            return;
        };
        for endpoints in self.by_service.get(key).into_iter().flatten() {
            self.orphans.insert((key.clone(), endpoints.clone()));
        }
        self.after_service_change(key, &claim_set(&old.converted.value));
    }

    /// Services were (re)listed: `all` replaces every Service.
    pub fn relist_services(&mut self, all: BTreeMap<ServiceKey, Partial<Vec<ServicePort>>>) {
        let before = self.state.services.clone();
        let gone: Vec<ServiceKey> = self.services.keys().filter(|k| !all.contains_key(*k)).cloned().collect();
        for key in &gone {
            self.delete_service(key);
        }
        for (key, converted) in all {
            self.apply_service(key, converted);
        }
        self.keep_unchanged(&before);
        self.listed.services = true;
    }

    /// After a relist, applied object by object: a port whose value changed on the way but ended
    /// equal to what it was before the relist gets its old `Arc` back (a clash resolved one way
    /// and then back, for instance), so that the relist changes only the ports that changed.
    fn keep_unchanged(&mut self, before: &BTreeMap<ServicePortName, Arc<ServicePort>>) {
        for (name, port) in self.state.services.iter_mut() {
            if let Some(old) = before.get(name).filter(|old| !Arc::ptr_eq(old, port) && ***old == **port) {
                *port = Arc::clone(old);
            }
        }
    }

    /// An endpoint object was added or changed.
    pub fn apply_endpoints(&mut self, key: EndpointsKey, mut converted: Partial<Option<EndpointGroup>>) {
        if let Some(group) = &mut converted.value {
            group.ports = compact(std::mem::take(&mut group.ports));
            for port in &mut group.ports {
                port.endpoints.shrink_to_fit();
            }
        }
        converted.problems.shrink_to_fit();
        if self.endpoints.get(&key) == Some(&converted) {
            return;
        }
        let new_service = converted.value.as_ref().map(group_service);
        if converted.problems.is_empty() {
            self.endpoints_problems.remove(&key);
        } else {
            self.endpoints_problems.insert(key.clone());
        }
        let old = self.endpoints.insert(key.clone(), converted);
        let old_service = old.and_then(|o| o.value.as_ref().map(group_service));
        if let Some(service) = &old_service {
            self.unlink(service, &key);
        }
        if let Some(service) = &new_service {
            add_sorted(self.by_service.entry(service.clone()).or_default(), key.clone());
            if !self.services.contains_key(service) {
                self.orphans.insert((service.clone(), key));
            }
            self.publish(service);
        }
        if let Some(service) = old_service.filter(|old| Some(old) != new_service.as_ref()) {
            self.publish(&service);
        }
    }

    /// An endpoint object was deleted.
    pub fn delete_endpoints(&mut self, key: &EndpointsKey) {
        let Some(old) = self.endpoints.remove(key) else {
            return;
        };
        self.endpoints_problems.remove(key);
        if let Some(service) = old.value.as_ref().map(group_service) {
            self.unlink(&service, key);
            self.publish(&service);
        }
    }

    /// Endpoint objects of `kind` were (re)listed: `all` replaces every object of that kind.
    pub fn relist_endpoints(
        &mut self,
        kind: EndpointsKind,
        all: BTreeMap<EndpointsKey, Partial<Option<EndpointGroup>>>,
    ) {
        let before = self.state.services.clone();
        let gone: Vec<EndpointsKey> =
            self.endpoints.keys().filter(|k| k.kind == kind && !all.contains_key(*k)).cloned().collect();
        for key in &gone {
            self.delete_endpoints(key);
        }
        for (key, converted) in all.into_iter().filter(|(k, _)| k.kind == kind) {
            self.apply_endpoints(key, converted);
        }
        self.keep_unchanged(&before);
        self.listed.endpoints = true;
    }

    /// Forgets that endpoint object `key` names `service`.
    fn unlink(&mut self, service: &ServiceKey, key: &EndpointsKey) {
        if let Some(set) = self.by_service.get_mut(service) {
            remove_sorted(set, key);
            if set.is_empty() {
                self.by_service.remove(service);
            }
        }
        self.orphans.remove(&(service.clone(), key.clone()));
    }

    /// Service `key` now exists: its endpoint objects are no longer orphans.
    fn adopt_orphans(&mut self, key: &ServiceKey) {
        for endpoints in self.by_service.get(key).into_iter().flatten() {
            self.orphans.remove(&(key.clone(), endpoints.clone()));
        }
    }

    /// Service `key` was added, changed or deleted (it asked for `old_claims` before): updates
    /// the claim index and problems, weighs the claims of every Service linked to it again
    /// and publishes what changed.
    fn after_service_change(&mut self, key: &ServiceKey, old_claims: &BTreeSet<Claim>) {
        for claim in old_claims {
            if let Some(set) = self.claimers.get_mut(claim) {
                remove_sorted(set, key);
                if set.is_empty() {
                    self.claimers.remove(claim);
                }
            }
        }
        self.conflicted.remove(key);
        match self.services.get(key) {
            Some(record) => {
                for claim in claim_set(&record.converted.value) {
                    add_sorted(self.claimers.entry(claim).or_default(), key.clone());
                }
                if record.converted.problems.is_empty() {
                    self.service_problems.remove(key);
                } else {
                    self.service_problems.insert(key.clone());
                }
            }
            None => {
                self.service_problems.remove(key);
            }
        }
        let mut seeds: BTreeSet<ServiceKey> =
            old_claims.iter().filter_map(|c| self.claimers.get(c)).flatten().cloned().collect();
        seeds.insert(key.clone());
        let mut changed = self.resolve(seeds);
        changed.insert(key.clone());
        for service in &changed {
            self.publish(service);
        }
    }

    /// Weighs the claims of `seeds` and every Service linked to them by shared claims (taken in
    /// namespace/name order, as `StateBuilder` does); returns the Services whose outcome changed.
    fn resolve(&mut self, seeds: BTreeSet<ServiceKey>) -> BTreeSet<ServiceKey> {
        let mut group = BTreeSet::new();
        let mut queue: Vec<ServiceKey> = seeds.into_iter().collect();
        while let Some(key) = queue.pop() {
            let Some(record) = self.services.get(&key).filter(|_| !group.contains(&key)) else { continue };
            for claim in record.converted.value.iter().flat_map(claims) {
                let linked = self.claimers.get(&claim).into_iter().flatten();
                queue.extend(linked.filter(|k| **k != key && !group.contains(*k)).cloned());
            }
            group.insert(key);
        }
        let mut owners = PortOwners::default();
        let mut changed = BTreeSet::new();
        for key in group {
            let Some(record) = self.services.get_mut(&key) else { continue };
            let label = object_label("Service", Some(&key.0), &key.1);
            let mut outcomes = Vec::with_capacity(record.converted.value.len());
            let mut conflicts = Vec::new();
            for port in &record.converted.value {
                let (outcome, conflict) = owners.claim(port, &label);
                outcomes.push(outcome);
                conflicts.extend(conflict.map(|reason| Problem { source: None, object: Some(label.clone()), reason }));
            }
            if conflicts.is_empty() {
                self.conflicted.remove(&key);
            } else {
                self.conflicted.insert(key.clone());
            }
            if record.outcomes != outcomes || record.conflicts != conflicts {
                record.outcomes = outcomes;
                record.conflicts = conflicts;
                changed.insert(key);
            }
        }
        changed
    }

    /// Writes Service `key`'s ports into the state, with its endpoints merged; a port whose
    /// value did not change keeps its `Arc`. A Service that is gone loses its ports.
    fn publish(&mut self, key: &ServiceKey) {
        let first = ServicePortName {
            namespace: key.0.as_str().into(),
            name: key.1.as_str().into(),
            port: "".into(),
            protocol: Protocol::Tcp,
        };
        let mut stale: BTreeSet<ServicePortName> = self
            .state
            .services
            .range(first..)
            .take_while(|(name, _)| *name.namespace == *key.0 && *name.name == *key.1)
            .map(|(name, _)| name.clone())
            .collect();
        if let Some(record) = self.services.get(key) {
            let groups = self.by_service.get(key).into_iter().flatten();
            let mut merged = merge_endpoints(groups.filter_map(|k| self.endpoints.get(k)?.value.as_ref()));
            for (port, outcome) in record.converted.value.iter().zip(&record.outcomes) {
                let Some(mut port) = outcome.apply(port.clone()) else { continue };
                port.endpoints = merged.remove(&(port.name.port.to_string(), port.name.protocol)).unwrap_or_default();
                stale.remove(&port.name);
                match self.state.services.get(&port.name) {
                    Some(current) if **current == port => {}
                    _ => {
                        self.state.services.insert(port.name.clone(), port.into());
                    }
                }
            }
        }
        for name in stale {
            self.state.services.remove(&name);
        }
    }
}

/// The Service an endpoint group names.
fn group_service(group: &EndpointGroup) -> ServiceKey {
    (group.namespace.clone(), group.service.clone())
}

/// Every claim of a Service's ports.
fn claim_set(ports: &[ServicePort]) -> BTreeSet<Claim> {
    ports.iter().flat_map(claims).collect()
}

/// Adds `item` to the sorted `list` unless it is there.
fn add_sorted<T: Ord>(list: &mut Vec<T>, item: T) {
    if let Err(at) = list.binary_search(&item) {
        if list.capacity() == 0 {
            list.reserve_exact(1);
        }
        list.insert(at, item);
    }
}

/// Removes `item` from the sorted `list`.
fn remove_sorted<T: Ord>(list: &mut Vec<T>, item: &T) {
    if let Ok(at) = list.binary_search(item) {
        list.remove(at);
    }
}

/// `list` without spare capacity (conversion collects with room to grow; the store keeps
/// what it is given for as long as the object lives).
fn compact<T>(mut list: Vec<T>) -> Vec<T> {
    list.shrink_to_fit();
    list
}
