//! Watches: the open streams registered in the store (sinks), the events each one is sent
//! (selector transitions included), bookmarks, abrupt drops, and the chunked HTTP body that
//! carries them. Lists and objects live in `store`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::resources::Resource;
use super::status::{ApiError, Result};
use super::store::{parse_rv, Change, ChangeType, Filter, Store};
use super::Shared;

/// Events queued for one watch before the server gives up on it (and closes it, like the
/// apiserver does with a watcher that cannot keep up).
const SINK_CAPACITY: usize = 4096;

/// One open watch, as the store sees it.
#[derive(Debug)]
struct Sink {
    id: u64,
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::Sender<Bytes>,
    aborted: Arc<AtomicBool>,
}

/// The open watches.
#[derive(Debug, Default)]
pub struct Watches {
    sinks: Vec<Sink>,
    next_id: u64,
}

impl Watches {
    /// Sends `change` to every watch that sees it; closes watches that are full or gone.
    pub fn notify(&mut self, change: &Change) {
        self.sinks.retain(|sink| match event_for(change, &sink.filter) {
            Some(line) => sink.tx.try_send(line).is_ok(),
            None => !sink.tx.is_closed(),
        });
    }

    /// Sends a BOOKMARK at `rv` to every watch that asked for bookmarks.
    pub fn bookmark(&mut self, rv: u64) {
        self.sinks.retain(|sink| {
            !sink.bookmarks || sink.tx.try_send(bookmark_line(&sink.filter.resource, rv, false)).is_ok()
        });
    }

    /// Closes every watch: `abort` breaks the connection mid-stream (no terminating chunk),
    /// otherwise the streams end cleanly once their queued events are sent.
    pub fn close_all(&mut self, abort: bool) {
        for sink in self.sinks.drain(..) {
            sink.aborted.store(abort, Ordering::SeqCst);
        }
    }

    /// How many watches are open.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    fn remove(&mut self, id: u64) {
        self.sinks.retain(|sink| sink.id != id);
    }
}

/// A watch request, as the store interprets it.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// Which objects.
    pub filter: Filter,
    /// `resourceVersion` to start after (absent, `""` or `"0"`: the current state as ADDED events).
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true` (streaming list: current state, then an initial-events-end bookmark).
    pub send_initial_events: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
}

/// A registered watch: the events to send first, then whatever arrives on `rx`.
pub struct OpenWatch {
    replay: VecDeque<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    aborted: Arc<AtomicBool>,
    id: Option<u64>,
    timeout: Option<Duration>,
}

/// Registers a watch (atomically with computing its replay, under the store lock). A start
/// before the compaction point yields a stream of one 410 `ERROR` event, like the apiserver.
pub fn open(store: &mut Store, request: &WatchRequest) -> Result<OpenWatch> {
    if request.send_initial_events && !request.bookmarks {
        return Err(ApiError::invalid(
            "sendInitialEvents: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
        ));
    }
    let filter = &request.filter;
    let (tx, rx) = mpsc::channel(SINK_CAPACITY);
    let aborted = Arc::new(AtomicBool::new(false));
    let mut replay = VecDeque::new();
    let start = request.resource_version.as_deref().filter(|rv| !rv.is_empty() && *rv != "0");
    match start {
        Some(rv) if !request.send_initial_events => {
            let rv = parse_rv(rv)?;
            match store.changes_since(rv) {
                Ok(changes) => replay.extend(changes.filter_map(|change| event_for(change, filter))),
                Err(expired) => {
                    replay.push_back(event_line("ERROR", &expired.status()));
                    return Ok(OpenWatch { replay, rx, aborted, id: None, timeout: request.timeout });
                }
            }
        }
        _ => {
            replay.extend(store.current(filter).map(|object| event_line("ADDED", object)));
            if request.send_initial_events {
                replay.push_back(bookmark_line(&filter.resource, store.resource_version(), true));
            }
        }
    }
    let watches = &mut store.watches;
    let id = watches.next_id;
    watches.next_id += 1;
    let sink = Sink { id, filter: filter.clone(), bookmarks: request.bookmarks, tx, aborted: aborted.clone() };
    watches.sinks.push(sink);
    Ok(OpenWatch { replay, rx, aborted, id: Some(id), timeout: request.timeout })
}

impl OpenWatch {
    /// The chunked HTTP body: one JSON event per line until the watch times out, is closed by the
    /// store (cleanly, or with an error that makes hyper cut the connection), or the server stops.
    pub fn into_body_stream(self, shared: Arc<Shared>) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        let deadline = self.timeout.map(|timeout| Instant::now() + timeout);
        let shutdown = shared.shutdown.subscribe();
        let guard = SinkGuard { shared, id: self.id };
        let state = (self, guard, shutdown, deadline);
        futures::stream::unfold(Some(state), |state| async move {
            let (mut watch, guard, mut shutdown, deadline) = state?;
            if let Some(line) = watch.replay.pop_front() {
                return Some((Ok(line), Some((watch, guard, shutdown, deadline))));
            }
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                next = watch.rx.recv() => next,
                _ = expired => None,
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            match next {
                Some(line) => Some((Ok(line), Some((watch, guard, shutdown, deadline)))),
                None if watch.aborted.load(Ordering::SeqCst) => {
                    // hyper buffers chunks and drops unflushed ones when the body fails: yield
                    // once (it flushes while we are pending) so queued events reach the client.
                    tokio::task::yield_now().await;
                    let error = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "watch dropped by the test");
                    Some((Err(error), None))
                }
                None => None,
            }
        })
    }
}

/// Unregisters a watch when its stream ends or the client goes away.
struct SinkGuard {
    shared: Arc<Shared>,
    id: Option<u64>,
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shared.store().watches.remove(id);
        }
    }
}

/// The event a watch with `filter` sees for `change`, if any. Like the apiserver's watch cache,
/// an update that makes an object stop matching is a DELETED of the previous state (at the
/// update's resourceVersion), and one that makes it start matching is an ADDED.
fn event_for(change: &Change, filter: &Filter) -> Option<Bytes> {
    if change.resource != filter.resource {
        return None;
    }
    let now = filter.matches(&change.key, &change.object);
    let before = change.prev.as_ref().is_some_and(|prev| filter.matches(&change.key, prev));
    match (change.kind, before, now) {
        (ChangeType::Added, _, true) => Some(event_line("ADDED", &change.object)),
        (ChangeType::Deleted, _, true) => Some(event_line("DELETED", &change.object)),
        (ChangeType::Modified, true, true) => Some(event_line("MODIFIED", &change.object)),
        (ChangeType::Modified, false, true) => Some(event_line("ADDED", &change.object)),
        (ChangeType::Modified, true, false) => {
            let mut last = change.prev.clone()?;
            last["metadata"]["resourceVersion"] = json!(change.rv.to_string());
            Some(event_line("DELETED", &last))
        }
        _ => None,
    }
}

/// `{"type":TYPE,"object":OBJECT}` and a newline.
fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": event_type, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A BOOKMARK: only kind, apiVersion and metadata.resourceVersion (plus the streaming-list
/// `k8s.io/initial-events-end` annotation when `initial_end`).
fn bookmark_line(resource: &Resource, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    event_line(
        "BOOKMARK",
        &json!({ "kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata }),
    )
}
