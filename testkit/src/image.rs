//! The kubenat container image under test and the containers run from it: [`Image::get`]
//! builds it with `scripts/build-image.sh` (or finds the one CI built, through
//! `$KUBENAT_IMAGE_STORE`), [`Image::run`] starts a podman container with the DaemonSet's
//! security context inside a test's network namespace, and the [`Container`] guard removes it.
//!
//! Everything lives in a private container storage (`--root`/`--runroot` under the store
//! directory), never the machine's default one. The podman flags this needs on a node without
//! systemd, without `CAP_SYS_RESOURCE` and with cgroup v1 are in [`Image::podman`] and
//! [`Image::run`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::netns::NetNs;
use super::process;

/// A store directory holding an image built earlier (by `.ci/run`): used as it is when its
/// `image.env` exists, built into otherwise.
pub const STORE_ENV: &str = "KUBENAT_IMAGE_STORE";
/// Where the image is built when `$KUBENAT_IMAGE_STORE` is not set (re-run every time: the
/// script is incremental, and the image then matches the working tree).
const DEFAULT_STORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/image-store");
/// A cold build: release build of the crate, mmdebstrap, commit.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// One podman command (`run -d` creates the container's file system).
const PODMAN_TIMEOUT: Duration = Duration::from_secs(120);
/// Containers are named like the namespaces: `knt-<prefix>-<pid>-<n>`.
const NAME_PREFIX: &str = "knt";

static IMAGE: OnceLock<Image> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// The image and the private storage that holds it.
#[derive(Debug)]
pub struct Image {
    store: PathBuf,
    reference: String,
    driver: String,
}

impl Image {
    /// The image under test, built or located once per test process. Panics (with the build
    /// script's output) when it cannot be built. Needs root.
    pub fn get() -> &'static Image {
        IMAGE.get_or_init(|| {
            let image = Image::locate_or_build();
            SWEEP.call_once(|| image.sweep_leftovers());
            image
        })
    }

    fn locate_or_build() -> Image {
        let from_env = std::env::var_os(STORE_ENV).map(PathBuf::from);
        let store = from_env.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STORE));
        if from_env.is_none() || !store.join("image.env").exists() {
            build(&store);
        }
        let env = read_env(&store.join("image.env"));
        let field = |key: &str| {
            env.get(key).cloned().unwrap_or_else(|| panic!("{} names no {key}", store.join("image.env").display()))
        };
        Image { reference: field("KUBENAT_IMAGE"), driver: field("KUBENAT_IMAGE_STORAGE_DRIVER"), store }
    }

    /// `localhost/kubenat:<version>`.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// `podman` with the private storage, and the engine settings that do not depend on what
    /// the host has: runc (the runtime installed with podman; crun would do too), cgroupfs and
    /// a file for events (a node without systemd has neither a systemd cgroup manager nor a
    /// journal).
    pub fn podman(&self, args: &[&str]) -> Vec<String> {
        let (root, runroot) = (self.store.join("root"), self.store.join("runroot"));
        let mut argv: Vec<String> = ["podman", "--root"].map(String::from).into();
        argv.push(root.to_string_lossy().into_owned());
        argv.push("--runroot".into());
        argv.push(runroot.to_string_lossy().into_owned());
        argv.extend(
            ["--storage-driver", &self.driver, "--runtime", "runc", "--cgroup-manager", "cgroupfs"].map(String::from),
        );
        argv.extend(["--events-backend", "file"].map(String::from));
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// Runs `podman ARGS` (bounded); panics with its output unless it succeeds; returns stdout.
    pub fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman_output(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `podman ARGS` (bounded) and returns its output, success or not.
    pub fn podman_output(&self, args: &[&str]) -> Output {
        let argv = self.podman(args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        process::run(&argv, PODMAN_TIMEOUT)
    }

    /// Starts a container (detached) from the image with `opts`.
    ///
    /// The container gets the DaemonSet's security context: all capabilities dropped but
    /// NET_ADMIN and NET_RAW, no privilege escalation, a read-only root file system (without
    /// podman's writable /run and /tmp: Kubernetes adds none), and a `/run/xtables.lock` of its
    /// own (the DaemonSet mounts the node's; iptables-legacy cannot take its lock without it).
    /// The root that runs podman here lacks CAP_SYS_RESOURCE, so podman's default rlimits
    /// (open files and processes far above the machine's hard limits) cannot be set: see
    /// [`rlimit`].
    pub fn run(&'static self, prefix: &str, opts: RunOptions) -> Container {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}-{prefix}-{}-{n}", std::process::id());
        let dir = tempfile::tempdir().expect("temp dir");
        let lock = dir.path().join("xtables.lock");
        std::fs::write(&lock, "").unwrap_or_else(|e| panic!("create {}: {e}", lock.display()));
        let args = opts.podman_run_args(&name, &self.reference, &lock);
        // The guard exists before the container does: a failing `run` still gets cleaned up.
        let container = Container { name, image: self, _dir: dir };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        container.image.podman_ok(&argv);
        container
    }

    /// Removes containers left by earlier test processes that died without cleaning up
    /// (`knt-<prefix>-<pid>-<n>` whose pid no longer exists).
    fn sweep_leftovers(&self) {
        let out = self.podman_output(&["ps", "--all", "--format", "{{.Names}}"]);
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            if !name.starts_with(&format!("{NAME_PREFIX}-")) {
                continue;
            }
            let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = self.podman_output(&["rm", "--force", "--time", "0", name]);
            }
        }
    }
}

/// Runs `scripts/build-image.sh --store STORE` (bounded); prints its timings; panics with its
/// output when it fails.
///
/// The script runs without the variables cargo sets for a test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_NAME` …): some build scripts (ring's) watch them, and the script's
/// `cargo build --release` would rebuild half the dependency tree, then again on the next
/// build from a shell.
fn build(store: &Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/build-image.sh");
    let store_arg = store.to_string_lossy();
    let cargo_vars: Vec<String> = std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .filter(|key| is_cargo_test_var(key))
        .collect();
    let mut argv = vec!["env"];
    for key in &cargo_vars {
        argv.extend(["-u", key.as_str()]);
    }
    argv.extend(["bash", script, "--store", &store_arg]);
    let started = Instant::now();
    let out = process::run(&argv, BUILD_TIMEOUT);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed ({}):\n{stdout}{stderr}", out.status);
    eprintln!("{}", stdout.lines().filter(|l| l.starts_with("build-image:")).collect::<Vec<_>>().join("\n"));
    eprintln!("image built in {:.1} s", started.elapsed().as_secs_f64());
}

/// A variable cargo sets for the test process rather than one the user set for cargo.
fn is_cargo_test_var(key: &str) -> bool {
    const SET_FOR_TESTS: [&str; 7] = [
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    SET_FOR_TESTS.contains(&key) || key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_BIN_")
}

/// `KEY=VALUE` lines.
fn read_env(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The container's limit for `label` (a row of `/proc/self/limits`): `N:N` with N = 4096, or
/// this process's hard limit when that is lower. Without CAP_SYS_RESOURCE the runtime can only
/// lower limits, and not from this process's values but from those of podman's monitor
/// process, which podman lowers itself (its processes limit was 32768 where this process had
/// 96364): a fixed small value is the one that works everywhere, and is plenty for kubenat.
fn rlimit(label: &str) -> String {
    const WANTED: u64 = 4096;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = limits
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok()); // "unlimited" does not parse: no cap
    let n = hard.map_or(WANTED, |hard| hard.min(WANTED));
    format!("{n}:{n}")
}

/// A bind mount.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Path on the host.
    pub host: PathBuf,
    /// Path in the container.
    pub container: String,
    /// `ro` rather than `rw`.
    pub read_only: bool,
}

/// What to run in a container: network namespace, mounts, environment, command.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Join this network namespace (`/run/netns/NAME`) as the DaemonSet's `hostNetwork` joins
    /// the node's; `None`: no network at all.
    pub netns: Option<String>,
    /// Bind mounts.
    pub mounts: Vec<Mount>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Replaces the image's entrypoint (the pod spec's `command`).
    pub entrypoint: Option<String>,
    /// Arguments after the image reference (the pod spec's `args`).
    pub args: Vec<String>,
}

impl RunOptions {
    /// A container in `ns`'s network namespace.
    pub fn in_netns(ns: &NetNs) -> RunOptions {
        RunOptions { netns: Some(ns.name().to_string()), ..RunOptions::default() }
    }

    /// Adds a read-only bind mount.
    pub fn mount_ro(mut self, host: &Path, container: &str) -> RunOptions {
        self.mounts.push(Mount { host: host.to_path_buf(), container: container.to_string(), read_only: true });
        self
    }

    /// Adds a read-write bind mount.
    pub fn mount_rw(mut self, host: &Path, container: &str) -> RunOptions {
        self.mounts.push(Mount { host: host.to_path_buf(), container: container.to_string(), read_only: false });
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> RunOptions {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Replaces the entrypoint.
    pub fn entrypoint(mut self, path: &str) -> RunOptions {
        self.entrypoint = Some(path.to_string());
        self
    }

    /// Appends arguments.
    pub fn args(mut self, args: &[&str]) -> RunOptions {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// `podman run` arguments: the DaemonSet's security context (see [`Image::run`]), these
    /// options, `image`, then the command's arguments.
    fn podman_run_args(&self, name: &str, image: &str, lock: &Path) -> Vec<String> {
        let mut args: Vec<String> =
            ["run", "--detach", "--pull", "never", "--name", name, "--log-driver", "k8s-file"].map(String::from).into();
        for (resource, limit) in [("nofile", "Max open files"), ("nproc", "Max processes")] {
            args.push("--ulimit".into());
            args.push(format!("{resource}={}", rlimit(limit)));
        }
        args.extend(["--cap-drop", "ALL", "--cap-add", "NET_ADMIN,NET_RAW"].map(String::from));
        args.extend(
            ["--security-opt", "no-new-privileges", "--read-only", "--read-only-tmpfs=false"].map(String::from),
        );
        args.push("--network".into());
        args.push(match &self.netns {
            Some(ns) => format!("ns:/run/netns/{ns}"),
            None => "none".into(),
        });
        if self.netns.is_some() {
            // A hostNetwork pod also has the node's host name (kube-proxy's default node name).
            args.extend(["--uts", "host"].map(String::from));
        }
        let mut mounts = self.mounts.clone();
        if !mounts.iter().any(|m| m.container == "/run/xtables.lock") {
            mounts.push(Mount { host: lock.to_path_buf(), container: "/run/xtables.lock".into(), read_only: false });
        }
        for m in &mounts {
            args.push("--volume".into());
            args.push(format!("{}:{}:{}", m.host.display(), m.container, if m.read_only { "ro" } else { "rw" }));
        }
        for (key, value) in &self.env {
            args.push("--env".into());
            args.push(format!("{key}={value}"));
        }
        if let Some(entrypoint) = &self.entrypoint {
            args.push("--entrypoint".into());
            args.push(entrypoint.clone());
        }
        args.push(image.to_string());
        args.extend(self.args.iter().cloned());
        args
    }
}

/// How a container stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Still running (or being created).
    Running,
    /// Exited with this code.
    Exited(i32),
}

/// A container run from the image; removed (killed first if need be) when dropped.
#[derive(Debug)]
pub struct Container {
    name: String,
    image: &'static Image,
    /// Holds the container's own `/run/xtables.lock`.
    _dir: TempDir,
}

impl Container {
    /// The container's name (`knt-<prefix>-<pid>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything the container printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        let out = self.image.podman_output(&["logs", &self.name]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Running or exited (with its code).
    pub fn state(&self) -> State {
        let out = self.image.podman_ok(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", &self.name]);
        match out.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["exited" | "stopped", code] => State::Exited(code.parse().unwrap_or(-1)),
            _ => State::Running,
        }
    }

    /// Waits (≤ `timeout`) for the container to exit and returns its exit code; panics with
    /// its logs on timeout.
    pub fn wait(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let State::Exited(code) = self.state() {
                return code;
            }
            assert!(Instant::now() < deadline, "{} still running after {timeout:?}; logs:\n{}", self.name, self.logs());
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let out = self.image.podman_output(&["rm", "--force", "--ignore", "--time", "0", &self.name]);
        if !out.status.success() && !thread::panicking() {
            eprintln!("warning: could not remove container {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}
