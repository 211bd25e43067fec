//! Bad input end to end: every hostile manifest in `fixtures/bad/` is reported with its file,
//! document and a precise reason, the valid objects next to it still render, and the rendered
//! text is always accepted by the real `iptables-restore` (nft and legacy) — user data can
//! never break the restore input. Also a 10,000-endpoint Service, rendered and loaded.

mod common;

use std::fmt::Write as _;
use std::process::{Command, Output};

use common::netns::NetNs;
use kubenat::iptables::exec::{Backend, ExecIptables, Iptables, RestoreOptions, Tool};
use kubenat::iptables::{check, parse};
use kubenat::model::IpFamily;

fn kubenat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubenat")).args(args).output().expect("run kubenat")
}

fn render_ok(args: &[&str]) -> (String, String) {
    let out = kubenat(args);
    assert!(out.status.success(), "kubenat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout).expect("utf-8"), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn load_into_kernel(text: &str, what: &str) {
    for backend in [Backend::Nft, Backend::Legacy] {
        if !common::require_root() || !common::require_program(&backend.binary(IpFamily::V4, Tool::Restore)) {
            return;
        }
        let ns = NetNs::new("bad");
        let ipt = ExecIptables::new(backend).in_netns(ns.name());
        ipt.restore(IpFamily::V4, text, RestoreOptions { noflush: true, counters: false })
            .unwrap_or_else(|e| panic!("{backend} rejected the rules rendered from {what}: {e}"));
    }
}

#[test]
fn hostile_manifests_are_reported_and_the_rest_renders() {
    let (text, stderr) = render_ok(&["render", "--objects", "fixtures/bad", "--hostname-override=node-1", "--jumps"]);
    // Every file with a bad object is named, with its document index.
    for entry in std::fs::read_dir("fixtures/bad").expect("fixtures/bad") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if name.starts_with("12-") || name.starts_with("13-") {
            continue; // not Kubernetes / another kind: skipped quietly, by design
        }
        assert!(stderr.contains(&format!("fixtures/bad/{name}#")), "{name} not reported:\n{stderr}");
    }
    for needle in [
        "Service bad-01/web: invalid clusterIP \"10.96.1.300\"",
        "port \"high\": port 65536 out of range 1-65535",
        "port \"ping\": unknown protocol \"ICMP\"",
        "EndpointSlice bad-09/web-abcde: no kubernetes.io/service-name label",
        "invalid YAML",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    // Nothing hostile reached the rules; the valid services did.
    assert!(!text.contains("-j ACCEPT\" ") && !text.contains("web\\\""), "{text}");
    for line in text.lines() {
        assert!(!line.contains("bad-16 -j"), "{line}");
    }
    assert!(text.matches("-A KUBE-SERVICES").count() >= 10, "valid services must still render:\n{text}");
    let ruleset = parse::parse(&text).expect("rendered text parses");
    let problems = check::check(&ruleset);
    assert!(problems.is_empty(), "{problems:?}");
    load_into_kernel(&text, "fixtures/bad");
}

#[test]
fn strict_mode_fails_on_any_skipped_object() {
    let out = kubenat(&["render", "--strict", "--objects", "fixtures/bad/03-port-zero.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--strict"), "{stderr}");
}

#[test]
fn bad_flags_fail_with_one_clear_line() {
    for (args, needle) in [
        (vec!["render", "--objects", "x", "--cluster-cidr", "10.0.0.0/33"], "--cluster-cidr"),
        (vec!["render", "--objects", "x", "--iptables-masquerade-bit", "32"], "--iptables-masquerade-bit"),
        (vec!["render", "--objects", "examples/demo", "--nodeport-addresses", "nope"], "--nodeport-addresses"),
        (
            vec!["render", "--objects", "examples/demo", "--detect-local-mode", "BridgeInterface"],
            "--pod-bridge-interface",
        ),
        (vec!["render", "--objects", "examples/demo", "--nodeport-addresses", "10.0.0.0/99"], "--nodeport-addresses"),
        (vec!["render", "--objects", "no/such/dir"], "--objects no/such/dir: no such file or directory"),
        (vec!["render"], "--objects"),
    ] {
        let out = kubenat(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn ten_thousand_endpoints_render_and_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec:\n  clusterIP: 10.96.0.99\n  ports: [{port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  namespace: default\n  labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints:\n",
    );
    for i in 0..10_000u32 {
        let _ = writeln!(yaml, "- addresses: [10.{}.{}.{}]", 128 + i / 65536, (i / 256) % 256, i % 256);
    }
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, yaml).expect("write");
    let (text, _) = render_ok(&["render", "--objects", path.to_str().expect("utf-8 path")]);
    assert_eq!(text.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count(), 10_000);
    assert!(!text.contains(" -> "), "large-cluster mode drops per-endpoint comments");
    load_into_kernel(&text, "a 10,000-endpoint service");
}
