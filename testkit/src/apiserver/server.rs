//! The server's thread: enter the network namespace (if any) on that thread only, bind
//! 127.0.0.1:0 there, and run a current-thread tokio runtime serving axum until shutdown.
//! Sockets keep the namespace they were created in, so nothing else needs to be inside it.

use std::fs::File;
use std::future::IntoFuture;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::gate::GatedListener;
use super::tls::{TlsIdentity, TlsListener};
use super::{http, ServerConfig, Shared};

/// After shutdown starts, connections get this long to finish before the runtime is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long `start` waits for the thread to bind.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawns the server thread; returns once the listener is bound (or binding failed).
pub fn spawn(config: &ServerConfig) -> io::Result<(SocketAddr, Arc<Shared>, JoinHandle<()>)> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let netns = config.netns.clone();
    let bookmark_interval = config.bookmark_interval;
    let tls = if config.tls { Some(TlsIdentity::generate()?) } else { None };
    let config = config.clone();
    let thread = std::thread::Builder::new().name("test-apiserver".into()).spawn(move || {
        let bound = bind(netns.as_deref()).and_then(|listener| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let shared = Arc::new(Shared::new(listener.local_addr()?, &config, tls));
            Ok((listener, runtime, shared))
        });
        let (listener, runtime, shared) = match bound {
            Ok(bound) => bound,
            Err(error) => {
                let _ = ready_tx.send(Err(error));
                return;
            }
        };
        let _ = ready_tx.send(Ok(shared.clone()));
        runtime.block_on(serve(listener, shared, bookmark_interval));
    })?;
    let shared = ready_rx
        .recv_timeout(START_TIMEOUT)
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test apiserver thread did not start"))??;
    Ok((shared.addr, shared, thread))
}

/// Binds 127.0.0.1:0, first moving this thread into network namespace `netns` when given.
fn bind(netns: Option<&str>) -> io::Result<TcpListener> {
    if let Some(name) = netns {
        let path = format!("/var/run/netns/{name}");
        let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("open {path}: {e}")))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| io::Error::other(format!("setns {path}: {e}")))?;
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves until `shared.shutdown` is set, then drains for at most [`SHUTDOWN_GRACE`].
async fn serve(listener: TcpListener, shared: Arc<Shared>, bookmark_interval: Option<Duration>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("test apiserver: cannot register listener: {error}");
            return;
        }
    };
    if let Some(interval) = bookmark_interval {
        tokio::spawn(send_bookmarks(shared.clone(), interval));
    }
    let stopped = |shared: &Shared| {
        let mut shutdown = shared.shutdown.subscribe();
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    };
    let listener = GatedListener::new(listener, shared.reachability.clone());
    let router = http::router(shared.clone());
    let server: std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>> + Send>> = match &shared.tls {
        Some(identity) => Box::pin(
            axum::serve(TlsListener::new(listener, identity), router)
                .with_graceful_shutdown(stopped(&shared))
                .into_future(),
        ),
        None => Box::pin(axum::serve(listener, router).with_graceful_shutdown(stopped(&shared)).into_future()),
    };
    let grace_over = {
        let stopped = stopped(&shared);
        async move {
            stopped.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        result = server => {
            if let Err(error) = result {
                eprintln!("test apiserver: {error}");
            }
        }
        _ = grace_over => {}
    }
}

/// Periodic BOOKMARKs (at the current resourceVersion) on every watch that allows them.
async fn send_bookmarks(shared: Arc<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    loop {
        ticks.tick().await;
        shared.bookmark_now();
    }
}
