//! No input object can add a rule or a line the renderer did not intend. Property tests:
//! - hostile strings placed straight into every user-derived field of the model (namespace,
//!   name, port name, endpoint node names and zone hints, the node's own name and zone) render
//!   to text that parses back to exactly the rules and chains rendered, with one restore line
//!   per declaration and rule, and the same rules (up to names and comments) as a twin state
//!   whose strings are harmless;
//! - hostile strings in every field of Service / EndpointSlice objects, fed through the
//!   manifest loader and converter, never reach the rules except as validated values, and
//!   every problem is one line naming its object.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use kubenat::k8s::convert::{cluster_state, EndpointsSource};
use kubenat::k8s::manifests::load_str;
use kubenat::model::{
    ClusterState, Endpoint, IpFamily, LocalDetector, NodeConfig, Protocol, ServicePort, ServicePortName, TrafficPolicy,
};
use kubenat::rules::ruleset::{Rule, Ruleset};
use kubenat::{inspect::check, rules::parse, rules::render};
use proptest::prelude::*;
use serde_json::json;

/// Fragments that would break or extend a restore file if they were written raw.
const FRAGMENTS: &[&str] = &[
    "\n",
    "\r\n",
    "\0",
    "\"",
    "\\",
    "\\\"",
    "'",
    " -j ACCEPT",
    "\n-A KUBE-SERVICES -j ACCEPT",
    "\nCOMMIT\n*filter\n",
    "# ",
    "*nat",
    ":KUBE-X - [0:0]",
    "-X KUBE-SERVICES",
    "\t",
    "\u{2028}",
    "\u{85}",
    "é",
    "🙂",
    "%s%n",
    "$(reboot)",
    "`id`",
    ";",
    "!",
    " ! ",
    "--comment",
];

/// Any string, biased towards injection fragments, sometimes very long.
fn hostile() -> impl Strategy<Value = String> {
    let fragment = prop::sample::select(FRAGMENTS).prop_map(str::to_string);
    let piece = prop_oneof![3 => fragment, 2 => any::<String>(), 1 => "[a-z0-9-]{1,12}"];
    prop_oneof![
        8 => prop::collection::vec(piece, 1..6).prop_map(|p| p.concat()),
        1 => (1usize..400).prop_map(|n| "\"".repeat(n)),
        1 => (200usize..1200).prop_map(|n| "a\n".repeat(n)),
    ]
}

/// A valid-looking but harmless stand-in for the `n`th distinct string.
fn harmless(n: usize) -> String {
    format!("s{n}")
}

#[derive(Debug, Clone)]
struct Names {
    namespaces: Vec<String>,
    names: Vec<String>,
    ports: Vec<String>,
    nodes: Vec<String>,
    zones: Vec<String>,
}

fn names() -> impl Strategy<Value = Names> {
    (
        prop::collection::vec(hostile(), 1..3),
        prop::collection::vec(hostile(), 1..4),
        prop::collection::vec(hostile(), 1..3),
        prop::collection::vec(hostile(), 1..3),
        prop::collection::vec(hostile(), 1..3),
    )
        .prop_map(|(namespaces, names, ports, nodes, zones)| Names { namespaces, names, ports, nodes, zones })
}

/// An endpoint's choices: node name, zone and host indexes, and its condition.
type EndpointShape = (usize, usize, usize, u8);
/// A service's choices: namespace, name and port name indexes, flags, endpoints.
type ServiceShape = (usize, usize, usize, u8, Vec<EndpointShape>);

/// Choices that shape the state, independent of the strings.
#[derive(Debug, Clone)]
struct Shape {
    services: Vec<ServiceShape>,
    node: usize,
    zone: usize,
}

fn shape() -> impl Strategy<Value = Shape> {
    let endpoint = (0usize..3, 0usize..3, 0usize..40, 0u8..4);
    let service = (0usize..2, 0usize..3, 0usize..2, 0u8..16, prop::collection::vec(endpoint, 0..5));
    (prop::collection::vec(service, 0..5), 0usize..3, 0usize..3).prop_map(|(services, node, zone)| Shape {
        services,
        node,
        zone,
    })
}

/// Builds the state and node for `shape`, taking every string through `pick`.
fn build(shape: &Shape, names: &Names, pick: &mut dyn FnMut(&str) -> String) -> (ClusterState, NodeConfig) {
    let at = |v: &Vec<String>, i: usize| v[i % v.len()].clone();
    let mut services = BTreeMap::new();
    for (index, (ns, name, port, flags, eps)) in shape.services.iter().enumerate() {
        let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][usize::from(*flags % 3)];
        let name = ServicePortName {
            namespace: pick(&at(&names.namespaces, *ns)).into(),
            name: pick(&at(&names.names, *name)).into(),
            port: pick(&at(&names.ports, *port)).into(),
            protocol,
        };
        let mut endpoints: Vec<Endpoint> = eps
            .iter()
            .map(|(node, zone, host, cond)| Endpoint {
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, 1, *host as u8)), 8080),
                ready: *cond != 3,
                serving: true,
                terminating: *cond == 3,
                node_name: Some(pick(&at(&names.nodes, *node))),
                zone_hints: if cond % 2 == 0 { vec![pick(&at(&names.zones, *zone))] } else { Vec::new() },
                node_hints: vec![],
            })
            .collect();
        endpoints.sort_by_cached_key(Endpoint::key);
        endpoints.dedup_by(|a, b| a.key() == b.key());
        let external = flags & 4 != 0;
        let port = ServicePort {
            node_port: external.then_some(30000 + index as u16),
            external_ips: if external { vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, index as u8))] } else { vec![] },
            source_ranges: if flags & 8 != 0 { vec!["198.51.100.0/24".parse().expect("cidr")] } else { vec![] },
            affinity_timeout: (flags & 1 != 0).then_some(10800),
            external_policy: if flags & 2 != 0 { TrafficPolicy::Local } else { TrafficPolicy::Cluster },
            endpoints,
            ..ServicePort::new(name.clone(), vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, index as u8 + 1))], 80)
        };
        services.insert(name, port.into());
    }
    let node = NodeConfig {
        node_name: pick(&at(&names.nodes, shape.node)),
        zone: Some(pick(&at(&names.zones, shape.zone))),
        node_ips: vec!["192.0.2.10".parse().expect("ip")],
        local_detector: LocalDetector::Cidr("10.244.0.0/16".parse().expect("cidr")),
        ..NodeConfig::default()
    };
    (ClusterState { services }, node)
}

/// One restore line per table header, chain declaration, rule, delete and `COMMIT`.
fn expected_lines(ruleset: &Ruleset) -> usize {
    ruleset.tables.iter().map(|t| 2 + t.chains.len() + t.rules.len() + 2 * t.deletes.len()).sum()
}

/// A rule with names and comments taken out: which kind of chain, which flags and values
/// (hashed chain names reduced to their prefix), which kind of target.
fn shape_of(rule: &Rule) -> String {
    let generic = |s: &str| {
        for prefix in ["KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-"] {
            if s.starts_with(prefix) {
                return prefix.to_string();
            }
        }
        s.to_string()
    };
    let mut out = generic(rule.chain.as_str());
    for arg in &rule.args {
        out.push(' ');
        out.push_str(arg.flag);
        if arg.flag != "--comment" {
            for v in arg.values.iter() {
                out.push(' ');
                out.push_str(&generic(v));
            }
        }
    }
    out
}

fn shapes(ruleset: &Ruleset) -> Vec<String> {
    let mut all: Vec<String> = ruleset.tables.iter().flat_map(|t| t.rules.iter().map(shape_of)).collect();
    all.sort();
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn hostile_model_strings_cannot_add_lines_or_rules(names in names(), shape in shape()) {
        let (state, node) = build(&shape, &names, &mut |s| s.to_string());
        // The twin: every distinct string replaced by a harmless one, consistently. An empty
        // string stays empty: it means "unset" (no zone), which changes which endpoints a
        // topology-aware service uses, so replacing it would change the rules legitimately.
        let mut twin_names: BTreeMap<String, String> = BTreeMap::new();
        let (twin_state, twin_node) = build(&shape, &names, &mut |s| {
            if s.is_empty() {
                return String::new();
            }
            let n = twin_names.len();
            twin_names.entry(s.to_string()).or_insert_with(|| harmless(n)).clone()
        });
        for family in [IpFamily::V4] {
            let node = NodeConfig { family, ..node.clone() };
            let ruleset = render::render(&state, &node);
            let text = ruleset.to_string();
            let parsed = parse::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(&parsed, &ruleset, "parsed text differs from the rendered ruleset");
            prop_assert_eq!(text.lines().count(), expected_lines(&ruleset));
            prop_assert!(!text.contains('\0') && !text.contains('\r'));
            let problems = check::check(&parsed);
            prop_assert!(problems.is_empty(), "{:?}", problems.iter().map(ToString::to_string).collect::<Vec<_>>());
            for rule in parsed.tables.iter().flat_map(|t| &t.rules) {
                if let Some(comment) = rule.comment() {
                    prop_assert!(comment.len() <= 255, "comment of {} bytes", comment.len());
                }
            }
            let twin = render::render(&twin_state, &NodeConfig { family, ..twin_node.clone() });
            prop_assert_eq!(ruleset.rule_count(), twin.rule_count());
            prop_assert_eq!(shapes(&ruleset), shapes(&twin));
        }
    }
}

/// A Service and an EndpointSlice with hostile values in every string field, as JSON lines.
fn hostile_objects(s: &[String]) -> String {
    let v = |i: usize| s[i % s.len()].clone();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": v(0), "namespace": v(1), "labels": {v(2): v(3)}},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": v(4),
            "clusterIPs": [v(4), v(5)],
            "externalIPs": [v(6), "192.0.2.50"],
            "loadBalancerSourceRanges": [v(7), "198.51.100.0/24"],
            "externalTrafficPolicy": v(8),
            "sessionAffinity": v(9),
            "ports": [
                {"name": v(10), "port": 80, "protocol": v(11), "nodePort": 30100},
                {"name": "ok", "port": 81, "nodePort": 30101},
            ],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": v(12), "hostname": v(13)}]}},
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": v(14), "namespace": v(1), "labels": {"kubernetes.io/service-name": v(0)}},
        "addressType": "IPv4",
        "ports": [{"name": v(10), "port": 8080, "protocol": v(11)}, {"name": "ok", "port": 8081}],
        "endpoints": [
            {"addresses": [v(15)], "nodeName": v(16), "hostname": v(17), "zone": v(18),
             "hints": {"forZones": [{"name": v(19)}]}},
            {"addresses": ["10.244.7.7"], "nodeName": v(16), "hints": {"forZones": [{"name": v(19)}]}},
        ],
    });
    // A Service that is fine, next to the hostile ones, keyed by one hostile string too.
    let ok = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ok", "namespace": "safe", "annotations": {"note": v(2)}},
        "spec": {"clusterIP": "10.96.200.1", "ports": [{"name": "http", "port": 80}]},
    });
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": v(18)}},
    });
    format!("{service}\n{slice}\n{ok}\n{node}\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_object_fields_never_reach_the_rules(values in prop::collection::vec(hostile(), 20)) {
        let text = hostile_objects(&values);
        let loaded = load_str(&text, Path::new("hostile.json"));
        let converted = cluster_state(&loaded.objects, EndpointsSource::Auto);
        for problem in loaded.problems.iter().chain(&converted.problems) {
            let line = problem.to_string();
            prop_assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\0'), "{:?}", line);
            prop_assert!(problem.object.is_some() || problem.source.is_some(), "{}", line);
        }
        let names: BTreeSet<String> = converted.state.services.keys().map(ToString::to_string).collect();
        prop_assert!(names.contains("safe/ok:http"), "{:?}", names);
        let node = NodeConfig {
            node_name: "node-1".into(),
            node_ips: vec!["192.0.2.10".parse().expect("ip")],
            ..NodeConfig::default()
        };
        let ruleset = render::render(&converted.state, &node);
        let rendered = ruleset.to_string();
        let parsed = parse::parse(&rendered).map_err(|e| TestCaseError::fail(format!("{e}\n{rendered}")))?;
        prop_assert_eq!(&parsed, &ruleset);
        prop_assert_eq!(rendered.lines().count(), expected_lines(&ruleset));
        // Everything that reached the rules is a validated value: names are DNS labels, ports
        // IANA names, addresses parsed IPs. So no value in the text needs quoting beyond the
        // comment's spaces, and no injected flag appears.
        for port in converted.state.services.values() {
            let n = &port.name;
            let plain = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            prop_assert!(plain(&n.namespace) && plain(&n.name) && plain(&n.port), "{:?}", n);
        }
        for line in rendered.lines() {
            prop_assert!(!line.contains("-j ACCEPT\"") && !line.contains("\\\""), "{}", line);
        }
    }
}
