//! EndpointSlice and Endpoints conversion: matching, merging, ordering, problems, scale.

use std::path::Path;

use super::*;

#[test]
fn cluster_ip_service_with_sorted_deduplicated_endpoints() {
    let body = "ports:\n- name: http\n  port: 8080\n- name: other\n  port: 9\n- name: http\n  port: 8080\n  protocol: UDP\n\
                endpoints:\n- addresses: [10.0.0.2]\n  nodeName: node-a\n- addresses: [10.0.0.10, 10.9.9.9]\n  conditions: {ready: false, serving: true, terminating: true}\n";
    let dup = "ports:\n- name: http\n  port: 8080\nendpoints:\n- addresses: [10.0.0.10]\n  hints: {forZones: [{name: zone-a}]}\n- addresses: [10.0.0.2]\n  conditions: {terminating: true}\n";
    let c = convert(&format!(
        "{}{}{}",
        svc("web", WEB),
        slice("web-b", "web", "IPv4", body),
        slice("web-a", "web", "IPv4", dup)
    ));
    assert_eq!(messages(&c), Vec::<String>::new());
    let web = port(&c, "web", "http");
    assert_eq!(web.cluster_ips, vec!["10.96.0.10".parse::<IpAddr>().expect("ip")]);
    assert_eq!(web.port, 80);
    assert_eq!(keys(&web.endpoints), vec!["10.0.0.10:8080", "10.0.0.2:8080"]);
    // web-a is merged first: its non-terminating 10.0.0.10 stays; its terminating 10.0.0.2
    // is replaced by web-b's non-terminating copy.
    let ten = &web.endpoints[0];
    assert!(ten.ready && ten.serving && !ten.terminating);
    assert_eq!(ten.zone_hints, vec!["zone-a"]);
    let two = &web.endpoints[1];
    assert_eq!((two.ready, two.serving, two.terminating), (true, true, false));
    assert_eq!(two.node_name.as_deref(), Some("node-a"));
    assert_eq!(c.state.services.len(), 1, "unmatched slice ports are ignored");
}

#[test]
fn terminating_endpoints_keep_their_conditions() {
    let body = "ports:\n- name: http\n  port: 8080\nendpoints:\n- addresses: [10.0.0.10, 10.9.9.9]\n  conditions: {ready: false, serving: true, terminating: true}\n";
    let c = convert(&format!("{}{}", svc("web", WEB), slice("web-1", "web", "IPv4", body)));
    let ep = &port(&c, "web", "http").endpoints;
    assert_eq!(keys(ep), vec!["10.0.0.10:8080"], "addresses[0] only");
    assert_eq!((ep[0].ready, ep[0].serving, ep[0].terminating), (false, true, true));
}

#[test]
fn dual_stack_service_with_ipv6_slice() {
    let spec = "  clusterIP: 10.96.0.20\n  clusterIPs: [10.96.0.20, fd00::20, 10.96.0.21]\n  ports:\n  - port: 53\n    protocol: UDP\n";
    let v6 = "ports:\n- port: 5353\n  protocol: UDP\nendpoints:\n- addresses: [\"fd00::5\"]\n- addresses: [\"fd00::10\"]\n- addresses: [10.0.0.1]\n- {addresses: []}\n";
    let c = convert(&format!("{}{}", svc("dns", spec), slice("dns-v6", "dns", "IPv6", v6)));
    let dns = &c.state.services[&key("default", "dns", "", Protocol::Udp)];
    let ips: Vec<String> = dns.cluster_ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, vec!["10.96.0.20", "fd00::20"]);
    assert_eq!(keys(&dns.endpoints), vec!["[fd00::10]:5353", "[fd00::5]:5353"]);
    assert_eq!(
        messages(&c),
        vec![
            "t.yaml#1: Service default/dns: clusterIP 10.96.0.21 ignored: the Service already has an IPv4 clusterIP",
            "t.yaml#2: EndpointSlice default/dns-v6: endpoint address 10.0.0.1 is IPv4 but the slice's addressType is IPv6, skipped",
            "t.yaml#2: EndpointSlice default/dns-v6: endpoint without addresses skipped",
        ]
    );
}

const CORE_ENDPOINTS: &str = "---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web\nsubsets:\n- addresses:\n  - {ip: 10.0.1.2, nodeName: node-b}\n  \
                              notReadyAddresses:\n  - ip: 10.0.1.1\n  - ip: nope\n  ports:\n  - {name: http, port: 8080}\n  - {name: http, port: 0}\n";

#[test]
fn core_endpoints_when_there_are_no_slices() {
    let c = convert(&format!("{}{CORE_ENDPOINTS}", svc("web", WEB)));
    assert_eq!(
        messages(&c),
        vec![
            "t.yaml#2: Endpoints default/web: endpoint address \"nope\" is not a valid IP, skipped",
            "t.yaml#2: Endpoints default/web: port \"http\": port 0 out of range 1-65535",
        ]
    );
    let ep = &port(&c, "web", "http").endpoints;
    assert_eq!(keys(ep), vec!["10.0.1.1:8080", "10.0.1.2:8080"]);
    assert_eq!((ep[0].ready, ep[0].serving, ep[0].terminating), (false, false, false));
    assert_eq!((ep[1].ready, ep[1].node_name.as_deref()), (true, Some("node-b")));
}

#[test]
fn endpoints_source_selects_the_api() {
    let one_slice =
        slice("web-1", "web", "IPv4", "ports:\n- {name: http, port: 9090}\nendpoints:\n- addresses: [10.0.2.1]\n");
    let yaml = format!("{}{CORE_ENDPOINTS}{one_slice}", svc("web", WEB));
    let auto = convert(&yaml);
    assert_eq!(keys(&port(&auto, "web", "http").endpoints), vec!["10.0.2.1:9090"]);
    let core = convert_with(&yaml, EndpointsSource::Endpoints);
    assert_eq!(keys(&port(&core, "web", "http").endpoints), vec!["10.0.1.1:8080", "10.0.1.2:8080"]);
    let slices = convert_with(&format!("{}{CORE_ENDPOINTS}", svc("web", WEB)), EndpointsSource::EndpointSlices);
    assert!(port(&slices, "web", "http").endpoints.is_empty());
}

#[test]
fn slice_problems() {
    let no_label = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: loose\naddressType: IPv4\nendpoints: []\n";
    let body = "ports:\n- {name: http, port: 8080, protocol: ICMP}\n- {name: http}\n- {name: http, port: 8080}\n- {name: http, port: 8081}\n\
                endpoints:\n- addresses: [10.0.0.300]\n- {addresses: [10.0.0.1], nodeName: \"Node A\"}\n";
    let c = convert(&format!("{}{no_label}{}", svc("web", WEB), slice("web-1", "web", "IPv4", body)));
    assert_eq!(
        messages(&c),
        vec![
            "t.yaml#2: EndpointSlice default/loose: no kubernetes.io/service-name label",
            "t.yaml#3: EndpointSlice default/web-1: port \"http\": unknown protocol \"ICMP\"",
            "t.yaml#3: EndpointSlice default/web-1: port \"http\": duplicate port TCP",
            "t.yaml#3: EndpointSlice default/web-1: endpoint address \"10.0.0.300\" is not a valid IP, skipped",
            "t.yaml#3: EndpointSlice default/web-1: endpoint nodeName \"Node A\": must be lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit (a DNS-1123 subdomain); treated as not on this node",
        ]
    );
    let ep = &port(&c, "web", "http").endpoints;
    assert_eq!(keys(ep), vec!["10.0.0.1:8080"]);
    assert_eq!(ep[0].node_name, None);
}

#[test]
fn many_bad_endpoints_are_summarised() {
    let mut body = String::from("ports:\n- {name: http, port: 80}\nendpoints:\n");
    for i in 0..100 {
        body.push_str(&format!("- addresses: [bad-{i}]\n"));
    }
    let c = convert(&format!("{}{}", svc("web", WEB), slice("web-1", "web", "IPv4", &body)));
    assert_eq!(c.problems.len(), 21);
    assert_eq!(c.problems[20].to_string(), "t.yaml#2: EndpointSlice default/web-1: 80 more problems not shown");
}

#[test]
fn ten_thousand_endpoints_in_memory_are_fast_and_sorted() {
    use k8s_openapi::api::discovery::v1 as discovery;
    let endpoints: Vec<discovery::Endpoint> = (0..10_000u32)
        .map(|i| discovery::Endpoint {
            addresses: vec![format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff)],
            node_name: Some(format!("node-{}", i % 100)),
            ..Default::default()
        })
        .collect();
    let mut slices: Vec<EndpointSlice> = Vec::new();
    for (index, chunk) in endpoints.chunks(2_500).enumerate() {
        let mut slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: chunk.to_vec(),
            ports: Some(vec![discovery::EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..Default::default()
            }]),
            ..Default::default()
        };
        slice.metadata.name = Some(format!("big-{index}"));
        slice.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), "big".to_string())].into());
        slices.push(slice);
    }
    // One slice repeats all 10,000 endpoints as terminating copies: they must not win.
    let mut copy = slices[0].clone();
    copy.metadata.name = Some("a-copy".into()); // merged first
    copy.endpoints = endpoints
        .iter()
        .cloned()
        .map(|mut e| {
            e.conditions = Some(discovery::EndpointConditions { terminating: Some(true), ..Default::default() });
            e
        })
        .collect();
    let loaded =
        load_str(&svc("big", "  clusterIP: 10.96.0.9\n  ports:\n  - {name: http, port: 80}\n"), Path::new("t.yaml"));
    let started = std::time::Instant::now();
    let mut builder = StateBuilder::new();
    builder.add_service(&loaded.objects.services[0].object, None);
    builder.add_endpoint_slice(&copy, None);
    for slice in &slices {
        builder.add_endpoint_slice(slice, None);
    }
    let c = builder.finish();
    let elapsed = started.elapsed();
    assert_eq!(messages(&c), Vec::<String>::new());
    let big = port(&c, "big", "http");
    assert_eq!(big.endpoints.len(), 10_000);
    assert!(big.endpoints.windows(2).all(|w| w[0].key() < w[1].key()));
    assert!(big.endpoints.iter().all(|e| !e.terminating));
    assert!(elapsed < std::time::Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn node_hints_are_read_and_bad_ones_reported() {
    let body = "ports:\n- name: http\n  port: 8080\nendpoints:\n- addresses: [10.0.0.2]\n  nodeName: node-a\n  \
                hints: {forNodes: [{name: node-a}, {name: Bad_Name}], forZones: [{name: zone-a}]}\n";
    let c = convert(&format!("{}{}", svc("web", WEB), slice("web-1", "web", "IPv4", body)));
    let ep = &port(&c, "web", "http").endpoints[0];
    assert_eq!(ep.node_hints, vec!["node-a"]);
    assert_eq!(ep.zone_hints, vec!["zone-a"]);
    assert_eq!(messages(&c).len(), 1, "the invalid node hint is reported: {:?}", messages(&c));
}
