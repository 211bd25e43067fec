//! How a partial plan writes a changed chain: rewritten whole or edited rule by rule, chosen
//! per iptables backend from measurements (`scripts/bench-sync.sh`, see BENCHMARKS.md).

use crate::rules::backend::Backend;

/// When a changed chain is edited with `-D`/`-I`/`-A` lines instead of being rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// A changed user chain with at least this many rules (before or after the change) is
    /// edited; `None` rewrites every changed chain, as kube-proxy does.
    pub edit_min_rules: Option<usize>,
    /// The most edit lines, in percent of the chain's length, before it is rewritten instead.
    pub edit_max_percent: usize,
}

impl PlanOptions {
    /// Every changed chain rewritten whole (kube-proxy's partial sync).
    pub const REWRITE: PlanOptions = PlanOptions { edit_min_rules: None, edit_max_percent: 0 };

    /// What measured fastest on `backend`. Both backends take `-D`/`-I`/`-A` lines inside a
    /// restore. nft: a positional edit makes iptables read back only that chain (≈10 µs per
    /// rule), a rewrite costs ≈10× that per rule, so big chains are edited unless most of the
    /// chain changes. legacy: every restore reads and replaces the whole table, so either way
    /// costs about the same; edits still send and parse less, so they are used too.
    pub fn for_backend(backend: Backend) -> Self {
        match backend {
            Backend::Nft | Backend::Default => PlanOptions { edit_min_rules: Some(64), edit_max_percent: 50 },
            Backend::Legacy => PlanOptions { edit_min_rules: Some(64), edit_max_percent: 25 },
        }
    }

    /// The most edit lines allowed for a chain of `old` → `new` rules, or `None` when it is to
    /// be rewritten.
    pub(super) fn max_edits(&self, old: usize, new: usize) -> Option<usize> {
        let longest = old.max(new);
        let min = self.edit_min_rules?;
        (longest >= min).then(|| (longest * self.edit_max_percent / 100).max(1))
    }
}

impl Default for PlanOptions {
    /// The options for whatever backend `iptables-restore` points to.
    fn default() -> Self {
        PlanOptions::for_backend(Backend::Default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chains_and_rewrite_mode_are_rewritten() {
        let opts = PlanOptions { edit_min_rules: Some(64), edit_max_percent: 50 };
        assert_eq!(opts.max_edits(10, 12), None);
        assert_eq!(opts.max_edits(63, 64), Some(32));
        assert_eq!(opts.max_edits(10_000, 10_001), Some(5_000));
        assert_eq!(PlanOptions::REWRITE.max_edits(10_000, 10_001), None);
    }
}
