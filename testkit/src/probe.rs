//! A traffic probe for fault tests: from one pod namespace, a steady, bounded stream of fresh
//! TCP connections and UDP request/replies to several Services, each attempt recorded with its
//! wall-clock start and end, target and outcome. One `python3` child runs the whole stream
//! (round-robin over the targets), so attempts are cheap and evenly spaced.
//!
//! What counts as a failure: every attempt is a *new* flow (new socket, new source port), so a
//! Service that has a ready, live endpoint must answer it — there is no "connection that was
//! open when its endpoint went away" here. The one race a proxy cannot avoid is a UDP reply
//! whose conntrack entry is deleted (stale-flow cleanup after its endpoint was removed) while the
//! request is in flight; callers that remove endpoints of probed Services may excuse exactly
//! those with [`ProbeReport::split`], and must report how many they excused.
//!
//! ```ignore
//! let probe = Probe::start(&client_ns, targets, ProbeConfig::default());
//! // … inject faults …
//! let report = probe.stop();
//! eprintln!("{}", report.summary());
//! assert!(report.failures().is_empty(), "{}", report.failures_text());
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::daemon::python;
use super::netns::NetNs;
use super::traffic::Proto;

/// One Service port the probe sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A name for reports (`web/http`).
    pub name: String,
    /// TCP (connect, read the answer until EOF) or UDP (one datagram, one reply).
    pub proto: Proto,
    /// The ClusterIP and port.
    pub addr: SocketAddr,
}

impl Target {
    /// A target named `name`.
    pub fn new(name: &str, proto: Proto, addr: SocketAddr) -> Target {
        Target { name: name.to_string(), proto, addr }
    }
}

/// How the probe paces itself.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// Pause between two attempts (any target); the stream is round-robin over the targets.
    pub interval: Duration,
    /// Per-attempt timeout (connect + answer, or datagram + reply).
    pub timeout: Duration,
    /// Hard bound: the child stops by itself after this long even if never told to.
    pub max_duration: Duration,
}

impl Default for ProbeConfig {
    /// 20 ms between attempts (≈ 50 a second), 1 s per attempt, at most 10 minutes.
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            max_duration: Duration::from_secs(600),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A server answered; its name.
    Answer(String),
    /// Anything else: `timeout`, `refused`, `unreachable`, `reset`, `error …`.
    Failed(String),
}

/// One attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Index into the probe's targets.
    pub target: usize,
    /// When it started (wall clock, so it can be compared with other processes' events).
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// What happened.
    pub outcome: Outcome,
}

impl Attempt {
    /// Whether it failed.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }
}

/// argv: timeout interval max_seconds, then `name proto host port` per target. Prints `ready`,
/// then one line per attempt: `start end index ok <server>` or `start end index <failure>`.
/// Stops when stdin reaches EOF or after max_seconds.
const PROBE_PY: &str = r#"
import errno, socket, sys, threading, time
timeout, interval, max_seconds = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
args = sys.argv[4:]
targets = [(args[i], args[i + 1], args[i + 2], int(args[i + 3])) for i in range(0, len(args), 4)]
stop = threading.Event()
def watch_stdin():
    sys.stdin.read()
    stop.set()
threading.Thread(target=watch_stdin, daemon=True).start()
def attempt(proto, host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if proto == "tcp":
        s = socket.socket(family, socket.SOCK_STREAM)
    else:
        s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        if proto == "tcp":
            data = b""
            while len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        else:
            s.send(b"probe\n")
            data = s.recv(4096)
    finally:
        s.close()
    words = data.decode(errors="replace").split()
    return ("ok " + words[0]) if words else "error empty answer"
def classify(proto, host, port):
    try:
        return attempt(proto, host, port)
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except OSError as e:
        if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable"
        return "error " + str(e).replace("\n", " ")
print("ready", flush=True)
began = time.monotonic()
i = 0
while not stop.is_set() and time.monotonic() - began < max_seconds:
    index = i % len(targets)
    name, proto, host, port = targets[index]
    start = time.time()
    result = classify(proto, host, port)
    end = time.time()
    print("%.6f %.6f %d %s" % (start, end, index, result), flush=True)
    i += 1
    stop.wait(interval)
"#;

/// A running probe; killed (by its own pid) when dropped without [`Probe::stop`].
pub struct Probe {
    child: Child,
    stdin: Option<ChildStdin>,
    targets: Vec<Target>,
    config: ProbeConfig,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    reader: Option<JoinHandle<()>>,
    started: Instant,
}

/// How long the child may take to start and print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

impl Probe {
    /// Starts probing `targets` from inside `ns`; returns once the child is running.
    pub fn start(ns: &NetNs, targets: Vec<Target>, config: ProbeConfig) -> Probe {
        assert!(!targets.is_empty(), "a probe needs at least one target");
        let mut args: Vec<String> = vec![
            format!("{:.3}", config.timeout.as_secs_f64()),
            format!("{:.3}", config.interval.as_secs_f64()),
            format!("{:.0}", config.max_duration.as_secs_f64().ceil()),
        ];
        for t in &targets {
            let proto = match t.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            };
            args.extend([t.name.replace(' ', "_"), proto.into(), t.addr.ip().to_string(), t.addr.port().to_string()]);
        }
        let mut argv: Vec<&str> = vec![python(), "-c", PROBE_PY];
        argv.extend(args.iter().map(String::as_str));
        let argv = ns.argv(&argv);
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the probe: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&attempts);
        let reader = thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let ready = lines.next().is_some_and(|l| l.trim() == "ready");
            let _ = ready_tx.send(ready);
            for line in lines {
                if let Some(attempt) = parse_line(&line) {
                    sink.lock().unwrap_or_else(PoisonError::into_inner).push(attempt);
                }
            }
        });
        let mut probe =
            Probe { child, stdin, targets, config, attempts, reader: Some(reader), started: Instant::now() };
        if ready_rx.recv_timeout(READY_TIMEOUT) != Ok(true) {
            probe.kill();
            panic!("the probe did not start within {READY_TIMEOUT:?}");
        }
        probe
    }

    /// Attempts recorded so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Failed attempts so far.
    pub fn failures_so_far(&self) -> usize {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|a| a.failed()).count()
    }

    /// Waits (≤ `timeout`) until at least `n` more attempts than now have been recorded.
    pub fn wait_for_more(&self, n: usize, timeout: Duration) -> bool {
        let target = self.attempts.lock().unwrap_or_else(PoisonError::into_inner).len() + n;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.attempts.lock().unwrap_or_else(PoisonError::into_inner).len() >= target {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops the stream (closes the child's stdin; it finishes its current attempt), waits for it
    /// (bounded) and returns everything it recorded.
    pub fn stop(mut self) -> ProbeReport {
        drop(self.stdin.take());
        let deadline = Instant::now() + self.config.timeout + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        ProbeReport { targets: self.targets.clone(), attempts: self.attempts(), duration: self.started.elapsed() }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.kill();
    }
}

fn parse_line(line: &str) -> Option<Attempt> {
    let mut parts = line.splitn(4, ' ');
    let start = at(parts.next()?.parse().ok()?);
    let end = at(parts.next()?.parse().ok()?);
    let target = parts.next()?.parse().ok()?;
    let rest = parts.next()?.trim();
    let outcome = match rest.strip_prefix("ok ") {
        Some(server) => Outcome::Answer(server.to_string()),
        None => Outcome::Failed(rest.to_string()),
    };
    Some(Attempt { target, start, end, outcome })
}

fn at(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0))
}

/// Seconds since the epoch of `t`, for messages.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Everything a probe recorded.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The targets, indexed by [`Attempt::target`].
    pub targets: Vec<Target>,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// How long the probe ran.
    pub duration: Duration,
}

/// Per-target counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Attempts made.
    pub attempts: usize,
    /// Attempts that failed.
    pub failures: usize,
}

impl ProbeReport {
    /// Every failed attempt.
    pub fn failures(&self) -> Vec<&Attempt> {
        self.attempts.iter().filter(|a| a.failed()).collect()
    }

    /// Failed attempts split into (not excused, excused) by `excuse`.
    pub fn split(&self, excuse: impl Fn(&Attempt) -> bool) -> (Vec<&Attempt>, Vec<&Attempt>) {
        self.failures().into_iter().partition(|a| !excuse(a))
    }

    /// Attempts and failures per target name.
    pub fn per_target(&self) -> BTreeMap<String, Counts> {
        let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
        for a in &self.attempts {
            let entry = counts.entry(self.targets[a.target].name.clone()).or_default();
            entry.attempts += 1;
            entry.failures += usize::from(a.failed());
        }
        counts
    }

    /// Attempts whose target is named `name`.
    pub fn of(&self, name: &str) -> Vec<&Attempt> {
        self.attempts.iter().filter(|a| self.targets[a.target].name == name).collect()
    }

    /// One line: total attempts and failures, then per target.
    pub fn summary(&self) -> String {
        let per: Vec<String> =
            self.per_target().iter().map(|(name, c)| format!("{name} {}/{}", c.failures, c.attempts)).collect();
        format!(
            "{} attempts in {:.1} s, {} failed (failed/attempts per target: {})",
            self.attempts.len(),
            self.duration.as_secs_f64(),
            self.failures().len(),
            per.join(", ")
        )
    }

    /// `attempts` described one per line (time, target, outcome), at most 50.
    pub fn describe(&self, attempts: &[&Attempt]) -> String {
        let mut lines: Vec<String> = attempts
            .iter()
            .take(50)
            .map(|a| {
                let took = a.end.duration_since(a.start).unwrap_or_default().as_millis();
                format!("  t={:.3} (+{took} ms) {}: {:?}", epoch_secs(a.start), self.targets[a.target].name, a.outcome)
            })
            .collect();
        if attempts.len() > 50 {
            lines.push(format!("  … and {} more", attempts.len() - 50));
        }
        lines.join("\n")
    }
}
