//! The "unreachable" switch: a listener wrapper that, while the server is unreachable, closes
//! every new connection as soon as it is accepted, and connections whose outage generation is
//! stale fail their next read or write — so kept-alive client connections die too, like a
//! network partition that the client notices on its next request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Pause after a failed `accept` (e.g. out of descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Whether the server is reachable, and which outage generation connections belong to.
#[derive(Debug, Default)]
pub struct Reachability {
    unreachable: AtomicBool,
    /// Bumped when an outage starts: every connection accepted before is cut.
    generation: AtomicU64,
    /// Connections closed unserved because of an outage.
    refused: AtomicU64,
}

impl Reachability {
    /// Starts (`true`) or ends (`false`) an outage.
    pub fn set_unreachable(&self, unreachable: bool) {
        if unreachable {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }

    /// Whether an outage is on.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::SeqCst)
    }

    /// Connections closed unserved so far because of an outage.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// A TCP listener that honours [`Reachability`].
#[derive(Debug)]
pub struct GatedListener {
    inner: TcpListener,
    gate: Arc<Reachability>,
}

impl GatedListener {
    /// Wraps `inner`.
    pub fn new(inner: TcpListener, gate: Arc<Reachability>) -> GatedListener {
        GatedListener { inner, gate }
    }
}

impl axum::serve::Listener for GatedListener {
    type Io = GatedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GatedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                // Unreachable: the connection is closed at once (dropped), never served.
                Ok(_) if self.gate.is_unreachable() => {
                    self.gate.refused.fetch_add(1, Ordering::SeqCst);
                }
                Ok((stream, addr)) => {
                    let generation = self.gate.generation();
                    return (GatedStream { inner: stream, gate: self.gate.clone(), generation }, addr);
                }
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection that fails once an outage started after it was accepted.
#[derive(Debug)]
pub struct GatedStream {
    inner: TcpStream,
    gate: Arc<Reachability>,
    generation: u64,
}

impl GatedStream {
    fn cut(&self) -> Option<io::Error> {
        (self.gate.generation() != self.generation)
            .then(|| io::Error::new(io::ErrorKind::ConnectionReset, "test apiserver: unreachable"))
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(err) = self.cut() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(err) = self.cut() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
