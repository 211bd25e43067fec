//! `kubenat explain` as a user runs it offline: the built binary on the golden scenarios'
//! manifests and restore bodies (`--objects` + `--rules`), checking verdicts, problem codes,
//! exit codes (0 ok, 1 degraded/broken, 2 error) and the one-line errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The scenario's `--objects` (with the shared Node), its flags and `--rules` (its expected
/// restore body unless `rules` is given).
fn scenario_args(name: &str, rules: Option<&Path>) -> Vec<String> {
    let dir = root().join("fixtures/scenarios").join(name);
    let rules = rules.map_or_else(|| dir.join("expected.txt"), Path::to_path_buf);
    let mut args = vec!["--rules".to_string(), rules.display().to_string(), "--objects".into()];
    args.push(dir.join("manifests.yaml").display().to_string());
    args.push(root().join("fixtures/scenarios/common-node.yaml").display().to_string());
    let flags = std::fs::read_to_string(dir.join("args")).expect("scenario args");
    args.extend(flags.split_whitespace().map(String::from));
    args
}

/// Runs `kubenat explain ARGS…` from the repository root: (exit code, stdout, stderr).
fn explain(args: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubenat"))
        .arg("explain")
        .args(args)
        .current_dir(root())
        .output()
        .expect("run kubenat");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().expect("exit code"), text(&out.stdout), text(&out.stderr))
}

fn service_json(scenario: &str, service: &str, extra: &[&str], rules: Option<&Path>) -> (i32, Value) {
    let mut args = vec!["service".to_string(), service.to_string(), "-o".into(), "json".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(scenario_args(scenario, rules));
    let (code, stdout, stderr) = explain(&args);
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}{stderr}");
    (code, serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}")))
}

fn codes(report: &Value) -> Vec<String> {
    let problems = report["problems"].as_array().expect("problems");
    problems.iter().map(|p| p["code"].as_str().expect("code").to_string()).collect()
}

#[test]
fn every_scenario_agrees_with_its_golden_rules() {
    let dir = root().join("fixtures/scenarios");
    let mut scenarios: Vec<String> = std::fs::read_dir(&dir)
        .expect("scenarios")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("expected.txt").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 10);
    for scenario in scenarios {
        let mut args = vec!["node".to_string(), "-o".into(), "json".into()];
        args.extend(scenario_args(&scenario, None));
        let (code, stdout, stderr) = explain(&args);
        let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{scenario}: {e}: {stderr}"));
        // Offline: no node checks; the rules are the golden ones, so nothing node-specific.
        assert_eq!((code, &report["verdict"]), (0, &Value::from("ok")), "{scenario}: {report}");
        let counts = report["counts"].as_object().expect("counts");
        assert!(!counts.keys().any(|c| c.starts_with("rules-")), "{scenario}: {report}");
    }
}

#[test]
fn a_healthy_service_is_ok_with_exit_0() {
    let (code, report) = service_json("nodeport", "default/web", &["--node-ip", "192.168.1.10"], None);
    assert_eq!((code, codes(&report)), (0, vec![]), "{report}");
    assert_eq!(report["verdict"], "ok");
    let http = &report["ports"][0];
    assert_eq!(
        (&http["name"], &http["port"], &http["protocol"]),
        (&Value::from("http"), &Value::from(80), &Value::from("tcp"))
    );
    let kinds: Vec<&str> = http["paths"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["cluster-ip", "node-port"]);
    for endpoint in http["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["probability"], 0.5, "{endpoint}");
    }
    // Text: the verdict line, then the ports with their paths as `kubenat trace` prints them.
    let mut args = vec!["service".to_string(), "default/web".into(), "--port".into(), "http".into()];
    args.extend(scenario_args("nodeport", None));
    let (code, stdout, _) = explain(&args);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("default/web: ok (0 problems)\n"), "{stdout}");
    assert!(stdout.contains("    10.244.1.5:8080 p=0.500 masquerade=yes via nat/PREROUTING"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour when not on a terminal");
}

#[test]
fn a_deleted_rule_is_drift_naming_the_chain() {
    let text = std::fs::read_to_string(root().join("fixtures/scenarios/nodeport/expected.txt")).unwrap();
    let line = text.lines().find(|l| l.contains("DNAT --to-destination 10.244.2.7:8080")).unwrap();
    let chain = line.split_whitespace().nth(1).unwrap().to_string();
    let dump = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(dump.path(), text.replace(&format!("{line}\n"), "")).unwrap();
    let (code, report) = service_json("nodeport", "default/web", &[], Some(dump.path()));
    assert_eq!((code, codes(&report)), (1, vec!["rules-drift".to_string()]), "{report}");
    assert_eq!(report["verdict"], "broken");
    let problem = &report["problems"][0];
    assert!(problem["message"].as_str().unwrap().contains(&format!("nat/{chain}")), "{problem}");
    assert_eq!(problem["severity"], "error");
    assert!(!problem["fix"].as_str().unwrap().is_empty());
}

#[test]
fn endpoint_problems_from_the_scenarios() {
    let (code, report) = service_json("no-endpoints", "default/db", &[], None);
    assert_eq!((code, codes(&report)), (1, vec!["no-endpoints".to_string()]), "{report}");
    assert_eq!(report["verdict"], "broken");
    let (code, report) = service_json("terminating-fallback", "default/draining", &[], None);
    assert_eq!((code, codes(&report)), (1, vec!["no-ready-endpoints".to_string()]), "{report}");
    assert_eq!(report["verdict"], "degraded");
    let (code, report) = service_json("etp-local-no-local-endpoints", "ingress/ingress", &[], None);
    assert_eq!((code, codes(&report)), (1, vec!["no-local-endpoints".to_string()]), "{report}");
}

#[test]
fn source_ranges_judge_from() {
    let (code, report) = service_json("loadbalancer-source-ranges", "prod/shop", &["--from", "203.0.113.5"], None);
    assert_eq!((code, codes(&report)), (1, vec!["source-range-blocked".to_string()]), "{report}");
    let (code, report) = service_json("loadbalancer-source-ranges", "prod/shop", &["--from", "198.51.100.7"], None);
    assert_eq!((code, codes(&report)), (0, vec![]), "{report}");
}

#[test]
fn bad_input_is_one_error_line_and_exit_2() {
    let cases: [(&str, Vec<String>, &str); 4] = [
        ("unknown service", ["service", "default/nope"].map(String::from).to_vec(), "service default/nope not found"),
        ("unknown port", ["service", "default/web", "--port", "grpc"].map(String::from).to_vec(), "has no port grpc"),
        ("not NS/NAME", ["service", "web"].map(String::from).to_vec(), "is not NAMESPACE/NAME"),
        ("malformed dump", vec!["service".into(), "default/web".into()], "broken-truncated.save"),
    ];
    for (what, mut args, expected) in cases {
        let rules = (what == "malformed dump").then(|| root().join("fixtures/dumps/broken-truncated.save"));
        args.extend(scenario_args("nodeport", rules.as_deref()));
        let (code, stdout, stderr) = explain(&args);
        assert_eq!(code, 2, "{what}: {stdout}{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("kubenat: error:")).collect();
        assert_eq!(errors.len(), 1, "{what}: {stderr}");
        assert!(errors[0].contains(expected), "{what}: {stderr}");
    }
}

#[test]
fn objects_come_from_the_api_server_without_objects() {
    let server = testkit::apiserver::ApiServer::start();
    for file in ["fixtures/scenarios/nodeport/manifests.yaml", "fixtures/scenarios/common-node.yaml"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            if !value.is_null() {
                server.apply(value);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path()).display().to_string();
    let rules = root().join("fixtures/scenarios/nodeport/expected.txt").display().to_string();
    let args = ["service", "default/web", "-o", "json", "--kubeconfig", &kubeconfig, "--rules", &rules];
    let flags = ["--hostname-override=node-1", "--cluster-cidr=10.244.0.0/16"];
    let args: Vec<String> = args.iter().chain(&flags).map(|s| s.to_string()).collect();
    let (code, stdout, stderr) = explain(&args);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    assert_eq!((code, codes(&report)), (0, vec![]), "{report}");
    let endpoints = report["ports"][0]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{report}");
    assert!(endpoints.iter().any(|e| e["local"] == true), "the Node and the slices came from the API: {report}");

    // Without objects and without an API server: one error line, exit 2.
    let missing = dir.path().join("nope").display().to_string();
    let args: Vec<String> = ["node", "--kubeconfig", &missing, "--rules", &rules].map(String::from).to_vec();
    let (code, _, stderr) = explain(&args);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("kubenat: error:")).count(), 1, "{stderr}");
}

#[test]
fn ipv6_is_explained_in_its_family() {
    let dir = root().join("fixtures/scenarios/dual-stack");
    let mut args = scenario_args("dual-stack", Some(&dir.join("expected-ipv6.txt")));
    args.extend(["--ip-family", "ipv6", "-o", "json"].map(String::from));
    let mut service = vec!["service".to_string(), "default/web".into()];
    service.extend(args.clone());
    let (code, stdout, stderr) = explain(&service);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!((code, codes(&report)), (0, vec![]), "{report}");
    let address = report["ports"][0]["addresses"][0]["address"].as_str().unwrap();
    assert!(address.starts_with('['), "an IPv6 frontend: {report}");
    // The IPv6-only service has no IPv4 cluster IP: asking in IPv4 is an error naming the flag.
    let mut v4 = vec!["service".to_string(), "default/v6only".into()];
    v4.extend(scenario_args("dual-stack", None));
    let (code, _, stderr) = explain(&v4);
    assert_eq!(code, 2);
    assert!(stderr.contains("has no ipv4 cluster IP (try --ip-family)"), "{stderr}");
}
