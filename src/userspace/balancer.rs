//! Round-robin endpoint choice with optional client-IP affinity; pure (the clock is a parameter).
//! Does not pick which endpoints are usable (ready / terminating fallback): the caller does.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most clients remembered for session affinity; the least recently used is evicted beyond it.
pub const MAX_AFFINITY_CLIENTS: usize = 100_000;

/// One remembered client → endpoint binding.
#[derive(Debug, Clone, Copy)]
struct Affinity {
    endpoint: SocketAddr,
    last_used: Instant,
}

/// Chooses a backend for each new connection (TCP) or session (UDP) of one service port.
#[derive(Debug, Clone)]
pub struct Balancer {
    endpoints: Vec<SocketAddr>,
    next_index: usize,
    affinity_timeout: Option<Duration>,
    affinity: HashMap<IpAddr, Affinity>,
    max_clients: usize,
}

impl Balancer {
    /// A balancer with no endpoints; `affinity` is the ClientIP timeout, `None` for no affinity.
    pub fn new(affinity: Option<Duration>) -> Self {
        Self::with_max_clients(affinity, MAX_AFFINITY_CLIENTS)
    }

    /// As [`Balancer::new`] with a custom bound on the affinity map (at least 1).
    pub fn with_max_clients(affinity: Option<Duration>, max_clients: usize) -> Self {
        Balancer {
            endpoints: Vec::new(),
            next_index: 0,
            affinity_timeout: affinity,
            affinity: HashMap::new(),
            max_clients: max_clients.max(1),
        }
    }

    /// The current endpoints, in rotation order.
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// Number of clients currently pinned by affinity.
    pub fn affinity_len(&self) -> usize {
        self.affinity.len()
    }

    /// Replaces the endpoint set. When the set changes the rotation restarts at the first endpoint
    /// and affinity entries pointing at endpoints that are gone are dropped; an identical set
    /// (in any order) changes nothing.
    pub fn update(&mut self, mut endpoints: Vec<SocketAddr>) {
        let mut old = self.endpoints.clone();
        let mut new = endpoints.clone();
        old.sort_unstable();
        new.sort_unstable();
        new.dedup();
        if old == new {
            return;
        }
        self.affinity.retain(|_, a| new.binary_search(&a.endpoint).is_ok());
        let mut seen = std::collections::HashSet::new();
        endpoints.retain(|e| seen.insert(*e));
        self.endpoints = endpoints;
        self.next_index = 0;
    }

    /// The endpoint for a new flow from `client`, or `None` when there are no endpoints.
    /// With affinity, a client's endpoint is reused while its last use is younger than the
    /// timeout (and refreshed); `skip_affinity` (a retry after a failed dial) forces the next
    /// round-robin endpoint and re-pins the client to it.
    pub fn next(&mut self, client: IpAddr, now: Instant, skip_affinity: bool) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let timeout = self.affinity_timeout;
        if let (Some(ttl), false) = (timeout, skip_affinity) {
            if let Some(a) = self.affinity.get_mut(&client) {
                if now.saturating_duration_since(a.last_used) < ttl {
                    a.last_used = now;
                    return Some(a.endpoint);
                }
            }
        }
        let endpoint = self.endpoints[self.next_index % self.endpoints.len()];
        self.next_index = (self.next_index + 1) % self.endpoints.len();
        if timeout.is_some() {
            if !self.affinity.contains_key(&client) && self.affinity.len() >= self.max_clients {
                self.sweep(now);
                if self.affinity.len() >= self.max_clients {
                    self.evict_oldest();
                }
            }
            self.affinity.insert(client, Affinity { endpoint, last_used: now });
        }
        Some(endpoint)
    }

    /// Removes affinity entries older than the timeout; returns how many were removed.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let Some(ttl) = self.affinity_timeout else { return 0 };
        let before = self.affinity.len();
        self.affinity.retain(|_, a| now.saturating_duration_since(a.last_used) < ttl);
        before - self.affinity.len()
    }

    fn evict_oldest(&mut self) {
        let oldest = self.affinity.iter().min_by_key(|(_, a)| a.last_used).map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            self.affinity.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn client(n: u8) -> IpAddr {
        IpAddr::from([192, 168, 0, n])
    }

    #[test]
    fn empty_gives_none() {
        let mut b = Balancer::new(Some(Duration::from_secs(10)));
        assert_eq!(b.next(client(1), Instant::now(), false), None);
        b.update(vec![ep(1)]);
        b.update(vec![]);
        assert_eq!(b.next(client(1), Instant::now(), false), None);
    }

    #[test]
    fn rotates_in_order_and_resets_on_change() {
        let mut b = Balancer::new(None);
        b.update(vec![ep(1), ep(2), ep(3)]);
        let now = Instant::now();
        let got: Vec<_> = (0..7).filter_map(|_| b.next(client(1), now, false)).collect();
        assert_eq!(got, vec![ep(1), ep(2), ep(3), ep(1), ep(2), ep(3), ep(1)]);
        // Same set in another order: no reset, rotation continues.
        b.update(vec![ep(3), ep(2), ep(1)]);
        assert_eq!(b.next(client(1), now, false), Some(ep(2)));
        // New set: index resets.
        b.update(vec![ep(4), ep(5)]);
        assert_eq!(b.next(client(1), now, false), Some(ep(4)));
        assert_eq!(b.next(client(1), now, false), Some(ep(5)));
    }

    #[test]
    fn duplicates_are_removed() {
        let mut b = Balancer::new(None);
        b.update(vec![ep(1), ep(1), ep(2), ep(1)]);
        assert_eq!(b.endpoints(), &[ep(1), ep(2)]);
    }

    #[test]
    fn affinity_pins_then_expires() {
        let ttl = Duration::from_secs(10);
        let mut b = Balancer::new(Some(ttl));
        b.update(vec![ep(1), ep(2)]);
        let t0 = Instant::now();
        assert_eq!(b.next(client(1), t0, false), Some(ep(1)));
        assert_eq!(b.next(client(2), t0, false), Some(ep(2)));
        // Pinned, and each use refreshes last-used.
        for i in 1..5 {
            assert_eq!(b.next(client(1), t0 + Duration::from_secs(9 * i), false), Some(ep(1)));
        }
        let last = t0 + Duration::from_secs(36);
        // Expired: falls back to round robin (next is ep(1) again after ep(2)).
        b.next(client(3), last, false); // ep(1)
        assert_eq!(b.next(client(1), last + ttl, false), Some(ep(2)));
        // client(2) (unused since t0) and client(3) (exactly ttl old) expire; client(1) stays.
        assert_eq!(b.sweep(last + ttl), 2);
        assert_eq!(b.affinity_len(), 1);
        assert_eq!(b.sweep(last + ttl * 3), 1);
        assert_eq!(b.affinity_len(), 0);
    }

    #[test]
    fn skip_affinity_fails_over_and_repins() {
        let mut b = Balancer::new(Some(Duration::from_secs(10)));
        b.update(vec![ep(1), ep(2)]);
        let now = Instant::now();
        assert_eq!(b.next(client(1), now, false), Some(ep(1)));
        assert_eq!(b.next(client(1), now, true), Some(ep(2)));
        assert_eq!(b.next(client(1), now, false), Some(ep(2)));
    }

    #[test]
    fn removal_drops_affinity() {
        let mut b = Balancer::new(Some(Duration::from_secs(10)));
        b.update(vec![ep(1), ep(2)]);
        let now = Instant::now();
        assert_eq!(b.next(client(1), now, false), Some(ep(1)));
        assert_eq!(b.next(client(2), now, false), Some(ep(2)));
        b.update(vec![ep(2), ep(3)]);
        assert_eq!(b.affinity_len(), 1);
        assert_eq!(b.next(client(2), now, false), Some(ep(2)));
        assert_eq!(b.next(client(1), now, false), Some(ep(2)));
    }

    #[test]
    fn affinity_map_is_bounded() {
        let mut b = Balancer::with_max_clients(Some(Duration::from_secs(10)), 2);
        b.update(vec![ep(1)]);
        let t0 = Instant::now();
        b.next(client(1), t0, false);
        b.next(client(2), t0 + Duration::from_secs(1), false);
        b.next(client(3), t0 + Duration::from_secs(2), false);
        assert_eq!(b.affinity_len(), 2);
        assert!(!b.affinity.contains_key(&client(1)));
    }
}
