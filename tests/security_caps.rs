//! Least privilege on the real kernel: kubenat needs only CAP_NET_ADMIN and CAP_NET_RAW.
//! `kubenat apply` and the daemon run as root with every other capability dropped (setpriv:
//! bounding, inheritable and ambient sets); without NET_ADMIN (and, for the legacy backend,
//! without NET_RAW) they fail with an error naming the command and the denial. The daemon's
//! metrics listen on 127.0.0.1 by default. Needs root (skips otherwise, fails under CI=true).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kubenat::apply::exec::{Backend, Tool};
use kubenat::model::IpFamily;
use serde_json::json;
use testkit::apiserver::ApiServer;
use testkit::daemon::{bin, http_get, poll, Scrape, RESTORE_COUNT_FULL, RESTORE_FAILURES};
use testkit::lab::Lab;
use testkit::netns::NetNs;
use testkit::process::{self, COMMAND_TIMEOUT};
use testkit::traffic::{self, Proto, Reply, Server};

const BACKENDS: [Backend; 2] = [Backend::Nft, Backend::Legacy];

fn available(backend: Backend) -> bool {
    testkit::require_root()
        && testkit::require_program("setpriv")
        && testkit::require_program(&backend.binary(IpFamily::V4, Tool::Restore))
}

/// `ip netns exec NS setpriv … -- argv`: enter the namespace as full root, then keep only
/// `caps` (e.g. `["net_admin", "net_raw"]`) in every capability set before exec.
fn with_caps<'a>(ns: &'a str, caps: &[&str], argv: &[&'a str]) -> Vec<String> {
    let set =
        std::iter::once("-all".to_string()).chain(caps.iter().map(|c| format!("+{c}"))).collect::<Vec<_>>().join(",");
    let mut out: Vec<String> = ["ip", "netns", "exec", ns, "setpriv"].map(String::from).to_vec();
    out.push(format!("--inh-caps={set}"));
    out.push(format!("--ambient-caps={set}"));
    out.push(format!("--bounding-set={set}"));
    out.push("--".into());
    out.extend(argv.iter().map(|s| s.to_string()));
    out
}

fn run(argv: &[String]) -> Output {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    process::run(&argv, COMMAND_TIMEOUT)
}

fn apply_demo(ns: &NetNs, backend: Backend, caps: &[&str]) -> Output {
    run(&with_caps(
        ns.name(),
        caps,
        &[
            bin(),
            "apply",
            "--objects",
            "examples/demo",
            "--hostname-override=node-1",
            "--iptables-backend",
            backend.as_str(),
        ],
    ))
}

#[test]
fn setpriv_really_drops_capabilities() {
    if !testkit::require_root() || !testkit::require_program("setpriv") {
        return;
    }
    let ns = NetNs::new("capchk");
    let out = run(&with_caps(ns.name(), &["net_admin", "net_raw"], &["grep", "^Cap", "/proc/self/status"]));
    let status = String::from_utf8_lossy(&out.stdout);
    // CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13: 0x3000.
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap_or_else(|| panic!("no {set}:\n{status}"));
        assert!(line.ends_with("0000000000003000"), "{line}");
    }
}

#[test]
fn apply_needs_only_net_admin_and_net_raw() {
    for backend in BACKENDS {
        if !available(backend) {
            return;
        }
        let ns = NetNs::new("capok");
        let out = apply_demo(&ns, backend, &["net_admin", "net_raw"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{backend}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("14 jump rules inserted"), "{backend}: {stdout}");
        let saved = ns.run_ok(&[&backend.binary(IpFamily::V4, Tool::Save), "-t", "nat"]);
        assert!(saved.contains("-A KUBE-SERVICES"), "{backend}: rules not in the kernel:\n{saved}");
    }
}

#[test]
fn without_the_capabilities_apply_fails_with_a_clear_error() {
    for backend in BACKENDS {
        if !available(backend) {
            return;
        }
        let ns = NetNs::new("capno");
        let save = backend.binary(IpFamily::V4, Tool::Save);
        // No capability at all; NET_RAW alone; and for legacy (a raw socket), NET_ADMIN alone.
        let mut cases: Vec<&[&str]> = vec![&[], &["net_raw"]];
        if backend == Backend::Legacy {
            cases.push(&["net_admin"]);
        }
        for caps in cases {
            let out = apply_demo(&ns, backend, caps);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{backend} {caps:?}: {stderr}");
            assert!(stderr.contains("kubenat: error:"), "{backend} {caps:?}: {stderr}");
            assert!(stderr.contains(&save) && stderr.contains("Permission denied"), "{backend} {caps:?}: {stderr}");
        }
        let saved = ns.run_ok(&[&save, "-t", "nat"]);
        assert!(!saved.contains("KUBE-"), "{backend}: a denied apply left rules:\n{saved}");
    }
}

/// The daemon under `with_caps`, killed when dropped.
struct CappedDaemon {
    child: Child,
    log: std::path::PathBuf,
}

impl CappedDaemon {
    fn start(node: &NetNs, kubeconfig: &Path, log: &Path, backend: Backend) -> CappedDaemon {
        let kubeconfig = kubeconfig.to_string_lossy();
        let argv = with_caps(
            node.name(),
            &["net_admin", "net_raw"],
            &[
                bin(),
                "--kubeconfig",
                &kubeconfig,
                "--hostname-override",
                "node-1",
                "--cluster-cidr",
                "10.244.0.0/16",
                "--iptables-backend",
                backend.as_str(),
                "--iptables-min-sync-period",
                "100ms",
                "--flannel-subnet-file",
                "/nonexistent",
                "--log",
                "info",
            ],
        );
        let file = File::create(log).expect("log file");
        let stderr = file.try_clone().expect("dup log");
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .expect("start the daemon");
        CappedDaemon { child, log: log.to_path_buf() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CappedDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn daemon_runs_with_only_net_admin_and_net_raw_and_metrics_stay_on_localhost() {
    for backend in BACKENDS {
        if !available(backend) || !testkit::require_program("ss") {
            return;
        }
        let lab = Lab::new(3);
        let _servers: Vec<Server> =
            (0..2).map(|i| Server::start(&lab.pod(i).ns, Proto::Tcp, 8080, &format!("pod-{i}"))).collect();
        let api = ApiServer::start_in_netns(lab.node.name());
        api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
        api.apply(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }));
        api.apply(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.2"]}, {"addresses": ["10.244.2.2"]}],
        }));
        let dir = tempfile::tempdir().expect("temp dir");
        let daemon = CappedDaemon::start(&lab.node, &api.kubeconfig(dir.path()), &dir.path().join("d.log"), backend);

        // Default --metrics-bind-address: 127.0.0.1:10249.
        let metrics = poll(Duration::from_secs(15), Duration::from_millis(100), || {
            let scrape = http_get(lab.node.name(), "http://127.0.0.1:10249/metrics").map(|(_, body)| Scrape(body))?;
            (scrape.get(RESTORE_COUNT_FULL) >= 1.0).then_some(scrape)
        })
        .unwrap_or_else(|| panic!("{backend}: no full sync under reduced capabilities:\n{}", daemon.log()));
        assert_eq!(metrics.get(RESTORE_FAILURES), 0.0, "{backend}:\n{}", daemon.log());
        let listening = lab.node.run_ok(&["ss", "-Hltn"]);
        let metrics_listeners: Vec<&str> = listening.lines().filter(|l| l.contains(":10249")).collect();
        assert_eq!(metrics_listeners.len(), 1, "{backend}: {listening}");
        assert!(metrics_listeners[0].contains("127.0.0.1:10249"), "{backend}: metrics not on localhost: {listening}");

        let client = &lab.pod(2).ns;
        let replies = traffic::requests(client, Proto::Tcp, ([10, 96, 0, 10], 80).into(), Duration::from_secs(2), 12);
        assert!(replies.iter().all(|r| matches!(r, Reply::Answer { .. })), "{backend}: {replies:?}\n{}", daemon.log());
        assert_eq!(traffic::tally(&replies).len(), 2, "{backend}: {replies:?}");
    }
}
