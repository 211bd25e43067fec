mod endpoints;
mod services;

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::k8s::manifests::load_str;
use crate::model::{Endpoint, Protocol, ServicePortName, TrafficPolicy};

fn convert_with(yaml: &str, source: EndpointsSource) -> Converted {
    let loaded = load_str(yaml, Path::new("t.yaml"));
    assert!(loaded.problems.is_empty(), "load problems: {:?}", loaded.problems);
    cluster_state(&loaded.objects, source)
}

fn convert(yaml: &str) -> Converted {
    convert_with(yaml, EndpointsSource::Auto)
}

fn messages(converted: &Converted) -> Vec<String> {
    converted.problems.iter().map(ToString::to_string).collect()
}

fn key(ns: &str, name: &str, port: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName { namespace: ns.into(), name: name.into(), port: port.into(), protocol }
}

fn port<'a>(c: &'a Converted, name: &str, port_name: &str) -> &'a ServicePort {
    let k = key("default", name, port_name, Protocol::Tcp);
    c.state.services.get(&k).unwrap_or_else(|| panic!("no {k} in {:?}", c.state.services.keys()))
}

fn keys(endpoints: &[Endpoint]) -> Vec<String> {
    endpoints.iter().map(Endpoint::key).collect()
}

/// A Service `name` in `default` with `spec` lines (indented by two spaces).
fn svc(name: &str, spec: &str) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// An EndpointSlice for Service `service` with `body` (ports, endpoints) at top level.
fn slice(name: &str, service: &str, address_type: &str, body: &str) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  labels:\n    \
         kubernetes.io/service-name: {service}\naddressType: {address_type}\n{body}"
    )
}

const WEB: &str = "  clusterIP: 10.96.0.10\n  ports:\n  - name: http\n    port: 80\n";
