use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::startup::SysctlValue::{Missing, Set};

/// kube-proxy's defaults: 32768 per CPU, at least 131072, 24h established, 1h close-wait, the
/// rest left alone; localhost NodePorts on.
fn defaults() -> TuningConfig {
    TuningConfig {
        max_per_core: 32_768,
        min: 131_072,
        tcp_established_timeout: Duration::from_secs(86_400),
        tcp_close_wait_timeout: Duration::from_secs(3_600),
        route_localnet: true,
        ..TuningConfig::default()
    }
}

fn knobs(targets: &[(Knob, i64)]) -> Vec<Knob> {
    targets.iter().map(|(k, _)| *k).collect()
}

fn writes(steps: &[Step]) -> Vec<(Knob, i64)> {
    steps.iter().filter(|s| s.needs_write()).map(|s| (s.knob, s.want)).collect()
}

#[test]
fn conntrack_max_scales_per_cpu_with_a_floor_and_a_cap() {
    assert_eq!(conntrack_max(32_768, 131_072, 2), Some(131_072), "2 × 32768 is below min");
    assert_eq!(conntrack_max(32_768, 131_072, 4), Some(131_072), "equal to min");
    assert_eq!(conntrack_max(32_768, 131_072, 8), Some(262_144), "per CPU above min");
    assert_eq!(conntrack_max(32_768, 131_072, 32), Some(1_048_576), "exactly the cap");
    assert_eq!(conntrack_max(32_768, 131_072, 64), Some(CONNTRACK_MAX_CAP), "capped at 2^20");
    assert_eq!(conntrack_max(32_768, 4_000_000, 2), Some(4_000_000), "min itself is not capped");
    assert_eq!(conntrack_max(32_768, 4_000_000, 64), Some(CONNTRACK_MAX_CAP), "the cap wins over min");
    assert_eq!(conntrack_max(0, 131_072, 8), None, "maxPerCore 0: leave it alone, min ignored");
    assert_eq!(conntrack_max(1, 0, 0), None, "nothing to set");
}

#[test]
fn defaults_set_the_table_size_the_tcp_timeouts_and_route_localnet() {
    let targets = targets(&defaults(), 2);
    assert_eq!(
        targets,
        [
            (Knob::ConntrackMax, 131_072),
            (Knob::ConntrackHashsize, 32_768),
            (Knob::TcpTimeoutEstablished, 86_400),
            (Knob::TcpTimeoutCloseWait, 3_600),
            (Knob::RouteLocalnet, 1),
        ]
    );
}

#[test]
fn zero_leaves_a_value_alone_and_set_fields_add_steps() {
    let none = TuningConfig { max_per_core: 0, min: 131_072, ..TuningConfig::default() };
    assert_eq!(targets(&none, 8), [], "all zero: nothing");
    let some = TuningConfig {
        tcp_established_timeout: Duration::ZERO,
        tcp_be_liberal: true,
        udp_timeout: Duration::from_secs(30),
        udp_stream_timeout: Duration::from_millis(120_900),
        route_localnet: false,
        ..defaults()
    };
    assert_eq!(
        targets(&some, 8),
        [
            (Knob::ConntrackMax, 262_144),
            (Knob::ConntrackHashsize, 65_536),
            (Knob::TcpTimeoutCloseWait, 3_600),
            (Knob::TcpBeLiberal, 1),
            (Knob::UdpTimeout, 30),
            (Knob::UdpTimeoutStream, 120),
        ],
        "whole seconds, truncated"
    );
    assert_eq!(knobs(&targets(&TuningConfig { max_per_core: 0, ..some }, 8))[0], Knob::TcpTimeoutCloseWait);
}

#[test]
fn plan_writes_only_what_differs_and_never_lowers_the_global_two() {
    let current = BTreeMap::from([
        (Knob::ConntrackMax, 262_144),
        (Knob::ConntrackHashsize, 65_536),
        (Knob::TcpTimeoutEstablished, 86_400),
        (Knob::TcpTimeoutCloseWait, 60),
        (Knob::RouteLocalnet, 0),
    ]);
    let read = |knob| current.get(&knob).copied().map_or(Missing, Set);
    let steps = plan(&defaults(), 2, read);
    assert_eq!(steps.len(), 5);
    assert_eq!(
        writes(&steps),
        [(Knob::TcpTimeoutCloseWait, 3_600), (Knob::RouteLocalnet, 1)],
        "max and hashsize are already higher; established already 24h"
    );
    let lower = |knob| match knob {
        Knob::ConntrackMax => Set(65_536),
        Knob::ConntrackHashsize => Set(16_384),
        _ => Missing,
    };
    let steps = plan(&TuningConfig { route_localnet: false, ..defaults() }, 2, lower);
    assert_eq!(
        writes(&steps),
        [
            (Knob::ConntrackMax, 131_072),
            (Knob::ConntrackHashsize, 32_768),
            (Knob::TcpTimeoutEstablished, 86_400),
            (Knob::TcpTimeoutCloseWait, 3_600),
        ],
        "lower global values are raised; missing ones are attempted"
    );
}

#[test]
fn tune_writes_through_the_fake_and_a_second_run_changes_nothing() {
    let fake = FakeSysctls::new(&[
        (Knob::ConntrackMax, 65_536),
        (Knob::ConntrackHashsize, 16_384),
        (Knob::TcpTimeoutEstablished, 432_000),
        (Knob::TcpTimeoutCloseWait, 60),
        (Knob::RouteLocalnet, 0),
    ]);
    let results = tune(&defaults(), 2, &fake, false);
    assert!(results.iter().all(|r| r.outcome == Outcome::Written), "{results:#?}");
    assert_eq!(fake.value(Knob::ConntrackMax), Some(131_072));
    assert_eq!(fake.value(Knob::ConntrackHashsize), Some(32_768));
    assert_eq!(fake.value(Knob::TcpTimeoutEstablished), Some(86_400));
    assert_eq!(fake.value(Knob::TcpTimeoutCloseWait), Some(3_600));
    assert_eq!(fake.value(Knob::RouteLocalnet), Some(1));
    let again = tune(&defaults(), 2, &fake, false);
    assert!(again.iter().all(|r| r.outcome == Outcome::Unchanged), "{again:#?}");
    assert_eq!(fake.writes().len(), 5, "nothing written the second time");
}

#[test]
fn dry_run_writes_nothing() {
    let fake = FakeSysctls::new(&[(Knob::TcpTimeoutEstablished, 432_000)]);
    let cfg = TuningConfig { max_per_core: 0, ..defaults() };
    let results = tune(&cfg, 2, &fake, true);
    assert_eq!(results[0].outcome, Outcome::WouldWrite);
    assert!(fake.writes().is_empty());
    assert_eq!(fake.value(Knob::TcpTimeoutEstablished), Some(432_000));
}

#[test]
fn a_failed_write_is_one_message_naming_the_value_and_the_fix_and_the_rest_go_on() {
    // Outside the host's network namespace: nf_conntrack_max is read-only; udp_timeout missing
    // (nf_conntrack not loaded).
    let fake = FakeSysctls::new(&[
        (Knob::ConntrackMax, 65_536),
        (Knob::ConntrackHashsize, 65_536),
        (Knob::TcpTimeoutEstablished, 432_000),
        (Knob::TcpTimeoutCloseWait, 60),
    ])
    .read_only(&[Knob::ConntrackMax]);
    let cfg = TuningConfig { udp_timeout: Duration::from_secs(30), route_localnet: false, ..defaults() };
    let results = tune(&cfg, 2, &fake, false);
    let outcome = |knob| &results.iter().find(|r| r.step.knob == knob).expect("step").outcome;
    let Outcome::Failed(max) = outcome(Knob::ConntrackMax) else { panic!("{results:#?}") };
    for words in ["net.netfilter.nf_conntrack_max to 131072", "it is 65536", "global", "Fix: ", "maxPerCore: 0"] {
        assert!(max.contains(words), "{words:?} in {max}");
    }
    assert_eq!(*outcome(Knob::ConntrackHashsize), Outcome::Unchanged, "65536 ≥ 131072 / 4");
    assert_eq!(*outcome(Knob::TcpTimeoutEstablished), Outcome::Written, "later steps still run");
    let Outcome::Failed(udp) = outcome(Knob::UdpTimeout) else { panic!("{results:#?}") };
    assert!(udp.contains("modprobe nf_conntrack") && udp.contains("udpTimeout: 0s"), "{udp}");
}

#[test]
fn report_current_counts_what_does_not_hold() {
    let (metrics, registry) = Metrics::new();
    let fake = FakeSysctls::new(&[
        (Knob::ConntrackMax, 262_144),
        (Knob::ConntrackHashsize, 65_536),
        (Knob::TcpTimeoutEstablished, 86_400),
        (Knob::TcpTimeoutCloseWait, 60),
        (Knob::RouteLocalnet, 1),
    ]);
    assert_eq!(report_current(&defaults(), 2, &fake, &metrics), 1);
    assert!(fake.writes().is_empty(), "only reads");
    let text = crate::metrics::encode(&registry);
    assert!(text.contains(r#"kubenat_startup_checks_failed{check="nf_conntrack_tcp_timeout_close_wait"} 1"#), "{text}");
    assert!(text.contains(r#"kubenat_startup_checks_failed{check="nf_conntrack_max"} 0"#), "{text}");
    assert!(text.contains(r#"kubenat_startup_checks_failed{check="route_localnet"} 0"#), "{text}");
}

#[test]
fn names_and_paths() {
    assert_eq!(Knob::ConntrackMax.path(), "proc/sys/net/netfilter/nf_conntrack_max");
    assert_eq!(Knob::ConntrackHashsize.path(), "sys/module/nf_conntrack/parameters/hashsize");
    assert_eq!(Knob::UdpTimeoutStream.path(), "proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream");
    assert_eq!(Knob::RouteLocalnet.path(), "proc/sys/net/ipv4/conf/all/route_localnet");
    let steps: std::collections::BTreeSet<&str> = Knob::ALL.iter().map(|k| k.step()).collect();
    assert_eq!(steps.len(), Knob::ALL.len(), "one label per step");
}
