//! The API server unreachable (every connection closed, like a partition) while changes are
//! made, then back with its history compacted: the daemon keeps forwarding with its last rules,
//! its resumed watches get 410 and relist, and every change made during the outage lands.
//! `KUBENAT_SOAK_OUTAGE_SECS` sets the outage (default 8 s; the soak script uses 60 s).

use std::time::{Duration, Instant};

use kubenat::apply::exec::Backend;

use crate::env::{probed_ip, web_targets, Env};
use testkit::daemon::DaemonOptions;
use testkit::objects::{self, EpState};
use testkit::probe::ProbeConfig;

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

#[test]
fn api_unreachable_then_compacted_keeps_forwarding_and_applies_changes_after() {
    let outage = Duration::from_secs(crate::knob("KUBENAT_SOAK_OUTAGE_SECS", 8));
    let Some(mut env) = Env::new(Backend::Nft, DaemonOptions::new("nft")) else { return };
    env.start_daemon();
    let services = env.apply_probed(2);
    let gone_ip = probed_ip(7);
    env.api.apply(objects::service("gone", gone_ip, &objects::web_ports()));
    env.api.apply(objects::slice(
        "gone",
        &objects::on_this_node(&[(env.backend_ip(0), EpState::Ready)]),
        &objects::web_ports(),
    ));
    let named: Vec<(&str, _)> = services.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
    let targets = web_targets(&named);
    env.until_all_answer(&targets);
    let probe = env.probe(targets, ProbeConfig::default());
    let lists =
        |env: &Env| env.api.request_log().iter().filter(|r| r.is_list_of(SERVICES) || r.is_list_of(SLICES)).count();
    let lists_before = lists(&env);

    // Outage; changes meanwhile: p1 loses pod-2, `late` appears, `gone` goes.
    env.api.set_unreachable(true);
    let started = Instant::now();
    let p1: Vec<_> = [0, 1].iter().map(|&i| (env.backend_ip(i), EpState::Ready)).collect();
    env.api.apply(objects::slice("p1", &objects::on_this_node(&p1), &objects::web_ports()));
    let late_ip = probed_ip(8);
    env.api.apply(objects::service("late", late_ip, &objects::web_ports()));
    env.api.apply(objects::slice(
        "late",
        &objects::on_this_node(&[(env.backend_ip(2), EpState::Ready)]),
        &objects::web_ports(),
    ));
    env.api.delete("Service", "default", "gone");
    env.api.delete("EndpointSlice", "default", &objects::slice_name("gone"));
    env.api.compact();
    let mut checks = 0;
    while started.elapsed() < outage {
        if let Some(status) = env.daemon_mut().exited() {
            env.fail(&format!("the daemon exited during the API outage: {status}"));
        }
        if env.daemon().healthz() != Some(200) {
            env.fail("/healthz was not 200 during the API outage (nothing was pending)");
        }
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    if env.save().contains(&late_ip.to_string()) {
        env.fail("a change made during the outage reached the kernel during the outage");
    }
    let refused = env.api.refused_connections();
    let seen_before_recovery = env.api.request_log().len();
    env.api.set_unreachable(false);
    let back = Instant::now();
    // The watchers retry with backoff (0.8 s doubling to 30 s, plus up to as much jitter, as
    // client-go does), so after a long outage the first reconnect can take up to a minute.
    let converged = env.assert_converged(Duration::from_secs(75));
    let landed = back.elapsed().max(converged);
    probe.wait_for_more(20, Duration::from_secs(5));
    let report = probe.stop();
    let relists = lists(&env) - lists_before;
    // The first watch after the outage gets 410 (history compacted): the relist must follow at
    // once, not after the backoff the outage built up (up to 30 s).
    let after = env.api.request_log().split_off(seen_before_recovery);
    let mut relist_delays = Vec::new();
    for path in [SERVICES, SLICES] {
        let watch = after.iter().find(|r| r.is_watch_of(path));
        let list = watch.and_then(|w| after.iter().find(|r| r.is_list_of(path) && r.at >= w.at));
        match (watch, list) {
            (Some(w), Some(l)) => relist_delays.push((path, l.at.duration_since(w.at))),
            _ => env.fail(&format!("no watch followed by a relist of {path} after the outage")),
        }
    }
    eprintln!(
        "[api outage] {} s unreachable ({refused} connections refused, {checks} health checks all 200); changes \
         made meanwhile landed {} ms after it came back, through {relists} relists; probe: {}",
        outage.as_secs(),
        landed.as_millis(),
        report.summary()
    );
    eprintln!("[api outage] 410 → relist delays: {relist_delays:?}");
    if let Some((path, delay)) = relist_delays.iter().find(|(_, d)| *d > Duration::from_secs(2)) {
        env.fail(&format!("{path}: the relist came {delay:?} after the 410, not at once"));
    }
    if refused == 0 {
        env.fail("the daemon never tried to reach the API server during the outage");
    }
    if relists == 0 {
        env.fail("the changes converged without a relist after the compaction");
    }
    let failures = report.failures();
    if !failures.is_empty() {
        env.fail(&format!("probe failures during the API outage:\n{}", report.describe(&failures)));
    }
}
