//! A bounded, process-wide pool of kernel pipes for the zero-copy TCP relay. A relay direction
//! takes a pipe only while bytes are in flight and gives it back once drained, so an idle
//! connection costs no pipe descriptors. Does not move bytes itself (see `splice`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Default bound on pipes: each costs two descriptors, and a pipe whose reader stalls pins up to
/// its capacity in memory (128 × 1 MiB at worst).
pub const DEFAULT_MAX_PIPES: usize = 128;

/// Default number of drained pipes kept open for reuse; the rest are closed on return.
pub const DEFAULT_MAX_IDLE: usize = 32;

/// Capacity asked for each pipe: 1 MiB (the unprivileged `pipe-max-size`) halved the proxy's CPU
/// per byte against 256 KiB in `scripts/bench-userspace.sh`; the kernel default is 64 KiB, and a
/// refusal keeps whatever the pipe has.
pub const DEFAULT_PIPE_SIZE: usize = 1024 * 1024;

/// How a [`PipePool`] is bounded.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Most pipes open at once (idle plus in use); 0 disables splicing.
    pub max_pipes: usize,
    /// Most drained pipes kept for reuse.
    pub max_idle: usize,
    /// Capacity asked for each new pipe (`F_SETPIPE_SZ`).
    pub pipe_size: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { max_pipes: DEFAULT_MAX_PIPES, max_idle: DEFAULT_MAX_IDLE, pipe_size: DEFAULT_PIPE_SIZE }
    }
}

/// One pipe: bytes written to `write` come out of `read`. Both ends are non-blocking.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Bytes the pipe can hold.
    pub(crate) capacity: usize,
}

/// Counters of a pool (for tests, logs and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Pipes open now (idle plus in use).
    pub open: usize,
    /// Pipes in use now.
    pub in_use: usize,
    /// Times a relay found no pipe (pool full or pipe creation failed) and copied instead.
    pub fallbacks: u64,
}

#[derive(Debug, Default)]
struct Slots {
    idle: Vec<Pipe>,
    open: usize,
}

/// The pool; share it with `Arc` between every TCP proxy of the process.
#[derive(Debug)]
pub struct PipePool {
    config: PoolConfig,
    slots: Mutex<Slots>,
    supported: AtomicBool,
    fallbacks: AtomicU64,
}

impl PipePool {
    /// An empty pool; pipes are created on demand up to `config.max_pipes`.
    pub fn new(config: PoolConfig) -> Self {
        PipePool {
            config,
            slots: Mutex::new(Slots::default()),
            supported: AtomicBool::new(true),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let slots = self.lock();
        PoolStats {
            open: slots.open,
            in_use: slots.open - slots.idle.len(),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Whether splicing is still on (it is switched off when the kernel refuses it).
    pub fn is_supported(&self) -> bool {
        self.supported.load(Ordering::Relaxed)
    }

    /// Switches splicing off for the rest of the process (the kernel does not support it here).
    pub(crate) fn disable(&self) {
        if self.supported.swap(false, Ordering::Relaxed) {
            tracing::warn!("splice(2) is not supported here; the userspace proxy copies through buffers");
        }
    }

    /// Notes that a relay copied one chunk through a buffer for want of a pipe.
    pub(crate) fn count_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// A pipe for one burst of data, or `None` when the pool is full, splicing is off or a new
    /// pipe cannot be made (e.g. out of descriptors): the caller then copies through a buffer.
    pub(crate) fn take(&self) -> Option<PooledPipe<'_>> {
        if !self.is_supported() {
            return None;
        }
        let mut slots = self.lock();
        if let Some(pipe) = slots.idle.pop() {
            return Some(PooledPipe { pool: self, pipe: Some(pipe), holds_data: false });
        }
        if slots.open >= self.config.max_pipes {
            return None;
        }
        slots.open += 1;
        drop(slots);
        match new_pipe(self.config.pipe_size) {
            Ok(pipe) => Some(PooledPipe { pool: self, pipe: Some(pipe), holds_data: false }),
            Err(err) => {
                self.lock().open -= 1;
                tracing::debug!(error = %err, "could not create a pipe for splicing");
                None
            }
        }
    }

    fn give_back(&self, pipe: Pipe, holds_data: bool) {
        let mut slots = self.lock();
        if !holds_data && slots.idle.len() < self.config.max_idle {
            slots.idle.push(pipe);
        } else {
            // A pipe that may still hold bytes of a dead connection is never reused.
            slots.open -= 1;
            drop(slots);
            drop(pipe);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The slots stay consistent even if a holder panicked between statements.
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A non-blocking, close-on-exec pipe of (ideally) `size` bytes.
fn new_pipe(size: usize) -> nix::Result<Pipe> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let asked = i32::try_from(size).unwrap_or(i32::MAX);
    let fd = write.as_raw_fd();
    let capacity = fcntl(fd, FcntlArg::F_SETPIPE_SZ(asked))
        .or_else(|_| fcntl(fd, FcntlArg::F_GETPIPE_SZ))
        .ok()
        .and_then(|c| usize::try_from(c).ok())
        .filter(|c| *c > 0)
        .unwrap_or(64 * 1024);
    Ok(Pipe { read, write, capacity })
}

/// A pipe on loan from a [`PipePool`]; returned (or closed, if it may hold data) on drop.
#[derive(Debug)]
pub(crate) struct PooledPipe<'a> {
    pool: &'a PipePool,
    pipe: Option<Pipe>,
    /// Set while spliced-in bytes have not all been spliced out.
    pub(crate) holds_data: bool,
}

impl PooledPipe<'_> {
    /// The pipe (always present until drop).
    pub(crate) fn pipe(&self) -> Option<&Pipe> {
        self.pipe.as_ref()
    }
}

impl Drop for PooledPipe<'_> {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            self.pool.give_back(pipe, self.holds_data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_pipes: usize, max_idle: usize) -> PipePool {
        PipePool::new(PoolConfig { max_pipes, max_idle, pipe_size: 128 * 1024 })
    }

    #[test]
    fn pipes_are_bounded_and_reused() {
        let pool = pool(2, 2);
        let a = pool.take().expect("first pipe");
        let b = pool.take().expect("second pipe");
        assert!(pool.take().is_none(), "the pool is full");
        assert_eq!(pool.stats(), PoolStats { open: 2, in_use: 2, fallbacks: 0 });
        let fd = a.pipe().map(|p| p.read.as_raw_fd());
        drop(a);
        assert_eq!(pool.stats(), PoolStats { open: 2, in_use: 1, fallbacks: 0 });
        let again = pool.take().expect("the returned pipe");
        assert_eq!(again.pipe().map(|p| p.read.as_raw_fd()), fd, "the idle pipe is reused, not a new one");
        drop((again, b));
        assert_eq!(pool.stats().in_use, 0);
    }

    #[test]
    fn idle_pipes_beyond_the_cap_are_closed() {
        let pool = pool(4, 1);
        let taken: Vec<_> = (0..4).map(|_| pool.take().expect("pipe")).collect();
        drop(taken);
        assert_eq!(pool.stats(), PoolStats { open: 1, in_use: 0, fallbacks: 0 });
    }

    #[test]
    fn a_pipe_that_may_hold_data_is_not_reused() {
        let pool = pool(2, 2);
        let mut pipe = pool.take().expect("pipe");
        pipe.holds_data = true;
        drop(pipe);
        assert_eq!(pool.stats().open, 0);
    }

    #[test]
    fn capacity_is_raised_when_the_kernel_allows() {
        let pool = pool(1, 1);
        let pipe = pool.take().expect("pipe");
        let capacity = pipe.pipe().map(|p| p.capacity).unwrap_or(0);
        assert!(capacity >= 64 * 1024, "capacity {capacity}");
    }

    #[test]
    fn a_disabled_or_empty_pool_hands_out_nothing() {
        let none = pool(0, 0);
        assert!(none.take().is_none());
        let off = pool(4, 4);
        off.disable();
        assert!(off.take().is_none());
        assert!(!off.is_supported());
    }
}
