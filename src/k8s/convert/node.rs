//! Reads what the proxy needs to know about its own Node: zone, pod CIDRs, addresses, and
//! whether it is leaving the cluster (for `/healthz`'s `nodeEligible`).

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use tracing::warn;

use super::validate::{label_value, parse_cidr, parse_ip};
use crate::k8s::manifests::quoted;
use crate::model::{Leaving, NodeFacts};

/// Label holding a Node's zone, compared with endpoint zone hints.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The taint the cluster autoscaler puts on a Node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Whether (and why) `node` is leaving: deletion first, then the autoscaler's taint.
fn leaving(node: &Node) -> Option<Leaving> {
    if node.metadata.deletion_timestamp.is_some() {
        return Some(Leaving::Deleting);
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT).then_some(Leaving::ToBeDeletedByClusterAutoscaler)
}

/// Reads a Node's zone, pod CIDRs and addresses; invalid values are logged and left out.
pub fn node_facts(node: &Node) -> NodeFacts {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let zone = node.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).filter(|z| !z.is_empty());
    let zone = zone.and_then(|zone| match label_value(zone) {
        Ok(()) => Some(zone.clone()),
        Err(why) => {
            warn!(node = %quoted(name), zone = %quoted(zone), "invalid {ZONE_LABEL} label on Node ({why}), zone hints ignored");
            None
        }
    });
    let spec = node.spec.as_ref();
    let listed = spec.and_then(|s| s.pod_cidrs.clone()).filter(|cidrs| !cidrs.is_empty());
    let raw_cidrs = listed.or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|cidr| vec![cidr]));
    let mut pod_cidrs: Vec<IpNet> = Vec::new();
    for raw in raw_cidrs.unwrap_or_default() {
        match parse_cidr(&raw) {
            Some(net) if !pod_cidrs.contains(&net) => pod_cidrs.push(net),
            Some(_) => {}
            None => {
                warn!(node = %quoted(name), cidr = %quoted(&raw), "invalid pod CIDR on Node, ignored")
            }
        }
    }
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_deref()).unwrap_or_default();
    let mut internal_ips: Vec<IpAddr> = Vec::new();
    for wanted in ["InternalIP", "ExternalIP"] {
        for address in addresses.iter().filter(|a| a.type_ == wanted) {
            match parse_ip(&address.address) {
                Some(ip) if !internal_ips.contains(&ip) => internal_ips.push(ip),
                Some(_) => {}
                None => {
                    warn!(node = %quoted(name), address = %quoted(&address.address), "invalid Node address, ignored")
                }
            }
        }
    }
    NodeFacts { zone, pod_cidrs, internal_ips, leaving: leaving(node) }
}
