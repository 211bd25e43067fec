use super::*;
use crate::model::{Endpoint, IpFamily, Protocol, ServicePort, ServicePortName, TrafficPolicy};

fn ep(addr: &str, node: &str, ready: bool, terminating: bool) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        ready,
        serving: ready || terminating,
        terminating,
        node_name: Some(node.to_string()),
        zone_hints: vec![],
        node_hints: vec![],
    }
}

fn port(ns: &str, name: &str, port_name: &str, ips: &[&str], hc: Option<u16>, eps: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        name: ServicePortName {
            namespace: ns.into(),
            name: name.into(),
            port: port_name.into(),
            protocol: Protocol::Tcp,
        },
        cluster_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        port: 80,
        node_port: Some(30080),
        external_ips: vec![],
        load_balancer_ips: vec![],
        source_ranges: vec![],
        affinity_timeout: None,
        external_policy: if hc.is_some() { TrafficPolicy::Local } else { TrafficPolicy::Cluster },
        internal_policy: TrafficPolicy::Cluster,
        health_check_node_port: hc,
        endpoints: eps,
    }
}

fn state(ports: Vec<ServicePort>) -> ClusterState {
    ClusterState { services: ports.into_iter().map(|p| (p.name.clone(), p.into())).collect() }
}

fn node(family: IpFamily) -> NodeConfig {
    NodeConfig { family, node_name: "n1".into(), ..NodeConfig::default() }
}

fn nsn(ns: &str, name: &str) -> NamespacedName {
    NamespacedName { namespace: ns.into(), name: name.into() }
}

#[test]
fn counts_distinct_local_ready_ips_across_ports() {
    let eps = || {
        vec![
            ep("10.0.0.1:80", "n1", true, false),
            ep("10.0.0.2:80", "n1", true, false),
            ep("10.0.0.3:80", "n2", true, false),  // remote
            ep("10.0.0.4:80", "n1", false, true),  // local, serving-terminating: not counted
            ep("10.0.0.5:80", "n1", false, false), // local, not ready
        ]
    };
    let mut https = port("ns", "web", "https", &["10.96.0.1"], Some(32000), eps());
    https.endpoints[0].addr = "10.0.0.1:443".parse().unwrap(); // same pod, other port
    let s = state(vec![
        port("ns", "web", "http", &["10.96.0.1"], Some(32000), eps()),
        https,
        port("ns", "plain", "", &["10.96.0.2"], None, eps()),
    ]);
    let got = desired(&s, &node(IpFamily::V4));
    let want = BTreeMap::from([(nsn("ns", "web"), ServiceHealth { port: 32000, local_endpoints: 2 })]);
    assert_eq!(got, want);
}

#[test]
fn zero_local_endpoints_still_serves_the_port() {
    let s = state(vec![port("ns", "lb", "", &["10.96.0.1"], Some(32001), vec![ep("10.0.0.3:80", "n2", true, false)])]);
    let got = desired(&s, &node(IpFamily::V4));
    assert_eq!(got[&nsn("ns", "lb")], ServiceHealth { port: 32001, local_endpoints: 0 });
}

#[test]
fn only_the_node_family_counts() {
    let eps = vec![
        ep("10.0.0.1:80", "n1", true, false),
        ep("[fd00::1]:80", "n1", true, false),
        ep("[fd00::2]:80", "n1", true, false),
    ];
    let dual = port("ns", "dual", "", &["10.96.0.1", "fd00:96::1"], Some(32002), eps.clone());
    let v4_only = port("ns", "v4", "", &["10.96.0.2"], Some(32003), eps);
    let s = state(vec![dual, v4_only]);
    let v4 = desired(&s, &node(IpFamily::V4));
    assert_eq!(v4[&nsn("ns", "dual")].local_endpoints, 1);
    assert_eq!(v4[&nsn("ns", "v4")].local_endpoints, 1);
    let v6 = desired(&s, &node(IpFamily::V6));
    assert_eq!(v6.len(), 1, "a service without an IPv6 cluster IP is not in the IPv6 proxier's map");
    assert_eq!(v6[&nsn("ns", "dual")].local_endpoints, 2);
}

#[test]
fn body_is_kube_proxys_json() {
    let text = body(&nsn("ns", "svc"), 3, true);
    assert_eq!(
        text,
        "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"svc\"\n\t},\n\t\"localEndpoints\": 3,\n\t\"serviceProxyHealthy\": true\n}"
    );
    let v: serde_json::Value = serde_json::from_str(&body(&nsn("n\"s", "s"), 0, false)).unwrap();
    assert_eq!(v["service"]["namespace"], "n\"s");
    assert_eq!(v["localEndpoints"], 0);
    assert_eq!(v["serviceProxyHealthy"], false);
}
