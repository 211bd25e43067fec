//! A wire-compatible test Kubernetes API server for the real `kube` client: list (selectors,
//! pagination, resourceVersions), chunked watch (history replay, selector transitions,
//! bookmarks, 410 after compaction, timeouts), discovery, `Status` errors — plus test-side
//! switches to drop watches, compact history, hold reconnects and go unavailable.
//!
//! ```ignore
//! let server = ApiServer::start();                      // 127.0.0.1:PORT here
//! let server = ApiServer::start_in_netns(node.name());  // 127.0.0.1:PORT inside that netns
//! let kubeconfig = server.kubeconfig(dir.path());       // for the daemon's --kubeconfig
//! server.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, ...}));
//! server.delete("Service", "default", "web");
//! server.drop_watches();                                // cut every open watch connection
//! server.compact();                                     // older resourceVersions now get 410
//! server.set_unavailable(true);                         // every request: 503 + Status
//! server.set_unreachable(true);                         // every connection closed at once
//! let gap = server.hold_watches();                      // reconnecting watches wait …
//! server.drop_watches();                                // … so changes made now are missed
//! drop(gap);                                            // and must be replayed (or relisted)
//! assert_eq!(server.requests(Verb::List, "/api/v1/services").len(), 1);
//! ```
//! A watch request is logged when its response starts, so a watch may be open
//! (`watch_count`) an instant before it appears in `request_log`.
//! Layout: `resources` (served kinds), `selector`, `store` (objects, history, lists), `watch`
//! (fan-out, chunked bodies), `http` (routes), `discovery`, `status` (errors), `log`, `server`
//! (thread, netns, runtime).

mod discovery;
mod gate;
mod http;
mod log;
mod resources;
mod selector;
mod server;
mod status;
mod store;
mod tls;
mod watch;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

pub use log::{RequestRecord, Verb};

use log::RequestLog;
use resources::Resource;
use store::Store;

/// How a server is started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Bind inside network namespace `/var/run/netns/NAME` instead of the caller's.
    pub netns: Option<String>,
    /// Send a BOOKMARK on every watch that allows them this often (`None`: only on `bookmark_now`).
    pub bookmark_interval: Option<Duration>,
    /// Serve HTTPS with a fresh CA ([`ApiServer::ca_pem`]) instead of plain HTTP.
    pub tls: bool,
    /// Answer 401 to every request without `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { netns: None, bookmark_interval: Some(Duration::from_secs(1)), tls: false, bearer_token: None }
    }
}

/// State shared by the test thread and the server thread.
#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    store: Mutex<Store>,
    log: Mutex<RequestLog>,
    unavailable: AtomicBool,
    /// While unreachable, connections are closed as soon as they are accepted.
    reachability: Arc<gate::Reachability>,
    /// Number of live [`WatchHold`]s; new watch requests wait while it is above zero.
    holds: tokio::sync::watch::Sender<u32>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The TLS identity, when serving HTTPS.
    tls: Option<tls::TlsIdentity>,
    /// The bearer token every request must carry, when set.
    bearer_token: Option<String>,
}

impl Shared {
    fn new(addr: SocketAddr, config: &ServerConfig, tls: Option<tls::TlsIdentity>) -> Shared {
        Shared {
            tls,
            bearer_token: config.bearer_token.clone(),
            addr,
            store: Mutex::new(Store::new()),
            log: Mutex::new(RequestLog::default()),
            unavailable: AtomicBool::new(false),
            reachability: Arc::new(gate::Reachability::default()),
            holds: tokio::sync::watch::Sender::new(0),
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The store; a panic elsewhere while it was locked does not poison it for the test.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self) -> MutexGuard<'_, RequestLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bookmark_now(&self) {
        let mut store = self.store();
        let rv = store.resource_version();
        store.watches.bookmark(rv);
    }
}

/// A running test API server; stops (ending every watch) when dropped.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Serves on 127.0.0.1:PORT in the caller's network namespace.
    pub fn start() -> ApiServer {
        ApiServer::start_with(ServerConfig::default())
    }

    /// Serves on 127.0.0.1:PORT inside network namespace `name` (`/var/run/netns/NAME`; needs
    /// root, and `lo` must be up there, as `common::netns::NetNs` does): only processes in that
    /// namespace can reach it. Only the server's own thread enters the namespace.
    pub fn start_in_netns(name: &str) -> ApiServer {
        ApiServer::start_with(ServerConfig { netns: Some(name.to_string()), ..ServerConfig::default() })
    }

    /// Starts with `config`; panics if the server cannot start.
    pub fn start_with(config: ServerConfig) -> ApiServer {
        ApiServer::try_start(config).unwrap_or_else(|e| panic!("test apiserver did not start: {e}"))
    }

    /// Starts with `config`.
    pub fn try_start(config: ServerConfig) -> io::Result<ApiServer> {
        let (_, shared, thread) = server::spawn(&config)?;
        Ok(ApiServer { shared, thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.shared.addr)
    }

    /// The PEM of the CA that signed the server's certificate (with TLS).
    pub fn ca_pem(&self) -> Option<String> {
        self.shared.tls.as_ref().map(|tls| tls.ca_pem.clone())
    }

    /// The port (on 127.0.0.1 in the server's namespace).
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// Writes `DIR/kubeconfig` (plain HTTP, no auth, namespace `default`) and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
             user: test\n    namespace: default\ncurrent-context: test\npreferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// A `kube::Client` for this server (call inside a tokio runtime; only useful when the
    /// server runs in the caller's network namespace).
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().unwrap_or_else(|e| panic!("bad url {}: {e}", self.url()));
        kube::Client::try_from(kube::Config::new(url)).unwrap_or_else(|e| panic!("kube client: {e}"))
    }

    /// Creates or replaces an object (by `kind`/`apiVersion`, `metadata.namespace` defaulting to
    /// `default`, `metadata.name`); sets resourceVersion, uid and creationTimestamp; emits ADDED
    /// or MODIFIED. Re-applying an identical object changes nothing, like the apiserver. Returns
    /// the stored object. Panics on an unknown kind or a missing name.
    pub fn apply(&self, object: Value) -> Value {
        self.shared.store().apply(object)
    }

    /// Deletes an object (`kind` like `Service` or `EndpointSlice`; `namespace` is ignored for
    /// cluster-scoped kinds) and emits DELETED with its last state. `None` if it did not exist.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store().delete(kind, namespace, name)
    }

    /// The stored object, if any.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = Resource::by_kind(kind, None).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        self.shared.store().get(&resource, namespace, name).cloned()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Forgets the history before now: a watch resuming from an older resourceVersion gets a
    /// 410 `Expired` ERROR event; continue tokens and exact lists from before get 410 too.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Cuts every open watch connection mid-stream (queued events are sent first).
    pub fn drop_watches(&self) {
        self.shared.store().watches.close_all(true);
    }

    /// Until the returned guard drops, new watch requests wait (the client sees a slow server):
    /// with [`drop_watches`](Self::drop_watches) this makes changes happen while clients are
    /// disconnected, deterministically.
    pub fn hold_watches(&self) -> WatchHold {
        self.shared.holds.send_modify(|holds| *holds += 1);
        WatchHold { shared: self.shared.clone() }
    }

    /// `true`: every request gets 503 `ServiceUnavailable` (a `Status` body, `Retry-After: 1`,
    /// which kube's retry layer and the watcher's backoff both handle) and open watches are cut.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
        if unavailable {
            self.drop_watches();
        }
    }

    /// `true`: the server looks unreachable, like a network partition: every new connection is
    /// closed as soon as it is accepted, and every connection accepted before fails on its next
    /// read or write (open watches are cut). `false`: connections are served again.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.shared.reachability.set_unreachable(unreachable);
        if unreachable {
            self.drop_watches();
        }
    }

    /// How many connections were closed unserved because the server was unreachable.
    pub fn refused_connections(&self) -> u64 {
        self.shared.reachability.refused()
    }

    /// Every stored object (all kinds), sorted by kind, namespace and name: the state to render.
    pub fn objects(&self) -> Vec<Value> {
        self.shared.store().all()
    }

    /// How many watches are open right now.
    pub fn watch_count(&self) -> usize {
        self.shared.store().watches.len()
    }

    /// Every request so far (bounded), oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.log().snapshot()
    }

    /// The logged requests with `verb` on `path` (e.g. `Verb::Watch`, `/api/v1/services`).
    pub fn requests(&self, verb: Verb, path: &str) -> Vec<RequestRecord> {
        self.request_log().into_iter().filter(|r| r.verb == verb && r.path == path).collect()
    }

    /// Sends a BOOKMARK at the current resourceVersion on every watch that allows bookmarks.
    pub fn bookmark_now(&self) {
        self.shared.bookmark_now();
    }

    /// Waits (asynchronously, polling) until at least `count` watches are open; `false` on timeout.
    pub async fn wait_for_watches(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.watch_count() < count {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.shared.store().watches.close_all(false);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps new watch requests waiting until dropped (see [`ApiServer::hold_watches`]).
#[derive(Debug)]
pub struct WatchHold {
    shared: Arc<Shared>,
}

impl Drop for WatchHold {
    fn drop(&mut self) {
        self.shared.holds.send_modify(|holds| *holds = holds.saturating_sub(1));
    }
}
