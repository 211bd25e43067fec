//! The invariants each fuzz target checks, shared with the main crate's replay test
//! (`tests/security_fuzz_replay.rs`), which runs the committed corpus and every saved crash
//! input through them. Each function panics when an invariant breaks.
#![allow(dead_code)] // each fuzz target uses one of these

use std::path::Path;

use kubenat::flannel::subnet_env;
use kubenat::inspect::diff::{diff, DiffOptions, Side};
use kubenat::k8s::convert::{cluster_state, EndpointsSource};
use kubenat::k8s::manifests::load_str;
use kubenat::model::{IpFamily, LocalDetector, NodeConfig};
use kubenat::{inspect::check, rules::parse, rules::render};

/// The iptables-save / restore parser never panics, and whatever it accepts writes back as
/// text that parses to the same text again.
pub fn iptables_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ruleset) = parse::parse(text) else {
        return;
    };
    let _ = check::check(&ruleset);
    let written = ruleset.to_string();
    let again = parse::parse(&written).unwrap_or_else(|e| panic!("written ruleset does not parse: {e}\n{written}"));
    assert_eq!(again.to_string(), written, "write/parse is not stable");
}

/// flannel's subnet.env parser never panics; a parsed file names a network and every subnet
/// has its host bits cleared.
pub fn subnet_env(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = subnet_env::parse(text) {
        assert!(!env.networks.is_empty(), "a parsed file always names a network");
        for subnet in &env.subnets {
            assert_eq!(*subnet, subnet.trunc(), "host bits left in {subnet}");
        }
    }
}

/// Two dumps split at the first NUL: when both parse, diffing never panics, a dump compared
/// with itself has no rule or chain on one side only and no moved rule, and the report prints.
/// (A self-diff may still list chain problems, such as a misplaced "must be last" rule: the
/// diff reports those for each side, by design.)
pub fn dump_diff(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\0').unwrap_or((text, ""));
    let (Ok(a), Ok(b)) = (parse::parse(a), parse::parse(b)) else {
        return;
    };
    for kube_only in [false, true] {
        let opts = DiffOptions { kube_only };
        let same = diff(&a, &a, &opts);
        for side in [Side::A, Side::B] {
            assert_eq!(same.rules_only_in(side), 0, "a dump differs from itself:\n{same}");
            assert_eq!(same.chains_only_in(side), 0, "a dump differs from itself:\n{same}");
        }
        assert_eq!(same.moved(), 0, "a dump differs from itself:\n{same}");
        let _ = diff(&a, &b, &opts).to_string();
    }
}

fn node(family: IpFamily) -> NodeConfig {
    let (ip, cidr) = match family {
        IpFamily::V4 => ("192.0.2.10", "10.244.0.0/16"),
        IpFamily::V6 => ("2001:db8::10", "fd00:10:244::/56"),
    };
    NodeConfig {
        family,
        node_name: "node-1".into(),
        zone: Some("zone-a".into()),
        node_ips: vec![ip.parse().expect("ip")],
        local_detector: LocalDetector::Cidr(cidr.parse().expect("cidr")),
        ..NodeConfig::default()
    }
}

/// The manifest loader from bytes, through conversion and rendering: nothing panics, every
/// problem is one line, and the restore text rendered from the objects parses back to exactly
/// the rules the renderer produced (user data can never add a line or a rule).
pub fn manifests(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = load_str(text, Path::new("fuzz.yaml"));
    let converted = cluster_state(&loaded.objects, EndpointsSource::Auto);
    for problem in loaded.problems.iter().chain(&converted.problems) {
        let line = problem.to_string();
        assert!(!line.contains('\n'), "a problem spans lines: {line:?}");
    }
    for family in [IpFamily::V4, IpFamily::V6] {
        let ruleset = render::render(&converted.state, &node(family));
        assert!(check::check(&ruleset).is_empty(), "rendered ruleset is inconsistent");
        let written = ruleset.to_string();
        let parsed = parse::parse(&written).unwrap_or_else(|e| panic!("rendered text does not parse: {e}\n{written}"));
        assert_eq!(parsed, ruleset, "rendered text does not read back as the rendered rules");
        let lines: usize =
            ruleset.tables.iter().map(|t| 2 + t.chains.len() + t.rules.len() + 2 * t.deletes.len()).sum();
        assert_eq!(written.lines().count(), lines, "a line appeared or vanished");
    }
}
