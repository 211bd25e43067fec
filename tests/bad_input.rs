//! Bad input end to end: every hostile manifest in `fixtures/bad/` is reported with its file,
//! document, the object and a precise reason, the valid objects next to it still render, and
//! the rendered text is always accepted by the real `iptables-restore` (nft and legacy) — user
//! data can never break the restore input. Also a 10,000-endpoint Service rendered and loaded,
//! and a 100,000-endpoint slice rendered and read back.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use kubenat::apply::exec::{Backend, ExecIptables, Iptables, RestoreOptions, Tool};
use kubenat::k8s::convert::{cluster_state, EndpointsSource};
use kubenat::k8s::manifests::load_str;
use kubenat::model::{IpFamily, NodeConfig};
use kubenat::{inspect::check, rules::parse, rules::render};
use testkit::netns::NetNs;

/// What each file of `fixtures/bad/` must make kubenat say (after `file#doc: `), and whether
/// its valid neighbour (`Service bad-NN/ok`) must still render. Every file must be listed.
const EXPECTED: &[(&str, &[&str], bool)] = &[
    ("01-", &["#1: Service bad-01/web: invalid clusterIP \"10.96.1.300\", Service skipped"], true),
    ("02-", &["Service bad-02/web: externalIPs: invalid IP \"192.0.2.999\"", "invalid IP \"192.0.2.11 \""], true),
    ("03-", &["Service bad-03/web: port \"zero\": port 0 out of range 1-65535"], true),
    ("04-", &["Service bad-04/web: port \"high\": port 65536 out of range 1-65535"], true),
    ("05-", &["Service bad-05/web: port \"ping\": unknown protocol \"ICMP\""], true),
    ("06-", &["Service bad-06/web: port \"http\": duplicate port name", "port \"alt\": duplicate port 80/TCP"], true),
    ("07-", &["Service bad-07/\"web\\\" -j ACCEPT\": invalid name"], true),
    ("08-", &["Service bad-08/\"web\\n-A KUBE-SERVICES -j ACCEPT\": invalid name"], true),
    ("09-", &["EndpointSlice bad-09/web-abcde: no kubernetes.io/service-name label"], true),
    ("10-", &["EndpointSlice bad-10/web-v4: endpoint address fd00:10:244::7 is IPv6 but the slice's addressType is IPv4"], true),
    ("11-", &["invalid YAML: did not find expected ',' or '}' at line 19"], true),
    ("12-", &[], true),
    ("13-", &[], true),
    ("14-", &["(300 chars): invalid name", "must be at most 63 characters"], true),
    ("15-", &["Service bad-15/web: port \"http -j ACCEPT\": invalid name"], true),
    ("16-", &["Service \"bad-16 -j DROP\"/\"web -j ACCEPT\": invalid namespace", "Service bad-16/\"web -j ACCEPT\": invalid name"], true),
    ("17-", &["Service bad-17/z-second: port \"http\": nodePort 30080/TCP is already used by Service bad-17/a-first; nodePort ignored"], true),
    ("18-", &["Service bad-18/web: invalid type: string \"80\", expected a sequence"], true),
    ("19-", &["invalid CIDR \"10.0.0.0/40\"", "invalid CIDR \"any\"", "port \"http\": nodePort 70000 out of range 1-65535"], true),
    ("20-", &["EndpointSlice bad-20/web-1: endpoint address \"10.244.20.7 -j ACCEPT\" is not a valid IP", "endpoint nodeName \"node-1 -j ACCEPT\""], true),
    ("21-", &["invalid JSON: control character"], true),
    ("22-", &["Service bad-22/web: invalid clusterIP \"fd00::g1\", Service skipped"], true),
    ("23-", &["Service bad-23/web: clusterIP 10.96.23.3 ignored: the Service already has an IPv4 clusterIP"], true),
    ("24-", &["Service bad-24/web: externalIPs: invalid IP \"192.0.2.0/24\"", "externalIPs: invalid IP \"lb.example.com\""], true),
    (
        "25-",
        &[
            "Service bad-25/web: loadBalancerSourceRanges: invalid CIDR \"10.0.0.0/8 -j ACCEPT\"",
            "loadBalancerSourceRanges: invalid CIDR \"fd00::/129\"",
            "loadBalancerSourceRanges: invalid CIDR \"192.0.2.0/24\\n-A KUBE-SERVICES -j ACCEPT\"",
        ],
        true,
    ),
    ("26-", &["Service bad-26/web: status.loadBalancer.ingress: invalid IP \"203.0.113.26\\n-A KUBE-SERVICES -j ACCEPT\""], true),
    ("27-", &["Service bad-27/web: port \"neg\": port -80 out of range 1-65535"], true),
    ("28-", &["Service bad-28/web: invalid value: integer `4294967296`, expected i32"], true),
    ("29-", &["Service bad-29/web: port \"http\": nodePort -30029 out of range 1-65535"], true),
    ("30-", &["Service bad-30/web: healthCheckNodePort 99999 out of range 1-65535"], true),
    (
        "31-",
        &[
            "Service bad-31/zero: sessionAffinityConfig.clientIP.timeoutSeconds 0 out of range 1-86400, using 10800",
            "Service bad-31/long: sessionAffinityConfig.clientIP.timeoutSeconds 86401 out of range",
        ],
        true,
    ),
    ("32-", &["Service bad-32/web: invalid value: integer `1000000000000`, expected i32"], true),
    ("33-", &["Service bad-33/web: unknown sessionAffinity \"Cookie -j ACCEPT\", treated as None"], true),
    ("34-", &["Service bad-34/web: unknown type \"Ingress\\n-A KUBE-SERVICES -j ACCEPT\", treated as ClusterIP"], true),
    (
        "35-",
        &[
            "Service bad-35/web: unknown externalTrafficPolicy \"Local -j ACCEPT\", treated as Cluster",
            "unknown internalTrafficPolicy \"Local\\\"; -j DROP\", treated as Cluster",
        ],
        true,
    ),
    ("36-", &["Service \"bäd-36\"/web: invalid namespace \"bäd-36\""], true),
    ("37-", &["Service bad-37/\"web\\0-j ACCEPT\": invalid name"], true),
    ("38-", &["Service bad-38/\"web #comment\": invalid name"], true),
    ("39-", &["Service bad-39/*filter: invalid name \"*filter\"", "Service bad-39/COMMIT: invalid name \"COMMIT\""], true),
    ("40-", &["Service bad-40/web: port \"ht\\u{2028}tp\": invalid name", "port \"dns\\\"\": invalid name"], true),
    ("41-", &["EndpointSlice bad-41/ghost-1: Service bad-41/ghost does not exist; endpoints ignored"], true),
    (
        "42-",
        &[
            "EndpointSlice bad-42/web-1: port \"http\": port 0 out of range 1-65535",
            "port \"http\": duplicate port TCP",
            "port \"grpc\": unknown protocol \"TCP -j ACCEPT\"",
        ],
        true,
    ),
    ("43-", &["EndpointSlice bad-43/web-1: endpoint nodeName \"node-1\\n-A KUBE-SERVICES -j ACCEPT\""], true),
    ("44-", &["EndpointSlice bad-44/web-1: endpoint 10.244.44.7: zone hint \"zone-a\\\" -j ACCEPT\""], true),
    ("45-", &["EndpointSlice bad-45/web-1: unsupported addressType \"IPv5\""], true),
    (
        "46-",
        &[
            "Service bad-46/web: unsupported apiVersion \"v2\" for Service (expected v1); skipped",
            "EndpointSlice bad-46/web-1: unsupported apiVersion \"discovery.k8s.io/v2\"",
        ],
        true,
    ),
    ("47-", &["Sevrice bad-47/web: unknown kind \"Sevrice\"; did you mean Service? skipped"], true),
    ("48-", &["Service bad-48/web: invalid clusterIP \"10.96.48.999\""], true),
    ("49-", &["Service bad-49/web: invalid type: sequence, expected a string"], true),
    ("50-", &["Service bad-50/\"\": invalid name \"\""], true),
    ("51-", &["#2: Service bad-51/web: defined more than once; this copy is ignored (first read from"], true),
    ("52-", &["Service bad-52/b-second: port \"http\": 10.96.52.2:80/TCP is already used by Service bad-52/a-first"], true),
    ("53-", &["invalid YAML: repetition limit exceeded"], true),
    ("54-", &["Service bad-54/web: port \"http\\t-j\": invalid name"], true),
    ("55-", &["invalid topology.kubernetes.io/zone label on Node", "zone hints ignored"], true),
    ("56-", &["EndpointSlice bad-56/web-1: endpoint without addresses skipped"], true),
    ("57-", &["EndpointSlice bad-57/web-1: label kubernetes.io/service-name: invalid Service name \"web -j ACCEPT\""], true),
    ("58-", &["Service bad-58/web: port #1: a name is required", "port #2: a name is required"], true),
    ("59-", &["59-not-utf8.yaml: not UTF-8 text"], false),
    ("60-", &["invalid JSON: recursion limit exceeded"], false),
    ("61-", &[], false),
    (
        "63-",
        &[
            "Service bad-63/web: externalIPs: invalid IP \"fe80::1%eth0\"",
            "externalIPs: invalid IP \"[fd00::1]\"",
            "loadBalancerSourceRanges: invalid CIDR \"fd00::/64 -j ACCEPT\"",
            "loadBalancerSourceRanges: invalid CIDR \"2001:db8::/129\"",
            "EndpointSlice bad-63/web-v6: endpoint address 10.244.63.7 is IPv4 but the slice's addressType is IPv6",
            "endpoint address \"fd00:10:244::63%1\" is not a valid IP",
        ],
        true,
    ),
    ("62-", &["62-tab-indentation.yaml#1: invalid YAML: found character that cannot start any token at line 4"], true),
];

fn kubenat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubenat")).args(args).output().expect("run kubenat")
}

fn render_ok(args: &[&str]) -> (String, String) {
    let out = kubenat(args);
    assert!(out.status.success(), "kubenat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout).expect("utf-8"), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn load_into_kernel(text: &str, what: &str) {
    load_family_into_kernel(IpFamily::V4, text, what);
}

fn load_family_into_kernel(family: IpFamily, text: &str, what: &str) {
    for backend in [Backend::Nft, Backend::Legacy] {
        if !testkit::require_root() || !testkit::require_program(&backend.binary(family, Tool::Restore)) {
            return;
        }
        let ns = NetNs::new("bad");
        let ipt = ExecIptables::new(backend).in_netns(ns.name());
        ipt.restore(family, text, RestoreOptions { noflush: true, counters: false })
            .unwrap_or_else(|e| panic!("{backend} rejected the rules rendered from {what}: {e}"));
    }
}

fn bad_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("fixtures/bad")
        .expect("fixtures/bad")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn corpus_has_fifty_hostile_inputs_each_with_its_expected_report() {
    let files = bad_files();
    assert!(files.len() >= 50, "only {} bad inputs", files.len());
    for file in &files {
        let listed = EXPECTED.iter().filter(|(prefix, ..)| file.starts_with(prefix)).count();
        assert_eq!(listed, 1, "{file}: list what it must report in EXPECTED");
    }
    assert_eq!(EXPECTED.len(), files.len(), "EXPECTED names a file that does not exist");
}

#[test]
fn each_hostile_file_gets_its_specific_report_and_its_neighbour_renders() {
    for file in bad_files() {
        let (_, needles, neighbour) = EXPECTED.iter().find(|(prefix, ..)| file.starts_with(prefix)).expect("listed");
        let path = format!("fixtures/bad/{file}");
        let (text, stderr) = render_ok(&["render", "--objects", &path, "--hostname-override=node-1"]);
        for needle in *needles {
            assert!(stderr.contains(needle), "{file}: missing {needle:?} in:\n{stderr}");
        }
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning") || l.contains("WARN")).collect();
        if needles.is_empty() {
            assert!(warnings.is_empty(), "{file} is skipped quietly by design, yet:\n{stderr}");
        } else {
            assert!(warnings.iter().all(|w| w.contains(&path) || w.contains("WARN")), "{file}: {warnings:?}");
        }
        let number = &file[..2];
        let ok = format!("\"bad-{number}/ok:http");
        assert_eq!(text.contains(&ok), *neighbour, "{file}: neighbour {ok:?} rendered?\n{text}");
        let ruleset = parse::parse(&text).unwrap_or_else(|e| panic!("{file}: rendered text does not parse: {e}"));
        assert!(check::check(&ruleset).is_empty(), "{file}: {:?}", check::check(&ruleset));
        for line in text.lines() {
            assert!(!line.starts_with("-A KUBE-SERVICES -j ACCEPT") && !line.contains("-j DROP\""), "{file}: {line}");
        }
    }
}

#[test]
fn hostile_manifests_are_reported_and_the_rest_renders() {
    let (text, stderr) = render_ok(&["render", "--objects", "fixtures/bad", "--hostname-override=node-1", "--jumps"]);
    // Every file with a bad object is named, with its document index.
    for entry in std::fs::read_dir("fixtures/bad").expect("fixtures/bad") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if ["12-", "13-", "61-"].iter().any(|p| name.starts_with(p)) {
            continue; // not Kubernetes / another kind / empty: skipped quietly, by design
        }
        if name.starts_with("55-") {
            continue; // a Node's zone label: logged by the node reader, not a file problem
        }
        let reported = [format!("fixtures/bad/{name}#"), format!("fixtures/bad/{name}: ")];
        assert!(reported.iter().any(|r| stderr.contains(r)), "{name} not reported:\n{stderr}");
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
    let neighbours = EXPECTED.iter().filter(|(.., neighbour)| *neighbour).count();
    assert!(neighbours >= 50);
    for (prefix, _, neighbour) in EXPECTED.iter().filter(|(.., neighbour)| *neighbour) {
        let ok = format!("\"bad-{}/ok:http", &prefix[..2]);
        assert!(text.contains(&ok) == *neighbour, "{ok} missing from the whole-corpus render");
    }
    let ruleset = parse::parse(&text).expect("rendered text parses");
    let problems = check::check(&ruleset);
    assert!(problems.is_empty(), "{problems:?}");
    load_into_kernel(&text, "fixtures/bad");
    let (v6, _) =
        render_ok(&["render", "--objects", "fixtures/bad", "--hostname-override=node-1", "--ip-family", "ipv6"]);
    assert!(check::check(&parse::parse(&v6).expect("IPv6 render parses")).is_empty());
    assert!(v6.contains("\"bad-63/ok:http cluster IP\"") && v6.contains("-d 2001:db8::63 "), "{v6}");
    load_family_into_kernel(IpFamily::V6, &v6, "fixtures/bad (IPv6)");
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

#[test]
fn hundred_thousand_endpoints_in_one_slice_render_and_read_back() {
    let mut json = String::from(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"huge","namespace":"default"},"spec":{"clusterIP":"10.96.0.98","ports":[{"port":80}]}}
{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"huge-1","namespace":"default","labels":{"kubernetes.io/service-name":"huge"}},"addressType":"IPv4","ports":[{"port":8080}],"endpoints":["#,
    );
    for i in 0..100_000u32 {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(json, r#"{sep}{{"addresses":["10.{}.{}.{}"]}}"#, 64 + i / 65536, (i / 256) % 256, i % 256);
    }
    json.push_str("]}\n");
    let loaded = load_str(&json, Path::new("huge.json"));
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let converted = cluster_state(&loaded.objects, EndpointsSource::Auto);
    assert!(converted.problems.is_empty(), "{:?}", converted.problems);
    let node = NodeConfig { node_name: "node-1".into(), ..NodeConfig::default() };
    let ruleset = render::render(&converted.state, &node);
    let text = ruleset.to_string();
    assert_eq!(text.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count(), 100_000);
    let parsed = parse::parse(&text).expect("parses");
    assert_eq!(parsed.rule_count(), ruleset.rule_count());
    assert!(check::check(&parsed).is_empty());
}
