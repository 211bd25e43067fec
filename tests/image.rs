//! The container image, run the way the DaemonSet runs it (podman, capabilities NET_ADMIN and
//! NET_RAW only, read-only root file system, the node's network namespace — here one the test
//! made): `kubenat apply` of the demo with each iptables backend, read back from the host side,
//! and the daemon with the shipped ConfigMap answering the DaemonSet's probes, started both as
//! deploy/daemonset.yaml starts it and as kubeadm's kube-proxy DaemonSet would.
//!
//! Builds the image with scripts/build-image.sh, or uses the one in `$KUBENAT_IMAGE_STORE`
//! (`.ci/run` builds it first). Needs root (skips otherwise, fails under CI=true), except
//! `containerfile_matches_build_script`, which keeps deploy/Containerfile in step with the script.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::apiserver::{ApiServer, ServerConfig};
use testkit::daemon::{http_get, poll};
use testkit::image::{Container, Image, RunOptions, State};
use testkit::kubelet;
use testkit::netns::NetNs;
use testkit::objects::{self, Port};
use testkit::process;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// A one-shot `kubenat apply` in a container (create, start, apply, exit).
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// From `podman run` to a daemon that has synced and answers its readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The node name the daemon gets through `$NODE_NAME`.
const NODE: &str = "node-1";

/// The image, or `None` (skipped) when not root.
fn image() -> Option<&'static Image> {
    testkit::require_root().then(Image::get)
}

// ---------------------------------------------------------------------------------------------
// (a) kubenat apply of the demo.

/// The nat chains `kubenat render` (the binary under test, on the host) declares for the demo.
fn demo_nat_chains(render_args: &[&str]) -> Vec<String> {
    let mut argv = vec![env!("CARGO_BIN_EXE_kubenat"), "render"];
    argv.extend_from_slice(render_args);
    let text = process::run_ok(&argv);
    let nat = text.split("*nat").nth(1).unwrap_or_else(|| panic!("render printed no nat table:\n{text}"));
    let nat = nat.split("COMMIT").next().unwrap_or_default();
    nat.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// `kubenat apply` of examples/demo from the image into a fresh namespace with `backend`;
/// the rules read back with `save` (and nothing with `other_save`).
fn apply_demo(backend: &str, save: &str, other_save: &str) {
    let Some(image) = image() else { return };
    let ns = NetNs::new("img-apply");
    let render_args = ["--objects", "/demo", "--hostname-override", NODE, "--cluster-cidr", "10.244.0.0/16"];
    let opts = RunOptions::in_netns(&ns)
        .mount_ro(&Path::new(REPO).join("examples/demo"), "/demo")
        .args(&["apply"])
        .args(&render_args)
        .args(&["--iptables-backend", backend]);
    let container = image.run("apply", opts);
    let code = container.wait(APPLY_TIMEOUT);
    let logs = container.logs();
    assert_eq!(code, 0, "kubenat apply --iptables-backend {backend} in the image failed; logs:\n{logs}");
    assert!(logs.contains(&format!("with {backend} backend")), "apply did not report the {backend} backend:\n{logs}");

    let rules = ns.run_ok(&[save, "-t", "nat"]);
    let host_args = ["--objects", &format!("{REPO}/examples/demo"), "--hostname-override", NODE];
    let expected = demo_nat_chains(&[&host_args[..], &["--cluster-cidr", "10.244.0.0/16"]].concat());
    assert!(expected.iter().any(|c| c == "KUBE-SERVICES"), "render declared no KUBE-SERVICES: {expected:?}");
    assert!(expected.iter().filter(|c| c.starts_with("KUBE-SVC-")).count() >= 2, "demo services: {expected:?}");
    for chain in &expected {
        assert!(rules.contains(&format!(":{chain} ")), "{save}: chain {chain} missing; logs:\n{logs}\n{rules}");
    }
    assert!(rules.contains("-j KUBE-SERVICES"), "{save}: nothing jumps to KUBE-SERVICES:\n{rules}");
    assert!(rules.contains("\"demo/hello:http\""), "{save}: no rule for demo/hello:http:\n{rules}");
    let other = ns.exec(&[other_save, "-t", "nat"]);
    let other = String::from_utf8_lossy(&other.stdout);
    assert!(!other.contains("KUBE-SERVICES"), "{other_save} also has kubenat's rules:\n{other}");
}

#[test]
fn apply_demo_with_nft_backend() {
    apply_demo("nft", "iptables-nft-save", "iptables-legacy-save");
}

#[test]
fn apply_demo_with_legacy_backend() {
    apply_demo("legacy", "iptables-legacy-save", "iptables-nft-save");
}

// ---------------------------------------------------------------------------------------------
// (b) the daemon with the shipped configuration.

/// `data[key]` of the ConfigMap in deploy/configmap.yaml.
fn configmap_entry(key: &str) -> String {
    let path = Path::new(REPO).join("deploy/configmap.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    doc["data"][key].as_str().unwrap_or_else(|| panic!("{}: no data.{key}", path.display())).to_string()
}

/// The kubenat container of deploy/daemonset.yaml.
fn daemonset_container() -> Value {
    let path = Path::new(REPO).join("deploy/daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    doc["spec"]["template"]["spec"]["containers"][0].clone()
}

/// `(path, port)` of a probe (`livenessProbe`, `readinessProbe`) of the DaemonSet.
fn probe(container: &Value, which: &str) -> (String, u16) {
    let get = &container[which]["httpGet"];
    let path = get["path"].as_str().unwrap_or_else(|| panic!("{which}: no httpGet.path"));
    let port = get["port"].as_u64().and_then(|p| u16::try_from(p).ok());
    (path.to_string(), port.unwrap_or_else(|| panic!("{which}: no numeric httpGet.port")))
}

/// Where the DaemonSet mounts volume `name`.
fn mount_path(container: &Value, name: &str) -> String {
    let mounts = container["volumeMounts"].as_array().cloned().unwrap_or_default();
    let mount = mounts.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("no volumeMount {name}"));
    mount["mountPath"].as_str().unwrap_or_else(|| panic!("volumeMount {name}: no mountPath")).to_string()
}

fn web_service() -> Value {
    objects::service("web", Ipv4Addr::new(10, 96, 0, 10), &[Port::tcp("http", 80, 8080)])
}

/// The EndpointSlice of `default/web`: one ready endpoint, 10.244.0.5, on `node`.
fn web_slice(node: &str) -> Value {
    objects::slice("web", &objects::ready_on(&[Ipv4Addr::new(10, 244, 0, 5)], node), &[Port::tcp("http", 80, 8080)])
}

/// Both backends' nat tables of `ns` (the daemon detects which one to use).
fn nat_rules(ns: &NetNs) -> String {
    ["iptables-nft-save", "iptables-legacy-save"]
        .iter()
        .map(|save| String::from_utf8_lossy(&ns.exec(&[save, "-t", "nat"]).stdout).into_owned())
        .collect()
}

/// Starts the daemon from the image in a fresh namespace with the test API server, the
/// ConfigMap's config.conf and a kubeconfig for that server mounted where the DaemonSet mounts
/// them, runs `command` (the pod spec's command: entrypoint, then arguments), and checks that
/// it programs the API server's Service and answers the DaemonSet's liveness and readiness
/// probes from the host side.
fn daemon_answers_probes(prefix: &str, command: &[&str]) {
    let Some(image) = image() else { return };
    let spec = daemonset_container();
    let ns = NetNs::new(prefix);
    let api = ApiServer::start_in_netns(ns.name());
    api.apply(objects::node(NODE, None));
    api.apply(web_service());
    api.apply(web_slice(NODE));

    // The ConfigMap's files; kubeconfig.conf points at the test API server (plain HTTP, no
    // token) instead of API_SERVER_HOST with the service-account token.
    let config_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(config_dir.path().join("config.conf"), configmap_entry("config.conf")).expect("write config.conf");
    let kubeconfig = api.kubeconfig(config_dir.path());
    std::fs::rename(&kubeconfig, config_dir.path().join("kubeconfig.conf")).expect("rename kubeconfig");
    let flannel_dir = tempfile::tempdir().expect("temp dir");
    let mut opts = RunOptions::in_netns(&ns)
        .mount_ro(config_dir.path(), &mount_path(&spec, "config"))
        .mount_ro(flannel_dir.path(), &mount_path(&spec, "flannel-run"))
        .env("NODE_NAME", NODE)
        .entrypoint(command[0])
        .args(&command[1..]);
    if Path::new("/lib/modules").is_dir() {
        opts = opts.mount_ro(Path::new("/lib/modules"), &mount_path(&spec, "lib-modules"));
    }
    let container = image.run(prefix, opts);

    let fail = |what: &str, container: &Container| -> ! {
        panic!("{what}\n--- container logs ---\n{}\n--- nat rules ---\n{}", container.logs(), nat_rules(&ns))
    };
    let (ready_path, ready_port) = probe(&spec, "readinessProbe");
    let (live_path, live_port) = probe(&spec, "livenessProbe");
    let get = |path: &str, port: u16| http_get(ns.name(), &format!("http://127.0.0.1:{port}{path}"));
    // Ready and synced (/healthz already answers 200 before the first sync, so that alone would
    // not show the daemon reached the API server):
    // the API server's Service is programmed.
    let mut last = None;
    let synced = poll(READY_TIMEOUT, Duration::from_millis(250), || {
        if let State::Exited(code) = container.state() {
            fail(&format!("the daemon exited ({code})"), &container);
        }
        last = get(&ready_path, ready_port);
        let rules = nat_rules(&ns);
        let programmed = rules.contains("-j KUBE-SERVICES") && rules.contains("default/web:http");
        (programmed && matches!(last, Some((200, _)))).then_some(())
    });
    if synced.is_none() {
        let what =
            format!("within {READY_TIMEOUT:?}, default/web:http programmed and {ready_path} on :{ready_port} 200");
        fail(&format!("not {what} (last answer: {last:?})"), &container);
    }
    match get(&live_path, live_port) {
        Some((200, _)) => {}
        other => fail(&format!("liveness probe {live_path} on :{live_port}: {other:?}"), &container),
    }
    // The logs went through the container runtime (what `kubectl logs` shows).
    let logs = container.logs();
    assert!(logs.contains(NODE), "the daemon's logs do not name node {NODE}:\n{logs}");
}

/// deploy/daemonset.yaml's command.
#[test]
fn daemonset_command_answers_probes() {
    let spec = daemonset_container();
    let command: Vec<&str> = spec["command"].as_array().expect("command").iter().filter_map(Value::as_str).collect();
    daemon_answers_probes("img-ds", &command);
}

/// kubeadm's kube-proxy DaemonSet command (`/usr/local/bin/kube-proxy` is a symlink to kubenat).
#[test]
fn kubeadm_kube_proxy_command_answers_probes() {
    let command =
        ["/usr/local/bin/kube-proxy", "--config=/var/lib/kubenat/config.conf", &format!("--hostname-override={NODE}")];
    let command: Vec<&str> = command.iter().map(|s| s.as_ref()).collect();
    daemon_answers_probes("img-kubeadm", &command);
}

// ---------------------------------------------------------------------------------------------
// deploy/Containerfile (for machines with a registry) in step with scripts/build-image.sh.

/// The same packages, the binary at the same path, the kube-proxy symlink and the entrypoint.
/// Needs no root: it reads the two files.
#[test]
fn containerfile_matches_build_script() {
    let read = |path: &str| std::fs::read_to_string(Path::new(REPO).join(path)).expect(path);
    let (script, containerfile) = (read("scripts/build-image.sh"), read("deploy/Containerfile"));
    let script_packages = script
        .lines()
        .find_map(|l| l.strip_prefix("PACKAGES="))
        .expect("PACKAGES= in scripts/build-image.sh")
        .split(',')
        .map(str::to_string)
        .collect::<std::collections::BTreeSet<_>>();
    let install = "apt-get install -y --no-install-recommends ";
    let containerfile_packages = containerfile
        .lines()
        .find_map(|l| l.split_once(install).map(|(_, rest)| rest))
        .expect("apt-get install in deploy/Containerfile")
        .split_whitespace()
        .take_while(|w| !w.starts_with('\\') && !w.starts_with('&'))
        .map(str::to_string)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(script_packages, containerfile_packages, "packages differ");
    for (what, in_script, in_containerfile) in [
        ("binary", r#"top/usr/local/bin/kubenat""#, " /usr/local/bin/kubenat\n"),
        (
            "kube-proxy symlink",
            r#"ln -s kubenat "$WORK/top/usr/local/bin/kube-proxy""#,
            "ln -s kubenat /usr/local/bin/kube-proxy",
        ),
        ("entrypoint", r#"--entrypoint '["/usr/local/bin/kubenat"]'"#, r#"ENTRYPOINT ["/usr/local/bin/kubenat"]"#),
        ("stripped binary", "strip -o ", "strip target/release/kubenat"),
    ] {
        assert!(script.contains(in_script), "scripts/build-image.sh: no {what} ({in_script})");
        assert!(containerfile.contains(in_containerfile), "deploy/Containerfile: no {what} ({in_containerfile})");
    }
}

// ---------------------------------------------------------------------------------------------
// The swap: kubeadm's kube-proxy DaemonSet and ConfigMap with only the image changed.

/// A node namespace with a TLS API server that rejects requests without the service-account
/// token, holding the node's Node and `default/web` with one endpoint.
struct SwapNode {
    ns: NetNs,
    api: ApiServer,
}

impl SwapNode {
    fn start(prefix: &str, node_name: &str, pod_cidr: &str) -> SwapNode {
        let ns = NetNs::new(prefix);
        let config = ServerConfig {
            netns: Some(ns.name().to_string()),
            tls: true,
            bearer_token: Some(kubelet::TOKEN.to_string()),
            ..ServerConfig::default()
        };
        let api = ApiServer::start_with(config);
        let node = json!({ "spec": { "podCIDR": pod_cidr, "podCIDRs": [pod_cidr] } });
        api.apply(objects::merge(objects::node(node_name, None), node));
        api.apply(web_service());
        api.apply(web_slice(node_name));
        SwapNode { ns, api }
    }

    /// The container programs `default/web`, answers `/healthz` and `/livez` on :10256, and
    /// every request it made carried the token.
    fn assert_runs(&self, container: &Container, what: &str) {
        let get = |path: &str| http_get(self.ns.name(), &format!("http://127.0.0.1:10256{path}"));
        let synced = poll(READY_TIMEOUT, Duration::from_millis(250), || {
            if let State::Exited(code) = container.state() {
                panic!("{what}: exited ({code}):\n{}", container.logs());
            }
            (nat_rules(&self.ns).contains("default/web:http") && matches!(get("/healthz"), Some((200, _))))
                .then_some(())
        });
        assert!(synced.is_some(), "{what}: not programmed and healthy in time:\n{}", container.logs());
        assert!(matches!(get("/livez"), Some((200, _))), "{what}: /livez:\n{}", container.logs());
        assert!(self.api.request_log().iter().all(|r| r.status != 401), "{what}: every request carried the token");
        let logs = container.logs();
        assert!(!logs.contains("ERROR") && !logs.contains("unknown field"), "{what}: {logs}");
    }
}

/// kubeadm's kube-proxy pod from `fixtures/dropin/kubeadm/`, run from this image as the kubelet
/// would: the DaemonSet's command (`/usr/local/bin/kube-proxy --config=… --hostname-override=
/// $(NODE_NAME)`, expanded from the pod's env), the ConfigMap mounted at its mount path in the
/// kubelet's volume layout with kubeadm's kubeconfig (service-account token file + CA), and the
/// service account's token and CA mounted where the kubelet mounts them, against a TLS API
/// server that refuses requests without the token. It programs the Service and answers
/// `/healthz` and `/livez` on kube-proxy's port.
#[test]
fn kubeadm_daemonset_and_configmap_run_unchanged() {
    let Some(image) = image() else { return };
    let node = SwapNode::start("img-swap", NODE, "10.244.0.0/24");
    let env = [("NODE_NAME", NODE)];
    let pod = kubelet::KubeadmPod::read(&env);
    let dir = tempfile::tempdir().expect("temp dir");
    let (config_dir, account_dir) = (dir.path().join("kube-proxy"), dir.path().join("serviceaccount"));
    let kubeconfig = kubelet::kubeadm_kubeconfig(&node.api.url());
    kubelet::config_map_volume(
        &config_dir,
        &[("config.conf", pod.config_conf.clone()), ("kubeconfig.conf", kubeconfig)],
    );
    kubelet::service_account_volume(&account_dir, node.api.ca_pem().expect("TLS"));
    let args: Vec<&str> = pod.argv[1..].iter().map(String::as_str).collect();
    let opts = RunOptions::in_netns(&node.ns)
        .mount_ro(&config_dir, &pod.config_mount)
        .mount_ro(&account_dir, kubelet::SERVICE_ACCOUNT)
        .env("NODE_NAME", NODE)
        .entrypoint(&pod.argv[0])
        .args(&args);
    node.assert_runs(&image.run("img-swap", opts), "kubeadm's kube-proxy command");
}

/// A distribution's kube-proxy flag set (k3s, kops, kube-up), run from the image as its node
/// agent runs kube-proxy: the flags as given, `--master` and the kubeconfig pointing at a TLS
/// API server that checks the service-account token. It programs the Service and answers
/// `/healthz` and `/livez` where the flags put them.
fn flag_set_runs_unchanged(name: &str, node_name: &str, pod_cidr: &str) {
    let Some(image) = image() else { return };
    let node = SwapNode::start(&format!("img-{name}"), node_name, pod_cidr);
    let dir = tempfile::tempdir().expect("temp dir");
    let account_dir = dir.path().join("serviceaccount");
    kubelet::service_account_volume(&account_dir, node.api.ca_pem().expect("TLS"));
    let flags = kubelet::FlagSet::read(name, &node.api.url(), &dir.path().join("kubeconfig"));
    let args: Vec<&str> = flags.argv[1..].iter().map(String::as_str).collect();
    let mut opts = RunOptions::in_netns(&node.ns).mount_ro(&account_dir, kubelet::SERVICE_ACCOUNT);
    if let Some((host, path)) = &flags.kubeconfig_mount {
        opts = opts.mount_ro(host, path);
    }
    let container = image.run(&format!("img-{name}"), opts.entrypoint(&flags.argv[0]).args(&args));
    node.assert_runs(&container, name);
}

#[test]
fn k3s_flag_set_runs_unchanged() {
    flag_set_runs_unchanged("k3s", "k3s-agent-1", "10.42.1.0/24");
}

#[test]
fn kops_flag_set_runs_unchanged() {
    flag_set_runs_unchanged("kops", &kubelet::host_name(), "100.96.1.0/24");
}

#[test]
fn kube_up_flag_set_runs_unchanged() {
    flag_set_runs_unchanged("kube-up", &kubelet::host_name(), "10.64.1.0/24");
}
