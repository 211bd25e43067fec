//! A large restore input split into several `--noflush` transactions, bottom-up.
//!
//! Why: `iptables-nft-restore --noflush` is superlinear in the number of chains one
//! transaction declares. Measured here (iptables 1.8.9, kernel 6.x) with kube-proxy's layout:
//! 2,000 services × 10 endpoints (22k chains) took 55 s as one transaction and 2.2 s as 46
//! transactions of ≤ 500 chains; 10,000 services (110k chains) did not finish in 10 minutes
//! as one and took 13 s (fresh) / 18 s (rewriting existing chains) in 222 pieces. Legacy
//! iptables replaces the whole table per transaction, so it is linear in one piece and must
//! never be split.
//!
//! Why it is safe: chains are written in order of their depth in the jump graph — a chain
//! only after every user chain it jumps to — and each chain is declared (flushed) and fully
//! written inside one transaction. So between any two transactions every jump points to a
//! chain that exists with its final rules: traffic follows either the old or the new path,
//! never a half-written one. Rules in undeclared chains (jumps from built-in chains, rule-level
//! edits) and chain deletions go in the table's last transaction, after every chain that could
//! still refer to a deleted chain has been rewritten.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::ruleset::{ChainDecl, ChainName, Rule, Ruleset, Table};

/// Chains per transaction on nft (≈500 measured best at 2k and 10k services).
pub const NFT_CHAINS_PER_TRANSACTION: usize = 500;

/// The restore texts, in order, that together write `main` plus `extra` (as
/// [`super::write::Merged`] would in one piece). One text per table when no table declares
/// more than `max_chains` chains. Tables are written in `main`'s order, then `extra`'s own.
pub fn split(main: &Ruleset, extra: &Ruleset, max_chains: usize) -> Vec<String> {
    let max_chains = max_chains.max(1);
    let mut out = Vec::new();
    let names = main.tables.iter().map(|t| t.name).chain(extra.tables.iter().map(|t| t.name));
    let mut seen = Vec::new();
    for name in names {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let parts: Vec<&Table> = [main.table(name), extra.table(name)].into_iter().flatten().collect();
        split_table(&parts, max_chains, &mut out);
    }
    out
}

/// Whether [`split`] would write `main` plus `extra` in more than one transaction per table.
pub fn needs_split(main: &Ruleset, extra: &Ruleset, max_chains: usize) -> bool {
    let declared = |r: &Ruleset| r.tables.iter().map(|t| t.chains.len()).max().unwrap_or(0);
    declared(main) + declared(extra) > max_chains
}

fn split_table(parts: &[&Table], max_chains: usize, out: &mut Vec<String>) {
    let Some(first) = parts.first() else {
        return;
    };
    let decls: Vec<&ChainDecl> = parts.iter().flat_map(|t| &t.chains).collect();
    let mut by_chain: HashMap<&str, Vec<&Rule>> = decls.iter().map(|d| (d.name.as_str(), Vec::new())).collect();
    let mut tail: Vec<&Rule> = Vec::new();
    for rule in parts.iter().flat_map(|t| &t.rules) {
        match by_chain.get_mut(rule.chain.as_str()) {
            Some(rules) => rules.push(rule),
            None => tail.push(rule),
        }
    }
    let deletes: Vec<&ChainName> = parts.iter().flat_map(|t| &t.deletes).collect();
    let depth = depths(&decls, &by_chain);
    let mut order: Vec<&ChainDecl> = decls.clone();
    // Stable: chains of one depth keep their rendered order.
    order.sort_by_key(|d| depth.get(d.name.as_str()).copied().unwrap_or(0));
    let groups: Vec<&[&ChainDecl]> = if order.is_empty() { vec![&[]] } else { order.chunks(max_chains).collect() };
    let last = groups.len() - 1;
    for (i, group) in groups.into_iter().enumerate() {
        let mut text = String::new();
        let _ = writeln!(text, "*{}", first.name);
        for decl in group {
            let _ = writeln!(text, ":{} {} [0:0]", decl.name, decl.policy.as_deref().unwrap_or("-"));
        }
        if i == last {
            for chain in &deletes {
                let _ = writeln!(text, ":{chain} - [0:0]");
            }
        }
        for decl in group {
            for rule in &by_chain[decl.name.as_str()] {
                let _ = writeln!(text, "{rule}");
            }
        }
        if i == last {
            for rule in &tail {
                let _ = writeln!(text, "{rule}");
            }
            for chain in &deletes {
                let _ = writeln!(text, "-X {chain}");
            }
        }
        text.push_str("COMMIT\n");
        out.push(text);
    }
}

/// Depth of every declared chain in the jump graph: 0 when it jumps to no declared chain,
/// else one more than the deepest chain it jumps to. Iterative; a cycle (which iptables
/// refuses anyway) cannot loop: a chain on the current path counts as depth 0.
fn depths<'a>(decls: &[&'a ChainDecl], by_chain: &HashMap<&'a str, Vec<&'a Rule>>) -> HashMap<&'a str, usize> {
    let mut depth: HashMap<&'a str, usize> = HashMap::with_capacity(decls.len());
    let mut on_path: HashSet<&'a str> = HashSet::new();
    for decl in decls {
        let root = decl.name.as_str();
        if depth.contains_key(root) {
            continue;
        }
        // (chain, its targets, index of the next target to visit)
        let mut stack: Vec<(&'a str, Vec<&'a str>, usize)> = vec![(root, targets(root, by_chain), 0)];
        on_path.insert(root);
        while let Some((chain, next_targets, next)) = stack.last_mut() {
            if let Some(&target) = next_targets.get(*next) {
                *next += 1;
                if !depth.contains_key(target) && !on_path.contains(target) {
                    on_path.insert(target);
                    let t = targets(target, by_chain);
                    stack.push((target, t, 0));
                }
                continue;
            }
            let chain = *chain;
            let d = next_targets.iter().filter_map(|t| depth.get(t)).map(|d| d + 1).max().unwrap_or(0);
            depth.insert(chain, d);
            on_path.remove(chain);
            stack.pop();
        }
    }
    depth
}

/// The declared chains `chain`'s rules jump or go to.
fn targets<'a>(chain: &str, by_chain: &HashMap<&'a str, Vec<&'a Rule>>) -> Vec<&'a str> {
    let Some(rules) = by_chain.get(chain) else {
        return Vec::new();
    };
    let mut out: Vec<&'a str> = Vec::new();
    for rule in rules {
        if let Some((key, _)) = rule.target().and_then(|t| by_chain.get_key_value(t)) {
            if !out.contains(key) {
                out.push(key);
            }
        }
    }
    out
}
