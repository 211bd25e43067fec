//! Node-level checks: `node-forwarding-off`, `br-netfilter-off` and `route-localnet-off` (the
//! start-up checks' judgement of the sysctls, reused), `backend-split`, `flannel-order` and
//! `stale-sync` (the daemon's own verdict on its sync age, from `/livez`).

use super::input::Observed;
use super::report::{Code, Problem, Severity};
use crate::model::{IpFamily, NodeConfig};
use crate::rules::canonical::canonical;
use crate::rules::chain_names::KUBE_POSTROUTING;
use crate::rules::ruleset::{Rule, RuleOp, Ruleset, TableName};
use crate::startup::{self, CheckConfig, BR_NETFILTER, IP_FORWARD, ROUTE_LOCALNET};

/// Every node-level problem `observed` shows against `desired` (the render with its jumps), in
/// code order.
pub fn node_problems(node: &NodeConfig, desired: &Ruleset, observed: &Observed) -> Vec<Problem> {
    let mut problems = missing_jumps(desired, &observed.rules);
    if let Some(facts) = &observed.facts {
        let cfg = CheckConfig {
            localhost_nodeports: node.localhost_nodeports_active(),
            ipv6: node.family == IpFamily::V6,
            backend: None,
        };
        for result in startup::evaluate(facts, &cfg).into_iter().filter(|r| !r.ok) {
            let (code, severity) = match result.name {
                IP_FORWARD => (Code::NodeForwardingOff, Severity::Error),
                BR_NETFILTER => (Code::BrNetfilterOff, Severity::Warning),
                ROUTE_LOCALNET => (Code::RouteLocalnetOff, Severity::Warning),
                _ => continue,
            };
            // The start-up check's message ends with its fix: keep one wording of both.
            let (message, fix) = match result.message.split_once(". Fix: ") {
                Some((message, fix)) => (message.to_string(), fix.to_string()),
                None => (result.message.clone(), "set the sysctl the message names to 1".to_string()),
            };
            problems.push(Problem { code, severity, message, fix });
        }
    }
    problems.extend(backend_split(observed));
    problems.extend(flannel_order(observed));
    problems.extend(stale_sync(observed));
    problems.sort_by_key(|p| p.code);
    problems
}

/// The desired jumps from built-in chains that the live rules lack. Only judged for built-in
/// chains the live rules declare with a policy — an `iptables-save` of them; a restore body
/// (offline) never carries the jumps.
fn missing_jumps(desired: &Ruleset, live: &Ruleset) -> Vec<Problem> {
    let mut problems = Vec::new();
    for table in &desired.tables {
        let Some(live_table) = live.table(table.name) else {
            continue;
        };
        for jump in table.rules.iter().filter(|r| r.chain.is_builtin()) {
            let saved = live_table.chains.iter().any(|c| c.name == jump.chain && c.policy.is_some());
            let key = canonical(jump);
            if !saved || live_table.chain_rules(jump.chain.as_str()).any(|r| canonical(r) == key) {
                continue;
            }
            let target = jump.target().unwrap_or_default();
            let what = jump.comment().map(|c| format!(" ({c})")).unwrap_or_default();
            problems.push(Problem {
                code: Code::JumpsMissing,
                severity: Severity::Error,
                message: format!(
                    "{}/{} has no jump to {target}{what}: the traffic it should send there never reaches kube-proxy's rules",
                    table.name, jump.chain
                ),
                fix: "kubenat inserts its jumps on every sync: check that it runs, and look for a script or firewall \
                      service that flushes the built-in chains; `kubenat apply` restores them at once"
                    .to_string(),
            });
        }
    }
    problems
}

fn stale_sync(observed: &Observed) -> Option<Problem> {
    let daemon = observed.daemon.as_ref().filter(|d| !d.healthy)?;
    Some(Problem {
        code: Code::StaleSync,
        severity: Severity::Warning,
        message: format!(
            "the kubenat daemon reports a change pending for longer than twice its sync period (last sync {}, now \
             {}): the rules may not reflect the cluster any more",
            daemon.last_updated, daemon.current_time
        ),
        fix: "read the daemon's log for failing syncs (iptables-restore errors, a held xtables lock, API \
              watch errors) and its sync metrics; restarting it forces a full sync"
            .to_string(),
    })
}

fn backend_split(observed: &Observed) -> Option<Problem> {
    let (Some(nft), Some(legacy)) = (observed.backends.nft, observed.backends.legacy) else {
        return None;
    };
    (nft > 0 && legacy > 0).then(|| Problem {
        code: Code::BackendSplit,
        severity: Severity::Error,
        message: format!(
            "kube-proxy chains are in both iptables-nft ({nft} chains) and iptables-legacy ({legacy} chains): the \
             kernel runs both, so the stale set can still send traffic to old endpoints"
        ),
        fix: "find the backend kubenat writes (its log, or --iptables-backend) and remove the other set: \
              `kubenat --cleanup --iptables-backend=<other>`"
            .to_string(),
    })
}

/// Whether a nat POSTROUTING rule is flannel's masquerade: a jump to its `FLANNEL-*` chain, or
/// the `flanneld masq` rules older flannel wrote straight into POSTROUTING.
fn is_flannel(rule: &Rule) -> bool {
    rule.target().is_some_and(|t| t.starts_with("FLANNEL-"))
        || rule.comment().is_some_and(|c| c.contains("flanneld masq"))
}

/// A chain's rules in the order they end up in (`-I` inserted, `-D` removed): a save dump is
/// all `-A`, a restore input may not be.
fn effective_order<'a>(lines: impl Iterator<Item = &'a Rule>) -> Vec<&'a Rule> {
    let mut rules: Vec<&Rule> = Vec::new();
    for rule in lines {
        match rule.op {
            RuleOp::Append => rules.push(rule),
            RuleOp::Insert(position) => {
                let index = position.map_or(0, |p| p.saturating_sub(1) as usize).min(rules.len());
                rules.insert(index, rule);
            }
            RuleOp::Delete => {
                let same = |r: &&Rule| r.args == rule.args;
                if let Some(index) = rules.iter().position(same) {
                    rules.remove(index);
                }
            }
        }
    }
    rules
}

fn flannel_order(observed: &Observed) -> Option<Problem> {
    let nat = observed.rules.table(TableName::Nat)?;
    let rules = effective_order(nat.chain_rules("POSTROUTING"));
    let flannel = rules.iter().position(|r| is_flannel(r))?;
    let ours = rules.iter().position(|r| r.target() == Some(KUBE_POSTROUTING))?;
    (flannel < ours).then(|| Problem {
        code: Code::FlannelOrder,
        severity: Severity::Warning,
        message: format!(
            "flannel's masquerade (nat POSTROUTING rule {}) runs before the jump to {KUBE_POSTROUTING} (rule {}): \
             service traffic may be masqueraded by flannel's rules instead of kube-proxy's",
            flannel + 1,
            ours + 1
        ),
        fix: "put kube-proxy's jump first: iptables -t nat -D POSTROUTING -m comment --comment \"kubernetes \
              postrouting rules\" -j KUBE-POSTROUTING, then the same with -I POSTROUTING 1 (kubenat inserts it at \
              the top only when it is missing)"
            .to_string(),
    })
}
