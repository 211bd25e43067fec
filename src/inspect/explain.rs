//! `explain`: why a Service does (not) work on this node — a pure diagnosis over the desired
//! state (objects, node configuration, rendered rules) and what was observed (live rules per
//! backend, UDP conntrack flows, sysctls). Gathering those is the caller's business.
//!
//! - `input`: the question and the inputs. `report`: the result and its JSON shape.
//! - `rules_check`, `endpoints_check`, `conntrack_check`, `node_check`: one file per kind of
//!   problem. `paths`: frontends traced through the live rules. `text`: the text writer.

mod conntrack_check;
mod endpoints_check;
mod input;
mod node_check;
mod paths;
mod report;
mod rules_check;
mod text;

pub use input::{kube_proxy_chains, BackendChains, DaemonHealth, Desired, Observed, PortSelector, Query};
pub use node_check::node_problems;
pub use report::{
    Address, AddressKind, Code, EndpointReport, NodeReport, OutcomeReport, PathReport, Policies, PortReport, Problem,
    Report, Severity, Verdict,
};
pub use text::{write_node_text, write_text};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::conntrack::Frontends;
use crate::model::{ServicePort, TrafficPolicy};
use crate::rules::render::dispatch::flatten;
use crate::rules::ruleset::Ruleset;

/// Why a question cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No proxied service of that name (not in the objects, headless, or ExternalName).
    #[error("service {service} not found among the proxied services of the objects (headless and ExternalName services are not proxied)")]
    UnknownService {
        /// `namespace/name`.
        service: String,
    },
    /// The service exists but has no port matching `--port`.
    #[error("service {service} has no port {port} (its ports: {known})")]
    UnknownPort {
        /// `namespace/name`.
        service: String,
        /// The `--port` value.
        port: String,
        /// Its ports, comma-separated.
        known: String,
    },
    /// The service has ports, but none of this IP family.
    #[error("service {service} has no {family} cluster IP (try --ip-family)")]
    OtherFamily {
        /// `namespace/name`.
        service: String,
        /// The family asked for.
        family: String,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The rulesets as compared per service ([`service_view`]), the conntrack frontends and the
/// node problems, computed once per question.
struct Context<'a> {
    desired: Desired<'a>,
    observed: &'a Observed,
    want: rules_check::Indexed,
    live: rules_check::Indexed,
    frontends: Frontends,
    flows: Option<conntrack_check::FlowIndex<'a>>,
    node_problems: Vec<Problem>,
}

impl<'a> Context<'a> {
    fn new(desired: Desired<'a>, observed: &'a Observed) -> Self {
        Context {
            desired,
            observed,
            want: rules_check::Indexed::new(service_view(desired.rules)),
            live: rules_check::Indexed::new(service_view(&observed.rules)),
            frontends: Frontends::new(desired.state, desired.node),
            flows: observed
                .flows
                .as_deref()
                .map(|f| conntrack_check::FlowIndex::new(f, desired.state, desired.node.family)),
            node_problems: node_problems(desired.node, desired.rules, observed),
        }
    }

    /// Every problem of one port, node-level ones excluded.
    fn port_problems(&self, port: &ServicePort, from: Option<IpAddr>) -> Vec<Problem> {
        let (node, family) = (self.desired.node, self.desired.node.family);
        let mut problems = rules_check::rule_problems(port, family, &self.want, &self.live);
        problems.extend(endpoints_check::endpoint_problems(port, node));
        problems.extend(endpoints_check::source_range_problems(port, node, from));
        if let Some(flows) = &self.flows {
            problems.extend(conntrack_check::stale_problems(port, family, &self.frontends, flows));
        }
        problems
    }

    fn port_report(&self, port: &ServicePort, from: Option<IpAddr>) -> PortReport {
        let node = self.desired.node;
        let chains = rules_check::desired_chains(&self.want, &rules_check::port_chains(port, node.family));
        let paths = paths::paths(port, node, from, &self.observed.rules);
        let shares = paths.first().map(|p| p.trace.endpoints()).unwrap_or_default();
        let endpoints = endpoints_check::family_endpoints(port, node)
            .into_iter()
            .map(|e| EndpointReport {
                address: e.addr,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                local: !node.node_name.is_empty() && e.is_local(&node.node_name),
                node: e.node_name.clone(),
                probability: shares.get(&e.addr).copied().unwrap_or(0.0),
            })
            .collect();
        PortReport {
            name: port.name.port.to_string(),
            protocol: port.name.protocol.to_string(),
            port: port.port,
            chains,
            addresses: paths::addresses(port, node),
            policies: Policies {
                external_traffic_policy: policy_name(port.external_policy),
                internal_traffic_policy: policy_name(port.internal_policy),
                session_affinity_seconds: port.affinity_timeout,
                source_ranges: port.source_ranges.iter().map(ToString::to_string).collect(),
            },
            endpoints,
            paths,
        }
    }

    /// The report for `ports` of one service.
    fn report(&self, service: String, ports: &[&ServicePort], from: Option<IpAddr>) -> Report {
        let mut problems: Vec<Problem> = ports.iter().flat_map(|p| self.port_problems(p, from)).collect();
        problems.extend(self.node_problems.iter().cloned());
        problems.sort_by_key(|p| p.code);
        let port_reports = ports.iter().map(|p| self.port_report(p, from)).collect();
        Report { service, verdict: Verdict::of(&problems), ports: port_reports, problems }
    }
}

/// `ruleset` as the per-service comparison reads it: without the built-in chains' rules (never
/// a service's; a restore input inserts them with `-I`, which would keep [`flatten`] from
/// inlining tree-dispatch chains), flattened to the flat layout.
fn service_view(ruleset: &Ruleset) -> Ruleset {
    let mut view = ruleset.clone();
    for table in &mut view.tables {
        table.rules.retain(|r| !r.chain.is_builtin());
    }
    flatten(&view).into_owned()
}

fn policy_name(policy: TrafficPolicy) -> &'static str {
    match policy {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    }
}

/// The service's ports the query selects, of the node's family.
fn select<'s>(query: &Query, desired: &Desired<'s>) -> Result<Vec<&'s ServicePort>> {
    let service = format!("{}/{}", query.namespace, query.name);
    let all: Vec<&ServicePort> = desired
        .state
        .services
        .values()
        .map(Arc::as_ref)
        .filter(|p| *p.name.namespace == *query.namespace && *p.name.name == *query.name)
        .collect();
    if all.is_empty() {
        return Err(Error::UnknownService { service });
    }
    let family = desired.node.family;
    let ours: Vec<&ServicePort> = all.iter().copied().filter(|p| p.cluster_ip(family).is_some()).collect();
    if ours.is_empty() {
        return Err(Error::OtherFamily { service, family: family.to_string() });
    }
    let Some(selector) = &query.port else {
        return Ok(ours);
    };
    let chosen: Vec<&ServicePort> = ours
        .iter()
        .copied()
        .filter(|p| match selector {
            PortSelector::Name(name) => *p.name.port == **name,
            PortSelector::Number(number) => p.port == *number,
        })
        .collect();
    if chosen.is_empty() {
        let known: Vec<String> =
            ours.iter().map(|p| format!("{} ({}/{})", p.name.port, p.port, p.name.protocol)).collect();
        let port = match selector {
            PortSelector::Name(name) => name.clone(),
            PortSelector::Number(number) => number.to_string(),
        };
        return Err(Error::UnknownPort { service, port, known: known.join(", ") });
    }
    Ok(chosen)
}

/// Explains one service (`explain service`): its ports, the paths to them through the live
/// rules, and every problem found, node-level ones included.
pub fn explain_service(query: &Query, desired: Desired<'_>, observed: &Observed) -> Result<Report> {
    let ports = select(query, &desired)?;
    let context = Context::new(desired, observed);
    Ok(context.report(format!("{}/{}", query.namespace, query.name), &ports, query.from))
}

/// Explains the node (`explain node`): its own problems, and per problem code how many services
/// have it.
pub fn explain_node(desired: Desired<'_>, observed: &Observed) -> NodeReport {
    let context = Context::new(desired, observed);
    let family = desired.node.family;
    let mut services: BTreeMap<(String, String), Vec<&ServicePort>> = BTreeMap::new();
    for port in desired.state.services.values().filter(|p| p.cluster_ip(family).is_some()) {
        services.entry((port.name.namespace.to_string(), port.name.name.to_string())).or_default().push(port);
    }
    let mut counts = BTreeMap::new();
    let mut verdicts = BTreeMap::new();
    let mut node_specific = false;
    for ports in services.values() {
        let problems: Vec<Problem> = ports.iter().flat_map(|p| context.port_problems(p, None)).collect();
        let codes: BTreeSet<Code> = problems.iter().map(|p| p.code).collect();
        for code in codes {
            *counts.entry(code).or_insert(0) += 1;
            node_specific |= code.is_node_specific();
        }
        let all = problems.iter().chain(&context.node_problems);
        *verdicts.entry(Verdict::of(all)).or_insert(0) += 1;
    }
    let mut verdict = Verdict::of(&context.node_problems);
    if node_specific {
        let judged = counts.keys().filter(|c| c.is_node_specific());
        let worst = judged.map(|c| if *c == Code::StaleConntrack { Verdict::Degraded } else { Verdict::Broken }).max();
        verdict = verdict.max(worst.unwrap_or(Verdict::Ok));
    }
    NodeReport {
        node: desired.node.node_name.clone(),
        verdict,
        problems: context.node_problems.clone(),
        services: services.len(),
        verdicts,
        counts,
    }
}

#[cfg(test)]
mod tests;
