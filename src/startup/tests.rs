use std::io;
use std::sync::{Arc, Mutex};

use super::*;

const ON: SysctlValue = SysctlValue::Set(1);
const OFF: SysctlValue = SysctlValue::Set(0);

/// A node where everything is as it should be, flannel's rules in nft.
fn healthy() -> Facts {
    Facts {
        bridge_nf_call_iptables: ON,
        bridge_nf_call_ip6tables: ON,
        ip_forward: ON,
        ipv6_forwarding: ON,
        route_localnet: ON,
        nf_conntrack_tcp_be_liberal: OFF,
        flannel_rules: FlannelRules { legacy: Some(0), nft: Some(8) },
    }
}

fn cfg() -> CheckConfig {
    CheckConfig { localhost_nodeports: true, ipv6: false, backend: Some(Backend::Nft) }
}

fn check(facts: &Facts, cfg: &CheckConfig, name: &str) -> CheckResult {
    let results = evaluate(facts, cfg);
    results.into_iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no {name} result"))
}

#[test]
fn a_healthy_node_passes_every_check_in_order() {
    let results = evaluate(&healthy(), &cfg());
    let names: Vec<&str> = results.iter().map(|r| r.name).collect();
    assert_eq!(names, [BR_NETFILTER, IP_FORWARD, ROUTE_LOCALNET, IPTABLES_BACKEND]);
    assert!(results.iter().all(|r| r.ok), "{results:#?}");
}

#[test]
fn dry_run_has_no_backend_check() {
    let results = evaluate(&healthy(), &CheckConfig { backend: None, ..cfg() });
    assert!(results.iter().all(|r| r.name != IPTABLES_BACKEND));
}

#[test]
fn sysctl_table() {
    let missing = SysctlValue::Missing;
    let unreadable = SysctlValue::Unreadable("permission denied".into());
    // (field to change, its value, config, check, ok, words the message must contain)
    type Case = (fn(&mut Facts, SysctlValue), SysctlValue, CheckConfig, &'static str, bool, &'static [&'static str]);
    let v6 = CheckConfig { ipv6: true, ..cfg() };
    let no_localhost = CheckConfig { localhost_nodeports: false, ..cfg() };
    let cases: Vec<Case> = vec![
        (
            |f, v| f.bridge_nf_call_iptables = v,
            OFF,
            cfg(),
            BR_NETFILTER,
            false,
            &[
                "net.bridge.bridge-nf-call-iptables is 0",
                "pod → Service → pod on the same node will time out",
                "Fix: sysctl -w net.bridge.bridge-nf-call-iptables=1",
            ],
        ),
        (
            |f, v| f.bridge_nf_call_iptables = v,
            missing.clone(),
            cfg(),
            BR_NETFILTER,
            false,
            &[
                "br_netfilter is not loaded",
                "/proc/sys/net/bridge/bridge-nf-call-iptables is missing",
                "Fix: modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1",
            ],
        ),
        (
            |f, v| f.bridge_nf_call_iptables = v,
            unreadable.clone(),
            cfg(),
            BR_NETFILTER,
            false,
            &["cannot read net.bridge.bridge-nf-call-iptables (permission denied)"],
        ),
        (|f, v| f.bridge_nf_call_ip6tables = v, OFF, cfg(), BR_NETFILTER, true, &["br_netfilter is loaded"]),
        (
            |f, v| f.bridge_nf_call_ip6tables = v,
            OFF,
            v6,
            BR_NETFILTER,
            false,
            &["net.bridge.bridge-nf-call-ip6tables is 0"],
        ),
        (
            |f, v| f.ip_forward = v,
            OFF,
            cfg(),
            IP_FORWARD,
            false,
            &["net.ipv4.ip_forward is 0", "Fix: sysctl -w net.ipv4.ip_forward=1"],
        ),
        (|f, v| f.ip_forward = v, SysctlValue::Set(2), cfg(), IP_FORWARD, false, &["net.ipv4.ip_forward is 2"]),
        (|f, v| f.ipv6_forwarding = v, OFF, cfg(), IP_FORWARD, true, &["IP forwarding is on"]),
        (
            |f, v| f.ipv6_forwarding = v,
            missing.clone(),
            v6,
            IP_FORWARD,
            false,
            &["net.ipv6.conf.all.forwarding does not exist"],
        ),
        (
            |f, v| f.route_localnet = v,
            OFF,
            cfg(),
            ROUTE_LOCALNET,
            false,
            &[
                "net.ipv4.conf.all.route_localnet is 0",
                "127.0.0.1:<nodePort> will fail",
                "kubenat sets it at start",
                "--iptables-localhost-nodeports=false",
            ],
        ),
        (|f, v| f.route_localnet = v, OFF, no_localhost, ROUTE_LOCALNET, true, &["not needed"]),
        (|f, v| f.route_localnet = v, unreadable, no_localhost, ROUTE_LOCALNET, true, &["not needed"]),
    ];
    for (i, (change, value, cfg, name, ok, words)) in cases.into_iter().enumerate() {
        let mut facts = healthy();
        change(&mut facts, value);
        let result = check(&facts, &cfg, name);
        assert_eq!(result.ok, ok, "case {i}: {result:?}");
        for word in words {
            assert!(result.message.contains(word), "case {i}: {word:?} not in {:?}", result.message);
        }
        // Only the check under test is affected.
        let others = evaluate(&facts, &cfg).into_iter().filter(|r| r.name != name && !r.ok).count();
        assert_eq!(others, 0, "case {i}");
    }
}

#[test]
fn both_ipv4_and_ipv6_problems_are_in_one_line() {
    let facts = Facts { ip_forward: OFF, ipv6_forwarding: OFF, ..healthy() };
    let result = check(&facts, &CheckConfig { ipv6: true, ..cfg() }, IP_FORWARD);
    assert!(!result.ok);
    assert!(
        result.message.contains("net.ipv4.ip_forward is 0")
            && result.message.contains("net.ipv6.conf.all.forwarding is 0")
    );
    assert!(!result.message.contains('\n'));
}

#[test]
fn backend_table() {
    let rules = |legacy, nft| FlannelRules { legacy, nft };
    // (flannel's lines, kubenat's backend, ok, words)
    let cases: &[(FlannelRules, Backend, bool, &[&str])] = &[
        (
            rules(Some(8), Some(0)),
            Backend::Nft,
            false,
            &[
                "flannel's rules are in iptables-legacy but kubenat writes iptables-nft",
                "traffic may bypass one set of rules; start with --iptables-backend legacy",
            ],
        ),
        (rules(Some(0), Some(8)), Backend::Legacy, false, &["start with --iptables-backend nft"]),
        (rules(None, Some(8)), Backend::Legacy, false, &["in iptables-nft but kubenat writes iptables-legacy"]),
        (rules(Some(8), Some(0)), Backend::Legacy, true, &["where kubenat writes"]),
        (rules(Some(0), Some(8)), Backend::Nft, true, &["where kubenat writes"]),
        (rules(Some(3), Some(8)), Backend::Nft, false, &["both iptables-legacy (3 lines) and iptables-nft (8 lines)"]),
        (rules(Some(0), Some(0)), Backend::Nft, true, &["nothing to compare"]),
        (rules(None, Some(0)), Backend::Nft, true, &["iptables-legacy-save not available"]),
        (rules(None, None), Backend::Default, true, &["iptables-legacy-save and iptables-nft-save not available"]),
        (rules(Some(8), None), Backend::Default, true, &["not compared"]),
    ];
    for (i, (flannel_rules, backend, ok, words)) in cases.iter().enumerate() {
        let facts = Facts { flannel_rules: *flannel_rules, ..healthy() };
        let result = check(&facts, &CheckConfig { backend: Some(*backend), ..cfg() }, IPTABLES_BACKEND);
        assert_eq!(result.ok, *ok, "case {i}: {result:?}");
        for word in *words {
            assert!(result.message.contains(word), "case {i}: {word:?} not in {:?}", result.message);
        }
    }
}

/// Collects everything a fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn report_warns_once_per_failing_check_and_sets_every_metric() {
    let facts = Facts { ip_forward: OFF, flannel_rules: FlannelRules { legacy: Some(8), nft: Some(0) }, ..healthy() };
    let results = evaluate(&facts, &cfg());
    let (metrics, registry) = Metrics::new();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || report(&results, &metrics));

    let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 2, "{log}");
    assert!(warnings[0].contains("check=\"ip_forward\"") && warnings[0].contains("net.ipv4.ip_forward is 0"), "{log}");
    assert!(warnings[1].contains("check=\"iptables_backend\""), "{log}");
    assert!(log.contains("startup checks done") && log.contains("failed=2"), "{log}");

    let scraped = crate::metrics::encode(&registry);
    for (check, failed) in [("br_netfilter", 0), ("ip_forward", 1), ("route_localnet", 0), ("iptables_backend", 1)] {
        let series = format!("kubenat_startup_checks_failed{{check=\"{check}\"}} {failed}");
        assert!(scraped.contains(&series), "{series} not in\n{scraped}");
    }
}
