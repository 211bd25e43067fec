//! Real kernel, rendered rules: every golden scenario loads with the real nft and legacy
//! `iptables-restore` and reads back (iptables-save) equal to what we rendered; the bundled demo
//! applied with `kubenat apply` carries real TCP and UDP through a ClusterIP and a NodePort,
//! refuses a service without endpoints, and applying again never duplicates a jump rule.
//! Hostile input: the render of `fixtures/bad/` and of names full of quotes, backslashes,
//! newlines, NULs, flag fragments and non-ASCII text (straight into the model, past the
//! converter) loads and reads back equal to what we rendered.
//! Needs root (skips otherwise, fails under CI=true).

use std::process::Command;
use std::time::Duration;

use kubenat::apply::exec::{Backend, ExecIptables, Iptables, RestoreOptions, Tool};
use kubenat::inspect::diff::{diff, DiffOptions};
use kubenat::model::{ClusterState, Endpoint, IpFamily, NodeConfig, ServicePort, ServicePortName};
use kubenat::rules::parse::parse;
use kubenat::rules::render::render;
use kubenat::rules::ruleset::TableName;
use testkit::lab::Lab;
use testkit::netns::NetNs;
use testkit::traffic::{self, Proto, Reply, Server};

const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: false };
const WAIT: Duration = Duration::from_secs(2);
const BACKENDS: [Backend; 2] = [Backend::Nft, Backend::Legacy];

fn available(backend: Backend, family: IpFamily) -> bool {
    testkit::require_root() && testkit::require_program(&backend.binary(family, Tool::Restore))
}

fn kubenat(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubenat")).args(args).output().expect("run kubenat");
    assert!(out.status.success(), "kubenat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn save(ipt: &ExecIptables, family: IpFamily) -> String {
    let mut text = String::new();
    for table in [TableName::Filter, TableName::Nat] {
        text.push_str(&ipt.save(family, Some(table)).expect("iptables-save"));
    }
    text
}

fn scenarios() -> Vec<(String, String, IpFamily)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("fixtures/scenarios").expect("scenarios") {
        let dir = entry.expect("entry").path();
        for (file, family) in [("expected.txt", IpFamily::V4), ("expected-ipv6.txt", IpFamily::V6)] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                out.push((format!("{}/{file}", dir.display()), text, family));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 15, "golden scenarios missing");
    out
}

#[test]
fn every_golden_loads_and_reads_back_equal() {
    for backend in BACKENDS {
        if !available(backend, IpFamily::V4) || !available(backend, IpFamily::V6) {
            return;
        }
        for (name, text, family) in scenarios() {
            let ns = NetNs::new("gold");
            let ipt = ExecIptables::new(backend).in_netns(ns.name());
            ipt.restore(family, &text, NOFLUSH).unwrap_or_else(|e| panic!("{backend} {name}: {e}"));
            let saved = save(&ipt, family);
            let ours = parse(&text).expect("golden parses");
            let theirs = parse(&saved).unwrap_or_else(|e| panic!("{backend} {name}: saved dump: {e}\n{saved}"));
            let d = diff(&ours, &theirs, &DiffOptions { kube_only: false });
            assert!(d.is_empty(), "{backend} {name}: kernel state differs from render:\n{d}");
        }
    }
}

#[test]
fn raw_render_output_is_idempotent_under_noflush() {
    let args = [
        "render",
        "--objects",
        "fixtures/scenarios/loadbalancer-source-ranges/manifests.yaml",
        "fixtures/scenarios/common-node.yaml",
        "--hostname-override=node-1",
        "--cluster-cidr=10.244.0.0/16",
    ];
    let text = kubenat(&args);
    for backend in BACKENDS {
        if !available(backend, IpFamily::V4) {
            return;
        }
        let ns = NetNs::new("idem");
        let ipt = ExecIptables::new(backend).in_netns(ns.name());
        ipt.restore(IpFamily::V4, &text, NOFLUSH).expect("first restore");
        let once = save(&ipt, IpFamily::V4);
        ipt.restore(IpFamily::V4, &text, NOFLUSH).expect("second restore");
        let twice = save(&ipt, IpFamily::V4);
        let d = diff(&parse(&once).expect("parse"), &parse(&twice).expect("parse"), &DiffOptions::default());
        assert!(d.is_empty(), "{backend}: second restore changed the tables:\n{d}");
    }
}

fn demo_apply(node: &NetNs, backend: Backend) -> String {
    kubenat(&[
        "apply",
        "--objects",
        "examples/demo",
        "--hostname-override=node-1",
        "--cluster-cidr=10.244.0.0/16",
        "--netns",
        node.name(),
        "--iptables-backend",
        backend.as_str(),
    ])
}

fn jump_count(saved: &str) -> usize {
    saved
        .lines()
        .filter(|l| {
            ["-A PREROUTING ", "-A OUTPUT ", "-A INPUT ", "-A FORWARD ", "-A POSTROUTING "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .filter(|l| l.contains("-j KUBE-"))
        .count()
}

#[test]
fn demo_traffic_through_applied_rules() {
    for backend in BACKENDS {
        if !available(backend, IpFamily::V4) || !testkit::require_program("python3") {
            return;
        }
        let lab = Lab::new(3);
        let _servers: Vec<Server> = [(0, "pod-a"), (1, "pod-b")]
            .iter()
            .flat_map(|&(i, name)| {
                [
                    Server::start(&lab.pod(i).ns, Proto::Tcp, 8080, name),
                    Server::start(&lab.pod(i).ns, Proto::Udp, 5353, name),
                ]
            })
            .collect();
        let report = demo_apply(&lab.node, backend);
        assert!(report.contains("14 jump rules inserted"), "{report}");
        let client = &lab.pod(2).ns;

        // ClusterIP, TCP and UDP: both backends answer, the pod source is kept.
        for proto in [Proto::Tcp, Proto::Udp] {
            let port = if proto == Proto::Tcp { 80 } else { 53 };
            let replies = traffic::requests(client, proto, ([10, 96, 0, 10], port).into(), WAIT, 24);
            let tally = traffic::tally(&replies);
            assert_eq!(tally.keys().collect::<Vec<_>>(), ["pod-a", "pod-b"], "{backend} {proto:?}: {tally:?}");
            for r in &replies {
                assert!(
                    matches!(r, Reply::Answer { client, .. } if client.to_string() == "10.244.3.2"),
                    "{backend}: {r}"
                );
            }
        }
        // A service without endpoints is refused (REJECT), not left to time out.
        let refused = traffic::request(client, Proto::Tcp, ([10, 96, 0, 20], 80).into(), WAIT);
        assert_eq!(refused, Reply::Refused, "{backend}");
        // NodePort on the node's address: reaches a backend, masqueraded to the node.
        let gateway = lab.pod(2).gateway;
        let via_nodeport = traffic::request(client, Proto::Tcp, (gateway, 30080).into(), WAIT);
        assert!(
            matches!(&via_nodeport, Reply::Answer { client, .. } if client.to_string() != "10.244.3.2"),
            "{backend}: NodePort traffic must be answered and masqueraded: {via_nodeport}"
        );

        // Applying again inserts nothing and duplicates nothing.
        let ipt = lab.node_iptables(backend);
        let before = jump_count(&save(&ipt, IpFamily::V4));
        let again = demo_apply(&lab.node, backend);
        assert!(again.contains(" 0 jump rules inserted"), "{again}");
        assert_eq!(jump_count(&save(&ipt, IpFamily::V4)), before, "{backend}: jump rules duplicated");
        assert_eq!(before, 14);
        let still = traffic::request(client, Proto::Tcp, ([10, 96, 0, 10], 80).into(), WAIT);
        assert!(matches!(still, Reply::Answer { .. }), "{backend}: {still}");
    }
}

/// Loads `text` (IPv4) into a fresh namespace on every backend and checks that the kernel's
/// `iptables-save` reads back equal to it.
fn loads_and_reads_back_equal(text: &str, what: &str) {
    for backend in BACKENDS {
        if !available(backend, IpFamily::V4) {
            return;
        }
        let ns = NetNs::new("hostile");
        let ipt = ExecIptables::new(backend).in_netns(ns.name());
        ipt.restore(IpFamily::V4, text, NOFLUSH).unwrap_or_else(|e| panic!("{backend} rejected {what}: {e}"));
        let saved = save(&ipt, IpFamily::V4);
        let theirs = parse(&saved).unwrap_or_else(|e| panic!("{backend} {what}: saved dump: {e}\n{saved}"));
        let d = diff(&parse(text).expect("render parses"), &theirs, &DiffOptions { kube_only: false });
        assert!(d.is_empty(), "{backend} {what}: kernel state differs from render:\n{d}");
    }
}

#[test]
fn bad_corpus_render_reads_back_equal() {
    let text = kubenat(&["render", "--objects", "fixtures/bad", "--hostname-override=node-1"]);
    assert!(text.contains("bad-62/ok"), "the corpus rendered nothing");
    loads_and_reads_back_equal(&text, "the render of fixtures/bad");
}

#[test]
fn hostile_names_past_the_converter_load_and_read_back_equal() {
    let hostile = [
        "web\" -j ACCEPT",
        "a\\\"b\\",
        "line\n-A KUBE-SERVICES -j ACCEPT",
        "nul\0byte",
        "tab\tand\rreturn",
        "# not a comment",
        "*filter",
        "COMMIT",
        "--comment",
        "! -s 0.0.0.0/0",
        "zöne-ünicode-🙂",
        "\u{2028}sep",
        "",
        &"q\"".repeat(200),
        &"é".repeat(300),
    ];
    let mut services = std::collections::BTreeMap::new();
    for (i, name) in hostile.iter().enumerate() {
        let port_name = ServicePortName {
            namespace: format!("ns{name}").into(),
            name: name.to_string().into(),
            port: name.to_string().into(),
            protocol: kubenat::model::Protocol::Tcp,
        };
        let ip = std::net::Ipv4Addr::new(10, 96, 7, i as u8 + 1);
        let endpoint = Endpoint {
            addr: std::net::SocketAddr::from(([10, 244, 7, i as u8 + 1], 8080)),
            ready: true,
            serving: true,
            terminating: false,
            node_name: Some(name.to_string()),
            zone_hints: vec![name.to_string()],
            node_hints: vec![],
        };
        let port = ServicePort {
            node_port: Some(30700 + i as u16),
            affinity_timeout: (i % 2 == 0).then_some(60),
            endpoints: vec![endpoint],
            ..ServicePort::new(port_name.clone(), vec![ip.into()], 80)
        };
        services.insert(port_name, port.into());
    }
    let node = NodeConfig { node_name: "node-1".into(), ..NodeConfig::default() };
    let text = render(&ClusterState { services }, &node).to_string();
    assert!(text.lines().count() > 100, "{text}");
    loads_and_reads_back_equal(&text, "hostile names");
}
