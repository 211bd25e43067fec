//! Picks the iptables backend the host already uses, the way kubelet's iptables-wrapper and
//! flannel do: kubelet's mangle chains first, then whichever backend holds more rules.

use std::time::Duration;

use tracing::{debug, info};

use super::{Backend, Error, ExecIptables, Iptables, Tool};
use crate::model::IpFamily;
use crate::rules::ruleset::TableName;

/// Chains kubelet (1.17+) creates in mangle; their presence names the backend outright.
const KUBELET_CHAINS: [&str; 2] = [":KUBE-IPTABLES-HINT ", ":KUBE-KUBELET-CANARY "];

/// What the save binaries of both backends showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Evidence {
    /// `iptables-nft-save` exists.
    nft_available: bool,
    /// `iptables-legacy-save` exists.
    legacy_available: bool,
    /// Kubelet chains in nft's mangle table (both families).
    nft_kubelet_chains: usize,
    /// Kubelet chains in legacy's tables (both families).
    legacy_kubelet_chains: usize,
    /// Rule lines in nft's tables (both families).
    nft_rules: usize,
    /// Rule lines in legacy's tables (both families).
    legacy_rules: usize,
}

/// The decision, separate from the I/O so it can be tested.
fn choose(e: &Evidence) -> Backend {
    match (e.nft_available, e.legacy_available) {
        (false, false) => Backend::Default,
        (true, false) => Backend::Nft,
        (false, true) => Backend::Legacy,
        (true, true) if e.nft_kubelet_chains > 0 => Backend::Nft,
        (true, true) if e.legacy_kubelet_chains > 0 => Backend::Legacy,
        (true, true) if e.legacy_rules > e.nft_rules => Backend::Legacy,
        (true, true) => Backend::Nft,
    }
}

/// Detects the backend of the current network namespace.
pub fn detect_backend() -> Backend {
    detect_backend_in(None)
}

/// Detects the backend of network namespace `netns` (the current one when `None`).
pub fn detect_backend_in(netns: Option<&str>) -> Backend {
    let probe =
        |backend: Backend| ExecIptables { backend, netns: netns.map(str::to_string), timeout: Duration::from_secs(5) };
    let (nft, legacy) = (probe(Backend::Nft), probe(Backend::Legacy));
    // Never `-t mangle` with legacy: naming a table makes the legacy kernel module create it.
    let (nft_available, nft_mangle) = dumps(&nft, Some(TableName::Mangle));
    let (legacy_available, legacy_all) = dumps(&legacy, None);
    let (_, nft_all) = dumps(&nft, None);
    let evidence = Evidence {
        nft_available,
        legacy_available,
        nft_kubelet_chains: count(&nft_mangle, |l| KUBELET_CHAINS.iter().any(|c| l.starts_with(c))),
        legacy_kubelet_chains: count(&legacy_all, |l| KUBELET_CHAINS.iter().any(|c| l.starts_with(c))),
        nft_rules: count(&nft_all, |l| l.starts_with('-')),
        legacy_rules: count(&legacy_all, |l| l.starts_with('-')),
    };
    let backend = choose(&evidence);
    info!(%backend, ?evidence, "detected iptables backend");
    backend
}

/// Both families' save output; `false` when the backend's save binary is missing.
fn dumps(ipt: &ExecIptables, table: Option<TableName>) -> (bool, String) {
    let mut available = false;
    let mut text = String::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        match ipt.save(family, table) {
            Ok(out) => {
                available = true;
                text.push_str(&out);
            }
            Err(Error::BinaryNotFound { .. }) => {}
            Err(e) => {
                // Present but failing (e.g. no kernel support): it exists, it just holds nothing.
                available = true;
                debug!(binary = %ipt.backend.binary(family, Tool::Save), error = %e, "save failed while detecting");
            }
        }
    }
    (available, text)
}

fn count(text: &str, pred: impl Fn(&str) -> bool) -> usize {
    text.lines().filter(|l| pred(l)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> Evidence {
        Evidence { nft_available: true, legacy_available: true, ..Evidence::default() }
    }

    #[test]
    fn availability_decides_first() {
        assert_eq!(choose(&Evidence::default()), Backend::Default);
        let only_legacy = Evidence { legacy_available: true, nft_rules: 9, ..Evidence::default() };
        assert_eq!(choose(&only_legacy), Backend::Legacy);
        let only_nft = Evidence { nft_available: true, legacy_rules: 9, ..Evidence::default() };
        assert_eq!(choose(&only_nft), Backend::Nft);
    }

    #[test]
    fn kubelet_chains_beat_rule_counts() {
        let e = Evidence { legacy_kubelet_chains: 1, nft_rules: 100, ..both() };
        assert_eq!(choose(&e), Backend::Legacy);
        let e = Evidence { nft_kubelet_chains: 1, legacy_kubelet_chains: 2, legacy_rules: 100, ..both() };
        assert_eq!(choose(&e), Backend::Nft);
    }

    #[test]
    fn more_rules_wins_and_ties_go_to_nft() {
        assert_eq!(choose(&Evidence { legacy_rules: 3, nft_rules: 2, ..both() }), Backend::Legacy);
        assert_eq!(choose(&Evidence { legacy_rules: 2, nft_rules: 2, ..both() }), Backend::Nft);
        assert_eq!(choose(&both()), Backend::Nft);
    }
}
