//! Converts EndpointSlices into endpoint groups and merges the groups of one Service the way
//! kube-proxy's endpoint-slice cache does (de-duplicated, sorted by `IP:port` string).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::{Endpoint as ApiEndpoint, EndpointPort, EndpointSlice};
use tracing::debug;

use super::reporter::Reporter;
use super::validate::{self, family_name, parse_ip, port_number, protocol_name};
use super::Partial;
use crate::k8s::manifests::{object_label, quoted, Problem};
use crate::model::{Endpoint, IpFamily, Protocol};

/// Label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The endpoints one object (an EndpointSlice or an Endpoints) gives one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointGroup {
    /// Namespace of the Service (and of the object).
    pub namespace: String,
    /// Name of the Service the endpoints belong to.
    pub service: String,
    /// Name of the object; groups are merged in this order.
    pub name: String,
    /// Endpoints per port; a port may appear more than once (core/v1 subsets).
    pub ports: Vec<PortEndpoints>,
}

/// The endpoints of one port of a group, each with that port's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEndpoints {
    /// Port name; matches the Service port of the same name (empty for an unnamed port).
    pub name: String,
    /// Port protocol; matches the Service port's protocol.
    pub protocol: Protocol,
    /// Endpoints, in object order, not yet de-duplicated.
    pub endpoints: Vec<Endpoint>,
}

/// Endpoints of one Service keyed by (port name, protocol), each list de-duplicated and
/// sorted by its `IP:port` string.
pub type MergedEndpoints = BTreeMap<(String, Protocol), Vec<Endpoint>>;

/// Converts an EndpointSlice. `None` (with no problem) for FQDN slices and slices labelled
/// for another proxy or a headless Service; `None` with a problem for a slice without a
/// `kubernetes.io/service-name` label or with an invalid name or addressType. Bad ports and
/// endpoints are reported and skipped; ports without a number are skipped quietly.
pub fn slice_endpoints(slice: &EndpointSlice) -> Partial<Option<EndpointGroup>> {
    let mut problems = Vec::new();
    let value = convert_slice(slice, &mut problems);
    Partial { value, problems }
}

fn convert_slice(slice: &EndpointSlice, problems: &mut Vec<Problem>) -> Option<EndpointGroup> {
    let meta = &slice.metadata;
    let namespace = meta.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or_default();
    let mut report = Reporter::new(object_label("EndpointSlice", Some(namespace), name), problems);
    if let Err(why) = validate::dns_label(namespace) {
        report.report(format!("invalid namespace {}: {why}", quoted(namespace)));
        return None;
    }
    if let Err(why) = validate::dns_subdomain(name) {
        report.report(format!("invalid name {}: {why}", quoted(name)));
        return None;
    }
    if let Some(label) = validate::ignored_by_label(meta.labels.as_ref()) {
        debug!(slice = report.label(), label, "EndpointSlice has a label kube-proxy ignores, skipping");
        return None;
    }
    let Some(service) = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
        report.report(format!("no {SERVICE_NAME_LABEL} label"));
        return None;
    };
    if let Err(why) = validate::dns_label(service) {
        report.report(format!("label {SERVICE_NAME_LABEL}: invalid Service name {}: {why}", quoted(service)));
        return None;
    }
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => {
            debug!(slice = report.label(), "FQDN EndpointSlice, skipping");
            return None;
        }
        other => {
            report.report(format!("unsupported addressType {}", quoted(other)));
            return None;
        }
    };
    let ports = slice_ports(slice.ports.as_deref().unwrap_or_default(), &mut report);
    let backends: Vec<Endpoint> = slice.endpoints.iter().filter_map(|ep| backend(ep, family, &mut report)).collect();
    let ports = ports.into_iter().map(|(name, protocol, port)| with_port(name, protocol, port, &backends)).collect();
    Some(EndpointGroup { namespace: namespace.to_string(), service: service.clone(), name: name.to_string(), ports })
}

/// Copies `backends` (whose port is 0) with `port` set.
pub(super) fn with_port(name: String, protocol: Protocol, port: u16, backends: &[Endpoint]) -> PortEndpoints {
    let endpoints =
        backends.iter().map(|ep| Endpoint { addr: SocketAddr::new(ep.addr.ip(), port), ..ep.clone() }).collect();
    PortEndpoints { name, protocol, endpoints }
}

/// The slice's valid ports as (name, protocol, number), first of each (name, protocol).
fn slice_ports(ports: &[EndpointPort], report: &mut Reporter<'_>) -> Vec<(String, Protocol, u16)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for port in ports {
        let name = port.name.as_deref().unwrap_or_default();
        let Some(number) = port.port else {
            debug!(slice = report.label(), port = name, "EndpointSlice port without a number, skipping");
            continue;
        };
        let protocol = match validate::protocol(port.protocol.as_deref()) {
            Ok(protocol) => protocol,
            Err(raw) => {
                report.report(format!("port {}: unknown protocol {}", quoted(name), quoted(&raw)));
                continue;
            }
        };
        let Some(number) = port_number(number) else {
            report.report(format!("port {}: port {number} out of range 1-65535", quoted(name)));
            continue;
        };
        if !seen.insert((name, protocol)) {
            report.report(format!("port {}: duplicate port {}", quoted(name), protocol_name(protocol)));
            continue;
        }
        out.push((name.to_string(), protocol, number));
    }
    out
}

/// One slice endpoint (`addresses[0]`) with port 0, or `None` after reporting why not.
fn backend(ep: &ApiEndpoint, family: IpFamily, report: &mut Reporter<'_>) -> Option<Endpoint> {
    let Some(raw) = ep.addresses.first() else {
        report.report("endpoint without addresses skipped");
        return None;
    };
    let Some(ip) = parse_ip(raw) else {
        report.report(format!("endpoint address {} is not a valid IP, skipped", quoted(raw)));
        return None;
    };
    if !family.contains(&ip) {
        report.report(format!(
            "endpoint address {ip} is {} but the slice's addressType is {}, skipped",
            family_name(IpFamily::of(&ip)),
            family_name(family)
        ));
        return None;
    }
    let conditions = ep.conditions.as_ref();
    let zone_hints = ep.hints.as_ref().and_then(|h| h.for_zones.as_deref()).unwrap_or_default();
    let node_hints = ep.hints.as_ref().and_then(|h| h.for_nodes.as_deref()).unwrap_or_default();
    Some(Endpoint {
        addr: SocketAddr::new(ip, 0),
        ready: conditions.and_then(|c| c.ready).unwrap_or(true),
        serving: conditions.and_then(|c| c.serving).unwrap_or(true),
        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
        node_name: node_name(ep.node_name.as_deref(), report),
        zone_hints: zone_hints.iter().filter_map(|z| zone_hint(ip, &z.name, report)).collect(),
        node_hints: node_hints.iter().filter_map(|n| node_name(Some(n.name.as_str()), report)).collect(),
    })
}

/// A valid zone hint, or `None` (an invalid one is reported and left out).
fn zone_hint(ip: IpAddr, zone: &str, report: &mut Reporter<'_>) -> Option<String> {
    if zone.is_empty() {
        return None;
    }
    match validate::label_value(zone) {
        Ok(()) => Some(zone.to_string()),
        Err(why) => {
            report.report(format!("endpoint {ip}: zone hint {}: {why}; hint ignored", quoted(zone)));
            None
        }
    }
}

/// A valid node name, or `None` (an invalid one is reported; the endpoint counts as remote).
pub(super) fn node_name(raw: Option<&str>, report: &mut Reporter<'_>) -> Option<String> {
    let raw = raw.filter(|name| !name.is_empty())?;
    match validate::dns_subdomain(raw) {
        Ok(()) => Some(raw.to_string()),
        Err(why) => {
            report.report(format!("endpoint nodeName {}: {why}; treated as not on this node", quoted(raw)));
            None
        }
    }
}

/// Merges the groups of one Service: groups in name order, each endpoint once per `IP:port`
/// (a non-terminating copy replaces a terminating one), sorted by that string.
pub fn merge_endpoints<'a>(groups: impl IntoIterator<Item = &'a EndpointGroup>) -> MergedEndpoints {
    let mut groups: Vec<&EndpointGroup> = groups.into_iter().collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let mut merged: BTreeMap<(String, Protocol), BTreeMap<String, Endpoint>> = BTreeMap::new();
    for port in groups.iter().flat_map(|group| &group.ports) {
        let by_key = merged.entry((port.name.clone(), port.protocol)).or_default();
        for endpoint in &port.endpoints {
            match by_key.entry(endpoint.key()) {
                Entry::Vacant(slot) => {
                    slot.insert(endpoint.clone());
                }
                Entry::Occupied(mut slot) => {
                    if slot.get().terminating && !endpoint.terminating {
                        slot.insert(endpoint.clone());
                    }
                }
            }
        }
    }
    merged.into_iter().map(|(key, by_key)| (key, by_key.into_values().collect())).collect()
}
