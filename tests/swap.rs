//! The swap test: kubeadm's kube-proxy DaemonSet and ConfigMap (fixtures) with only the image
//! changed, run the way the kubelet runs the container — the DaemonSet's own command and args
//! (`/usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.conf
//! --hostname-override=$(NODE_NAME)`, `NODE_NAME` from the pod's env), the ConfigMap mounted at
//! the DaemonSet's mount path in the kubelet's `..data` layout, the service-account token and CA
//! at `/var/run/secrets/kubernetes.io/serviceaccount`, and the kubeconfig kubeadm writes
//! (token file + CA) against a TLS API server that checks the token. The process gets a
//! private mount namespace inside the node's network namespace, as a container would. It must
//! start, sync, and answer `/healthz` and `/livez`. The same for the k3s, kops and kube-up flag
//! sets. Needs root (skips otherwise, fails under CI=true).

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;
use testkit::apiserver::{ApiServer, ServerConfig};
use testkit::daemon::{http_get, poll};
use testkit::kubelet::{
    config_map_volume, host_name, kubeadm_kubeconfig, service_account_volume, FlagSet, KubeadmPod, SERVICE_ACCOUNT,
    TOKEN,
};
use testkit::lab::Lab;
use testkit::objects::{self, Port};

const BIN: &str = env!("CARGO_BIN_EXE_kubenat");
/// Every "eventually" here is bounded by this.
const WAIT: Duration = Duration::from_secs(20);
/// Directories the "container" gets fresh (tmpfs) copies of, so mount points can be created
/// without touching the host: everything the DaemonSet mounts lives below one of them.
const SCRATCH: [&str; 3] = ["/var/lib", "/run", "/usr/local/bin"];

/// The Node, a Service with two endpoints, and the checks' expectations.
fn cluster(api: &ApiServer, node: &str, pod_cidr: &str) {
    api.apply(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": node },
        "spec": { "podCIDR": pod_cidr, "podCIDRs": [pod_cidr] },
        "status": { "addresses": [{ "type": "InternalIP", "address": "192.0.2.50" }] },
    }));
    let ports = [Port::tcp("http", 80, 8080)];
    api.apply(objects::service("web", Ipv4Addr::new(10, 96, 0, 10), &ports));
    let endpoints = objects::ready_on(&[Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)], node);
    api.apply(objects::slice("web", &endpoints, &ports));
}

/// A process run like a container: a private mount namespace inside the node's network
/// namespace, `mounts` (host dir → container path) bind-mounted, `/usr/local/bin/kube-proxy`
/// answering as kubenat. Killed when dropped.
struct Container {
    child: Child,
    log: PathBuf,
}

impl Container {
    fn run(ns: &str, mounts: &[(PathBuf, String)], argv: &[String], env: &[(&str, &str)], log: PathBuf) -> Container {
        let mut script = String::from("set -e\n");
        for dir in SCRATCH {
            script.push_str(&format!("mount -t tmpfs kubenat-swap {dir}\n"));
        }
        for (host, path) in mounts {
            script.push_str(&format!("mkdir -p '{path}'\nmount --bind '{}' '{path}'\n", host.display()));
        }
        script.push_str(&format!("ln -s '{BIN}' /usr/local/bin/kube-proxy\nexec \"$@\"\n"));
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                ns,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"));
        Container { child: command.spawn().expect("start the container"), log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node namespace, a TLS API server with the cluster, and a temp dir.
struct Node {
    lab: Lab,
    api: ApiServer,
    dir: TempDir,
}

impl Node {
    fn start(name: &str, pod_cidr: &str) -> Option<Node> {
        if !testkit::require_root() || !testkit::require_program("unshare") {
            return None;
        }
        let lab = Lab::new(0);
        let config = ServerConfig {
            netns: Some(lab.node.name().to_string()),
            tls: true,
            bearer_token: Some(TOKEN.to_string()),
            ..ServerConfig::default()
        };
        let api = ApiServer::start_with(config);
        cluster(&api, name, pod_cidr);
        Some(Node { lab, api, dir: tempfile::tempdir().expect("temp dir") })
    }

    /// The service account volume: token, CA and namespace.
    fn service_account(&self) -> PathBuf {
        let dir = self.dir.path().join("serviceaccount");
        service_account_volume(&dir, self.api.ca_pem().expect("TLS server"));
        dir
    }

    /// Waits until the container answers `url` with 200 inside the node namespace.
    fn until_ok(&self, container: &Container, url: &str) -> Value {
        let mut last = None;
        let body = poll(WAIT, Duration::from_millis(200), || {
            last = http_get(self.lab.node.name(), url);
            let (code, body) = last.clone()?;
            (code == 200).then_some(body)
        });
        let body = body.unwrap_or_else(|| panic!("{url}: never 200 (last {last:?}); log:\n{}", container.log()));
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    }

    /// The service's rules are in the node's kernel (either backend).
    fn until_programmed(&self, container: &Container) {
        let ns = self.lab.node.name();
        let programmed = poll(WAIT, Duration::from_millis(200), || {
            let saved: String = ["iptables-nft-save", "iptables-legacy-save"]
                .iter()
                .filter(|tool| testkit::require_program(tool))
                .map(|tool| {
                    let out = testkit::process::run(&["ip", "netns", "exec", ns, tool, "-t", "nat"], WAIT);
                    String::from_utf8_lossy(&out.stdout).into_owned()
                })
                .collect();
            (saved.contains("-d 10.96.0.10/32") && saved.contains("KUBE-SVC-")).then_some(())
        });
        assert!(programmed.is_some(), "default/web never programmed; log:\n{}", container.log());
        let requests = self.api.request_log();
        assert!(!requests.is_empty() && requests.iter().all(|r| r.status != 401), "every request carried the token");
    }
}

#[test]
fn kubeadm_daemonset_with_only_the_image_changed() {
    let Some(node) = Node::start("node-1", "10.244.1.0/24") else { return };
    // The image reference is the one thing an operator changes; nothing else is read from it.
    let env = [("NODE_NAME", "node-1")];
    let pod = KubeadmPod::read(&env);
    assert_eq!(pod.argv[0], "/usr/local/bin/kube-proxy");
    let config_dir = node.dir.path().join("kube-proxy");
    let kubeconfig = kubeadm_kubeconfig(&node.api.url());
    config_map_volume(&config_dir, &[("config.conf", pod.config_conf.clone()), ("kubeconfig.conf", kubeconfig)]);
    let mounts = [(config_dir, pod.config_mount.clone()), (node.service_account(), SERVICE_ACCOUNT.to_string())];
    let pod = Container::run(node.lab.node.name(), &mounts, &pod.argv, &env, node.dir.path().join("kube-proxy.log"));
    node.until_programmed(&pod);
    let healthz = node.until_ok(&pod, "http://127.0.0.1:10256/healthz");
    assert_eq!(healthz["nodeEligible"], true, "{healthz}");
    node.until_ok(&pod, "http://127.0.0.1:10256/livez");
    let metrics = node.until_ok(&pod, "http://127.0.0.1:10249/metrics");
    assert!(metrics.as_str().is_some_and(|m| m.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds")));
    let log = pod.log();
    assert!(!log.contains("ERROR") && !log.contains("unknown field"), "{log}");
}

/// Runs a distribution's flag set the way its node agent does, with a token kubeconfig at the
/// path its `--kubeconfig` names and `--master` pointed at the test server.
fn run_flag_set(name: &str, node_name: &str, pod_cidr: &str, healthz: &str) {
    let Some(node) = Node::start(node_name, pod_cidr) else { return };
    let flags = FlagSet::read(name, &node.api.url(), &node.dir.path().join("kubeconfig"));
    let mut mounts = vec![(node.service_account(), SERVICE_ACCOUNT.to_string())];
    mounts.extend(flags.kubeconfig_mount.clone());
    let log = node.dir.path().join(format!("{name}.log"));
    let pod = Container::run(node.lab.node.name(), &mounts, &flags.argv, &[], log);
    node.until_programmed(&pod);
    node.until_ok(&pod, &format!("http://{healthz}/healthz"));
    node.until_ok(&pod, &format!("http://{healthz}/livez"));
}

#[test]
fn k3s_flag_set() {
    run_flag_set("k3s", "k3s-agent-1", "10.42.1.0/24", "127.0.0.1:10256");
}

#[test]
fn kops_flag_set() {
    run_flag_set("kops", &host_name(), "100.96.1.0/24", "127.0.0.1:10256");
}

#[test]
fn kube_up_flag_set() {
    run_flag_set("kube-up", &host_name(), "10.64.1.0/24", "127.0.0.1:10256");
}
