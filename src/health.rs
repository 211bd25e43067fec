//! The proxy's own HTTP servers: `/healthz` + `/livez` (kube-proxy's healthz server, default
//! `0.0.0.0:10256`) and the metrics port (`/metrics`, `/proxyMode`, `/healthz`, `/configz`,
//! default `127.0.0.1:10249`). Per-service
//! healthCheckNodePort servers are `healthcheck`; the metrics themselves are `metrics`.
//!
//! Health follows kube-proxy's ProxyHealthServer: a queued change that is not applied within
//! `health_timeout` (2 × sync period) makes the proxy unhealthy; with nothing pending (also
//! before the first sync) it is healthy. kube-proxy ≥1.31 keeps one pending/updated pair per IP
//! family; kubenat syncs both families in one pass, so one pair is enough.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::exposition::{self, Format};
use crate::metrics::Metrics;

/// Errors of the health and metrics servers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP server stopped with an I/O error (accept loop). Not retryable in place: the
    /// caller decides whether to bind again.
    #[error("{server} server failed")]
    Serve {
        /// `healthz` or `metrics`.
        server: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where "now" comes from (the system clock, or a test's).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Debug, Clone, Copy)]
struct Times {
    last_updated: Option<SystemTime>,
    oldest_pending: Option<SystemTime>,
    node_eligible: bool,
}

/// Shared proxy health: the syncer reports `queued`/`updated`, the servers read it.
/// Cheap to clone (`Arc`s inside).
#[derive(Clone)]
pub struct HealthState {
    times: Arc<Mutex<Times>>,
    timeout: Duration,
    clock: Clock,
    metrics: Option<Metrics>,
}

impl fmt::Debug for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthState").field("times", &self.times()).field("timeout", &self.timeout).finish()
    }
}

/// One health verdict at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthStatus {
    /// No change has been pending for `health_timeout` or longer.
    pub healthy: bool,
    /// The last successful sync (`None` before the first one).
    pub last_updated: Option<SystemTime>,
    /// The instant the verdict is for.
    pub current_time: SystemTime,
    /// The node is not being deleted or drained by the cluster autoscaler.
    pub node_eligible: bool,
}

impl HealthState {
    /// Healthy-at-start state with the system clock; `health_timeout` is kube-proxy's
    /// `2 × --iptables-sync-period`.
    pub fn new(health_timeout: Duration) -> Self {
        HealthState {
            times: Arc::new(Mutex::new(Times { last_updated: None, oldest_pending: None, node_eligible: true })),
            timeout: health_timeout,
            clock: Arc::new(SystemTime::now),
            metrics: None,
        }
    }

    /// Uses `clock` for the servers' "now" (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Counts `/healthz` and `/livez` answers in `kubeproxy_proxy_{healthz,livez}_total{code}`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn times(&self) -> Times {
        *self.times.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Times)) {
        f(&mut self.times.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The clock's current time.
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// A change arrived that needs a sync. Only the oldest pending change counts.
    pub fn queued(&self, now: SystemTime) {
        self.update(|t| {
            t.oldest_pending.get_or_insert(now);
        });
    }

    /// A sync succeeded: nothing is pending any more.
    pub fn updated(&self, now: SystemTime) {
        self.update(|t| {
            t.oldest_pending = None;
            t.last_updated = Some(now);
        });
    }

    /// Whether the node may receive traffic (false when it is being deleted or is tainted
    /// `ToBeDeletedByClusterAutoscaler`). Affects `/healthz` only, never `/livez`.
    pub fn set_node_eligible(&self, eligible: bool) {
        self.update(|t| t.node_eligible = eligible);
    }

    /// The verdict at `now` (ignores node eligibility in `healthy`, as kube-proxy's
    /// `IsHealthy`).
    pub fn status(&self, now: SystemTime) -> HealthStatus {
        let t = self.times();
        let healthy = match t.oldest_pending {
            None => true,
            // A pending time in the future (clock stepped back) is not late.
            Some(queued) => now.duration_since(queued).map_or(true, |age| age < self.timeout),
        };
        HealthStatus { healthy, last_updated: t.last_updated, current_time: now, node_eligible: t.node_eligible }
    }

    /// Proxy health at the clock's current time.
    pub fn is_healthy(&self) -> bool {
        self.status(self.now()).healthy
    }
}

/// RFC 3339 with nanoseconds; Go's zero time for "never" (or a time `humantime` can't print).
fn rfc3339(t: Option<SystemTime>) -> String {
    const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    match t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        Some(d) if d.as_secs() <= MAX_SECS => humantime::format_rfc3339_nanos(SystemTime::UNIX_EPOCH + d).to_string(),
        _ => GO_ZERO_TIME.to_string(),
    }
}

/// A JSON response with kube-proxy's headers.
fn json(status: StatusCode, body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (status, headers, body).into_response()
}

/// Status code and `lastUpdated` as kube-proxy reports them: when healthy, `lastUpdated` is
/// the current time (compatibility with releases that updated it on every loop).
fn verdict(status: &HealthStatus, healthy: bool) -> (StatusCode, String) {
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let last = if healthy { Some(status.current_time) } else { status.last_updated };
    (code, rfc3339(last))
}

async fn healthz(State(state): State<HealthState>) -> Response {
    let status = state.status(state.now());
    let (code, last) = verdict(&status, status.healthy && status.node_eligible);
    if let Some(m) = &state.metrics {
        m.inc_healthz(code.as_u16());
    }
    let now = rfc3339(Some(status.current_time));
    let body =
        format!(r#"{{"lastUpdated": "{last}","currentTime": "{now}", "nodeEligible": {}}}"#, status.node_eligible);
    json(code, body)
}

async fn livez(State(state): State<HealthState>) -> Response {
    let status = state.status(state.now());
    let (code, last) = verdict(&status, status.healthy);
    if let Some(m) = &state.metrics {
        m.inc_livez(code.as_u16());
    }
    let now = rfc3339(Some(status.current_time));
    json(code, format!(r#"{{"lastUpdated": "{last}","currentTime": "{now}"}}"#))
}

/// Serves `/healthz` and `/livez` on `listener` until `shutdown` is cancelled.
pub async fn serve_healthz(listener: TcpListener, state: HealthState, shutdown: CancellationToken) -> Result<()> {
    let router = Router::new().route("/healthz", get(healthz)).route("/livez", get(livez)).with_state(state);
    tracing::info!(addr = ?listener.local_addr().ok(), "healthz server listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| Error::Serve { server: "healthz", source })
}

/// A response with `content_type` and kube-proxy's `nosniff`.
fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (code, headers, body).into_response()
}

/// What the metrics port serves.
#[derive(Debug, Clone)]
pub struct MetricsServer {
    /// Every metric, encoded on each scrape.
    pub registry: Arc<Registry>,
    /// `/proxyMode`'s body, e.g. `iptables`.
    pub proxy_mode: &'static str,
    /// `/configz`'s body: `{"kubeproxy.config.k8s.io": {…KubeProxyConfiguration…}}`.
    pub configz: Arc<serde_json::Value>,
}

async fn metrics(State(server): State<MetricsServer>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let format = Format::negotiate(accept);
    let body = exposition::encode(&server.registry, format);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()))], body).into_response()
}

fn plain(body: String) -> Response {
    reply(StatusCode::OK, "text/plain; charset=utf-8", body)
}

/// Serves, until `shutdown` is cancelled: `/metrics` (Prometheus text, or OpenMetrics when the
/// scraper's `Accept` asks for it), `/proxyMode`, `/healthz` and `/healthz/ping` (`ok`, as
/// kube-proxy's generic healthz handler) and `/configz` (JSON).
pub async fn serve_metrics(listener: TcpListener, server: MetricsServer, shutdown: CancellationToken) -> Result<()> {
    let mode = server.proxy_mode;
    let configz = server.configz.to_string();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/proxyMode", get(move || async move { plain(mode.to_string()) }))
        .route("/healthz", get(|| async { plain("ok".to_string()) }))
        .route("/healthz/ping", get(|| async { plain("ok".to_string()) }))
        .route(
            "/configz",
            get(move || {
                let body = configz.clone();
                async move { reply(StatusCode::OK, "application/json", body) }
            }),
        )
        .with_state(server);
    tracing::info!(addr = ?listener.local_addr().ok(), proxy_mode = mode, "metrics server listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| Error::Serve { server: "metrics", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn healthy_at_start_and_while_nothing_is_pending() {
        let h = HealthState::new(TIMEOUT);
        assert!(h.status(at(0)).healthy);
        assert!(h.status(at(10_000)).healthy, "no change queued: never late");
        h.updated(at(5));
        assert!(h.status(at(10_000)).healthy, "idle after a sync stays healthy");
        assert_eq!(h.status(at(10_000)).last_updated, Some(at(5)));
    }

    #[test]
    fn pending_change_turns_unhealthy_after_timeout() {
        let h = HealthState::new(TIMEOUT);
        h.queued(at(100));
        assert!(h.status(at(159)).healthy, "59 s pending: not late yet");
        assert!(!h.status(at(160)).healthy, "60 s pending: late");
        h.updated(at(161));
        assert!(h.status(at(500)).healthy, "a successful sync clears the pending change");
    }

    #[test]
    fn only_the_oldest_pending_change_counts() {
        let h = HealthState::new(TIMEOUT);
        h.queued(at(0));
        h.queued(at(50));
        assert!(!h.status(at(61)).healthy, "the later queue must not reset the clock");
        h.updated(at(62));
        h.queued(at(70));
        assert!(h.status(at(129)).healthy);
    }

    #[test]
    fn stuck_before_the_first_sync_is_unhealthy() {
        let h = HealthState::new(TIMEOUT);
        h.queued(at(0));
        let s = h.status(at(120));
        assert!(!s.healthy);
        assert_eq!(s.last_updated, None);
        assert_eq!(rfc3339(s.last_updated), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn clock_stepping_back_is_not_late() {
        let h = HealthState::new(TIMEOUT);
        h.queued(at(100));
        assert!(h.status(at(0)).healthy);
    }

    #[test]
    fn node_eligibility_is_separate_from_proxy_health() {
        let h = HealthState::new(TIMEOUT);
        h.set_node_eligible(false);
        let s = h.status(at(0));
        assert!(s.healthy && !s.node_eligible);
        let (code, _) = verdict(&s, s.healthy && s.node_eligible);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        let (code, _) = verdict(&s, s.healthy);
        assert_eq!(code, StatusCode::OK);
    }

    #[test]
    fn last_updated_is_now_when_healthy() {
        let h = HealthState::new(TIMEOUT);
        h.updated(at(1));
        h.queued(at(2));
        let (code, last) = verdict(&h.status(at(3)), true);
        assert_eq!((code, last.as_str()), (StatusCode::OK, "2023-11-14T22:13:23.000000000Z"));
        let s = h.status(at(100));
        let (code, last) = verdict(&s, s.healthy);
        assert_eq!((code, last.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "2023-11-14T22:13:21.000000000Z"));
    }

    #[test]
    fn injected_clock_drives_is_healthy() {
        let now = Arc::new(Mutex::new(at(0)));
        let clock_now = now.clone();
        let h = HealthState::new(TIMEOUT).with_clock(Arc::new(move || *clock_now.lock().unwrap()));
        h.queued(at(0));
        assert!(h.is_healthy());
        *now.lock().unwrap() = at(61);
        assert!(!h.is_healthy());
    }
}
