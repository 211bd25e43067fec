//! What the watcher needs to know about each watched kind: how an object is keyed, what is
//! kept of it (converted on arrival), its trigger time, and where it goes in the [`Store`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;

use super::store::{EndpointsKey, EndpointsKind, Store};
use super::{ChangeKind, TRIGGER_TIME_ANNOTATION};
use crate::k8s::convert::{self, object_key, EndpointGroup, Partial, ServiceKey};
use crate::model::{IpFamily, NodeFacts, ServicePort};

/// A kind the live source watches.
pub trait Watched: Resource + Sized {
    /// Identifies an object of the kind.
    type Key: Ord + Clone + Send + 'static;
    /// What is kept of an object.
    type Value: Send + 'static;
    /// How its events are counted.
    const CHANGE: ChangeKind;

    /// The object's key.
    fn key(&self) -> Self::Key;
    /// What is kept of the object.
    fn value(&self) -> Self::Value;
    /// `last-change-trigger-time`, for the kinds that carry it.
    fn trigger(&self) -> Option<(IpFamily, SystemTime)> {
        None
    }
    /// Stores an added or changed object.
    fn apply(store: &mut Store, key: Self::Key, value: Self::Value);
    /// Forgets a deleted object.
    fn delete(store: &mut Store, key: &Self::Key);
    /// Replaces every object of the kind with a fresh list.
    fn relist(store: &mut Store, all: BTreeMap<Self::Key, Self::Value>);
}

impl Watched for Service {
    type Key = ServiceKey;
    type Value = Partial<Vec<ServicePort>>;
    const CHANGE: ChangeKind = ChangeKind::Service;

    fn key(&self) -> ServiceKey {
        object_key(&self.metadata)
    }
    fn value(&self) -> Self::Value {
        convert::service_ports(self)
    }
    fn apply(store: &mut Store, key: ServiceKey, value: Self::Value) {
        store.apply_service(key, value);
    }
    fn delete(store: &mut Store, key: &ServiceKey) {
        store.delete_service(key);
    }
    fn relist(store: &mut Store, all: BTreeMap<ServiceKey, Self::Value>) {
        store.relist_services(all);
    }
}

impl Watched for EndpointSlice {
    type Key = EndpointsKey;
    type Value = Partial<Option<EndpointGroup>>;
    const CHANGE: ChangeKind = ChangeKind::Endpoints;

    fn key(&self) -> EndpointsKey {
        EndpointsKey { kind: EndpointsKind::Slice, object: object_key(&self.metadata) }
    }
    fn value(&self) -> Self::Value {
        convert::slice_endpoints(self)
    }
    fn trigger(&self) -> Option<(IpFamily, SystemTime)> {
        let family = match self.address_type.as_str() {
            "IPv4" => IpFamily::V4,
            "IPv6" => IpFamily::V6,
            _ => return None,
        };
        let text = self.metadata.annotations.as_ref()?.get(TRIGGER_TIME_ANNOTATION)?;
        let time: Time = serde_json::from_value(serde_json::Value::String(text.clone())).ok()?;
        Some((family, SystemTime::from(time.0)))
    }
    fn apply(store: &mut Store, key: EndpointsKey, value: Self::Value) {
        store.apply_endpoints(key, value);
    }
    fn delete(store: &mut Store, key: &EndpointsKey) {
        store.delete_endpoints(key);
    }
    fn relist(store: &mut Store, all: BTreeMap<EndpointsKey, Self::Value>) {
        store.relist_endpoints(EndpointsKind::Slice, all);
    }
}

impl Watched for Endpoints {
    type Key = EndpointsKey;
    type Value = Partial<Option<EndpointGroup>>;
    const CHANGE: ChangeKind = ChangeKind::Endpoints;

    fn key(&self) -> EndpointsKey {
        EndpointsKey { kind: EndpointsKind::Endpoints, object: object_key(&self.metadata) }
    }
    fn value(&self) -> Self::Value {
        convert::core_endpoints(self)
    }
    fn apply(store: &mut Store, key: EndpointsKey, value: Self::Value) {
        store.apply_endpoints(key, value);
    }
    fn delete(store: &mut Store, key: &EndpointsKey) {
        store.delete_endpoints(key);
    }
    fn relist(store: &mut Store, all: BTreeMap<EndpointsKey, Self::Value>) {
        store.relist_endpoints(EndpointsKind::Endpoints, all);
    }
}

/// Only this node's Node object is watched, so it needs no key.
impl Watched for Node {
    type Key = ();
    type Value = NodeFacts;
    const CHANGE: ChangeKind = ChangeKind::Other;

    fn key(&self) {}
    fn value(&self) -> NodeFacts {
        convert::node_facts(self)
    }
    fn apply(store: &mut Store, _: (), value: NodeFacts) {
        store.set_node(Some(value));
    }
    fn delete(store: &mut Store, _: &()) {
        store.set_node(None);
    }
    fn relist(store: &mut Store, all: BTreeMap<(), NodeFacts>) {
        store.relist_node(all.into_values().next());
    }
}
