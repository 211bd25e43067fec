//! The async driver around `Syncer`: waits for the first complete list, then syncs on change
//! (no more often than the min sync period), fully every sync period, with backoff on failure.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::Syncer;
use crate::flannel::subnet_env::SubnetEnv;
use crate::health::HealthState;
use crate::healthcheck::HealthCheckServers;
use crate::k8s::convert::NodeFacts;
use crate::k8s::watch::{ChangeFeed, StateSource};
use crate::metrics::Metrics;
use crate::model::IpFamily;

/// Longest wait between retries after failed syncs.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs the sync loop until `shutdown`. Rules stay in place when it returns.
pub async fn run(
    mut syncer: Syncer,
    source: Arc<dyn StateSource>,
    feed: Arc<ChangeFeed>,
    mut changes: watch::Receiver<u64>,
    mut health_checks: Option<HealthCheckServers>,
    mut flannel: Option<watch::Receiver<Option<SubnetEnv>>>,
    shutdown: CancellationToken,
) {
    let mut opts = syncer.options().clone();
    let queue =
        Queue { health: syncer.health.clone(), metrics: syncer.metrics.clone(), families: opts.families.clone() };
    let mut node = NodeEligibility { health: syncer.health.clone(), seen: false };
    node.follow(source.node().as_ref());
    // Never program a partial view: wait until Services, endpoints and this Node have been listed.
    let mut logged_wait = false;
    while source.snapshot().is_none() {
        if !logged_wait {
            tracing::info!("waiting for the first list of Services, endpoints and this Node");
            logged_wait = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changes.changed() => node.follow(source.node().as_ref()),
        }
    }
    queue.all();

    let worker = SyncThread::start();
    let mut dirty = true;
    let mut force_full = true;
    let mut last_sync: Option<Instant> = None;
    let mut next_full = Instant::now() + opts.sync_period;
    let mut backoff = Duration::ZERO;
    loop {
        if dirty {
            let earliest = last_sync.map_or_else(Instant::now, |t| t + opts.min_sync_period.max(backoff));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sleep_until(earliest) => {}
            }
            changes.borrow_and_update();
            let Some(snapshot) = source.snapshot() else { continue };
            let taken = feed.take();
            let full = force_full || Instant::now() >= next_full;
            last_sync = Some(Instant::now());
            // A sync runs iptables-save/-restore and conntrack processes: keep it off the async
            // workers so /healthz, /metrics and the watchers stay responsive meanwhile.
            let snap = snapshot.clone();
            let (returned, result) = match worker
                .run(move || {
                    let result = syncer.sync(&snap, &taken, full);
                    (syncer, result)
                })
                .await
            {
                Ok(done) => done,
                Err(err) => {
                    tracing::error!(error = %err, "the sync task died; stopping the sync loop (rules stay in place)");
                    return;
                }
            };
            syncer = returned;
            match result {
                Ok(_) => {
                    dirty = false;
                    force_full = false;
                    backoff = Duration::ZERO;
                    if full {
                        next_full = Instant::now() + opts.sync_period;
                    }
                    if let Some(servers) = health_checks.as_mut() {
                        let node = opts.node.node_config(
                            opts.families.first().copied().unwrap_or_default(),
                            snapshot.node.as_ref(),
                            opts.flannel.as_ref(),
                        );
                        if let Ok(node) = node {
                            servers.sync(&crate::healthcheck::desired(&snapshot.state, &node)).await;
                        }
                    }
                }
                Err(err) => {
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF.min(opts.sync_period));
                    force_full = true;
                    tracing::error!(error = %err, retry_in_s = backoff.as_secs(), "sync failed; the previous rules stay in place");
                }
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = changes.changed() => {
                if changed.is_err() { break; }
                dirty = true;
                node.follow(source.node().as_ref());
                queue.all();
            }
            changed = async { flannel.as_mut()?.changed().await.ok() }, if flannel.is_some() => {
                match (changed, flannel.as_mut()) {
                    (Some(()), Some(rx)) => {
                        let env = rx.borrow_and_update().clone();
                        tracing::info!(networks = ?env.as_ref().map(|e| &e.networks), subnets = ?env.as_ref().map(|e| &e.subnets), "flannel lease changed; full resync");
                        opts.flannel = env.clone();
                        syncer.set_flannel(env);
                        dirty = true;
                        force_full = true;
                        queue.all();
                    }
                    _ => flannel = None,
                }
            }
            _ = sleep_until(next_full) => {
                dirty = true;
                if syncer.canary_missing() {
                    tracing::warn!("KUBE-PROXY-CANARY is gone: the tables were flushed; restoring every rule");
                }
                queue.all();
            }
        }
    }
    tracing::info!("sync loop stopped; rules left in place");
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
