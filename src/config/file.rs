//! `--config`: kube-proxy's `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`).
//! Only the fields kubenat uses are read; unknown fields are ignored, as kube-proxy's lenient
//! decoding does, but a wrong apiVersion/kind or a wrong type is an error naming the file.

use std::path::Path;

use serde::Deserialize;

use super::Error;

/// The subset of `KubeProxyConfiguration` that kubenat honours. Every field is optional: flags
/// given on the command line override it, and kube-proxy's defaults fill what neither sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    /// `kubeproxy.config.k8s.io/v1alpha1`.
    pub api_version: Option<String>,
    /// `KubeProxyConfiguration`.
    pub kind: Option<String>,
    /// `mode`: `iptables` or `userspace`.
    pub mode: Option<String>,
    /// `clusterCIDR` (comma-separated for dual stack).
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    /// `hostnameOverride`.
    pub hostname_override: Option<String>,
    /// `healthzBindAddress`.
    pub healthz_bind_address: Option<String>,
    /// `metricsBindAddress`.
    pub metrics_bind_address: Option<String>,
    /// `bindAddress` (userspace proxy listen address).
    pub bind_address: Option<String>,
    /// `detectLocalMode`.
    pub detect_local_mode: Option<String>,
    /// `detectLocal`.
    #[serde(default)]
    pub detect_local: DetectLocal,
    /// `iptables`.
    #[serde(default)]
    pub iptables: IptablesSection,
    /// `nodePortAddresses`.
    pub node_port_addresses: Option<Vec<String>>,
    /// `clientConnection`.
    #[serde(default)]
    pub client_connection: ClientConnection,
    /// `portRange` (userspace).
    pub port_range: Option<String>,
}

/// `detectLocal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectLocal {
    /// `bridgeInterface`.
    pub bridge_interface: Option<String>,
    /// `interfaceNamePrefix`.
    pub interface_name_prefix: Option<String>,
}

/// `iptables`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IptablesSection {
    /// `masqueradeAll`.
    pub masquerade_all: Option<bool>,
    /// `masqueradeBit`.
    pub masquerade_bit: Option<i64>,
    /// `syncPeriod` (a Go duration, e.g. `30s`).
    pub sync_period: Option<String>,
    /// `minSyncPeriod`.
    pub min_sync_period: Option<String>,
    /// `localhostNodePorts`.
    pub localhost_node_ports: Option<bool>,
    /// `servicesDispatch` (a kubenat extension): `flat` or `tree`.
    pub services_dispatch: Option<String>,
}

/// `clientConnection`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    /// `kubeconfig`.
    pub kubeconfig: Option<String>,
}

const API_VERSIONS: [&str; 2] = ["kubeproxy.config.k8s.io/v1alpha1", "kubeproxy.config.k8s.io/v1beta1"];

/// Parses a `KubeProxyConfiguration` from YAML or JSON text.
pub fn parse(text: &str, path: &str) -> Result<KubeProxyConfiguration, Error> {
    let file_error = |reason: String| Error::File { path: path.to_string(), reason };
    let config: KubeProxyConfiguration = serde_yaml::from_str(text).map_err(|e| file_error(e.to_string()))?;
    if let Some(kind) = &config.kind {
        if kind != "KubeProxyConfiguration" {
            return Err(file_error(format!("kind is {kind:?}, expected KubeProxyConfiguration")));
        }
    }
    if let Some(version) = &config.api_version {
        if !API_VERSIONS.contains(&version.as_str()) {
            return Err(file_error(format!("apiVersion {version:?} is not {}", API_VERSIONS[0])));
        }
    }
    Ok(config)
}

/// Reads and parses `--config`.
pub fn load_file(path: &Path) -> Result<KubeProxyConfiguration, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::File { path: shown.clone(), reason: e.to_string() })?;
    parse(&text, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_kube_proxy_config_map() {
        let text = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 5
clusterCIDR: 10.244.0.0/16
conntrack: {maxPerCore: 32768}
detectLocalMode: ClusterCIDR
iptables:
  masqueradeAll: false
  masqueradeBit: 14
  minSyncPeriod: 1s
  syncPeriod: 30s
mode: "iptables"
nodePortAddresses: [192.168.0.0/16]
"#;
        let c = parse(text, "config.conf").unwrap();
        assert_eq!(c.cluster_cidr.as_deref(), Some("10.244.0.0/16"));
        assert_eq!(c.iptables.masquerade_bit, Some(14));
        assert_eq!(c.iptables.sync_period.as_deref(), Some("30s"));
        assert_eq!(c.client_connection.kubeconfig.as_deref(), Some("/var/lib/kube-proxy/kubeconfig.conf"));
        assert_eq!(c.node_port_addresses, Some(vec!["192.168.0.0/16".to_string()]));
        assert_eq!(c.iptables.services_dispatch, None);
        let c = parse("iptables: {servicesDispatch: tree}\n", "x.yaml").unwrap();
        assert_eq!(c.iptables.services_dispatch.as_deref(), Some("tree"));
    }

    #[test]
    fn wrong_kind_or_type_names_the_file() {
        let err = parse("kind: KubeletConfiguration\n", "x.yaml").unwrap_err().to_string();
        assert!(err.contains("x.yaml") && err.contains("KubeletConfiguration"), "{err}");
        let err = parse("iptables: {masqueradeBit: lots}\n", "x.yaml").unwrap_err().to_string();
        assert!(err.starts_with("--config x.yaml:"), "{err}");
    }
}
