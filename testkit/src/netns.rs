//! `NetNs`: a network namespace owned by one test, deleted (with every process inside it)
//! when the guard drops — also when the test panics.

use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use super::process::{self, COMMAND_TIMEOUT};

/// Every namespace the harness creates starts with this, so leftovers can be recognised.
const NAME_PREFIX: &str = "knt";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A network namespace `knt-<prefix>-<pid>-<n>` with `lo` up.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace (panics when that fails, e.g. without root).
    pub fn new(prefix: &str) -> NetNs {
        SWEEP.call_once(sweep_leftovers);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}-{prefix}-{}-{n}", std::process::id());
        process::run_ok(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip netns exec`, `ExecIptables::in_netns` …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The argv that runs `argv` inside this namespace.
    pub fn argv<'a>(&'a self, argv: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        full
    }

    /// Runs `f` on a thread that has entered this namespace (`setns`), so sockets `f` opens
    /// (netlink included) belong to it; the calling thread stays where it is.
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        inside(&self.name, f)
    }

    /// Runs `argv` inside the namespace (bounded by 5 s) and returns its output, success or not.
    pub fn exec(&self, argv: &[&str]) -> Output {
        process::run(&self.argv(argv), COMMAND_TIMEOUT)
    }

    /// Runs `argv` inside the namespace; panics with its stderr on failure; returns stdout.
    pub fn run_ok(&self, argv: &[&str]) -> String {
        process::run_ok(&self.argv(argv))
    }

    /// `ip -n NAME args…`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut argv = vec!["ip", "-n", self.name.as_str()];
        argv.extend_from_slice(args);
        process::run_ok(&argv)
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward`, `1`).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run_ok(&["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// Reads a sysctl inside the namespace; `None` if it does not exist here.
    pub fn sysctl_get(&self, key: &str) -> Option<String> {
        let out = self.exec(&["sysctl", "-n", key]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Runs `f` on a thread that has entered network namespace `name` (`/var/run/netns/NAME`), as
/// [`NetNs::inside`] does, for code that only knows the namespace's name.
pub fn inside<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

/// Kills the processes inside `name` (they are ours: only tests start them) and deletes it.
fn remove(name: &str) {
    let pids = process::run(&["ip", "netns", "pids", name], COMMAND_TIMEOUT);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        if pid.chars().all(|c| c.is_ascii_digit()) {
            let _ = process::run(&["kill", "-KILL", pid], COMMAND_TIMEOUT);
        }
    }
    let out = process::run(&["ip", "netns", "del", name], COMMAND_TIMEOUT);
    if !out.status.success() && !std::thread::panicking() {
        eprintln!("warning: could not delete netns {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Deletes namespaces left by earlier test processes that died without cleaning up
/// (`knt-<prefix>-<pid>-<n>` whose pid no longer exists).
fn sweep_leftovers() {
    let list = process::run(&["ip", "netns", "list"], COMMAND_TIMEOUT);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(&format!("{NAME_PREFIX}-")) {
            continue;
        }
        let mut parts = name.rsplit('-');
        let (_n, pid) = (parts.next(), parts.next());
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove(name);
        }
    }
}
