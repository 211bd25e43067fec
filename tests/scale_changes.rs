//! What one change costs the daemon at scale (ignored by default; `scripts/bench-daemon.sh` runs
//! it in a release build): N ClusterIP services × E endpoints are written to the test API
//! server, the real `kubenat` daemon syncs them into a lab's node namespace (no periodic full
//! sync during the run), and the test reports
//! 1. peak RSS up to the end of the first full sync (VmHWM) and RSS after it;
//! 2. `KUBENAT_SCALE_CHANGES` (100) single-endpoint changes made one at a time (one address of
//!    one EndpointSlice replaced, then a bounded wait until the partial-sync count of
//!    `/metrics` went up): the daemon's own CPU per change (utime + stime of its process, no
//!    children, from `/proc/PID/stat`), the mean partial sync duration over those syncs
//!    (`kubeproxy_sync_partial_proxy_rules_duration_seconds` sum/count delta) and RSS after
//!    them. The CPU the idle daemon spends while being polled is measured first and reported
//!    next to it;
//! 3. the floor at the same table size in the same namespace: one service's SVC chain and its E
//!    SEP chains, taken from `iptables-save`, declared and written again with
//!    `iptables-restore --noflush` of the run's backend (median of `KUBENAT_SCALE_FLOOR_RUNS`,
//!    7), and the partial sync mean ÷ floor;
//! 4. churn: `KUBENAT_SCALE_CHURN_RATE` (100) endpoint changes a second for
//!    `KUBENAT_SCALE_CHURN_SECONDS` (60), each stamping `last-change-trigger-time` with its write
//!    time so `kubeproxy_network_programming_duration_seconds` measures event → kernel: the
//!    daemon's CPU over the period ÷ its length (cores), p50/p99 of that histogram (interpolated
//!    in its buckets) and the bucket bound below which all of them fell, and whether every
//!    change reached the kernel (every final endpoint address in `iptables-save` at the end).
//!
//! Knobs: those of `testkit::scale` (`KUBENAT_SCALE_SERVICES`, `_ENDPOINTS`, `_BACKEND`,
//! `_REPORT`) and the ones above. Every loop is bounded in count and time; the namespaces,
//! the API server and the daemon are removed by their guards, also when the test fails.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kubenat::apply::exec::{Backend, ExecIptables, Iptables, RestoreOptions};
use kubenat::k8s::watch::TRIGGER_TIME_ANNOTATION;
use kubenat::model::IpFamily;
use kubenat::rules::ruleset::TableName;
use serde_json::{json, Value};
use testkit::apiserver::ApiServer;
use testkit::daemon::{Daemon, DaemonOptions, Scrape, PARTIAL_RESTORE_FAILURES, RESTORE_FAILURES};
use testkit::lab::Lab;
use testkit::objects;
use testkit::scale::{self, knob, own_cpu_seconds, rss_mib, service_name, slice, BACKEND_PORT, FIRST_SYNC};

const PARTIAL_SUM: &str = r#"kubeproxy_sync_partial_proxy_rules_duration_seconds_sum{ip_family="IPv4"}"#;
const PARTIAL_COUNT: &str = r#"kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"}"#;
const FULL_COUNT: &str = r#"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"}"#;
const PROGRAMMING: &str = "kubeproxy_network_programming_duration_seconds";
const PROGRAMMING_COUNT: &str = r#"kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}"#;
const IPV4: &str = r#"ip_family="IPv4""#;

/// How long one single change may take to be synced.
const ONE_CHANGE: Duration = Duration::from_secs(120);
/// How often `/metrics` is read while waiting for a sync (each read costs the daemon ≈0.3 ms of
/// CPU; measured in every run and reported).
const POLL: Duration = Duration::from_millis(20);
/// How long the idle daemon is polled to measure what polling and idling cost it.
const CALIBRATION: Duration = Duration::from_secs(3);
/// How long the daemon may take after the churn to program its last changes.
const SETTLE: Duration = Duration::from_secs(300);
/// Extra time the churn loop may run past its period before it stops (a slow API write).
const CHURN_SLACK: Duration = Duration::from_secs(10);

/// The endpoint addresses the test wrote, per service, and the source of fresh ones.
struct Endpoints {
    current: BTreeMap<usize, Vec<Ipv4Addr>>,
    per_service: usize,
    written: u32,
}

impl Endpoints {
    fn new(per_service: usize) -> Endpoints {
        Endpoints { current: BTreeMap::new(), per_service, written: 0 }
    }

    /// Replaces endpoint `index` of `service` with a fresh address (from 10.192.0.0, outside
    /// the synthetic 10.128/10 range; nothing routes it) and returns the slice to write,
    /// stamped with `trigger` as `last-change-trigger-time` when given.
    fn change(&mut self, service: usize, index: usize, trigger: Option<String>) -> Value {
        let addresses = self.current.entry(service).or_insert_with(|| scale::fake_endpoints(service, self.per_service));
        let fresh = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 192, 0, 0)) + self.written);
        self.written += 1;
        let slot = index % addresses.len();
        addresses[slot] = fresh;
        let mut object = slice(&service_name(service), addresses);
        if let Some(time) = trigger {
            object["metadata"]["annotations"] = json!({ TRIGGER_TIME_ANNOTATION: time });
        }
        object
    }

    /// Every address the test last wrote for a service it changed.
    fn all(&self) -> impl Iterator<Item = &Ipv4Addr> {
        self.current.values().flatten()
    }
}

/// Polls `/metrics` every [`POLL`] until `done` holds; returns that scrape and how many scrapes
/// it took. Panics with the daemon's log when it exits or `timeout` passes.
fn wait_until(daemon: &mut Daemon, timeout: Duration, what: &str, done: impl Fn(&Scrape) -> bool) -> (Scrape, u32) {
    let deadline = Instant::now() + timeout;
    let mut scrapes = 0;
    loop {
        if let Some(status) = daemon.exited() {
            panic!("daemon exited ({status}) waiting for {what}; log:\n{}", daemon.log());
        }
        if let Some(scrape) = daemon.metrics_direct() {
            scrapes += 1;
            if done(&scrape) {
                return (scrape, scrapes);
            }
        }
        assert!(Instant::now() < deadline, "no {what} within {timeout:?}; log:\n{}", daemon.log());
        thread::sleep(POLL);
    }
}

/// The floor's restore input: the nat chains of the service on `cluster_ip` (its SVC chain and
/// the SEP chains it jumps to) as `save` shows them, declared and written again; also the
/// number of chains.
fn floor_input(save: &str, cluster_ip: Ipv4Addr) -> (String, usize) {
    let target = |line: &str| line.split_once(" -j ").and_then(|(_, t)| t.split_whitespace().next()).map(String::from);
    let destination = format!(" -d {cluster_ip}/32 ");
    let svc = save
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SERVICES ") && l.contains(&destination))
        .find_map(|l| target(l).filter(|t| t.starts_with("KUBE-SVC-")))
        .unwrap_or_else(|| panic!("no KUBE-SERVICES rule for {cluster_ip} in iptables-save"));
    let rules_of = |chain: &str| {
        let prefix = format!("-A {chain} ");
        save.lines().filter(move |l| l.starts_with(&prefix)).collect::<Vec<_>>()
    };
    let mut chains = vec![svc.clone()];
    chains.extend(rules_of(&svc).into_iter().filter_map(target).filter(|t| t.starts_with("KUBE-SEP-")));
    let mut input = String::from("*nat\n");
    for chain in &chains {
        let _ = writeln!(input, ":{chain} - [0:0]");
    }
    for chain in &chains {
        for rule in rules_of(chain) {
            let _ = writeln!(input, "{rule}");
        }
    }
    input.push_str("COMMIT\n");
    (input, chains.len())
}

/// Seconds of `iptables-restore --noflush` of `input` run from inside `node` (no `ip netns
/// exec` in the timing), the daemon's own flags for the lock included.
fn timed_restore(node: &str, backend: Backend, input: &str) -> f64 {
    testkit::netns::inside(node, || {
        let started = Instant::now();
        ExecIptables::new(backend)
            .restore(IpFamily::V4, input, RestoreOptions { noflush: true, counters: false })
            .unwrap_or_else(|e| panic!("floor restore failed: {e}\n{input}"));
        started.elapsed().as_secs_f64()
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The buckets of `later` minus those of `earlier` (histograms only grow).
fn bucket_delta(later: &Scrape, earlier: &Scrape) -> Vec<(f64, f64)> {
    let before: Vec<(f64, f64)> = earlier.buckets(PROGRAMMING, IPV4);
    later
        .buckets(PROGRAMMING, IPV4)
        .into_iter()
        .map(|(le, count)| {
            let old = before.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
            (le, count - old)
        })
        .collect()
}

#[test]
#[ignore = "scale measurement: run by scripts/bench-daemon.sh (release build, minutes)"]
fn changes_at_scale() {
    if !testkit::require_root() {
        return;
    }
    let (services, endpoints, backend) = (scale::services(), scale::endpoints(), scale::backend());
    let changes = knob("KUBENAT_SCALE_CHANGES", 100).max(1);
    let floor_runs = knob("KUBENAT_SCALE_FLOOR_RUNS", 7).max(5);
    let churn_rate = knob("KUBENAT_SCALE_CHURN_RATE", 100).max(1);
    let churn_period = Duration::from_secs(knob("KUBENAT_SCALE_CHURN_SECONDS", 60).max(1) as u64);
    let load_start = scale::load_average();
    let lab = Lab::new(0);
    let api = ApiServer::start_in_netns(lab.node.name());
    api.apply(objects::node("node-1", None));
    let load_secs = scale::load(&api, services, endpoints);

    // 1. The first full sync.
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let log = dir.path().join("kubenat.log");
    let opts = DaemonOptions { sync_period: "1h", log: "info", ..DaemonOptions::new(backend) };
    let started = Instant::now();
    let mut daemon = Daemon::start(&lab.node, &kubeconfig, &log, &opts);
    daemon.wait_full_syncs(1.0, FIRST_SYNC);
    let first_sync = started.elapsed().as_secs_f64();
    let pid = daemon.pid();
    let (rss_first, hwm_first) = rss_mib(pid);

    // What the idle daemon costs (API bookmarks, timers), left alone and polled as below.
    thread::sleep(Duration::from_secs(1));
    let (cpu, wall) = (own_cpu_seconds(pid), Instant::now());
    thread::sleep(CALIBRATION);
    let idle_alone = (own_cpu_seconds(pid) - cpu) / wall.elapsed().as_secs_f64();
    let (cpu, wall) = (own_cpu_seconds(pid), Instant::now());
    let mut polls = 0u32;
    while wall.elapsed() < CALIBRATION {
        polls += u32::from(daemon.metrics_direct().is_some());
        thread::sleep(POLL);
    }
    let idle_per_second = (own_cpu_seconds(pid) - cpu) / wall.elapsed().as_secs_f64();
    assert!(polls > 0, "/metrics did not answer; log:\n{}", daemon.log());

    // 2. Single changes, one at a time.
    let mut written = Endpoints::new(endpoints);
    let before = daemon.metrics_direct().expect("metrics");
    let (cpu, wall) = (own_cpu_seconds(pid), Instant::now());
    let mut latencies = Vec::with_capacity(changes);
    let mut scrapes = 0;
    for k in 0..changes {
        let count = daemon.metrics_direct().expect("metrics").get(PARTIAL_COUNT);
        let service = (k * services / changes + k) % services;
        let object = written.change(service, k, None);
        let applied = Instant::now();
        api.apply(object);
        let (_, n) = wait_until(&mut daemon, ONE_CHANGE, "partial sync", |s| s.get(PARTIAL_COUNT) > count);
        latencies.push(applied.elapsed().as_secs_f64());
        scrapes += n + 1;
    }
    let single_cpu = own_cpu_seconds(pid) - cpu;
    let single_wall = wall.elapsed().as_secs_f64();
    let after = daemon.metrics_direct().expect("metrics");
    let syncs = after.get(PARTIAL_COUNT) - before.get(PARTIAL_COUNT);
    let partial_mean = (after.get(PARTIAL_SUM) - before.get(PARTIAL_SUM)) / syncs.max(1.0);
    let full_during = after.get(FULL_COUNT) - before.get(FULL_COUNT);
    let (rss_single, hwm_single) = rss_mib(pid);

    // 3. The floor at this table size, in this namespace.
    let ipt = ExecIptables::new(backend.parse().expect("backend")).in_netns(lab.node.name());
    let save = ipt.save(IpFamily::V4, Some(TableName::Nat)).expect("iptables-save -t nat");
    let floor_service = services / 2;
    let (floor, floor_chains) = floor_input(&save, scale::cluster_ip(floor_service));
    let floor_backend: Backend = backend.parse().expect("backend");
    let floor_times: Vec<f64> =
        (0..floor_runs).map(|_| timed_restore(lab.node.name(), floor_backend, &floor)).collect();
    let floor_median = median(floor_times.clone());

    // 4. Churn: `churn_rate` changes a second, each stamped with its write time.
    let before = daemon.metrics_direct().expect("metrics");
    let total = churn_rate * churn_period.as_secs() as usize;
    let interval = Duration::from_secs(1) / u32::try_from(churn_rate).expect("rate fits u32");
    let (cpu, wall) = (own_cpu_seconds(pid), Instant::now());
    let mut churned = 0usize;
    for k in 0..total {
        let due = interval * u32::try_from(k).expect("changes fit u32");
        if let Some(wait) = due.checked_sub(wall.elapsed()) {
            thread::sleep(wait);
        }
        if wall.elapsed() > churn_period + CHURN_SLACK {
            break;
        }
        // Services in a stride through the whole table, a different endpoint each round.
        let service = (k * 7 + k / services) % services;
        let object = written.change(service, k / services + k, Some(Timestamp::now().to_string()));
        api.apply(object);
        churned += 1;
    }
    let churn_cpu = own_cpu_seconds(pid) - cpu;
    let churn_wall = wall.elapsed().as_secs_f64();
    let loop_end = daemon.metrics_direct().expect("metrics");
    let expected = before.get(PROGRAMMING_COUNT) + churned as f64;
    let settled = Instant::now();
    let deadline = settled + SETTLE;
    let mut end = loop_end.clone();
    while end.get(PROGRAMMING_COUNT) < expected && Instant::now() < deadline && daemon.exited().is_none() {
        thread::sleep(Duration::from_millis(100));
        end = daemon.metrics_direct().unwrap_or(end);
    }
    let settle_secs = settled.elapsed().as_secs_f64();
    let programmed = end.get(PROGRAMMING_COUNT) - before.get(PROGRAMMING_COUNT);
    let buckets = bucket_delta(&end, &before);
    let (p50, p99) = (scale::histogram_quantile(0.5, &buckets), scale::histogram_quantile(0.99, &buckets));
    let max_bound = scale::histogram_max_bound(&buckets);
    let churn_partial = end.get(PARTIAL_COUNT) - before.get(PARTIAL_COUNT);
    let churn_full = end.get(FULL_COUNT) - before.get(FULL_COUNT);
    let churn_mean = (end.get(PARTIAL_SUM) - before.get(PARTIAL_SUM)) / churn_partial.max(1.0);
    let (rss_end, hwm_end) = rss_mib(pid);
    let failures = (
        end.get(RESTORE_FAILURES) - before.get(RESTORE_FAILURES),
        end.get(PARTIAL_RESTORE_FAILURES) - before.get(PARTIAL_RESTORE_FAILURES),
    );

    // Did every change reach the kernel? Every address last written is a DNAT target now.
    let save = ipt.save(IpFamily::V4, Some(TableName::Nat)).expect("iptables-save -t nat");
    let targets: HashSet<&str> = save.split_whitespace().collect();
    let missing: Vec<String> =
        written.all().map(|ip| format!("{ip}:{BACKEND_PORT}")).filter(|to| !targets.contains(to.as_str())).collect();
    let checked = written.all().count();
    daemon.terminate();
    let log = daemon.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();

    let per_change = single_cpu / changes as f64;
    let polling = idle_per_second * single_wall / changes as f64;
    let mut report = String::new();
    let _ = writeln!(report, "backend={backend} services={services} endpoints/service={endpoints} cost per change");
    let _ = writeln!(
        report,
        "  API objects written: {} in {load_secs:.1} s; load average at the start {load_start}, at the end {}",
        2 * services,
        scale::load_average()
    );
    let _ = writeln!(
        report,
        "  first full sync: {first_sync:.1} s from start; peak RSS up to its end (VmHWM) {hwm_first:.0} MiB, \
         RSS after it {rss_first:.0} MiB"
    );
    let _ = writeln!(
        report,
        "  {changes} single-endpoint changes, one at a time: daemon CPU {:.1} ms per change (its own utime+stime; \
         {:.1} ms without ≈{:.1} ms of idling while polled: the idle daemon used {:.1} ms CPU/s polled every \
         {} ms, {:.1} ms CPU/s alone); partial sync mean {:.1} ms ({syncs} partial, {full_during} full syncs); \
         change → synced median {:.0} ms; {:.0} scrapes per change",
        per_change * 1e3,
        (per_change - polling) * 1e3,
        polling * 1e3,
        idle_per_second * 1e3,
        POLL.as_millis(),
        idle_alone * 1e3,
        partial_mean * 1e3,
        median(latencies) * 1e3,
        f64::from(scrapes) / changes as f64,
    );
    let _ = writeln!(report, "  RSS after the {changes} partial syncs: {rss_single:.0} MiB (peak {hwm_single:.0} MiB)");
    let _ = writeln!(
        report,
        "  floor: {floor_chains} chains ({} B) of {} re-declared with iptables-{backend}-restore --noflush: median \
         {:.1} ms of {floor_runs} (all: {:?} ms); partial sync mean ÷ floor = {:.1}",
        floor.len(),
        service_name(floor_service),
        floor_median * 1e3,
        floor_times.iter().map(|t| (t * 1e4).round() / 10.0).collect::<Vec<_>>(),
        partial_mean / floor_median,
    );
    let _ = writeln!(
        report,
        "  churn: {churned} changes in {churn_wall:.1} s ({:.0}/s, asked {churn_rate}/s for {} s): daemon CPU \
         {churn_cpu:.1} s = {:.2} cores; {churn_partial} partial syncs (mean {:.0} ms), {churn_full} full; \
         failed restores: {} full, {} partial; {} warnings/errors logged in the whole run",
        churned as f64 / churn_wall,
        churn_period.as_secs(),
        churn_cpu / churn_wall,
        churn_mean * 1e3,
        failures.0,
        failures.1,
        warnings.len(),
    );
    let _ = writeln!(
        report,
        "  churn network programming (event → kernel): p50 {p50:.2} s, p99 {p99:.2} s, all ≤ {max_bound} s \
         ({programmed} of {churned} observed, {settle_secs:.1} s to settle after the loop)"
    );
    let _ = writeln!(
        report,
        "  every change reached the kernel: {} ({} of {checked} final endpoint addresses in iptables-save{})",
        if missing.is_empty() { "yes" } else { "NO" },
        checked - missing.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!("; missing e.g. {:?}", &missing[..missing.len().min(5)])
        },
    );
    let _ = writeln!(report, "  RSS at the end: {rss_end:.0} MiB (peak {hwm_end:.0} MiB)");
    scale::report(&report);
    assert!(missing.is_empty(), "changes missing from the kernel: {missing:?}");
    let last_warnings = &warnings[warnings.len().saturating_sub(20)..];
    assert!(
        programmed >= churned as f64,
        "only {programmed} of {churned} changes were programmed; last warnings/errors:\n{}",
        last_warnings.join("\n")
    );
}
