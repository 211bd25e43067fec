//! kubenat next to flannel, on the real kernel: a two-node flannel-style cluster in namespaces
//! (`testkit::flannel::FlannelCluster`, vxlan and host-gw), one real kubenat daemon per node
//! (`--hostname-override node-N`, `--flannel-subnet-file`, `--iptables-backend nft`), both
//! talking to one test API server in node 1 (node 2 through a TCP relay on 192.168.50.1), and
//! real TCP traffic from pods, nodes and an off-cluster client proving the datapath.
//!
//! Objects: `web` (ClusterIP 10.96.0.10:80 → 8080, NodePort 30080, eTP=Cluster; endpoints
//! 10.244.1.2 on node-1 and 10.244.2.2 on node-2), `local` (10.96.0.11:80, NodePort 30081,
//! eTP=Local; only endpoint 10.244.2.2 on node-2), `self` (10.96.0.12:80; only endpoint
//! 10.244.1.2, used for the hairpin check). Every check runs and is reported in a table; the
//! test fails at the end if any failed. Needs root (skips otherwise; fails under CI=true).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};
use testkit::apiserver::ApiServer;
use testkit::daemon::poll;
use testkit::flannel::{self, Backend, FlannelCluster, NodeDaemon, Relay, EXTERNAL_IP};
use testkit::objects::{self, Ep, EpState, Port};
use testkit::traffic::{self, Proto, Reply, Server};

const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const SELF_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const WEB_NODEPORT: u16 = 30080;
const LOCAL_NODEPORT: u16 = 30081;
/// Every "eventually" is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
/// Per-request timeout.
const REQUEST: Duration = Duration::from_secs(1);

fn node_obj(n: u8) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": format!("node-{n}") },
        "spec": { "podCIDR": format!("10.244.{n}.0/24"), "podCIDRs": [format!("10.244.{n}.0/24")] },
        "status": { "addresses": [
            { "type": "InternalIP", "address": format!("192.168.50.{n}") },
            { "type": "Hostname", "address": format!("node-{n}") },
        ] },
    })
}

/// `default/<name>`: `http` 80→8080/TCP, a NodePort with `node_port` (eTP Local with `local`).
fn service(name: &str, ip: Ipv4Addr, node_port: Option<u16>, local: bool) -> Value {
    let service = objects::service(name, ip, &objects::with_node_ports(&[Port::tcp("http", 80, 8080)], node_port));
    match node_port {
        Some(_) => objects::merge(
            service,
            json!({ "spec": { "externalTrafficPolicy": if local { "Local" } else { "Cluster" } } }),
        ),
        None => service,
    }
}

/// The EndpointSlice of `default/<service>`: ready endpoints `(address, n)` on `node-<n>`.
fn slice(service: &str, endpoints: &[(Ipv4Addr, u8)]) -> Value {
    let endpoints: Vec<Ep> = endpoints
        .iter()
        .map(|(ip, node)| Ep { ip: *ip, node: format!("node-{node}"), state: EpState::Ready })
        .collect();
    objects::slice(service, &endpoints, &[Port::tcp("http", 80, 8080)])
}

/// Soft checks: each records pass/fail with detail; `finish` prints the table and fails.
struct Checks {
    backend: &'static str,
    rows: Vec<(String, bool, String)>,
}

impl Checks {
    fn record(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        eprintln!("[{}] {} {name}: {detail}", self.backend, if ok { "PASS" } else { "FAIL" });
        self.rows.push((name.to_string(), ok, detail));
    }

    fn finish(&self, context: impl FnOnce() -> String) {
        let mut table = format!("\n=== flannel {} ===\n", self.backend);
        for (name, ok, detail) in &self.rows {
            let _ = writeln!(table, "{:4} {name}: {detail}", if *ok { "PASS" } else { "FAIL" });
        }
        eprintln!("{table}");
        if self.rows.iter().any(|(_, ok, _)| !ok) {
            panic!("some checks failed:{table}\n{}", context());
        }
    }
}

fn tcp(from: &testkit::netns::NetNs, ip: Ipv4Addr, port: u16, count: usize) -> Vec<Reply> {
    traffic::requests(from, Proto::Tcp, SocketAddr::from((ip, port)), REQUEST, count)
}

fn summary(replies: &[Reply]) -> String {
    let mut seen = std::collections::BTreeMap::new();
    for r in replies {
        *seen.entry(r.to_string()).or_insert(0usize) += 1;
    }
    seen.iter().map(|(k, v)| format!("{v}× {k}")).collect::<Vec<_>>().join(", ")
}

fn clients(replies: &[Reply]) -> Vec<Ipv4Addr> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Answer { client: std::net::IpAddr::V4(c), .. } => Some(*c),
            _ => None,
        })
        .collect()
}

/// Conntrack lines of the outer VXLAN flows in `ns`: (orig src, orig sport, reply dst, reply dport).
fn vxlan_flows(ns: &testkit::netns::NetNs) -> (Vec<(String, String, String, String)>, String) {
    let text = flannel::output(ns, &["conntrack", "-L", "-p", "udp", "--dport", "8472"]);
    let mut flows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("udp")) {
        let field = |key: &str, nth: usize| {
            line.split_whitespace().filter_map(|w| w.strip_prefix(key)).nth(nth).unwrap_or("?").to_string()
        };
        flows.push((field("src=", 0), field("sport=", 0), field("dst=", 1), field("dport=", 1)));
    }
    (flows, text)
}

fn run(backend: Backend) {
    if !testkit::require_root()
        || !testkit::require_br_netfilter()
        || !["iptables-nft", "iptables-nft-restore", "iptables-nft-save", "conntrack", "bridge"]
            .iter()
            .all(|p| testkit::require_program(p))
    {
        return;
    }
    let cluster = FlannelCluster::new(backend);
    let (n1, n2) = (cluster.node(1), cluster.node(2));
    // Realistic nodes have a default route (node → ClusterIP needs a route before DNAT).
    for node in [n1, n2] {
        node.ns.ip(&["route", "add", "default", "via", "192.168.50.254", "dev", "eth0"]);
    }
    let _servers = [
        Server::start(&n1.pods[0].ns, Proto::Tcp, 8080, "n1-pod0"),
        Server::start(&n2.pods[0].ns, Proto::Tcp, 8080, "n2-pod0"),
        Server::start(&cluster.external, Proto::Tcp, 8080, "ext"),
    ];
    let mut checks = Checks { backend: backend.name(), rows: Vec::new() };
    let (p1, p2) = (n1.pods[0].ip, n2.pods[0].ip);

    // Baseline: flannel's datapath alone.
    let base = tcp(&n1.pods[1].ns, p2, 8080, 1);
    checks.record(
        "baseline pod n1 → pod n2 (flannel only)",
        base[0] == Reply::Answer { server: "n2-pod0".into(), client: n1.pods[1].ip.into() },
        summary(&base),
    );
    let flannel_before: Vec<(String, String)> =
        [n1, n2].iter().map(|n| (n.chain("nat", "FLANNEL-POSTRTG"), n.chain("filter", "FLANNEL-FWD"))).collect();

    // API server in node 1; node 2 reaches it through a relay on node 1's underlay address.
    let api = ApiServer::start_in_netns(n1.ns.name());
    let _relay = Relay::start(&n1.ns, (n1.ip, api.port()), (Ipv4Addr::LOCALHOST, api.port()));
    api.apply(node_obj(1));
    api.apply(node_obj(2));
    api.apply(service("web", WEB_IP, Some(WEB_NODEPORT), false));
    api.apply(service("local", LOCAL_IP, Some(LOCAL_NODEPORT), true));
    api.apply(service("self", SELF_IP, None, false));
    api.apply(slice("web", &[(p1, 1), (p2, 2)]));
    api.apply(slice("local", &[(p2, 2)]));
    api.apply(slice("self", &[(p1, 1)]));
    let kc1 = api.kubeconfig(cluster.dir.path());
    let kc2 = cluster.dir.path().join("kubeconfig-node2");
    flannel::write_kubeconfig(&kc2, &format!("http://{}:{}", n1.ip, api.port()));
    let mut daemons = [
        NodeDaemon::start(n1, &kc1, &cluster.dir.path().join("kubenat-node1.log"), "1s"),
        NodeDaemon::start(n2, &kc2, &cluster.dir.path().join("kubenat-node2.log"), "1s"),
    ];
    let context = |daemons: &[NodeDaemon]| {
        let mut s = String::new();
        for (d, n) in daemons.iter().zip([n1, n2]) {
            let _ = write!(s, "\n--- {} iptables-nft-save ---\n{}", n.name(), n.save());
            let _ = write!(s, "\n--- {} routes ---\n{}", n.name(), flannel::output(&n.ns, &["ip", "route"]));
            let _ = write!(s, "\n--- {} log ---\n{}", n.name(), d.log_text());
        }
        s
    };
    for d in &mut daemons {
        if !d.wait_full_syncs(1.0, WAIT) {
            panic!("a daemon did not sync within {WAIT:?}{}", context(&daemons));
        }
    }
    // Wait (bounded) until both nodes serve the NodePort: both daemons have the services.
    let ready = poll(WAIT, Duration::from_millis(200), || {
        let ok = [n1, n2].iter().all(|n| {
            let r = tcp(&cluster.external, n.ip, WEB_NODEPORT, 1);
            r[0].server().is_some()
        });
        ok.then_some(())
    });
    checks.record("both daemons programmed the NodePort within 10 s", ready.is_some(), "");

    // 1. pod on node 1 → ClusterIP → pods on both nodes.
    let r = tcp(&n1.pods[1].ns, WEB_IP, 80, 16);
    let tally = traffic::tally(&r);
    checks.record(
        "pod n1 → ClusterIP reaches pods on node 1 and node 2 (no SNAT)",
        tally.contains_key("n1-pod0")
            && tally.contains_key("n2-pod0")
            && tally.values().sum::<usize>() == 16
            && clients(&r).iter().all(|c| *c == n1.pods[1].ip)
            && clients(&r).len() == 16,
        summary(&r),
    );

    // 2. node 1 itself → ClusterIP → remote pod (10.96.0.11 has only the node-2 endpoint). For
    //    vxlan, first clear the outer flows so the double-NAT check sees fresh entries.
    if backend == Backend::Vxlan {
        let _ = flannel::output(&n1.ns, &["conntrack", "-D", "-p", "udp", "--dport", "8472"]);
    }
    let r = tcp(&n1.ns, LOCAL_IP, 80, 3);
    checks.record(
        "node 1 host → ClusterIP → remote pod (masqueraded to a node-1 address)",
        r.iter().all(|x| x.server() == Some("n2-pod0")) && clients(&r).iter().all(|c| n1.addresses().contains(c)),
        summary(&r),
    );

    // 3. vxlan: the outer UDP/8472 packet of that marked flow is not NATed a second time.
    if backend == Backend::Vxlan {
        let (flows, text) = vxlan_flows(&n1.ns);
        let from_n1: Vec<_> = flows.iter().filter(|f| f.0 == n1.ip.to_string()).collect();
        let clean =
            !from_n1.is_empty() && from_n1.iter().all(|(src, sport, rdst, rdport)| src == rdst && sport == rdport);
        checks.record(
            "vxlan: outer 192.168.50.1→.2:8472 flow not masqueraded (sport kept)",
            clean,
            format!("{} outer flow(s) from node 1: {:?}; conntrack:\n{}", from_n1.len(), from_n1, text.trim()),
        );
        // Control: with a NAT before KUBE-POSTROUTING that leaves the mark set (flannel
        // 0.20.0's layout, §5.3), the outer datagram is masqueraded by KUBE-POSTROUTING's
        // `MASQUERADE --random-fully`: the detector above must then see a rewritten port.
        let rule = ["POSTROUTING", "-m", "mark", "--mark", "0x4000/0x4000", "-d", flannel::NETWORK, "-j", "MASQUERADE"];
        let mut insert = vec![flannel::IPTABLES, "-w", "-t", "nat", "-I"];
        insert.extend_from_slice(&rule[..1]);
        insert.push("1");
        insert.extend_from_slice(&rule[1..]);
        n1.ns.run_ok(&insert);
        let _ = flannel::output(&n1.ns, &["conntrack", "-D", "-p", "udp", "--dport", "8472"]);
        let r = tcp(&n1.ns, LOCAL_IP, 80, 3);
        let (flows, text) = vxlan_flows(&n1.ns);
        let mut delete = vec![flannel::IPTABLES, "-w", "-t", "nat", "-D"];
        delete.extend_from_slice(&rule);
        n1.ns.run_ok(&delete);
        let from_n1: Vec<_> = flows.iter().filter(|f| f.0 == n1.ip.to_string()).collect();
        let natted = from_n1.iter().any(|(src, sport, rdst, rdport)| src != rdst || sport != rdport);
        checks.record(
            "vxlan control: mark left set (flannel 0.20.0 layout) → outer flow IS rewritten (detector works)",
            natted && r.iter().all(|x| x.server() == Some("n2-pod0")),
            format!("{}; outer flows {:?}; conntrack:\n{}", summary(&r), from_n1, text.trim()),
        );
    }

    // 4. external → NodePort 30080 (eTP=Cluster) on both nodes: answered, masqueraded.
    let node_addrs: Vec<Ipv4Addr> = [n1, n2].iter().flat_map(|n| n.addresses()).collect();
    for node in [n1, n2] {
        let r = tcp(&cluster.external, node.ip, WEB_NODEPORT, 8);
        let cs = clients(&r);
        checks.record(
            &format!("external → {}:{WEB_NODEPORT} (eTP=Cluster) answered, client = a node address", node.ip),
            cs.len() == 8 && cs.iter().all(|c| node_addrs.contains(c)),
            summary(&r),
        );
    }

    // 5. eTP=Local: node 2 answers with the client IP preserved; node 1 drops.
    let r = tcp(&cluster.external, n2.ip, LOCAL_NODEPORT, 4);
    checks.record(
        "eTP=Local: external → node 2:30081 answered, source 192.168.50.100 preserved",
        r.iter().all(|x| *x == Reply::Answer { server: "n2-pod0".into(), client: EXTERNAL_IP.into() }),
        summary(&r),
    );
    let r = tcp(&cluster.external, n1.ip, LOCAL_NODEPORT, 2);
    checks.record(
        "eTP=Local: external → node 1:30081 (no local endpoint) times out (DROP)",
        r.iter().all(|x| *x == Reply::Timeout),
        summary(&r),
    );

    // 6. hairpin: pod → its own Service → itself, masqueraded (to cni0).
    let r = tcp(&n1.pods[0].ns, SELF_IP, 80, 3);
    checks.record(
        "hairpin: pod 10.244.1.2 → own Service → itself, masqueraded",
        r.iter().all(|x| x.server() == Some("n1-pod0"))
            && clients(&r).iter().all(|c| *c != p1 && n1.addresses().contains(c)),
        summary(&r),
    );

    // 7. flannel's rules survive several full syncs (each forced as kube-proxy's canary monitor
    //    would: the mangle canary deleted, so the next period's sync reads back and repairs),
    //    in the right order; pod egress still masqueraded.
    let start: Vec<f64> = daemons.iter().map(NodeDaemon::full_syncs).collect();
    let mut synced = Some(());
    for round in 1..=3 {
        for n in [n1, n2] {
            let _ = n.ns.exec(&[flannel::IPTABLES, "-w", "-t", "mangle", "-X", "KUBE-PROXY-CANARY"]);
        }
        let done = poll(WAIT, Duration::from_millis(200), || {
            daemons.iter().zip(&start).all(|(d, s)| d.full_syncs() >= s + f64::from(round)).then_some(())
        });
        synced = synced.and(done);
    }
    checks.record(
        "each daemon did 3 more full syncs (canary deleted 3 times)",
        synced.is_some(),
        format!("from {start:?}"),
    );
    for (node, before) in [n1, n2].iter().zip(&flannel_before) {
        let after = (node.chain("nat", "FLANNEL-POSTRTG"), node.chain("filter", "FLANNEL-FWD"));
        checks.record(
            &format!("{}: FLANNEL-POSTRTG and FLANNEL-FWD unchanged after syncs", node.name()),
            &after == before && after.0.lines().count() == 7 && after.1.lines().count() == 3,
            format!("{} + {} rules", after.0.lines().count(), after.1.lines().count()),
        );
        let post = node.chain("nat", "POSTROUTING");
        let pos = |target: &str| post.lines().position(|l| l.ends_with(&format!("-j {target}")));
        let (kube, fl) = (pos("KUBE-POSTROUTING"), pos("FLANNEL-POSTRTG"));
        checks.record(
            &format!("{}: POSTROUTING jumps KUBE-POSTROUTING before FLANNEL-POSTRTG", node.name()),
            matches!((kube, fl), (Some(k), Some(f)) if k < f),
            post.trim().replace('\n', " | "),
        );
        let fwd = node.chain("filter", "FORWARD");
        checks.record(
            &format!("{}: FORWARD still jumps to FLANNEL-FWD", node.name()),
            fwd.lines().any(|l| l.ends_with("-j FLANNEL-FWD")),
            fwd.trim().replace('\n', " | "),
        );
    }
    let r = tcp(&n1.pods[1].ns, EXTERNAL_IP, 8080, 2);
    checks.record(
        "pod egress n1 → external still masqueraded by flannel (client 192.168.50.1)",
        r.iter().all(|x| *x == Reply::Answer { server: "ext".into(), client: n1.ip.into() }),
        summary(&r),
    );

    // 8. new flannel lease on node 1: the ClusterIP masquerade rule follows FLANNEL_NETWORK.
    let old_rule = "! -s 10.244.0.0/16 -d 10.96.0.10/32";
    let new_rule = "! -s 10.244.0.0/15 -d 10.96.0.10/32";
    let had_old = n1.save().contains(old_rule);
    n1.write_subnet_env("10.244.0.0/15", backend.mtu());
    let switched = poll(WAIT, Duration::from_millis(200), || {
        let save = n1.save();
        (save.contains(new_rule) && !save.contains(old_rule)).then_some(())
    });
    checks.record(
        "new lease (FLANNEL_NETWORK 10.244.0.0/15) → `! -s` CIDR switches within 10 s",
        had_old && switched.is_some(),
        format!("old rule present before: {had_old}"),
    );

    checks.finish(|| context(&daemons));
}

#[test]
fn flannel_vxlan_two_nodes() {
    run(Backend::Vxlan);
}

#[test]
fn flannel_host_gw_two_nodes() {
    run(Backend::HostGw);
}
