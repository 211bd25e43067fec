//! What the kubelet does for a kube-proxy pod, for running kubeadm's DaemonSet unchanged: the
//! ConfigMap volume layout (`NAME -> ..data/NAME`, `..data -> ..<timestamp>`), the
//! service-account volume (token, CA, namespace), `$(VAR)` expansion in the command, and
//! kubeadm's fixtures (`fixtures/dropin/kubeadm/`) read as the pod spec has them.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};

/// The service-account token a test API server insists on.
pub const TOKEN: &str = "kubenat-swap-test-token";
/// Where the kubelet mounts the service account's token and CA.
pub const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// kubeadm's fixtures.
const KUBEADM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/dropin/kubeadm");

fn yaml(path: &str) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Writes `files` into `dir` as the kubelet lays out a ConfigMap or projected volume.
pub fn config_map_volume(dir: &Path, files: &[(&str, String)]) {
    let version = dir.join("..2026_12_01_00_00_00.000000001");
    fs::create_dir_all(&version).expect("mkdir");
    for (name, body) in files {
        fs::write(version.join(name), body).expect("write");
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).expect("symlink");
    }
    std::os::unix::fs::symlink(version.file_name().expect("name"), dir.join("..data")).expect("symlink");
}

/// The service-account volume: [`TOKEN`], the API server's CA, the namespace.
pub fn service_account_volume(dir: &Path, ca_pem: String) {
    config_map_volume(dir, &[("token", TOKEN.to_string()), ("ca.crt", ca_pem), ("namespace", "kube-system".into())]);
}

/// kubeadm's `kubeconfig.conf` (token file + CA) with `server`, the one value a real cluster
/// fills in.
pub fn kubeadm_kubeconfig(server: &str) -> String {
    let mut config = yaml(&format!("{KUBEADM}/kubeconfig.conf"));
    config["clusters"][0]["cluster"]["server"] = json!(server);
    serde_yaml::to_string(&config).expect("YAML")
}

/// `$(VAR)` references expanded from `env`, as the kubelet does for a container's command.
pub fn expand(arg: &str, env: &[(&str, &str)]) -> String {
    env.iter().fold(arg.to_string(), |text, (name, value)| text.replace(&format!("$({name})"), value))
}

/// kubeadm's kube-proxy pod: the container's command and args with `env` expanded, the path
/// its `kube-proxy` ConfigMap is mounted at, and that ConfigMap's `config.conf`.
pub struct KubeadmPod {
    /// Command then args.
    pub argv: Vec<String>,
    /// The ConfigMap's mount path.
    pub config_mount: String,
    /// The ConfigMap's `config.conf`.
    pub config_conf: String,
}

impl KubeadmPod {
    /// Reads the DaemonSet and ConfigMap fixtures.
    pub fn read(env: &[(&str, &str)]) -> KubeadmPod {
        let daemonset = yaml(&format!("{KUBEADM}/daemonset.yaml"));
        let config_map = yaml(&format!("{KUBEADM}/configmap.yaml"));
        let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
        let argv = container["command"]
            .as_array()
            .expect("command")
            .iter()
            .chain(container["args"].as_array().into_iter().flatten())
            .map(|v| expand(v.as_str().expect("string"), env))
            .collect();
        let config_mount = container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["name"] == "kube-proxy")
            .and_then(|m| m["mountPath"].as_str())
            .expect("the kube-proxy ConfigMap mount")
            .to_string();
        let config_conf = config_map["data"]["config.conf"].as_str().expect("config.conf").to_string();
        KubeadmPod { argv, config_mount, config_conf }
    }
}

/// A distribution's kube-proxy flag set (`fixtures/dropin/flags/NAME.args`) as its node agent
/// runs it, pointed at the API server `server`: `--master` gets `server`, and the kubeconfig
/// `--kubeconfig` names is written (kubeadm's form: token file + CA) into `dir`.
pub struct FlagSet {
    /// `/usr/local/bin/kube-proxy` then the flags.
    pub argv: Vec<String>,
    /// Host directory → container directory holding the kubeconfig, when the flags name one.
    pub kubeconfig_mount: Option<(std::path::PathBuf, String)>,
}

impl FlagSet {
    /// Reads `NAME.args`; writes the kubeconfig under `dir`.
    pub fn read(name: &str, server: &str, dir: &Path) -> FlagSet {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/dropin/flags/");
        let text = fs::read_to_string(format!("{path}{name}.args")).expect("args fixture");
        let mut set = FlagSet { argv: vec!["/usr/local/bin/kube-proxy".to_string()], kubeconfig_mount: None };
        for arg in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            if arg.starts_with("--master=") {
                set.argv.push(format!("--master={server}"));
                continue;
            }
            if let Some(path) = arg.strip_prefix("--kubeconfig=") {
                let (container_dir, file) = path.rsplit_once('/').expect("absolute path");
                config_map_volume(dir, &[(file, kubeadm_kubeconfig(server))]);
                set.kubeconfig_mount = Some((dir.to_path_buf(), container_dir.to_string()));
            }
            set.argv.push(arg.to_string());
        }
        set
    }
}

/// The node name kube-proxy uses without `--hostname-override`: the host name, lower-cased.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_lowercase()
}
