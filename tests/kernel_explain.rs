//! Real kernel: `kubenat apply --netns` loads a service's rules into a namespace this test
//! creates; `kubenat explain --netns` reads them back (both backends), with the namespace's UDP
//! conntrack table and sysctls, and says `ok`; a deleted rule is `rules-drift`, a flow whose
//! reply comes from a wrong port is `stale-conntrack`, a flushed nat PREROUTING is
//! `jumps-missing`. Needs root, iptables-nft and conntrack-tools (skips otherwise, fails under
//! CI=true).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use testkit::netns::NetNs;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.53
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30053}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dns-1
  namespace: default
  labels: {kubernetes.io/service-name: dns}
addressType: IPv4
ports:
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [10.244.2.2]
  nodeName: node-2
"#;

fn available() -> bool {
    testkit::require_root() && testkit::require_program("iptables-nft") && testkit::require_program("conntrack")
}

/// Runs the built kubenat; (exit code, stdout, stderr).
fn kubenat(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubenat")).args(args).output().expect("run kubenat");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().expect("exit code"), text(&out.stdout), text(&out.stderr))
}

struct Node {
    ns: NetNs,
    objects: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let ns = NetNs::new("explain");
        // What the daemon (or the node's setup) would have set: forwarding and, for localhost
        // NodePorts (on by default), route_localnet.
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.ipv4.conf.all.route_localnet", "1");
        // An interface address, probed by explain as the node's: the NodePort is traced to it.
        // (A veth pair with both ends inside: no dummy module needed.)
        ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
        ns.ip(&["addr", "add", "192.168.50.1/24", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = dir.path().join("objects.yaml");
        std::fs::write(&objects, MANIFEST).expect("write objects");
        Node { ns, objects, _dir: dir }
    }

    fn flags(&self) -> Vec<String> {
        let objects = self.objects.display().to_string();
        ["--netns", self.ns.name(), "--objects", &objects, "--hostname-override=node-1", "--cluster-cidr=10.244.0.0/16"]
            .map(String::from)
            .to_vec()
    }

    fn apply(&self) {
        let mut args = vec!["apply".to_string(), "--iptables-backend".into(), "nft".into()];
        args.extend(self.flags());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = kubenat(&args);
        assert_eq!(code, 0, "apply: {stdout}{stderr}");
    }

    /// `explain ARGS… --netns … -o json`: (exit code, report).
    fn explain(&self, what: &[&str]) -> (i32, Value) {
        let mut args: Vec<String> = std::iter::once("explain").chain(what.iter().copied()).map(String::from).collect();
        args.extend(self.flags());
        args.extend(["-o", "json"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = kubenat(&args);
        let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
        (code, report)
    }
}

fn codes(report: &Value) -> Vec<String> {
    let problems = report["problems"].as_array().expect("problems");
    problems.iter().map(|p| p["code"].as_str().expect("code").to_string()).collect()
}

#[test]
fn explain_sees_the_namespace_rules_and_conntrack() {
    if !available() {
        return;
    }
    let node = Node::new();
    node.apply();
    // A flow answered by the endpoint is fine.
    testkit::conntrack::insert(&node.ns, "udp", "10.244.1.2:40000", "10.96.0.53:53", Some("10.244.2.2:5353"));
    let (code, report) = node.explain(&["service", "default/dns"]);
    assert_eq!((code, codes(&report)), (0, vec![]), "{report:#}");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["ports"][0]["endpoints"][0]["probability"], 1.0, "{report:#}");
    let paths = report["ports"][0]["paths"].as_array().expect("paths");
    let node_port = paths.iter().find(|p| p["kind"] == "node-port").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(node_port["destination"], "192.168.50.1:30053", "{report:#}");
    assert_eq!(node_port["outcomes"][0]["target"], "10.244.2.2:5353", "{report:#}");
    let (code, report) = node.explain(&["node"]);
    assert_eq!((code, &report["verdict"]), (0, &Value::from("ok")), "{report:#}");

    // Delete the endpoint's DNAT rule: its chain drifted.
    let save = node.ns.run_ok(&["iptables-nft-save", "-t", "nat"]);
    let line = save.lines().find(|l| l.contains("--to-destination 10.244.2.2:5353")).expect("DNAT rule");
    let chain = line.split_whitespace().nth(1).expect("chain").to_string();
    let mut delete = vec!["iptables-nft", "-t", "nat", "-D"];
    // The save output quotes the comment; it has no spaces, so the quotes just go.
    delete.extend(line.split_whitespace().skip(1).map(|word| word.trim_matches('"')));
    node.ns.run_ok(&delete);
    let (code, report) = node.explain(&["service", "default/dns"]);
    assert_eq!((code, codes(&report)), (1, vec!["rules-drift".to_string()]), "{report:#}");
    assert!(report["problems"][0]["message"].as_str().unwrap().contains(&format!("nat/{chain}")), "{report:#}");

    // Rules restored; a flow whose reply comes from a port the endpoint does not serve is stale.
    node.apply();
    testkit::conntrack::insert(&node.ns, "udp", "10.244.1.2:40001", "10.96.0.53:53", Some("10.244.2.2:5354"));
    let (code, report) = node.explain(&["service", "default/dns"]);
    assert_eq!((code, codes(&report)), (1, vec!["stale-conntrack".to_string()]), "{report:#}");
    assert!(report["problems"][0]["message"].as_str().unwrap().contains("10.244.2.2:5354"), "{report:#}");
    let (code, report) = node.explain(&["node"]);
    assert_eq!((code, &report["verdict"]), (1, &Value::from("degraded")), "{report:#}");
    assert_eq!(report["counts"]["stale-conntrack"], 1, "{report:#}");
}

#[test]
fn a_flushed_builtin_chain_is_jumps_missing() {
    if !available() {
        return;
    }
    let node = Node::new();
    node.apply();
    node.ns.run_ok(&["iptables-nft", "-t", "nat", "-F", "PREROUTING"]);
    let (code, report) = node.explain(&["node"]);
    assert_eq!((code, codes(&report)), (1, vec!["jumps-missing".to_string()]), "{report:#}");
    let message = report["problems"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("nat/PREROUTING has no jump to KUBE-SERVICES"), "{report:#}");
}

#[test]
fn forwarding_off_in_the_namespace_is_reported() {
    if !available() {
        return;
    }
    let node = Node::new();
    node.apply();
    node.ns.sysctl("net.ipv4.ip_forward", "0");
    let (code, report) = node.explain(&["node"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(codes(&report), ["node-forwarding-off"], "{report:#}");
    assert_eq!(report["verdict"], "broken");
}
