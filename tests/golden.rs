//! Golden scenarios: `fixtures/scenarios/<name>/manifests.yaml` rendered with the flags in
//! `args` must equal `expected.txt` (and `expected-ipv6.txt` where present) byte for byte.
//! Regenerate deliberately with `KUBENAT_BLESS=1 cargo test --test golden` and review the diff.

use std::path::Path;
use std::process::Command;

const SCENARIOS: &[&str] = &[
    "clusterip-multi-endpoint",
    "multi-port",
    "no-endpoints",
    "nodeport",
    "external-ips",
    "loadbalancer-source-ranges",
    "session-affinity",
    "etp-local",
    "etp-local-no-local-endpoints",
    "itp-local",
    "terminating-fallback",
    "zone-hints",
    "prefer-same-node",
    "dual-stack",
    "masquerade-all",
    "flannel-subnet-env",
    "tree-dispatch",
];

/// The `kubenat render` arguments of a scenario (shared with the kernel tests).
pub fn scenario_args(dir: &Path, ipv6: bool) -> Vec<String> {
    let mut args = vec![
        "render".to_string(),
        "--objects".into(),
        dir.join("manifests.yaml").display().to_string(),
        "fixtures/scenarios/common-node.yaml".into(),
    ];
    let extra = std::fs::read_to_string(dir.join("args")).expect("scenario args file");
    args.extend(extra.lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()));
    if ipv6 {
        args.push("--ip-family=ipv6".into());
    }
    args
}

fn render(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubenat")).args(args).output().expect("run kubenat");
    assert!(out.status.success(), "kubenat {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn check(dir: &Path, expected_name: &str, ipv6: bool) {
    let actual = render(&scenario_args(dir, ipv6));
    testkit::golden::assert_golden(&dir.join(expected_name), &actual);
}

#[test]
fn golden_scenarios() {
    for name in SCENARIOS {
        let dir = Path::new("fixtures/scenarios").join(name);
        check(&dir, "expected.txt", false);
        if dir.join("expected-ipv6.txt").exists() || (name == &"dual-stack") {
            check(&dir, "expected-ipv6.txt", true);
        }
    }
}

#[test]
fn every_scenario_directory_is_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir("fixtures/scenarios")
        .expect("fixtures/scenarios")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}
