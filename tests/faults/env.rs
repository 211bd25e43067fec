//! The fault tests' environment: a lab (backend pods 0..3 serving `pod-N` on 8080/TCP and
//! 5353/UDP, client pod 3), the test API server in the node namespace, the daemon (restartable,
//! killable), a traffic probe from the client pod, and the final check that the kernel's rules
//! equal `kubenat render` of the API server's objects (semantic diff, kubenat's chains only).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kubenat::apply::exec::{Backend, Tool};
use kubenat::inspect::diff::{diff, DiffOptions};
use kubenat::model::IpFamily;
use kubenat::rules::parse::parse;
use kubenat::rules::ruleset::TableName;
use serde_json::json;
use tempfile::TempDir;

use testkit::apiserver::ApiServer;
use testkit::daemon::{bin, poll, Daemon, DaemonOptions, Scrape};
use testkit::lab::Lab;
use testkit::netns::NetNs;
use testkit::objects;
use testkit::probe::{Probe, ProbeConfig, Target};
use testkit::traffic::{Proto, Server};

/// Backend pods (0..BACKENDS); each serves `pod-N` on 8080/TCP and 5353/UDP.
pub const BACKENDS: usize = 3;
/// The client pod (runs the probe).
pub const CLIENT: usize = BACKENDS;
/// Every "eventually" without its own bound.
pub const WAIT: Duration = Duration::from_secs(10);

/// A lab with backends, the API server, and (once started) the daemon. Fields drop in order:
/// daemon first, namespaces last.
pub struct Env {
    /// The running daemon, if any.
    pub daemon: Option<Daemon>,
    /// The test API server (in the node namespace).
    pub api: ApiServer,
    /// Per backend pod: its TCP and UDP servers (`None` while killed).
    servers: Vec<Option<(Server, Server)>>,
    /// The namespaces.
    pub lab: Lab,
    /// Logs, kubeconfig, rendered objects, wrappers.
    pub dir: TempDir,
    /// The iptables backend the daemon uses.
    pub backend: Backend,
    /// How daemons are started.
    pub opts: DaemonOptions,
    /// Daemons started so far (logs are `kubenat-N.log`).
    pub starts: u32,
    /// Extra `kubenat render` arguments for the final check (userspace mode).
    pub render_args: Vec<String>,
    /// Userspace mode: the proxy port range. The live proxy picks ports in it at random, the
    /// renderer consecutively, so the final check compares rules with these ports masked.
    pub proxy_ports: Option<std::ops::RangeInclusive<u16>>,
}

impl Env {
    /// `None` (test skipped) when not root or the backend's tools are missing.
    pub fn new(backend: Backend, opts: DaemonOptions) -> Option<Env> {
        let tools = [backend.binary(IpFamily::V4, Tool::Restore), backend.binary(IpFamily::V4, Tool::Save)];
        if !testkit::require_root() || !tools.iter().all(|t| testkit::require_program(t)) {
            return None;
        }
        let lab = Lab::new(BACKENDS + 1);
        let servers = (0..BACKENDS).map(|i| Some(start_servers(&lab, i))).collect();
        let api = ApiServer::start_in_netns(lab.node.name());
        api.apply(objects::node(objects::NODE, Some(lab.pod(0).gateway)));
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Env {
            daemon: None,
            api,
            servers,
            lab,
            dir,
            backend,
            opts,
            starts: 0,
            render_args: Vec::new(),
            proxy_ports: None,
        })
    }

    /// The address of backend pod `i`.
    pub fn backend_ip(&self, i: usize) -> Ipv4Addr {
        self.lab.pod(i).ip
    }

    /// The client pod's namespace.
    pub fn client(&self) -> &NetNs {
        &self.lab.pod(CLIENT).ns
    }

    /// Starts a daemon without waiting for anything.
    pub fn spawn_daemon(&mut self) {
        self.starts += 1;
        let kubeconfig = self.api.kubeconfig(self.dir.path());
        let log = self.dir.path().join(format!("kubenat-{}.log", self.starts));
        self.daemon = Some(Daemon::start(&self.lab.node, &kubeconfig, &log, &self.opts));
    }

    /// Starts a daemon and waits for its first full restore.
    pub fn start_daemon(&mut self) {
        self.spawn_daemon();
        self.daemon_mut().wait_full_syncs(1.0, WAIT);
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon started")
    }

    /// The running daemon, mutably.
    pub fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("daemon started")
    }

    /// `/metrics`, or a failure with the logs.
    pub fn scrape(&self) -> Scrape {
        poll(Duration::from_secs(3), Duration::from_millis(100), || self.daemon().metrics())
            .unwrap_or_else(|| self.fail("/metrics did not answer"))
    }

    /// Kills backend pod `i`'s servers.
    pub fn kill_backend(&mut self, i: usize) {
        self.servers[i] = None;
    }

    /// (Re)starts backend pod `i`'s servers; returns once they listen.
    pub fn start_backend(&mut self, i: usize) {
        self.servers[i] = Some(start_servers(&self.lab, i));
    }

    /// A probe from the client pod.
    pub fn probe(&self, targets: Vec<Target>, config: ProbeConfig) -> Probe {
        Probe::start(self.client(), targets, config)
    }

    /// `iptables-save` of the node (all tables).
    pub fn save(&self) -> String {
        self.lab.node_save(self.backend)
    }

    /// Panics with `what`, the node's rules and every daemon log.
    pub fn fail(&self, what: &str) -> ! {
        let mut logs = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path().join(format!("kubenat-{n}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // The tail is what matters; whole logs of a churn run are long.
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            logs += &format!("\n--- daemon log #{n} (last 80 lines) ---\n{}", tail.join("\n"));
        }
        panic!("{what}\n--- iptables-save ({}) ---\n{}{logs}", self.backend, self.save());
    }

    /// Polls `check` every 100 ms for at most `limit`; fails with context on timeout.
    pub fn until<T>(&self, limit: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
        poll(limit, Duration::from_millis(100), check)
            .unwrap_or_else(|| self.fail(&format!("timed out after {limit:?}: {what}")))
    }

    /// `kubenat render --jumps` of every object the API server holds now.
    pub fn rendered(&self) -> String {
        let path = self.dir.path().join("objects.json");
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": self.api.objects() });
        std::fs::write(&path, list.to_string()).expect("write objects");
        let path_text = path.to_string_lossy();
        let mut args = vec![
            "render",
            "--objects",
            path_text.as_ref(),
            "--hostname-override",
            objects::NODE,
            "--cluster-cidr",
            testkit::lab::CLUSTER_CIDR,
            "--jumps",
        ];
        args.extend(self.render_args.iter().map(String::as_str));
        // What the daemon probes on the node and `render` takes as a flag: the nfacct counters.
        if self.lab.node.inside(|| kubenat::host::NetlinkNfacct::probe().is_ok()) {
            args.push("--nfacct");
        }
        let out = std::process::Command::new(bin()).args(&args).output().expect("run kubenat render");
        if !out.status.success() {
            self.fail(&format!("kubenat render failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The semantic diff (kubenat's chains and jumps only) between the kernel and
    /// `kubenat render` of the current objects; `None` when they are equal.
    pub fn render_diff(&self) -> Option<String> {
        let rendered = self.mask_proxy_ports(&self.rendered());
        let saved = self.mask_proxy_ports(&self.save());
        // The canary chain is made by the apply step, not the renderer: it must be in the filter
        // and nat tables (its absence would mean a flush went unnoticed), and is then left out.
        let full = parse(&saved).unwrap_or_else(|e| self.fail(&format!("iptables-save does not parse: {e}")));
        for table in [TableName::Filter, TableName::Nat] {
            if !full.table(table).is_some_and(|t| t.is_declared("KUBE-PROXY-CANARY")) {
                return Some(format!("no KUBE-PROXY-CANARY chain in the kernel's {table} table"));
            }
        }
        let canary = ":KUBE-PROXY-CANARY ";
        let saved: String = saved.lines().filter(|l| !l.starts_with(canary)).map(|l| format!("{l}\n")).collect();
        let ours = parse(&rendered).unwrap_or_else(|e| self.fail(&format!("rendered rules do not parse: {e}")));
        let kernel = parse(&saved).unwrap_or_else(|e| self.fail(&format!("iptables-save does not parse: {e}")));
        let d = diff(&ours, &kernel, &DiffOptions { kube_only: true });
        (!d.is_empty()).then(|| d.to_string())
    }

    /// `--to-ports N` and `--to-destination IP:N` with `N` in the proxy port range → `PROXYPORT`.
    fn mask_proxy_ports(&self, text: &str) -> String {
        let Some(range) = &self.proxy_ports else {
            return text.to_string();
        };
        let mask = |word: &str| -> String {
            let (head, port) = word.rsplit_once(':').map_or(("", word), |(h, p)| (h, p));
            match port.parse::<u16>() {
                Ok(p) if range.contains(&p) && head.is_empty() => "PROXYPORT".to_string(),
                Ok(p) if range.contains(&p) => format!("{head}:PROXYPORT"),
                _ => word.to_string(),
            }
        };
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let masked: Vec<String> = words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let after_target_option = i > 0 && matches!(words[i - 1], "--to-ports" | "--to-destination");
                    if after_target_option {
                        mask(w)
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            out.push_str(&masked.join(" "));
            out.push('\n');
        }
        out
    }

    /// Waits (≤ `limit`) until the kernel's rules equal `kubenat render` of the final objects;
    /// returns how long that took. Fails with the last diff otherwise.
    pub fn assert_converged(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        let mut last = String::new();
        let equal = poll(limit, Duration::from_millis(250), || match self.render_diff() {
            None => Some(()),
            Some(d) => {
                last = d;
                None
            }
        });
        if equal.is_none() {
            self.fail(&format!(
                "the kernel's rules did not converge to `kubenat render` of the final objects within {limit:?}; \
                 diff (A = render, B = kernel):\n{last}"
            ));
        }
        started.elapsed()
    }
}

fn start_servers(lab: &Lab, i: usize) -> (Server, Server) {
    let name = format!("pod-{i}");
    let ns = &lab.pod(i).ns;
    (Server::start(ns, Proto::Tcp, 8080, &name), Server::start(ns, Proto::Udp, 5353, &name))
}

/// Probe targets `<service>/http` (TCP port 80) and `<service>/dns` (UDP port 53) of each
/// `(service, ClusterIP)`.
pub fn web_targets(services: &[(&str, Ipv4Addr)]) -> Vec<Target> {
    let mut targets = Vec::new();
    for (name, ip) in services {
        targets.push(Target::new(&format!("{name}/http"), Proto::Tcp, SocketAddr::from((*ip, 80))));
        targets.push(Target::new(&format!("{name}/dns"), Proto::Udp, SocketAddr::from((*ip, 53))));
    }
    targets
}

/// An executable shell script `name` in `dir`.
pub fn write_script(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let status = std::process::Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
    assert!(status.success(), "chmod +x {}", path.display());
    path
}

/// ClusterIP of probed Service `p<i>`.
pub fn probed_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 1, u8::try_from(i + 1).expect("few probed services"))
}

impl Env {
    /// Creates probed Services `p0..p<n>` (`http` 80→8080/TCP, `dns` 53→5353/UDP), each with
    /// every backend pod ready; returns their names and ClusterIPs.
    pub fn apply_probed(&self, n: usize) -> Vec<(String, Ipv4Addr)> {
        let ready: Vec<(Ipv4Addr, objects::EpState)> =
            (0..BACKENDS).map(|i| (self.backend_ip(i), objects::EpState::Ready)).collect();
        (0..n)
            .map(|i| {
                let name = format!("p{i}");
                self.api.apply(objects::service(&name, probed_ip(i), &objects::web_ports()));
                self.api.apply(objects::slice(&name, &objects::on_this_node(&ready), &objects::web_ports()));
                (name, probed_ip(i))
            })
            .collect()
    }

    /// Waits until one round of requests to every target is answered.
    pub fn until_all_answer(&self, targets: &[Target]) {
        use testkit::traffic::{request, Reply};
        self.until(WAIT, "every probed Service answers", || {
            targets
                .iter()
                .all(|t| {
                    matches!(request(self.client(), t.proto, t.addr, Duration::from_secs(1)), Reply::Answer { .. })
                })
                .then_some(())
        });
    }
}
