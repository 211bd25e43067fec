//! When a failed watch is retried: kube-runtime's default backoff (0.8 s doubling to 30 s, with
//! jitter, reset by any successful event), except that a 410 Gone/Expired relists at once.
//!
//! A 410 means the connection works again but our resourceVersion was compacted away; the
//! watcher has already dropped it and relists on its next poll. Waiting out a backoff that grew
//! while the API server was unreachable would keep the node on stale rules for up to 30 s
//! after the API is back. Only the first 410 in a row is free, so a server that keeps
//! answering 410 is still paced by the backoff.

use std::time::Duration;

use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff};

/// Upper bound used if the backoff ever ends (it does not: it caps at 30 s).
const FALLBACK: Duration = Duration::from_secs(30);

/// Retry pacing for one watcher.
pub struct Retry<B = DefaultBackoff> {
    backoff: B,
    /// 410s since the last successful event.
    expired_in_a_row: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry::with_backoff(DefaultBackoff::default())
    }
}

impl<B: Backoff> Retry<B> {
    /// Pacing on top of `backoff`.
    pub fn with_backoff(backoff: B) -> Self {
        Retry { backoff, expired_in_a_row: 0 }
    }

    /// How long to wait before polling the watcher again after `err`.
    pub fn after(&mut self, err: &watcher::Error) -> Duration {
        if is_expired(err) {
            self.expired_in_a_row += 1;
            if self.expired_in_a_row == 1 {
                return Duration::ZERO;
            }
        }
        self.backoff.next().unwrap_or(FALLBACK)
    }

    /// The watcher delivered an event: the next failure starts from the shortest wait again.
    pub fn succeeded(&mut self) {
        self.expired_in_a_row = 0;
        self.backoff.reset();
    }
}

/// Whether `err` is a 410 Gone / Expired (a watch event, or the status of a list or watch start).
pub fn is_expired(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    /// 1 s, 2 s, 3 s …; `reset` starts over.
    struct Linear(u64);

    impl Iterator for Linear {
        type Item = Duration;
        fn next(&mut self) -> Option<Duration> {
            self.0 += 1;
            Some(Duration::from_secs(self.0))
        }
    }

    impl Backoff for Linear {
        fn reset(&mut self) {
            self.0 = 0;
        }
    }

    fn status(code: u16) -> Box<Status> {
        let mut status = Status::failure("expired", "Expired");
        status.code = code;
        Box::new(status)
    }

    fn expired() -> watcher::Error {
        watcher::Error::WatchError(status(410))
    }

    fn unreachable() -> watcher::Error {
        watcher::Error::WatchStartFailed(kube::Error::Api(status(503)))
    }

    #[test]
    fn classifies_410_only() {
        assert!(is_expired(&expired()));
        assert!(is_expired(&watcher::Error::InitialListFailed(kube::Error::Api(status(410)))));
        assert!(!is_expired(&unreachable()));
        assert!(!is_expired(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn the_first_410_after_an_outage_relists_at_once() {
        let mut retry = Retry::with_backoff(Linear(0));
        // An outage: the backoff grows.
        let waits: Vec<Duration> = (0..4).map(|_| retry.after(&unreachable())).collect();
        assert_eq!(waits.last(), Some(&Duration::from_secs(4)));
        // Back, but compacted: relist now, not after the grown backoff.
        assert_eq!(retry.after(&expired()), Duration::ZERO);
        // A second 410 in a row is paced again.
        assert_eq!(retry.after(&expired()), Duration::from_secs(5));
        // An event resets everything.
        retry.succeeded();
        assert_eq!(retry.after(&unreachable()), Duration::from_secs(1));
        assert_eq!(retry.after(&expired()), Duration::ZERO);
    }
}
