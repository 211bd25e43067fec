//! Drop-in on the inputs real clusters hand kube-proxy: the `KubeProxyConfiguration` kubeadm
//! generates for 1.28–1.35 (every field written, zero and `null` meaning "default"), the flag
//! sets of k3s, kops and kube-up, pflag's value forms on the daemon and the offline tools,
//! kube-proxy's `--config` precedence, bad values, and the exit when the configuration file
//! changes. Runs the real binary; needs no root (`--write-config-to`, `render`, `--dry-run`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kubenat");
const KUBEADM: &str = "fixtures/dropin/kubeadm";
const FLANNEL: &str = "--flannel-subnet-file=fixtures/scenarios/flannel-subnet-env/subnet.env";

fn kubenat(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("NODE_NAME").output().expect("run kubenat")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The effective configuration the daemon writes with `--write-config-to` for `args`, and its
/// log.
fn effective(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("effective.yaml");
    let target = format!("--write-config-to={}", path.display());
    let mut all: Vec<&str> = args.to_vec();
    all.push(&target);
    let out = kubenat(&all);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    let text = std::fs::read_to_string(&path).expect("written config");
    (serde_yaml::from_str(&text).expect("written config is YAML"), stderr(&out))
}

fn get<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, key| &v[key])
}

fn text(value: &Value, path: &str) -> String {
    match get(value, path) {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// The arguments of a distribution's flag set (one per line; `#` lines are comments).
fn args_file(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("fixtures/dropin/flags/{name}.args")).expect("args fixture");
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(str::to_string).collect()
}

fn kubeadm_configs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(KUBEADM)
        .expect("kubeadm fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("config-1.")))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "kubeadm 1.28 through 1.35: {files:?}");
    files
}

#[test]
fn kubeadm_configs_get_kube_proxys_defaults() {
    for file in kubeadm_configs().iter().chain([&Path::new(KUBEADM).join("minimal.yaml")]) {
        let config = format!("--config={}", file.display());
        let (c, log) = effective(&[&config, "--hostname-override=node-1"]);
        let want = [
            ("iptables.syncPeriod", "30s"),
            ("iptables.minSyncPeriod", "1s"),
            ("iptables.masqueradeBit", "14"),
            ("iptables.localhostNodePorts", "true"),
            ("healthzBindAddress", "0.0.0.0:10256"),
            ("metricsBindAddress", "127.0.0.1:10249"),
            ("bindAddress", "0.0.0.0"),
            ("oomScoreAdj", "-999"),
            ("conntrack.maxPerCore", "32768"),
            ("conntrack.min", "131072"),
            ("conntrack.tcpEstablishedTimeout", "24h0m0s"),
            ("conntrack.tcpCloseWaitTimeout", "1h0m0s"),
            ("configSyncPeriod", "15m0s"),
            ("clientConnection.burst", "10"),
            ("clientConnection.contentType", "application/vnd.kubernetes.protobuf"),
            ("clusterCIDR", "10.244.0.0/16"),
            ("mode", "iptables"),
            ("detectLocalMode", "ClusterCIDR"),
            ("hostnameOverride", "node-1"),
        ];
        for (path, value) in want {
            assert_eq!(text(&c, path), value, "{}: {path}", file.display());
        }
        assert!(!log.contains("unknown field"), "{}: every kubeadm field is known: {log}", file.display());
        assert!(!log.contains("ERROR"), "{}: {log}", file.display());
    }
}

#[test]
fn kubeadm_config_renders_like_the_equivalent_flags() {
    let flags = kubenat(&[
        "render",
        "--objects",
        "examples/demo",
        "--hostname-override=node-1",
        "--cluster-cidr=10.244.0.0/16",
    ]);
    assert!(flags.status.success(), "{}", stderr(&flags));
    for file in kubeadm_configs() {
        let config = format!("--config={}", file.display());
        let out = kubenat(&["render", "--objects", "examples/demo", "--hostname-override=node-1", &config]);
        assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
        assert_eq!(out.stdout, flags.stdout, "{}: the same rules as the flags", file.display());
    }
}

#[test]
fn distribution_flag_sets_reach_the_configuration() {
    let cases: [(&str, &[(&str, &str)]); 3] = [
        (
            "k3s",
            &[
                ("conntrack.maxPerCore", "0"),
                ("conntrack.tcpEstablishedTimeout", "0s"),
                ("conntrack.tcpCloseWaitTimeout", "0s"),
                ("healthzBindAddress", "127.0.0.1:10256"),
                ("clusterCIDR", "10.42.0.0/16"),
                ("hostnameOverride", "k3s-agent-1"),
                ("mode", "iptables"),
                ("clientConnection.kubeconfig", "/var/lib/rancher/k3s/agent/kubeproxy.kubeconfig"),
            ],
        ),
        (
            "kops",
            &[
                ("conntrack.maxPerCore", "131072"),
                ("oomScoreAdj", "-998"),
                ("logging.verbosity", "2"),
                ("clusterCIDR", "100.96.0.0/11"),
            ],
        ),
        (
            "kube-up",
            &[
                ("iptables.syncPeriod", "1m0s"),
                ("iptables.minSyncPeriod", "10s"),
                ("ipvs.syncPeriod", "1m0s"),
                ("ipvs.minSyncPeriod", "10s"),
                ("featureGates.AllAlpha", "false"),
                ("detectLocalMode", "NodeCIDR"),
                ("oomScoreAdj", "-998"),
                ("logging.verbosity", "2"),
            ],
        ),
    ];
    for (name, want) in cases {
        let args = args_file(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (c, _) = effective(&args);
        for (path, value) in want {
            assert_eq!(text(&c, path), *value, "{name}: {path}");
        }
        // The offline tools take the same flags.
        let mut render = vec!["render", "--objects", "examples/demo", FLANNEL];
        render.extend(&args);
        let out = kubenat(&render);
        assert!(out.status.success(), "render with {name}'s flags: {}", stderr(&out));
    }
}

#[test]
fn pflag_value_forms_on_daemon_and_render() {
    for (args, path, want) in [
        (&["--masquerade-all"][..], "iptables.masqueradeAll", "true"),
        (&["--masquerade-all=true"], "iptables.masqueradeAll", "true"),
        (&["--masquerade-all=T"], "iptables.masqueradeAll", "true"),
        (&["--masquerade-all=false"], "iptables.masqueradeAll", "false"),
        (&["--iptables-localhost-nodeports=false"], "iptables.localhostNodePorts", "false"),
        (&["--v=2"], "logging.verbosity", "2"),
        (&["-v", "3"], "logging.verbosity", "3"),
        (&["-v=4"], "logging.verbosity", "4"),
        (&["--iptables-sync-period", "45s"], "iptables.syncPeriod", "45s"),
        (&["--iptables-sync-period=1m30s"], "iptables.syncPeriod", "1m30s"),
        (&["--iptables-min-sync-period=0"], "iptables.minSyncPeriod", "0s"),
        (&["--feature-gates=A=true,B=false", "--feature-gates", "A=false"], "featureGates.A", "false"),
        (&["--healthz-bind-address=127.0.0.1"], "healthzBindAddress", "127.0.0.1:10256"),
        (&["--healthz-port=0"], "healthzBindAddress", ""),
        (&["--metrics-bind-address=::1"], "metricsBindAddress", "[::1]:10249"),
        (&["--oom-score-adj=-500"], "oomScoreAdj", "-500"),
    ] {
        let (c, _) = effective(args);
        assert_eq!(text(&c, path), want, "{args:?}");
    }
    let (_, log) = effective(&["--logging-format=json"]);
    let line = log.lines().find(|l| l.contains("wrote the effective configuration")).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(json["level"], "INFO", "{line}");
    let (c, _) = effective(&["--nodeport-addresses=10.0.0.0/8", "--nodeport-addresses", "192.168.0.0/16,primary"]);
    assert_eq!(get(&c, "nodePortAddresses").as_sequence().map(Vec::len), Some(3));
    let render = |extra: &str| {
        let out = kubenat(&["render", "--objects", "examples/demo", "--hostname-override=node-1", extra]);
        assert!(out.status.success(), "{extra}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let masquerade_all = "-A KUBE-SVC-";
    let on = render("--masquerade-all=true");
    let bare = render("--masquerade-all");
    let off = render("--masquerade-all=false");
    assert_eq!(on, bare);
    assert_ne!(on, off, "--masquerade-all=false must not masquerade everything");
    assert!(on.lines().any(|l| l.starts_with(masquerade_all) && !l.contains("! -s") && l.contains("KUBE-MARK-MASQ")));
}

#[test]
fn with_config_only_logging_and_hostname_flags_apply() {
    let config = format!("--config={KUBEADM}/minimal.yaml");
    let (c, log) =
        effective(&[&config, "--cluster-cidr=10.0.0.0/8", "--v=3", "--hostname-override=node-a", "--masquerade-all"]);
    assert_eq!(text(&c, "clusterCIDR"), "10.244.0.0/16", "the file wins over --cluster-cidr, as in kube-proxy");
    assert_eq!(text(&c, "iptables.masqueradeAll"), "false");
    assert_eq!(text(&c, "logging.verbosity"), "3", "logging flags apply over a file");
    assert_eq!(text(&c, "hostnameOverride"), "node-a");
    assert!(log.contains("--cluster-cidr") && log.contains("--masquerade-all") && log.contains("ignored"), "{log}");
    let (c, log) = effective(&["--cluster-cidr=10.0.0.0/8"]);
    assert_eq!(text(&c, "clusterCIDR"), "10.0.0.0/8", "without a file the flag counts");
    assert!(!log.contains("ignored"), "{log}");
}

#[test]
fn bad_values_fail_with_one_line_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, body: &str| {
        let path = dir.path().join(name);
        let head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        std::fs::write(&path, format!("{head}{body}")).expect("write");
        format!("--config={}", path.display())
    };
    let type_error = file("type.yaml", "iptables:\n  syncPeriod: 30\n");
    let bad_mode = file("mode.yaml", "mode: ipvs\n");
    let zero_sync = file("zero.yaml", "iptables:\n  syncPeriod: -5s\n");
    let syntax = file("syntax.yaml", "iptables:\n  syncPeriod: [1\n");
    for (args, needle) in [
        (vec!["--iptables-sync-period=soon"], "--iptables-sync-period"),
        (vec!["--iptables-sync-period=0s"], "--iptables-sync-period"),
        (vec!["--masquerade-all=maybe"], "--masquerade-all"),
        (vec!["--oom-score-adj=-2000"], "--oom-score-adj"),
        (vec!["--feature-gates=NoValue"], "--feature-gates"),
        (vec!["--logging-format=xml"], "--logging-format"),
        (vec!["--proxy-mode=ipvs"], "--proxy-mode"),
        (vec!["--cluster-cidr=10.0.0.0/33"], "--cluster-cidr"),
        (vec!["--vmodule=proxier"], "--vmodule"),
        (vec!["--no-such-flag"], "--no-such-flag"),
        (vec![type_error.as_str()], "iptables.syncPeriod"),
        (vec![bad_mode.as_str()], "mode"),
        (vec![zero_sync.as_str()], "iptables.syncPeriod"),
        (vec![syntax.as_str()], "line 4"),
        (vec!["--config=/no/such/file.yaml"], "/no/such/file.yaml"),
    ] {
        let out = kubenat(&args);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = stderr(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let out = kubenat(&[&["render", "--objects", "examples/demo"][..], &args].concat());
        assert!(!out.status.success() && stderr(&out).contains(needle), "render {args:?}: {}", stderr(&out));
    }
    let unknown = file("unknown.yaml", "iptables:\n  syncPeriodd: 10s\nfancy: true\nmode: userspace\nmode: iptables\n");
    let (c, log) = effective(&[&unknown]);
    assert!(log.contains("unknown field") && log.contains("iptables.syncPeriodd") && log.contains("fancy"), "{log}");
    assert!(log.contains("duplicate key mode"), "{log}");
    assert_eq!(text(&c, "mode"), "iptables", "the last duplicate wins, as in kube-proxy's lenient decoding");
}

/// A daemon serving `examples/demo` in dry-run mode from `config` (servers on ephemeral
/// loopback ports); killed when dropped.
struct DryRunDaemon(std::process::Child);

impl DryRunDaemon {
    fn start(config: &Path, log: &Path) -> DryRunDaemon {
        dry_run_daemon(&[&format!("--config={}", config.display())], log)
    }

    /// The exit code, once it exits within `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Starts a dry-run daemon serving `examples/demo` with `flags`, logging to `log`.
fn dry_run_daemon(flags: &[&str], log: &Path) -> DryRunDaemon {
    let child = Command::new(BIN)
        .args(["--objects", "examples/demo", "--dry-run", "--hostname-override=node-1"])
        .arg("--flannel-subnet-file=/nonexistent/subnet.env")
        .args(flags)
        .env("KUBENAT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start kubenat");
    DryRunDaemon(child)
}

impl Drop for DryRunDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SERVED_CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
    clusterCIDR: 10.244.0.0/16\nhealthzBindAddress: 127.0.0.1:0\nmetricsBindAddress: 127.0.0.1:0\n";

/// Waits until the daemon has synced once (its log says so), bounded.
fn wait_for_sync(log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains("synced")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no sync within 20 s: {}", std::fs::read_to_string(log).unwrap_or_default());
}

#[test]
fn a_written_config_file_makes_the_daemon_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.conf");
    std::fs::write(&config, SERVED_CONFIG).expect("write");
    let log = dir.path().join("daemon.log");
    let mut daemon = DryRunDaemon::start(&config, &log);
    wait_for_sync(&log);
    assert_eq!(daemon.wait(Duration::from_secs(2)), None, "runs while the file is unchanged");
    std::fs::write(&config, format!("{SERVED_CONFIG}iptables: {{masqueradeAll: true}}\n")).expect("rewrite");
    let code = daemon.wait(Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(1), "exits with an error so the pod restarts: {text}");
    assert!(text.contains("configuration file changed"), "{text}");
}

#[test]
fn a_config_map_update_makes_the_daemon_exit() {
    // The kubelet's ConfigMap volume: config.conf -> ..data/config.conf, ..data -> ..<timestamp>.
    let dir = tempfile::tempdir().expect("tempdir");
    let (v1, v2) = (dir.path().join("..2026_12_01_v1"), dir.path().join("..2026_12_01_v2"));
    for version in [&v1, &v2] {
        std::fs::create_dir(version).expect("mkdir");
        std::fs::write(version.join("config.conf"), SERVED_CONFIG).expect("write");
    }
    std::os::unix::fs::symlink("..2026_12_01_v1", dir.path().join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/config.conf", dir.path().join("config.conf")).expect("symlink");
    let log = dir.path().join("daemon.log");
    let mut daemon = DryRunDaemon::start(&dir.path().join("config.conf"), &log);
    wait_for_sync(&log);
    let tmp = dir.path().join("..data_tmp");
    std::os::unix::fs::symlink("..2026_12_01_v2", &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.path().join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(&v1).expect("remove the old version");
    let code = daemon.wait(Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(1), "{text}");
}

/// A plain HTTP GET on 127.0.0.1 (status code), bounded.
fn get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_busy_healthz_port_is_retried_unless_bind_address_hard_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let healthz = format!("--healthz-bind-address=127.0.0.1:{port}");
    let metrics = "--metrics-bind-address=127.0.0.1:0";

    let log = dir.path().join("hard.log");
    let mut hard = dry_run_daemon(&[&healthz, metrics, "--bind-address-hard-fail"], &log);
    let code = hard.wait(Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(2), "a bind failure is fatal with --bind-address-hard-fail: {text}");
    assert!(text.contains("--healthz-bind-address") && text.contains(&port.to_string()), "{text}");

    // Without it (kube-proxy's default): logged, retried every 5 s, served once the port frees.
    let log = dir.path().join("soft.log");
    let mut soft = dry_run_daemon(&[&healthz, metrics, "--oom-score-adj=500"], &log);
    wait_for_sync(&log);
    assert_eq!(soft.wait(Duration::from_millis(500)), None, "keeps running");
    let oom = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", soft.0.id())).unwrap_or_default();
    assert_eq!(oom.trim(), "500", "--oom-score-adj is set on the process (raising needs no privilege)");
    drop(busy);
    let deadline = Instant::now() + Duration::from_secs(15);
    while get_status(port, "/livez") != Some(200) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(Instant::now() < deadline, "healthz never bound after the port freed: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(std::fs::read_to_string(&log).unwrap_or_default().contains("retrying"));
}

#[test]
fn init_only_and_write_config_to_exit_at_once() {
    // --dry-run: node tuning only logs what it would set (this runs in the host's namespace).
    let out = kubenat(&["--init-only", "--hostname-override=node-1", "--iptables-backend=nft", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("--init-only"), "{}", stderr(&out));
    let out = kubenat(&["render", "--objects", "examples/demo", "--init-only"]);
    assert!(!out.status.success() && stderr(&out).contains("actions of the daemon"), "{}", stderr(&out));
}

#[test]
fn prefer_same_traffic_distribution_gate_is_honoured() {
    let scenario = "fixtures/scenarios/prefer-same-node/manifests.yaml";
    let render = |extra: &[&str]| {
        let mut args =
            vec!["render", "--objects", scenario, "fixtures/scenarios/common-node.yaml", "--hostname-override=node-1"];
        args.extend(extra);
        let out = kubenat(&args);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().filter(|l| l.contains("default/same-node:dns -> ")).count()
    };
    assert_eq!(render(&[]), 1, "on by default (kube-proxy 1.34+): only this node's endpoint");
    assert_eq!(render(&["--feature-gates=PreferSameTrafficDistribution=true"]), 1);
    assert_eq!(render(&["--feature-gates=PreferSameTrafficDistribution=false"]), 2, "off: the zone-a endpoints");
}
