//! KUBE-SVC-* / KUBE-SVL-* dispatch (affinity, `statistic` probabilities) and the KUBE-SEP-*
//! chains (hairpin masquerade + DNAT).

use super::service_ctx::ServiceCtx;
use super::Output;
use crate::model::Endpoint;
use crate::rules::chain_names as names;
use crate::rules::ruleset::{Arg, ChainName, Rule, RuleBuilder};

/// The probability that the i-th of the remaining `n` endpoints is picked, as kube-proxy
/// prints it (`%0.10f`).
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// [`probability`] of the first `CACHED_PROBABILITIES` counts, formatted once per thread: a
/// large ruleset prints one per endpoint, and float formatting is not cheap.
const CACHED_PROBABILITIES: usize = 256;

thread_local! {
    static PROBABILITIES: Vec<String> = (0..CACHED_PROBABILITIES).map(|n| probability(n.max(1))).collect();
}

/// Adds `--probability` for `n` remaining endpoints.
fn with_probability(rule: RuleBuilder, n: usize) -> RuleBuilder {
    if n < CACHED_PROBABILITIES {
        PROBABILITIES.with(|cached| rule.flag("--probability", &cached[n]))
    } else {
        rule.flag("--probability", &probability(n))
    }
}

/// Adds the comment unless kube-proxy's large-cluster mode drops per-endpoint comments (the
/// text is then not even built).
fn with_comment(out: &Output, rule: RuleBuilder, comment: impl FnOnce() -> String) -> RuleBuilder {
    if out.large_cluster {
        rule
    } else {
        rule.comment(comment())
    }
}

/// Writes the SVC (Cluster) and SVL (Local) dispatch chains that are in use.
pub(super) fn policy_chains(out: &mut Output, ctx: &ServiceCtx) {
    if ctx.uses_cluster_chain {
        out.nat.push_chain(&ctx.chains.cluster);
        dispatch(out, ctx, &ctx.chains.cluster, &ctx.eps.cluster);
    }
    if ctx.uses_local_chain {
        out.nat.push_chain(&ctx.chains.local);
        dispatch(out, ctx, &ctx.chains.local, &ctx.eps.local);
    }
}

fn dispatch(out: &mut Output, ctx: &ServiceCtx, chain: &ChainName, endpoints: &[&Endpoint]) {
    if let Some(timeout) = ctx.svc.affinity_timeout {
        for ep in endpoints {
            let sep = ctx.sep(ep);
            let rule = with_comment(out, Rule::append(chain), || format!("{} -> {}", ctx.name, ep.key()))
                .module("recent")
                .flag("--name", sep.as_str())
                .arg(Arg::bare("--rcheck"))
                .flag("--seconds", &timeout.to_string())
                .arg(Arg::bare("--reap"));
            out.nat_rule(rule.jump(sep.as_str()));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let sep = ctx.sep(ep);
        let mut rule = with_comment(out, Rule::append(chain), || format!("{} -> {}", ctx.name, ep.key()));
        if i + 1 < n {
            rule = with_probability(rule.module("statistic").flag("--mode", "random"), n - i);
        }
        out.nat_rule(rule.jump(sep.as_str()));
    }
}

/// One KUBE-SEP-* chain per endpoint some policy chain can reach.
pub(super) fn endpoint_chains(out: &mut Output, ctx: &ServiceCtx) {
    let svc = &ctx.svc.name;
    let proto = svc.protocol;
    for ep in &ctx.eps.reachable {
        let sep = ctx.sep(ep);
        out.nat.push_chain(&sep);
        // A pod reaching itself through the service must be masqueraded (hairpin).
        let hairpin = with_comment(out, Rule::append(&sep), || ctx.name.clone()).src(ep.addr.ip());
        out.nat_rule(hairpin.jump(names::KUBE_MARK_MASQ));
        let mut dnat = with_comment(out, Rule::append(&sep), || ctx.name.clone());
        if ctx.svc.affinity_timeout.is_some() {
            dnat = dnat.module("recent").flag("--name", sep.as_str()).arg(Arg::bare("--set"));
        }
        let dnat = dnat.proto(proto).flag("-j", "DNAT").flag("--to-destination", &ep.key()).build();
        out.nat_rule(dnat);
    }
}

#[cfg(test)]
mod tests {
    use super::probability;

    #[test]
    fn cached_probabilities_are_the_same_text() {
        for n in [1, 2, 3, 7, 255, 256, 1000] {
            let rule =
                super::with_probability(crate::rules::ruleset::Rule::append(&crate::rules::chain_names::fixed("X")), n);
            assert_eq!(rule.build().get("--probability").and_then(|a| a.value()), Some(probability(n).as_str()));
        }
    }

    #[test]
    fn probabilities_print_like_go() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(6), "0.1666666667");
        assert_eq!(probability(7), "0.1428571429");
    }
}
