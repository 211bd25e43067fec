//! Fault and load tests of the legacy userspace proxy mode on the real kernel: backends killed
//! and restarted under a steady stream of fresh connections (the proxy's dial retry must hide
//! every dead backend while one lives), and clients that never read from a backend that never
//! stops writing (other connections must keep flowing and the daemon's memory must stay
//! bounded). Each test ends with the kernel's rules equal to `kubenat render --proxy-mode
//! userspace` of the final objects (proxy ports masked: the live proxy picks them at random).
//! The 10,000-connection test lives with the userspace proxy tests. Needs root (skips
//! otherwise, fails under CI=true). Run with `--nocapture` for the counts.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use crate::env::{probed_ip, Env, BACKENDS};
use kubenat::apply::exec::Backend;
use testkit::daemon::{self, DaemonOptions};
use testkit::objects::{self, EpState, Port};
use testkit::probe::{Outcome, ProbeConfig, Target};
use testkit::process::Spawned;
use testkit::traffic::{self, Proto};

/// The daemon's proxy port range.
const PROXY_PORTS: std::ops::RangeInclusive<u16> = 36000..=36099;
/// Per-attempt timeout: covers the proxy's dial retries (0.25 + 0.5 + 1 + 2 s at worst).
const ATTEMPT: Duration = Duration::from_secs(4);

/// An environment whose daemon runs in userspace mode.
fn userspace_env() -> Option<Env> {
    let mut env = Env::new(Backend::Nft, DaemonOptions::new("nft"))?;
    let node_ip = env.lab.pod(0).gateway.to_string();
    let range = format!("{}-{}", PROXY_PORTS.start(), PROXY_PORTS.end());
    env.opts.extra_args = ["--proxy-mode", "userspace", "--proxy-port-range", &range, "--bind-address", "0.0.0.0"]
        .into_iter()
        .chain(["--node-ip", &node_ip])
        .map(String::from)
        .collect();
    env.render_args = ["--proxy-mode", "userspace", "--proxy-port-start", "36000", "--bind-address", "0.0.0.0"]
        .into_iter()
        .chain(["--node-ip", &node_ip])
        .map(String::from)
        .collect();
    env.proxy_ports = Some(PROXY_PORTS);
    env.spawn_daemon();
    Some(env)
}

/// Service `name` (`http` 80→8080/TCP) on every backend, ready.
fn apply_web(env: &Env, name: &str, ip: Ipv4Addr) -> Target {
    let ports = [Port::new("http", 80, 8080, "TCP")];
    env.api.apply(objects::service(name, ip, &ports));
    let eps: Vec<_> = (0..BACKENDS).map(|i| (env.backend_ip(i), EpState::Ready)).collect();
    env.api.apply(objects::slice(name, &objects::on_this_node(&eps), &ports));
    Target::new(&format!("{name}/http"), Proto::Tcp, SocketAddr::from((ip, 80)))
}

#[test]
fn backends_killed_and_restarted_under_load() {
    let Some(mut env) = userspace_env() else { return };
    let target = apply_web(&env, "w", probed_ip(0));
    env.until_all_answer(std::slice::from_ref(&target));
    let config = ProbeConfig { interval: Duration::from_millis(10), timeout: ATTEMPT, ..ProbeConfig::default() };
    let probe = env.probe(vec![target], config);

    // Ten rounds: one backend at a time dies for 0.7 s, then comes back (two always live).
    let rounds = 10;
    let started = Instant::now();
    let mut kills = Vec::new();
    for round in 0..rounds {
        let victim = round % BACKENDS;
        let before = SystemTime::now();
        env.kill_backend(victim);
        kills.push((before, SystemTime::now()));
        std::thread::sleep(Duration::from_millis(700));
        env.start_backend(victim);
        std::thread::sleep(Duration::from_millis(300));
    }
    let killing = started.elapsed();
    probe.wait_for_more(20, Duration::from_secs(10));
    let report = probe.stop();
    // A connection the proxy had already handed to a backend dies with that backend (it was in
    // the backend's accept queue, or being answered, when the process was killed): the proxy
    // cannot retry it, as no proxy can. Only those are excused: the attempt overlaps a kill and
    // ended with the connection closed or reset, not refused or timed out.
    let slack = Duration::from_millis(50);
    let (failures, excused) = report.split(|a| {
        let cut = matches!(&a.outcome, Outcome::Failed(why) if why == "error empty answer" || why == "reset");
        cut && kills.iter().any(|(from, to)| a.start <= *to + slack && a.end + slack >= *from)
    });
    eprintln!(
        "[userspace kills] {rounds} backend kills and restarts in {:.1} s; probe: {}; {} excused (open when their \
         backend was killed)",
        killing.as_secs_f64(),
        report.summary(),
        excused.len()
    );
    if !failures.is_empty() {
        env.fail(&format!("fresh connections failed while a backend lived:\n{}", report.describe(&failures)));
    }
    let answered: std::collections::BTreeSet<&str> = report
        .attempts
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Answer(server) => Some(server.as_str()),
            Outcome::Failed(_) => None,
        })
        .collect();
    assert_eq!(answered.len(), BACKENDS, "every backend served some connections: {answered:?}");
    env.assert_converged(Duration::from_secs(10));
}

/// The proxy's established connections to `backend` (from `ss` in the node namespace) and the
/// bytes waiting unread in their receive queues.
fn backend_side(env: &Env, backend: SocketAddr) -> (usize, u64) {
    let out = env.lab.node.run_ok(&["ss", "-Htn", "state", "established", "dst", &backend.to_string()]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let queued = lines.iter().filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok()).sum();
    (lines.len(), queued)
}

/// argv: port. Accepts TCP connections and writes to each, forever, until the peer goes.
const FIREHOSE_PY: &str = r#"
import socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(1024)
chunk = b"x" * 65536
def pour(c):
    try:
        while True:
            c.sendall(chunk)
    except OSError:
        c.close()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=pour, args=(c,), daemon=True).start()
"#;

/// argv: host port count. Opens `count` connections with small receive buffers, never reads,
/// prints `ready` once all are connected, then waits to be killed (at most 120 s).
const NEVER_READ_PY: &str = r#"
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(count):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.settimeout(5)
    c.connect((host, port))
    held.append(c)
print("ready", flush=True)
time.sleep(120)
"#;

#[test]
fn clients_that_never_read_neither_block_others_nor_grow_memory() {
    let Some(env) = userspace_env() else { return };
    let web = apply_web(&env, "w", probed_ip(0));
    let hose_ip = probed_ip(1);
    let hose_ports = [Port::new("data", 90, 9090, "TCP")];
    env.api.apply(objects::service("hose", hose_ip, &hose_ports));
    env.api.apply(objects::slice("hose", &objects::on_this_node(&[(env.backend_ip(0), EpState::Ready)]), &hose_ports));
    let _firehose = Spawned::until_ready(
        &env.lab.pod(0).ns.argv(&[daemon::python(), "-c", FIREHOSE_PY, "9090"]),
        traffic::SERVER_READY_TIMEOUT,
    );
    env.until_all_answer(std::slice::from_ref(&web));
    let config = ProbeConfig { interval: Duration::from_millis(10), timeout: ATTEMPT, ..ProbeConfig::default() };
    let probe = env.probe(vec![web], config);
    std::thread::sleep(Duration::from_secs(1));
    let rss = || env.daemon().rss_kib().unwrap_or_else(|| env.fail("the daemon is gone"));
    let before = rss();

    // 200 clients that never read from a backend that never stops writing.
    let clients = 200;
    let (host, count) = (hose_ip.to_string(), clients.to_string());
    let stuck = Spawned::until_ready(
        &env.client().argv(&[daemon::python(), "-c", NEVER_READ_PY, &host, "90", &count]),
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(3)); // every buffer on the way fills up
    let filled = rss();
    let (relayed, queued) = backend_side(&env, SocketAddr::from((env.backend_ip(0), 9090)));
    std::thread::sleep(Duration::from_secs(3)); // … and stays full: nothing may keep growing
    let later = rss();
    drop(stuck);
    probe.wait_for_more(20, Duration::from_secs(10));
    let report = probe.stop();
    let kib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    eprintln!(
        "[userspace never-read] {clients} stuck clients: daemon RSS {} before, {} with buffers full, {} 3 s later; \
         probe of another Service meanwhile: {}; {relayed} proxy→backend connections holding {} unread",
        kib(before),
        kib(filled),
        kib(later),
        report.summary(),
        kib(queued / 1024)
    );
    if relayed < clients || queued == 0 {
        env.fail(&format!(
            "the stuck clients were not relayed ({relayed} connections to the backend, {queued} B queued)"
        ));
    }
    let failures = report.failures();
    if !failures.is_empty() {
        env.fail(&format!("stuck clients blocked other connections:\n{}", report.describe(&failures)));
    }
    // Two 64 KiB relay buffers per connection plus bookkeeping: well under 64 MiB for 200.
    if filled.saturating_sub(before) > 64 * 1024 {
        env.fail(&format!("RSS grew {} for {clients} stuck connections", kib(filled - before)));
    }
    if later.saturating_sub(filled) > 4 * 1024 {
        env.fail(&format!("RSS kept growing with the buffers full: {} → {}", kib(filled), kib(later)));
    }
    env.assert_converged(Duration::from_secs(10));
}
