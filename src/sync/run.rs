//! The async driver around `Syncer`: waits for the first complete list, then syncs on change
//! (no more often than the min sync period) and once every sync period, with backoff on
//! failure. Each period's tick checks the canaries first: a missing one (someone flushed the
//! tables) makes that sync full; otherwise the `Syncer` decides (partial, or full when the
//! last full sync is an hour old outside large-cluster mode), as kube-proxy does.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::Syncer;
use crate::flannel::subnet_env::SubnetEnv;
use crate::health::HealthState;
use crate::healthcheck::HealthCheckServers;
use crate::k8s::watch::{ChangeFeed, Snapshot, StateSource};
use crate::metrics::Metrics;
use crate::model::IpFamily;
use crate::model::NodeFacts;

/// Longest wait between retries after failed syncs.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The sync loop: the syncer and everything it reacts to. `run` drives it until shutdown.
pub struct SyncLoop {
    /// Renders and applies.
    pub syncer: Syncer,
    /// The cluster state (API watches or manifest files).
    pub source: Arc<dyn StateSource>,
    /// Changes since the last sync (network programming latency, counts).
    pub feed: Arc<ChangeFeed>,
    /// Bumped on every change of the source.
    pub changes: watch::Receiver<u64>,
    /// The healthCheckNodePort servers, kept in step after every successful sync.
    pub health_checks: Option<HealthCheckServers>,
    /// flannel's lease (`subnet.env`): a new one forces a full resync.
    pub flannel: Option<watch::Receiver<Option<SubnetEnv>>>,
}

/// The loop's state between iterations.
struct Timing {
    dirty: bool,
    force_full: bool,
    /// The next sync checks the canaries first (set by the periodic tick).
    check_canaries: bool,
    last_sync: Option<Instant>,
    /// The next periodic tick (canary check and sync), every sync period.
    next_tick: Instant,
    backoff: Duration,
}

/// What a wait ended with.
enum Wake {
    /// Sync (again).
    Sync,
    /// Shut down.
    Stop,
}

impl SyncLoop {
    /// Runs until `shutdown` (or until the sync thread dies). Rules stay in place when it
    /// returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let SyncLoop { syncer, source, feed, changes, health_checks, flannel } = self;
        let opts = syncer.options().clone();
        let queue =
            Queue { health: syncer.health.clone(), metrics: syncer.metrics.clone(), families: opts.families.clone() };
        let node = NodeEligibility { health: syncer.health.clone(), seen: false };
        let timing = Timing {
            dirty: true,
            force_full: true,
            check_canaries: false,
            last_sync: None,
            next_tick: Instant::now() + opts.sync_period,
            backoff: Duration::ZERO,
        };
        let mut driver = Driver {
            syncer: Some(syncer),
            source,
            feed,
            changes,
            health_checks,
            flannel,
            opts,
            queue,
            node,
            timing,
            health_bind_decided: false,
        };
        if driver.wait_for_first_list(&shutdown).await {
            driver.queue.all();
            let worker = SyncThread::start();
            while let Wake::Sync = driver.next(&worker, &shutdown).await {}
        }
        tracing::info!("sync loop stopped; rules left in place");
    }
}

/// The running loop.
struct Driver {
    /// `None` only while a sync runs on the sync thread (or after that thread died).
    syncer: Option<Syncer>,
    source: Arc<dyn StateSource>,
    feed: Arc<ChangeFeed>,
    changes: watch::Receiver<u64>,
    health_checks: Option<HealthCheckServers>,
    flannel: Option<watch::Receiver<Option<SubnetEnv>>>,
    opts: super::SyncOptions,
    queue: Queue,
    node: NodeEligibility,
    timing: Timing,
    /// The healthCheckNodePort servers' addresses were decided (at the first sync).
    health_bind_decided: bool,
}

impl Driver {
    /// Never program a partial view: waits until Services, endpoints and this Node have been
    /// listed. `false`: shut down meanwhile.
    async fn wait_for_first_list(&mut self, shutdown: &CancellationToken) -> bool {
        self.node.follow(self.source.node().as_ref());
        let mut logged_wait = false;
        while self.source.snapshot().is_none() {
            if !logged_wait {
                tracing::info!("waiting for the first list of Services, endpoints and this Node");
                logged_wait = true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = self.changes.changed() => self.node.follow(self.source.node().as_ref()),
            }
        }
        true
    }

    /// One step: a sync when one is due, else a wait for the next reason to sync.
    async fn next(&mut self, worker: &SyncThread, shutdown: &CancellationToken) -> Wake {
        if !self.timing.dirty {
            return self.wait_for_change(shutdown).await;
        }
        let t = &self.timing;
        let earliest = t.last_sync.map_or_else(Instant::now, |last| last + self.opts.min_sync_period.max(t.backoff));
        tokio::select! {
            _ = shutdown.cancelled() => return Wake::Stop,
            _ = sleep_until(earliest) => {}
        }
        self.changes.borrow_and_update();
        match self.source.snapshot() {
            Some(snapshot) => self.sync(Arc::new(snapshot), worker).await,
            None => Wake::Sync,
        }
    }

    /// Syncs `snapshot` on the sync thread and settles the timing.
    async fn sync(&mut self, snapshot: Arc<Snapshot>, worker: &SyncThread) -> Wake {
        let taken = self.feed.take();
        let forced = self.timing.force_full;
        let check_canaries = std::mem::take(&mut self.timing.check_canaries);
        self.timing.last_sync = Some(Instant::now());
        let Some(mut syncer) = self.syncer.take() else { return Wake::Stop };
        // A sync runs iptables-save/-restore and conntrack processes: keep it off the async
        // workers so /healthz, /metrics and the watchers stay responsive meanwhile.
        let snap = Arc::clone(&snapshot);
        let done = worker.run(move || {
            // A missing canary (a table flushed behind our back) makes this sync full.
            let full = forced || (check_canaries && syncer.canary_missing());
            let result = syncer.sync(&snap, &taken, full);
            (syncer, result, taken)
        });
        let result = match done.await {
            Ok((syncer, result, taken)) => {
                self.syncer = Some(syncer);
                if result.is_err() {
                    // Not programmed yet: the retry reports these changes (and their trigger
                    // times for the programming-latency histogram).
                    self.feed.put_back(taken);
                }
                result
            }
            Err(err) => {
                tracing::error!(error = %err, "the sync task died; stopping the sync loop (rules stay in place)");
                return Wake::Stop;
            }
        };
        let t = &mut self.timing;
        match result {
            Ok(_) => {
                (t.dirty, t.force_full, t.backoff) = (false, false, Duration::ZERO);
                self.sync_health_checks(&snapshot).await;
            }
            Err(err) => {
                t.backoff = (t.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF.min(self.opts.sync_period));
                t.force_full = true;
                tracing::error!(error = %err, retry_in_s = t.backoff.as_secs(), "sync failed; the previous rules stay in place");
            }
        }
        Wake::Sync
    }

    /// Keeps the healthCheckNodePort servers in step with what was just synced.
    async fn sync_health_checks(&mut self, snapshot: &Snapshot) {
        let Some(servers) = self.health_checks.as_mut() else { return };
        if !self.health_bind_decided {
            if let Some(syncer) = &self.syncer {
                let ips = syncer.health_check_bind_ips(snapshot);
                tracing::info!(bind_ips = ?ips, "healthCheckNodePort servers listen on these addresses");
                servers.set_bind_ips(ips);
                self.health_bind_decided = true;
            }
        }
        let family = self.opts.families.first().copied().unwrap_or_default();
        if let Ok(node) = self.opts.node.node_config(family, snapshot.node.as_ref(), self.opts.flannel.as_ref()) {
            servers.sync(&crate::healthcheck::desired(&snapshot.state, &node)).await;
        }
    }

    /// Waits for a change, a new flannel lease or the periodic tick.
    async fn wait_for_change(&mut self, shutdown: &CancellationToken) -> Wake {
        let flannel = &mut self.flannel;
        tokio::select! {
            _ = shutdown.cancelled() => return Wake::Stop,
            changed = self.changes.changed() => {
                if changed.is_err() {
                    return Wake::Stop;
                }
                self.timing.dirty = true;
                self.node.follow(self.source.node().as_ref());
                self.queue.all();
            }
            changed = async { flannel.as_mut()?.changed().await.ok() }, if flannel.is_some() => {
                match (changed, flannel.as_mut()) {
                    (Some(()), Some(rx)) => {
                        let env = rx.borrow_and_update().clone();
                        self.new_lease(env);
                    }
                    _ => *flannel = None,
                }
            }
            _ = sleep_until(self.timing.next_tick) => self.tick(),
        }
        Wake::Sync
    }

    /// The periodic tick: the next one is a sync period later; this one syncs after checking
    /// the canaries (a missing one makes the sync full, else it is partial unless the syncer
    /// finds a full one due).
    fn tick(&mut self) {
        self.timing.next_tick = Instant::now() + self.opts.sync_period;
        (self.timing.dirty, self.timing.check_canaries) = (true, true);
        self.queue.all();
    }

    /// A new flannel lease: everything is rendered again with it.
    fn new_lease(&mut self, env: Option<SubnetEnv>) {
        tracing::info!(networks = ?env.as_ref().map(|e| &e.networks), subnets = ?env.as_ref().map(|e| &e.subnets), "flannel lease changed; full resync");
        self.opts.flannel = env.clone();
        if let Some(syncer) = self.syncer.as_mut() {
            syncer.set_flannel(env);
        }
        (self.timing.dirty, self.timing.force_full) = (true, true);
        self.queue.all();
    }
}

/// Where a queued sync is reported: each programmed family's health and
/// `…_last_queued_timestamp_seconds`.
struct Queue {
    health: HealthState,
    metrics: Metrics,
    families: Vec<IpFamily>,
}

impl Queue {
    /// A change arrived that every programmed family must follow.
    fn all(&self) {
        let now = SystemTime::now();
        for &family in &self.families {
            self.health.queued(family, now);
            self.metrics.set_last_queued(family, super::unix_seconds(now));
        }
    }
}

/// Follows this node's Node object into `/healthz`'s node eligibility.
struct NodeEligibility {
    health: HealthState,
    /// The Node has been seen: its disappearance means it was deleted.
    seen: bool,
}

impl NodeEligibility {
    fn follow(&mut self, node: Option<&NodeFacts>) {
        let eligible = node_eligible(node, self.seen);
        self.seen |= node.is_some();
        self.health.set_node_eligible(eligible);
    }
}

/// Eligible unless the Node is leaving (deleted or tainted by the cluster autoscaler) or was
/// seen and is gone; a Node never seen (e.g. a name that matches none) counts as eligible.
pub(super) fn node_eligible(node: Option<&NodeFacts>, seen_before: bool) -> bool {
    node.map_or(!seen_before, NodeFacts::eligible)
}

/// The one OS thread every sync runs on. Not tokio's blocking pool: a sync allocates and frees
/// the whole ruleset (tens of MB at 10k services), and with the pool's changing threads glibc
/// served those from a different malloc arena each time, each arena keeping its freed pages
/// (RSS grew by ≈200 MB over six syncs at 10k services). One thread reuses one arena.
struct SyncThread {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl SyncThread {
    /// Starts the thread; must be called inside the runtime.
    fn start() -> SyncThread {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        // Syncs may start tasks (the userspace proxier's listeners): give the thread the
        // runtime's context, as the blocking pool had.
        let runtime = tokio::runtime::Handle::current();
        let spawned = std::thread::Builder::new().name("kubenat-sync".into()).spawn(move || {
            let _context = runtime.enter();
            while let Ok(job) = queue.recv() {
                job();
            }
        });
        if let Err(err) = spawned {
            // The job's result channel is dropped with it: `run` reports the sync as dead.
            tracing::error!(error = %err, "cannot start the sync thread");
        }
        SyncThread { jobs }
    }

    /// Runs `job` on the sync thread; `Err` when the thread is gone or the job panicked.
    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, &'static str> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs.send(job).map_err(|_| "the sync thread is gone")?;
        result.await.map_err(|_| "the sync job panicked")
    }
}
