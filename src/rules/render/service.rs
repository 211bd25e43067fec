//! One service port: decide which chains it needs ([`ServiceCtx`]), then write its rules in
//! kube-proxy's order.

use super::service_ctx::ServiceCtx;
use super::{capture, endpoint_chains, policy_chains, Output};
use crate::model::ServicePort;

/// Writes every rule of one service port, in kube-proxy's order.
pub(super) fn render_service(out: &mut Output, svc: &ServicePort) {
    let Some(ctx) = ServiceCtx::new(svc, out.node) else {
        return;
    };
    capture::cluster_ip(out, &ctx);
    capture::external_ips(out, &ctx);
    capture::load_balancer_ips(out, &ctx);
    capture::node_port(out, &ctx);
    capture::health_check_node_port(out, &ctx);
    policy_chains::internal_masquerade(out, &ctx);
    policy_chains::external_chain(out, &ctx);
    policy_chains::firewall_chain(out, &ctx);
    endpoint_chains::policy_chains(out, &ctx);
    endpoint_chains::endpoint_chains(out, &ctx);
}
