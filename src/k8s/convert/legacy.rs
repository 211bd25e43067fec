//! Converts a core/v1 Endpoints object (the pre-EndpointSlice API) into an endpoint group.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, Endpoints};
use tracing::debug;

use super::endpoints::{node_name, with_port, EndpointGroup};
use super::reporter::Reporter;
use super::validate::{self, parse_ip, port_number};
use super::Partial;
use crate::k8s::manifests::{object_label, quoted};
use crate::model::Endpoint;

/// Converts an Endpoints object (named like its Service). `addresses` are ready and serving,
/// `notReadyAddresses` are neither (and not terminating). `None` with no problem when the
/// object is labelled for another proxy or a headless Service; `None` with a problem when its
/// namespace or name is invalid. Bad ports and addresses are reported and skipped.
pub fn core_endpoints(endpoints: &Endpoints) -> Partial<Option<EndpointGroup>> {
    let mut problems = Vec::new();
    let meta = &endpoints.metadata;
    let namespace = meta.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or_default();
    let mut report = Reporter::new(object_label("Endpoints", Some(namespace), name), &mut problems);
    let value = if let Err(why) = validate::dns_label(namespace) {
        report.report(format!("invalid namespace {}: {why}", quoted(namespace)));
        None
    } else if let Err(why) = validate::dns_label(name) {
        report.report(format!("invalid name {}: {why}", quoted(name)));
        None
    } else if let Some(label) = validate::ignored_by_label(meta.labels.as_ref()) {
        debug!(endpoints = report.label(), label, "Endpoints has a label kube-proxy ignores, skipping");
        None
    } else {
        let subsets = endpoints.subsets.as_deref().unwrap_or_default();
        let ports = subsets.iter().flat_map(|subset| subset_ports(subset, &mut report)).collect();
        Some(EndpointGroup {
            namespace: namespace.to_string(),
            service: name.to_string(),
            name: name.to_string(),
            ports,
        })
    };
    drop(report);
    Partial { value, problems }
}

fn subset_ports(subset: &EndpointSubset, report: &mut Reporter<'_>) -> Vec<super::PortEndpoints> {
    let ready = subset.addresses.as_deref().unwrap_or_default();
    let not_ready = subset.not_ready_addresses.as_deref().unwrap_or_default();
    let mut backends: Vec<Endpoint> = ready.iter().filter_map(|a| backend(a, true, report)).collect();
    backends.extend(not_ready.iter().filter_map(|a| backend(a, false, report)));
    let mut ports = Vec::new();
    for port in subset.ports.as_deref().unwrap_or_default() {
        let name = port.name.as_deref().unwrap_or_default();
        let protocol = match validate::protocol(port.protocol.as_deref()) {
            Ok(protocol) => protocol,
            Err(raw) => {
                report.report(format!("port {}: unknown protocol {}", quoted(name), quoted(&raw)));
                continue;
            }
        };
        let Some(number) = port_number(port.port) else {
            report.report(format!("port {}: port {} out of range 1-65535", quoted(name), port.port));
            continue;
        };
        ports.push(with_port(name.to_string(), protocol, number, &backends));
    }
    ports
}

fn backend(address: &EndpointAddress, ready: bool, report: &mut Reporter<'_>) -> Option<Endpoint> {
    let Some(ip) = parse_ip(&address.ip) else {
        report.report(format!("endpoint address {} is not a valid IP, skipped", quoted(&address.ip)));
        return None;
    };
    Some(Endpoint {
        addr: SocketAddr::new(ip, 0),
        ready,
        serving: ready,
        terminating: false,
        node_name: node_name(address.node_name.as_deref(), report),
        zone_hints: Vec::new(),
        node_hints: vec![],
    })
}
