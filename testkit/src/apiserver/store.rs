//! The in-memory object store: objects per resource, one global resourceVersion, the change
//! history since the compaction point, and consistent paginated lists. Watch fan-out lives in
//! `watch`; HTTP in `http`.

use std::collections::{BTreeMap, VecDeque};

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::resources::Resource;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, Result};
use super::watch::Watches;

/// `(namespace, name)`; the namespace is `""` for cluster-scoped objects.
pub type Key = (String, String);

/// At most this many changes are kept; older ones are compacted away automatically.
const MAX_HISTORY: usize = 100_000;

/// What a change did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Replaced.
    Modified,
    /// Removed.
    Deleted,
}

/// One entry of the history: everything a watch needs to replay it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion this change created.
    pub rv: u64,
    /// Which resource.
    pub resource: Resource,
    /// What happened.
    pub kind: ChangeType,
    /// Which object.
    pub key: Key,
    /// The object after the change; for a deletion its last state stamped with the deletion's RV.
    pub object: Value,
    /// The object before the change (`None` when it was created).
    pub prev: Option<Value>,
}

/// Which objects a list or watch sees: one resource, optionally one namespace, and selectors.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The resource listed or watched.
    pub resource: Resource,
    /// `Some` for a namespaced path (`/api/v1/namespaces/NS/services`).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether the object stored under `key` passes the namespace and both selectors.
    pub fn matches(&self, key: &Key, object: &Value) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == key.0)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// The parameters of a list request that the store interprets.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// Which objects.
    pub filter: Filter,
    /// `limit` (0 or absent: everything).
    pub limit: Option<usize>,
    /// `continue` from a previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch` (`Exact`, `NotOlderThan`).
    pub version_match: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The resourceVersion the page (and every following page) was read at.
    pub resource_version: u64,
    /// Objects, sorted by namespace then name.
    pub items: Vec<Value>,
    /// Token for the next page, when there is one.
    pub continue_token: Option<String>,
    /// How many matching objects the following pages hold.
    pub remaining: Option<usize>,
}

/// Objects, resourceVersions, history and open watches.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Resource, BTreeMap<Key, Value>>,
    history: VecDeque<Change>,
    /// History at or before this RV is gone: reads and watches from older RVs get 410.
    compacted: u64,
    next_uid: u64,
    /// Open watch streams, notified of every change.
    pub watches: Watches,
}

impl Store {
    /// An empty store at resourceVersion 1 (never "0", which means "any" to clients).
    pub fn new() -> Store {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 1,
            next_uid: 1,
            watches: Watches::default(),
        }
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Creates or replaces an object (see `ApiServer::apply`); returns the stored object.
    pub fn apply(&mut self, mut object: Value) -> Value {
        let resource = resource_of(&object);
        object["apiVersion"] = json!(resource.api_version());
        let key = normalise_metadata(&resource, &mut object);
        let prev = self.objects.get(&resource).and_then(|objects| objects.get(&key)).cloned();
        self.fill_identity(&mut object, prev.as_ref());
        if let Some(prev) = &prev {
            let mut unchanged = object.clone();
            unchanged["metadata"]["resourceVersion"] = prev["metadata"]["resourceVersion"].clone();
            if unchanged == *prev {
                return unchanged; // a no-op update: no new resourceVersion, no event
            }
        }
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.entry(resource).or_default().insert(key.clone(), object.clone());
        let kind = if prev.is_some() { ChangeType::Modified } else { ChangeType::Added };
        self.record(Change { rv: self.rv, resource, kind, key, object: object.clone(), prev });
        object
    }

    /// Removes an object; returns its last state (stamped with the deletion's RV), `None` if absent.
    pub fn delete(&mut self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = Resource::by_kind(kind, None).unwrap_or_else(|| panic!("delete: unknown kind {kind:?}"));
        let namespace = if resource.namespaced { namespace } else { "" };
        let key = (namespace.to_string(), name.to_string());
        let prev = self.objects.get_mut(&resource)?.remove(&key)?;
        self.rv += 1;
        let mut object = prev.clone();
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(Change {
            rv: self.rv,
            resource,
            kind: ChangeType::Deleted,
            key,
            object: object.clone(),
            prev: Some(prev),
        });
        Some(object)
    }

    /// One object by kind, namespace (ignored for cluster-scoped kinds) and name.
    pub fn get(&self, resource: &Resource, namespace: &str, name: &str) -> Option<&Value> {
        let namespace = if resource.namespaced { namespace } else { "" };
        self.objects.get(resource)?.get(&(namespace.to_string(), name.to_string()))
    }

    /// Forgets all history: only the current resourceVersion can be read or watched from.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// Every current object of every resource, by resource then namespace/name.
    pub fn all(&self) -> Vec<Value> {
        self.objects.values().flat_map(|objects| objects.values().cloned()).collect()
    }

    /// Current objects of `filter`'s resource that pass it, sorted by namespace/name.
    pub fn current<'a>(&'a self, filter: &'a Filter) -> impl Iterator<Item = &'a Value> + 'a {
        let objects = self.objects.get(&filter.resource).into_iter().flatten();
        objects.filter(|(key, object)| filter.matches(key, object)).map(|(_, object)| object)
    }

    /// Changes after `rv`, oldest first; 410 if `rv` is before the compaction point.
    pub fn changes_since(&self, rv: u64) -> Result<impl Iterator<Item = &Change>> {
        if rv < self.compacted {
            return Err(ApiError::too_old(rv, self.compacted));
        }
        Ok(self.history.iter().filter(move |change| change.rv > rv))
    }

    /// One page of a list, consistent at one resourceVersion across all its pages.
    pub fn list(&self, request: &ListRequest) -> Result<ListPage> {
        let (rv, start) = match &request.continue_token {
            Some(token) => {
                let (rv, start) = decode_continue(token)?;
                if rv < self.compacted {
                    return Err(ApiError::expired(CONTINUE_EXPIRED));
                }
                (rv, Some(start))
            }
            None => (self.read_version(request)?, None),
        };
        let state = self.state_at(&request.filter.resource, rv)?;
        let mut matching = state
            .iter()
            .filter(|(key, object)| request.filter.matches(key, object))
            .filter(|(key, _)| start.as_ref().is_none_or(|start| *key > start))
            .peekable();
        let limit = request.limit.filter(|limit| *limit > 0).unwrap_or(usize::MAX);
        let page: Vec<(&Key, &Value)> = matching.by_ref().take(limit).collect();
        let remaining = matching.count();
        let continue_token = match page.last() {
            Some((last, _)) if remaining > 0 => Some(encode_continue(rv, last)),
            _ => None,
        };
        let items = page.into_iter().map(|(_, object)| object.clone()).collect();
        Ok(ListPage { resource_version: rv, items, continue_token, remaining: (remaining > 0).then_some(remaining) })
    }

    /// The resourceVersion a list without `continue` reads at.
    fn read_version(&self, request: &ListRequest) -> Result<u64> {
        let requested = match request.resource_version.as_deref() {
            None | Some("") | Some("0") => return Ok(self.rv),
            Some(text) => parse_rv(text)?,
        };
        if requested > self.rv {
            return Err(ApiError::too_large(requested, self.rv));
        }
        match request.version_match.as_deref() {
            Some("Exact") if requested < self.compacted => Err(ApiError::too_old(requested, self.compacted)),
            Some("Exact") => Ok(requested),
            _ => Ok(self.rv),
        }
    }

    /// All objects of `resource` as they were at `rv` (undoing later changes from the history).
    fn state_at(&self, resource: &Resource, rv: u64) -> Result<BTreeMap<Key, Value>> {
        let mut state = self.objects.get(resource).cloned().unwrap_or_default();
        for change in self.changes_since(rv)?.collect::<Vec<_>>().into_iter().rev() {
            if change.resource != *resource {
                continue;
            }
            match &change.prev {
                Some(prev) => state.insert(change.key.clone(), prev.clone()),
                None => state.remove(&change.key),
            };
        }
        Ok(state)
    }

    fn record(&mut self, change: Change) {
        self.watches.notify(&change);
        self.history.push_back(change);
        while self.history.len() > MAX_HISTORY {
            if let Some(oldest) = self.history.pop_front() {
                self.compacted = oldest.rv;
            }
        }
    }

    /// Keeps uid and creationTimestamp across replacements; invents them for new objects.
    fn fill_identity(&mut self, object: &mut Value, prev: Option<&Value>) {
        for field in ["uid", "creationTimestamp"] {
            if let Some(value) = prev.map(|p| &p["metadata"][field]).filter(|v| !v.is_null()) {
                object["metadata"][field] = value.clone();
            }
        }
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.next_uid));
            self.next_uid += 1;
        }
        if object["metadata"]["creationTimestamp"].is_null() {
            let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            object["metadata"]["creationTimestamp"] = json!(now);
        }
    }
}

/// The resource an applied object belongs to (panics on unknown kinds: a test bug).
fn resource_of(object: &Value) -> Resource {
    let kind = object["kind"].as_str().unwrap_or_else(|| panic!("apply: object without kind: {object}"));
    Resource::by_kind(kind, object["apiVersion"].as_str())
        .unwrap_or_else(|| panic!("apply: kind {kind} / apiVersion {} is not served", object["apiVersion"]))
}

/// Checks the name, defaults the namespace (or removes it for cluster-scoped kinds); returns the key.
fn normalise_metadata(resource: &Resource, object: &mut Value) -> Key {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    assert!(!name.is_empty(), "apply: object without metadata.name: {object}");
    let metadata = object["metadata"].as_object_mut().unwrap_or_else(|| unreachable!("metadata has a name"));
    if !resource.namespaced {
        metadata.remove("namespace");
        return (String::new(), name);
    }
    let namespace = metadata.get("namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty()).unwrap_or("default");
    let namespace = namespace.to_string();
    metadata.insert("namespace".into(), json!(namespace));
    (namespace, name)
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. \
You can start a new list without the continue parameter, or use the continue token in this response to retrieve \
the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that \
were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Parses a numeric resourceVersion (400 otherwise).
pub fn parse_rv(text: &str) -> Result<u64> {
    text.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {text:?}")))
}

/// An opaque token: hex of `rv NUL namespace NUL name`.
fn encode_continue(rv: u64, (namespace, name): &Key) -> String {
    format!("{rv}\0{namespace}\0{name}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, Key)> {
    let invalid = || ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion");
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|hex| u8::from_str_radix(hex, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '\0');
    let rv = parts.next().and_then(|rv| rv.parse().ok()).ok_or_else(invalid)?;
    let (namespace, name) = (parts.next().ok_or_else(invalid)?, parts.next().ok_or_else(invalid)?);
    Ok((rv, (namespace.to_string(), name.to_string())))
}
