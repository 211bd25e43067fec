//! Turns a kind's watcher events into changes for the [`Store`]: objects are converted as they
//! arrive, and a (re)list is gathered until it is complete, then replaces the old set at once.

use std::collections::BTreeMap;
use std::time::SystemTime;

use kube::runtime::watcher::Event;

use super::kinds::Watched;
use super::store::Store;
use crate::model::IpFamily;

/// A change to apply to the store.
pub enum Change<K: Watched> {
    /// An object was added or changed.
    Apply(K::Key, K::Value),
    /// An object was deleted.
    Delete(K::Key),
    /// A list completed: every object of the kind.
    Relisted(BTreeMap<K::Key, K::Value>),
}

impl<K: Watched> Change<K> {
    /// Applies the change.
    pub fn apply(self, store: &mut Store) {
        match self {
            Change::Apply(key, value) => K::apply(store, key, value),
            Change::Delete(key) => K::delete(store, &key),
            Change::Relisted(all) => K::relist(store, all),
        }
    }
}

/// What one event amounts to.
pub struct Ingested<K: Watched> {
    /// What to apply to the store, if anything.
    pub change: Option<Change<K>>,
    /// Whether to count the event, with its trigger time.
    pub record: Option<Option<(IpFamily, SystemTime)>>,
}

/// One kind's event stream, with the list being gathered.
pub struct Ingest<K: Watched> {
    listing: Option<BTreeMap<K::Key, K::Value>>,
}

impl<K: Watched> Default for Ingest<K> {
    fn default() -> Self {
        Ingest { listing: None }
    }
}

impl<K: Watched> Ingest<K> {
    /// Converts one event.
    pub fn event(&mut self, event: Event<K>) -> Ingested<K> {
        match event {
            Event::Apply(obj) => {
                let record = Some(obj.trigger());
                Ingested { change: Some(Change::Apply(obj.key(), obj.value())), record }
            }
            Event::Delete(obj) => Ingested { change: Some(Change::Delete(obj.key())), record: Some(obj.trigger()) },
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                Ingested { change: None, record: None }
            }
            Event::InitApply(obj) => {
                self.listing.get_or_insert_with(BTreeMap::new).insert(obj.key(), obj.value());
                Ingested { change: None, record: Some(obj.trigger()) }
            }
            Event::InitDone => {
                let all = self.listing.take().unwrap_or_default();
                Ingested { change: Some(Change::Relisted(all)), record: Some(None) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    use super::*;

    fn slice(trigger: Option<&str>) -> EndpointSlice {
        let annotations = trigger.map(|t| json!({ "endpoints.kubernetes.io/last-change-trigger-time": t }));
        serde_json::from_value(json!({
            "metadata": { "namespace": "default", "name": "web-1", "annotations": annotations,
                          "labels": { "kubernetes.io/service-name": "web" } },
            "addressType": "IPv4", "endpoints": [],
        }))
        .expect("slice")
    }

    #[test]
    fn events_are_counted_with_their_trigger_time_as_before() {
        let mut ingest = Ingest::<EndpointSlice>::default();
        let applied = ingest.event(Event::Apply(slice(Some("2024-05-01T10:00:00Z"))));
        let (family, time) = applied.record.flatten().expect("a trigger time");
        assert_eq!(family, IpFamily::V4);
        assert_eq!(time, SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_714_557_600));
        assert!(matches!(applied.change, Some(Change::Apply(..))));
        let init = ingest.event(Event::Init);
        assert!(init.change.is_none() && init.record.is_none());
        let listed = ingest.event(Event::InitApply(slice(None)));
        assert!(listed.change.is_none(), "a list applies at InitDone");
        assert_eq!(listed.record, Some(None));
        let done = ingest.event(Event::InitDone);
        assert_eq!(done.record, Some(None));
        assert!(matches!(done.change, Some(Change::Relisted(all)) if all.len() == 1));
        let deleted = ingest.event(Event::Delete(slice(Some("not a time"))));
        assert_eq!(deleted.record, Some(None), "an unreadable trigger time is left out");
        assert!(matches!(deleted.change, Some(Change::Delete(_))));
    }
}
