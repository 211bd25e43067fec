//! The iptables version, probed once at start as kube-proxy does, for the one feature that
//! depends on it: `MASQUERADE --random-fully` needs iptables 1.6.2 or later.

use std::process::{Command, Stdio};

use crate::apply::exec::{Backend, Tool};
use crate::model::IpFamily;

/// The first iptables release that accepts `--random-fully`.
pub const RANDOM_FULLY_MIN: Version = Version(1, 6, 2);

/// An iptables version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The version in `--version` output such as `iptables-save v1.8.9 (nf_tables)` (the first
/// `v` followed by dotted numbers; a missing patch level is 0).
pub fn parse(text: &str) -> Option<Version> {
    text.split_whitespace().find_map(|word| {
        let digits = word.strip_prefix('v')?;
        let mut parts = digits.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(Version(major, minor, patch))
    })
}

/// Whether `version` accepts `--random-fully`.
pub fn supports_random_fully(version: Version) -> bool {
    version >= RANDOM_FULLY_MIN
}

/// Runs `<backend's iptables-save> --version` and parses it; `None` when it cannot be run or
/// says no version (blocking).
pub fn probe(backend: Backend) -> Option<Version> {
    let binary = backend.binary(IpFamily::V4, Tool::Save);
    let out = Command::new(&binary).arg("--version").stdin(Stdio::null()).env("LC_ALL", "C").output().ok()?;
    parse(&String::from_utf8_lossy(&out.stdout)).or_else(|| parse(&String::from_utf8_lossy(&out.stderr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse("iptables-save v1.8.9 (nf_tables)\n"), Some(Version(1, 8, 9)));
        assert_eq!(parse("iptables v1.6.1"), Some(Version(1, 6, 1)));
        assert_eq!(parse("iptables v1.10"), Some(Version(1, 10, 0)));
        assert_eq!(parse("no version here"), None);
        assert_eq!(parse("iptables vx.y"), None);
        assert!(!supports_random_fully(Version(1, 6, 1)));
        assert!(supports_random_fully(Version(1, 6, 2)));
        assert!(supports_random_fully(Version(1, 10, 0)));
        assert!(!supports_random_fully(Version(1, 4, 21)));
    }
}
