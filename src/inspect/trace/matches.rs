//! Evaluates the match part of one rule (everything before `-j`/`-g`) against a packet state.
//! Does not know about targets or chains; unknown matches never match and produce a note.

use std::net::IpAddr;

use super::values;
use crate::model::Protocol;
use crate::rules::ruleset::{ArgRef, Rule};

/// What the tracer knows about the packet when it reaches a rule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Context<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
    pub protocol: Protocol,
    pub in_interface: Option<&'a str>,
    pub mark: u32,
    /// Whether the connection has been DNATed (conntrack's virtual `DNAT` state).
    pub dnat: bool,
    pub local_ips: &'a [IpAddr],
}

impl Context<'_> {
    /// `--src-type/--dst-type LOCAL`: a node address or loopback.
    pub fn is_local(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.local_ips.contains(ip)
    }
}

/// Whether a rule's matches hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Matched {
    /// Some match fails.
    No,
    /// All matches hold.
    Yes,
    /// All deterministic matches hold; `-m statistic` makes the rule match with this probability.
    Sometimes(f64),
}

/// The result of evaluating one rule.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Evaluation {
    pub matched: Matched,
    /// A `-m recent --rcheck/--update` match was reached (and treated as not matching).
    pub affinity: bool,
    /// Things the tracer could not evaluate, as sentences.
    pub notes: Vec<String>,
}

/// One match's verdict.
enum Check {
    /// Holds or not.
    Bool(bool),
    /// Holds with a probability (`-m statistic --mode random`).
    Probability(f64),
    /// Depends on per-client history (`-m recent --rcheck`): treated as not holding.
    History,
    /// Not a condition (`-m comment`, module options).
    Ignore,
    /// Not understood: treated as not holding, with a note.
    Unknown(String),
}

fn is_target_flag(flag: &str) -> bool {
    matches!(flag, "-j" | "--jump" | "-g" | "--goto")
}

/// Evaluates the matches of `rule` (the groups before its target).
pub(super) fn evaluate(rule: &Rule, ctx: &Context<'_>) -> Evaluation {
    let mut module = "";
    let mut failed = false;
    let mut history = false;
    let mut probability = 1.0_f64;
    let mut statistic = false;
    let mut notes = Vec::new();
    for arg in rule.args.iter().take_while(|a| !is_target_flag(a.flag)) {
        let arg = &arg;
        if arg.flag == "-m" || arg.flag == "--match" {
            module = arg.value().unwrap_or("");
            continue;
        }
        let check = check(module, arg, ctx);
        match check {
            Check::Bool(holds) => failed |= holds == arg.negated,
            Check::Probability(p) => {
                statistic = true;
                probability *= if arg.negated { 1.0 - p } else { p };
            }
            Check::History => history = true,
            Check::Ignore => {}
            Check::Unknown(why) => {
                failed = true;
                notes.push(format!("{why}: treated as not matching in `{rule}`"));
            }
        }
    }
    let matched = if failed || history {
        Matched::No
    } else if statistic {
        Matched::Sometimes(probability)
    } else {
        Matched::Yes
    };
    Evaluation { matched, affinity: history && !failed, notes }
}

/// Evaluates one group in the context of the last `-m` module.
fn check(module: &str, arg: &ArgRef, ctx: &Context<'_>) -> Check {
    let value = arg.value().unwrap_or("");
    match arg.flag {
        "-s" | "--source" => address(value, &ctx.src, arg.flag),
        "-d" | "--destination" => address(value, &ctx.dst, arg.flag),
        "-p" | "--protocol" => Check::Bool(values::protocol_matches(value, ctx.protocol.as_str())),
        "-i" | "--in-interface" => Check::Bool(ctx.in_interface.is_some_and(|i| interface_matches(value, i))),
        "-f" | "--fragment" => Check::Bool(false),
        "--comment" | "--nfacct-name" => Check::Ignore,
        "--dport" | "--destination-port" | "--dports" | "--destination-ports" | "--ports" => {
            match values::ports(value) {
                Some(ranges) => Check::Bool(ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&ctx.dport))),
                None => Check::Unknown(format!("unparseable port {value:?}")),
            }
        }
        "--syn" => Check::Bool(ctx.protocol == Protocol::Tcp),
        "--src-type" => addr_type(value, &ctx.src, ctx),
        "--dst-type" => addr_type(value, &ctx.dst, ctx),
        "--mark" => mark(module, value, ctx),
        "--ctstate" | "--state" => Check::Bool(value.split(',').any(|s| ct_state(s, ctx))),
        _ if module == "statistic" => statistic(arg),
        _ if module == "recent" => recent(arg),
        other => Check::Unknown(format!("unsupported match {other} (module {module:?})")),
    }
}

fn address(value: &str, ip: &IpAddr, flag: &str) -> Check {
    match values::nets(value) {
        Some(nets) => Check::Bool(nets.iter().any(|n| n.contains(ip))),
        None => Check::Unknown(format!("unparseable address {value:?} for {flag}")),
    }
}

/// `eth0` matches exactly; `veth+` matches any name starting with `veth`.
fn interface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

fn addr_type(value: &str, ip: &IpAddr, ctx: &Context<'_>) -> Check {
    let mut unknown = Vec::new();
    for kind in value.split(',') {
        if kind.eq_ignore_ascii_case("LOCAL") {
            if ctx.is_local(ip) {
                return Check::Bool(true);
            }
        } else {
            unknown.push(kind);
        }
    }
    if unknown.is_empty() {
        Check::Bool(false)
    } else {
        Check::Unknown(format!("unsupported address type {}", unknown.join(",")))
    }
}

/// `-m mark --mark v/m` tests the packet mark; `-m connmark --mark` the (fresh, zero) ct mark.
fn mark(module: &str, value: &str, ctx: &Context<'_>) -> Check {
    let Some((want, mask)) = values::mark(value) else {
        return Check::Unknown(format!("unparseable mark {value:?}"));
    };
    let have = if module == "connmark" { 0 } else { ctx.mark };
    Check::Bool(have & mask == want)
}

/// A fresh packet is `NEW`, plus the virtual `DNAT` state once the nat walk rewrote it.
fn ct_state(state: &str, ctx: &Context<'_>) -> bool {
    match state.to_ascii_uppercase().as_str() {
        "NEW" => true,
        "DNAT" => ctx.dnat,
        _ => false,
    }
}

fn statistic(arg: &ArgRef) -> Check {
    let value = arg.value().unwrap_or("");
    match arg.flag {
        "--mode" if value == "random" => Check::Ignore,
        "--probability" => match value.parse::<f64>() {
            Ok(p) if (0.0..=1.0).contains(&p) => Check::Probability(p),
            _ => Check::Unknown(format!("unparseable probability {value:?}")),
        },
        other => Check::Unknown(format!("unsupported statistic option {other} {value}")),
    }
}

fn recent(arg: &ArgRef) -> Check {
    match arg.flag {
        "--rcheck" | "--update" => Check::History,
        "--set" => Check::Bool(true),
        "--remove" => Check::Bool(false),
        "--name" | "--seconds" | "--reap" | "--hitcount" | "--rttl" | "--mask" | "--rsource" | "--rdest" => {
            Check::Ignore
        }
        other => Check::Unknown(format!("unsupported recent option {other}")),
    }
}
