//! The iptables backends: the same rules written through the nf_tables or the x_tables kernel
//! API. Planning differs per backend (see `plan::PlanOptions`); running them is `apply::exec`.

use std::fmt;

/// Which iptables variant to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `iptables-nft-restore` etc.: the nf_tables kernel API.
    Nft,
    /// `iptables-legacy-restore` etc.: the x_tables kernel API.
    Legacy,
    /// Plain `iptables-restore` etc.: whatever the system's alternatives point to.
    #[default]
    Default,
}

impl Backend {
    /// The backend's name as accepted by `FromStr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
            Backend::Default => "default",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
