//! The state a ruleset leaves behind, per table and chain: which chains exist, their
//! policies and their rules (canonicalised), after applying `-I`, `-D` and `-X` in order.

use std::collections::BTreeMap;

use crate::rules::canonical::{canonical, CanonicalRule};
use crate::rules::parse::is_builtin_chain;
use crate::rules::ruleset::{ChainName, Rule, RuleOp, Ruleset, TableName};

/// Chains that only the kubelet creates, although their names start with `KUBE-`.
const KUBELET_CHAINS: [&str; 3] = ["KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT", "KUBE-MARK-DROP"];

/// Whether kube-proxy (and so kubenat) owns `chain`.
pub(super) fn is_kube_owned(chain: &str) -> bool {
    chain.starts_with("KUBE-") && !KUBELET_CHAINS.contains(&chain)
}

/// One rule of a chain as it ends up: its canonical key and the rule to print.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub key: CanonicalRule,
    /// The rule as written, with `-I` shown as `-A` (its place is its position here).
    pub rule: Rule,
}

/// One chain as it ends up.
#[derive(Debug, Clone, Default)]
pub(super) struct ChainState {
    /// The declared policy of a built-in chain.
    pub policy: Option<String>,
    pub entries: Vec<Entry>,
}

/// Chains per table; built-in chains are present only when mentioned.
pub(super) type State = BTreeMap<TableName, BTreeMap<ChainName, ChainState>>;

/// Applies every section of `ruleset` in order, then keeps what `kube_only` says counts.
pub(super) fn state(ruleset: &Ruleset, kube_only: bool) -> State {
    let mut state = State::new();
    for table in &ruleset.tables {
        let chains = state.entry(table.name).or_default();
        for decl in &table.chains {
            let chain = chains.entry(decl.name.clone()).or_default();
            // With --noflush a declaration flushes the chain; the first one finds it empty.
            chain.entries.clear();
            if decl.policy.is_some() {
                chain.policy.clone_from(&decl.policy);
            }
        }
        for rule in &table.rules {
            apply(chains.entry(rule.chain.clone()).or_default(), rule);
        }
        for deleted in &table.deletes {
            chains.remove(deleted);
        }
    }
    if kube_only {
        for (table, chains) in &mut state {
            chains.retain(|name, _| is_builtin_chain(*table, name.as_str()) || is_kube_owned(name.as_str()));
            for (name, chain) in chains.iter_mut() {
                if is_builtin_chain(*table, name.as_str()) {
                    chain.policy = None;
                    chain.entries.retain(|e| e.rule.target().is_some_and(is_kube_owned));
                }
            }
        }
    }
    state
}

/// Applies one rule line to its chain. A `-D` that matches nothing stays visible as a `-D`.
fn apply(chain: &mut ChainState, rule: &Rule) {
    let key = canonical(rule);
    match rule.op {
        RuleOp::Append => chain.entries.push(Entry { key, rule: rule.clone() }),
        RuleOp::Insert(position) => {
            let index = position.map_or(0, |p| p.saturating_sub(1) as usize);
            let index = index.min(chain.entries.len());
            let rule = Rule { op: RuleOp::Append, ..rule.clone() };
            chain.entries.insert(index, Entry { key, rule });
        }
        RuleOp::Delete => {
            let found = chain.entries.iter().position(|e| e.key == key && e.rule.op != RuleOp::Delete);
            match found {
                Some(index) => {
                    chain.entries.remove(index);
                }
                None => chain.entries.push(Entry { key: key.deletion(), rule: rule.clone() }),
            }
        }
    }
}
