//! Every kube-proxy command-line flag, with pflag's value forms (`--flag=value`, `--flag value`,
//! `--bool`, `--bool=true|false`, Go durations, `-v 2`/`--v=2`), defined once and shared by the
//! daemon and the offline tools (`render`, `trace`, `apply`). A given flag overrides the
//! configuration file (`overlay`); flags for other modes and platforms are accepted and reported
//! by `effective`. kubenat's own extensions that shape rules (`--services-dispatch`,
//! `--node-ip`) live here too so every command reads them the same way.

mod overlay;
mod values;

use std::net::IpAddr;
use std::path::PathBuf;

pub use values::{parse_feature_gates, parse_go_bool, parse_vmodule};

use super::duration::GoDuration;

/// kube-proxy's flags. `None` means "not given": the file's value (or kube-proxy's default)
/// stands.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
#[command(next_help_heading = "kube-proxy flags")]
pub struct KubeProxyFlags {
    /// A `KubeProxyConfiguration` file. As in kube-proxy, it replaces the other kube-proxy flags
    /// (logging flags and --hostname-override still apply); kubenat's own flags always apply.
    #[arg(long, value_name = "FILE", env = "KUBENAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Write the effective configuration (file + flags + defaults) to FILE as
    /// `KubeProxyConfiguration` YAML and exit.
    #[arg(long, value_name = "FILE")]
    pub write_config_to: Option<PathBuf>,
    /// Do the start-up steps that need privileges (OOM score, start-up checks), then exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub init_only: Option<bool>,
    /// The node's name (default: $NODE_NAME, else the hostname).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub hostname_override: Option<String>,
    /// Userspace mode: address the proxy sockets listen on (0.0.0.0 = all).
    #[arg(long, value_name = "IP", env = "KUBENAT_BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,
    /// `/healthz` and `/livez` address (`IP`, `IP:PORT`; empty disables) [default: 0.0.0.0:10256].
    #[arg(long, value_name = "IP:PORT", env = "KUBENAT_HEALTHZ_BIND_ADDRESS")]
    pub healthz_bind_address: Option<String>,
    /// `/metrics` address (`IP`, `IP:PORT`; empty disables) [default: 127.0.0.1:10249].
    #[arg(long, value_name = "IP:PORT", env = "KUBENAT_METRICS_BIND_ADDRESS")]
    pub metrics_bind_address: Option<String>,
    /// Deprecated: the healthz port (0 disables); use --healthz-bind-address.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(i32).range(0..=65535))]
    pub healthz_port: Option<i32>,
    /// Deprecated: the metrics port (0 disables); use --metrics-bind-address.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(i32).range(0..=65535))]
    pub metrics_port: Option<i32>,
    /// A healthz/metrics bind failure is fatal (default: logged and retried every 5 s).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub bind_address_hard_fail: Option<bool>,
    /// Go profiling endpoints (accepted; kubenat has none).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub profiling: Option<bool>,
    /// Show metrics hidden since this version (accepted; kubenat hides none).
    #[arg(long, value_name = "VERSION")]
    pub show_hidden_metrics_for_version: Option<String>,
    /// Feature gates, `Name=true|false,…`.
    #[arg(long, value_name = "GATES")]
    pub feature_gates: Vec<String>,
    /// API server address (overrides the kubeconfig's).
    #[arg(long, value_name = "URL", env = "KUBENAT_MASTER")]
    pub master: Option<String>,
    /// kubeconfig for the API server (default: in-cluster config, then ~/.kube/config).
    #[arg(long, value_name = "FILE", env = "KUBENAT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Content type of requests to the API server (kubenat speaks JSON).
    #[arg(long, value_name = "TYPE")]
    pub kube_api_content_type: Option<String>,
    /// Requests per second to the API server [default: 5].
    #[arg(long, value_name = "QPS")]
    pub kube_api_qps: Option<f32>,
    /// Burst of requests to the API server [default: 10].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub kube_api_burst: Option<i32>,
    /// How often the watches relist everything [default: 15m].
    #[arg(long, value_name = "DURATION")]
    pub config_sync_period: Option<GoDuration>,
    /// Proxy mode: iptables (default) or userspace.
    #[arg(long = "proxy-mode", alias = "mode", value_name = "MODE", env = "KUBENAT_PROXY_MODE")]
    pub proxy_mode: Option<String>,
    /// Pod network CIDR(s), comma-separated (default: flannel's FLANNEL_NETWORK).
    #[arg(long, value_name = "CIDR", env = "KUBENAT_CLUSTER_CIDR")]
    pub cluster_cidr: Option<String>,
    /// ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix (or none).
    #[arg(long, value_name = "MODE", env = "KUBENAT_DETECT_LOCAL_MODE")]
    pub detect_local_mode: Option<String>,
    /// Bridge for `--detect-local-mode BridgeInterface`.
    #[arg(long, value_name = "NAME", env = "KUBENAT_POD_BRIDGE_INTERFACE")]
    pub pod_bridge_interface: Option<String>,
    /// Interface prefix for `--detect-local-mode InterfaceNamePrefix`.
    #[arg(long, value_name = "PREFIX", env = "KUBENAT_POD_INTERFACE_NAME_PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// CIDRs and the keywords `primary`, `localhost`, `all` whose addresses accept NodePorts
    /// (default: all local addresses).
    #[arg(long, value_delimiter = ',', value_name = "CIDR", env = "KUBENAT_NODEPORT_ADDRESSES")]
    pub nodeport_addresses: Option<Vec<String>>,
    /// Masquerade all ClusterIP traffic.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, env = "KUBENAT_MASQUERADE_ALL")]
    pub masquerade_all: Option<bool>,
    /// Bit of the packet mark used for masquerading (0–31) [default: 14].
    #[arg(long, value_name = "BIT", value_parser = clap::value_parser!(i32), env = "KUBENAT_IPTABLES_MASQUERADE_BIT")]
    pub iptables_masquerade_bit: Option<i32>,
    /// Forced resync interval [default: 30s].
    #[arg(long, value_name = "DURATION", env = "KUBENAT_IPTABLES_SYNC_PERIOD")]
    pub iptables_sync_period: Option<GoDuration>,
    /// Minimum gap between syncs [default: 1s].
    #[arg(long, value_name = "DURATION", env = "KUBENAT_IPTABLES_MIN_SYNC_PERIOD")]
    pub iptables_min_sync_period: Option<GoDuration>,
    /// Allow NodePorts on 127.0.0.1 [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, env = "KUBENAT_IPTABLES_LOCALHOST_NODEPORTS")]
    pub iptables_localhost_nodeports: Option<bool>,
    /// ipvs mode (accepted, not used).
    #[arg(long, value_name = "DURATION")]
    pub ipvs_sync_period: Option<GoDuration>,
    /// ipvs mode (accepted, not used).
    #[arg(long, value_name = "DURATION")]
    pub ipvs_min_sync_period: Option<GoDuration>,
    /// ipvs mode (accepted, not used).
    #[arg(long, value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,
    /// ipvs mode (accepted, not used).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub ipvs_exclude_cidrs: Option<Vec<String>>,
    /// ipvs mode (accepted, not used).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub ipvs_strict_arp: Option<bool>,
    /// ipvs mode (accepted, not used).
    #[arg(long, value_name = "DURATION")]
    pub ipvs_tcp_timeout: Option<GoDuration>,
    /// ipvs mode (accepted, not used).
    #[arg(long, value_name = "DURATION")]
    pub ipvs_tcpfin_timeout: Option<GoDuration>,
    /// ipvs mode (accepted, not used).
    #[arg(long, value_name = "DURATION")]
    pub ipvs_udp_timeout: Option<GoDuration>,
    /// conntrack entries per CPU (0: leave nf_conntrack_max alone) [default: 32768].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32))]
    pub conntrack_max_per_core: Option<i32>,
    /// Minimum nf_conntrack_max [default: 131072].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32))]
    pub conntrack_min: Option<i32>,
    /// nf_conntrack_tcp_timeout_established (0: leave alone) [default: 24h].
    #[arg(long, value_name = "DURATION")]
    pub conntrack_tcp_timeout_established: Option<GoDuration>,
    /// nf_conntrack_tcp_timeout_close_wait (0: leave alone) [default: 1h].
    #[arg(long, value_name = "DURATION")]
    pub conntrack_tcp_timeout_close_wait: Option<GoDuration>,
    /// Set nf_conntrack_tcp_be_liberal.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// nf_conntrack_udp_timeout (0: leave alone).
    #[arg(long, value_name = "DURATION")]
    pub conntrack_udp_timeout: Option<GoDuration>,
    /// nf_conntrack_udp_timeout_stream (0: leave alone).
    #[arg(long, value_name = "DURATION")]
    pub conntrack_udp_timeout_stream: Option<GoDuration>,
    /// The process's oom_score_adj, −1000…1000 [default: −999].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(-1000..=1000), allow_negative_numbers = true)]
    pub oom_score_adj: Option<i32>,
    /// Userspace mode: range for the proxy ports (`begin-end`, `begin+offset`; empty = any).
    #[arg(long, value_name = "RANGE", env = "KUBENAT_PROXY_PORT_RANGE")]
    pub proxy_port_range: Option<String>,
    /// Log verbosity (klog's -v): 0–3 info, 4–5 debug, 6+ trace.
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u32>,
    /// Per-file verbosity, `pattern=N,…` (accepted; applied as the highest level given).
    #[arg(long, value_name = "PATTERN=N")]
    pub vmodule: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub logging_format: Option<String>,
    /// How often logs are flushed (kubenat writes them unbuffered).
    #[arg(long, value_name = "DURATION")]
    pub log_flush_frequency: Option<GoDuration>,
    /// json format: info to stdout, errors to stderr (accepted).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub log_json_split_stream: Option<bool>,
    /// json format: info buffer size (accepted).
    #[arg(long, value_name = "SIZE")]
    pub log_json_info_buffer_size: Option<String>,
    /// text format: info to stdout, errors to stderr (accepted).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub log_text_split_stream: Option<bool>,
    /// text format: info buffer size (accepted).
    #[arg(long, value_name = "SIZE")]
    pub log_text_info_buffer_size: Option<String>,
    /// Windows only (accepted, not used).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub windows_service: Option<bool>,
    /// Windows only (winkernel.sourceVip; accepted, not used).
    #[arg(long, value_name = "IP")]
    pub source_vip: Option<String>,
    /// Windows only (winkernel.networkName; accepted, not used).
    #[arg(long, value_name = "NAME")]
    pub network_name: Option<String>,
    /// Windows only (winkernel.enableDSR; accepted, not used).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub enable_dsr: Option<bool>,
    /// Windows only (winkernel.rootHnsEndpointName; accepted, not used).
    #[arg(long = "root-hnsendpoint-name", value_name = "NAME")]
    pub root_hns_endpoint_name: Option<String>,
    /// Windows only (winkernel.forwardHealthCheckVip; accepted, not used).
    #[arg(long = "forward-healthcheck-vip", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub forward_health_check_vip: Option<bool>,
    /// cAdvisor's boot-id files, registered by kube-proxy up to 1.36 (accepted, not used).
    #[arg(long, value_name = "FILES", hide = true)]
    pub boot_id_file: Option<String>,
    /// cAdvisor's machine-id files, registered by kube-proxy up to 1.36 (accepted, not used).
    #[arg(long, value_name = "FILES", hide = true)]
    pub machine_id_file: Option<String>,
    /// kubenat: layout of nat KUBE-SERVICES, `flat` (kube-proxy's) or `tree` (destination-prefix
    /// dispatch: a new connection walks O(log N) rules instead of every service's).
    #[arg(long, value_name = "flat|tree", env = "KUBENAT_SERVICES_DISPATCH")]
    pub services_dispatch: Option<String>,
    /// kubenat: the node's IP(s) (default: the Node object's InternalIP).
    #[arg(long, value_name = "IP", value_delimiter = ',', env = "KUBENAT_NODE_IP")]
    pub node_ip: Vec<IpAddr>,
}
