//! `no-endpoints`, `no-ready-endpoints`, `no-local-endpoints` and `source-range-blocked`: what
//! the Service and its EndpointSlices say, judged for this node (no rules involved).

use std::net::IpAddr;

use super::report::{Code, Problem, Severity};
use crate::model::{Endpoint, NodeConfig, ServicePort};

/// The endpoints of the node's family.
pub(super) fn family_endpoints<'a>(port: &'a ServicePort, node: &NodeConfig) -> Vec<&'a Endpoint> {
    port.endpoints.iter().filter(|e| node.family.contains(&e.addr.ip())).collect()
}

/// Problems with the port's endpoints, as this node sees them.
pub(super) fn endpoint_problems(port: &ServicePort, node: &NodeConfig) -> Vec<Problem> {
    let endpoints = family_endpoints(port, node);
    let name = &port.name;
    let selector =
        format!("kubectl -n {} get endpointslices -l kubernetes.io/service-name={} -o wide", name.namespace, name.name);
    if endpoints.is_empty() {
        return vec![Problem {
            code: Code::NoEndpoints,
            severity: Severity::Error,
            message: format!("{name} has no {} endpoints: connections to it are rejected", node.family),
            fix: format!("check that pods match the Service's selector and expose the target port ({selector})"),
        }];
    }
    let mut problems = Vec::new();
    if !endpoints.iter().any(|e| e.ready) {
        let serving = endpoints.iter().filter(|e| e.serving).count();
        let (severity, effect) = if serving > 0 {
            (Severity::Warning, format!("only {serving} terminating endpoint(s) still serving receive the traffic"))
        } else {
            (Severity::Error, "none is serving, so connections are rejected".to_string())
        };
        problems.push(Problem {
            code: Code::NoReadyEndpoints,
            severity,
            message: format!("none of {name}'s {} endpoint(s) is ready: {effect}", endpoints.len()),
            fix: format!("check the pods' readiness probes and whether a rollout is stuck ({selector})"),
        });
    }
    problems.extend(local_problems(port, node, &endpoints));
    problems
}

/// Local traffic policies with no usable endpoint on this node. Unknown node name: no check.
fn local_problems(port: &ServicePort, node: &NodeConfig, endpoints: &[&Endpoint]) -> Vec<Problem> {
    if node.node_name.is_empty() || endpoints.iter().any(|e| e.is_local(&node.node_name) && (e.ready || e.serving)) {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let here = &node.node_name;
    if port.external_policy_local(node.family) {
        problems.push(Problem {
            code: Code::NoLocalEndpoints,
            severity: Severity::Warning,
            message: format!(
                "{} has externalTrafficPolicy: Local and no usable endpoint on node {here}: external traffic \
                 (NodePort, external and load-balancer IPs) arriving at this node is dropped",
                port.name
            ),
            fix: "expected on nodes without its pods (a load balancer's health check on the healthCheckNodePort \
                  steers away from them); send traffic to nodes running a pod, or use externalTrafficPolicy: Cluster"
                .to_string(),
        });
    }
    if port.internal_policy_local() {
        problems.push(Problem {
            code: Code::NoLocalEndpoints,
            severity: Severity::Warning,
            message: format!(
                "{} has internalTrafficPolicy: Local and no usable endpoint on node {here}: cluster-IP traffic \
                 from this node is dropped",
                port.name
            ),
            fix: "run one of its pods on every node that uses it (e.g. a DaemonSet), or use internalTrafficPolicy: \
                  Cluster"
                .to_string(),
        });
    }
    problems
}

/// `--from` outside `loadBalancerSourceRanges` on a port with load-balancer IPs.
pub(super) fn source_range_problems(port: &ServicePort, node: &NodeConfig, from: Option<IpAddr>) -> Vec<Problem> {
    let Some(from) = from else {
        return Vec::new();
    };
    let has_lb = port.load_balancer_ips.iter().any(|ip| node.family.contains(ip));
    if !has_lb || port.source_ranges.is_empty() || port.source_ranges.iter().any(|r| r.contains(&from)) {
        return Vec::new();
    }
    let ranges: Vec<String> = port.source_ranges.iter().map(ToString::to_string).collect();
    vec![Problem {
        code: Code::SourceRangeBlocked,
        severity: Severity::Error,
        message: format!(
            "{from} is not in {}'s loadBalancerSourceRanges ({}): its traffic to the load-balancer IPs is dropped",
            port.name,
            ranges.join(", ")
        ),
        fix: "add the client's range to spec.loadBalancerSourceRanges, or connect from an allowed address".to_string(),
    }]
}
