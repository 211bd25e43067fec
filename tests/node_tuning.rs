//! Real kernel: `kubenat --init-only` run inside a throwaway network namespace tunes that
//! namespace as kube-proxy does — conntrack TCP/UDP timeouts, `tcp_be_liberal`, and
//! `route_localnet` for localhost NodePorts — and only when a value differs; the node-global
//! values (`nf_conntrack_max`, the hash size) stay untouched on the host, and a failure to
//! raise `nf_conntrack_max` (read-only outside the host's namespace) is one warning, not an exit.
//! Needs root (skips otherwise, fails under CI=true). Never writes a sysctl of the host.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kubenat::startup::tuning::{conntrack_max, online_cpus};
use testkit::daemon::bin;
use testkit::netns::NetNs;
use testkit::process;

const INIT_TIMEOUT: Duration = Duration::from_secs(30);
const EST: &str = "net.netfilter.nf_conntrack_tcp_timeout_established";
const CLOSE_WAIT: &str = "net.netfilter.nf_conntrack_tcp_timeout_close_wait";
const LIBERAL: &str = "net.netfilter.nf_conntrack_tcp_be_liberal";
const UDP: &str = "net.netfilter.nf_conntrack_udp_timeout";
const UDP_STREAM: &str = "net.netfilter.nf_conntrack_udp_timeout_stream";
const LOCALNET: &str = "net.ipv4.conf.all.route_localnet";
const HOST_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const HOST_HASHSIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";
const DUMMY_KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: \
    https://127.0.0.1:6443\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n\
    - name: u\n  user:\n    token: t\n";

/// A number from a file of the host (read only).
fn host_value(path: &str) -> i64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim().parse().unwrap_or_else(|_| panic!("{path}: {text:?}"))
}

/// The host's values this test must leave alone: the two global ones and the host namespace's
/// own copies of every per-namespace one.
fn host_snapshot() -> Vec<(String, String)> {
    let per_netns =
        [EST, CLOSE_WAIT, LIBERAL, UDP, UDP_STREAM, LOCALNET].map(|k| format!("/proc/sys/{}", k.replace('.', "/")));
    [HOST_MAX.to_string(), HOST_HASHSIZE.to_string()]
        .into_iter()
        .chain(per_netns)
        .map(|path| {
            let value = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            (path, value.trim().to_string())
        })
        .collect()
}

/// A namespace whose conntrack sysctls exist: if `nf_conntrack` is not loaded yet, a conntrack
/// match inside the namespace makes the kernel load it.
fn conntrack_netns(prefix: &str) -> Option<NetNs> {
    if !testkit::require_root() || !testkit::require_program("sysctl") {
        return None;
    }
    let ns = NetNs::new(prefix);
    if ns.sysctl_get(EST).is_none() {
        for iptables in ["iptables-nft", "iptables-legacy", "iptables"] {
            let out = ns.exec(&[iptables, "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
            if out.status.success() {
                break;
            }
        }
    }
    let loaded = ns.sysctl_get(EST).is_some() && Path::new(HOST_MAX).exists();
    testkit::require(loaded, "nf_conntrack cannot be loaded (modprobe nf_conntrack)").then_some(ns)
}

/// `kubenat --init-only` inside `ns` with `args`, a dummy kubeconfig and, when given, `config`
/// as the `--config` file.
fn init_only(ns: &NetNs, config: Option<&str>, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, DUMMY_KUBECONFIG).expect("kubeconfig");
    let kubeconfig = format!("--kubeconfig={}", kubeconfig.display());
    let config_path = dir.path().join("config.yaml");
    let config_flag = format!("--config={}", config_path.display());
    let mut argv = ns.argv(&[bin(), "--init-only", "--hostname-override", "n1", &kubeconfig]);
    argv.extend(["--iptables-backend=nft", "--flannel-subnet-file=/nonexistent/subnet.env"]);
    if let Some(config) = config {
        std::fs::write(&config_path, config).expect("config");
        argv.push(&config_flag);
    }
    argv.extend_from_slice(args);
    process::run(&argv, INIT_TIMEOUT)
}

fn log(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn get(ns: &NetNs, key: &str) -> String {
    ns.sysctl_get(key).unwrap_or_else(|| panic!("{key} missing in {}", ns.name()))
}

#[test]
fn defaults_set_the_tcp_timeouts_and_route_localnet_of_the_namespace() {
    let Some(ns) = conntrack_netns("tune") else { return };
    let host = host_snapshot();
    for (key, value) in [(EST, "1000"), (CLOSE_WAIT, "10"), (LOCALNET, "0"), (LIBERAL, "0")] {
        ns.sysctl(key, value);
    }
    let (udp, udp_stream) = (get(&ns, UDP), get(&ns, UDP_STREAM));

    let out = init_only(&ns, None, &[]);
    let text = log(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(get(&ns, EST), "86400", "24h, kube-proxy's default: {text}");
    assert_eq!(get(&ns, CLOSE_WAIT), "3600", "1h: {text}");
    assert_eq!(get(&ns, LOCALNET), "1", "localhost NodePorts are on by default: {text}");
    assert_eq!(get(&ns, LIBERAL), "0", "tcpBeLiberal is off by default: {text}");
    assert_eq!((get(&ns, UDP), get(&ns, UDP_STREAM)), (udp, udp_stream), "0s leaves the UDP timeouts alone");
    for key in [EST, CLOSE_WAIT, LOCALNET] {
        let line = format!("set sysctl=\"{key}\"");
        assert!(text.lines().any(|l| l.contains(&line) && l.contains("INFO")), "no info line for {key}: {text}");
    }
    // The default nf_conntrack_max is only raised, never lowered: a warning only when the host's
    // value is below it (it is read-only here).
    let target = conntrack_max(32_768, 131_072, online_cpus()).expect("a target");
    let warned = text.contains("could not set net.netfilter.nf_conntrack_max");
    assert_eq!(warned, host_value(HOST_MAX) < target, "{text}");
    assert_eq!(host_snapshot(), host, "the host's values are unchanged");

    // Everything holds now: a second run writes nothing.
    let again = log(&init_only(&ns, None, &[]));
    assert!(again.contains("written=0"), "{again}");
}

#[test]
fn a_config_file_sets_every_conntrack_value_and_a_global_failure_is_one_warning() {
    let Some(ns) = conntrack_netns("tunecfg") else { return };
    let host = host_snapshot();
    let (host_max, host_hashsize) = (host_value(HOST_MAX), host_value(HOST_HASHSIZE));
    // Above the host's nf_conntrack_max, so kubenat tries to raise it (read-only here); its
    // quarter not above the host's hash size, so the hash size is not tried.
    let min = host_max + 1;
    assert!(min / 4 <= host_hashsize, "host max {host_max} is over 4 × hashsize {host_hashsize}");
    let config = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\n\
         nodePortAddresses: [\"10.0.0.0/8\"]\nconntrack:\n  maxPerCore: 1\n  min: {min}\n  \
         tcpEstablishedTimeout: 2h\n  tcpCloseWaitTimeout: 90s\n  tcpBeLiberal: true\n  udpTimeout: 45s\n  \
         udpStreamTimeout: 2m30s\n"
    );
    ns.sysctl(LOCALNET, "0");

    let out = init_only(&ns, Some(&config), &[]);
    let text = log(&out);
    assert!(out.status.success(), "not fatal: {text}");
    assert_eq!(get(&ns, EST), "7200", "{text}");
    assert_eq!(get(&ns, CLOSE_WAIT), "90", "{text}");
    assert_eq!(get(&ns, LIBERAL), "1", "{text}");
    assert_eq!(get(&ns, UDP), "45", "{text}");
    assert_eq!(get(&ns, UDP_STREAM), "150", "{text}");
    assert_eq!(get(&ns, LOCALNET), "0", "nodePortAddresses without loopback: no localhost NodePorts: {text}");

    let failure = format!("could not set net.netfilter.nf_conntrack_max to {min}");
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(&failure)).collect();
    assert_eq!(warnings.len(), 1, "one warning: {text}");
    for words in ["WARN", "global", "Fix: ", "sysctl -w net.netfilter.nf_conntrack_max=", "maxPerCore: 0"] {
        assert!(warnings[0].contains(words), "{words:?} in {}", warnings[0]);
    }
    assert!(!text.contains("hashsize to"), "the hash size is large enough: {text}");
    assert!(text.contains("failed_steps=1"), "{text}");
    assert_eq!(host_snapshot(), host, "the host's values are unchanged");
}

#[test]
fn dry_run_only_logs_what_it_would_set() {
    let Some(ns) = conntrack_netns("tunedry") else { return };
    ns.sysctl(EST, "1000");
    let out = init_only(&ns, None, &["--dry-run"]);
    let text = log(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().any(|l| l.contains("would set") && l.contains(EST)), "{text}");
    assert_eq!(get(&ns, EST), "1000", "--dry-run writes nothing");
}
