//! The synthetic cluster of `synthetic.rs` as manifests, the way `scripts/gen-objects.py`
//! writes them: node-1, N ClusterIP Services and one EndpointSlice each with E ready endpoints,
//! as one JSON `v1` List or as a multi-document YAML stream (block style).
#![allow(dead_code)]

use std::fmt::Write as _;

fn endpoint_ip(k: u32) -> String {
    format!("10.{}.{}.{}", 128 + (k >> 16), (k >> 8) & 255, k & 255)
}

fn cluster_ip(s: u32) -> String {
    format!("172.30.{}.{}", (s >> 8) & 255, s & 255)
}

/// One JSON `List` holding the Node, the Services and the EndpointSlices.
pub fn json_list(services: u32, endpoints: u32) -> String {
    let mut items = vec![r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}}, "spec": {"podCIDR": "10.128.1.0/24", "podCIDRs": ["10.128.1.0/24"]}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]}}"#.to_string()];
    for s in 0..services {
        let ip = cluster_ip(s);
        items.push(format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "svc-{s}", "namespace": "ns{}"}}, "spec": {{"type": "ClusterIP", "clusterIP": "{ip}", "clusterIPs": ["{ip}"], "ipFamilies": ["IPv4"], "ports": [{{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}}], "sessionAffinity": "None"}}}}"#,
            s % 100
        ));
    }
    for s in 0..services {
        let mut eps = Vec::new();
        for i in 0..endpoints {
            let k = s * endpoints + i;
            eps.push(format!(
                r#"{{"addresses": ["{}"], "conditions": {{"ready": true, "serving": true, "terminating": false}}, "nodeName": "node-{}"}}"#,
                endpoint_ip(k),
                k % 50
            ));
        }
        items.push(format!(
            r#"{{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {{"name": "svc-{s}-1", "namespace": "ns{}", "labels": {{"kubernetes.io/service-name": "svc-{s}"}}}}, "addressType": "IPv4", "endpoints": [{}], "ports": [{{"name": "http", "port": 8080, "protocol": "TCP"}}]}}"#,
            s % 100,
            eps.join(", ")
        ));
    }
    format!(
        r#"{{"apiVersion": "v1", "kind": "List", "metadata": {{"resourceVersion": ""}}, "items": [{}]}}"#,
        items.join(", ")
    )
}

/// The same objects as a multi-document YAML stream.
pub fn yaml_stream(services: u32, endpoints: u32) -> String {
    let mut out = String::from(
        "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n  labels:\n    kubernetes.io/hostname: node-1\n\
         spec:\n  podCIDR: 10.128.1.0/24\n  podCIDRs:\n  - 10.128.1.0/24\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 192.168.0.1\n",
    );
    for s in 0..services {
        let ip = cluster_ip(s);
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: ns{}\nspec:\n  type: ClusterIP\n  \
             clusterIP: {ip}\n  clusterIPs:\n  - {ip}\n  ipFamilies:\n  - IPv4\n  ports:\n  - name: http\n    port: 80\n    \
             protocol: TCP\n    targetPort: 8080\n  sessionAffinity: None\n",
            s % 100
        );
    }
    for s in 0..services {
        let _ = write!(
            out,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{s}-1\n  namespace: ns{}\n  \
             labels:\n    kubernetes.io/service-name: svc-{s}\naddressType: IPv4\nendpoints:\n",
            s % 100
        );
        for i in 0..endpoints {
            let k = s * endpoints + i;
            let _ = write!(
                out,
                "- addresses:\n  - {}\n  conditions:\n    ready: true\n    serving: true\n    terminating: false\n  nodeName: node-{}\n",
                endpoint_ip(k),
                k % 50
            );
        }
        out.push_str("ports:\n- name: http\n  port: 8080\n  protocol: TCP\n");
    }
    out
}
