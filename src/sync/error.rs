//! Errors of one sync.

use crate::apply;
use crate::model::IpFamily;

/// Errors of one sync; the loop logs them, keeps the last good rules and retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node configuration could not be built (e.g. NodeCIDR mode without a pod CIDR yet).
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// Reading the current rules failed (retryable).
    #[error("reading the current {family} rules: {source}")]
    Save {
        /// Family.
        family: IpFamily,
        /// Cause.
        #[source]
        source: crate::apply::exec::Error,
    },
    /// The current rules could not be parsed.
    #[error("parsing the current {family} rules: {source}")]
    Parse {
        /// Family.
        family: IpFamily,
        /// Cause.
        #[source]
        source: crate::rules::parse::Error,
    },
    /// Userspace mode needs the node's IP for node-originated traffic (HOST chain DNAT).
    #[error("userspace mode: no {family} node IP for the KUBE-PORTALS-HOST rules; give --node-ip or --bind-address")]
    NoNodeIp {
        /// Family.
        family: IpFamily,
    },
    /// `iptables-restore` rejected a full sync; the previous rules are still in place.
    #[error("{family} restore failed: {source}")]
    Restore {
        /// Family.
        family: IpFamily,
        /// Cause (names the failing line of our input).
        #[source]
        source: crate::apply::exec::Error,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<apply::Error> for Error {
    fn from(err: apply::Error) -> Self {
        match err {
            apply::Error::Save { family, source } => Error::Save { family, source },
            apply::Error::Parse { family, source } => Error::Parse { family, source },
            apply::Error::Restore { family, source } => Error::Restore { family, source },
        }
    }
}
