//! The manifest loader from bytes, through conversion and rendering: nothing panics, and
//! whatever the objects hold, the restore text rendered from them parses back to exactly the
//! rules and chains the renderer produced (user data can never add a line or a rule).
#![no_main]

use std::path::Path;

use kubenat::iptables::{check, parse, render};
use kubenat::k8s::convert::{cluster_state, EndpointsSource};
use kubenat::k8s::manifests::load_str;
use kubenat::model::{IpFamily, LocalDetector, NodeConfig};
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = load_str(text, Path::new("fuzz.yaml"));
    let converted = cluster_state(&loaded.objects, EndpointsSource::Auto);
    for problem in loaded.problems.iter().chain(&converted.problems) {
        let _ = problem.to_string();
    }
    for family in [IpFamily::V4, IpFamily::V6] {
        let ruleset = render::render(&converted.state, &node(family));
        assert!(check::check(&ruleset).is_empty(), "rendered ruleset is inconsistent");
        let written = ruleset.to_string();
        let parsed = parse::parse(&written).unwrap_or_else(|e| panic!("rendered text does not parse: {e}\n{written}"));
        assert_eq!(parsed.to_string(), written, "rendered text does not read back");
        let rules: usize = parsed.tables.iter().map(|t| t.rules.len()).sum();
        assert_eq!(rules, ruleset.rule_count(), "a rule appeared or vanished");
    }
});
