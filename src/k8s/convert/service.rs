//! Converts one Service into its service ports (without endpoints) the way kube-proxy reads
//! it; every value that could reach iptables text is validated here.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort as ApiServicePort, ServiceSpec};
use tracing::debug;

use super::reporter::Reporter;
use super::validate::{self, parse_cidr, parse_ip, port_number, protocol_name};
use super::Partial;
use crate::k8s::manifests::{object_label, quoted, Problem};
use crate::model::{IpFamily, Protocol, ServicePort, ServicePortName, TrafficPolicy};

/// Default and largest ClientIP affinity timeout (kube-proxy / API defaults).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
const MAX_AFFINITY_TIMEOUT: i32 = 86400;

/// `spec.type`, minus ExternalName (never proxied).
#[derive(Clone, Copy, PartialEq)]
enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// Converts a Service into one [`ServicePort`] per valid `spec.ports[]` entry, with empty
/// endpoints. Services kube-proxy ignores (headless, ExternalName, labelled for another
/// proxy) give no ports and no problems; a Service with an invalid namespace, name or
/// clusterIP gives no ports and a problem; a bad port or value drops only that port or value.
pub fn service_ports(svc: &Service) -> Partial<Vec<ServicePort>> {
    let mut problems = Vec::new();
    let value = convert(svc, &mut problems).unwrap_or_default();
    Partial { value, problems }
}

fn convert(svc: &Service, problems: &mut Vec<Problem>) -> Option<Vec<ServicePort>> {
    let meta = &svc.metadata;
    let namespace = meta.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or_default();
    let mut report = Reporter::new(object_label("Service", Some(namespace), name), problems);
    if let Err(why) = validate::dns_label(namespace) {
        report.report(format!("invalid namespace {}: {why}", quoted(namespace)));
        return None;
    }
    if let Err(why) = validate::dns_label(name) {
        report.report(format!("invalid name {}: {why}", quoted(name)));
        return None;
    }
    if let Some(label) = validate::ignored_by_label(meta.labels.as_ref()) {
        let service = report.label();
        debug!(service, label, "Service has a label kube-proxy ignores, skipping");
        return None;
    }
    let Some(spec) = &svc.spec else {
        report.report("has no spec");
        return None;
    };
    let service_type = service_type(spec, &mut report)?;
    let cluster_ips = cluster_ips(spec, &mut report)?;
    let name =
        ServicePortName { namespace: namespace.into(), name: name.into(), port: "".into(), protocol: Protocol::Tcp };
    let base = base_port(svc, spec, name, cluster_ips, service_type, &mut report);
    Some(ports(spec, service_type, &base, &mut report))
}

/// Everything the ports of a Service share; `port` is 0 and `name.port` empty until set.
fn base_port(
    svc: &Service,
    spec: &ServiceSpec,
    name: ServicePortName,
    cluster_ips: Vec<IpAddr>,
    service_type: ServiceType,
    report: &mut Reporter<'_>,
) -> ServicePort {
    let mut base = ServicePort {
        external_ips: ip_list("externalIPs", spec.external_ips.as_deref(), report),
        load_balancer_ips: load_balancer_ips(svc, report),
        source_ranges: source_ranges(spec, report),
        affinity_timeout: affinity_timeout(spec, report),
        external_policy: external_policy(spec, report),
        internal_policy: internal_policy(spec, report),
        ..ServicePort::new(name, cluster_ips, 0)
    };
    if service_type == ServiceType::LoadBalancer && base.external_policy == TrafficPolicy::Local {
        base.health_check_node_port = health_check_node_port(spec, report);
    }
    base
}

fn service_type(spec: &ServiceSpec, report: &mut Reporter<'_>) -> Option<ServiceType> {
    match spec.type_.as_deref() {
        None | Some("" | "ClusterIP") => Some(ServiceType::ClusterIp),
        Some("NodePort") => Some(ServiceType::NodePort),
        Some("LoadBalancer") => Some(ServiceType::LoadBalancer),
        Some("ExternalName") => {
            debug!(service = report.label(), "ExternalName Service, skipping");
            None
        }
        Some(other) => {
            report.report(format!("unknown type {}, treated as ClusterIP", quoted(other)));
            Some(ServiceType::ClusterIp)
        }
    }
}

/// `spec.clusterIPs` (or `spec.clusterIP`), at most one per family; `None` when the Service
/// is headless (skipped quietly) or a clusterIP is invalid (reported).
fn cluster_ips(spec: &ServiceSpec, report: &mut Reporter<'_>) -> Option<Vec<IpAddr>> {
    let listed: Vec<&str> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.iter().map(String::as_str).collect(),
    };
    if matches!(listed.first(), None | Some(&"" | &"None")) {
        debug!(service = report.label(), "headless Service, skipping");
        return None;
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for raw in listed {
        let Some(ip) = parse_ip(raw) else {
            report.report(format!("invalid clusterIP {}, Service skipped", quoted(raw)));
            return None;
        };
        if ips.iter().any(|seen| IpFamily::of(seen) == IpFamily::of(&ip)) {
            let family = validate::family_name(IpFamily::of(&ip));
            report.report(format!("clusterIP {ip} ignored: the Service already has an {family} clusterIP"));
            continue;
        }
        ips.push(ip);
    }
    Some(ips)
}

/// Parses a list of IPs, reporting and dropping invalid ones and dropping repeats.
fn ip_list(field: &str, raw: Option<&[String]>, report: &mut Reporter<'_>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for value in raw.unwrap_or_default() {
        match parse_ip(value) {
            Some(ip) if !ips.contains(&ip) => ips.push(ip),
            Some(_) => {}
            None => report.report(format!("{field}: invalid IP {}", quoted(value))),
        }
    }
    ips
}

/// `status.loadBalancer.ingress[].ip`, leaving out `ipMode: Proxy` entries and hostnames.
fn load_balancer_ips(svc: &Service, report: &mut Reporter<'_>) -> Vec<IpAddr> {
    let status = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref());
    let vip_ips: Vec<String> = status
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|ing| ing.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|ing| ing.ip.clone().filter(|ip| !ip.is_empty()))
        .collect();
    ip_list("status.loadBalancer.ingress", Some(&vip_ips), report)
}

/// `spec.loadBalancerSourceRanges`, trimmed, host bits cleared.
fn source_ranges(spec: &ServiceSpec, report: &mut Reporter<'_>) -> Vec<IpNet> {
    let mut ranges: Vec<IpNet> = Vec::new();
    for raw in spec.load_balancer_source_ranges.as_deref().unwrap_or_default() {
        match parse_cidr(raw.trim()) {
            Some(net) if !ranges.contains(&net) => ranges.push(net),
            Some(_) => {}
            None => report.report(format!("loadBalancerSourceRanges: invalid CIDR {}", quoted(raw))),
        }
    }
    ranges
}

fn affinity_timeout(spec: &ServiceSpec, report: &mut Reporter<'_>) -> Option<u32> {
    match spec.session_affinity.as_deref() {
        None | Some("" | "None") => None,
        Some("ClientIP") => {
            let config = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref());
            match config.and_then(|c| c.timeout_seconds) {
                None => Some(DEFAULT_AFFINITY_TIMEOUT),
                Some(secs) if (1..=MAX_AFFINITY_TIMEOUT).contains(&secs) => u32::try_from(secs).ok(),
                Some(secs) => {
                    report.report(format!(
                        "sessionAffinityConfig.clientIP.timeoutSeconds {secs} out of range \
                         1-{MAX_AFFINITY_TIMEOUT}, using {DEFAULT_AFFINITY_TIMEOUT}"
                    ));
                    Some(DEFAULT_AFFINITY_TIMEOUT)
                }
            }
        }
        Some(other) => {
            report.report(format!("unknown sessionAffinity {}, treated as None", quoted(other)));
            None
        }
    }
}

fn external_policy(spec: &ServiceSpec, report: &mut Reporter<'_>) -> TrafficPolicy {
    match spec.external_traffic_policy.as_deref() {
        None | Some("" | "Cluster") => TrafficPolicy::Cluster,
        Some("Local" | "OnlyLocal") => TrafficPolicy::Local,
        Some(other) => {
            report.report(format!("unknown externalTrafficPolicy {}, treated as Cluster", quoted(other)));
            TrafficPolicy::Cluster
        }
    }
}

fn internal_policy(spec: &ServiceSpec, report: &mut Reporter<'_>) -> TrafficPolicy {
    match spec.internal_traffic_policy.as_deref() {
        None | Some("" | "Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            report.report(format!("unknown internalTrafficPolicy {}, treated as Cluster", quoted(other)));
            TrafficPolicy::Cluster
        }
    }
}

/// `spec.healthCheckNodePort` (used only for LoadBalancer Services with
/// externalTrafficPolicy=Local).
fn health_check_node_port(spec: &ServiceSpec, report: &mut Reporter<'_>) -> Option<u16> {
    match spec.health_check_node_port {
        None | Some(0) => None,
        Some(port) => port_number(port).or_else(|| {
            report.report(format!("healthCheckNodePort {port} out of range 1-65535"));
            None
        }),
    }
}

/// One service port per valid `spec.ports[]` entry, in spec order.
fn ports(
    spec: &ServiceSpec,
    service_type: ServiceType,
    base: &ServicePort,
    report: &mut Reporter<'_>,
) -> Vec<ServicePort> {
    let specs = spec.ports.as_deref().unwrap_or_default();
    if specs.is_empty() {
        debug!(service = report.label(), "Service has no ports");
    }
    let mut seen = Seen::default();
    specs
        .iter()
        .enumerate()
        .filter_map(|(index, port)| one_port(port, index, specs.len(), service_type, base, &mut seen, report))
        .collect()
}

/// Port names and (port, protocol) pairs already used in this Service.
#[derive(Default)]
struct Seen<'a> {
    names: HashSet<&'a str>,
    ports: HashSet<(u16, Protocol)>,
}

/// `port "http"`, or `port #2` (1-based) for an unnamed port.
pub(super) fn port_label(name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("port #{}", index + 1)
    } else {
        format!("port {}", quoted(name))
    }
}

fn one_port<'a>(
    api: &'a ApiServicePort,
    index: usize,
    count: usize,
    service_type: ServiceType,
    base: &ServicePort,
    seen: &mut Seen<'a>,
    report: &mut Reporter<'_>,
) -> Option<ServicePort> {
    let name = api.name.as_deref().unwrap_or_default();
    let label = port_label(name, index);
    let mut fail = |reason: String| report.report(format!("{label}: {reason}"));
    if name.is_empty() && count > 1 {
        fail("a name is required when a Service has more than one port".into());
        return None;
    }
    if !name.is_empty() {
        if let Err(why) = validate::port_name(name) {
            fail(format!("invalid name: {why}"));
            return None;
        }
    }
    let protocol = validate::protocol(api.protocol.as_deref())
        .map_err(|raw| fail(format!("unknown protocol {}", quoted(&raw))))
        .ok()?;
    let Some(port) = port_number(api.port) else {
        fail(format!("port {} out of range 1-65535", api.port));
        return None;
    };
    if !seen.names.insert(name) {
        fail("duplicate port name".into());
        return None;
    }
    if !seen.ports.insert((port, protocol)) {
        fail(format!("duplicate port {port}/{}", protocol_name(protocol)));
        return None;
    }
    let node_port = match (service_type, api.node_port) {
        (ServiceType::ClusterIp, _) | (_, None | Some(0)) => None,
        (_, Some(node_port)) => port_number(node_port).or_else(|| {
            fail(format!("nodePort {node_port} out of range 1-65535"));
            None
        }),
    };
    let mut out = base.clone();
    out.name.port = name.into();
    out.name.protocol = protocol;
    out.port = port;
    out.node_port = node_port;
    Some(out)
}
