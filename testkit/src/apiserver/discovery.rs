//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/GROUP[/VERSION]`, `/version`) built
//! from the resource table, enough for clients that discover before they list.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::resources::{group_version, Resource, RESOURCES};

/// The Kubernetes version the server claims to be.
const GIT_VERSION: &str = "v1.33.0-kubenat-test";

/// The discovery document for `segments` (the path split on `/`), or `None` if it is not one.
pub fn document(segments: &[&str], addr: SocketAddr) -> Option<Value> {
    match segments {
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string() }],
        })),
        ["apis"] => Some(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups() })),
        ["api", "v1"] => Some(resource_list("", "v1")),
        ["apis", group] => groups().into_iter().find(|g| g["name"] == *group).map(|mut g| {
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        }),
        ["apis", group, version] if Resource::in_group_version(group, version).next().is_some() => {
            Some(resource_list(group, version))
        }
        ["version"] => Some(json!({
            "major": "1",
            "minor": "33",
            "gitVersion": GIT_VERSION,
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        })),
        _ => None,
    }
}

/// `/healthz`, `/livez`, `/readyz` answer `ok` in plain text.
pub fn is_health(segments: &[&str]) -> bool {
    matches!(segments, ["healthz" | "livez" | "readyz"])
}

fn groups() -> Vec<Value> {
    let named: BTreeSet<(&str, &str)> =
        RESOURCES.iter().filter(|r| !r.group.is_empty()).map(|r| (r.group, r.version)).collect();
    named
        .into_iter()
        .map(|(group, version)| {
            let gv = json!({ "groupVersion": group_version(group, version), "version": version });
            json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv })
        })
        .collect()
}

fn resource_list(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = Resource::in_group_version(group, version)
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "list", "watch"],
            })
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    })
}
