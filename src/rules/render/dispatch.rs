//! `--services-dispatch=tree`: a pure transform of a rendered nat table that turns the flat
//! scan of `KUBE-SERVICES` into a dispatch on the destination address, and its inverse
//! ([`flatten`]) for `kubenat diff`. It renders no service itself.
//!
//! # Layout
//!
//! The `KUBE-SERVICES` rules that match one destination host (`-d a.b.c.d`, `/32` or `/128`)
//! are grouped by that address and placed in a trie that consumes 4 bits of the address per
//! level (prefix lengths are multiples of 4, so one level has at most 16 children whatever
//! the service CIDR). A node whose group holds at most [`LEAF_RULES`] rules — or whose rules
//! all belong to one address — is a leaf chain holding those rules; any other node holds one
//! `-d <child prefix> -j KUBE-DISP-…` rule per non-empty child. A level where every address
//! shares the next nibble is skipped (path compression), so the root of a /12 service CIDR
//! dispatches on /16s directly. The root is `KUBE-SERVICES` itself; when it holds at most
//! [`LEAF_RULES`] rules the table is left exactly as rendered. The rules that are not
//! dispatched — the "must be the last rule" jumps to `KUBE-NODEPORTS`, and anything before
//! the first host rule — stay in `KUBE-SERVICES`, in their order, around the dispatch rules.
//!
//! A first packet therefore walks at most 16 rules per level and about log16(N) levels
//! instead of all N service rules; a packet for no service (pod → pod) stops after the root's
//! ≤ 16 dispatch rules instead of scanning every service.
//!
//! # Why first-match semantics are preserved
//!
//! Every dispatched rule matches a single destination address, so rules for different
//! addresses can never match the same packet: their relative order is irrelevant, and only
//! the order among rules of one address matters. Those rules stay together, in their original
//! order, in exactly one leaf, and the path to that leaf is the only one whose dispatch
//! prefixes contain the address. A packet therefore meets, in order, exactly the dispatched
//! rules that could match it in the flat chain. If none of them ends its walk (the flat chain
//! would have continued), each chain on the path falls through to its caller, whose remaining
//! dispatch rules are for disjoint prefixes and cannot match, until `KUBE-SERVICES` continues
//! with the rules that were after the dispatched ones — as in the flat chain. Dispatched
//! rules are taken only from one contiguous run (after any leading non-host rules and before
//! the first non-host rule that follows), so no non-dispatched rule changes sides either.
//!
//! # Names
//!
//! A dispatch chain is named by the prefix it serves ([`chain_names::dispatch_chain`]), so
//! adding a service rewrites its leaf — plus, when the tree reshapes around it, the parent and
//! the chains created for the new shape — and leaves every other chain byte-identical for the
//! partial planner.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::IpFamily;
use crate::rules::chain_names::{self, dispatch_chain, is_dispatch_chain, KUBE_NODEPORTS, KUBE_SERVICES};
use crate::rules::ruleset::{Arg, ArgRef, ChainName, Rule, RuleOp, Ruleset, Table, TableName};

/// A node with at most this many rules becomes a leaf chain. With 16-way levels this keeps
/// every chain on a path at ≤ 16 rules; see `BENCHMARKS.md` for the measurement.
pub const LEAF_RULES: usize = 16;

/// Address bits consumed per level.
const STRIDE: u32 = 4;

/// Deepest dispatch nesting [`flatten`] follows (IPv6 needs at most 128 / 4 = 32).
const MAX_DEPTH: usize = 40;

/// One address and its rules, in their original order.
type Group = (u128, Vec<Rule>);

fn width(family: IpFamily) -> u32 {
    match family {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    }
}

/// The single destination host of a dispatchable `KUBE-SERVICES` rule, as an integer.
fn host_key(rule: &Rule, family: IpFamily) -> Option<u128> {
    if rule.op != RuleOp::Append || rule.target() == Some(KUBE_NODEPORTS) {
        return None;
    }
    let mut dsts = rule.args.iter().filter(|a| a.flag == "-d" || a.flag == "--destination");
    let dst = dsts.next()?;
    if dsts.next().is_some() || dst.negated || dst.values.len() != 1 {
        return None;
    }
    match (family, host(dst.value()?)?) {
        (IpFamily::V4, IpAddr::V4(v4)) => Some(u128::from(u32::from(v4))),
        (IpFamily::V6, IpAddr::V6(v6)) => Some(u128::from(v6)),
        _ => None,
    }
}

/// `a.b.c.d`, `a.b.c.d/32`, `x::y` or `x::y/128` as an address; anything else is not a host.
fn host(value: &str) -> Option<IpAddr> {
    if value.contains('/') {
        let net: IpNet = value.parse().ok()?;
        (net.prefix_len() == net.max_prefix_len()).then_some(net.addr())
    } else {
        value.parse().ok()
    }
}

/// The prefix of length `len` containing address `key`.
fn prefix(key: u128, len: u32, family: IpFamily) -> IpNet {
    // `len` is a multiple of STRIDE no larger than the family's width, so `new` cannot fail.
    let len = len as u8;
    match family {
        IpFamily::V4 => {
            let addr = Ipv4Addr::from(key as u32);
            IpNet::V4(Ipv4Net::new(addr, len.min(32)).unwrap_or_default().trunc())
        }
        IpFamily::V6 => IpNet::V6(Ipv6Net::new(Ipv6Addr::from(key), len.min(128)).unwrap_or_default().trunc()),
    }
}

/// Number of leading bits `a` and `b` share within `width` bits.
fn common_bits(a: u128, b: u128, width: u32) -> u32 {
    ((a ^ b).leading_zeros().saturating_sub(128 - width)).min(width)
}

/// The 4 bits of `key` after its first `offset` bits.
fn nibble(key: u128, offset: u32, width: u32) -> u128 {
    (key >> (width - offset - STRIDE)) & 0xf
}

/// What [`build`] produces: new chains in creation order, and every tree rule.
#[derive(Default)]
struct Tree {
    chains: Vec<ChainName>,
    rules: Vec<Rule>,
}

/// Writes `chain`'s rules for `groups` (sorted by address) and, depth first, its children's.
fn build(chain: &ChainName, groups: &mut [Group], family: IpFamily, tree: &mut Tree) {
    let width = width(family);
    let count: usize = groups.iter().map(|(_, rules)| rules.len()).sum();
    let (Some(first), Some(last)) = (groups.first(), groups.last()) else {
        return;
    };
    if count <= LEAF_RULES || groups.len() == 1 {
        for (_, rules) in groups.iter_mut() {
            for mut rule in std::mem::take(rules) {
                rule.chain = chain.clone();
                tree.rules.push(rule);
            }
        }
        return;
    }
    // Distinct addresses differ within `width` bits, so `split + STRIDE <= width`.
    let split = common_bits(first.0, last.0, width) / STRIDE * STRIDE;
    let mut children: Vec<(ChainName, usize, usize)> = Vec::new();
    let mut start = 0;
    for end in 1..=groups.len() {
        if end == groups.len() || nibble(groups[end].0, split, width) != nibble(groups[start].0, split, width) {
            let net = prefix(groups[start].0, split + STRIDE, family);
            let name = dispatch_chain(net);
            tree.rules.push(Rule::append(chain).arg(Arg::new("-d", net.to_string())).jump(name.as_str()));
            children.push((name, start, end));
            start = end;
        }
    }
    for (name, start, end) in children {
        tree.chains.push(name.clone());
        build(&name, &mut groups[start..end], family, tree);
    }
}

/// Where a `KUBE-SERVICES` rule is relative to the dispatched run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first host rule: stays, before the dispatch rules.
    Leading,
    /// Inside the run of host rules: moves into the tree.
    Run,
    /// After the run: stays, after the dispatch rules.
    Tail,
}

/// Rewrites the nat table `nat` (as rendered for `family`) into the tree layout. Leaves it
/// untouched when `KUBE-SERVICES` has at most [`LEAF_RULES`] dispatchable rules.
pub fn dispatch_tree(nat: &mut Table, family: IpFamily) {
    let services = chain_names::fixed(KUBE_SERVICES);
    let dispatchable = nat
        .rules
        .iter()
        .filter(|r| r.chain == services)
        .skip_while(|r| host_key(r, family).is_none())
        .take_while(|r| host_key(r, family).is_some())
        .count();
    if dispatchable <= LEAF_RULES {
        return;
    }
    let mut by_host: BTreeMap<u128, Vec<Rule>> = BTreeMap::new();
    let mut kept = Vec::with_capacity(nat.rules.len());
    let mut tail_at = None;
    let mut stage = Stage::Leading;
    for rule in std::mem::take(&mut nat.rules) {
        if rule.chain != services {
            kept.push(rule);
            continue;
        }
        let key = host_key(&rule, family);
        stage = match (stage, key) {
            (Stage::Leading, None) => Stage::Leading,
            (Stage::Leading | Stage::Run, Some(_)) => Stage::Run,
            (Stage::Run | Stage::Tail, _) => Stage::Tail,
        };
        match (stage, key) {
            (Stage::Run, Some(key)) => by_host.entry(key).or_default().push(rule),
            _ => {
                if stage == Stage::Tail && tail_at.is_none() {
                    tail_at = Some(kept.len());
                }
                kept.push(rule);
            }
        }
    }
    let mut groups: Vec<Group> = by_host.into_iter().collect();
    let mut tree = Tree::default();
    build(&services, &mut groups, family, &mut tree);
    for chain in &tree.chains {
        nat.push_chain(chain);
    }
    let at = tail_at.unwrap_or(kept.len());
    kept.splice(at..at, tree.rules);
    nat.rules = kept;
}

/// `-d <prefix> -j KUBE-DISP-…` and nothing else: the prefix and the target.
pub(crate) fn dispatch_rule(rule: &Rule) -> Option<(IpNet, &str)> {
    if rule.args.len() != 2 {
        return None;
    }
    let mut args = rule.args.iter();
    let (dst, jump) = (args.next()?, args.next()?);
    let target = jump.value().filter(|t| is_dispatch_chain(t))?;
    let plain = |a: &ArgRef, flags: [&str; 2]| !a.negated && a.values.len() == 1 && flags.contains(&a.flag);
    if rule.op != RuleOp::Append || !plain(&dst, ["-d", "--destination"]) || !plain(&jump, ["-j", "--jump"]) {
        return None;
    }
    Some((dst.value()?.parse::<IpNet>().ok()?.trunc(), target))
}

/// Dispatch chains and their rules in one nat table.
struct DispatchChains<'a> {
    rules: HashMap<&'a str, Vec<&'a Rule>>,
}

impl<'a> DispatchChains<'a> {
    /// The rules `rule` stands for, with their chain set to `KUBE-SERVICES`: itself, or (for
    /// a dispatch rule) its target's rules, expanded, when every one of them can only match
    /// destinations inside the dispatch prefix. `None` when the rule cannot be inlined
    /// without changing what it matches.
    fn expand(&self, rule: &'a Rule, within: IpNet, depth: usize, used: &mut HashSet<&'a str>) -> Option<Vec<Rule>> {
        let Some((net, target)) = dispatch_rule(rule) else {
            let ip = rule.args.iter().find(|a| a.flag == "-d" || a.flag == "--destination")?;
            let inside = !ip.negated && ip.value().and_then(host).is_some_and(|h| within.contains(&h));
            let mut inlined = rule.clone();
            inlined.chain = chain_names::fixed(KUBE_SERVICES);
            return inside.then_some(vec![inlined]);
        };
        if depth > MAX_DEPTH || !within.contains(&net) {
            return None;
        }
        let mut out = Vec::new();
        for child in self.rules.get(target)? {
            out.extend(self.expand(child, net, depth + 1, used)?);
        }
        used.insert(target);
        Some(out)
    }
}

/// The ruleset with every tree-dispatch rule of nat `KUBE-SERVICES` replaced by the rules it
/// leads to, and the dispatch chains so inlined (and no longer jumped to) removed: a tree-mode
/// dump compares equal to the flat render of the same services. A dispatch rule whose chains
/// hold a rule that could match outside its prefix is left as it is (and so shows up in a
/// diff). Borrows when there is nothing to flatten.
pub fn flatten(ruleset: &Ruleset) -> Cow<'_, Ruleset> {
    let Some(nat) = ruleset.table(TableName::Nat) else {
        return Cow::Borrowed(ruleset);
    };
    let has_dispatch = nat.chains.iter().any(|c| is_dispatch_chain(c.name.as_str()));
    let simple = nat.rules.iter().all(|r| r.op == RuleOp::Append) && nat.deletes.is_empty();
    if !has_dispatch || !simple {
        return Cow::Borrowed(ruleset);
    }
    let mut chains = DispatchChains { rules: HashMap::new() };
    for rule in nat.rules.iter().filter(|r| is_dispatch_chain(r.chain.as_str())) {
        chains.rules.entry(rule.chain.as_str()).or_default().push(rule);
    }
    for decl in nat.chains.iter().filter(|c| is_dispatch_chain(c.name.as_str())) {
        chains.rules.entry(decl.name.as_str()).or_default();
    }
    let mut used = HashSet::new();
    let mut rules = Vec::with_capacity(nat.rules.len());
    for rule in nat.rules.iter().filter(|r| !is_dispatch_chain(r.chain.as_str())) {
        let entry = dispatch_rule(rule).filter(|_| rule.chain.as_str() == KUBE_SERVICES);
        let inlined = entry.and_then(|(net, _)| {
            let everything = match net {
                IpNet::V4(_) => IpNet::V4(Ipv4Net::default()),
                IpNet::V6(_) => IpNet::V6(Ipv6Net::default()),
            };
            chains.expand(rule, everything, 0, &mut used)
        });
        match inlined {
            Some(expanded) => rules.extend(expanded),
            None => rules.push(rule.clone()),
        }
    }
    let removed = unreachable_inlined(&chains, &rules, &used);
    let mut out = ruleset.clone();
    let table = out.table_mut(TableName::Nat);
    for rule in nat.rules.iter().filter(|r| is_dispatch_chain(r.chain.as_str())) {
        if !removed.contains(rule.chain.as_str()) {
            rules.push(rule.clone());
        }
    }
    table.chains.retain(|c| !removed.contains(c.name.as_str()));
    table.rules = rules;
    Cow::Owned(out)
}

/// Inlined dispatch chains that no remaining rule reaches.
fn unreachable_inlined<'a>(chains: &DispatchChains<'a>, rules: &[Rule], used: &HashSet<&'a str>) -> HashSet<&'a str> {
    let mut reached: HashSet<&str> = HashSet::new();
    let mut todo: Vec<&str> = rules.iter().filter_map(Rule::target).filter(|t| is_dispatch_chain(t)).collect();
    let mut kept_roots: Vec<&str> = chains.rules.keys().copied().filter(|c| !used.contains(c)).collect();
    todo.append(&mut kept_roots);
    while let Some(chain) = todo.pop() {
        if reached.insert(chain) {
            if let Some(children) = chains.rules.get(chain) {
                todo.extend(children.iter().filter_map(|r| r.target()).filter(|t| is_dispatch_chain(t)));
            }
        }
    }
    used.iter().copied().filter(|c| !reached.contains(c)).collect()
}
