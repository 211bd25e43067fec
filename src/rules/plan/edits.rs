//! Rule-level edits of one changed chain: the `-D`/`-I`/`-A` lines that turn the chain as it was
//! last applied into the next one inside a `--noflush` transaction, from a sequence diff. It
//! does not decide *whether* to edit a chain (plan options do) and never declares the chain.
//!
//! Line order matters because `iptables-restore` applies each line to the state the previous
//! lines left (both backends number rules that way): every `-D` comes first, then every
//! insertion in ascending final position, so `-I chain N` names the rule's place in the next
//! chain exactly (all rules before it are already final), and an insertion at the current end
//! is written `-A` (on nft an append alone does not make iptables read the chain back).
//!
//! Deletions name the rule by its spec, not its number: if someone inserted a rule into our
//! chain, a number would silently delete the wrong rule, while a spec deletes ours or fails the
//! restore (and the caller falls back to a full sync). A spec deletes the *first* equal rule,
//! so a chain in which a rule to delete has an equal twin is not edited (the caller rewrites it).

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::rules::ruleset::{Rule, RuleOp};

/// The edit lines that turn `old` into `new` (the rules of one chain, in order), or `None` when
/// more than `max_edits` lines would be needed or the edit cannot be written safely (a rule to
/// delete has a twin, or the middle of `old` holds equal rules). Empty when they are equal.
/// Linear in the chain length plus `O(m log m)` for `m` rules in the changed middle.
pub(super) fn edit_lines(old: &[&Rule], new: &[&Rule], max_edits: usize) -> Option<Vec<Rule>> {
    let prefix = old.iter().zip(new).take_while(|(a, b)| same(a, b)).count();
    let (old_rest, new_rest) = (&old[prefix..], &new[prefix..]);
    let suffix = old_rest.iter().rev().zip(new_rest.iter().rev()).take_while(|(a, b)| same(a, b)).count();
    let old_mid = &old_rest[..old_rest.len() - suffix];
    let new_mid = &new_rest[..new_rest.len() - suffix];
    if old_mid.len().abs_diff(new_mid.len()) > max_edits {
        return None;
    }
    let (kept_old, kept_new) = common_subsequence(old_mid, new_mid)?;
    let deleted: Vec<usize> = (0..old_mid.len()).filter(|i| !kept_old[*i]).collect();
    let inserted: Vec<usize> = (0..new_mid.len()).filter(|j| !kept_new[*j]).collect();
    if deleted.len() + inserted.len() > max_edits {
        return None;
    }
    let doomed: Vec<&Rule> = deleted.iter().map(|i| old_mid[*i]).collect();
    if has_twin(old, &doomed) {
        return None;
    }
    let mut lines = Vec::with_capacity(deleted.len() + inserted.len());
    for rule in doomed.iter().rev() {
        lines.push(Rule { op: RuleOp::Delete, ..(*rule).clone() });
    }
    let kept = old.len() - deleted.len();
    for (done, j) in inserted.into_iter().enumerate() {
        // The chain holds `kept + done` rules when this one goes in.
        let position = prefix + j + 1;
        let op = if position == kept + done + 1 { RuleOp::Append } else { RuleOp::Insert(Some(to_u32(position)?)) };
        lines.push(Rule { op, ..new_mid[j].clone() });
    }
    Some(lines)
}

/// Same rule text (the chain name aside: both sides are the same chain).
fn same(a: &Rule, b: &Rule) -> bool {
    a.args == b.args
}

fn rule_hash(rule: &Rule) -> u64 {
    let mut hasher = DefaultHasher::new();
    rule.args.hash(&mut hasher);
    hasher.finish()
}

fn to_u32(n: usize) -> Option<u32> {
    u32::try_from(n).ok()
}

/// A longest common subsequence of `old` and `new` as "kept" flags on both sides, or `None`
/// when `old` holds two equal rules (the match would be ambiguous). Rules of `old` are unique,
/// so each rule of `new` matches at most one of them and the longest common subsequence is the
/// longest increasing run of matched `old` positions (patience sorting).
fn common_subsequence(old: &[&Rule], new: &[&Rule]) -> Option<(Vec<bool>, Vec<bool>)> {
    let mut kept_old = vec![false; old.len()];
    let mut kept_new = vec![false; new.len()];
    if old.is_empty() || new.is_empty() {
        return Some((kept_old, kept_new));
    }
    let mut by_hash: HashMap<u64, usize> = HashMap::with_capacity(old.len());
    for (i, rule) in old.iter().enumerate() {
        match by_hash.entry(rule_hash(rule)) {
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
            // An equal rule, or (rarely) a hash collision: either way, rewrite instead.
            Entry::Occupied(_) => return None,
        }
    }
    // (new position, old position) of every match, in new order.
    let matches: Vec<(usize, usize)> = new
        .iter()
        .enumerate()
        .filter_map(|(j, rule)| by_hash.get(&rule_hash(rule)).filter(|i| same(old[**i], rule)).map(|i| (j, *i)))
        .collect();
    for k in longest_increasing(&matches) {
        let (j, i) = matches[k];
        kept_old[i] = true;
        kept_new[j] = true;
    }
    Some((kept_old, kept_new))
}

/// Indices into `matches` of a longest run strictly increasing in the old position.
fn longest_increasing(matches: &[(usize, usize)]) -> Vec<usize> {
    // tails[l]: index of the match ending the best run of length l + 1 found so far.
    let mut tails: Vec<usize> = Vec::new();
    let mut previous: Vec<Option<usize>> = vec![None; matches.len()];
    for (k, &(_, i)) in matches.iter().enumerate() {
        let length = tails.partition_point(|&t| matches[t].1 < i);
        previous[k] = length.checked_sub(1).map(|l| tails[l]);
        if length == tails.len() {
            tails.push(k);
        } else {
            tails[length] = k;
        }
    }
    let mut run = Vec::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(k) = at {
        run.push(k);
        at = previous[k];
    }
    run.reverse();
    run
}

/// Whether some rule of `doomed` equals more than one rule of `chain` (a delete by spec could
/// remove the wrong copy).
fn has_twin(chain: &[&Rule], doomed: &[&Rule]) -> bool {
    if doomed.is_empty() {
        return false;
    }
    if doomed.len() <= 4 {
        return doomed.iter().any(|d| chain.iter().filter(|r| same(r, d)).nth(1).is_some());
    }
    let mut counts: HashMap<u64, usize> = doomed.iter().map(|d| (rule_hash(d), 0)).collect();
    for rule in chain {
        if let Some(count) = counts.get_mut(&rule_hash(rule)) {
            *count += 1;
        }
    }
    // Equal hashes are counted as twins too: a collision only costs a rewrite.
    counts.values().any(|c| *c > 1) || doomed.len() != counts.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ruleset::ChainName;

    fn rules(names: &str) -> Vec<Rule> {
        let chain = ChainName::new("KUBE-SERVICES").unwrap();
        names.chars().map(|c| Rule::append(&chain).comment(c.to_string()).jump("ACCEPT")).collect()
    }

    /// Applies edit lines the way iptables-restore does (deletes by spec, first match).
    fn apply(old: &[Rule], lines: &[Rule]) -> Vec<Rule> {
        let mut chain: Vec<Rule> = old.to_vec();
        for line in lines {
            let stored = Rule { op: RuleOp::Append, ..line.clone() };
            match line.op {
                RuleOp::Append => chain.push(stored),
                RuleOp::Insert(Some(p)) => chain.insert(p as usize - 1, stored),
                RuleOp::Insert(None) => chain.insert(0, stored),
                RuleOp::Delete => {
                    let i = chain.iter().position(|r| r.args == line.args).expect("rule to delete exists");
                    chain.remove(i);
                }
            }
        }
        chain
    }

    fn edit(old: &str, new: &str, max: usize) -> Option<(Vec<Rule>, Vec<Rule>)> {
        let (old, new) = (rules(old), rules(new));
        let (o, n): (Vec<&Rule>, Vec<&Rule>) = (old.iter().collect(), new.iter().collect());
        let lines = edit_lines(&o, &n, max)?;
        assert_eq!(apply(&old, &lines), new);
        Some((lines, new))
    }

    fn ops(lines: &[Rule]) -> Vec<String> {
        lines.iter().map(|l| format!("{:?} {}", l.op, l.comment().unwrap_or(""))).collect()
    }

    #[test]
    fn one_rule_added_or_removed_is_one_line() {
        let (lines, _) = edit("abcdef", "abcXdef", 8).unwrap();
        assert_eq!(ops(&lines), ["Insert(Some(4)) X"]);
        let (lines, _) = edit("abcdef", "abdef", 8).unwrap();
        assert_eq!(ops(&lines), ["Delete c"]);
        let (lines, _) = edit("abc", "abcd", 8).unwrap();
        assert_eq!(ops(&lines), ["Append d"], "an insertion at the end is an append");
        assert!(edit("abc", "abc", 0).unwrap().0.is_empty());
    }

    #[test]
    fn deletes_come_first_and_inserts_ascend() {
        let (lines, _) = edit("abcdefgh", "aXcdYfgZh", 16).unwrap();
        assert_eq!(
            ops(&lines),
            ["Delete e", "Delete b", "Insert(Some(2)) X", "Insert(Some(5)) Y", "Insert(Some(8)) Z"]
        );
    }

    #[test]
    fn moves_and_large_edits() {
        edit("abcdefgh", "hgfedcba", 16).unwrap();
        edit("abcdefgh", "bcdefgha", 2).unwrap();
        assert!(edit("abcdefgh", "hgfedcba", 4).is_none(), "too many lines: rewrite");
        assert!(edit("abcdefgh", "ab", 3).is_none());
        edit("", "abc", 3).unwrap();
        edit("abc", "", 3).unwrap();
    }

    #[test]
    fn twins_are_not_deleted_by_spec() {
        assert!(edit("abcb", "abc", 8).is_none(), "which b would go is up to the kernel");
        assert!(edit("aXbXc", "aXbc", 8).is_none());
        edit("abcb", "abcbd", 8).unwrap();
    }

    #[test]
    fn longest_increasing_run() {
        let m: Vec<(usize, usize)> = [3, 1, 4, 1, 5, 9, 2, 6].iter().enumerate().map(|(j, i)| (j, *i)).collect();
        let run: Vec<usize> = longest_increasing(&m).into_iter().map(|k| m[k].1).collect();
        assert_eq!(run.len(), 4);
        assert!(run.windows(2).all(|w| w[0] < w[1]));
    }
}
