//! The chains between capture and endpoints: the ClusterIP masquerade rule, KUBE-EXT-*
//! (external traffic policy, local short-circuits) and KUBE-FW-* (loadBalancerSourceRanges).

use super::service_ctx::ServiceCtx;
use super::{if_local, if_not_local, Output};
use crate::rules::chain_names as names;
use crate::rules::ruleset::Rule;

/// First rule of the internal policy chain: masquerade ClusterIP traffic from outside the
/// cluster (or all of it with `--masquerade-all`; none without a local-traffic detector).
pub(super) fn internal_masquerade(out: &mut Output, ctx: &ServiceCtx) {
    if !ctx.has_internal_endpoints {
        return;
    }
    let base = Rule::append(&ctx.internal_chain)
        .comment(format!("{} cluster IP", ctx.name))
        .proto(ctx.svc.name.protocol)
        .dst(ctx.cluster_ip)
        .dport(ctx.svc.port);
    let rule = if out.node.masquerade_all {
        base
    } else if let Some(not_local) = if_not_local(&out.node.local_detector) {
        base.arg(not_local)
    } else {
        return;
    };
    out.nat_rule(rule.jump(names::KUBE_MARK_MASQ));
}

/// KUBE-EXT-*: every external destination (NodePort, external IP, LB IP) enters here.
pub(super) fn external_chain(out: &mut Output, ctx: &ServiceCtx) {
    if !ctx.uses_external_chain {
        return;
    }
    let ext = &ctx.chains.external;
    out.nat.push_chain(ext);
    if !ctx.svc.external_policy_local(out.node.family) {
        out.nat_rule(
            Rule::append(ext)
                .comment(format!("masquerade traffic for {} external destinations", ctx.name))
                .jump(names::KUBE_MARK_MASQ),
        );
    } else {
        let cluster = ctx.chains.cluster.as_str();
        if let Some(local) = if_local(&out.node.local_detector) {
            // Pod → own external IP behaves as if it went out to the LB and came back.
            out.nat_rule(
                Rule::append(ext)
                    .comment(format!("pod traffic for {} external destinations", ctx.name))
                    .arg(local)
                    .jump(cluster),
            );
        }
        out.nat_rule(
            Rule::append(ext)
                .comment(format!("masquerade LOCAL traffic for {} external destinations", ctx.name))
                .src_type_local()
                .jump(names::KUBE_MARK_MASQ),
        );
        out.nat_rule(
            Rule::append(ext)
                .comment(format!("route LOCAL traffic for {} external destinations", ctx.name))
                .src_type_local()
                .jump(cluster),
        );
    }
    if ctx.has_external_endpoints {
        out.nat_rule(Rule::append(ext).jump(ctx.external_policy_chain.as_str()));
    }
}

/// KUBE-FW-*: allow the source ranges (and the node itself when a range covers it), leave the
/// rest to the KUBE-PROXY-FIREWALL drop in filter.
pub(super) fn firewall_chain(out: &mut Output, ctx: &ServiceCtx) {
    if !ctx.uses_fw_chain {
        return;
    }
    let fw = &ctx.chains.firewall;
    out.nat.push_chain(fw);
    let comment = format!("{} loadbalancer IP", ctx.name);
    let ext = ctx.chains.external.as_str();
    let family = out.node.family;
    let mut allow_from_node = false;
    for range in &ctx.source_ranges {
        out.nat_rule(Rule::append(fw).comment(comment.clone()).src_net(*range).jump(ext));
        allow_from_node |= out.node.node_ips.iter().any(|ip| family.contains(ip) && range.contains(ip));
    }
    if allow_from_node {
        // A VIP-style LB address is often local: node → VIP loops back with the VIP as source.
        for &ip in &ctx.lb_ips {
            out.nat_rule(Rule::append(fw).comment(comment.clone()).src(ip).jump(ext));
        }
    }
    out.nat_rule(
        Rule::append(fw)
            .comment(format!("other traffic to {} will be dropped by KUBE-PROXY-FIREWALL", ctx.name))
            .build(),
    );
}
