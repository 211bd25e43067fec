//! UDP relay for one service port: a session per client address, each with its own connected
//! socket to the chosen backend, expiring when idle. Does not choose endpoints or bind sockets.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{choose, SharedBalancer};

/// kube-proxy's default `--udp-timeout`.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_millis(250);

/// Largest UDP payload relayed (bigger is impossible over IPv4/IPv6 without jumbograms).
pub const MAX_DATAGRAM: usize = 65_535;

/// Client datagrams queued per session before new ones are dropped.
const SESSION_QUEUE: usize = 64;

/// Why a session could not be opened for a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service port has no endpoints; the datagram is dropped (retryable later).
    #[error("no endpoints")]
    NoEndpoints,
    /// Binding or connecting the session socket to the backend failed (retryable).
    #[error("open session socket to {endpoint}")]
    Socket {
        /// The backend chosen.
        endpoint: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Relays datagrams on `socket` until `shutdown`; at most `max_sessions` clients at once (new
/// clients beyond that are dropped with a warning). Sessions close after `idle_timeout` without a
/// datagram in either direction, and all close on shutdown.
pub async fn serve_udp(
    socket: UdpSocket,
    balancer: SharedBalancer,
    idle_timeout: Duration,
    max_sessions: usize,
    shutdown: CancellationToken,
) {
    let mut proxy = UdpProxy {
        service: Arc::new(socket),
        balancer,
        sessions: HashMap::new(),
        idle_timeout,
        max_sessions,
        shutdown: shutdown.clone(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = proxy.service.recv_from(&mut buf) => received,
        };
        match received {
            Ok((len, client)) => proxy.dispatch(client, buf[..len].to_vec()).await,
            // ICMP errors from earlier sends surface here on some platforms; keep serving.
            Err(err) => debug!(error = %err, "udp receive failed"),
        }
    }
    debug!("udp proxy stopped");
}

/// The state of one UDP proxy socket: its sessions by client address.
struct UdpProxy {
    service: Arc<UdpSocket>,
    balancer: SharedBalancer,
    sessions: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    idle_timeout: Duration,
    max_sessions: usize,
    shutdown: CancellationToken,
}

impl UdpProxy {
    /// Hands a client datagram to its session, opening one if it has none (or it expired).
    async fn dispatch(&mut self, client: SocketAddr, datagram: Vec<u8>) {
        let datagram = match self.sessions.get(&client) {
            None => datagram,
            Some(tx) => match tx.try_send(datagram) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(%client, "udp session queue full, datagram dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(datagram)) => {
                    self.sessions.remove(&client);
                    datagram
                }
            },
        };
        if self.sessions.len() >= self.max_sessions {
            self.sessions.retain(|_, tx| !tx.is_closed());
            if self.sessions.len() >= self.max_sessions {
                warn!(%client, max_sessions = self.max_sessions, "udp session table full, datagram dropped");
                return;
            }
        }
        let backend = match open_backend(client, &self.balancer).await {
            Ok(backend) => backend,
            Err(err) => {
                debug!(%client, error = %err, "udp datagram dropped");
                return;
            }
        };
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        // A fresh channel always has room for the first datagram.
        let _ = tx.try_send(datagram);
        self.sessions.insert(client, tx);
        let session = Session { client, backend, service: self.service.clone(), idle_timeout: self.idle_timeout };
        tokio::spawn(session.run(rx, self.shutdown.clone()));
    }
}

/// A socket connected to the backend `balancer` picks for `client`.
async fn open_backend(client: SocketAddr, balancer: &SharedBalancer) -> Result<UdpSocket> {
    let endpoint = choose(balancer, client.ip(), false).ok_or(Error::NoEndpoints)?;
    let local = match endpoint.ip() {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).await.map_err(|source| Error::Socket { endpoint, source })?;
    socket.connect(endpoint).await.map_err(|source| Error::Socket { endpoint, source })?;
    debug!(%client, %endpoint, "udp session opened");
    Ok(socket)
}

/// One client's flow: forwards queued client datagrams to the backend and backend replies to the
/// client through the service socket.
struct Session {
    client: SocketAddr,
    backend: UdpSocket,
    service: Arc<UdpSocket>,
    idle_timeout: Duration,
}

impl Session {
    async fn run(self, mut from_client: mpsc::Receiver<Vec<u8>>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut deadline = Instant::now() + self.idle_timeout;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                datagram = from_client.recv() => {
                    let Some(datagram) = datagram else { break };
                    if let Err(err) = self.backend.send(&datagram).await {
                        debug!(client = %self.client, error = %err, "udp send to backend failed");
                        break;
                    }
                }
                reply = self.backend.recv(&mut buf) => {
                    let len = match reply {
                        Ok(len) => len,
                        Err(err) => {
                            // e.g. ECONNREFUSED from an ICMP port unreachable: the next datagram
                            // opens a new session and so tries the next endpoint.
                            debug!(client = %self.client, error = %err, "udp receive from backend failed");
                            break;
                        }
                    };
                    if let Err(err) = self.service.send_to(&buf[..len], self.client).await {
                        debug!(client = %self.client, error = %err, "udp reply to client failed");
                    }
                }
            }
            deadline = Instant::now() + self.idle_timeout;
        }
        from_client.close();
        debug!(client = %self.client, "udp session closed");
    }
}
