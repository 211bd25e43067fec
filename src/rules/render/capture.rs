//! Capture rules: the KUBE-SERVICES / KUBE-NODEPORTS entries that send a service's ClusterIP,
//! external IPs, LoadBalancer IPs and NodePort into its chains, and the filter rules that
//! REJECT or DROP them when there is nowhere to go.

use std::net::IpAddr;

use super::service_ctx::{Refusal, ServiceCtx};
use super::static_rules::NFACCT_LOCALHOST_NODEPORTS;
use super::Output;
use crate::model::Protocol;
use crate::rules::chain_names::{self as names, fixed};
use crate::rules::ruleset::{Arg, Rule, RuleBuilder};

/// `-A chain -m comment --comment C -m p -p p -d ip --dport port`
fn dst_rule(chain: &'static str, comment: &str, proto: Protocol, ip: IpAddr, port: u16) -> RuleBuilder {
    Rule::append(&fixed(chain)).comment(comment).proto(proto).dst(ip).dport(port)
}

fn refuse(out: &mut Output, chain: &'static str, refusal: &Refusal, proto: Protocol, ip: IpAddr, port: u16) {
    out.filter_rule(dst_rule(chain, &refusal.comment, proto, ip, port).jump(refusal.target));
}

/// ClusterIP → SVC/SVL, or the filter REJECT/DROP.
pub(super) fn cluster_ip(out: &mut Output, ctx: &ServiceCtx) {
    let proto = ctx.svc.name.protocol;
    let port = ctx.svc.port;
    if ctx.has_internal_endpoints {
        let comment = format!("{} cluster IP", ctx.name);
        let rule = dst_rule(names::KUBE_SERVICES, &comment, proto, ctx.cluster_ip, port);
        out.nat_rule(rule.jump(ctx.internal_chain.as_str()));
    } else if let Some(refusal) = &ctx.internal_refusal {
        refuse(out, names::KUBE_SERVICES, refusal, proto, ctx.cluster_ip, port);
    }
}

/// externalIPs → EXT, or filter KUBE-EXTERNAL-SERVICES REJECT/DROP.
pub(super) fn external_ips(out: &mut Output, ctx: &ServiceCtx) {
    let proto = ctx.svc.name.protocol;
    let port = ctx.svc.port;
    let comment = format!("{} external IP", ctx.name);
    for &ip in &ctx.external_ips {
        if ctx.has_endpoints {
            let rule = dst_rule(names::KUBE_SERVICES, &comment, proto, ip, port);
            out.nat_rule(rule.jump(ctx.chains.external.as_str()));
        }
        if let Some(refusal) = ctx.external_refusal.as_ref().filter(|_| !ctx.has_external_endpoints) {
            refuse(out, names::KUBE_EXTERNAL_SERVICES, refusal, proto, ip, port);
        }
    }
}

/// LoadBalancer ingress IPs → EXT (or FW), the KUBE-PROXY-FIREWALL drop for source ranges,
/// and the KUBE-EXTERNAL-SERVICES refusals.
pub(super) fn load_balancer_ips(out: &mut Output, ctx: &ServiceCtx) {
    let proto = ctx.svc.name.protocol;
    let port = ctx.svc.port;
    let comment = format!("{} loadbalancer IP", ctx.name);
    for &ip in &ctx.lb_ips {
        if ctx.has_endpoints {
            let rule = dst_rule(names::KUBE_SERVICES, &comment, proto, ip, port);
            out.nat_rule(rule.jump(ctx.lb_chain.as_str()));
        }
        if ctx.uses_fw_chain {
            let comment = format!("{} traffic not accepted by {}", ctx.name, ctx.chains.firewall);
            let rule = dst_rule(names::KUBE_PROXY_FIREWALL, &comment, proto, ip, port);
            out.filter_rule(rule.jump("DROP"));
        }
    }
    if let Some(refusal) = ctx.external_refusal.as_ref().filter(|_| !ctx.has_external_endpoints) {
        for &ip in &ctx.lb_ips {
            refuse(out, names::KUBE_EXTERNAL_SERVICES, refusal, proto, ip, port);
        }
    }
}

/// NodePort → EXT (not subject to loadBalancerSourceRanges), or the filter refusal.
pub(super) fn node_port(out: &mut Output, ctx: &ServiceCtx) {
    let Some(node_port) = ctx.svc.node_port else {
        return;
    };
    let proto = ctx.svc.name.protocol;
    let nodeports = fixed(names::KUBE_NODEPORTS);
    if ctx.has_endpoints {
        if out.node.nfacct && out.node.localhost_nodeports_active() {
            // A metering copy for localhost NodePort traffic; it must come first to count.
            out.nat_rule(
                Rule::append(&nodeports)
                    .comment(ctx.name.clone())
                    .proto(proto)
                    .arg(Arg::new("-d", "127.0.0.0/8"))
                    .dport(node_port)
                    .module("nfacct")
                    .arg(Arg::new("--nfacct-name", NFACCT_LOCALHOST_NODEPORTS))
                    .jump(ctx.chains.external.as_str()),
            );
        }
        out.nat_rule(
            Rule::append(&nodeports)
                .comment(ctx.name.clone())
                .proto(proto)
                .dport(node_port)
                .jump(ctx.chains.external.as_str()),
        );
    }
    if let Some(refusal) = ctx.external_refusal.as_ref().filter(|_| !ctx.has_external_endpoints) {
        out.filter_rule(
            Rule::append(&fixed(names::KUBE_EXTERNAL_SERVICES))
                .comment(refusal.comment.clone())
                .dst_type_local()
                .proto(proto)
                .dport(node_port)
                .jump(refusal.target),
        );
    }
}

/// healthCheckNodePort: always accepted in filter KUBE-NODEPORTS.
pub(super) fn health_check_node_port(out: &mut Output, ctx: &ServiceCtx) {
    let Some(port) = ctx.svc.health_check_node_port else {
        return;
    };
    out.filter_rule(
        Rule::append(&fixed(names::KUBE_NODEPORTS))
            .comment(format!("{} health check node port", ctx.name))
            .proto(Protocol::Tcp)
            .dport(port)
            .jump("ACCEPT"),
    );
}
