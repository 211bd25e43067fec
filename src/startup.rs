//! Startup requirement checks — br_netfilter, ip_forward, route_localnet and the iptables backend
//! flannel uses: a pure [`evaluate`] over [`Facts`] (read by [`gather`]) and [`report`] (one
//! warning line and one metric per check). Nothing here is fatal; the checks only read.
//!
//! - `tuning`: the values kube-proxy sets at start (conntrack, route_localnet), set likewise.
//! - `oom`: the process's OOM score.

mod gather;
pub mod oom;
pub mod tuning;

pub use gather::{count_flannel_lines, flannel_lines, gather, gather_host, Error, Result, SysctlReader};

use tracing::{debug, info, warn};

use crate::apply::exec::Backend;
use crate::metrics::Metrics;

/// Check name (and metric label): `net.bridge.bridge-nf-call-iptables` (and `-ip6tables`).
pub const BR_NETFILTER: &str = "br_netfilter";
/// Check name: `net.ipv4.ip_forward` (and `net.ipv6.conf.all.forwarding`).
pub const IP_FORWARD: &str = "ip_forward";
/// Check name: `net.ipv4.conf.all.route_localnet` when localhost NodePorts are on.
pub const ROUTE_LOCALNET: &str = "route_localnet";
/// Check name: flannel's rules live in the backend kubenat writes.
pub const IPTABLES_BACKEND: &str = "iptables_backend";

/// The sysctls the checks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sysctl {
    /// `net.bridge.bridge-nf-call-iptables` (exists only with br_netfilter loaded).
    BridgeNfCallIptables,
    /// `net.bridge.bridge-nf-call-ip6tables`.
    BridgeNfCallIp6tables,
    /// `net.ipv4.ip_forward`.
    IpForward,
    /// `net.ipv6.conf.all.forwarding`.
    Ipv6Forwarding,
    /// `net.ipv4.conf.all.route_localnet`.
    RouteLocalnet,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` (read, not judged: set, it makes the rules
    /// leave out the INVALID drop).
    NfConntrackTcpBeLiberal,
}

impl Sysctl {
    /// Every sysctl gathered.
    pub const ALL: [Sysctl; 6] = [
        Sysctl::BridgeNfCallIptables,
        Sysctl::BridgeNfCallIp6tables,
        Sysctl::IpForward,
        Sysctl::Ipv6Forwarding,
        Sysctl::RouteLocalnet,
        Sysctl::NfConntrackTcpBeLiberal,
    ];

    /// The dotted name `sysctl` uses, e.g. `net.ipv4.ip_forward`.
    pub fn key(self) -> &'static str {
        match self {
            Sysctl::BridgeNfCallIptables => "net.bridge.bridge-nf-call-iptables",
            Sysctl::BridgeNfCallIp6tables => "net.bridge.bridge-nf-call-ip6tables",
            Sysctl::IpForward => "net.ipv4.ip_forward",
            Sysctl::Ipv6Forwarding => "net.ipv6.conf.all.forwarding",
            Sysctl::RouteLocalnet => "net.ipv4.conf.all.route_localnet",
            Sysctl::NfConntrackTcpBeLiberal => "net.netfilter.nf_conntrack_tcp_be_liberal",
        }
    }

    /// The file, relative to the root of the filesystem: `proc/sys/net/ipv4/ip_forward`.
    pub fn path(self) -> String {
        format!("proc/sys/{}", self.key().replace('.', "/"))
    }
}

/// One sysctl as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysctlValue {
    /// The file holds this number.
    Set(i64),
    /// The file does not exist (br_netfilter not loaded, IPv6 disabled).
    Missing,
    /// It could not be read or is not a number; says why.
    Unreadable(String),
}

/// Lines of flannel's `FLANNEL-*` chains (declarations, rules, jumps) in each backend, both
/// families; `None` when that backend's save tool is missing or failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlannelRules {
    /// In `iptables-legacy-save` (+ `ip6tables-legacy-save`).
    pub legacy: Option<usize>,
    /// In `iptables-nft-save` (+ `ip6tables-nft-save`).
    pub nft: Option<usize>,
}

/// Everything the checks look at, as [`gather`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `net.bridge.bridge-nf-call-iptables`.
    pub bridge_nf_call_iptables: SysctlValue,
    /// `net.bridge.bridge-nf-call-ip6tables`.
    pub bridge_nf_call_ip6tables: SysctlValue,
    /// `net.ipv4.ip_forward`.
    pub ip_forward: SysctlValue,
    /// `net.ipv6.conf.all.forwarding`.
    pub ipv6_forwarding: SysctlValue,
    /// `net.ipv4.conf.all.route_localnet`.
    pub route_localnet: SysctlValue,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal`.
    pub nf_conntrack_tcp_be_liberal: SysctlValue,
    /// Where flannel's rules are.
    pub flannel_rules: FlannelRules,
}

impl Facts {
    /// The value read for `sysctl`.
    pub fn sysctl(&self, sysctl: Sysctl) -> &SysctlValue {
        match sysctl {
            Sysctl::BridgeNfCallIptables => &self.bridge_nf_call_iptables,
            Sysctl::BridgeNfCallIp6tables => &self.bridge_nf_call_ip6tables,
            Sysctl::IpForward => &self.ip_forward,
            Sysctl::Ipv6Forwarding => &self.ipv6_forwarding,
            Sysctl::RouteLocalnet => &self.route_localnet,
            Sysctl::NfConntrackTcpBeLiberal => &self.nf_conntrack_tcp_be_liberal,
        }
    }
}

/// What kubenat is configured to do, as far as the checks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    /// Localhost NodePorts are on (`--iptables-localhost-nodeports`, IPv4): needs route_localnet.
    pub localhost_nodeports: bool,
    /// IPv6 is programmed too: also check the IPv6 sysctls.
    pub ipv6: bool,
    /// The backend kubenat writes; `None` (`--dry-run`) skips the backend check.
    pub backend: Option<Backend>,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// [`BR_NETFILTER`], [`IP_FORWARD`], [`ROUTE_LOCALNET`] or [`IPTABLES_BACKEND`].
    pub name: &'static str,
    /// Whether the requirement holds (or does not apply).
    pub ok: bool,
    /// For the operator: what was found, what breaks, and the fix.
    pub message: String,
}

/// Judges `facts` against `cfg`: one result per check, in a fixed order.
pub fn evaluate(facts: &Facts, cfg: &CheckConfig) -> Vec<CheckResult> {
    let mut results = vec![br_netfilter(facts, cfg), ip_forward(facts, cfg), route_localnet(facts, cfg)];
    if let Some(backend) = cfg.backend {
        results.push(iptables_backend(facts.flannel_rules, backend));
    }
    results
}

/// Sets `kubenat_startup_checks_failed{check}` for every result and logs each failing one once,
/// at warn with a `check` field (passing ones at debug).
pub fn report(results: &[CheckResult], metrics: &Metrics) {
    for result in results {
        metrics.set_startup_check_failed(result.name, !result.ok);
        if result.ok {
            debug!(check = result.name, "{}", result.message);
        } else {
            warn!(check = result.name, "{}", result.message);
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    info!(checks = results.len(), failed, "startup checks done");
}

/// Gathers this host's facts, evaluates and reports them. Blocking (reads /proc, runs the save
/// tools of both backends): call it from `spawn_blocking` or before the runtime starts.
pub fn check_host(cfg: &CheckConfig, metrics: &Metrics) -> Vec<CheckResult> {
    let results = evaluate(&gather_host(), cfg);
    report(&results, metrics);
    results
}

/// What the operator should know when `sysctl` is not 1, or `None` when it is.
fn want_one(facts: &Facts, sysctl: Sysctl, breaks: &str, fix: &str) -> Option<String> {
    let key = sysctl.key();
    match facts.sysctl(sysctl) {
        SysctlValue::Set(1) => None,
        SysctlValue::Set(n) => Some(format!("{key} is {n}: {breaks}. Fix: {fix}")),
        SysctlValue::Missing => {
            Some(format!("{key} does not exist (/{} is missing): {breaks}. Fix: {fix}", sysctl.path()))
        }
        SysctlValue::Unreadable(why) => {
            Some(format!("cannot read {key} ({why}), so cannot confirm it is 1; if not, {breaks}"))
        }
    }
}

fn result(name: &'static str, problems: Vec<String>, fine: String) -> CheckResult {
    if problems.is_empty() {
        CheckResult { name, ok: true, message: fine }
    } else {
        CheckResult { name, ok: false, message: problems.join("; ") }
    }
}

fn br_netfilter(facts: &Facts, cfg: &CheckConfig) -> CheckResult {
    let breaks = "pod → Service → pod on the same node will time out (the reply is bridged past conntrack and \
                  never un-DNATed)";
    let mut wanted = vec![Sysctl::BridgeNfCallIptables];
    if cfg.ipv6 {
        wanted.push(Sysctl::BridgeNfCallIp6tables);
    }
    let problems = wanted
        .into_iter()
        .filter_map(|sysctl| {
            let set = format!("sysctl -w {}=1", sysctl.key());
            let missing = *facts.sysctl(sysctl) == SysctlValue::Missing;
            let fix = if missing {
                format!("modprobe br_netfilter && {set} (persist both)")
            } else {
                format!("{set} (persist it in /etc/sysctl.d)")
            };
            let problem = want_one(facts, sysctl, breaks, &fix)?;
            Some(if missing { format!("br_netfilter is not loaded: {problem}") } else { problem })
        })
        .collect();
    result(BR_NETFILTER, problems, "br_netfilter is loaded and bridged traffic passes iptables".into())
}

fn ip_forward(facts: &Facts, cfg: &CheckConfig) -> CheckResult {
    let mut problems: Vec<String> = want_one(
        facts,
        Sysctl::IpForward,
        "the node does not forward IPv4, so pods cannot leave the node and Service traffic to endpoints on \
         other nodes (and all NodePort traffic) is dropped",
        "sysctl -w net.ipv4.ip_forward=1 (persist it in /etc/sysctl.d)",
    )
    .into_iter()
    .collect();
    if cfg.ipv6 {
        problems.extend(want_one(
            facts,
            Sysctl::Ipv6Forwarding,
            "the node does not forward IPv6, so IPv6 Services with endpoints elsewhere are unreachable",
            "sysctl -w net.ipv6.conf.all.forwarding=1 (persist it in /etc/sysctl.d)",
        ));
    }
    result(IP_FORWARD, problems, "IP forwarding is on".into())
}

fn route_localnet(facts: &Facts, cfg: &CheckConfig) -> CheckResult {
    if !cfg.localhost_nodeports {
        return result(ROUTE_LOCALNET, vec![], "not needed: localhost NodePorts are off".into());
    }
    let problems = want_one(
        facts,
        Sysctl::RouteLocalnet,
        "localhost NodePorts are on but connections to 127.0.0.1:<nodePort> will fail (kubenat sets it at \
         start, like kube-proxy, unless it may not write /proc/sys)",
        "sysctl -w net.ipv4.conf.all.route_localnet=1, or start with --iptables-localhost-nodeports=false",
    );
    result(ROUTE_LOCALNET, problems.into_iter().collect(), "route_localnet is 1 for localhost NodePorts".into())
}

/// `iptables-legacy` / `iptables-nft`, as operators know the two.
fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Legacy => "iptables-legacy",
        Backend::Nft => "iptables-nft",
        Backend::Default => "the system's default iptables",
    }
}

fn iptables_backend(rules: FlannelRules, ours: Backend) -> CheckResult {
    let present = |n: Option<usize>| n.is_some_and(|n| n > 0);
    let (legacy, nft) = (rules.legacy.unwrap_or(0), rules.nft.unwrap_or(0));
    let flannel_in = match (present(rules.legacy), present(rules.nft)) {
        (true, true) => {
            let message = format!(
                "flannel's rules are in both iptables-legacy ({legacy} lines) and iptables-nft ({nft} lines): one set \
                 is probably left over from a flanneld that used the other iptables, and the kernel runs both, so \
                 stale masquerade rules may still apply. kubenat writes {}. Remove the stale FLANNEL-* chains \
                 (compare iptables-legacy-save with iptables-nft-save)",
                backend_name(ours)
            );
            return CheckResult { name: IPTABLES_BACKEND, ok: false, message };
        }
        (true, false) => Backend::Legacy,
        (false, true) => Backend::Nft,
        (false, false) => {
            let unseen: Vec<&str> = [(rules.legacy, "iptables-legacy-save"), (rules.nft, "iptables-nft-save")]
                .into_iter()
                .filter_map(|(n, tool)| n.is_none().then_some(tool))
                .collect();
            let mut message = "no FLANNEL-* chains in iptables-legacy or iptables-nft (flannel not started yet, its \
                               rules turned off, or flannel's nftables mode): nothing to compare"
                .to_string();
            if !unseen.is_empty() {
                message.push_str(&format!(" ({} not available)", unseen.join(" and ")));
            }
            return CheckResult { name: IPTABLES_BACKEND, ok: true, message };
        }
    };
    let (theirs, ours_name) = (backend_name(flannel_in), backend_name(ours));
    if ours == Backend::Default {
        let message =
            format!("flannel's rules are in {theirs}; kubenat uses {ours_name}, whose backend was not compared");
        return CheckResult { name: IPTABLES_BACKEND, ok: true, message };
    }
    if ours == flannel_in {
        let message = format!("flannel's rules are in {theirs}, where kubenat writes");
        return CheckResult { name: IPTABLES_BACKEND, ok: true, message };
    }
    let message = format!(
        "flannel's rules are in {theirs} but kubenat writes {ours_name}: traffic may bypass one set of rules; \
         start with --iptables-backend {}",
        flannel_in.as_str()
    );
    CheckResult { name: IPTABLES_BACKEND, ok: false, message }
}

#[cfg(test)]
mod tests;
