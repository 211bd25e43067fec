//! Service conversion: fields, ignored Services, precise problems, cross-Service conflicts.

use super::*;
use crate::model::{Leaving, NodeFacts};

#[test]
fn ignored_services_give_nothing_and_no_problems() {
    let yaml = [
        svc("headless", "  clusterIP: None\n  ports:\n  - port: 80\n"),
        svc("no-ip", "  ports:\n  - port: 80\n"),
        svc("ext", "  type: ExternalName\n  externalName: example.com\n  clusterIP: 10.96.0.30\n"),
        svc("mesh", WEB).replace(
            "  name: mesh\n",
            "  name: mesh\n  labels:\n    service.kubernetes.io/service-proxy-name: other\n",
        ),
        svc("hl", WEB).replace("  name: hl\n", "  name: hl\n  labels:\n    service.kubernetes.io/headless: \"\"\n"),
        slice("headless-1", "headless", "IPv4", "ports:\n- port: 80\nendpoints:\n- addresses: [10.0.0.1]\n"),
        slice("fqdn", "web", "FQDN", "endpoints:\n- addresses: [example.com]\n"),
    ]
    .concat();
    let c = convert(&yaml);
    assert_eq!(messages(&c), Vec::<String>::new());
    assert!(c.state.services.is_empty(), "{:?}", c.state.services.keys());
}

#[test]
fn node_port_load_balancer_and_policies() {
    let spec = "  type: LoadBalancer\n  clusterIP: 10.96.0.40\n  externalIPs: [192.0.2.1, 192.0.2.1, bogus]\n  \
                externalTrafficPolicy: OnlyLocal\n  internalTrafficPolicy: Local\n  healthCheckNodePort: 32000\n  \
                loadBalancerSourceRanges: [\" 203.0.113.7/24 \", 198.51.100.0/24, 10.0.0.0/33]\n  \
                sessionAffinity: ClientIP\n  ports:\n  - name: http\n    port: 80\n    nodePort: 30080\n";
    let status = "status:\n  loadBalancer:\n    ingress:\n    - ip: 198.18.0.1\n    - ip: 198.18.0.2\n      ipMode: Proxy\n    - hostname: lb.example.com\n    - ip: 198.18.0.3\n      ipMode: VIP\n";
    let c = convert(&format!("{}{status}", svc("lb", spec)));
    let lb = port(&c, "lb", "http");
    assert_eq!(lb.node_port, Some(30080));
    let show = |v: &[IpAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(show(&lb.external_ips), vec!["192.0.2.1"]);
    assert_eq!(show(&lb.load_balancer_ips), vec!["198.18.0.1", "198.18.0.3"]);
    let ranges: Vec<String> = lb.source_ranges.iter().map(ToString::to_string).collect();
    assert_eq!(ranges, vec!["203.0.113.0/24", "198.51.100.0/24"]);
    assert_eq!(lb.affinity_timeout, Some(10800));
    assert_eq!((lb.external_policy, lb.internal_policy), (TrafficPolicy::Local, TrafficPolicy::Local));
    assert_eq!(lb.health_check_node_port, Some(32000));
    assert_eq!(
        messages(&c),
        vec![
            "t.yaml#1: Service default/lb: externalIPs: invalid IP \"bogus\"",
            "t.yaml#1: Service default/lb: loadBalancerSourceRanges: invalid CIDR \"10.0.0.0/33\"",
        ]
    );
}

#[test]
fn node_ports_only_for_node_port_types_and_health_check_only_for_local_lb() {
    let cluster = "  clusterIP: 10.96.0.50\n  healthCheckNodePort: 32000\n  externalTrafficPolicy: Local\n  ports:\n  - port: 80\n    nodePort: 30050\n";
    let node_port = "  type: NodePort\n  clusterIP: 10.96.0.51\n  healthCheckNodePort: 32001\n  externalTrafficPolicy: Local\n  \
                     sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports:\n  - port: 80\n    nodePort: 30051\n";
    let c = convert(&format!("{}{}", svc("a", cluster), svc("b", node_port)));
    assert_eq!(messages(&c), Vec::<String>::new());
    let a = port(&c, "a", "");
    assert_eq!((a.node_port, a.health_check_node_port), (None, None));
    let b = port(&c, "b", "");
    assert_eq!((b.node_port, b.health_check_node_port, b.affinity_timeout), (Some(30051), None, Some(60)));
}

#[test]
fn bad_values_are_reported_precisely() {
    let spec = "  type: NodePort\n  clusterIP: 10.96.0.60\n  sessionAffinity: ClientIP\n  \
                sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  externalTrafficPolicy: Sometimes\n  ports:\n  \
                - {name: http, port: 80, nodePort: 70000}\n  - {name: dns, port: 53, protocol: ICMP}\n  - {port: 81}\n  \
                - {name: http, port: 82}\n  - {name: alt, port: 80}\n  - {name: \"-j ACCEPT\", port: 83}\n  - {name: big, port: 65536}\n  - {name: ok, port: 84, protocol: udp}\n";
    let c = convert(&svc("web", spec));
    assert_eq!(
        messages(&c),
        vec![
            "t.yaml#1: Service default/web: sessionAffinityConfig.clientIP.timeoutSeconds 0 out of range 1-86400, using 10800",
            "t.yaml#1: Service default/web: unknown externalTrafficPolicy \"Sometimes\", treated as Cluster",
            "t.yaml#1: Service default/web: port \"http\": nodePort 70000 out of range 1-65535",
            "t.yaml#1: Service default/web: port \"dns\": unknown protocol \"ICMP\"",
            "t.yaml#1: Service default/web: port #3: a name is required when a Service has more than one port",
            "t.yaml#1: Service default/web: port \"http\": duplicate port name",
            "t.yaml#1: Service default/web: port \"alt\": duplicate port 80/TCP",
            "t.yaml#1: Service default/web: port \"-j ACCEPT\": invalid name: must be lowercase letters, digits and '-'",
            "t.yaml#1: Service default/web: port \"big\": port 65536 out of range 1-65535",
        ]
    );
    let names: Vec<String> = c.state.services.keys().map(ToString::to_string).collect();
    assert_eq!(names, vec!["default/web:http", "default/web:ok"]);
    let http = port(&c, "web", "http");
    assert_eq!(
        (http.node_port, http.affinity_timeout, http.external_policy),
        (None, Some(10800), TrafficPolicy::Cluster)
    );
}

#[test]
fn invalid_cluster_ip_or_name_drops_the_service() {
    let c = convert(&format!(
        "{}{}{}",
        svc("bad-ip", "  clusterIP: 10.96.0.300\n  ports:\n  - port: 80\n"),
        svc("\"Bad_Name\"", WEB),
        svc("good", "  clusterIP: 010.096.000.070\n  ports:\n  - port: 80\n"),
    ));
    assert_eq!(
        messages(&c),
        vec![
            "t.yaml#1: Service default/bad-ip: invalid clusterIP \"10.96.0.300\", Service skipped",
            "t.yaml#2: Service default/Bad_Name: invalid name \"Bad_Name\": must be lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)",
        ]
    );
    assert_eq!(port(&c, "good", "").cluster_ips[0].to_string(), "10.96.0.70");
}

#[test]
fn cross_service_conflicts_keep_the_first_by_namespace_and_name() {
    let a = "  type: NodePort\n  clusterIP: 10.96.0.80\n  ports:\n  - {name: http, port: 80, nodePort: 30080}\n  - {name: dns, port: 53, protocol: UDP, nodePort: 30080}\n";
    let b = "  type: NodePort\n  clusterIP: 10.96.0.81\n  ports:\n  - {name: web, port: 80, nodePort: 30080}\n";
    let c_spec = "  clusterIP: 10.96.0.80\n  ports:\n  - {name: http, port: 80}\n  - {name: alt, port: 8080}\n";
    let c = convert(&format!("{}{}{}", svc("zz", b), svc("aa", a), svc("cc", c_spec)));
    assert_eq!(
        messages(&c),
        vec![
            "t.yaml#3: Service default/cc: port \"http\": 10.96.0.80:80/TCP is already used by Service default/aa; port skipped",
            "t.yaml#1: Service default/zz: port \"web\": nodePort 30080/TCP is already used by Service default/aa; nodePort ignored",
        ]
    );
    assert_eq!(port(&c, "aa", "http").node_port, Some(30080));
    assert_eq!(c.state.services[&key("default", "aa", "dns", Protocol::Udp)].node_port, Some(30080));
    assert_eq!(port(&c, "zz", "web").node_port, None);
    assert!(c.state.services.contains_key(&key("default", "cc", "alt", Protocol::Tcp)));
    assert!(!c.state.services.contains_key(&key("default", "cc", "http", Protocol::Tcp)));
}

#[test]
fn duplicate_objects_keep_the_first() {
    let c = convert(&format!("{}{}", svc("web", WEB), svc("web", "  clusterIP: 10.96.0.99\n  ports:\n  - port: 1\n")));
    assert_eq!(
        messages(&c),
        vec!["t.yaml#2: Service default/web: defined more than once; this copy is ignored (first read from t.yaml#1)"]
    );
    assert_eq!(port(&c, "web", "http").cluster_ips[0].to_string(), "10.96.0.10");
}

#[test]
fn node_facts_reads_zone_cidrs_and_addresses() {
    let yaml = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n  labels:\n    topology.kubernetes.io/zone: zone-a\n\
                spec:\n  podCIDR: 10.244.1.0/24\n  podCIDRs: [10.244.1.1/24, \"fd00:1::/64\", junk]\n\
                status:\n  addresses:\n  - {type: Hostname, address: node-1}\n  - {type: ExternalIP, address: 203.0.113.5}\n  \
                - {type: InternalIP, address: 192.168.1.10}\n  - {type: InternalIP, address: \"fd00::10\"}\n  - {type: InternalIP, address: bad}\n";
    let loaded = load_str(yaml, Path::new("n.yaml"));
    let facts = node_facts(&loaded.objects.nodes[0].object);
    assert_eq!(facts.zone.as_deref(), Some("zone-a"));
    let cidrs: Vec<String> = facts.pod_cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(cidrs, vec!["10.244.1.0/24", "fd00:1::/64"]);
    let ips: Vec<String> = facts.internal_ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, vec!["192.168.1.10", "fd00::10", "203.0.113.5"]);
    assert_eq!(node_facts(&Default::default()), NodeFacts::default());
}

#[test]
fn node_facts_see_deletion_and_the_autoscaler_taint() {
    let node = |extra: &str| {
        let yaml = format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n{extra}");
        node_facts(&load_str(&yaml, Path::new("n.yaml")).objects.nodes[0].object)
    };
    let plain = node("spec:\n  taints: [{key: other, effect: NoSchedule}]\n");
    assert!(plain.eligible() && plain.leaving.is_none());
    let deleting = node("  deletionTimestamp: \"2024-01-01T00:00:00Z\"\n  finalizers: [x]\n");
    assert_eq!(deleting.leaving, Some(Leaving::Deleting));
    assert!(!deleting.eligible());
    let tainted =
        node("spec:\n  taints: [{key: ToBeDeletedByClusterAutoscaler, value: \"1700000000\", effect: NoSchedule}]\n");
    assert_eq!(tainted.leaving, Some(Leaving::ToBeDeletedByClusterAutoscaler));
    let both = node("  deletionTimestamp: \"2024-01-01T00:00:00Z\"\nspec:\n  taints: [{key: ToBeDeletedByClusterAutoscaler, effect: NoSchedule}]\n");
    assert_eq!(both.leaving, Some(Leaving::Deleting), "deletion is reported first");
}

#[test]
fn builder_reports_without_source_for_live_objects() {
    let mut svc_obj = Service::default();
    svc_obj.metadata.name = Some("web".into());
    svc_obj.metadata.namespace = Some("shop".into());
    svc_obj.spec = Some(k8s_openapi::api::core::v1::ServiceSpec {
        cluster_ip: Some("10.96.0.1".into()),
        ports: Some(vec![k8s_openapi::api::core::v1::ServicePort { port: 0, ..Default::default() }]),
        ..Default::default()
    });
    let mut builder = StateBuilder::new();
    builder.add_service(&svc_obj, None);
    let c = builder.finish();
    assert_eq!(messages(&c), vec!["Service shop/web: port #1: port 0 out of range 1-65535"]);
}
