//! Scale and fuzzing: a 10,000-endpoint slice, arbitrary text and generated objects.

use std::path::Path;
use std::time::{Duration, Instant};

use kubenat::k8s::manifests::load_str;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn big_slice_json(count: usize) -> String {
    let endpoints: Vec<Value> = (0..count)
        .map(|i| json!({"addresses": [format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)], "nodeName": format!("node-{}", i % 50)}))
        .collect();
    let docs = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big"},
               "spec": {"clusterIP": "10.96.0.99", "ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "big-1", "labels": {"kubernetes.io/service-name": "big"}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}),
    ];
    docs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
}

#[test]
fn ten_thousand_endpoint_slice_through_the_loader() {
    let text = big_slice_json(10_000);
    let started = Instant::now();
    let loaded = load_str(&text, Path::new("big.json"));
    let converted = cluster_state(&loaded.objects, EndpointsSource::Auto);
    let elapsed = started.elapsed();
    assert!(loaded.problems.is_empty() && converted.problems.is_empty());
    let big = get(&converted.state, "default", "big", "http", Protocol::Tcp);
    assert_eq!(big.endpoints.len(), 10_000);
    assert!(big.endpoints.windows(2).all(|w| w[0].key() < w[1].key()), "sorted by IP:port string, no duplicates");
    assert_eq!(big.endpoints[0].key(), "10.0.0.0:8080");
    // String order: '0' sorts before ':', so 10.0.0.100 comes before 10.0.0.1.
    assert_eq!(big.endpoints[1].key(), "10.0.0.100:8080");
    assert_eq!(big.endpoints[2].key(), "10.0.0.101:8080");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(options).prop_map(str::to_string)
}

const NAMES: &[&str] = &["web", "a", "web\"x", "web\n-j ACCEPT", "", "-web", "Web", "x.y", "dns-tcp", "a--b", "0"];
const IPS: &[&str] =
    &["10.96.0.1", "10.96.0.1", "fd00::1", "None", "", "10.96.0.300", "::ffff:10.0.0.1", "010.1.1.1", "x"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP", "tcp", "ICMP", ""];
const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "Weird", ""];

fn service_doc() -> impl Strategy<Value = Value> {
    let port = (pick(NAMES), -2i64..70_000, pick(PROTOCOLS), prop_oneof![Just(0i64), 30_000i64..30_005, -1i64..70_000]);
    (pick(NAMES), pick(TYPES), prop::collection::vec(pick(IPS), 0..3), prop::collection::vec(port, 0..4), any::<Option<i64>>())
        .prop_map(|(name, kind, ips, ports, timeout)| {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(n, p, proto, np)| json!({"name": n, "port": p, "protocol": proto, "nodePort": np}))
                .collect();
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "fuzz"},
                   "spec": {"type": kind, "clusterIPs": ips, "ports": ports, "externalIPs": ["1.2.3.4", "nope"],
                            "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                            "loadBalancerSourceRanges": [" 10.0.0.0/8", "bad"]}})
        })
}

fn slice_doc() -> impl Strategy<Value = Value> {
    let endpoint = (pick(IPS), any::<Option<bool>>(), any::<Option<bool>>(), pick(NAMES));
    let port = (pick(NAMES), prop::option::of(-2i64..70_000), pick(PROTOCOLS));
    (pick(NAMES), pick(NAMES), pick(&["IPv4", "IPv6", "FQDN", "x"]), prop::collection::vec(port, 0..3), prop::collection::vec(endpoint, 0..6))
        .prop_map(|(name, service, family, ports, endpoints)| {
            let ports: Vec<Value> = ports.into_iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect();
            let endpoints: Vec<Value> = endpoints
                .into_iter()
                .map(|(a, ready, term, node)| json!({"addresses": [a], "conditions": {"ready": ready, "terminating": term}, "nodeName": node}))
                .collect();
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": name, "namespace": "fuzz", "labels": {"kubernetes.io/service-name": service}},
                   "addressType": family, "ports": ports, "endpoints": endpoints})
        })
}

/// What must hold for any input: only valid names and ports reach the state, endpoints are
/// unique and sorted by their `IP:port` string.
fn assert_state_is_safe(state: &ClusterState) {
    let label = |s: &str| {
        !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    for (name, port) in &state.services {
        assert!(label(&name.namespace) && label(&name.name), "{name:?}");
        assert!(name.port.is_empty() || (label(&name.port) && name.port.len() <= 15), "{name:?}");
        assert!(port.port != 0 && port.node_port != Some(0), "{port:?}");
        assert!(port.endpoints.windows(2).all(|w| w[0].key() < w[1].key()), "{port:?}");
        assert!(port.endpoints.iter().all(|e| e.addr.port() != 0), "{port:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let loaded = load_str(&text, Path::new("fuzz.yaml"));
        assert_state_is_safe(&cluster_state(&loaded.objects, EndpointsSource::Auto).state);
    }

    #[test]
    fn yaml_like_text_never_panics(text in "(apiVersion: v1\n|kind: (Service|List|EndpointSlice)\n|---\n|items:\n|- |  |metadata: \\{name: [a-z\"]{0,3}\\}\n|spec: |ports: |\\[|\\]|\\{|\\}|[0-9]{1,6}|: |\n|&a |\\*a |<<: |!!str ){0,40}") {
        let loaded = load_str(&text, Path::new("fuzz.yaml"));
        assert_state_is_safe(&cluster_state(&loaded.objects, EndpointsSource::Auto).state);
    }

    #[test]
    fn generated_objects_convert_safely(services in prop::collection::vec(service_doc(), 0..4), slices in prop::collection::vec(slice_doc(), 0..4)) {
        let text = services.iter().chain(&slices).map(Value::to_string).collect::<Vec<_>>().join("\n---\n");
        let loaded = load_str(&text, Path::new("fuzz.yaml"));
        let converted = cluster_state(&loaded.objects, EndpointsSource::EndpointSlices);
        assert_state_is_safe(&converted.state);
        for problem in loaded.problems.iter().chain(&converted.problems) {
            let message = problem.to_string();
            prop_assert!(!message.contains('\n'), "problems are one line: {message:?}");
        }
    }
}
