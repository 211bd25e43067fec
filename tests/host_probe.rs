//! Host probing on a real kernel: the daemon, run in a node namespace of its own against
//! `--objects` manifests, finds a secondary interface address through netlink for
//! `--nodeport-addresses`, serves NodePort and healthCheckNodePort traffic on it only, creates
//! the nfacct counters in its namespace, and follows `nf_conntrack_tcp_be_liberal`.
//!
//! Namespaces: `node` (the daemon; `192.168.77.1` towards the client, `10.77.0.5` as a second
//! address on the same veth, `172.30.1.1` towards the pod), `client` (`192.168.77.2`) and `pod`
//! (`172.30.1.2`, the endpoint). Only `10.77.0.5` is inside `10.0.0.0/8`.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubenat::apply::exec::{Backend, Tool};
use kubenat::host::{Counter, NetlinkNfacct, Nfacct, NFACCT_COUNTERS};
use kubenat::model::IpFamily;
use serde_json::{json, Value};
use testkit::daemon::{http_get, poll, Daemon, DaemonOptions};
use testkit::netns::NetNs;
use testkit::traffic::{self, Proto, Server};

const SECONDARY: &str = "10.77.0.5";
const NODE_IP: &str = "192.168.77.1";
const POD_IP: &str = "172.30.1.2";
const NODE_PORT: u16 = 30080;
const HEALTH_PORT: u16 = 30999;
const TIMEOUT: Duration = Duration::from_secs(20);

/// The backend whose tools are installed (nft first), or `None` (skipped, or failed in CI).
fn backend() -> Option<Backend> {
    if !testkit::require_root() {
        return None;
    }
    let has =
        |b: Backend| [Tool::Restore, Tool::Save].iter().all(|t| testkit::require_program(&b.binary(IpFamily::V4, *t)));
    [Backend::Nft, Backend::Legacy].into_iter().find(|b| has(*b))
}

/// The three namespaces, wired; dropped (removed) in any case.
struct Net {
    node: NetNs,
    client: NetNs,
    pod: NetNs,
}

impl Net {
    fn new() -> Net {
        let net = Net { node: NetNs::new("hpnode"), client: NetNs::new("hpcli"), pod: NetNs::new("hppod") };
        let node = &net.node;
        node.sysctl("net.ipv4.ip_forward", "1");
        for (ns, node_if, node_addr, addr) in [
            (&net.client, "cli", "192.168.77.1/24", "192.168.77.2/24"),
            (&net.pod, "pod", "172.30.1.1/24", "172.30.1.2/24"),
        ] {
            node.ip(&["link", "add", node_if, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]);
            node.ip(&["addr", "add", node_addr, "dev", node_if]);
            node.ip(&["link", "set", node_if, "up"]);
            ns.ip(&["addr", "add", addr, "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
            let gateway = node_addr.split('/').next().unwrap_or_default();
            ns.ip(&["route", "add", "default", "via", gateway]);
        }
        // The secondary address: a second address on the client-facing veth (this kernel
        // need not have the dummy driver).
        node.ip(&["addr", "add", &format!("{SECONDARY}/24"), "dev", "cli"]);
        net
    }
}

/// Node `node-1`, a NodePort Service and a LoadBalancer Service with
/// `externalTrafficPolicy: Local` (so a healthCheckNodePort), both served by the pod.
fn objects() -> Value {
    let service = |name: &str, spec: Value| {
        let mut spec = spec;
        spec["ports"] = json!([{ "name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": if name == "web" { NODE_PORT } else { 30081 } }]);
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": name, "namespace": "default" }, "spec": spec })
    };
    let slice = |name: &str| {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": { "name": format!("{name}-abcde"), "namespace": "default",
                          "labels": { "kubernetes.io/service-name": name } },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": [POD_IP], "nodeName": "node-1",
                            "conditions": { "ready": true, "serving": true, "terminating": false } }],
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        })
    };
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            { "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-1" },
              "status": { "addresses": [{ "type": "InternalIP", "address": NODE_IP }] } },
            service("web", json!({ "type": "NodePort", "clusterIP": "10.96.0.10" })),
            service("lb", json!({ "type": "LoadBalancer", "clusterIP": "10.96.0.11",
                                   "externalTrafficPolicy": "Local", "healthCheckNodePort": HEALTH_PORT })),
            slice("web"),
            slice("lb"),
        ],
    })
}

/// The daemon in `net.node` with `extra` flags, after its first full sync.
fn start(node: &NetNs, backend: Backend, dir: &Path, extra: &[&str]) -> Daemon {
    let path = dir.join("objects.json");
    std::fs::write(&path, objects().to_string()).expect("write objects");
    let mut opts = DaemonOptions::new(backend.as_str());
    opts.extra_args = ["--objects", &path.to_string_lossy()].iter().chain(extra).map(|s| s.to_string()).collect();
    // --objects: the kubeconfig is never read.
    let mut daemon = Daemon::start(node, &PathBuf::from("/nonexistent"), &dir.join("daemon.log"), &opts);
    daemon.wait_full_syncs(1.0, TIMEOUT);
    daemon
}

fn save(node: &NetNs, backend: Backend, table: &str) -> String {
    node.run_ok(&[&backend.binary(IpFamily::V4, Tool::Save), "-t", table])
}

/// Runs `f` on a thread inside `ns` (only that thread changes namespace).
fn in_netns<T: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

const TAIL: &str =
    "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";

#[test]
fn nodeport_addresses_find_a_secondary_address_through_netlink() {
    let Some(backend) = backend() else { return };
    let net = Net::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let _server = Server::start(&net.pod, Proto::Tcp, 8080, "pod-0");
    let daemon = start(&net.node, backend, dir.path(), &["--nodeport-addresses", "10.0.0.0/8"]);
    let log = || daemon.log();

    // One KUBE-NODEPORTS jump, for the one address in 10.0.0.0/8 (it is on no flag: probed).
    let nat = save(&net.node, backend, "nat");
    let tails: Vec<&str> =
        nat.lines().filter(|l| l.ends_with("-j KUBE-NODEPORTS") && l.starts_with("-A KUBE-SERVICES")).collect();
    // (iptables-save writes the address before the comment.)
    assert_eq!(tails, [format!("-A KUBE-SERVICES -d {SECONDARY}/32 {TAIL} -j KUBE-NODEPORTS")], "{nat}\n{}", log());
    // iptables is ≥ 1.6.2 here: the version probe turned --random-fully on.
    assert!(nat.contains("-j MASQUERADE --random-fully"), "{nat}");

    // Real TCP from the client: the NodePort answers on the secondary address only.
    let on = |ip: &str, port| SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port);
    let reply = poll(TIMEOUT, Duration::from_millis(200), || {
        let r = traffic::request(&net.client, Proto::Tcp, on(SECONDARY, NODE_PORT), Duration::from_secs(2));
        r.server().is_some().then_some(r)
    });
    assert_eq!(reply.as_ref().and_then(|r| r.server()), Some("pod-0"), "{}", log());
    let refused = traffic::request(&net.client, Proto::Tcp, on(NODE_IP, NODE_PORT), Duration::from_secs(2));
    assert_eq!(refused.server(), None, "the node IP is outside 10.0.0.0/8: {refused}");

    // 10.0.0.0/8 excludes loopback: localhost NodePorts off, so no localnet guard rule, but
    // the KUBE-FIREWALL jumps are there as kube-proxy ensures them.
    let filter = save(&net.node, backend, "filter");
    assert!(!filter.contains("block incoming localnet connections"), "{filter}");
    assert!(filter.contains(":KUBE-FIREWALL") && filter.contains("-A INPUT -j KUBE-FIREWALL"), "{filter}");
    assert!(filter.contains("-A OUTPUT -j KUBE-FIREWALL"), "{filter}");

    // nfacct: both counters exist in the node's namespace, and the INVALID drop counts into one.
    let counters: Vec<Option<Counter>> = in_netns(&net.node, || {
        NFACCT_COUNTERS.iter().map(|name| NetlinkNfacct.get(name).expect("nfacct get")).collect()
    });
    for (name, counter) in NFACCT_COUNTERS.iter().zip(&counters) {
        assert_eq!(counter.as_ref().map(|c| c.name.as_str()), Some(*name), "{}", log());
    }
    // nfacct objects are per namespace: the client's, where no daemon runs, has none.
    let elsewhere = in_netns(&net.client, || NetlinkNfacct.get(NFACCT_COUNTERS[0]).expect("nfacct get"));
    assert_eq!(elsewhere, None);
    // (iptables-save writes two blanks after --nfacct-name.)
    let invalid = filter.lines().find(|l| l.contains("--ctstate INVALID")).unwrap_or_default();
    let words: Vec<&str> = invalid.split_whitespace().collect();
    let want =
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP";
    assert_eq!(words.join(" "), want, "{filter}");
    let scrape = daemon.metrics().expect("metrics");
    assert_eq!(scrape.value("kubeproxy_iptables_ct_state_invalid_dropped_packets_total"), Some(0.0), "{}", scrape.0);

    // The healthCheckNodePort server listens on the selected address only.
    let health = |ip: &str| http_get(net.client.name(), &format!("http://{ip}:{HEALTH_PORT}/"));
    let answered = poll(TIMEOUT, Duration::from_millis(200), || health(SECONDARY));
    let (status, body) = answered.unwrap_or_else(|| panic!("no health check answer on {SECONDARY}; log:\n{}", log()));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"localEndpoints\": 1"), "{body}");
    assert_eq!(health(NODE_IP), None, "nothing listens on {NODE_IP}:{HEALTH_PORT}");
}

#[test]
fn tcp_be_liberal_leaves_out_the_invalid_drop() {
    let Some(backend) = backend() else { return };
    let net = Net::new();
    let key = "net.netfilter.nf_conntrack_tcp_be_liberal";
    if !testkit::require(net.node.sysctl_get(key).is_some(), &format!("{key} does not exist (no nf_conntrack)")) {
        return;
    }
    net.node.sysctl(key, "1");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = start(&net.node, backend, dir.path(), &[]);
    let filter = save(&net.node, backend, "filter");
    assert!(!filter.contains("--ctstate INVALID"), "{filter}\n{}", daemon.log());
    assert!(filter.contains("kubernetes forwarding conntrack rule"), "KUBE-FORWARD is otherwise there: {filter}");
    // Without --nodeport-addresses: every local address, and localhost NodePorts with it.
    let nat = save(&net.node, backend, "nat");
    assert!(nat.contains(&format!("{TAIL} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")), "{nat}");
    assert!(filter.contains("block incoming localnet connections"), "{filter}");
}
