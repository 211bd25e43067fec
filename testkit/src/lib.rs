//! kubenat's one support tree for integration tests, built once and linked into each test
//! crate: namespaces that clean up after themselves (`netns`), a one-node lab of routed or
//! bridged pods (`lab`), identity servers and a client that moves real TCP/UDP bytes between
//! them (`traffic`), bounded child processes (`process`), the daemon run in a namespace and its
//! metrics (`daemon`), flannel clusters (`flannel`), the kubelet's view of a pod (`kubelet`),
//! the container image with podman containers run from it (`image`), golden files (`golden`),
//! fixtures (`fixture`), Kubernetes object builders (`objects`), a wire-compatible test API
//! server used through the real `kube` client (`apiserver`), a reflector harness with bounded
//! "converges to" waits (`reflect`) and the scale measurements' synthetic cluster, `/proc`
//! readings and report (`scale`).
//!
//! Typical use:
//! ```ignore
//! use testkit::{lab::Lab, traffic::{self, Proto, Server}};
//!
//! #[test]
//! fn something() {
//!     if !testkit::require_root() { return; }
//!     let lab = Lab::new(2);
//!     let _srv = Server::start(&lab.pod(1).ns, Proto::Tcp, 8080, "b");
//!     let reply = traffic::request(&lab.pod(0).ns, Proto::Tcp, lab.pod(1).addr(8080), Duration::from_secs(2));
//! }
//! ```
//! Every namespace is named `knt-<prefix>-<pid>-<n>`, so tests may run in parallel; every wait
//! is bounded; every child is killed by its guard, even when the test panics.
pub mod apiserver;
pub mod conntrack;
pub mod daemon;
pub mod fixture;
pub mod flannel;
pub mod golden;
pub mod image;
pub mod kubelet;
pub mod lab;
pub mod netns;
pub mod objects;
pub mod probe;
pub mod process;
pub mod reflect;
pub mod scale;
pub mod traffic;

use std::path::Path;

/// Whether `CI=true`: then a missing capability fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `true` when a real-kernel test can run. Otherwise prints `skipped: <what>` and returns
/// `false` — except under `CI=true`, where a missing capability is a failure (panic).
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!in_ci(), "CI=true but {what}: real-kernel tests must run in CI, not skip");
    eprintln!("skipped: {what}");
    false
}

/// Real-kernel tests need root (namespaces, iptables). See [`require`].
pub fn require_root() -> bool {
    require(effective_uid() == Some(0), "not root")
}

/// `br_netfilter` is loaded (or built in), so `net.bridge.*` sysctls exist. See [`require`].
pub fn require_br_netfilter() -> bool {
    require(
        Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists(),
        "br_netfilter not available (modprobe br_netfilter)",
    )
}

/// `program` is on `PATH`. See [`require`].
pub fn require_program(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    require(found, &format!("{program} not installed"))
}

/// The effective uid, from `/proc/self/status` (no libc, no unsafe).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}
