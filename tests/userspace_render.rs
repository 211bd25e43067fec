//! `kubenat render --proxy-mode userspace`: golden scenarios under `fixtures/userspace/<name>/`
//! (`manifests.yaml` + `args` → `expected.txt` and `expected-ipv6.txt`, byte for byte; regenerate
//! with `KUBENAT_BLESS=1 cargo test --test userspace_render` and review the diff), flag
//! validation, and a real-kernel check that the output (with `--jumps`) loads with
//! `iptables-nft-restore --noflush` and `iptables-legacy-restore --noflush`, reads back with the
//! same rules, and puts the jumps where upstream did (PORTALS first, NODEPORT last).
//! The kernel test needs root (skips otherwise, fails under CI=true).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use testkit::netns::NetNs;

const SCENARIOS: &[&str] = &["basic"];
const ROOT: &str = "fixtures/userspace";
const BACKENDS: [&str; 2] = ["nft", "legacy"];

fn scenario_args(dir: &Path, ipv6: bool) -> Vec<String> {
    let mut args = vec![
        "render".to_string(),
        "--objects".into(),
        dir.join("manifests.yaml").display().to_string(),
        "fixtures/scenarios/common-node.yaml".into(),
    ];
    let extra = std::fs::read_to_string(dir.join("args")).expect("scenario args file");
    args.extend(extra.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    if ipv6 {
        args.push("--ip-family=ipv6".into());
    }
    args
}

fn kubenat(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubenat")).args(args).output().expect("run kubenat")
}

fn render(args: &[String]) -> String {
    let out = kubenat(args);
    assert!(out.status.success(), "kubenat {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn check(dir: &Path, expected_name: &str, ipv6: bool) {
    let actual = render(&scenario_args(dir, ipv6));
    testkit::golden::assert_golden(&dir.join(expected_name), &actual);
}

#[test]
fn golden_userspace_scenarios() {
    for name in SCENARIOS {
        let dir = Path::new(ROOT).join(name);
        check(&dir, "expected.txt", false);
        check(&dir, "expected-ipv6.txt", true);
    }
}

#[test]
fn every_userspace_scenario_is_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(ROOT)
        .expect(ROOT)
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, SCENARIOS);
}

fn basic_with(extra: &[&str]) -> Vec<String> {
    let mut args = scenario_args(&Path::new(ROOT).join("basic"), false);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn flags_shape_the_port_plan_and_targets() {
    let text = render(&basic_with(&["--proxy-port-start=40000", "--bind-address=192.168.1.10"]));
    assert!(text.contains("--dport 443 -j DNAT --to-destination 192.168.1.10:40000"), "{text}");
    assert!(!text.contains("REDIRECT"), "a specific bind address never REDIRECTs:\n{text}");
    for bad in [&["--bind-address=127.0.0.1"][..], &["--bind-address=fd00::1"], &["--proxy-port-start=65534"]] {
        let out = kubenat(&basic_with(bad));
        assert!(!out.status.success(), "{bad:?} should fail");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
    // Without --bind-address the HOST chains need the node IP: no Node object, no --node-ip.
    let mut no_node = basic_with(&[]);
    no_node.retain(|a| a != "fixtures/scenarios/common-node.yaml");
    let out = kubenat(&no_node);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs an ipv4 node IP"), "{out:?}");
    assert!(render(&[no_node, vec!["--node-ip=192.168.1.99".into()]].concat()).contains("192.168.1.99:36000"));
    // The iptables mode stays the default and ignores the userspace flags.
    let mut iptables = basic_with(&[]);
    iptables.retain(|a| a != "--proxy-mode=userspace");
    assert!(render(&iptables).contains(":KUBE-SERVICES - [0:0]"));
}

/// Rendered rule lines with comments quoted as iptables-save quotes them.
fn save_form(line: &str) -> String {
    match line.split_once("--comment ") {
        Some((head, tail)) if !tail.starts_with('"') => {
            let (comment, rest) = tail.split_once(' ').unwrap_or((tail, ""));
            format!("{head}--comment \"{comment}\" {rest}").trim_end().to_string()
        }
        _ => line.to_string(),
    }
}

fn chain_of(line: &str) -> Option<&str> {
    line.strip_prefix("-A ").and_then(|l| l.split(' ').next())
}

/// The rules of our (`KUBE-…`) chains, grouped by chain, in order within each chain.
fn by_chain(lines: impl Iterator<Item = String>) -> BTreeMap<String, Vec<String>> {
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in lines {
        if let Some(chain) = chain_of(&line).filter(|c| c.starts_with("KUBE-")) {
            chains.entry(chain.to_string()).or_default().push(line);
        }
    }
    chains
}

#[test]
fn kernel_loads_userspace_rules_with_both_backends() {
    if !testkit::require_root() {
        return;
    }
    for backend in BACKENDS {
        for (ipv6, tool) in [(false, "iptables"), (true, "ip6tables")] {
            let restore = format!("{tool}-{backend}-restore");
            if !testkit::require_program(&restore) {
                continue;
            }
            let text = render(&scenario_args(&Path::new(ROOT).join("basic"), ipv6));
            let ns = NetNs::new("usp");
            // A pre-existing rule in PREROUTING: the PORTALS jump must land before it, the
            // NODEPORT jump after it.
            ns.run_ok(&[&format!("{tool}-{backend}"), "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "1"]);
            let input = std::env::temp_dir().join(format!("knt-usp-{}-{backend}-{tool}.txt", std::process::id()));
            std::fs::write(&input, &text).expect("write restore input");
            let load = format!("{restore} --noflush < {}", input.display());
            let out = ns.exec(&["sh", "-c", &load]);
            let _ = std::fs::remove_file(&input);
            assert!(out.status.success(), "{restore}: {}\n{text}", String::from_utf8_lossy(&out.stderr));

            let saved = ns.run_ok(&[&format!("{tool}-{backend}-save")]);
            let saved_rules: Vec<&str> = saved.lines().filter(|l| l.starts_with("-A ")).collect();
            // iptables-save groups rules by chain; within a chain the order must be ours.
            let ours = by_chain(text.lines().map(save_form));
            let theirs = by_chain(saved_rules.iter().map(|l| l.to_string()));
            assert_eq!(ours, theirs, "{backend} {tool}: kernel read-back differs from the render");

            let prerouting: Vec<&str> =
                saved_rules.iter().copied().filter(|l| chain_of(l) == Some("PREROUTING")).collect();
            assert_eq!(prerouting.len(), 3, "{backend} {tool}: {prerouting:?}");
            assert!(prerouting[0].ends_with("-j KUBE-PORTALS-CONTAINER"), "{backend} {tool}: {prerouting:?}");
            assert!(prerouting[1].contains("--dport 1"), "{backend} {tool}: {prerouting:?}");
            assert!(prerouting[2].ends_with("-j KUBE-NODEPORT-CONTAINER"), "{backend} {tool}: {prerouting:?}");
            let input_chain: Vec<&str> = saved_rules.iter().copied().filter(|l| chain_of(l) == Some("INPUT")).collect();
            assert_eq!(input_chain.len(), 1, "{backend} {tool}: {input_chain:?}");
            assert!(input_chain[0].ends_with("-j KUBE-NODEPORT-NON-LOCAL"));
        }
    }
}
