//! Rules written on every sync regardless of services: KUBE-POSTROUTING, KUBE-MARK-MASQ, the
//! localhost guard in KUBE-FIREWALL, the KUBE-SERVICES → KUBE-NODEPORTS tail and KUBE-FORWARD.

use super::{mark, Output};
use crate::model::{IpFamily, NodePortAddresses};
use crate::rules::chain_names::{self as names, fixed};
use crate::rules::ruleset::{Arg, Rule};

/// nfacct counter kube-proxy attaches to the INVALID drop rule.
pub const NFACCT_INVALID: &str = "ct_state_invalid_dropped_pkts";
/// nfacct counter kube-proxy attaches to localhost NodePort rules.
pub const NFACCT_LOCALHOST_NODEPORTS: &str = "localhost_nps_accepted_pkts";

/// Chain declarations and the rules that precede the per-service rules.
pub(super) fn preamble(out: &mut Output) {
    for chain in [
        names::KUBE_SERVICES,
        names::KUBE_EXTERNAL_SERVICES,
        names::KUBE_FORWARD,
        names::KUBE_NODEPORTS,
        names::KUBE_PROXY_FIREWALL,
    ] {
        out.filter.push_chain(&fixed(chain));
    }
    for chain in super::top_level_nat_chains() {
        out.nat.push_chain(&chain);
    }

    let mark = mark(out.node);
    let postrouting = fixed(names::KUBE_POSTROUTING);
    out.nat_rule(
        Rule::append(&postrouting)
            .module("mark")
            .arg(Arg::new("--mark", format!("{mark}/{mark}")).negate())
            .jump("RETURN"),
    );
    // Clear the mark so a packet that re-traverses the stack is not masqueraded twice.
    out.nat_rule(Rule::append(&postrouting).jump_with("MARK", [Arg::new("--xor-mark", mark.clone())]));
    let random_fully = out.node.random_fully.then(|| Arg::bare("--random-fully"));
    out.nat_rule(
        Rule::append(&postrouting)
            .comment("kubernetes service traffic requiring SNAT")
            .jump_with("MASQUERADE", random_fully),
    );
    out.nat_rule(Rule::append(&fixed(names::KUBE_MARK_MASQ)).jump_with("MARK", [Arg::new("--or-mark", mark)]));

    if out.node.localhost_nodeports_active() {
        // route_localnet opens localhost NodePorts to the network (CVE-2020-8558): block
        // anything to 127/8 that did not come from 127/8 and was not DNATed.
        let firewall = fixed(names::KUBE_FIREWALL);
        out.filter.push_chain(&firewall);
        out.filter_rule(
            Rule::append(&firewall)
                .comment("block incoming localnet connections")
                .arg(Arg::new("-d", "127.0.0.0/8"))
                .arg(Arg::new("-s", "127.0.0.0/8").negate())
                .module("conntrack")
                .arg(Arg::new("--ctstate", "RELATED,ESTABLISHED,DNAT").negate())
                .jump("DROP"),
        );
    }
}

/// The rules that follow the per-service rules.
pub(super) fn postamble(out: &mut Output) {
    nodeports_tail(out);

    let forward = fixed(names::KUBE_FORWARD);
    if !out.node.conntrack_tcp_be_liberal {
        let mut rule = Rule::append(&forward).module("conntrack").arg(Arg::new("--ctstate", "INVALID"));
        if out.node.nfacct {
            rule = rule.module("nfacct").arg(Arg::new("--nfacct-name", NFACCT_INVALID));
        }
        out.filter_rule(rule.jump("DROP"));
    }
    let mark = mark(out.node);
    out.filter_rule(
        Rule::append(&forward)
            .comment("kubernetes forwarding rules")
            .module("mark")
            .arg(Arg::new("--mark", format!("{mark}/{mark}")))
            .jump("ACCEPT"),
    );
    out.filter_rule(
        Rule::append(&forward)
            .comment("kubernetes forwarding conntrack rule")
            .module("conntrack")
            .arg(Arg::new("--ctstate", "RELATED,ESTABLISHED"))
            .jump("ACCEPT"),
    );
}

const NODEPORTS_TAIL_COMMENT: &str = "kubernetes service nodeports; NOTE: this must be the last rule in this chain";

/// The last KUBE-SERVICES rule: hand traffic for local addresses to KUBE-NODEPORTS.
fn nodeports_tail(out: &mut Output) {
    let services = fixed(names::KUBE_SERVICES);
    let family = out.node.family;
    match &out.node.nodeport_addresses {
        NodePortAddresses::All => {
            let mut rule = Rule::append(&services).comment(NODEPORTS_TAIL_COMMENT).dst_type_local();
            if family == IpFamily::V6 {
                rule = rule.arg(Arg::new("-d", "::1/128").negate());
            } else if !out.node.localhost_nodeports {
                rule = rule.arg(Arg::new("-d", "127.0.0.0/8").negate());
            }
            out.nat_rule(rule.jump(names::KUBE_NODEPORTS));
        }
        cidrs @ NodePortAddresses::Cidrs(_) => {
            for ip in cidrs.matching(family, &out.node.local_addresses) {
                // Localhost NodePorts never work over IPv6 and need the flag on IPv4; kube-proxy
                // logs an error each sync, rendering just leaves the address out.
                if ip.is_loopback() && (family == IpFamily::V6 || !out.node.localhost_nodeports) {
                    continue;
                }
                let rule = Rule::append(&services).comment(NODEPORTS_TAIL_COMMENT).dst(ip);
                out.nat_rule(rule.jump(names::KUBE_NODEPORTS));
            }
        }
    }
}
