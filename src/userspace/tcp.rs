//! TCP relay for one service port: accept, dial a backend with retries, relay both ways
//! (spliced through the shared pipe pool when there is one, else copied through buffers).
//! Does not choose endpoints (the balancer does) nor bind the listener (the caller does).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::pipes::{PipePool, PoolConfig};
use super::{choose, splice, SharedBalancer};

/// Timeouts of the successive dial attempts (kube-proxy's userspace proxier).
pub const DIAL_TIMEOUTS: [Duration; 4] =
    [Duration::from_millis(250), Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)];

/// Pause after a failed `accept` (e.g. EMFILE) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Why a client connection could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service port has no endpoints; the client connection is closed (retryable later).
    #[error("no endpoints")]
    NoEndpoints,
    /// Every dial attempt failed or timed out (retryable).
    #[error("dial failed after {attempts} attempts, last to {endpoint}")]
    Dial {
        /// Attempts made.
        attempts: usize,
        /// The last endpoint tried.
        endpoint: SocketAddr,
        /// The last attempt's error.
        #[source]
        source: io::Error,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Per-direction copy buffer of the buffered relay: 64 KiB moves a bulk stream in far fewer
/// syscalls than tokio's 8 KiB default.
const COPY_BUFFER: usize = 64 * 1024;

/// Bounds and relay settings for the TCP proxy sockets.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most client connections relayed at once per proxy socket; further clients wait in the
    /// listen backlog.
    pub max_connections: usize,
    /// Pipes for the zero-copy relay, shared by every proxy socket of the process; `None`
    /// copies through buffers only.
    pub pipes: Option<Arc<PipePool>>,
}

impl Default for Limits {
    /// 32,768 connections per proxy socket and a fresh default pipe pool (clone the result to
    /// share the pool).
    fn default() -> Self {
        Limits { max_connections: 32_768, pipes: Some(Arc::new(PipePool::new(PoolConfig::default()))) }
    }
}

/// Accepts on `listener` until `shutdown`, relaying each connection on its own task.
/// Connections already accepted keep running after shutdown until either side closes.
pub async fn serve_tcp(listener: TcpListener, balancer: SharedBalancer, limits: Limits, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // semaphore closed: never happens, we own it
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                let balancer = balancer.clone();
                let pipes = limits.pipes.clone();
                tokio::spawn(async move {
                    if let Err(err) = relay(client, peer, &balancer, pipes.as_deref()).await {
                        debug!(%peer, error = %err, "tcp connection not relayed");
                    }
                    drop(permit);
                });
            }
            Err(err) => {
                warn!(error = %err, "tcp accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
    debug!("tcp proxy stopped accepting");
}

/// Relays one client connection; dropping `client` on error closes it.
async fn relay(
    mut client: TcpStream,
    peer: SocketAddr,
    balancer: &SharedBalancer,
    pipes: Option<&PipePool>,
) -> Result<()> {
    let mut backend = dial(peer, balancer).await?;
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let moved = match pipes {
        Some(pool) => splice::relay(client, backend, pool).await,
        None => tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, COPY_BUFFER, COPY_BUFFER).await,
    };
    match moved {
        Ok((up, down)) => debug!(%peer, up, down, "tcp connection closed"),
        Err(err) => debug!(%peer, error = %err, "tcp connection ended with error"),
    }
    Ok(())
}

/// Dials a backend for `peer`: up to four attempts with growing timeouts; affinity is bypassed
/// after the first failure so the next round-robin endpoint is tried.
pub async fn dial(peer: SocketAddr, balancer: &SharedBalancer) -> Result<TcpStream> {
    let mut last = None;
    for (attempt, timeout) in DIAL_TIMEOUTS.iter().enumerate() {
        let endpoint = choose(balancer, peer.ip(), attempt > 0).ok_or(Error::NoEndpoints)?;
        let err = match tokio::time::timeout(*timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => err,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}")),
        };
        debug!(%peer, %endpoint, attempt, error = %err, "tcp dial failed");
        last = Some((endpoint, err));
    }
    match last {
        Some((endpoint, source)) => Err(Error::Dial { attempts: DIAL_TIMEOUTS.len(), endpoint, source }),
        None => Err(Error::NoEndpoints),
    }
}
