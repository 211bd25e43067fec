//! One table as the kernel holds it, and one parsed restore section applied to it the way
//! `iptables-restore` does: declarations create or flush, rules append/insert/delete, `-X`
//! deletes an empty unreferenced chain, and `COMMIT` validates every jump before anything is
//! kept. The caller applies to a copy, so a rejected section leaves the table unchanged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::input::{Facts, Reject};
use crate::rules::canonical::canonical;
use crate::rules::parse::{builtin_chains, is_builtin_chain};
use crate::rules::ruleset::{ChainName, Rule, RuleOp, Table, TableName};

/// Targets that are extensions, not chains (those iptables ships and kube-proxy, flannel,
/// Docker or the kubelet use).
const EXTENSION_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "QUEUE",
    "REJECT",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "REDIRECT",
    "NETMAP",
    "MARK",
    "CONNMARK",
    "LOG",
    "NFLOG",
    "NFQUEUE",
    "NOTRACK",
    "CT",
    "TCPMSS",
    "TPROXY",
    "CLASSIFY",
    "DSCP",
    "TOS",
    "TTL",
    "HL",
    "TEE",
    "TRACE",
    "SET",
    "AUDIT",
    "CHECKSUM",
    "SECMARK",
    "CONNSECMARK",
    "IDLETIMER",
    "SYNPROXY",
    "HMARK",
    "ECN",
    "LED",
];

/// Targets the kernel accepts only in the nat table.
const NAT_ONLY_TARGETS: &[&str] = &["DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"];

/// One chain: a built-in chain's policy, and its rules (stored as `-A` rules, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub name: ChainName,
    pub policy: Option<String>,
    pub rules: Vec<Rule>,
}

impl Chain {
    fn new(name: ChainName) -> Self {
        Chain { name, policy: None, rules: Vec::new() }
    }
}

/// One table: its built-in chains (always present) and user chains, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TableState {
    pub name: TableName,
    pub chains: BTreeMap<String, Chain>,
}

impl TableState {
    /// A freshly loaded table: built-in chains with policy ACCEPT, nothing else.
    pub fn new(name: TableName) -> Self {
        let chains = builtin_chains(name)
            .iter()
            .map(|b| (b.to_string(), Chain { policy: Some("ACCEPT".into()), ..Chain::new(ChainName::fixed(b)) }))
            .collect();
        TableState { name, chains }
    }

    /// The user-defined chains.
    pub fn user_chains(&self) -> impl Iterator<Item = &ChainName> {
        self.chains.values().map(|c| &c.name).filter(|c| !is_builtin_chain(self.name, c.as_str()))
    }

    /// Applies one parsed section (the table must be a copy: on error it is half-changed).
    pub fn apply(&mut self, section: &Table, facts: &Facts) -> Result<(), Reject> {
        for flushed in &facts.flushes {
            let named = |name: &String| flushed.as_ref().is_none_or(|f| f == name);
            self.chains.iter_mut().filter(|(name, _)| named(name)).for_each(|(_, c)| c.rules.clear());
        }
        for decl in &section.chains {
            let builtin = is_builtin_chain(self.name, decl.name.as_str());
            let chain = self.entry(&decl.name);
            if builtin {
                // iptables-restore sets a built-in chain's policy and never flushes it here.
                chain.policy = decl.policy.clone().or(chain.policy.take());
            } else {
                chain.rules.clear();
            }
        }
        for name in section.deletes.iter().filter(|d| facts.declared.contains(d.as_str())) {
            self.entry(name).rules.clear();
        }
        for (index, rule) in section.rules.iter().enumerate() {
            self.rule(rule).map_err(|message| Reject::at(facts.rule_line(index), message))?;
        }
        for name in &section.deletes {
            let line = facts.delete_lines.get(name.as_str()).copied().unwrap_or(facts.commit_line);
            self.delete_chain(name).map_err(|message| Reject::at(line, message))?;
        }
        self.validate().map_err(|message| Reject::at(facts.commit_line, message))
    }

    /// The chain `name`, created if missing.
    fn entry(&mut self, name: &ChainName) -> &mut Chain {
        self.chains.entry(name.to_string()).or_insert_with(|| Chain::new(name.clone()))
    }

    /// One `-A`, `-I` or `-D` line.
    fn rule(&mut self, rule: &Rule) -> Result<(), String> {
        let Some(chain) = self.chains.get_mut(rule.chain.as_str()) else {
            return Err(format!("Chain '{}' does not exist", rule.chain));
        };
        let stored = Rule { op: RuleOp::Append, ..rule.clone() };
        match rule.op {
            RuleOp::Append => chain.rules.push(stored),
            RuleOp::Insert(position) => {
                let index = position.map_or(0, |p| (p as usize).saturating_sub(1));
                if index > chain.rules.len() {
                    return Err("Index of insertion too big.".into());
                }
                chain.rules.insert(index, stored);
            }
            RuleOp::Delete => {
                let wanted = canonical(rule);
                let Some(index) = chain.rules.iter().position(|r| canonical(r) == wanted) else {
                    return Err("Bad rule (does a matching rule exist in that chain?).".into());
                };
                chain.rules.remove(index);
            }
        }
        Ok(())
    }

    /// `-X`: only an existing, empty user chain nothing jumps to.
    fn delete_chain(&mut self, name: &ChainName) -> Result<(), String> {
        match self.chains.get(name.as_str()) {
            None => return Err(format!("Chain '{name}' does not exist")),
            Some(_) if is_builtin_chain(self.name, name.as_str()) => {
                return Err(format!("Cannot delete built-in chain '{name}'"))
            }
            Some(chain) if !chain.rules.is_empty() => return Err(format!("Directory not empty: chain '{name}'")),
            Some(_) => {}
        }
        if let Some((from, _)) = self.referrers(name.as_str()).next() {
            return Err(format!("Device or resource busy: chain '{name}' is referenced by a rule in '{from}'"));
        }
        self.chains.remove(name.as_str());
        Ok(())
    }

    /// Every (chain, rule) whose target is `target`.
    fn referrers<'s>(&'s self, target: &'s str) -> impl Iterator<Item = (&'s ChainName, &'s Rule)> + 's {
        let all = self.chains.values().flat_map(|c| c.rules.iter().map(move |r| (&c.name, r)));
        all.filter(move |(_, r)| r.target() == Some(target))
    }

    /// What the kernel checks at COMMIT: every target is a user chain or a known extension
    /// valid in this table, and jumps between user chains form no loop.
    fn validate(&self) -> Result<(), String> {
        for rule in self.chains.values().flat_map(|c| &c.rules) {
            let Some(target) = rule.target() else { continue };
            if self.chains.contains_key(target) {
                if is_builtin_chain(self.name, target) {
                    return Err(format!("Cannot jump to built-in chain '{target}'"));
                }
            } else if !EXTENSION_TARGETS.contains(&target) {
                return Err(format!("Chain '{target}' does not exist"));
            } else if NAT_ONLY_TARGETS.contains(&target) && self.name != TableName::Nat {
                return Err(format!("{target} target is only valid in the nat table, not {}", self.name));
            }
        }
        match self.find_loop() {
            Some(chain) => Err(format!("Too many levels of symbolic links: loop through chain '{chain}'")),
            None => Ok(()),
        }
    }

    /// A user chain that can reach itself through jumps, if any (depth-first, colours).
    fn find_loop(&self) -> Option<&str> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Open,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
        for start in self.chains.keys() {
            if marks.contains_key(start.as_str()) {
                continue;
            }
            let start = start.as_str();
            // Stack of (chain, index of the next rule to follow).
            let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
            marks.insert(start, Mark::Open);
            while let Some((chain, next)) = stack.pop() {
                let rules = self.chains.get(chain).map(|c| c.rules.as_slice()).unwrap_or_default();
                let Some(rule) = rules.get(next) else {
                    marks.insert(chain, Mark::Done);
                    continue;
                };
                stack.push((chain, next + 1));
                let Some((target, _)) = rule.target().and_then(|t| self.chains.get_key_value(t)) else { continue };
                let target = target.as_str();
                match marks.get(target) {
                    Some(Mark::Open) => return Some(target),
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(target, Mark::Open);
                        stack.push((target, 0));
                    }
                }
            }
        }
        None
    }

    /// The table in `iptables-save` form: built-in chains with policies, user chains, rules
    /// chain by chain, `COMMIT`.
    pub fn write_save(&self, out: &mut String) {
        let builtins = builtin_chains(self.name);
        let ordered: Vec<&Chain> = builtins
            .iter()
            .filter_map(|b| self.chains.get(*b))
            .chain(self.chains.values().filter(|c| !builtins.contains(&c.name.as_str())))
            .collect();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "*{}", self.name);
        for chain in &ordered {
            let _ = writeln!(out, ":{} {} [0:0]", chain.name, chain.policy.as_deref().unwrap_or("-"));
        }
        for rule in ordered.iter().flat_map(|c| &c.rules) {
            let _ = writeln!(out, "{rule}");
        }
        out.push_str("COMMIT\n");
    }
}
