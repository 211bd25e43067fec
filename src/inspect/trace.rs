//! Packet tracer: where a new connection goes through a ruleset (nat, then filter, then nat
//! POSTROUTING), with one outcome per probabilistic path and the filter rule that accepted,
//! dropped or rejected it. It reads rules, never the kernel.
//!
//! The walk models a fresh connection's first packet: conntrack state `NEW`, no mark except the
//! ones set during the walk, no `-m recent` history (affinity rules are skipped and noted).
//! It is the oracle of the behaviour tests, so it reads both the `iptables-restore` input form
//! and the canonical `iptables-save` form, and never panics on odd rules: what it cannot
//! evaluate does not match and is reported in [`Trace::notes`].

mod display;
mod index;
mod matches;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
mod values;
mod walk;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use self::index::ChainIndex;
use self::walk::{End, Path, Walker};
use crate::model::{IpFamily, Protocol};
use crate::rules::ruleset::{Ruleset, TableName};

/// The note added when some path passed a session-affinity rule.
pub const AFFINITY_NOTE: &str =
    "affinity rule (-m recent --rcheck) skipped: a client with history would stick to its last endpoint";

/// The first packet of a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Generated on the node itself: starts at nat `OUTPUT` instead of `PREROUTING`.
    pub from_node: bool,
    /// The interface the packet arrived on (`-i`); `None` matches no `-i` rule.
    pub in_interface: Option<String>,
}

impl Packet {
    /// A packet arriving from the network (not from the node), on no particular interface.
    pub fn new(src: IpAddr, dst: SocketAddr, protocol: Protocol) -> Self {
        Packet { src, dst: dst.ip(), dport: dst.port(), protocol, from_node: false, in_interface: None }
    }
}

/// What the tracer knows about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceEnv {
    /// The node's addresses: they (and loopback) match `-m addrtype --src-type/--dst-type LOCAL`
    /// and make a destination local (filter `INPUT` rather than `FORWARD`).
    pub local_ips: Vec<IpAddr>,
}

/// Where a path ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Destination rewritten to this endpoint.
    Dnat(SocketAddr),
    /// Redirected to this port on the node.
    Redirect(u16),
    /// No service matched: the packet continues to its original destination untouched (and no
    /// filter rule decided its fate).
    Accept,
    /// No service matched, and a filter rule accepted it (`ACCEPT`), e.g. a healthCheckNodePort
    /// in filter `KUBE-NODEPORTS`.
    FilterAccept {
        /// Table-qualified chain, e.g. `filter/KUBE-NODEPORTS`.
        chain: String,
        /// The rule's comment.
        comment: Option<String>,
    },
    /// Dropped (`DROP`, or a built-in chain's DROP policy).
    Drop {
        /// Table-qualified chain, e.g. `filter/KUBE-PROXY-FIREWALL`.
        chain: String,
        /// The rule's comment.
        comment: Option<String>,
    },
    /// Rejected (`REJECT`).
    Reject {
        /// Table-qualified chain, e.g. `filter/KUBE-SERVICES`.
        chain: String,
        /// The rule's comment.
        comment: Option<String>,
    },
    /// The ruleset cannot be walked here: a jump loop, nesting deeper than 64 chains, or too
    /// many probabilistic branches. The kernel would refuse such a ruleset (loops) or the
    /// tracer gave up; either way it is a bug in the rules or a limit of the tracer.
    Aborted {
        /// Table-qualified chain where the walk stopped.
        chain: String,
        /// What went wrong.
        reason: String,
    },
}

/// One path through the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Probability of this path (product of the `-m statistic` choices along it).
    pub probability: f64,
    /// Chains entered, in order, table-qualified (`nat/KUBE-SERVICES`), across nat, filter and
    /// nat POSTROUTING.
    pub chains: Vec<String>,
    /// Where the packet ends.
    pub verdict: Verdict,
    /// Whether nat `POSTROUTING` source-NATs it (`MASQUERADE`/`SNAT`). Always false for
    /// packets delivered to the node itself (they skip POSTROUTING) and for dropped ones.
    pub masquerade: bool,
    /// Whether the path passed a `-m recent --rcheck/--update` (session affinity) rule.
    pub affinity_checked: bool,
    /// The rule that decided an `ACCEPT` ([`Verdict::FilterAccept`]), `DROP` or `REJECT`
    /// verdict, as written in the input (`-A CHAIN …`); `None` for other verdicts and for a
    /// chain's policy.
    pub rule: Option<String>,
}

/// Every path a packet can take, with notes on what the tracer could not evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The packet's original destination.
    pub destination: SocketAddr,
    /// One outcome per path, in rule order; probabilities sum to 1.
    pub outcomes: Vec<Outcome>,
    /// Sentences about skipped or unsupported rules, each once.
    pub notes: Vec<String>,
}

impl Trace {
    /// Total probability per DNAT destination.
    pub fn endpoints(&self) -> BTreeMap<SocketAddr, f64> {
        let mut out = BTreeMap::new();
        for o in &self.outcomes {
            if let Verdict::Dnat(addr) = o.verdict {
                *out.entry(addr).or_insert(0.0) += o.probability;
            }
        }
        out
    }

    /// Whether every path is rejected.
    pub fn is_reject(&self) -> bool {
        self.all(|v| matches!(v, Verdict::Reject { .. }))
    }

    /// Whether every path is dropped.
    pub fn is_drop(&self) -> bool {
        self.all(|v| matches!(v, Verdict::Drop { .. }))
    }

    /// Whether no path matched a service (the packet continues untouched).
    pub fn is_accept(&self) -> bool {
        self.all(|v| matches!(v, Verdict::Accept))
    }

    /// Total probability of the paths that are masqueraded.
    pub fn masquerade_probability(&self) -> f64 {
        self.outcomes.iter().filter(|o| o.masquerade).map(|o| o.probability).sum()
    }

    fn all(&self, pred: impl Fn(&Verdict) -> bool) -> bool {
        !self.outcomes.is_empty() && self.outcomes.iter().all(|o| pred(&o.verdict))
    }
}

/// Traces `packet` through `ruleset` as the kernel would: nat `PREROUTING` (or `OUTPUT` when
/// `from_node`), then filter `INPUT` (local destination) or `FORWARD` — `OUTPUT` for the node's
/// own packets, then nat `POSTROUTING`, and filter `INPUT` again when the node's packet is
/// delivered to the node itself. Built-in chains without rules in the input get kube-proxy's
/// jump rules (a restore input never contains them); this is noted.
pub fn trace(ruleset: &Ruleset, packet: &Packet, env: &TraceEnv) -> Trace {
    let entry_rules = index::kube_proxy_entry_rules();
    let index = ChainIndex::new(ruleset, &entry_rules);
    let mut walker = Walker::new(&index, packet, env);
    if IpFamily::of(&packet.src) != IpFamily::of(&packet.dst) {
        walker.note("source and destination are of different IP families".into());
    }
    let nat_entry = if packet.from_node { "OUTPUT" } else { "PREROUTING" };
    let mut outcomes = Vec::new();
    for (path, end) in walker.walk_table(TableName::Nat, nat_entry, Path::new(packet)) {
        let verdict = match end {
            End::Dnat(to) => Verdict::Dnat(to),
            End::Redirect(port) => Verdict::Redirect(port),
            End::Accept | End::Accepted { .. } => Verdict::Accept,
            End::SourceNat => {
                walker.note(format!("MASQUERADE/SNAT in nat/{nat_entry}: treated as no service matched"));
                Verdict::Accept
            }
            terminal => {
                let (verdict, rule) = decided(terminal);
                outcomes.push(finish(path, verdict, rule, false));
                continue;
            }
        };
        after_nat(&mut walker, path, verdict, &mut outcomes);
    }
    if outcomes.iter().any(|o| o.affinity_checked) {
        walker.note(AFFINITY_NOTE.to_string());
    }
    Trace { destination: SocketAddr::new(packet.dst, packet.dport), outcomes, notes: walker.notes }
}

/// What a filter walk did with a packet the nat walk gave `verdict`.
enum Filtered {
    /// Dropped, rejected or aborted: the path ends here.
    Ended(Verdict, Option<String>),
    /// Let through: the verdict (a filter `ACCEPT` of a packet no service matched becomes
    /// [`Verdict::FilterAccept`]) and the rule that accepted it, if one did.
    Passed(Verdict, Option<String>),
}

fn filtered(end: End, verdict: &Verdict) -> Filtered {
    match end {
        End::Drop { .. } | End::Reject { .. } | End::Aborted { .. } => {
            let (verdict, rule) = decided(end);
            Filtered::Ended(verdict, rule)
        }
        End::Accepted { .. } if *verdict == Verdict::Accept => {
            let (verdict, rule) = decided(end);
            Filtered::Passed(verdict, rule)
        }
        _ => Filtered::Passed(verdict.clone(), None),
    }
}

/// The filter walk, then nat POSTROUTING for packets that are not delivered locally (and filter
/// INPUT after it for the node's packets to itself).
fn after_nat(walker: &mut Walker<'_, '_>, mut path: Path, verdict: Verdict, outcomes: &mut Vec<Outcome>) {
    let from_node = walker.node_originated();
    if let Verdict::Redirect(port) = verdict {
        path.dst = walker.redirect_address(&path.dst);
        path.dport = port;
    }
    let local = walker.is_local(&path.dst);
    let filter_chain = match (from_node, local) {
        (true, _) => "OUTPUT",
        (false, true) => "INPUT",
        (false, false) => "FORWARD",
    };
    for (path, end) in walker.walk_table(TableName::Filter, filter_chain, path) {
        match filtered(end, &verdict) {
            Filtered::Ended(verdict, rule) => outcomes.push(finish(path, verdict, rule, false)),
            Filtered::Passed(verdict, rule) if local && !from_node => outcomes.push(finish(path, verdict, rule, false)),
            Filtered::Passed(verdict, rule) => {
                let delivered_here = from_node && local;
                postrouting(walker, path, (verdict, rule), delivered_here, outcomes);
            }
        }
    }
}

/// nat POSTROUTING; then, for a packet the node sends to itself, filter INPUT, whose own
/// decision (if it makes one) replaces the one filter OUTPUT made.
fn postrouting(
    walker: &mut Walker<'_, '_>,
    path: Path,
    (verdict, rule): (Verdict, Option<String>),
    delivered_here: bool,
    outcomes: &mut Vec<Outcome>,
) {
    for (path, end) in walker.walk_table(TableName::Nat, "POSTROUTING", path) {
        let masquerade = match end {
            End::Drop { .. } | End::Reject { .. } | End::Aborted { .. } => {
                let (verdict, rule) = decided(end);
                outcomes.push(finish(path, verdict, rule, false));
                continue;
            }
            End::SourceNat => true,
            _ => false,
        };
        if !delivered_here {
            outcomes.push(finish(path, verdict.clone(), rule.clone(), masquerade));
            continue;
        }
        for (path, end) in walker.walk_table(TableName::Filter, "INPUT", path) {
            match filtered(end, &verdict) {
                Filtered::Ended(verdict, rule) => outcomes.push(finish(path, verdict, rule, false)),
                Filtered::Passed(input_verdict, Some(input_rule)) => {
                    outcomes.push(finish(path, input_verdict, Some(input_rule), masquerade))
                }
                Filtered::Passed(_, None) => outcomes.push(finish(path, verdict.clone(), rule.clone(), masquerade)),
            }
        }
    }
}

/// The verdict a walk's end gives, with the rule that decided it.
fn decided(end: End) -> (Verdict, Option<String>) {
    match end {
        End::Drop { chain, comment, rule } => (Verdict::Drop { chain, comment }, rule),
        End::Reject { chain, comment, rule } => (Verdict::Reject { chain, comment }, rule),
        End::Accepted { chain, comment, rule } => (Verdict::FilterAccept { chain, comment }, Some(rule)),
        End::Aborted { chain, reason } => (Verdict::Aborted { chain, reason }, None),
        End::Dnat(to) => (Verdict::Dnat(to), None),
        End::Redirect(port) => (Verdict::Redirect(port), None),
        End::Accept | End::SourceNat => (Verdict::Accept, None),
    }
}

fn finish(path: Path, verdict: Verdict, rule: Option<String>, masquerade: bool) -> Outcome {
    Outcome {
        probability: path.probability,
        chains: path.chains,
        verdict,
        masquerade,
        affinity_checked: path.affinity_checked,
        rule,
    }
}
