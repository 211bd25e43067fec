//! `kubenat trace` as a user runs it, on manifests rendered with the daemon's flags: filter-table
//! verdicts (a healthCheckNodePort ACCEPT, a REJECT without endpoints, a loadBalancerSourceRanges
//! DROP) are printed with the chain and the text of the rule that decided them.

use std::process::Command;

/// `default/lb` (LoadBalancer 5.6.7.9, source range 203.0.113.0/25, eTP=Local with
/// healthCheckNodePort 32100, one endpoint on node-1) and `default/db` (no endpoints).
const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: lb, namespace: default }
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.70
  clusterIPs: [10.96.0.70]
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  loadBalancerSourceRanges: [203.0.113.0/25]
  ports: [{ name: http, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30090 }]
status:
  loadBalancer: { ingress: [{ ip: 5.6.7.9 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-slice
  namespace: default
  labels: { kubernetes.io/service-name: lb }
addressType: IPv4
endpoints:
  - addresses: [10.244.1.5]
    conditions: { ready: true }
    nodeName: node-1
ports: [{ name: http, port: 8080, protocol: TCP }]
---
apiVersion: v1
kind: Service
metadata: { name: db, namespace: default }
spec:
  clusterIP: 10.96.0.80
  clusterIPs: [10.96.0.80]
  ports: [{ port: 5432, targetPort: 5432, protocol: TCP }]
"#;

/// `kubenat trace --objects … ARGS`: exit code and stdout (stderr in the panic message).
fn trace(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, OBJECTS).expect("write objects");
    let out = Command::new(env!("CARGO_BIN_EXE_kubenat"))
        .args(["trace", "--objects"])
        .arg(&objects)
        .args(["--hostname-override=node-1", "--node-ip=192.168.1.10", "--cluster-cidr=10.244.0.0/16"])
        .args(args)
        .output()
        .expect("run kubenat trace");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubenat trace {args:?} failed ({}):\n{stdout}{stderr}", out.status);
    stdout.into_owned()
}

#[test]
fn health_check_node_port_is_reported_as_a_filter_accept() {
    let out = trace(&["--src", "203.0.113.200", "--dst", "192.168.1.10:32100"]);
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("ACCEPT (default/lb:http health check node port) in filter/KUBE-NODEPORTS p=1.000"),
        "{out}"
    );
    assert!(first.contains("via nat/PREROUTING > nat/KUBE-SERVICES"), "{out}");
    assert!(first.contains("> filter/INPUT > "), "{out}");
    assert!(
        first.ends_with(
            "; rule: -A KUBE-NODEPORTS -m comment --comment \"default/lb:http health check node port\" -m tcp -p tcp --dport 32100 -j ACCEPT"
        ),
        "{out}"
    );
    assert!(!out.contains("no service matched"), "{out}");
}

#[test]
fn reject_and_drop_name_their_rule() {
    let out = trace(&["--src", "10.244.1.20", "--dst", "10.96.0.80:5432"]);
    assert!(out.starts_with("REJECT (default/db has no endpoints) in filter/KUBE-SERVICES p=1.000 via "), "{out}");
    assert!(
        out.lines()
            .next()
            .unwrap_or_default()
            .contains("; rule: -A KUBE-SERVICES -m comment --comment \"default/db has no endpoints\""),
        "{out}"
    );

    let out = trace(&["--src", "203.0.113.200", "--dst", "5.6.7.9:80"]);
    assert!(out.starts_with("DROP (default/lb:http traffic not accepted by KUBE-FW-"), "{out}");
    assert!(out.lines().next().unwrap_or_default().contains("in filter/KUBE-PROXY-FIREWALL p=1.000"), "{out}");
    assert!(out.lines().next().unwrap_or_default().contains("; rule: -A KUBE-PROXY-FIREWALL "), "{out}");

    // Allowed sources are DNATed as before: no deciding rule is printed.
    let out = trace(&["--src", "203.0.113.5", "--dst", "5.6.7.9:80"]);
    assert!(out.starts_with("10.244.1.5:8080 p=1.000 masquerade="), "{out}");
    assert!(!out.contains("; rule:"), "{out}");
}
