//! Converts Services and EndpointSlices (or core/v1 Endpoints) into a `ClusterState` with
//! kube-proxy's semantics, validating every value that could reach iptables text; no I/O.

mod claims;
mod endpoints;
mod legacy;
mod node;
mod reporter;
mod service;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::debug;

pub use claims::{claims, Claim, Outcome, PortOwners};
pub use endpoints::{
    merge_endpoints, slice_endpoints, EndpointGroup, MergedEndpoints, PortEndpoints, SERVICE_NAME_LABEL,
};
pub use legacy::core_endpoints;
pub use node::{node_facts, TO_BE_DELETED_TAINT, ZONE_LABEL};
pub use service::service_ports;

use crate::k8s::manifests::{object_label, Objects, Problem, Source};
use crate::model::{ClusterState, ServicePort};

/// Which API gives the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointsSource {
    /// discovery.k8s.io/v1 EndpointSlices (what kube-proxy uses since 1.19).
    EndpointSlices,
    /// core/v1 Endpoints (what kube-proxy used before EndpointSlices).
    Endpoints,
    /// EndpointSlices if there are any, otherwise core/v1 Endpoints.
    #[default]
    Auto,
}

/// A converted cluster and what was wrong with the input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converted {
    /// Every proxied service port with its endpoints.
    pub state: ClusterState,
    /// Objects and values that were skipped, each naming the object and the bad value.
    pub problems: Vec<Problem>,
}

/// What could be converted from one object, and what was wrong with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partial<T> {
    /// The usable part.
    pub value: T,
    /// Problems with the object (no source set; the caller knows where it came from).
    pub problems: Vec<Problem>,
}

/// Converts loaded objects into a cluster state, exactly as the daemon would see them.
pub fn cluster_state(objects: &Objects, source: EndpointsSource) -> Converted {
    let mut builder = StateBuilder::new();
    for svc in &objects.services {
        builder.add_service(&svc.object, Some(&svc.source));
    }
    let use_slices = match source {
        EndpointsSource::EndpointSlices => true,
        EndpointsSource::Endpoints => false,
        EndpointsSource::Auto => !objects.endpoint_slices.is_empty(),
    };
    if use_slices {
        for slice in &objects.endpoint_slices {
            builder.add_endpoint_slice(&slice.object, Some(&slice.source));
        }
    } else {
        for endpoints in &objects.endpoints {
            builder.add_endpoints(&endpoints.object, Some(&endpoints.source));
        }
    }
    builder.finish()
}

/// (namespace, name) of a Service, or of any namespaced object.
pub type ServiceKey = (String, String);

/// The (namespace, name) an object is known by: no namespace means `default`.
pub fn object_key(meta: &ObjectMeta) -> ServiceKey {
    let namespace = meta.namespace.clone().filter(|ns| !ns.is_empty()).unwrap_or_else(|| "default".into());
    (namespace, meta.name.clone().unwrap_or_default())
}

/// Builds a [`ClusterState`] from objects added in any order ([`cluster_state`] feeds it from
/// files; the live watcher's store keeps the same result up to date event by event).
/// Converting happens as objects are added; [`StateBuilder::finish`] resolves what needs the
/// whole set: duplicates, nodePort and clusterIP conflicts (the first Service by
/// namespace/name keeps the port, see [`PortOwners`]) and endpoints.
#[derive(Debug, Default)]
pub struct StateBuilder {
    services: BTreeMap<ServiceKey, ServiceEntry>,
    groups: BTreeMap<ServiceKey, Vec<EndpointGroup>>,
    /// Each endpoint object's label and source, by the Service it names.
    group_objects: BTreeMap<ServiceKey, Vec<(String, Option<Source>)>>,
    seen: HashMap<(&'static str, String, String), Option<Source>>,
    problems: Vec<Problem>,
}

#[derive(Debug)]
struct ServiceEntry {
    source: Option<Source>,
    ports: Vec<ServicePort>,
}

impl StateBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        StateBuilder::default()
    }

    /// Adds a Service; a second Service with the same namespace/name is reported and ignored.
    pub fn add_service(&mut self, svc: &Service, source: Option<&Source>) {
        let Some(key) = self.first_of("Service", &svc.metadata, source) else {
            return;
        };
        let Partial { value, problems } = service_ports(svc);
        self.problems.extend(problems.into_iter().map(|p| p.at(source)));
        self.services.insert(key, ServiceEntry { source: source.cloned(), ports: value });
    }

    /// Adds an EndpointSlice; its endpoints attach to the Service its label names.
    pub fn add_endpoint_slice(&mut self, slice: &EndpointSlice, source: Option<&Source>) {
        if self.first_of("EndpointSlice", &slice.metadata, source).is_some() {
            let Partial { value, problems } = slice_endpoints(slice);
            self.add_group("EndpointSlice", value, problems, source);
        }
    }

    /// Adds a core/v1 Endpoints; its endpoints attach to the Service of the same name.
    pub fn add_endpoints(&mut self, endpoints: &Endpoints, source: Option<&Source>) {
        if self.first_of("Endpoints", &endpoints.metadata, source).is_some() {
            let Partial { value, problems } = core_endpoints(endpoints);
            self.add_group("Endpoints", value, problems, source);
        }
    }

    fn add_group(&mut self, kind: &str, group: Option<EndpointGroup>, problems: Vec<Problem>, source: Option<&Source>) {
        self.problems.extend(problems.into_iter().map(|p| p.at(source)));
        if let Some(group) = group {
            let key = (group.namespace.clone(), group.service.clone());
            let label = object_label(kind, Some(&group.namespace), &group.name);
            self.group_objects.entry(key.clone()).or_default().push((label, source.cloned()));
            self.groups.entry(key).or_default().push(group);
        }
    }

    /// The object's (namespace, name) if it is the first of its kind with that key; a repeat
    /// is reported.
    fn first_of(&mut self, kind: &'static str, meta: &ObjectMeta, source: Option<&Source>) -> Option<ServiceKey> {
        let (namespace, name) = object_key(meta);
        match self.seen.entry((kind, namespace.clone(), name.clone())) {
            Entry::Vacant(slot) => {
                slot.insert(source.cloned());
                Some((namespace, name))
            }
            Entry::Occupied(first) => {
                let first = first.get().as_ref().map(|s| format!(" (first read from {s})")).unwrap_or_default();
                let reason = format!("defined more than once; this copy is ignored{first}");
                let problem = Problem::about(kind, Some(&namespace), &name, reason);
                self.problems.push(problem.at(source));
                None
            }
        }
    }

    /// Resolves conflicts, attaches endpoints and returns the state with every problem found.
    pub fn finish(self) -> Converted {
        let StateBuilder { services, mut groups, group_objects, seen, problems } = self;
        let mut converted = Converted { state: ClusterState::default(), problems };
        let mut owners = PortOwners::default();
        for ((namespace, name), entry) in services {
            let label = object_label("Service", Some(&namespace), &name);
            let mut merged = groups.remove(&(namespace, name)).map(|g| merge_endpoints(&g)).unwrap_or_default();
            for port in entry.ports {
                let (outcome, conflict) = owners.claim(&port, &label);
                if let Some(reason) = conflict {
                    let problem = Problem { source: None, object: Some(label.clone()), reason };
                    converted.problems.push(problem.at(entry.source.as_ref()));
                }
                let Some(mut port) = outcome.apply(port) else {
                    continue;
                };
                port.endpoints = merged.remove(&(port.name.port.to_string(), port.name.protocol)).unwrap_or_default();
                converted.state.services.insert(port.name.clone(), Arc::new(port));
            }
        }
        for (namespace, service) in groups.keys() {
            if seen.contains_key(&("Service", namespace.clone(), service.clone())) {
                debug!(namespace, service, "endpoints for a Service that is not proxied, ignored");
                continue;
            }
            for (object, source) in group_objects.get(&(namespace.clone(), service.clone())).into_iter().flatten() {
                converted.problems.push(orphan_problem(object.clone(), namespace, service).at(source.as_ref()));
            }
        }
        converted
    }
}

/// The problem of the endpoint object `object` (a label) whose Service `namespace/service`
/// does not exist.
pub fn orphan_problem(object: String, namespace: &str, service: &str) -> Problem {
    let missing = object_label("Service", Some(namespace), service);
    Problem { source: None, object: Some(object), reason: format!("{missing} does not exist; endpoints ignored") }
}
