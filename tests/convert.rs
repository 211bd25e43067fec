//! Manifests on disk → `ClusterState`: realistic fixtures, one bad-input file per failure mode
//! (each checked for its exact message and for its valid neighbours), scale, and fuzzing.

use std::net::IpAddr;
use std::path::PathBuf;

use kubenat::k8s::convert::{cluster_state, EndpointsSource};
use kubenat::k8s::manifests::load_paths;
use kubenat::model::{ClusterState, Endpoint, Protocol, ServicePort, ServicePortName, TrafficPolicy};

#[path = "convert/fuzz.rs"]
mod fuzz;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads and converts `paths` (relative to the crate); returns every problem message, with
/// paths relative to the crate, and the state.
fn run(paths: &[&str], source: EndpointsSource) -> (Vec<String>, ClusterState) {
    let paths: Vec<PathBuf> = paths.iter().map(|p| root().join(p)).collect();
    let loaded = load_paths(&paths);
    let converted = cluster_state(&loaded.objects, source);
    let prefix = format!("{}/", root().display());
    let messages =
        loaded.problems.iter().chain(&converted.problems).map(|p| p.to_string().replace(&prefix, "")).collect();
    (messages, converted.state)
}

fn key(ns: &str, name: &str, port: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName { namespace: ns.into(), name: name.into(), port: port.into(), protocol }
}

fn get<'a>(state: &'a ClusterState, ns: &str, name: &str, port: &str, protocol: Protocol) -> &'a ServicePort {
    let k = key(ns, name, port, protocol);
    state.services.get(&k).unwrap_or_else(|| panic!("no {k}; have {:?}", state.services.keys()))
}

fn endpoint_keys(port: &ServicePort) -> Vec<String> {
    port.endpoints.iter().map(Endpoint::key).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

#[test]
fn kubectl_get_list_output() {
    let (problems, state) = run(&["fixtures/convert/kubectl-get-list.yaml"], EndpointsSource::Auto);
    assert_eq!(problems, Vec::<String>::new());
    let names: Vec<String> = state.services.keys().map(ToString::to_string).collect();
    assert_eq!(
        names,
        vec![
            "default/kubernetes:https",
            "kube-system/kube-dns:dns",
            "kube-system/kube-dns:dns-tcp",
            "kube-system/kube-dns:metrics",
            "shop/web:http"
        ]
    );
    let api = get(&state, "default", "kubernetes", "https", Protocol::Tcp);
    assert_eq!((api.cluster_ips.clone(), api.port), (vec![ip("10.96.0.1")], 443));
    assert_eq!(endpoint_keys(api), vec!["192.168.1.10:6443"]);
    let dns = get(&state, "kube-system", "kube-dns", "dns", Protocol::Udp);
    assert_eq!(endpoint_keys(dns), vec!["10.244.0.2:53", "10.244.0.3:53"]);
    assert_eq!(dns.endpoints[0].node_name.as_deref(), Some("cp-1"));
    let metrics = get(&state, "kube-system", "kube-dns", "metrics", Protocol::Tcp);
    assert_eq!(endpoint_keys(metrics), vec!["10.244.0.2:9153", "10.244.0.3:9153"]);

    let web = get(&state, "shop", "web", "http", Protocol::Tcp);
    assert_eq!((web.port, web.node_port, web.health_check_node_port), (80, Some(30080), Some(31888)));
    assert_eq!(web.external_policy, TrafficPolicy::Local);
    assert_eq!(web.internal_policy, TrafficPolicy::Cluster);
    assert_eq!(web.affinity_timeout, Some(10800));
    assert_eq!(web.load_balancer_ips, vec![ip("198.51.100.20")]);
    assert_eq!(web.source_ranges, vec!["203.0.113.0/24".parse().expect("cidr")]);
    assert_eq!(endpoint_keys(web), vec!["10.244.1.12:8080", "10.244.2.7:8080"]);
    let draining = &web.endpoints[0];
    assert_eq!((draining.ready, draining.serving, draining.terminating), (false, true, true));
    assert_eq!(draining.zone_hints, vec!["zone-a"]);
}

#[test]
fn multi_document_app_bundle() {
    let (problems, state) = run(&["fixtures/convert/shop-app.yaml"], EndpointsSource::Auto);
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(state.services.len(), 2, "{:?}", state.services.keys());
    for (name, port, node_port) in [("http", 80, 30444), ("grpc", 9090, 30445)] {
        let api = get(&state, "shop", "api", name, Protocol::Tcp);
        assert_eq!((api.port, api.node_port), (port, Some(node_port)));
        assert_eq!(api.external_ips, vec![ip("192.0.2.44")]);
        assert_eq!(api.internal_policy, TrafficPolicy::Local);
        let target = if name == "http" { 8080 } else { 9090 };
        let expected: Vec<String> =
            ["10.244.1.20", "10.244.2.9", "10.244.3.100"].iter().map(|a| format!("{a}:{target}")).collect();
        assert_eq!(endpoint_keys(api), expected);
        // api-a (merged first) has a terminating copy of 10.244.1.20; api-b's live copy wins.
        let migrated = &api.endpoints[0];
        assert_eq!((migrated.ready, migrated.terminating), (true, false));
        assert_eq!(
            (api.endpoints[1].ready, api.endpoints[1].serving, api.endpoints[1].terminating),
            (false, false, true)
        );
    }
}

#[test]
fn core_endpoints_in_a_json_list() {
    let (problems, state) = run(&["fixtures/convert/endpoints-list.json"], EndpointsSource::Auto);
    assert_eq!(problems, Vec::<String>::new());
    let redis = get(&state, "cache", "redis", "", Protocol::Tcp);
    assert_eq!(endpoint_keys(redis), vec!["10.244.1.30:6379", "10.244.2.31:6379", "10.244.3.32:6379"]);
    let ready: Vec<bool> = redis.endpoints.iter().map(|e| e.ready).collect();
    assert_eq!(ready, vec![true, true, false]);
    let (_, slices_only) = run(&["fixtures/convert/endpoints-list.json"], EndpointsSource::EndpointSlices);
    assert!(get(&slices_only, "cache", "redis", "", Protocol::Tcp).endpoints.is_empty());
}

#[test]
fn the_whole_convert_directory_loads_cleanly() {
    let (problems, state) = run(&["fixtures/convert"], EndpointsSource::Auto);
    assert_eq!(problems, Vec::<String>::new());
    // With slices present, Auto uses slices: redis (core/v1 Endpoints only) has none.
    assert!(get(&state, "cache", "redis", "", Protocol::Tcp).endpoints.is_empty());
    assert_eq!(state.services.len(), 8);
}

/// (file in fixtures/bad, exact problems, service ports of the file other than `ok`).
const BAD: &[(&str, &[&str], &[&str])] = &[
    ("01-invalid-cluster-ip.yaml", &["#1: Service bad-01/web: invalid clusterIP \"10.96.1.300\", Service skipped"], &[]),
    (
        "02-invalid-external-ip.yaml",
        &[
            "#1: Service bad-02/web: externalIPs: invalid IP \"192.0.2.999\"",
            "#1: Service bad-02/web: externalIPs: invalid IP \"192.0.2.11 \"",
        ],
        &["bad-02/web:http"],
    ),
    ("03-port-zero.yaml", &["#1: Service bad-03/web: port \"zero\": port 0 out of range 1-65535"], &["bad-03/web:http"]),
    ("04-port-65536.yaml", &["#1: Service bad-04/web: port \"high\": port 65536 out of range 1-65535"], &["bad-04/web:http"]),
    ("05-unknown-protocol.yaml", &["#1: Service bad-05/web: port \"ping\": unknown protocol \"ICMP\""], &["bad-05/web:http"]),
    (
        "06-duplicate-ports.yaml",
        &["#1: Service bad-06/web: port \"http\": duplicate port name", "#1: Service bad-06/web: port \"alt\": duplicate port 80/TCP"],
        &["bad-06/web:dns", "bad-06/web:http"],
    ),
    (
        "07-name-with-quote.yaml",
        &["#1: Service bad-07/\"web\\\" -j ACCEPT\": invalid name \"web\\\" -j ACCEPT\": must be lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)"],
        &[],
    ),
    (
        "08-name-with-newline.yaml",
        &["#1: Service bad-08/\"web\\n-A KUBE-SERVICES -j ACCEPT\": invalid name \"web\\n-A KUBE-SERVICES -j ACCEPT\": must be lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)"],
        &[],
    ),
    ("09-slice-without-service-name.yaml", &["#2: EndpointSlice bad-09/web-abcde: no kubernetes.io/service-name label"], &["bad-09/web:http"]),
    (
        "10-slice-wrong-family.yaml",
        &["#2: EndpointSlice bad-10/web-v4: endpoint address fd00:10:244::7 is IPv6 but the slice's addressType is IPv4, skipped"],
        &["bad-10/web:http"],
    ),
    (
        "11-truncated.yaml",
        &["#2: invalid YAML: did not find expected ',' or '}' at line 19 column 1, while parsing a flow mapping at line 18 column 5"],
        &[],
    ),
    ("12-not-kubernetes.yaml", &[], &[]),
    ("13-deployment.yaml", &[], &[]),
    (
        "14-huge-name.yaml",
        &["#1: Service bad-14/\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…\" (300 chars): invalid name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…\" (300 chars): must be at most 63 characters (a DNS-1123 label)"],
        &[],
    ),
    (
        "15-injection-in-port-name.yaml",
        &["#1: Service bad-15/web: port \"http -j ACCEPT\": invalid name: must be lowercase letters, digits and '-'"],
        &["bad-15/web:metrics"],
    ),
    (
        "16-injection-in-name.yaml",
        &[
            "#1: Service \"bad-16 -j DROP\"/\"web -j ACCEPT\": invalid namespace \"bad-16 -j DROP\": must be lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)",
            "#2: Service bad-16/\"web -j ACCEPT\": invalid name \"web -j ACCEPT\": must be lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)",
        ],
        &[],
    ),
    (
        "17-conflicting-node-ports.yaml",
        &["#1: Service bad-17/z-second: port \"http\": nodePort 30080/TCP is already used by Service bad-17/a-first; nodePort ignored"],
        &["bad-17/a-first:http", "bad-17/z-second:dns", "bad-17/z-second:http"],
    ),
    ("18-wrong-shape.yaml", &["#1: Service bad-18/web: invalid type: string \"80\", expected a sequence"], &[]),
    (
        "19-load-balancer-values.yaml",
        &[
            "#1: Service bad-19/web: loadBalancerSourceRanges: invalid CIDR \"10.0.0.0/40\"",
            "#1: Service bad-19/web: loadBalancerSourceRanges: invalid CIDR \"any\"",
            "#1: Service bad-19/web: port \"http\": nodePort 70000 out of range 1-65535",
        ],
        &["bad-19/web:http"],
    ),
    (
        "20-slice-bad-endpoint.yaml",
        &[
            "#2: EndpointSlice bad-20/web-1: endpoint address \"10.244.20.7 -j ACCEPT\" is not a valid IP, skipped",
            "#2: EndpointSlice bad-20/web-1: endpoint nodeName \"node-1 -j ACCEPT\": must be lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit (a DNS-1123 subdomain); treated as not on this node",
        ],
        &["bad-20/web:http"],
    ),
    (
        "21-truncated.json",
        &["#3: invalid JSON: control character (\\u0000-\\u001F) found while parsing a string at line 8 column 0"],
        &[],
    ),
];

#[test]
fn every_bad_file_reports_exactly_and_keeps_its_neighbours() {
    for (file, expected, others) in BAD {
        let path = format!("fixtures/bad/{file}");
        let (problems, state) = run(&[&path], EndpointsSource::Auto);
        let expected: Vec<String> = expected.iter().map(|m| format!("{path}{m}")).collect();
        assert_eq!(problems, expected, "{file}");
        let ns = format!("bad-{}", &file[..2]);
        let ok = get(&state, &ns, "ok", "http", Protocol::Tcp);
        let octet: u8 = file[..2].parse().expect("numbered fixture");
        assert_eq!(endpoint_keys(ok), vec![format!("10.244.{octet}.5:8080")], "{file}");
        let mut names: Vec<String> = state.services.keys().map(ToString::to_string).collect();
        names.retain(|n| *n != format!("{ns}/ok:http"));
        assert_eq!(names, *others, "{file}");
    }
}

#[test]
fn bad_files_loaded_together_still_convert_every_valid_object() {
    let (problems, state) = run(&["fixtures/bad"], EndpointsSource::Auto);
    // BAD covers the first files of the corpus; tests/bad_input.rs holds the expected report
    // of every file. Problems of the files listed here must be exactly theirs.
    let listed = |p: &String| BAD.iter().any(|(file, ..)| p.starts_with(&format!("fixtures/bad/{file}")));
    let problems: Vec<String> = problems.into_iter().filter(listed).collect();
    let expected: usize = BAD.iter().map(|(_, messages, _)| messages.len()).sum();
    assert_eq!(problems.len(), expected, "{problems:#?}");
    for (file, _, others) in BAD {
        let ns = format!("bad-{}", &file[..2]);
        assert!(!get(&state, &ns, "ok", "http", Protocol::Tcp).endpoints.is_empty(), "{file}");
        for other in *others {
            assert!(state.services.keys().any(|k| k.to_string() == *other), "{other}");
        }
    }
}
