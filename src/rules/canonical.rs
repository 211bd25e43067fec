//! The canonical form of one rule: argument groups spelled the way `iptables-save` prints
//! them, tagged with the match module they belong to, in an order-free multiset. It knows
//! nothing about chains or tables.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::rules::ruleset::{ArgRef, Rule};

/// Module tag of groups that belong to no match: `-s`, `-d`, `-p`, `-i`, `-o`, `-j`, `-g`.
const BASE: &str = "";
/// Module tag of protocol options (`--dport`), whether or not `-m tcp` was written.
const PROTO: &str = "proto";
/// Module tag of the target's options (`--to-destination`, `--set-xmark`).
const TARGET: &str = "target";

/// One argument group in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct CanonArg {
    module: String,
    negated: bool,
    flag: String,
    values: Vec<String>,
}

/// A rule's matches and target in canonical form (its chain and operation are not part of
/// it): two rules are equal when iptables stores them the same way. Opaque; compare or hash it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CanonicalRule(Vec<CanonArg>);

impl CanonicalRule {
    /// The same rule as an unmatched `-D` line, which never equals an existing rule.
    pub fn deletion(mut self) -> Self {
        self.0.insert(
            0,
            CanonArg { module: BASE.to_string(), negated: false, flag: "-D".to_string(), values: Vec::new() },
        );
        self
    }
}

/// Long option spellings and the short ones iptables-save prints.
fn alias(flag: &str) -> &str {
    match flag {
        "--jump" => "-j",
        "--goto" => "-g",
        "--source" | "--src" => "-s",
        "--destination" | "--dst" => "-d",
        "--protocol" => "-p",
        "--match" => "-m",
        "--in-interface" => "-i",
        "--out-interface" => "-o",
        "--fragment" => "-f",
        "--destination-port" => "--dport",
        "--source-port" => "--sport",
        other => other,
    }
}

/// Canonical protocol name (`TCP` and `6` are `tcp`); `None` for "any protocol".
fn protocol(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let name = match lower.as_str() {
        "all" | "0" => return None,
        "6" => "tcp",
        "17" => "udp",
        "132" => "sctp",
        "1" => "icmp",
        "58" | "icmpv6" | "ipv6-icmp" => "ipv6-icmp",
        other => other,
    };
    Some(name.to_string())
}

/// Whether `-m module` is the match module of protocol `proto` (implied by `-p` options).
fn is_protocol_module(module: &str, proto: Option<&str>) -> bool {
    match proto {
        Some("ipv6-icmp") => module == "icmp6",
        Some(p) => module == p,
        None => false,
    }
}

/// Options that belong to the protocol match even when `-m tcp` is not written.
fn is_protocol_option(flag: &str) -> bool {
    matches!(
        flag,
        "--dport"
            | "--sport"
            | "--tcp-flags"
            | "--syn"
            | "--tcp-option"
            | "--icmp-type"
            | "--icmpv6-type"
            | "--chunk-types"
    )
}

/// Canonicalises `rule`: aliases resolved, defaults dropped, values normalised, group order
/// erased, as described in the `diff` module docs.
pub fn canonical(rule: &Rule) -> CanonicalRule {
    let proto = rule.args.iter().filter(|a| alias(a.flag) == "-p").last().and_then(|a| a.value()).and_then(protocol);
    let mut out: Vec<CanonArg> = Vec::new();
    let mut context = BASE.to_string();
    let mut bare_module: Option<CanonArg> = None;
    for arg in &rule.args {
        let arg = &arg;
        let flag = alias(arg.flag);
        match flag {
            "-m" => {
                out.extend(bare_module.take());
                let module = arg.value().unwrap_or_default();
                if is_protocol_module(module, proto.as_deref()) {
                    context = PROTO.to_string();
                } else {
                    context = module.to_string();
                    bare_module = Some(group(BASE, arg, "-m", arg.values.to_vec()));
                }
            }
            "-j" | "-g" => {
                out.extend(bare_module.take());
                context = TARGET.to_string();
                out.push(group(BASE, arg, flag, arg.values.to_vec()));
            }
            "-s" | "-d" | "-p" | "-i" | "-o" | "-f" => out.extend(base(arg, flag)),
            _ => {
                bare_module = None;
                let module = if is_protocol_option(flag) && context != TARGET { PROTO } else { context.as_str() };
                out.extend(option(module, arg, flag));
            }
        }
    }
    out.extend(bare_module);
    out.sort();
    CanonicalRule(out)
}

fn group(module: &str, arg: &ArgRef, flag: &str, values: Vec<String>) -> CanonArg {
    CanonArg { module: module.to_string(), negated: arg.negated, flag: flag.to_string(), values }
}

/// `-s`/`-d` as canonical CIDRs, `-p` as a canonical name (`-p all` dropped).
fn base(arg: &ArgRef, flag: &str) -> Option<CanonArg> {
    let values = match flag {
        "-s" | "-d" => arg.values.iter().map(address_list).collect(),
        "-p" => match arg.value().and_then(protocol) {
            Some(p) => vec![p],
            None if !arg.negated => return None,
            None => arg.values.to_vec(),
        },
        _ => arg.values.to_vec(),
    };
    Some(group(BASE, arg, flag, values))
}

/// A match or target option; `None` when it only restates a default.
fn option(module: &str, arg: &ArgRef, flag: &str) -> Option<CanonArg> {
    let value = arg.value().unwrap_or_default();
    let (flag, values) = match (module, flag) {
        (_, "--mark") if arg.values.len() == 1 => (flag, vec![mark(value, None)]),
        (TARGET, "--set-xmark" | "--set-mark" | "--or-mark" | "--xor-mark" | "--and-mark") if arg.values.len() == 1 => {
            ("--set-xmark", vec![set_xmark(flag, value)])
        }
        (TARGET, "--reject-with") => match reject_with(value) {
            "icmp-port-unreachable" | "icmp6-port-unreachable" if !arg.negated => return None,
            canonical => (flag, vec![canonical.to_string()]),
        },
        ("recent", "--rsource") => return None,
        ("recent", "--mask") if is_all_ones(value) => return None,
        ("statistic", "--probability") => (flag, vec![probability(value)]),
        (_, "--ctstate" | "--state" | "--src-type" | "--dst-type") => {
            (flag, arg.values.iter().map(upper_set).collect())
        }
        _ => (flag, arg.values.to_vec()),
    };
    Some(group(module, arg, flag, values))
}

/// A comma-separated address list as sorted canonical CIDRs (unparsable items kept as text).
fn address_list(value: &str) -> String {
    let mut items: Vec<String> = value.split(',').map(cidr).collect();
    items.sort();
    items.join(",")
}

/// `10.0.0.1` → `10.0.0.1/32`, `10.1.2.3/255.255.0.0` → `10.1.0.0/16`, IPv6 compressed.
fn cidr(text: &str) -> String {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return text.to_string();
    };
    let prefix = match (len, addr) {
        (None, IpAddr::V4(_)) => Some(32),
        (None, IpAddr::V6(_)) => Some(128),
        (Some(len), _) => len.parse::<u8>().ok().or_else(|| mask_prefix(len)),
    };
    match prefix.and_then(|p| IpNet::new(addr, p).ok()) {
        Some(net) => net.trunc().to_string(),
        None => text.to_string(),
    }
}

/// The prefix length of a dotted (or IPv6) netmask.
fn mask_prefix(mask: &str) -> Option<u8> {
    match mask.parse::<IpAddr>().ok()? {
        IpAddr::V4(m) => ipnet::ipv4_mask_to_prefix(m).ok(),
        IpAddr::V6(m) => ipnet::ipv6_mask_to_prefix(m).ok(),
    }
}

fn is_all_ones(mask: &str) -> bool {
    match mask.parse::<IpAddr>() {
        Ok(IpAddr::V4(m)) => m.to_bits() == u32::MAX,
        Ok(IpAddr::V6(m)) => m.to_bits() == u128::MAX,
        Err(_) => false,
    }
}

/// A mark number in decimal or `0x` hex.
fn number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// `value[/mask]` as numbers; the mask defaults to `default` or all ones.
fn value_mask(text: &str, default: Option<u32>) -> Option<(u32, u32)> {
    match text.split_once('/') {
        Some((v, m)) => Some((number(v)?, number(m)?)),
        None => Some((number(text)?, default.unwrap_or(u32::MAX))),
    }
}

/// `--mark X[/Y]` as `0xX/0xY`.
fn mark(text: &str, default_mask: Option<u32>) -> String {
    match value_mask(text, default_mask) {
        Some((value, mask)) => format!("{value:#x}/{mask:#x}"),
        None => text.to_string(),
    }
}

/// Every MARK spelling as the `--set-xmark value/mask` iptables stores.
fn set_xmark(flag: &str, text: &str) -> String {
    let stored = match flag {
        "--set-xmark" => value_mask(text, None),
        "--set-mark" => value_mask(text, None).map(|(v, m)| (v, m | v)),
        "--or-mark" => number(text).map(|v| (v, v)),
        "--xor-mark" => number(text).map(|v| (v, 0)),
        "--and-mark" => number(text).map(|v| (0, !v)),
        _ => None,
    };
    match stored {
        Some((value, mask)) => format!("{value:#x}/{mask:#x}"),
        None => text.to_string(),
    }
}

/// The probability as the kernel stores it: `round(p × 2^31)`.
fn probability(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => format!("{}", (p * 2_147_483_648.0).round()),
        _ => text.to_string(),
    }
}

/// A comma-separated list of names, upper-cased, sorted and de-duplicated.
fn upper_set(text: &str) -> String {
    let mut items: Vec<String> = text.split(',').map(str::to_ascii_uppercase).collect();
    items.sort();
    items.dedup();
    items.join(",")
}

/// REJECT's short type names as iptables-save prints them.
fn reject_with(value: &str) -> &str {
    match value {
        "net-unreach" => "icmp-net-unreachable",
        "host-unreach" => "icmp-host-unreachable",
        "port-unreach" => "icmp-port-unreachable",
        "proto-unreach" => "icmp-proto-unreachable",
        "net-prohib" => "icmp-net-prohibited",
        "host-prohib" => "icmp-host-prohibited",
        "admin-prohib" => "icmp-admin-prohibited",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse::parse;

    fn rule(line: &str) -> Rule {
        let text = format!("*filter\n:X - [0:0]\n{line}\nCOMMIT\n");
        let mut rs = parse(&text).unwrap();
        rs.tables.remove(0).rules.remove(0)
    }

    fn same(a: &str, b: &str) -> bool {
        canonical(&rule(a)) == canonical(&rule(b))
    }

    #[test]
    fn equal_spellings() {
        let cases = [
            (
                "-A X -m comment --comment \"a b\" -m tcp -p tcp -d 10.0.0.1 --dport 80 -j Y",
                "-A X -d 10.0.0.1/32 -p tcp -m comment --comment \"a b\" -m tcp --dport 80 -j Y",
            ),
            ("-A X -p tcp --dport 80", "-A X -p TCP -m tcp --destination-port 80"),
            ("-A X -p tcp -m tcp -j DNAT --to-destination 1.2.3.4:80", "-A X -p 6 -j DNAT --to-destination 1.2.3.4:80"),
            ("-A X --source 10.1.2.3/255.255.0.0 --jump Y", "-A X -s 10.1.0.0/16 -j Y"),
            ("-A X -s fd00::0:5", "-A X -s fd00::5/128"),
            ("-A X -j MARK --or-mark 0x004000", "-A X -j MARK --set-xmark 0x4000/0x4000"),
            ("-A X -j MARK --xor-mark 0x004000", "-A X -j MARK --set-xmark 0x4000/0x0"),
            ("-A X -j MARK --set-mark 0x8000", "-A X -j MARK --set-xmark 0x8000/0xffffffff"),
            ("-A X -m mark ! --mark 0x004000/0x004000", "-A X -m mark ! --mark 16384/0x4000"),
            ("-A X -m mark --mark 0x1", "-A X -m mark --mark 0x1/0xffffffff"),
            ("-A X -j REJECT", "-A X -j REJECT --reject-with icmp-port-unreachable"),
            ("-A X -j REJECT", "-A X -j REJECT --reject-with icmp6-port-unreachable"),
            ("-A X -j REJECT --reject-with host-prohib", "-A X -j REJECT --reject-with icmp-host-prohibited"),
            (
                "-A X -m recent --name S --set -j Y",
                "-A X -m recent --set --name S --mask 255.255.255.255 --rsource -j Y",
            ),
            (
                "-A X -m recent --name S --rcheck --seconds 10 --reap",
                "-A X -m recent --rcheck --seconds 10 --reap --name S --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource",
            ),
            (
                "-A X -m statistic --mode random --probability 0.3333333333",
                "-A X -m statistic --mode random --probability 0.33333333349",
            ),
            ("-A X -m statistic --mode random --probability 0.5", "-A X -m statistic --mode random --probability 0.50000000000"),
            ("-A X -m statistic --mode random --probability 0.2", "-A X -m statistic --mode random --probability 0.20000000019"),
            ("-A X -m conntrack --ctstate ESTABLISHED,RELATED", "-A X -m conntrack --ctstate RELATED,ESTABLISHED"),
            ("-A X --in-interface eth0 --out-interface eth1 -p all", "-A X -o eth1 -i eth0"),
            ("-A X --match addrtype --dst-type local", "-A X -m addrtype --dst-type LOCAL"),
        ];
        for (a, b) in cases {
            assert!(same(a, b), "{a}\n{b}");
        }
    }

    #[test]
    fn different_rules() {
        let cases = [
            ("-A X -m comment --comment \"a b\" -j Y", "-A X -m comment --comment \"a  b\" -j Y"),
            ("-A X -s 10.0.0.1 -j Y", "-A X ! -s 10.0.0.1 -j Y"),
            ("-A X -s 10.0.0.1 -j Y", "-A X -d 10.0.0.1 -j Y"),
            (
                "-A X -m statistic --mode random --probability 0.33333",
                "-A X -m statistic --mode random --probability 0.3333333333",
            ),
            ("-A X -m mark --mark 0x4000", "-A X -m connmark --mark 0x4000"),
            ("-A X -j MARK --or-mark 0x4000", "-A X -j MARK --set-mark 0x4000"),
            ("-A X -j REJECT", "-A X -j REJECT --reject-with icmp-host-prohibited"),
            ("-A X -m recent --name S --set", "-A X -m recent --name S --set --rdest"),
            ("-A X -p tcp --dport 80", "-A X -p udp --dport 80"),
            ("-A X -m addrtype --dst-type LOCAL", "-A X -m addrtype --src-type LOCAL"),
            ("-A X -j Y", "-A X -g Y"),
            ("-A X -m tcp -p tcp", "-A X -m udp -p tcp"),
        ];
        for (a, b) in cases {
            assert!(!same(a, b), "{a}\n{b}");
        }
    }
}
