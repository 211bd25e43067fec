//! End to end on the real kernel: the `kubenat` binary runs in a lab's node namespace against
//! the test API server (also in that namespace) and real TCP/UDP traffic from a client pod
//! proves what it programmed — through creates, scale-ups, removals and deletes, dropped
//! watches and compaction, an API outage, failing restores, a restart, UDP conntrack cleanup
//! and `--cleanup`. Needs root (skips otherwise, fails under CI=true).
//!
//! Every lab has three pods: 0 and 1 run identity servers (`pod-0`, `pod-1`) on 8080/TCP and
//! 5353/UDP, pod 2 is the client. Service `default/web` is 10.96.0.10 (`http` 80→8080/TCP,
//! `dns` 53→5353/UDP). Run with `--nocapture` to see the measured latencies and restore sizes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use kubenat::apply::exec::{Backend, Tool};
use kubenat::model::IpFamily;
use serde_json::Value;
use tempfile::TempDir;
use testkit::apiserver::{ApiServer, Verb};
use testkit::daemon::{
    self, poll, Daemon, DaemonOptions, Scrape, PARTIAL_RESTORE_FAILURES, RESTORE_BYTES_FULL, RESTORE_BYTES_PARTIAL,
    RESTORE_COUNT_FULL, RESTORE_COUNT_PARTIAL, RESTORE_FAILURES,
};
use testkit::lab::Lab;
use testkit::netns::NetNs;
use testkit::objects::{self, Port};
use testkit::traffic::{self, Proto, Reply, Server};

/// ClusterIP of `default/web`.
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// ClusterIP of `default/empty`, a Service without endpoints.
const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// Every "eventually" in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
/// Per-request timeout of the traffic client.
const REQUEST: Duration = Duration::from_secs(1);
/// The client pod.
const CLIENT: usize = 2;
/// EndpointSlice events consumed by finished syncs.
const ENDPOINT_CHANGES: &str = "kubeproxy_sync_proxy_rules_endpoint_changes_total";
/// Service events consumed by finished syncs.
const SERVICE_CHANGES: &str = "kubeproxy_sync_proxy_rules_service_changes_total";
/// Syncs of IPv4 (every periodic one too, even when it restores nothing).
const SYNCS: &str = r#"kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}"#;
/// How long the API server is down in `survives_watch_drops_compaction_and_api_outage` (as the
/// issue asks: 30 s, long enough for the client's retries and the watcher's backoff to run out).
const OUTAGE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Objects.

/// `default/web`: `http` 80→8080/TCP and `dns` 53→5353/UDP on 10.96.0.10.
fn web() -> Value {
    objects::service("web", CLUSTER_IP, &objects::web_ports())
}

/// `default/empty`: `http` 80/TCP on 10.96.0.11, never given endpoints.
fn empty() -> Value {
    objects::service("empty", EMPTY_IP, &[Port::tcp("http", 80, 8080)])
}

/// The EndpointSlice of `default/web` with one ready endpoint on node-1 per address.
fn web_slice(addresses: &[Ipv4Addr]) -> Value {
    objects::slice("web", &objects::ready_on(addresses, objects::NODE), &objects::web_ports())
}

// ---------------------------------------------------------------------------------------------
// The environment: lab, servers, API server, daemon.

/// A lab with backends in pods 0 and 1, the API server in the node namespace, and (once
/// started) the daemon. Fields drop in order: daemon first, the namespaces last.
struct Env {
    daemon: Option<Daemon>,
    api: ApiServer,
    _servers: Vec<Server>,
    lab: Lab,
    dir: TempDir,
    backend: Backend,
    opts: DaemonOptions,
    starts: u32,
}

impl Env {
    /// `None` (test skipped) when not root or a tool is missing.
    fn new(backend: Backend, opts: DaemonOptions) -> Option<Env> {
        let tools = [backend.binary(IpFamily::V4, Tool::Restore), backend.binary(IpFamily::V4, Tool::Save)];
        if !testkit::require_root() || !tools.iter().all(|t| testkit::require_program(t)) {
            return None;
        }
        let lab = Lab::new(3);
        let mut servers = Vec::new();
        for i in 0..2 {
            let name = format!("pod-{i}");
            servers.push(Server::start(&lab.pod(i).ns, Proto::Tcp, 8080, &name));
            servers.push(Server::start(&lab.pod(i).ns, Proto::Udp, 5353, &name));
        }
        let api = ApiServer::start_in_netns(lab.node.name());
        api.apply(objects::node(objects::NODE, None));
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Env { daemon: None, api, _servers: servers, lab, dir, backend, opts, starts: 0 })
    }

    /// Starts a daemon and waits for its first (full) sync.
    fn start_daemon(&mut self) {
        self.starts += 1;
        let kubeconfig = self.api.kubeconfig(self.dir.path());
        let log = self.dir.path().join(format!("kubenat-{}.log", self.starts));
        let mut daemon = Daemon::start(&self.lab.node, &kubeconfig, &log, &self.opts);
        daemon.wait_full_syncs(1.0, WAIT);
        self.daemon = Some(daemon);
    }

    /// `new` + `start_daemon`.
    fn started(backend: Backend, opts: DaemonOptions) -> Option<Env> {
        let mut env = Env::new(backend, opts)?;
        env.start_daemon();
        Some(env)
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("daemon started")
    }

    fn pod_ip(&self, i: usize) -> Ipv4Addr {
        self.lab.pod(i).ip
    }

    fn client(&self) -> &NetNs {
        &self.lab.pod(CLIENT).ns
    }

    fn requests(&self, proto: Proto, to: SocketAddr, count: usize) -> Vec<Reply> {
        traffic::requests(self.client(), proto, to, REQUEST, count)
    }

    fn tcp(&self, count: usize) -> Vec<Reply> {
        self.requests(Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), count)
    }

    fn udp(&self, count: usize) -> Vec<Reply> {
        self.requests(Proto::Udp, SocketAddr::from((CLUSTER_IP, 53)), count)
    }

    /// `iptables-save` of the node (the backend's), all tables.
    fn save(&self) -> String {
        self.lab.node_save(self.backend)
    }

    /// `/metrics`, or a failure with the daemon's log.
    fn scrape(&self) -> Scrape {
        let daemon = self.daemon.as_ref().expect("daemon started");
        poll(Duration::from_secs(3), Duration::from_millis(100), || daemon.metrics())
            .unwrap_or_else(|| self.fail("/metrics did not answer"))
    }

    /// Panics with `what`, the node's rules and every daemon log.
    fn fail(&self, what: &str) -> ! {
        let mut logs = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path().join(format!("kubenat-{n}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            logs += &format!("\n--- daemon log #{n} ({}) ---\n{text}", path.display());
        }
        panic!("{what}\n--- iptables-save ({}) ---\n{}{logs}", self.backend, self.save());
    }

    /// Polls `check` (every 100 ms, ≤ [`WAIT`]); fails with context on timeout.
    fn until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        poll(WAIT, Duration::from_millis(100), check)
            .unwrap_or_else(|| self.fail(&format!("timed out after {WAIT:?}: {what}")))
    }

    /// Waits until `count` requests of `proto` are all answered and exactly `servers` answered.
    fn until_served_by(&self, proto: Proto, servers: &[&str], count: usize) -> Vec<Reply> {
        self.until_served_by_within(WAIT, proto, servers, count)
    }

    /// [`Self::until_served_by`] with its own time limit.
    fn until_served_by_within(&self, limit: Duration, proto: Proto, servers: &[&str], count: usize) -> Vec<Reply> {
        let want: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        let mut last = Vec::new();
        let found = poll(limit, Duration::from_millis(100), || {
            last = match proto {
                Proto::Tcp => self.tcp(count),
                Proto::Udp => self.udp(count),
            };
            (answered_by(&last).as_ref() == Some(&want)).then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            self.fail(&format!(
                "{proto:?} to the ClusterIP never answered only by {want:?}; last: {:?}",
                traffic::tally(&last)
            ))
        })
    }

    /// The nat table's chains whose names start with `KUBE-SVC-` or `KUBE-SEP-`.
    fn service_chains(&self) -> Vec<String> {
        let save = self.lab.node.run_ok(&[&self.backend.binary(IpFamily::V4, Tool::Save), "-t", "nat"]);
        chains(&save).into_iter().filter(|c| c.starts_with("KUBE-SVC-") || c.starts_with("KUBE-SEP-")).collect()
    }
}

/// The sorted, distinct servers that answered — `None` if any request was not answered.
fn answered_by(replies: &[Reply]) -> Option<Vec<String>> {
    let mut names: Vec<String> = replies.iter().map(|r| r.server().map(str::to_string)).collect::<Option<_>>()?;
    names.sort();
    names.dedup();
    Some(names)
}

/// The chains declared in `iptables-save` text (`:NAME POLICY [p:b]`).
fn chains(save: &str) -> Vec<String> {
    save.lines().filter_map(|l| l.strip_prefix(':')?.split_whitespace().next().map(str::to_string)).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Create, scale, shrink, delete; a Service without endpoints rejects.

fn programs_updates_and_removes_rules_with(backend: Backend) {
    let Some(env) = Env::started(backend, DaemonOptions::new(backend.as_str())) else { return };
    let (ip0, ip1, client_ip) = (env.pod_ip(0), env.pod_ip(1), env.pod_ip(CLIENT));
    // Before the Service exists the ClusterIP is unreachable (no DNAT, no REJECT).
    let before = traffic::request(env.client(), Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), REQUEST);
    assert_eq!(before, Reply::Unreachable, "ClusterIP answered before the Service existed");

    // Create: measure apply → first answer (each attempt fails fast with "unreachable"). Let
    // the min sync period (100 ms) since the start-up syncs pass, so that it is not measured.
    // (The Service and its slice arrive on two watches: when they land in two syncs, the
    // second waits for the min sync period.)
    thread::sleep(Duration::from_millis(300));
    let applied = Instant::now();
    env.api.apply(web());
    env.api.apply(web_slice(&[ip0]));
    env.until("the first TCP answer through the ClusterIP", || {
        let reply = traffic::request(env.client(), Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), REQUEST);
        (reply.server() == Some("pod-0")).then_some(())
    });
    let latency = applied.elapsed();
    eprintln!("[{backend}] event-to-rule latency (apply → first TCP answer): {} ms", latency.as_millis());
    env.until_served_by(Proto::Udp, &["pod-0"], 3);
    for reply in env.tcp(5) {
        // Pod to service: not masqueraded.
        assert_eq!(reply, Reply::Answer { server: "pod-0".into(), client: client_ip.into() }, "web via ClusterIP");
    }

    // A Service without endpoints: REJECT (refused), not "unreachable" as without rules.
    // One object, one event: its latency is not split by the min sync period.
    let applied = Instant::now();
    env.api.apply(empty());
    env.until("TCP to a Service without endpoints is refused", || {
        let reply = traffic::request(env.client(), Proto::Tcp, SocketAddr::from((EMPTY_IP, 80)), REQUEST);
        (reply == Reply::Refused).then_some(())
    });
    eprintln!("[{backend}] event-to-rule latency (apply → REJECT active): {} ms", applied.elapsed().as_millis());

    // Scale up: both backends answer, through a partial restore smaller than a full one.
    let before = env.scrape();
    env.api.apply(web_slice(&[ip0, ip1]));
    env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 20);
    env.until_served_by(Proto::Udp, &["pod-0", "pod-1"], 20);
    let after = env.scrape();
    let partials = after.get(RESTORE_COUNT_PARTIAL) - before.get(RESTORE_COUNT_PARTIAL);
    let partial_bytes = after.get(RESTORE_BYTES_PARTIAL) - before.get(RESTORE_BYTES_PARTIAL);
    if partials < 1.0 {
        env.fail(&format!("the scale-up was not applied by a partial restore:\n{}", after.0));
    }
    // A quiet sync period: the periodic sync checks the canaries and restores nothing.
    let syncs = |s: &Scrape| s.get(SYNCS);
    let quiet = env.until("a periodic sync", || {
        let now = env.scrape();
        (syncs(&now) > syncs(&after)).then_some(now)
    });
    for series in [RESTORE_COUNT_FULL, RESTORE_COUNT_PARTIAL] {
        if quiet.get(series) != after.get(series) {
            env.fail(&format!("a quiet sync period restored something ({series}):\n{}", quiet.0));
        }
    }
    // Someone deletes the mangle canary: the next periodic sync is full and rewrites the same
    // ruleset in full (and puts the canary back).
    let canary = ["-t", "mangle", "-X", "KUBE-PROXY-CANARY"];
    let iptables = backend.binary(IpFamily::V4, Tool::Command);
    env.lab.node.run_ok(&[&[iptables.as_str()][..], &canary[..]].concat());
    let full = env.until("a full sync after the canary was deleted", || {
        let now = env.scrape();
        (now.get(RESTORE_COUNT_FULL) > quiet.get(RESTORE_COUNT_FULL)).then_some(now)
    });
    if !env.save().contains(":KUBE-PROXY-CANARY") {
        env.fail("the full sync did not put the canary back");
    }
    let fulls = full.get(RESTORE_COUNT_FULL) - quiet.get(RESTORE_COUNT_FULL);
    let full_bytes = full.get(RESTORE_BYTES_FULL) - quiet.get(RESTORE_BYTES_FULL);
    eprintln!(
        "[{backend}] restore sizes: scale-up {partial_bytes} B in {partials} partial restore(s); \
         the same ruleset {full_bytes} B in {fulls} full restore(s)"
    );
    if partial_bytes / partials >= full_bytes / fulls {
        env.fail(&format!("partial restores ({partial_bytes} B) are not smaller than full ones ({full_bytes} B)"));
    }
    let save = env.save();
    for ip in [ip0, ip1] {
        assert!(save.contains(&format!("--to-destination {ip}:8080")), "no DNAT to {ip}:8080 in:\n{save}");
    }

    // Remove an endpoint: every request keeps being answered, soon only by the survivor.
    env.api.apply(web_slice(&[ip1]));
    let converged = poll(WAIT, Duration::from_millis(100), || {
        let replies = env.tcp(10);
        if answered_by(&replies).is_none() {
            env.fail(&format!("a request failed while an endpoint was removed: {:?}", traffic::tally(&replies)));
        }
        (answered_by(&replies) == Some(vec!["pod-1".to_string()])).then_some(())
    });
    converged.unwrap_or_else(|| env.fail("traffic still reaches the removed endpoint"));
    env.until_served_by(Proto::Udp, &["pod-1"], 10);

    // Delete the Service: its chains go; the ClusterIP is unreachable again.
    env.api.delete("Service", "default", "web");
    env.api.delete("EndpointSlice", "default", &objects::slice_name("web"));
    // (Whichever deletion the daemon sees first, the end state is: no chains, no REJECT.)
    env.until("the deleted Service's chains and rules to go", || {
        let reply = traffic::request(env.client(), Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), REQUEST);
        (reply == Reply::Unreachable && env.service_chains().is_empty()).then_some(())
    });
    let refused = traffic::request(env.client(), Proto::Tcp, SocketAddr::from((EMPTY_IP, 80)), REQUEST);
    if refused != Reply::Refused {
        env.fail(&format!("the Service without endpoints lost its REJECT: {refused}"));
    }
}

#[test]
fn programs_updates_and_removes_rules() {
    programs_updates_and_removes_rules_with(Backend::Nft);
}

#[test]
fn programs_updates_and_removes_rules_legacy() {
    programs_updates_and_removes_rules_with(Backend::Legacy);
}

// ---------------------------------------------------------------------------------------------
// 2. Watch drops, compaction (410 → relist) and an API outage.

const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

#[test]
fn survives_watch_drops_compaction_and_api_outage() {
    let Some(mut env) = Env::started(Backend::Nft, DaemonOptions::new("nft")) else { return };
    let (ip0, ip1) = (env.pod_ip(0), env.pod_ip(1));
    env.api.apply(web());
    env.api.apply(web_slice(&[ip0]));
    env.until_served_by(Proto::Tcp, &["pod-0"], 3);

    // Cut every watch, change the slice while nobody watches, forget the history: the
    // watchers' resumes get 410 Expired and must relist to see the change.
    let lists_before = env.api.request_log().iter().filter(|r| r.is_list_of(SLICES)).count();
    {
        let _hold = env.api.hold_watches();
        env.api.drop_watches();
        env.api.apply(web_slice(&[ip0, ip1]));
        env.api.compact();
        thread::sleep(Duration::from_millis(300));
    }
    env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 20);
    let lists_after = env.api.request_log().iter().filter(|r| r.is_list_of(SLICES)).count();
    if lists_after <= lists_before {
        env.fail(&format!("the change converged without a relist of {SLICES} ({lists_before} → {lists_after} lists)"));
    }

    // Outage: rules keep working, /healthz stays 200 (nothing is pending).
    let requests_before = env.api.request_log().len();
    env.api.set_unavailable(true);
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < OUTAGE {
        let replies = env.tcp(2);
        if answered_by(&replies).is_none() {
            env.fail(&format!("traffic failed during the API outage: {:?}", traffic::tally(&replies)));
        }
        let health = env.daemon().healthz();
        if health != Some(200) {
            env.fail(&format!("/healthz answered {health:?} during the API outage"));
        }
        probes += 1;
        thread::sleep(Duration::from_millis(200));
    }
    env.api.set_unavailable(false);
    let outage_log = env.api.request_log();
    let refused = outage_log[requests_before.min(outage_log.len())..].iter().filter(|r| r.status == 503).count();
    eprintln!("[nft] outage of {OUTAGE:?}: {probes} probe rounds all answered; the daemon got {refused} × 503");
    if refused == 0 {
        env.fail("the daemon never asked the API server during the outage (no 503 in the request log)");
    }
    if env.daemon().exited().is_some() {
        env.fail("the daemon exited during the API outage");
    }

    // Back: a change made now converges.
    let back = Instant::now();
    env.api.apply(web_slice(&[ip1]));
    // After 30 s of 503s the watchers sit in their retry backoff (0.8 s doubling to 30 s, like
    // client-go's reflector), so the first change can take up to one backoff interval to land.
    env.until_served_by_within(Duration::from_secs(45), Proto::Tcp, &["pod-1"], 10);
    eprintln!("[nft] first change after the outage converged in {} ms", back.elapsed().as_millis());
    let watches = env.api.request_log().iter().filter(|r| r.verb == Verb::Watch && r.status == 200).count();
    assert!(watches > 0, "no successful watch at all");
}

// ---------------------------------------------------------------------------------------------
// 3. A failing iptables-restore keeps the last good rules; the change lands once it works.

const INJECTED: &str = "kubenat-e2e: injected restore failure";

#[test]
fn restore_failure_keeps_last_good_rules_and_recovers() {
    let real = std::path::Path::new("/usr/sbin/iptables-nft-restore").exists();
    if !testkit::require_root() || !testkit::require(real, "/usr/sbin/iptables-nft-restore not installed") {
        return;
    }
    let wrappers = tempfile::tempdir().expect("temp dir");
    let flag = wrappers.path().join("fail-restore");
    let script = format!(
        "#!/bin/sh\nif [ -e '{flag}' ]; then\n  cat >/dev/null\n  echo '{INJECTED}' >&2\n  exit 1\nfi\n\
         exec /usr/sbin/iptables-nft-restore \"$@\"\n",
        flag = flag.display()
    );
    let wrapper = wrappers.path().join("iptables-nft-restore");
    std::fs::write(&wrapper, script).expect("write wrapper");
    std::process::Command::new("chmod").arg("+x").arg(&wrapper).status().expect("chmod");
    let opts = DaemonOptions { path_prefix: Some(wrappers.path().to_path_buf()), ..DaemonOptions::new("nft") };
    let Some(env) = Env::started(Backend::Nft, opts) else { return };
    let (ip0, ip1) = (env.pod_ip(0), env.pod_ip(1));
    env.api.apply(web());
    env.api.apply(web_slice(&[ip0]));
    env.until_served_by(Proto::Tcp, &["pod-0"], 3);

    // Restores fail: the scale-up cannot land; the old rules keep carrying traffic.
    std::fs::write(&flag, "").expect("flag");
    env.api.apply(web_slice(&[ip0, ip1]));
    let failures = env.until("a failed restore in /metrics", || {
        let scrape = env.scrape();
        let n = (scrape.get(RESTORE_FAILURES), scrape.get(PARTIAL_RESTORE_FAILURES));
        (n.0 + n.1 > 0.0).then_some(n)
    });
    eprintln!("[nft] with restores failing: {} full and {} partial restore failures", failures.0, failures.1);
    for _ in 0..3 {
        let replies = env.tcp(10);
        if answered_by(&replies) != Some(vec!["pod-0".to_string()]) {
            env.fail(&format!("the last good rules did not keep serving: {:?}", traffic::tally(&replies)));
        }
        thread::sleep(Duration::from_millis(300));
    }
    let log = env.daemon.as_ref().expect("daemon").log();
    if !log.contains(INJECTED) {
        env.fail("the daemon's log does not show what iptables-restore printed");
    }

    // Restores work again: the change lands within a few seconds (retry backoff ≤ 5 s).
    std::fs::remove_file(&flag).expect("remove flag");
    let fixed = Instant::now();
    env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 20);
    eprintln!("[nft] change landed {} ms after restores started working again", fixed.elapsed().as_millis());
    let health = env.daemon.as_ref().expect("daemon").healthz();
    assert_eq!(health, Some(200), "/healthz after recovery");
}

// ---------------------------------------------------------------------------------------------
// 4. A restart leaves the rules in place and the new daemon takes over without a gap.

#[test]
fn restart_without_a_gap() {
    let Some(mut env) = Env::started(Backend::Nft, DaemonOptions::new("nft")) else { return };
    let (ip0, ip1) = (env.pod_ip(0), env.pod_ip(1));
    env.api.apply(web());
    env.api.apply(web_slice(&[ip0, ip1]));
    env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 20);

    // The old daemon is stopped and a new one started while the prober runs.
    let mut old = env.daemon.take().expect("daemon started");
    let n = env.starts + 1;
    let log = env.dir.path().join(format!("kubenat-{n}.log"));
    let kubeconfig = env.api.kubeconfig(env.dir.path());
    let stop = AtomicBool::new(false);
    let replies = Mutex::new(Vec::new());
    let probe = || {
        // Fresh connections, about ten a second, until told to stop (at least 40).
        while !stop.load(Ordering::Relaxed) || replies.lock().unwrap().len() < 40 {
            let reply = traffic::request(env.client(), Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), REQUEST);
            replies.lock().unwrap().push((Instant::now(), reply));
            thread::sleep(Duration::from_millis(60));
        }
    };
    let mut restart = || {
        thread::sleep(Duration::from_millis(1500));
        let stopped = Instant::now();
        let status = old.terminate();
        assert!(status.success(), "daemon exit status after SIGTERM: {status}; log:\n{}", old.log());
        assert!(!env.service_chains().is_empty(), "rules were removed on shutdown; log:\n{}", old.log());
        let mut new = Daemon::start(&env.lab.node, &kubeconfig, &log, &env.opts);
        new.wait_full_syncs(1.0, WAIT);
        let synced = Instant::now();
        thread::sleep(Duration::from_millis(1500));
        (new, stopped, synced)
    };
    let (new, stopped, synced) = thread::scope(|scope| {
        let prober = scope.spawn(probe);
        let outcome = restart();
        stop.store(true, Ordering::Relaxed);
        prober.join().expect("prober");
        outcome
    });
    env.daemon = Some(new);
    env.starts = n;
    let replies = replies.into_inner().unwrap();
    let failed: Vec<String> = replies
        .iter()
        .filter(|(_, r)| r.server().is_none())
        .map(|(t, r)| format!("{r} at +{:?}", t.duration_since(stopped)))
        .collect();
    let after_sync = replies.iter().filter(|(t, _)| *t > synced).count();
    eprintln!(
        "[nft] restart: {} requests, {} after the new daemon's first sync, {} failed; down→synced {} ms",
        replies.len(),
        after_sync,
        failed.len(),
        synced.duration_since(stopped).as_millis()
    );
    if !failed.is_empty() {
        env.fail(&format!("requests failed across the restart: {failed:?}"));
    }
    assert!(after_sync >= 5, "too few requests after the new daemon synced ({after_sync})");
    let all: Vec<Reply> = replies.into_iter().map(|(_, r)| r).collect();
    assert_eq!(answered_by(&all), Some(vec!["pod-0".to_string(), "pod-1".to_string()]), "both backends served");
}

// ---------------------------------------------------------------------------------------------
// 5. UDP conntrack cleanup moves a pinned flow off a removed endpoint.

/// argv: host port sport timeout count. One line per datagram, from source port `sport`.
const UDP_FROM_PY: &str = r#"
import socket, sys
host, port, sport, timeout, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", sport))
    s.settimeout(timeout)
    s.connect((host, port))
    try:
        s.send(b"hello\n")
        print("ok " + s.recv(4096).decode(errors="replace").strip())
    except TimeoutError:
        print("timeout")
    except ConnectionRefusedError:
        print("refused")
    except OSError as e:
        print("error " + str(e))
    s.close()
    sys.stdout.flush()
"#;

/// `count` datagrams to the ClusterIP's UDP port from source port `sport`; the answering
/// servers' names (or `timeout`/`refused`/`error …`).
fn udp_from(ns: &NetNs, sport: u16, count: usize) -> Vec<String> {
    let (sport, n) = (sport.to_string(), count.to_string());
    let argv = ns.argv(&[daemon::python(), "-c", UDP_FROM_PY, "10.96.0.10", "53", &sport, "1", &n]);
    let out = testkit::process::run(&argv, Duration::from_secs(3) + REQUEST * 2 * count as u32);
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<String> = text
        .lines()
        .map(|l| l.strip_prefix("ok ").and_then(|a| a.split_whitespace().next()).unwrap_or(l).to_string())
        .collect();
    assert_eq!(results.len(), count, "udp client: {text}{}", String::from_utf8_lossy(&out.stderr));
    results
}

#[test]
fn udp_flow_moves_after_endpoint_removal() {
    if !testkit::require_root() || !testkit::require_program("conntrack") {
        return;
    }
    // Debug logs show each conntrack reconciliation (flows listed, stale, deleted).
    let opts = DaemonOptions { log: "info,kubenat::sync=debug", ..DaemonOptions::new("nft") };
    let Some(env) = Env::started(Backend::Nft, opts) else { return };
    let (ip0, ip1) = (env.pod_ip(0), env.pod_ip(1));
    let before = env.scrape();
    env.api.apply(web());
    env.api.apply(web_slice(&[ip0, ip1]));
    env.until_served_by(Proto::Udp, &["pod-0", "pod-1"], 20);
    // The sync that programmed the new Service also deletes every UDP entry to it (they were
    // black-holed before), right *after* its restore: wait until it finished (its change
    // counters are updated last) so that it cannot delete the flow pinned below.
    env.until("the sync of the new Service and its slice to finish", || {
        let now = env.scrape();
        let counted = |series| now.get(series) > before.get(series);
        (counted(ENDPOINT_CHANGES) && counted(SERVICE_CHANGES)).then_some(())
    });

    // A source port whose flow went to pod 1 (each port is a new flow: a coin flip).
    let sport = (41_000..41_040)
        .find(|&port| udp_from(env.client(), port, 1) == ["pod-1"])
        .unwrap_or_else(|| env.fail("40 UDP flows, none to pod-1"));
    let pinned = udp_from(env.client(), sport, 3);
    if pinned != ["pod-1"; 3] {
        let flows = env.lab.node.run_ok(&["conntrack", "-L", "-p", "udp"]);
        env.fail(&format!("the flow from port {sport} is not pinned to pod-1: {pinned:?}; conntrack:\n{flows}"));
    }

    // pod-1 leaves the slice (its server keeps running, so only conntrack cleanup can move
    // the flow: the stale entry would keep DNATing to pod-1).
    env.api.apply(web_slice(&[ip0]));
    let moved = Instant::now();
    env.until("the pinned UDP flow to move to pod-0", || (udp_from(env.client(), sport, 1) == ["pod-0"]).then_some(()));
    eprintln!("[nft] UDP flow from port {sport} moved to pod-0 after {} ms", moved.elapsed().as_millis());
    let flows = env.lab.node.run_ok(&["conntrack", "-L", "-p", "udp"]);
    let stale: Vec<&str> = flows.lines().filter(|l| l.contains(&format!("src={ip1} "))).collect();
    if !stale.is_empty() {
        env.fail(&format!("conntrack still has flows to the removed endpoint {ip1}:\n{}", stale.join("\n")));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. `--cleanup` removes kube-proxy's chains and jumps and nothing else.

/// Chains `--cleanup` must remove (besides every `KUBE-SVC-`/`KUBE-SEP-`/… service chain).
const OWNED: [&str; 6] = [
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-PROXY-FIREWALL",
];

fn owned_chain(name: &str) -> bool {
    OWNED.contains(&name)
        || ["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-"].iter().any(|p| name.starts_with(p))
}

#[test]
fn cleanup_removes_only_our_chains() {
    let Some(mut env) = Env::new(Backend::Nft, DaemonOptions::new("nft")) else { return };
    // flannel's masquerade chain and its jump: not ours, must survive.
    for args in [
        "-t nat -N FLANNEL-POSTRTG",
        "-t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment flanneld-masq -j RETURN",
        "-t nat -A POSTROUTING -m comment --comment flanneld-masq -j FLANNEL-POSTRTG",
    ] {
        let argv: Vec<&str> = std::iter::once("iptables-nft").chain(args.split_whitespace()).collect();
        env.lab.node.run_ok(&argv);
    }
    env.start_daemon();
    env.api.apply(web());
    env.api.apply(web_slice(&[env.pod_ip(0)]));
    env.until_served_by(Proto::Tcp, &["pod-0"], 3);
    let status = env.daemon().terminate();
    assert!(status.success(), "daemon exit status after SIGTERM: {status}");
    let kept = env.save();
    assert!(
        chains(&kept).iter().any(|c| owned_chain(c) && c.starts_with("KUBE-SVC-")),
        "rules removed on shutdown:\n{kept}"
    );

    let out = env.lab.node.exec(&[daemon::bin(), "--cleanup", "--iptables-backend", "nft"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        env.fail(&format!("kubenat --cleanup failed ({}):\n{stdout}{stderr}", out.status));
    }
    eprintln!("[nft] kubenat --cleanup: {}", stdout.trim().replace('\n', "; "));

    let save = env.save();
    let left: Vec<&str> = save
        .lines()
        .filter(|line| {
            let declared = line.strip_prefix(':').and_then(|l| l.split_whitespace().next()).is_some_and(owned_chain);
            let jump = line.split(" -j ").nth(1).and_then(|t| t.split_whitespace().next()).is_some_and(owned_chain);
            declared || jump
        })
        .collect();
    if !left.is_empty() {
        env.fail(&format!("--cleanup left kube-proxy chains or jumps:\n{}", left.join("\n")));
    }
    assert!(chains(&save).contains(&"FLANNEL-POSTRTG".to_string()), "FLANNEL-POSTRTG removed:\n{save}");
    assert!(
        save.lines().any(|l| l.starts_with("-A POSTROUTING") && l.ends_with("-j FLANNEL-POSTRTG")),
        "the POSTROUTING jump to FLANNEL-POSTRTG was removed:\n{save}"
    );
    let after = traffic::request(env.client(), Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), REQUEST);
    assert_eq!(after, Reply::Unreachable, "the ClusterIP is still handled after --cleanup");
}

// ---------------------------------------------------------------------------------------------
// 7. `/debug/services`: the daemon's own view matches what `kubenat render` writes, lists the
//    endpoints, and `lastProgrammed` follows an endpoint change.

/// `/debug/services/default/web` as JSON, `None` unless it answers 200.
fn debug_web(env: &Env) -> Option<Value> {
    let (code, body) = env.daemon.as_ref()?.metrics_port_get("/debug/services/default/web")?;
    (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// The `http` port's entry of a `/debug/services/default/web` body.
fn http_port(body: &Value) -> Option<&Value> {
    body["ports"].as_array()?.iter().find(|p| p["port"] == "http")
}

/// Every chain name a `/debug/services/NS/NAME` body gives (SVC/SVL/EXT/FW and each SEP).
fn debug_chains(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for port in body["ports"].as_array().into_iter().flatten() {
        for key in ["SVC", "SVL", "EXT", "FW"] {
            out.extend(port["chains"][key].as_str().map(str::to_string));
        }
        for ep in port["endpoints"].as_array().into_iter().flatten() {
            out.extend(ep["chain"].as_str().map(str::to_string));
        }
    }
    out.sort();
    out
}

/// The per-service chains `kubenat render` declares for `objects`.
fn rendered_chains(dir: &std::path::Path, objects: &[Value]) -> Vec<String> {
    let manifests = dir.join("render-objects");
    std::fs::create_dir_all(&manifests).expect("manifest dir");
    for (i, object) in objects.iter().enumerate() {
        std::fs::write(manifests.join(format!("{i}.json")), object.to_string()).expect("manifest");
    }
    let out = std::process::Command::new(daemon::bin())
        .args(["render", "--objects"])
        .arg(&manifests)
        .args(["--hostname-override=node-1", "--cluster-cidr=10.244.0.0/16"])
        .output()
        .expect("kubenat render");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubenat render: {}{text}", String::from_utf8_lossy(&out.stderr));
    let prefixes = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"];
    let mut names: Vec<String> =
        chains(&text).into_iter().filter(|c| prefixes.iter().any(|p| c.starts_with(p))).collect();
    names.sort();
    names
}

fn time_of(port: &Value, field: &str) -> std::time::SystemTime {
    let text = port[field].as_str().unwrap_or_default();
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
}

#[test]
fn debug_services_shows_what_the_daemon_programmed() {
    let Some(env) = Env::started(Backend::Nft, DaemonOptions::new("nft")) else { return };
    let (ip0, ip1) = (env.pod_ip(0), env.pod_ip(1));
    env.api.apply(web());
    env.api.apply(web_slice(&[ip0]));
    env.until_served_by(Proto::Tcp, &["pod-0"], 3);
    let first = env.until("/debug/services/default/web with one endpoint per port", || {
        debug_web(&env).filter(|b| http_port(b).and_then(|p| p["endpoints"].as_array()).is_some_and(|e| e.len() == 1))
    });
    assert_eq!(first["lastSync"]["result"], "ok", "{first:#}");

    let want = rendered_chains(env.dir.path(), &[web(), web_slice(&[ip0])]);
    assert_eq!(debug_chains(&first), want, "the daemon's chains are not kubenat render's:\n{first:#}");
    let http = http_port(&first).expect("http port");
    assert_eq!(http["endpoints"][0]["address"], format!("{ip0}:8080"));
    assert_eq!(
        (http["endpoints"][0]["ready"].as_bool(), http["endpoints"][0]["local"].as_bool()),
        (Some(true), Some(true))
    );
    let programmed = time_of(http, "lastProgrammed");

    env.api.apply(web_slice(&[ip0, ip1]));
    let second = env.until("/debug/services/default/web with two endpoints", || {
        debug_web(&env).filter(|b| http_port(b).and_then(|p| p["endpoints"].as_array()).is_some_and(|e| e.len() == 2))
    });
    let http = http_port(&second).expect("http port");
    assert!(time_of(http, "lastProgrammed") > programmed, "lastProgrammed did not move:\n{second:#}");
    assert_eq!(http["firstProgrammed"], http_port(&first).expect("http port")["firstProgrammed"]);
    let want = rendered_chains(env.dir.path(), &[web(), web_slice(&[ip0, ip1])]);
    assert_eq!(debug_chains(&second), want, "{second:#}");

    let daemon = env.daemon.as_ref().expect("daemon");
    let (code, body) = daemon.metrics_port_get("/debug/services/default/nope").expect("answers");
    assert_eq!(code, 404, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(error["error"].is_string(), "{body}");
    let (code, body) = daemon.metrics_port_get("/debug/services").expect("answers");
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let ports = list["servicePorts"].as_array().map(Vec::len).unwrap_or_default();
    assert!(ports >= 2, "every service port is listed:\n{body}");
}
