//! Zero-copy TCP relay: each direction moves bytes socket → pipe → socket with `splice(2)`, so
//! they never cross into user memory. A direction borrows a pipe from the shared [`PipePool`]
//! only while bytes are in flight; with no pipe to be had it copies that chunk through a buffer.
//! Half-close is kept: end of stream on one side shuts down writing on the other.

use std::io;

use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::pipes::{PipePool, PooledPipe};

/// Buffer for a chunk copied without a pipe (allocated only when that happens).
const FALLBACK_BUFFER: usize = 64 * 1024;

/// Relays between `client` and `backend` until both directions ended; returns the bytes moved
/// (client → backend, backend → client). An error in either direction ends both.
pub async fn relay(client: TcpStream, backend: TcpStream, pool: &PipePool) -> io::Result<(u64, u64)> {
    let (client_read, client_write) = client.into_split();
    let (backend_read, backend_write) = backend.into_split();
    tokio::try_join!(pump(&client_read, backend_write, pool), pump(&backend_read, client_write, pool))
}

/// One direction: `from` until end of stream, into `to`, then shut down `to` for writing.
async fn pump(from: &OwnedReadHalf, mut to: OwnedWriteHalf, pool: &PipePool) -> io::Result<u64> {
    let src: &TcpStream = from.as_ref();
    let mut total = 0u64;
    let mut pipe: Option<PooledPipe<'_>> = None;
    let mut buffer: Option<Vec<u8>> = None;
    loop {
        src.readable().await?;
        if pipe.is_none() {
            pipe = pool.take();
        }
        let moved = match pipe.as_mut() {
            Some(held) => match fill(src, held) {
                Ok(0) => break,
                Ok(n) => {
                    buffer = None;
                    drain(held, to.as_ref(), n).await?;
                    n
                }
                // Nothing to read: give the pipe back while this direction is idle.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    pipe = None;
                    continue;
                }
                Err(err) if unsupported(&err) => {
                    pool.disable();
                    pipe = None;
                    continue;
                }
                Err(err) => return Err(err),
            },
            None => {
                pool.count_fallback();
                let buf = buffer.get_or_insert_with(|| vec![0; FALLBACK_BUFFER]);
                match src.try_read(buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        to.write_all(&buf[..n]).await?;
                        n
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(err) => return Err(err),
                }
            }
        };
        total += moved as u64;
    }
    drop(pipe);
    to.shutdown().await?;
    Ok(total)
}

/// Splices what `src` has (up to the pipe's capacity) into the empty pipe; 0 = end of stream.
fn fill(src: &TcpStream, held: &mut PooledPipe<'_>) -> io::Result<usize> {
    let Some(pipe) = held.pipe() else { return Err(io::Error::from(io::ErrorKind::WouldBlock)) };
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let n = src.try_io(Interest::READABLE, || {
        splice(src, None, &pipe.write, None, pipe.capacity, flags).map_err(io::Error::from)
    })?;
    held.holds_data = n > 0;
    Ok(n)
}

/// Splices all `len` bytes in the pipe out to `dst`, waiting while its send buffer is full.
async fn drain(held: &mut PooledPipe<'_>, dst: &TcpStream, len: usize) -> io::Result<()> {
    let Some(pipe) = held.pipe() else { return Err(io::Error::other("pipe missing")) };
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut left = len;
    while left > 0 {
        dst.writable().await?;
        match dst
            .try_io(Interest::WRITABLE, || splice(&pipe.read, None, dst, None, left, flags).map_err(io::Error::from))
        {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => left = left.saturating_sub(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    held.holds_data = false;
    Ok(())
}

/// Whether `err` says this kernel or descriptor pair cannot splice at all.
fn unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error().map(Errno::from_raw), Some(Errno::EINVAL | Errno::ENOSYS))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::userspace::pipes::PoolConfig;

    /// A relay between a fresh client/backend pair on 127.0.0.1; returns the far ends.
    async fn relayed(pool: Arc<PipePool>) -> (TcpStream, TcpStream, tokio::task::JoinHandle<io::Result<(u64, u64)>>) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let user = TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
        let (client, _) = front.accept().await.unwrap();
        let backend = TcpStream::connect(back.local_addr().unwrap()).await.unwrap();
        let (server, _) = back.accept().await.unwrap();
        let task = tokio::spawn(async move { relay(client, backend, &pool).await });
        (user, server, task)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// 8 MiB up, half-close, 4 bytes down; bounded so a lost end of stream fails, not hangs.
    async fn transfer(pool: Arc<PipePool>) {
        let bounded = tokio::time::timeout(std::time::Duration::from_secs(60), transfer_unbounded(pool));
        bounded.await.expect("transfer finished in time");
    }

    async fn transfer_unbounded(pool: Arc<PipePool>) {
        let (mut user, mut server, task) = relayed(pool).await;
        let up = pattern(8 << 20);
        let writer = tokio::spawn(async move {
            user.write_all(&up).await.unwrap();
            user.shutdown().await.unwrap();
            let mut down = Vec::new();
            user.read_to_end(&mut down).await.unwrap();
            down
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == pattern(8 << 20), "upstream bytes intact ({} received)", got.len());
        // Half-close: the client's end of stream reached the server, which still answers.
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        assert_eq!(task.await.unwrap().unwrap(), (8 << 20, 4));
    }

    #[tokio::test]
    async fn spliced_transfer_is_intact_and_half_close_propagates() {
        let pool = Arc::new(PipePool::new(PoolConfig::default()));
        transfer(pool.clone()).await;
        let stats = pool.stats();
        assert_eq!(stats.in_use, 0, "pipes are returned");
        assert!(stats.open >= 1, "a pipe was used");
        assert_eq!(stats.fallbacks, 0);
    }

    #[tokio::test]
    async fn without_pipes_the_relay_copies() {
        let pool = Arc::new(PipePool::new(PoolConfig { max_pipes: 0, ..PoolConfig::default() }));
        transfer(pool.clone()).await;
        assert!(pool.stats().fallbacks > 0);
        assert_eq!(pool.stats().open, 0);
    }

    #[tokio::test]
    async fn pool_exhaustion_falls_back_and_every_stream_stays_intact() {
        let pool = Arc::new(PipePool::new(PoolConfig { max_pipes: 1, max_idle: 1, ..PoolConfig::default() }));
        let streams: Vec<_> = (0..4).map(|_| tokio::spawn(transfer(pool.clone()))).collect();
        for stream in futures::future::join_all(streams).await {
            stream.unwrap();
        }
        let stats = pool.stats();
        assert!(stats.fallbacks > 0, "four streams share one pipe: some chunks were copied ({stats:?})");
        assert!(stats.open <= 1 && stats.in_use == 0, "{stats:?}");
    }

    #[tokio::test]
    async fn idle_connections_hold_no_pipe() {
        let pool = Arc::new(PipePool::new(PoolConfig { max_pipes: 4, max_idle: 4, ..PoolConfig::default() }));
        let mut ends = Vec::new();
        for _ in 0..8 {
            let (mut user, mut server, task) = relayed(pool.clone()).await;
            user.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), server.read_exact(&mut buf));
            read.await.expect("relayed in time").unwrap();
            assert_eq!(&buf, b"ping");
            ends.push((user, server, task));
        }
        // Eight open, idle connections with a four-pipe pool: every pipe is back in the pool.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(pool.stats().in_use, 0);
        assert!(pool.stats().open <= 4);
    }
}
