//! Real kernel: `ExecIptables` and `apply_once` load a small kube-proxy-style ruleset into a
//! node namespace with the real nft and legacy `iptables-restore`, and real TCP/UDP traffic
//! from pod namespaces proves what the rules do. Needs root (skips otherwise, fails under CI).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kubenat::apply::exec::{detect_backend_in, Backend, Error, ExecIptables, Iptables, RestoreOptions, Tool};
use kubenat::model::{IpFamily, NodeConfig};
use kubenat::rules::parse::parse;
use kubenat::rules::render::jump_rules;
use kubenat::rules::ruleset::TableName;
use kubenat::{apply::apply_once, rules::extras::plan};
use testkit::fixture::{self, CLUSTER_IP, DNS_TARGET_PORT, JUMPS, NO_ENDPOINTS_IP, WEB_TARGET_PORT};
use testkit::lab::{Lab, LabConfig, Topology};
use testkit::netns::NetNs;
use testkit::traffic::{self, Proto, Reply, Server};

const V4: IpFamily = IpFamily::V4;
const WAIT: Duration = Duration::from_secs(2);
const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: false };

fn available(backend: Backend) -> bool {
    testkit::require_root() && testkit::require_program(&backend.binary(V4, Tool::Restore))
}

/// A routed lab: pod 0 is the client, pods 1 and 2 run TCP 8080 and UDP 5353 identity servers.
fn service_lab() -> (Lab, Vec<Server>) {
    let lab = Lab::new(3);
    let mut servers = Vec::new();
    for (i, name) in [(1, "pod-a"), (2, "pod-b")] {
        servers.push(Server::start(&lab.pod(i).ns, Proto::Tcp, WEB_TARGET_PORT, name));
        servers.push(Server::start(&lab.pod(i).ns, Proto::Udp, DNS_TARGET_PORT, name));
    }
    (lab, servers)
}

fn cluster(port: u16) -> SocketAddr {
    SocketAddr::from((CLUSTER_IP, port))
}

/// The only servers that answered `replies`, with the client address each saw.
fn answers(replies: &[Reply]) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = replies
        .iter()
        .map(|r| match r {
            Reply::Answer { server, client } => (server.clone(), client.to_string()),
            other => panic!("expected an answer, got {other}; all: {:?}", traffic::tally(replies)),
        })
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

fn serves_cluster_ip(backend: Backend) {
    if !available(backend) {
        return;
    }
    let (lab, _servers) = service_lab();
    let ipt = lab.node_iptables(backend);
    let (a, b) = (lab.pod(1).ip, lab.pod(2).ip);
    ipt.restore(V4, &fixture::services(a, b), NOFLUSH).unwrap();
    ipt.restore(V4, JUMPS, NOFLUSH).unwrap(); // --noflush: must not flush the body
    let dump = lab.node_save(backend);

    let client = &lab.pod(0).ns;
    let me = lab.pod(0).ip.to_string();
    // 20 new flows each: missing either backend by chance has probability 2^-19.
    for proto in [Proto::Tcp, Proto::Udp] {
        let port = if proto == Proto::Tcp { 80 } else { 53 };
        let replies = traffic::requests(client, proto, cluster(port), WAIT, 20);
        let expected = vec![("pod-a".to_string(), me.clone()), ("pod-b".to_string(), me.clone())];
        assert_eq!(answers(&replies), expected, "{proto:?} through the ClusterIP; rules:\n{dump}");
    }

    // Hairpin: pod-a reaching itself through the service is masqueraded to the node address.
    let replies = traffic::requests(&lab.pod(1).ns, Proto::Tcp, cluster(80), WAIT, 20);
    let hairpin = ("pod-a".to_string(), lab.pod(1).gateway.to_string());
    assert!(answers(&replies).contains(&hairpin), "{:?}", answers(&replies));

    // Node-originated traffic goes through nat OUTPUT.
    let from_node = traffic::request(&lab.node, Proto::Tcp, cluster(80), WAIT);
    assert!(from_node.server().is_some(), "from the node: {from_node}");

    // No endpoints: REJECT answers at once, for TCP and UDP.
    for (proto, port) in [(Proto::Tcp, 80), (Proto::Udp, 53)] {
        let started = Instant::now();
        let reply = traffic::request(client, proto, SocketAddr::from((NO_ENDPOINTS_IP, port)), WAIT);
        assert_eq!(reply, Reply::Refused, "{proto:?} to a service without endpoints");
        assert!(started.elapsed() < Duration::from_secs(1), "REJECT should be quick: {:?}", started.elapsed());
    }
}

#[test]
fn nft_restore_serves_cluster_ip() {
    serves_cluster_ip(Backend::Nft);
}

#[test]
fn legacy_restore_serves_cluster_ip() {
    serves_cluster_ip(Backend::Legacy);
}

/// Lines of `dump` that jump from a built-in chain to one of ours.
fn builtin_jumps(dump: &str) -> Vec<&str> {
    const BUILTINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    dump.lines()
        .filter(|l| BUILTINS.iter().any(|b| l.starts_with(&format!("-A {b} "))) && l.contains("-j KUBE-"))
        .collect()
}

fn apply_is_idempotent(backend: Backend) {
    if !available(backend) {
        return;
    }
    let (lab, _servers) = service_lab();
    let ipt = lab.node_iptables(backend);
    let desired = parse(&fixture::services(lab.pod(1).ip, lab.pod(2).ip)).unwrap();
    let jumps = jump_rules(&NodeConfig::default());
    for j in &jumps {
        let target = j.rule.target().unwrap_or_default();
        let declared = desired.table(j.table).is_some_and(|t| t.is_declared(target));
        assert!(declared, "test ruleset must declare {target} ({})", j.rule);
    }

    let first = apply_once(&ipt, V4, &desired, &jumps).unwrap();
    assert_eq!(first.jumps_inserted, jumps.len());
    let after_first = lab.node_save(backend);
    assert_eq!(builtin_jumps(&after_first).len(), jumps.len(), "{after_first}");
    for table in ["mangle", "nat", "filter"] {
        let saved = lab.node.run_ok(&[&backend.binary(V4, Tool::Save), "-t", table]);
        assert!(saved.contains(":KUBE-PROXY-CANARY - "), "no canary in {table}:\n{saved}");
    }

    // Leftovers of an earlier apply, and someone else's chain that must survive.
    let extra = "*nat\n:KUBE-SVC-STALE - [0:0]\n:KUBE-SEP-STALE - [0:0]\n:FLANNEL-POSTRTG - [0:0]\n\
                 -A KUBE-SVC-STALE -j KUBE-SEP-STALE\n-A FLANNEL-POSTRTG -j RETURN\n\
                 -A POSTROUTING -j FLANNEL-POSTRTG\nCOMMIT\n";
    ipt.restore(V4, extra, NOFLUSH).unwrap();

    let second = apply_once(&ipt, V4, &desired, &jumps).unwrap();
    assert_eq!(second.jumps_inserted, 0);
    assert_eq!(second.chains_deleted, 2);
    let after_second = lab.node_save(backend);
    assert_eq!(builtin_jumps(&after_second), builtin_jumps(&after_first), "{after_second}");
    assert!(!after_second.contains("STALE"), "{after_second}");
    assert!(after_second.contains("-A POSTROUTING -j FLANNEL-POSTRTG"), "{after_second}");
    assert!(after_second.contains("-A FLANNEL-POSTRTG -j RETURN"), "{after_second}");

    // Planning against the live state now inserts nothing, and the rules still work.
    let live = parse(&after_second).unwrap();
    let again = plan(&desired, &jumps, &live);
    assert!(!again.to_string().contains("-I "), "{again}");
    let reply = traffic::request(&lab.pod(0).ns, Proto::Tcp, cluster(80), WAIT);
    assert!(reply.server().is_some(), "after apply: {reply}");
}

#[test]
fn nft_apply_twice_adds_no_duplicate_jumps() {
    apply_is_idempotent(Backend::Nft);
}

#[test]
fn legacy_apply_twice_adds_no_duplicate_jumps() {
    apply_is_idempotent(Backend::Legacy);
}

fn broken_input_names_the_line(backend: Backend) {
    if !available(backend) {
        return;
    }
    let ns = NetNs::new("broken");
    let ipt = ExecIptables::new(backend).in_netns(ns.name());
    let input = "*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-BROKEN - [0:0]\n\
                 -A KUBE-SERVICES -m comment --comment \"fine\" -j ACCEPT\n\
                 -A KUBE-SERVICES -m tcp -p tcp --dport 99999 -j ACCEPT\n\
                 -A KUBE-SERVICES -j RETURN\nCOMMIT\n";
    let err = ipt.restore(V4, input, NOFLUSH).unwrap_err();
    assert_eq!(err.failing_line(), Some(5), "{err:?}");
    assert!(!err.is_retryable());
    let shown = err.to_string();
    for needle in ["at line 5", "invalid port/service", "--dport 99999", "--comment \"fine\"", "-j RETURN"] {
        assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
    }
    let saved = ns.run_ok(&[&backend.binary(V4, Tool::Save)]);
    assert!(!saved.contains("KUBE-BROKEN"), "a failed table must not be committed:\n{saved}");

    // A jump to a missing chain: nft blames COMMIT, so the culprit is pointed out separately.
    let input = "*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j ACCEPT\n-A KUBE-A -j KUBE-NOPE\nCOMMIT\n";
    let err = ipt.restore(V4, input, NOFLUSH).unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err.failing_line(), Some(4 | 5)), "{shown}");
    assert!(shown.contains("4 | -A KUBE-A -j KUBE-NOPE"), "{shown}");
}

#[test]
fn nft_broken_input_names_the_line() {
    broken_input_names_the_line(Backend::Nft);
}

#[test]
fn legacy_broken_input_names_the_line() {
    broken_input_names_the_line(Backend::Legacy);
}

#[test]
fn missing_namespace_is_reported() {
    if !testkit::require_root() {
        return;
    }
    let ipt = ExecIptables::new(Backend::Nft).in_netns(format!("knt-missing-{}", std::process::id()));
    let err = ipt.save(V4, None).unwrap_err();
    assert!(matches!(err, Error::NetnsNotFound { .. }), "{err:?}");
}

#[test]
fn detects_the_backend_holding_the_rules() {
    if !(available(Backend::Nft) && available(Backend::Legacy)) {
        return;
    }
    let rules = "*filter\n:KUBE-X - [0:0]\n-A KUBE-X -j RETURN\n-A KUBE-X -j RETURN\nCOMMIT\n";
    let legacy = NetNs::new("detect-legacy");
    ExecIptables::new(Backend::Legacy).in_netns(legacy.name()).restore(V4, rules, NOFLUSH).unwrap();
    assert_eq!(detect_backend_in(Some(legacy.name())), Backend::Legacy);

    let nft = NetNs::new("detect-nft");
    ExecIptables::new(Backend::Nft).in_netns(nft.name()).restore(V4, rules, NOFLUSH).unwrap();
    assert_eq!(detect_backend_in(Some(nft.name())), Backend::Nft);

    // Kubelet's hint chain in nft's mangle wins over more legacy rules.
    let hint = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
    ExecIptables::new(Backend::Nft).in_netns(legacy.name()).restore(V4, hint, NOFLUSH).unwrap();
    assert_eq!(detect_backend_in(Some(legacy.name())), Backend::Nft);
}

/// Same-node pod → ClusterIP → pod on one bridge works only when bridged replies pass
/// through iptables (`br_netfilter`), which is why kubenat checks the sysctl at start.
fn bridge_needs_br_netfilter(backend: Backend) {
    if !(available(backend) && testkit::require_br_netfilter()) {
        return;
    }
    let lab = Lab::with(LabConfig { pods: 3, topology: Topology::Bridge { br_netfilter: true } });
    let _servers: Vec<Server> =
        [(1, "pod-a"), (2, "pod-b")].map(|(i, n)| Server::start(&lab.pod(i).ns, Proto::Tcp, 8080, n)).into();
    let ipt = lab.node_iptables(backend);
    ipt.restore(V4, &fixture::services(lab.pod(1).ip, lab.pod(2).ip), NOFLUSH).unwrap();
    ipt.restore(V4, JUMPS, NOFLUSH).unwrap();
    let client = &lab.pod(0).ns;
    let direct = traffic::request(client, Proto::Tcp, lab.pod(1).addr(8080), WAIT);
    assert_eq!(direct.server(), Some("pod-a"), "plain bridging: {direct}");
    let via_service = traffic::request(client, Proto::Tcp, cluster(80), WAIT);
    assert!(via_service.server().is_some(), "with br_netfilter: {via_service}");

    lab.node.sysctl("net.bridge.bridge-nf-call-iptables", "0");
    let replies = traffic::requests(client, Proto::Tcp, cluster(80), Duration::from_secs(1), 3);
    assert_eq!(replies, vec![Reply::Timeout; 3], "without br_netfilter the reply bypasses un-DNAT");
}

#[test]
fn nft_bridge_needs_br_netfilter() {
    bridge_needs_br_netfilter(Backend::Nft);
}

#[test]
fn legacy_bridge_needs_br_netfilter() {
    bridge_needs_br_netfilter(Backend::Legacy);
}

/// The canary check lists one chain: present → true, absent → false, on both backends, in
/// every table kube-proxy puts a canary in.
#[test]
fn chain_exists_lists_one_chain() {
    for backend in [Backend::Nft, Backend::Legacy] {
        if !available(backend) {
            return;
        }
        let ns = NetNs::new("chainexists");
        let ipt = ExecIptables::new(backend).in_netns(ns.name());
        let canary = "KUBE-PROXY-CANARY";
        for table in [TableName::Mangle, TableName::Nat, TableName::Filter] {
            assert!(!ipt.chain_exists(V4, table, canary).expect("list"), "{backend} {table}: none yet");
        }
        let input = "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n*nat\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n";
        ipt.restore(V4, input, NOFLUSH).expect("restore");
        assert!(ipt.chain_exists(V4, TableName::Mangle, canary).expect("list"), "{backend}");
        assert!(ipt.chain_exists(V4, TableName::Nat, canary).expect("list"), "{backend}");
        assert!(!ipt.chain_exists(V4, TableName::Filter, canary).expect("list"), "{backend}");
    }
}
