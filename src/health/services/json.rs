//! The JSON of `/debug/services` and `/debug/services/NAMESPACE/NAME` (field names are part of
//! the documented interface: change them only with the docs and a note in the changelog).

use axum::http::StatusCode;
use serde::Serialize;

use super::{EndpointView, PortView, Published, SyncOutcome};
use crate::health::server::go_time;
use crate::model::{Protocol, ServicePortName};

/// `lastSync`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncBody {
    /// `ok` or `failed`.
    result: &'static str,
    /// `full`, `partial`, or null for a failed sync.
    kind: Option<&'static str>,
    time: String,
    error: Option<String>,
}

/// `chains`.
#[derive(Debug, Serialize)]
struct ChainsBody {
    #[serde(rename = "SVC")]
    svc: Option<String>,
    #[serde(rename = "SVL")]
    svl: Option<String>,
    #[serde(rename = "EXT")]
    ext: Option<String>,
    #[serde(rename = "FW")]
    fw: Option<String>,
}

/// One entry of `endpoints`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointBody {
    address: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    node_name: Option<String>,
    /// `KUBE-SEP-…`, or null when no rule sends traffic to it.
    chain: Option<String>,
}

/// One service port.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PortBody {
    namespace: String,
    name: String,
    port: String,
    protocol: &'static str,
    /// `ns/name:port` (kube-proxy's service port name).
    service_port: String,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Vec<String>,
    families: Vec<&'static str>,
    chains: ChainsBody,
    endpoints: Vec<EndpointBody>,
    first_programmed: String,
    last_programmed: String,
}

/// `/debug/services`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody {
    last_sync: Option<SyncBody>,
    service_ports: Vec<PortBody>,
}

/// `/debug/services/NAMESPACE/NAME`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceBody {
    namespace: String,
    name: String,
    last_sync: Option<SyncBody>,
    ports: Vec<PortBody>,
}

/// The error body of a 404.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

fn api_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

fn sync_body(s: &SyncOutcome) -> SyncBody {
    SyncBody {
        result: if s.error.is_none() { "ok" } else { "failed" },
        kind: s.kind.map(|k| k.as_str()),
        time: go_time(Some(s.time)),
        error: s.error.clone(),
    }
}

fn endpoint_body(e: &EndpointView) -> EndpointBody {
    EndpointBody {
        address: e.endpoint.key(),
        ready: e.endpoint.ready,
        serving: e.endpoint.serving,
        terminating: e.endpoint.terminating,
        local: e.local,
        node_name: e.endpoint.node_name.clone(),
        chain: e.chain.clone(),
    }
}

fn port_body(name: &ServicePortName, p: &PortView) -> PortBody {
    let chain = |c: &Option<crate::rules::ruleset::ChainName>| c.as_ref().map(ToString::to_string);
    PortBody {
        namespace: name.namespace.to_string(),
        name: name.name.to_string(),
        port: name.port.to_string(),
        protocol: api_protocol(name.protocol),
        service_port: name.to_string(),
        cluster_ips: p.cluster_ips.iter().map(ToString::to_string).collect(),
        families: p.families.iter().map(|f| f.api_name()).collect(),
        chains: ChainsBody {
            svc: chain(&p.chains.cluster),
            svl: chain(&p.chains.local),
            ext: chain(&p.chains.external),
            fw: chain(&p.chains.firewall),
        },
        endpoints: p.endpoints.iter().map(endpoint_body).collect(),
        first_programmed: go_time(Some(p.first_programmed)),
        last_programmed: go_time(Some(p.last_programmed)),
    }
}

fn to_json(body: &impl Serialize) -> String {
    // Strings, numbers, booleans and options only: serializing cannot fail.
    serde_json::to_string_pretty(body).unwrap_or_else(|_| "{}".to_string())
}

/// `/debug/services`: every service port.
pub(crate) fn list_reply(view: &Published) -> (StatusCode, String) {
    let body = ListBody {
        last_sync: view.last_sync.as_ref().map(sync_body),
        service_ports: view.ports.iter().map(|(name, p)| port_body(name, p)).collect(),
    };
    (StatusCode::OK, to_json(&body))
}

/// `/debug/services/NAMESPACE/NAME`: the ports of one Service, or 404 with a JSON error.
pub(crate) fn service_reply(view: &Published, namespace: &str, name: &str) -> (StatusCode, String) {
    let ports: Vec<PortBody> = view
        .ports
        .iter()
        .filter(|(n, _)| *n.namespace == *namespace && *n.name == *name)
        .map(|(n, p)| port_body(n, p))
        .collect();
    if ports.is_empty() {
        let error = format!("service {namespace}/{name} is not programmed by this proxy");
        return (StatusCode::NOT_FOUND, to_json(&ErrorBody { error }));
    }
    let body = ServiceBody {
        namespace: namespace.to_string(),
        name: name.to_string(),
        last_sync: view.last_sync.as_ref().map(sync_body),
        ports,
    };
    (StatusCode::OK, to_json(&body))
}
