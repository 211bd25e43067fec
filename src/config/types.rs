//! kube-proxy's `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`), every field,
//! with kube-proxy's zero-value semantics: a non-pointer field at its zero value (`0s`, `""`,
//! `0`, `false`) means "kube-proxy's default", a pointer field (`Option` here) at `null` means
//! the same, and an explicit `0` in a pointer field means zero (e.g. `conntrack.maxPerCore: 0`:
//! leave `nf_conntrack_max` alone). Serializes back in kube-proxy's shape (`--write-config-to`,
//! `/configz`). Decoding is `decode`, defaulting `defaults`, validation `validate`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duration::GoDuration;

/// The configuration file's `apiVersion`.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The configuration file's `kind`.
pub const KIND: &str = "KubeProxyConfiguration";

/// `KubeProxyConfiguration`, field for field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeProxyConfiguration {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `featureGates`: gate name → enabled.
    pub feature_gates: BTreeMap<String, bool>,
    /// `clientConnection`.
    pub client_connection: ClientConnection,
    /// `logging` (component-base's `LoggingConfiguration`).
    pub logging: Logging,
    /// `hostnameOverride`.
    pub hostname_override: String,
    /// `bindAddress`: the userspace proxy's listen address (`0.0.0.0` by default).
    pub bind_address: String,
    /// `healthzBindAddress`: `IP:port` of `/healthz` and `/livez`.
    pub healthz_bind_address: String,
    /// `metricsBindAddress`: `IP:port` of `/metrics`.
    pub metrics_bind_address: String,
    /// `bindAddressHardFail`: a healthz/metrics bind failure is fatal.
    pub bind_address_hard_fail: bool,
    /// `enableProfiling`: `/debug/pprof` on the metrics server (Go only).
    pub enable_profiling: bool,
    /// `showHiddenMetricsForVersion`.
    pub show_hidden_metrics_for_version: String,
    /// `mode`: `""` (the platform default: iptables), `iptables`, `ipvs`, `nftables`,
    /// `kernelspace`; kubenat adds `userspace`.
    pub mode: String,
    /// `iptables`.
    pub iptables: Iptables,
    /// `ipvs` (another mode's settings: read, not used).
    pub ipvs: Ipvs,
    /// `nftables` (another mode's settings: read, not used).
    pub nftables: Nftables,
    /// `winkernel` (Windows: read, not used).
    pub winkernel: Winkernel,
    /// `detectLocalMode`: `""` (ClusterCIDR), `ClusterCIDR`, `NodeCIDR`, `BridgeInterface`,
    /// `InterfaceNamePrefix`.
    pub detect_local_mode: String,
    /// `detectLocal`.
    pub detect_local: DetectLocal,
    /// `clusterCIDR`: comma-separated, one per family.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    /// `nodePortAddresses`: CIDRs and the keywords `primary`, `localhost`, `all`.
    pub node_port_addresses: Vec<String>,
    /// `oomScoreAdj` (`null`: −999).
    pub oom_score_adj: Option<i32>,
    /// `conntrack`.
    pub conntrack: Conntrack,
    /// `configSyncPeriod`: how often the informers relist (15m by default).
    pub config_sync_period: GoDuration,
    /// `portRange`: the userspace proxy's port range.
    pub port_range: String,
    /// `windowsRunAsService` (Windows only).
    pub windows_run_as_service: bool,
}

/// `clientConnection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientConnection {
    /// `kubeconfig`: path of the kubeconfig file.
    pub kubeconfig: String,
    /// `acceptContentTypes`.
    pub accept_content_types: String,
    /// `contentType` (`application/vnd.kubernetes.protobuf` by default).
    pub content_type: String,
    /// `qps` (5 by default).
    pub qps: f32,
    /// `burst` (10 by default).
    pub burst: i32,
}

/// `logging`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Logging {
    /// `format`: `text` (default) or `json`.
    pub format: String,
    /// `flushFrequency`: a duration string or nanoseconds.
    pub flush_frequency: FlushFrequency,
    /// `verbosity`: klog's `-v`.
    pub verbosity: u32,
    /// `vmodule`: per-file verbosity.
    pub vmodule: Vec<VModuleItem>,
    /// `options` (per-format settings; kept as given).
    pub options: BTreeMap<String, serde_json::Value>,
}

/// `logging.flushFrequency`: Go writes nanoseconds, people write `5s`; both are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushFrequency(pub GoDuration);

impl Serialize for FlushFrequency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FlushFrequency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Nanos(i64),
            Text(String),
        }
        match Form::deserialize(deserializer)? {
            Form::Nanos(n) => Ok(FlushFrequency(GoDuration::from_std(std::time::Duration::from_nanos(
                u64::try_from(n).map_err(|_| serde::de::Error::custom("flushFrequency must not be negative"))?,
            )))),
            Form::Text(text) => GoDuration::parse(&text).map(FlushFrequency).map_err(serde::de::Error::custom),
        }
    }
}

/// One `logging.vmodule` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VModuleItem {
    /// `filePattern`.
    pub file_pattern: String,
    /// `verbosity`.
    pub verbosity: u32,
}

/// `iptables`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Iptables {
    /// `masqueradeBit` (`null`: 14).
    pub masquerade_bit: Option<i32>,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// `localhostNodePorts` (`null`: true).
    pub localhost_node_ports: Option<bool>,
    /// `syncPeriod` (`0s`: 30s).
    pub sync_period: GoDuration,
    /// `minSyncPeriod` (`0s`: 1s).
    pub min_sync_period: GoDuration,
    /// kubenat's extension: `flat` (kube-proxy's layout, default) or `tree`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services_dispatch: Option<String>,
}

/// `ipvs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Ipvs {
    /// `syncPeriod`.
    pub sync_period: GoDuration,
    /// `minSyncPeriod`.
    pub min_sync_period: GoDuration,
    /// `scheduler`.
    pub scheduler: String,
    /// `excludeCIDRs`.
    #[serde(rename = "excludeCIDRs")]
    pub exclude_cidrs: Vec<String>,
    /// `strictARP`.
    #[serde(rename = "strictARP")]
    pub strict_arp: bool,
    /// `tcpTimeout`.
    pub tcp_timeout: GoDuration,
    /// `tcpFinTimeout`.
    pub tcp_fin_timeout: GoDuration,
    /// `udpTimeout`.
    pub udp_timeout: GoDuration,
}

/// `nftables`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Nftables {
    /// `masqueradeBit`.
    pub masquerade_bit: Option<i32>,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// `syncPeriod`.
    pub sync_period: GoDuration,
    /// `minSyncPeriod`.
    pub min_sync_period: GoDuration,
}

/// `winkernel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Winkernel {
    /// `networkName`.
    pub network_name: String,
    /// `sourceVip`.
    pub source_vip: String,
    /// `enableDSR`.
    #[serde(rename = "enableDSR")]
    pub enable_dsr: bool,
    /// `rootHnsEndpointName`.
    pub root_hns_endpoint_name: String,
    /// `forwardHealthCheckVip`.
    pub forward_health_check_vip: bool,
}

/// `detectLocal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DetectLocal {
    /// `bridgeInterface`.
    pub bridge_interface: String,
    /// `interfaceNamePrefix`.
    pub interface_name_prefix: String,
}

/// `conntrack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Conntrack {
    /// `maxPerCore` (`null`: 32768; `0`: leave `nf_conntrack_max` alone).
    pub max_per_core: Option<i32>,
    /// `min` (`null`: 131072).
    pub min: Option<i32>,
    /// `tcpEstablishedTimeout` (`null`: 24h; `0s`: leave alone).
    pub tcp_established_timeout: Option<GoDuration>,
    /// `tcpCloseWaitTimeout` (`null`: 1h; `0s`: leave alone).
    pub tcp_close_wait_timeout: Option<GoDuration>,
    /// `tcpBeLiberal`: set `nf_conntrack_tcp_be_liberal`.
    pub tcp_be_liberal: bool,
    /// `udpTimeout` (`0s`: leave alone).
    pub udp_timeout: GoDuration,
    /// `udpStreamTimeout` (`0s`: leave alone).
    pub udp_stream_timeout: GoDuration,
}
