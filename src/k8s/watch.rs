//! Live sources of cluster state for the daemon: kube-rs watchers on Services, EndpointSlices
//! (or Endpoints) and this node's Node object feeding a compact, incrementally maintained
//! store, and a file source that serves the same role from manifests on disk. Both hand the
//! syncer a `Snapshot` and bump a change counter on every event.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod ingest;
mod kinds;
mod retry;
pub mod store;

use self::ingest::{Ingest, Ingested};
use self::kinds::Watched;
use self::retry::Retry;
use self::store::Store;
use super::convert::{self, EndpointsSource};
use super::manifests::{self, Problem};
use crate::model::NodeFacts;
use crate::model::{ClusterState, IpFamily};

/// The EndpointSlice annotation kube-proxy reads for `network_programming_duration_seconds`.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Services kube-proxy does not handle (another proxy claims them, or they are headless).
pub const SERVICE_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/// Endpoint objects of Services another proxy claims.
pub const ENDPOINTS_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name";

/// What one sync works from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every proxied service port with its endpoints.
    pub state: ClusterState,
    /// This node's labels, pod CIDRs and addresses, once its Node object is known.
    pub node: Option<NodeFacts>,
    /// Objects that could not be used, with the reason.
    pub problems: Vec<Problem>,
}

/// Counts and timestamps of changes since the syncer last took them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Service events.
    pub services: u64,
    /// EndpointSlice / Endpoints events.
    pub endpoints: u64,
    /// `last-change-trigger-time` of changed EndpointSlices, with their address family.
    pub trigger_times: Vec<(IpFamily, SystemTime)>,
}

/// Shared between the watch tasks and the syncer: a change counter the syncer waits on, and
/// what changed since it last looked.
#[derive(Debug)]
pub struct ChangeFeed {
    counter: watch::Sender<u64>,
    pending: Mutex<Changes>,
}

impl ChangeFeed {
    /// A new feed and a receiver for the syncer.
    pub fn new() -> (Arc<ChangeFeed>, watch::Receiver<u64>) {
        let (counter, rx) = watch::channel(0);
        (Arc::new(ChangeFeed { counter, pending: Mutex::new(Changes::default()) }), rx)
    }

    /// Records one event and wakes the syncer.
    pub fn record(&self, kind: ChangeKind, trigger: Option<(IpFamily, SystemTime)>) {
        if let Ok(mut pending) = self.pending.lock() {
            match kind {
                ChangeKind::Service => pending.services += 1,
                ChangeKind::Endpoints => pending.endpoints += 1,
                ChangeKind::Other => {}
            }
            pending.trigger_times.extend(trigger);
        }
        self.counter.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Takes (and resets) what changed since the last call.
    pub fn take(&self) -> Changes {
        self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    /// Gives back changes taken by a sync that failed, ahead of those recorded since.
    pub fn put_back(&self, mut taken: Changes) {
        if let Ok(mut pending) = self.pending.lock() {
            taken.services += pending.services;
            taken.endpoints += pending.endpoints;
            taken.trigger_times.append(&mut pending.trigger_times);
            *pending = taken;
        }
    }
}

/// Which kind of object an event was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A Service.
    Service,
    /// An EndpointSlice or Endpoints object.
    Endpoints,
    /// The Node.
    Other,
}

/// Where the daemon's cluster state comes from.
pub trait StateSource: Send + Sync {
    /// The current state, or `None` until Services, endpoints (and, from the API, this Node)
    /// have all been listed once (never program a partial view).
    fn snapshot(&self) -> Option<Snapshot>;

    /// This node's facts as last seen (cheap: no cluster state is built), `None` while its
    /// Node object is unknown or gone.
    fn node(&self) -> Option<NodeFacts>;
}

/// The watchers' compact store (see [`store`]), fed by one task per watched kind.
pub struct ApiSource {
    store: Arc<Mutex<Store>>,
}

/// The store, even if a task panicked while holding it.
fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one watcher until shutdown, applying every event to the store and recording it in the
/// feed.
fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    store: Arc<Mutex<Store>>,
    feed: Arc<ChangeFeed>,
    shutdown: CancellationToken,
) where
    K: Watched + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let what = std::any::type_name::<K>().rsplit("::").next().unwrap_or("object");
    // Retries are paced here (see `retry`) rather than by `.default_backoff()`, so that a 410
    // after an outage relists at once instead of after the backoff the outage built up.
    let stream = watcher(api, config);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut retry = Retry::default();
        let mut ingest = Ingest::<K>::default();
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    retry.succeeded();
                    let listed = matches!(event, watcher::Event::InitDone);
                    let Ingested { change, record } = ingest.event(event);
                    if let Some(change) = change {
                        change.apply(&mut lock(&store));
                    }
                    if listed {
                        tracing::info!(resource = what, "listed");
                    }
                    if let Some(trigger) = record {
                        feed.record(K::CHANGE, trigger);
                    }
                }
                Some(Err(err)) => {
                    let wait = retry.after(&err);
                    let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(resource = what, error = %err, retry_in_ms, "watch failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                None => break,
            }
        }
    });
}

impl ApiSource {
    /// Starts the watchers; they run until `shutdown`.
    pub fn start(
        client: Client,
        node_name: &str,
        source: EndpointsSource,
        feed: Arc<ChangeFeed>,
        shutdown: CancellationToken,
    ) -> ApiSource {
        let store = Arc::new(Mutex::new(Store::new()));
        let svc_cfg = watcher::Config::default().labels(SERVICE_SELECTOR);
        let ep_cfg = watcher::Config::default().labels(ENDPOINTS_SELECTOR);
        let services = Api::<Service>::all(client.clone());
        spawn_watch(services, svc_cfg, store.clone(), feed.clone(), shutdown.clone());
        match source {
            EndpointsSource::Endpoints => {
                let endpoints = Api::<Endpoints>::all(client.clone());
                spawn_watch(endpoints, ep_cfg, store.clone(), feed.clone(), shutdown.clone());
            }
            EndpointsSource::EndpointSlices | EndpointsSource::Auto => {
                let slices = Api::<EndpointSlice>::all(client.clone());
                spawn_watch(slices, ep_cfg, store.clone(), feed.clone(), shutdown.clone());
            }
        }
        let node_cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
        spawn_watch(Api::<Node>::all(client), node_cfg, store.clone(), feed, shutdown);
        ApiSource { store }
    }
}

impl StateSource for ApiSource {
    fn snapshot(&self) -> Option<Snapshot> {
        // `None` until this Node too was listed (even if absent): its pod CIDR, addresses and
        // zone shape the first sync (kube-proxy also reads its Node before it programs).
        lock(&self.store).snapshot()
    }

    fn node(&self) -> Option<NodeFacts> {
        lock(&self.store).node()
    }
}

/// Manifests on disk standing in for the API (`--objects`): re-read when any file changes.
pub struct FileSource {
    snapshot: Arc<Mutex<Option<Snapshot>>>,
}

/// Modification time and size of every file under `paths`, to notice changes cheaply.
fn fingerprint(paths: &[PathBuf]) -> BTreeMap<PathBuf, (Option<SystemTime>, u64)> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            out.insert(path, (None, 0));
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else {
            out.insert(path, (meta.modified().ok(), meta.len()));
        }
        if out.len() > 100_000 {
            break;
        }
    }
    out
}

impl FileSource {
    /// Loads `paths` now and re-loads them whenever they change (polled every `interval`).
    pub fn start(
        paths: Vec<PathBuf>,
        node_name: String,
        source: EndpointsSource,
        interval: Duration,
        feed: Arc<ChangeFeed>,
        shutdown: CancellationToken,
    ) -> FileSource {
        let snapshot = Arc::new(Mutex::new(None));
        let shared = snapshot.clone();
        tokio::spawn(async move {
            let mut seen = None;
            loop {
                let print = fingerprint(&paths);
                if seen.as_ref() != Some(&print) {
                    let loaded = manifests::load_paths(&paths);
                    let mut converted = convert::cluster_state(&loaded.objects, source);
                    let node = loaded
                        .objects
                        .nodes
                        .iter()
                        .find(|n| n.object.metadata.name.as_deref() == Some(node_name.as_str()))
                        .map(|n| convert::node_facts(&n.object));
                    let mut problems = loaded.problems;
                    problems.append(&mut converted.problems);
                    let services = converted.state.services.len();
                    tracing::info!(files = print.len(), services, "loaded manifests");
                    if let Ok(mut slot) = shared.lock() {
                        *slot = Some(Snapshot { state: converted.state, node, problems });
                    }
                    feed.record(ChangeKind::Service, None);
                    seen = Some(print);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
        FileSource { snapshot }
    }
}

impl StateSource for FileSource {
    fn snapshot(&self) -> Option<Snapshot> {
        self.snapshot.lock().ok().and_then(|s| s.clone())
    }

    fn node(&self) -> Option<NodeFacts> {
        self.snapshot.lock().ok().and_then(|s| s.as_ref().and_then(|s| s.node.clone()))
    }
}

/// Human name of an object for logs.
pub fn describe<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_of_a_failed_sync_come_back_before_newer_ones() {
        let (feed, _rx) = ChangeFeed::new();
        let (t1, t2) =
            (SystemTime::UNIX_EPOCH + Duration::from_secs(1), SystemTime::UNIX_EPOCH + Duration::from_secs(2));
        feed.record(ChangeKind::Endpoints, Some((IpFamily::V4, t1)));
        let taken = feed.take();
        feed.record(ChangeKind::Service, None);
        feed.record(ChangeKind::Endpoints, Some((IpFamily::V6, t2)));
        feed.put_back(taken);
        let all = feed.take();
        assert_eq!((all.services, all.endpoints), (1, 2));
        assert_eq!(all.trigger_times, [(IpFamily::V4, t1), (IpFamily::V6, t2)]);
        assert_eq!(feed.take(), Changes::default());
    }
}
