//! Walks one table from a built-in chain, following jumps, splitting on `-m statistic` and
//! applying targets. Knows nothing about the order of tables; `trace` strings the walks together.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::index::ChainIndex;
use super::matches::{self, Context, Matched};
use super::{values, Packet, TraceEnv};
use crate::rules::ruleset::{Rule, TableName};

/// Deepest chain nesting followed before giving up.
pub(super) const MAX_DEPTH: usize = 64;
/// Most probabilistic branches followed in one trace before giving up on new ones.
pub(super) const MAX_BRANCHES: usize = 10_000;

/// One possible history of the packet so far.
#[derive(Debug, Clone)]
pub(super) struct Path {
    pub probability: f64,
    pub mark: u32,
    pub dst: IpAddr,
    pub dport: u16,
    /// The nat walk rewrote the destination (conntrack state `DNAT`).
    pub dnat: bool,
    /// Table-qualified chains entered, in order.
    pub chains: Vec<String>,
    pub affinity_checked: bool,
}

impl Path {
    pub fn new(packet: &Packet) -> Self {
        Path {
            probability: 1.0,
            mark: 0,
            dst: packet.dst,
            dport: packet.dport,
            dnat: false,
            chains: Vec::new(),
            affinity_checked: false,
        }
    }
}

/// How a table walk ended for one path.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum End {
    /// The end of a built-in chain with an ACCEPT policy (nothing decided).
    Accept,
    /// An `ACCEPT` rule: its table-qualified chain, comment and text.
    Accepted { chain: String, comment: Option<String>, rule: String },
    /// `DNAT` to this address.
    Dnat(SocketAddr),
    /// `REDIRECT` to this local port.
    Redirect(u16),
    /// `MASQUERADE` or `SNAT`.
    SourceNat,
    /// `DROP`, or a DROP policy (`rule` is `None` then).
    Drop { chain: String, comment: Option<String>, rule: Option<String> },
    /// `REJECT`.
    Reject { chain: String, comment: Option<String>, rule: Option<String> },
    /// A loop, too deep a nesting or too many branches.
    Aborted { chain: String, reason: String },
}

/// How a chain walk ended for one path.
enum Flow {
    /// Fell off the end or hit `RETURN`: the caller continues.
    Return,
    /// The table walk is over.
    End(End),
}

/// What a matched rule's target does to one path.
enum Step {
    /// Go on with the next rule of this chain.
    Next,
    /// Leave this chain.
    Leave(Flow),
}

/// Walks tables of one indexed ruleset for one packet, collecting notes.
pub(super) struct Walker<'i, 'a> {
    index: &'i ChainIndex<'a>,
    packet: &'i Packet,
    env: &'i TraceEnv,
    branches: usize,
    pub notes: Vec<String>,
}

impl<'i, 'a> Walker<'i, 'a> {
    pub fn new(index: &'i ChainIndex<'a>, packet: &'i Packet, env: &'i TraceEnv) -> Self {
        Walker { index, packet, env, branches: 0, notes: Vec::new() }
    }

    /// Records a note once.
    pub fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Whether `ip` counts as an address of this node.
    pub fn is_local(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.env.local_ips.contains(ip)
    }

    /// Whether the packet was generated on the node.
    pub fn node_originated(&self) -> bool {
        self.packet.from_node
    }

    /// Where `REDIRECT` sends a packet headed for `dst`: loopback for node traffic, else the
    /// first node address of the same family (the kernel uses the incoming interface's).
    pub fn redirect_address(&self, dst: &IpAddr) -> IpAddr {
        let loopback = match dst {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        if self.packet.from_node {
            return loopback;
        }
        let same_family = |ip: &&IpAddr| ip.is_ipv4() == dst.is_ipv4();
        self.env.local_ips.iter().find(same_family).copied().unwrap_or(loopback)
    }

    /// Walks `table` from the built-in `chain`; a path that falls off gets the chain's policy.
    pub fn walk_table(&mut self, table: TableName, chain: &str, path: Path) -> Vec<(Path, End)> {
        if self.index.is_implicit(table, chain) {
            self.note(format!("{table}/{chain} has no rules in the input: assuming kube-proxy's jump rules"));
        }
        if !self.index.exists(table, chain) {
            // The input has no such table or chain: nothing to walk, nothing to record.
            return vec![(path, End::Accept)];
        }
        let mut stack = Vec::new();
        let policy = self.index.policy(table, chain);
        self.walk_chain(table, chain, path, &mut stack)
            .into_iter()
            .map(|(path, flow)| match flow {
                Flow::End(end) => (path, end),
                Flow::Return if policy == Some("DROP") => {
                    let chain = format!("{table}/{chain}");
                    let end = End::Drop { chain, comment: Some("chain policy".into()), rule: None };
                    (path, end)
                }
                Flow::Return => (path, End::Accept),
            })
            .collect()
    }

    fn walk_chain(
        &mut self,
        table: TableName,
        chain: &str,
        mut path: Path,
        stack: &mut Vec<String>,
    ) -> Vec<(Path, Flow)> {
        let qualified = format!("{table}/{chain}");
        let abort = |reason: String| End::Aborted { chain: qualified.clone(), reason };
        if stack.iter().any(|c| c == chain) {
            let end = abort(format!("jump loop: {} > {chain}", stack.join(" > ")));
            return vec![(path, Flow::End(end))];
        }
        if stack.len() >= MAX_DEPTH {
            return vec![(path, Flow::End(abort(format!("chains nested deeper than {MAX_DEPTH}"))))];
        }
        path.chains.push(qualified.clone());
        stack.push(chain.to_string());
        let rules = self.index.rules(table, chain);
        let mut out = Vec::new();
        // Last in, first out: the matched side of a split is followed before the rest.
        let mut pending = vec![(0usize, path)];
        while let Some((i, mut path)) = pending.pop() {
            let Some(rule) = rules.get(i) else {
                out.push((path, Flow::Return));
                continue;
            };
            let eval = matches::evaluate(rule, &self.context(&path));
            for note in eval.notes {
                self.note(format!("{qualified}: {note}"));
            }
            path.affinity_checked |= eval.affinity;
            match eval.matched {
                Matched::No => {
                    pending.push((i + 1, path));
                    continue;
                }
                Matched::Yes => {}
                Matched::Sometimes(p) => {
                    let mut rest = path.clone();
                    rest.probability *= 1.0 - p;
                    path.probability *= p;
                    if self.branches >= MAX_BRANCHES {
                        let end = abort(format!("more than {MAX_BRANCHES} probabilistic branches"));
                        out.push((rest, Flow::End(end)));
                    } else if rest.probability > 0.0 {
                        self.branches += 1;
                        pending.push((i + 1, rest));
                    }
                    if path.probability <= 0.0 {
                        continue;
                    }
                }
            }
            let results = self.apply_target(table, &qualified, rule, path, stack);
            for (path, step) in results.into_iter().rev() {
                match step {
                    Step::Next => pending.push((i + 1, path)),
                    Step::Leave(flow) => out.push((path, flow)),
                }
            }
        }
        stack.pop();
        out
    }

    fn context(&self, path: &Path) -> Context<'i> {
        Context {
            src: self.packet.src,
            dst: path.dst,
            dport: path.dport,
            protocol: self.packet.protocol,
            in_interface: self.packet.in_interface.as_deref(),
            mark: path.mark,
            dnat: path.dnat,
            local_ips: &self.env.local_ips,
        }
    }

    /// What `rule`'s target does to `path`; several results when a jumped-to chain splits.
    fn apply_target(
        &mut self,
        table: TableName,
        qualified: &str,
        rule: &Rule,
        mut path: Path,
        stack: &mut Vec<String>,
    ) -> Vec<(Path, Step)> {
        let is_goto = rule.args.iter().any(|a| a.flag == "-g" || a.flag == "--goto");
        let Some(target) = rule.target() else {
            return vec![(path, Step::Next)];
        };
        if self.index.exists(table, target) && !is_builtin_chain(target) {
            let sub = self.walk_chain(table, target, path, stack);
            return sub
                .into_iter()
                .map(|(path, flow)| match flow {
                    Flow::Return if is_goto => (path, Step::Leave(Flow::Return)),
                    Flow::Return => (path, Step::Next),
                    end => (path, Step::Leave(end)),
                })
                .collect();
        }
        let option = |flag: &str| rule.get(flag).and_then(|a| a.value()).unwrap_or("");
        let comment = || rule.comment().map(str::to_string);
        let leave = |path, end| vec![(path, Step::Leave(Flow::End(end)))];
        let chain = || qualified.to_string();
        match target {
            "ACCEPT" => leave(path, End::Accepted { chain: chain(), comment: comment(), rule: rule.to_string() }),
            "RETURN" => vec![(path, Step::Leave(Flow::Return))],
            "DROP" => leave(path, End::Drop { chain: chain(), comment: comment(), rule: Some(rule.to_string()) }),
            "REJECT" => leave(path, End::Reject { chain: chain(), comment: comment(), rule: Some(rule.to_string()) }),
            "MASQUERADE" | "SNAT" => leave(path, End::SourceNat),
            "DNAT" => match values::dnat_target(option("--to-destination"), path.dport) {
                Some((to, ranged)) => {
                    if ranged {
                        self.note(format!("{qualified}: DNAT to a range: only its first address is traced"));
                    }
                    path.dst = to.ip();
                    path.dport = to.port();
                    path.dnat = true;
                    leave(path, End::Dnat(to))
                }
                None => {
                    self.note(format!("{qualified}: unparseable DNAT target: rule skipped in `{rule}`"));
                    vec![(path, Step::Next)]
                }
            },
            "REDIRECT" => match values::redirect_port(option("--to-ports")) {
                Some(port) => leave(path, End::Redirect(port)),
                None => {
                    self.note(format!("{qualified}: unparseable REDIRECT port: rule skipped in `{rule}`"));
                    vec![(path, Step::Next)]
                }
            },
            "MARK" => {
                match apply_mark(rule, path.mark) {
                    Some(mark) => path.mark = mark,
                    None => self.note(format!("{qualified}: unsupported MARK options: mark unchanged by `{rule}`")),
                }
                vec![(path, Step::Next)]
            }
            "LOG" | "NFLOG" | "ULOG" | "TRACE" | "AUDIT" | "CONNMARK" | "CT" | "NOTRACK" | "CLASSIFY" | "DSCP"
            | "TOS" | "TCPMSS" | "TTL" | "HL" | "CHECKSUM" | "NFQUEUE" | "SET" => vec![(path, Step::Next)],
            other => {
                self.note(format!("{qualified}: unknown target {other}: treated as continuing"));
                vec![(path, Step::Next)]
            }
        }
    }
}

fn is_builtin_chain(name: &str) -> bool {
    matches!(name, "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING")
}

/// The packet mark after a `MARK` target, or `None` for options it does not know.
fn apply_mark(rule: &Rule, mark: u32) -> Option<u32> {
    let arg = rule.args.iter().skip_while(|a| a.flag != "-j" && a.flag != "--jump").nth(1)?;
    let value = arg.value()?;
    Some(match arg.flag {
        "--set-xmark" => {
            let (v, m) = values::mark(value)?;
            (mark & !m) ^ v
        }
        "--set-mark" => {
            let (v, m) = values::mark(value)?;
            (mark & !m) | v
        }
        "--or-mark" => mark | values::number(value)?,
        "--and-mark" => mark & values::number(value)?,
        "--xor-mark" => mark ^ values::number(value)?,
        _ => return None,
    })
}
