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
