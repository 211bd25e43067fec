//! The proxy's own HTTP servers: `/healthz` + `/livez` (kube-proxy's healthz server, default
//! `0.0.0.0:10256`) and the metrics port (`/metrics`, `/proxyMode`, `/healthz`, `/configz`,
//! default `127.0.0.1:10249`, which also serves kubenat's `/debug/services`). Bodies are built
//! by pure functions; only `serve_*` do I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::services::{json as services_json, ServicesView};
use super::{Error, HealthState, ProxyHealth, Result};
use crate::metrics::exposition::{self, Format};

/// One family's entry in `status` (kube-proxy's `ProxierHealth`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FamilyBody {
    last_updated: String,
    healthy: bool,
}

/// The `/healthz` and `/livez` JSON (kube-proxy's `ProxyHealth`, same field order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthBody {
    last_updated: String,
    current_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_eligible: Option<bool>,
    healthy: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    status: BTreeMap<&'static str, FamilyBody>,
}

/// Go's `time.Time` JSON form (RFC 3339, UTC, fraction without trailing zeros); Go's zero time
/// for "never" (or a time `humantime` can't print).
pub(super) fn go_time(t: Option<SystemTime>) -> String {
    const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let Some(d) = t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).filter(|d| d.as_secs() <= MAX_SECS)
    else {
        return GO_ZERO_TIME.to_string();
    };
    let full = humantime::format_rfc3339_nanos(SystemTime::UNIX_EPOCH + d).to_string();
    match full.strip_suffix('Z').and_then(|s| s.split_once('.')) {
        Some((secs, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{fraction}Z")
            }
        }
        None => full,
    }
}

/// Status code and JSON body of `/healthz` (`healthz = true`: node eligibility counts and is
/// reported) or `/livez`. When healthy, `lastUpdated` is the current time, as kube-proxy keeps
/// it for compatibility with releases that updated it on every loop.
pub(super) fn health_reply(health: &ProxyHealth, healthz: bool) -> (StatusCode, String) {
    let healthy = health.healthy && (!healthz || health.node_eligible);
    let last = if healthy { Some(health.current_time) } else { health.last_updated };
    let status = health
        .families
        .iter()
        .map(|(family, f)| {
            (family.api_name(), FamilyBody { last_updated: go_time(f.last_updated), healthy: f.healthy })
        })
        .collect();
    let body = HealthBody {
        last_updated: go_time(last),
        current_time: go_time(Some(health.current_time)),
        node_eligible: healthz.then_some(health.node_eligible),
        healthy: health.healthy,
        status,
    };
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // Serializing strings and booleans cannot fail; an empty object would still be JSON.
    (code, serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_string()))
}

/// A response with `content_type` and kube-proxy's `nosniff`.
fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (code, headers, body).into_response()
}

async fn healthz(State(state): State<HealthState>) -> Response {
    let (code, body) = health_reply(&state.health(state.now()), true);
    if let Some(m) = &state.metrics {
        m.inc_healthz(code.as_u16());
    }
    reply(code, "application/json", body)
}

async fn livez(State(state): State<HealthState>) -> Response {
    let (code, body) = health_reply(&state.health(state.now()), false);
    if let Some(m) = &state.metrics {
        m.inc_livez(code.as_u16());
    }
    reply(code, "application/json", body)
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

/// Work done before each scrape encodes the registry (kube-proxy reads its nfacct counters
/// then); blocking work is fine, it runs off the async workers.
#[derive(Clone)]
pub struct ScrapeHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ScrapeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeHook")
    }
}

/// What the metrics port serves.
#[derive(Debug, Clone)]
pub struct MetricsServer {
    /// Every metric, encoded on each scrape.
    pub registry: Arc<Registry>,
    /// Run before each scrape.
    pub before_scrape: Option<ScrapeHook>,
    /// `/proxyMode`'s body, e.g. `iptables`.
    pub proxy_mode: &'static str,
    /// `/configz`'s body: `{"kubeproxy.config.k8s.io": {…KubeProxyConfiguration…}}`.
    pub configz: Arc<serde_json::Value>,
    /// What `/debug/services` serves (the syncer publishes it).
    pub services: ServicesView,
}

async fn metrics(State(server): State<MetricsServer>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let format = Format::negotiate(accept);
    if let Some(ScrapeHook(hook)) = server.before_scrape.clone() {
        let _ = tokio::task::spawn_blocking(move || hook()).await;
    }
    let body = exposition::encode(&server.registry, format);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()))], body).into_response()
}

async fn debug_services(State(server): State<MetricsServer>) -> Response {
    let (code, body) = services_json::list_reply(&server.services.current());
    reply(code, "application/json", body)
}

async fn debug_service(
    State(server): State<MetricsServer>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let (code, body) = services_json::service_reply(&server.services.current(), &namespace, &name);
    reply(code, "application/json", body)
}

fn plain(body: String) -> Response {
    reply(StatusCode::OK, "text/plain; charset=utf-8", body)
}

/// Serves, until `shutdown` is cancelled: `/metrics` (Prometheus text, or OpenMetrics when the
/// scraper's `Accept` asks for it), `/proxyMode`, `/healthz` and `/healthz/ping` (`ok`, as
/// kube-proxy's generic healthz handler), `/configz` (JSON) and kubenat's `/debug/services`
/// and `/debug/services/{namespace}/{name}` (JSON, see `health::services`).
pub async fn serve_metrics(listener: TcpListener, server: MetricsServer, shutdown: CancellationToken) -> Result<()> {
    let mode = server.proxy_mode;
    let configz = server.configz.to_string();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/proxyMode", get(move || async move { plain(mode.to_string()) }))
        .route("/healthz", get(|| async { plain("ok".to_string()) }))
        .route("/healthz/ping", get(|| async { plain("ok".to_string()) }))
        .route("/debug/services", get(debug_services))
        .route("/debug/services/{namespace}/{name}", get(debug_service))
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
