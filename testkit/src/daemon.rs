//! The real `kubenat` daemon inside a lab's node namespace: started with kube-proxy's flags
//! against a kubeconfig, its output captured in a log file (printed by failing assertions),
//! `/metrics` and `/healthz` read from inside the namespace, stopped with SIGTERM or killed by
//! its guard.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::netns::NetNs;
use super::process::{self, COMMAND_TIMEOUT};

/// The daemon binary under test: `kubenat` next to the test binary's `deps/` folder, where
/// cargo builds it for every integration test (`CARGO_BIN_EXE_kubenat` only exists inside the
/// test crates themselves).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
        let bin = dir.join("kubenat");
        assert!(bin.is_file(), "{} is not built (cargo builds it for integration tests)", bin.display());
        bin.to_string_lossy().into_owned()
    })
}
/// How long a stopped daemon may take to exit (it gives its sync loop up to 10 s).
const EXIT_TIMEOUT: Duration = Duration::from_secs(12);

/// Ports for `--healthz-bind-address` / `--metrics-bind-address`. Every lab has its own node
/// namespace, so they only need to differ between daemons started in the same one.
static NEXT_PORT: AtomicU16 = AtomicU16::new(20_000);

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `--iptables-backend`: `nft` or `legacy`.
    pub backend: &'static str,
    /// `--iptables-sync-period` (forced full sync; health timeout is twice this).
    pub sync_period: &'static str,
    /// A directory put first on the daemon's `PATH` (wrapper scripts for iptables tools).
    pub path_prefix: Option<PathBuf>,
    /// `--log` filter.
    pub log: &'static str,
    /// More flags, appended after the ones above (e.g. `--proxy-mode userspace`).
    pub extra_args: Vec<String>,
    /// Extra environment variables (e.g. `XTABLES_LOCKFILE` for a per-test xtables lock).
    pub env: Vec<(String, String)>,
}

impl DaemonOptions {
    /// `backend`, 5 s sync period, the normal `PATH`, `--log info`.
    pub fn new(backend: &'static str) -> DaemonOptions {
        DaemonOptions {
            backend,
            sync_period: "5s",
            path_prefix: None,
            log: "info",
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running daemon (`ip netns exec NODE kubenat …`); killed when dropped.
pub struct Daemon {
    child: Child,
    node: String,
    log: PathBuf,
    /// Port of `/healthz` (127.0.0.1 in the node namespace).
    pub healthz_port: u16,
    /// Port of `/metrics` (127.0.0.1 in the node namespace).
    pub metrics_port: u16,
}

impl Daemon {
    /// Starts the daemon in `node`, talking to the API server in `kubeconfig`, logging to
    /// `log` (created or truncated).
    pub fn start(node: &NetNs, kubeconfig: &Path, log: &Path, opts: &DaemonOptions) -> Daemon {
        let healthz_port = NEXT_PORT.fetch_add(2, Ordering::Relaxed);
        let metrics_port = healthz_port + 1;
        let (healthz, metrics) = (format!("127.0.0.1:{healthz_port}"), format!("127.0.0.1:{metrics_port}"));
        let kubeconfig = kubeconfig.to_string_lossy();
        let args = [
            "--kubeconfig",
            kubeconfig.as_ref(),
            "--hostname-override",
            "node-1",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--iptables-backend",
            opts.backend,
            "--iptables-min-sync-period",
            "100ms",
            "--iptables-sync-period",
            opts.sync_period,
            "--healthz-bind-address",
            &healthz,
            "--metrics-bind-address",
            &metrics,
            "--flannel-subnet-file",
            "/nonexistent",
            "--log",
            opts.log,
        ];
        let file = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let stdout = file.try_clone().unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
        let mut command = Command::new("ip");
        command.args(["netns", "exec", node.name(), bin()]).args(args).args(&opts.extra_args);
        command.stdin(Stdio::null()).stdout(stdout).stderr(file);
        if let Some(dir) = &opts.path_prefix {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(std::iter::once(dir.clone()).chain(std::env::split_paths(&path)))
                .expect("PATH entries without ':'");
            command.env("PATH", joined);
        }
        command.envs(opts.env.iter().map(|(k, v)| (k, v)));
        // `ip netns exec` execs the program in place: the child's pid is the daemon's.
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()));
        Daemon { child, node: node.name().to_string(), log: log.to_path_buf(), healthz_port, metrics_port }
    }

    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `kill -9`: the daemon dies at once, wherever it is (mid-sync included); reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let _ = self.child.kill(); // SIGKILL
        self.child.wait().unwrap_or_else(|e| panic!("reaping the killed daemon: {e}"))
    }

    /// The daemon's resident set size in KiB (`VmRSS` of `/proc/PID/status`), `None` once gone.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Pids of the daemon's direct children (e.g. a running `iptables-restore`), from `/proc`:
    /// every thread's `children` file, since the sync spawns them from a blocking-pool thread.
    pub fn children(&self) -> Vec<u32> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).into_iter().flatten().flatten();
        tasks
            .flat_map(|task| {
                std::fs::read_to_string(task.path().join("children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Sends SIGTERM and waits (bounded) for the daemon to exit; panics with its log if it does not.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        process::run(&["kill", "-TERM", &self.pid().to_string()], COMMAND_TIMEOUT);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {EXIT_TIMEOUT:?} of SIGTERM; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET http://127.0.0.1:PORT/PATH` from inside the node namespace: status and body, or
    /// `None` when nothing answers (not listening yet, connection refused, timeout).
    fn get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        http_get(&self.node, &format!("http://127.0.0.1:{port}{path}"))
    }

    /// The HTTP status of `/healthz`, `None` when it does not answer.
    pub fn healthz(&self) -> Option<u16> {
        self.get(self.healthz_port, "/healthz").map(|(code, _)| code)
    }

    /// Status and JSON body of `/healthz` or `/livez` (`path`), `None` when it does not answer
    /// or the body is not JSON.
    pub fn health(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        let (code, body) = self.get(self.healthz_port, path)?;
        Some((code, serde_json::from_str(&body).ok()?))
    }

    /// Status and body of `path` on the metrics port, `None` when it does not answer.
    pub fn metrics_port_get(&self, path: &str) -> Option<(u16, String)> {
        self.get(self.metrics_port, path)
    }

    /// A scrape of `/metrics`, `None` when it does not answer 200.
    pub fn metrics(&self) -> Option<Scrape> {
        match self.get(self.metrics_port, "/metrics") {
            Some((200, body)) => Some(Scrape(body)),
            _ => None,
        }
    }

    /// A scrape of `/metrics` read by this process over a socket opened inside the node
    /// namespace (no child process, 2 s timeouts), `None` when it does not answer 200: for
    /// tight polling loops whose own cost must stay small next to what they measure.
    pub fn metrics_direct(&self) -> Option<Scrape> {
        let port = self.metrics_port;
        let body = super::netns::inside(&self.node, move || http_get_direct(port, "/metrics"))?;
        Some(Scrape(body))
    }

    /// Waits (≤ `timeout`) until the daemon has completed at least `n` full restores in total.
    /// Returns the scrape that showed it; panics with the log on timeout or if the daemon died.
    pub fn wait_full_syncs(&mut self, n: f64, timeout: Duration) -> Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                panic!("daemon exited ({status}) before its first sync; log:\n{}", self.log());
            }
            if let Some(scrape) = self.metrics() {
                if scrape.value(RESTORE_COUNT_FULL).unwrap_or(0.0) >= n {
                    return scrape;
                }
            }
            assert!(Instant::now() < deadline, "daemon did not sync within {timeout:?}; log:\n{}", self.log());
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubenat_restore_bytes_count{kind="full"}`: number of full restores.
pub const RESTORE_COUNT_FULL: &str = r#"kubenat_restore_bytes_count{kind="full"}"#;
/// `kubenat_restore_bytes_sum{kind="full"}`: bytes of all full restores.
pub const RESTORE_BYTES_FULL: &str = r#"kubenat_restore_bytes_sum{kind="full"}"#;
/// `kubenat_restore_bytes_count{kind="partial"}`: number of partial restores.
pub const RESTORE_COUNT_PARTIAL: &str = r#"kubenat_restore_bytes_count{kind="partial"}"#;
/// `kubenat_restore_bytes_sum{kind="partial"}`: bytes of all partial restores.
pub const RESTORE_BYTES_PARTIAL: &str = r#"kubenat_restore_bytes_sum{kind="partial"}"#;
/// Failed full IPv4 restores (the labs' daemons program IPv4 only).
pub const RESTORE_FAILURES: &str = r#"kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}"#;
/// Failed partial IPv4 restores.
pub const PARTIAL_RESTORE_FAILURES: &str =
    r#"kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family="IPv4"}"#;

/// One `/metrics` body (Prometheus / OpenMetrics text).
#[derive(Debug, Clone)]
pub struct Scrape(pub String);

impl Scrape {
    /// The value of the sample whose name and labels are exactly `series`
    /// (`name` or `name{label="value"}`).
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse().ok()).flatten()
        })
    }

    /// Like [`value`](Self::value), `0.0` when the series is absent (not observed yet).
    pub fn get(&self, series: &str) -> f64 {
        self.value(series).unwrap_or(0.0)
    }

    /// The cumulative buckets `(le, count)` of histogram `name` (without `_bucket`) whose labels
    /// include `label` (e.g. `ip_family="IPv4"`), in ascending `le` (`+Inf` last).
    pub fn buckets(&self, name: &str, label: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{");
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .lines()
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                let labels = key.strip_prefix(&prefix)?.strip_suffix('}')?;
                if !labels.split(',').any(|l| l == label) {
                    return None;
                }
                let le = labels.split(',').find_map(|l| l.strip_prefix("le=\""))?.strip_suffix('"')?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, value.parse().ok()?))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// `GET http://127.0.0.1:PORT/PATH` (HTTP/1.0, so the body ends when the connection closes)
/// from the calling thread's network namespace: the body of a 200 answer, else `None`.
fn http_get_direct(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// argv: url. Prints the status, then the body; exits 1 when nothing answered.
const HTTP_GET_PY: &str = r#"
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=2)
    code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
except Exception as e:
    sys.stderr.write(str(e))
    sys.exit(1)
sys.stdout.write("%d\n" % code)
sys.stdout.write(body.decode(errors="replace"))
"#;

/// `GET url` from inside namespace `ns` with python's urllib (status, body); `None` if nothing
/// answered.
pub fn http_get(ns: &str, url: &str) -> Option<(u16, String)> {
    let out = process::run(&["ip", "netns", "exec", ns, python(), "-c", HTTP_GET_PY, url], COMMAND_TIMEOUT);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, body) = text.split_once('\n')?;
    Some((status.trim().parse().ok()?, body.to_string()))
}

/// The python interpreter: the system one when present (fast, no shims), else `python3`.
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Polls `check` every `every` until it returns `Some` or `timeout` passes (then `None`).
pub fn poll<T>(timeout: Duration, every: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
}
