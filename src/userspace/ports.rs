//! `--proxy-port-range` parsing and the proxy-port allocator (random start, then linear scan).
//! Does not bind sockets: the caller binds the port it is given and releases it on removal.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

/// Errors parsing a port range or allocating from it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The range text is not `begin-end`, `begin+offset` or a single port (not retryable).
    #[error("invalid port range {value:?}: {reason}")]
    InvalidRange {
        /// The text as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Every port of the range is in use (retryable after a release).
    #[error("no free port in range {0}")]
    Exhausted(PortRange),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An inclusive range of proxy ports; empty means "let the kernel choose" (port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortRange {
    /// First port; 0 with `size == 0` for the empty range.
    pub base: u16,
    /// Number of ports in the range.
    pub size: u32,
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.size == 0 {
            return f.write_str("");
        }
        write!(f, "{}-{}", self.base, u32::from(self.base) + self.size - 1)
    }
}

impl PortRange {
    /// Parses kube-proxy's forms: `""` (empty), `"30000"`, `"30000-30100"`, `"30000+100"`
    /// (begin plus offset, i.e. 30000-30100). Ports must be 1..=65535 and begin ≤ end.
    pub fn parse(value: &str) -> Result<Self> {
        let text = value.trim();
        if text.is_empty() {
            return Ok(PortRange::default());
        }
        let bad = |reason| Error::InvalidRange { value: value.to_string(), reason };
        let port = |s: &str| s.trim().parse::<u16>().map_err(|_| bad("not a port number"));
        let (begin, end) = if let Some((b, e)) = text.split_once('-') {
            (port(b)?, port(e)?)
        } else if let Some((b, off)) = text.split_once('+') {
            let begin = port(b)?;
            let offset = off.trim().parse::<u32>().map_err(|_| bad("offset is not a number"))?;
            let end = u32::from(begin) + offset;
            (begin, u16::try_from(end).map_err(|_| bad("begin+offset exceeds 65535"))?)
        } else {
            let p = port(text)?;
            (p, p)
        };
        if begin == 0 {
            return Err(bad("port 0 is not allowed"));
        }
        if end < begin {
            return Err(bad("end is before begin"));
        }
        Ok(PortRange { base: begin, size: u32::from(end) - u32::from(begin) + 1 })
    }

    /// Whether the range is empty (the kernel picks ports).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        let port = u32::from(port);
        let base = u32::from(self.base);
        port >= base && port < base + self.size
    }
}

/// Hands out distinct ports from a [`PortRange`]; with an empty range always returns 0.
#[derive(Debug)]
pub struct PortAllocator {
    range: PortRange,
    in_use: HashSet<u16>,
    seed: std::collections::hash_map::RandomState,
    draws: u64,
}

impl PortAllocator {
    /// An allocator over `range` with nothing allocated.
    pub fn new(range: PortRange) -> Self {
        PortAllocator { range, in_use: HashSet::new(), seed: Default::default(), draws: 0 }
    }

    /// The range this allocator serves.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Number of ports currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// A free port (random start, then linear scan with wrap-around), or 0 for an empty range.
    pub fn allocate(&mut self) -> Result<u16> {
        if self.range.is_empty() {
            return Ok(0);
        }
        let size = self.range.size;
        let start = (self.random() % u64::from(size)) as u32;
        for i in 0..size {
            let offset = (start + i) % size;
            let Ok(port) = u16::try_from(u32::from(self.range.base) + offset) else { continue };
            if self.in_use.insert(port) {
                return Ok(port);
            }
        }
        Err(Error::Exhausted(self.range))
    }

    /// Marks a specific port as used (e.g. a port bound before a restart); false if taken or
    /// outside the range.
    pub fn reserve(&mut self, port: u16) -> bool {
        self.range.contains(port) && self.in_use.insert(port)
    }

    /// Returns a port to the pool; 0 and ports outside the range are ignored.
    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    fn random(&mut self) -> u64 {
        self.draws = self.draws.wrapping_add(1);
        let mut h = self.seed.build_hasher();
        h.write_u64(self.draws);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kube_proxy_forms() {
        assert_eq!(PortRange::parse("").unwrap(), PortRange::default());
        assert_eq!(PortRange::parse("30000-30100").unwrap(), PortRange { base: 30000, size: 101 });
        assert_eq!(PortRange::parse("30000+100").unwrap(), PortRange { base: 30000, size: 101 });
        assert_eq!(PortRange::parse("8080").unwrap(), PortRange { base: 8080, size: 1 });
        assert_eq!(PortRange::parse("1-65535").unwrap().size, 65535);
        assert_eq!(PortRange::parse("30000-30100").unwrap().to_string(), "30000-30100");
    }

    #[test]
    fn errors_name_the_value() {
        for bad in ["abc", "30100-30000", "0-10", "65000+1000", "1-2-3", "-5", "30000+x"] {
            let err = PortRange::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn allocates_every_port_once_then_exhausts() {
        let range = PortRange::parse("40000-40009").unwrap();
        let mut alloc = PortAllocator::new(range);
        let mut got: Vec<u16> = (0..10).map(|_| alloc.allocate().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (40000..=40009).collect::<Vec<_>>());
        assert_eq!(alloc.allocate(), Err(Error::Exhausted(range)));
        alloc.release(40004);
        assert_eq!(alloc.allocate(), Ok(40004));
        assert_eq!(alloc.in_use(), 10);
    }

    #[test]
    fn empty_range_gives_zero() {
        let mut alloc = PortAllocator::new(PortRange::default());
        assert_eq!(alloc.allocate(), Ok(0));
        assert_eq!(alloc.allocate(), Ok(0));
    }

    #[test]
    fn reserve_blocks_allocation() {
        let mut alloc = PortAllocator::new(PortRange::parse("50000+1").unwrap());
        assert!(alloc.reserve(50000));
        assert!(!alloc.reserve(50000));
        assert!(!alloc.reserve(49999));
        assert_eq!(alloc.allocate(), Ok(50001));
        assert!(alloc.allocate().is_err());
    }

    #[test]
    fn start_is_random() {
        let range = PortRange::parse("20000-29999").unwrap();
        let firsts: HashSet<u16> = (0..20).map(|_| PortAllocator::new(range).allocate().unwrap()).collect();
        assert!(firsts.len() > 1);
    }
}
