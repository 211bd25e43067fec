//! Scale measurement of the daemon (ignored by default; `scripts/bench-daemon.sh` runs it in a
//! release build): N ClusterIP services × E endpoints are written to the test API server, the
//! real `kubenat` daemon lists, renders and restores them into a lab's node namespace, and the
//! test reports
//! - time from start to the first full sync, and the daemon's RSS (VmRSS, VmHWM) after it;
//! - event-to-rules latency: object written to the API → first TCP connection from a pod
//!   answered through the new rule, for a new Service and for an endpoint change;
//! - bytes of each partial restore those changes caused;
//! - (`quiet_periods_at_scale`) what quiet sync periods cost: the daemon's CPU (its own and its
//!   `iptables-*` children's) per period against the cost of one full sync, measured in the
//!   same run — a full sync every period was kubenat's cadence before it followed kube-proxy's.
//!
//! Knobs (environment): `KUBENAT_SCALE_SERVICES` (10000), `KUBENAT_SCALE_ENDPOINTS` (10),
//! `KUBENAT_SCALE_BACKEND` (`nft` or `legacy`), `KUBENAT_SCALE_ROUNDS` (5),
//! `KUBENAT_SCALE_REPORT` (a file the summary is appended to), `KUBENAT_SCALE_PERIODS` (quiet
//! periods, 3) and `KUBENAT_SCALE_SYNC_PERIOD` (seconds, 10). Every wait is bounded.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use testkit::apiserver::ApiServer;
use testkit::daemon::{Daemon, DaemonOptions, Scrape, RESTORE_BYTES_PARTIAL, RESTORE_COUNT_PARTIAL};
use testkit::lab::Lab;
use testkit::objects;
use testkit::scale::{self, cluster_ip, cpu_seconds, knob, rss_mib, service, slice, BACKEND_PORT, FIRST_SYNC};
use testkit::traffic::{Proto, Server};

/// How long one change may take to become visible to traffic.
const CHANGE: Duration = Duration::from_secs(60);

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// argv: host port deadline_seconds. Connects every few ms (20 ms timeout each) until one
/// connection is answered; prints the wall-clock time of that answer, or `none`.
const POLL_PY: &str = r#"
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.time() + limit
print("ready", flush=True)
while time.time() < end:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.02)
    try:
        s.connect((host, port))
        if s.recv(64):
            print("%.6f" % time.time(), flush=True)
            sys.exit(0)
    except OSError:
        time.sleep(0.002)
    finally:
        s.close()
print("none", flush=True)
"#;

/// Starts the poller (in the client pod), runs `change` once it is polling, and returns the
/// seconds from the end of `change` to the first answered connection.
fn latency(lab: &Lab, ip: Ipv4Addr, change: impl FnOnce()) -> f64 {
    let limit = format!("{}", CHANGE.as_secs());
    let host = ip.to_string();
    let argv = lab.pod(0).ns.argv(&["/usr/bin/python3", "-c", POLL_PY, &host, "80", &limit]);
    let mut poller = Poller::start(&argv);
    assert_eq!(poller.line(Duration::from_secs(5)).as_deref(), Some("ready"), "poller did not start");
    change();
    let written = unix_now();
    let line = poller.line(CHANGE + Duration::from_secs(5)).unwrap_or_default();
    let answered: f64 = line.trim().parse().unwrap_or_else(|_| panic!("no answer from {ip} within {CHANGE:?}: {line}"));
    answered - written
}

/// A child whose stdout lines arrive on a channel; killed when dropped.
struct Poller {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Poller {
    fn start(argv: &[&str]) -> Poller {
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Poller { child, lines }
    }

    fn line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn partial(scrape: &Scrape) -> (f64, f64) {
    (scrape.value(RESTORE_COUNT_PARTIAL).unwrap_or(0.0), scrape.value(RESTORE_BYTES_PARTIAL).unwrap_or(0.0))
}

#[test]
#[ignore = "scale measurement: run by scripts/bench-daemon.sh (release build, minutes)"]
fn daemon_at_scale() {
    if !testkit::require_root() {
        return;
    }
    let (services, endpoints, backend) = (scale::services(), scale::endpoints(), scale::backend());
    let rounds = knob("KUBENAT_SCALE_ROUNDS", 5).max(1);
    let lab = Lab::new(2);
    let _backend_server = Server::start(&lab.pod(1).ns, Proto::Tcp, BACKEND_PORT, "backend");
    let backend_ip = lab.pod(1).ip;
    let api = ApiServer::start_in_netns(lab.node.name());
    api.apply(json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-1" },
                      "spec": { "podCIDR": "10.244.0.0/24" } }));
    let load_secs = scale::load(&api, services, endpoints);

    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let log = dir.path().join("kubenat.log");
    // No periodic full sync during the measurement.
    let opts = DaemonOptions { sync_period: "1h", log: "info", ..DaemonOptions::new(backend) };
    let started = Instant::now();
    let mut daemon = Daemon::start(&lab.node, &kubeconfig, &log, &opts);
    daemon.wait_full_syncs(1.0, FIRST_SYNC);
    let first_sync = started.elapsed().as_secs_f64();
    let (rss_first, hwm_first) = rss_mib(daemon.pid());

    let mut new_service = Vec::new();
    let mut endpoint_change = Vec::new();
    let mut new_service_bytes = Vec::new();
    let mut endpoint_change_bytes = Vec::new();
    for round in 0..rounds {
        let before = partial(&daemon.metrics().expect("metrics"));
        let name = format!("probe-{round}");
        let ip = Ipv4Addr::new(10, 111, 0, u8::try_from(round + 1).expect("≤ 254 rounds"));
        new_service.push(latency(&lab, ip, || {
            api.apply(service(&name, ip));
            api.apply(slice(&name, &[backend_ip]));
        }));
        let after = partial(&daemon.metrics().expect("metrics"));
        new_service_bytes.push((after.1 - before.1) / (after.0 - before.0).max(1.0));

        // An existing service's endpoints move to the real backend.
        let target = scale::service_name(services - 1 - round);
        let target_ip = cluster_ip(services - 1 - round);
        endpoint_change.push(latency(&lab, target_ip, || {
            api.apply(slice(&target, &[backend_ip]));
        }));
        let after2 = partial(&daemon.metrics().expect("metrics"));
        endpoint_change_bytes.push((after2.1 - after.1) / (after2.0 - after.0).max(1.0));
    }
    let (rss_end, hwm_end) = rss_mib(daemon.pid());
    daemon.terminate();
    if std::env::var_os("KUBENAT_SCALE_SHOW_LOG").is_some() {
        println!("{}", daemon.log());
    }

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut report = String::new();
    let _ = writeln!(report, "backend={backend} services={services} endpoints/service={endpoints} rounds={rounds}");
    let _ = writeln!(report, "  API objects written: {} in {load_secs:.1} s", 2 * services);
    let _ = writeln!(report, "  daemon start → first full sync: {first_sync:.1} s");
    let _ = writeln!(report, "  RSS after first sync: {rss_first:.0} MiB (peak {hwm_first:.0} MiB)");
    let _ = writeln!(report, "  RSS at the end: {rss_end:.0} MiB (peak {hwm_end:.0} MiB)");
    let _ = writeln!(
        report,
        "  new Service → answered: median {:.0} ms (all: {:?}); partial restore {:.0} B",
        median(&mut new_service) * 1e3,
        new_service.iter().map(|s| (s * 1e3).round()).collect::<Vec<_>>(),
        median(&mut new_service_bytes),
    );
    let _ = writeln!(
        report,
        "  endpoint change → answered: median {:.0} ms (all: {:?}); partial restore {:.0} B",
        median(&mut endpoint_change) * 1e3,
        endpoint_change.iter().map(|s| (s * 1e3).round()).collect::<Vec<_>>(),
        median(&mut endpoint_change_bytes),
    );
    scale::report(&report);
}

/// Full syncs and all syncs of IPv4 so far.
fn sync_counts(scrape: &Scrape) -> (f64, f64) {
    let full = r#"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"}"#;
    let all = r#"kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}"#;
    (scrape.value(full).unwrap_or(0.0), scrape.value(all).unwrap_or(0.0))
}

#[test]
#[ignore = "scale measurement: run by scripts/bench-daemon.sh (release build, minutes)"]
fn quiet_periods_at_scale() {
    if !testkit::require_root() {
        return;
    }
    let (services, endpoints, backend) = (scale::services(), scale::endpoints(), scale::backend());
    let periods = knob("KUBENAT_SCALE_PERIODS", 3).max(1);
    let period = Duration::from_secs(knob("KUBENAT_SCALE_SYNC_PERIOD", 10).max(1) as u64);
    let lab = Lab::new(1);
    let api = ApiServer::start_in_netns(lab.node.name());
    api.apply(objects::node("node-1", None));
    scale::load(&api, services, endpoints);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let log = dir.path().join("kubenat.log");
    let sync_period: &'static str = Box::leak(format!("{}s", period.as_secs()).into_boxed_str());
    let opts = DaemonOptions { sync_period, log: "info", ..DaemonOptions::new(backend) };
    let started = Instant::now();
    let mut daemon = Daemon::start(&lab.node, &kubeconfig, &log, &opts);
    let first = daemon.wait_full_syncs(1.0, FIRST_SYNC);
    let first_wall = started.elapsed().as_secs_f64();
    let first_cpu = cpu_seconds(daemon.pid());
    let full_sync_seconds =
        first.value(r#"kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family="IPv4"}"#).unwrap_or(f64::NAN);
    let (full_before, syncs_before) = sync_counts(&first);
    let restores_before = first.value(RESTORE_COUNT_PARTIAL).unwrap_or(0.0);

    thread::sleep(period * u32::try_from(periods).expect("periods fit u32") + period / 2);
    let quiet = daemon.metrics().expect("metrics");
    let quiet_cpu = cpu_seconds(daemon.pid()) - first_cpu;
    let (full_after, syncs_after) = sync_counts(&quiet);
    let restores = quiet.value(RESTORE_COUNT_PARTIAL).unwrap_or(0.0) - restores_before;
    let partial_sum =
        quiet.value(r#"kubeproxy_sync_partial_proxy_rules_duration_seconds_sum{ip_family="IPv4"}"#).unwrap_or(0.0);
    let partial_count = quiet
        .value(r#"kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"}"#)
        .unwrap_or(0.0)
        .max(1.0);
    daemon.terminate();

    let per_period = quiet_cpu / periods as f64;
    let mut report = String::new();
    let _ = writeln!(report, "backend={backend} services={services} endpoints/service={endpoints} quiet periods");
    let _ = writeln!(
        report,
        "  first full sync: {full_sync_seconds:.1} s in the sync ({first_wall:.1} s from start), {first_cpu:.1} CPU-s \
         (daemon + iptables tools, start-up and list included)"
    );
    let _ = writeln!(
        report,
        "  {periods} quiet periods of {}s: {} syncs, {} full, {restores} restores; {quiet_cpu:.2} CPU-s \
         ({per_period:.2} per period, partial sync mean {:.0} ms)",
        period.as_secs(),
        syncs_after - syncs_before,
        full_after - full_before,
        partial_sum / partial_count * 1e3,
    );
    let _ = writeln!(
        report,
        "  per period: {per_period:.2} CPU-s now vs ≥ {first_cpu:.1} CPU-s and {full_sync_seconds:.1} s of \
         iptables-save/-restore (xtables lock) with a full sync every period: ratio {:.3}",
        per_period / first_cpu
    );
    scale::report(&report);
    assert_eq!(full_after, full_before, "a quiet period ran a full sync");
    assert_eq!(restores, 0.0, "a quiet period restored something");
}
