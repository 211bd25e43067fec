//! The healthz and metrics servers, bound like kube-proxy binds them: a bind failure is fatal
//! with `--bind-address-hard-fail`, else logged and retried every 5 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::DaemonConfig;
use crate::health::{self, HealthState, ScrapeHook, ServicesView};

/// How long kube-proxy waits before binding a healthz/metrics address again.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// A server address that could not be bound with `--bind-address-hard-fail` set.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {addr} (--bind-address-hard-fail is set)")]
pub struct BindError {
    /// The flag that sets the address.
    pub flag: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// Starts the healthz and metrics servers (`/configz` serves the effective configuration;
/// `before_scrape` runs before each `/metrics`; `/debug/services` serves `services`).
pub async fn start_servers(
    config: &DaemonConfig,
    (health, services): (&HealthState, &ServicesView),
    (registry, before_scrape): (prometheus_client::registry::Registry, Option<ScrapeHook>),
    shutdown: &CancellationToken,
) -> Result<(), BindError> {
    let hard_fail = config.effective.config.bind_address_hard_fail;
    if let Some(addr) = config.healthz {
        let (state, stop) = (health.clone(), shutdown.clone());
        let serve = move |listener| health::serve_healthz(listener, state, stop);
        start_server("--healthz-bind-address", addr, hard_fail, shutdown.clone(), serve).await?;
    }
    if let Some(addr) = config.metrics {
        let effective = serde_json::to_value(&config.effective.config).unwrap_or_default();
        let configz = Arc::new(serde_json::json!({ "kubeproxy.config.k8s.io": effective }));
        let server = health::MetricsServer {
            registry: Arc::new(registry),
            before_scrape,
            proxy_mode: config.mode.as_str(),
            configz,
            services: services.clone(),
        };
        let stop = shutdown.clone();
        let serve = move |listener| health::serve_metrics(listener, server, stop);
        start_server("--metrics-bind-address", addr, hard_fail, shutdown.clone(), serve).await?;
    }
    Ok(())
}

/// Binds `addr` and runs `serve` on it in a task.
async fn start_server<F, Fut>(
    flag: &'static str,
    addr: SocketAddr,
    hard_fail: bool,
    shutdown: CancellationToken,
    serve: F,
) -> Result<(), BindError>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send,
{
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tokio::spawn(async move {
                serve(listener).await;
            });
        }
        Err(source) if hard_fail => return Err(BindError { flag, addr, source }),
        Err(err) => {
            tracing::warn!(%addr, error = %err, "{flag}: cannot bind; retrying every 5 s (--bind-address-hard-fail=true makes this fatal)");
            tokio::spawn(retry_bind(flag, addr, shutdown, serve));
        }
    }
    Ok(())
}

/// Binds `addr` every 5 s until it works (then serves) or the daemon stops.
async fn retry_bind<F, Fut>(flag: &'static str, addr: SocketAddr, shutdown: CancellationToken, serve: F)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(BIND_RETRY) => {}
            _ = shutdown.cancelled() => return,
        }
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "{flag}: bound after retrying");
                serve(listener).await;
                return;
            }
            Err(err) => tracing::warn!(%addr, error = %err, "{flag}: still cannot bind; retrying in 5 s"),
        }
    }
}
