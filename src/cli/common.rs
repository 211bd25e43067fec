//! Arguments shared by `render`, `trace` and `apply`: where the objects come from and every
//! fact about the node that the daemon would probe on a live node.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use ipnet::IpNet;
use kubenat::config::{self, NodeOptions};
use kubenat::flannel::subnet_env;
use kubenat::iptables::render::{self, JumpRule};
use kubenat::iptables::ruleset::Ruleset;
use kubenat::k8s::convert::{self, EndpointsSource};
use kubenat::k8s::manifests;
use kubenat::model::{ClusterState, IpFamily, NodeConfig, ServicesDispatch};

/// `--detect-local-mode` values (kube-proxy's names, plus an explicit `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DetectLocalMode {
    /// Pod traffic = source inside `--cluster-cidr`.
    #[value(name = "ClusterCIDR", alias = "clustercidr")]
    ClusterCidr,
    /// Pod traffic = source inside this node's pod CIDR.
    #[value(name = "NodeCIDR", alias = "nodecidr")]
    NodeCidr,
    /// Pod traffic = arrives on `--pod-bridge-interface`.
    #[value(name = "BridgeInterface", alias = "bridgeinterface")]
    BridgeInterface,
    /// Pod traffic = arrives on an interface named `--pod-interface-name-prefix`*.
    #[value(name = "InterfaceNamePrefix", alias = "interfacenameprefix")]
    InterfaceNamePrefix,
    /// No detector: no ClusterIP masquerade rule, no pod short-circuit.
    #[value(name = "none", alias = "None")]
    None,
}

/// `--services-dispatch` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServicesDispatchArg {
    /// kube-proxy's layout: nat KUBE-SERVICES scanned rule by rule.
    Flat,
    /// KUBE-SERVICES dispatches on the destination address into sub-chains (O(log N)).
    Tree,
}

impl From<ServicesDispatchArg> for ServicesDispatch {
    fn from(arg: ServicesDispatchArg) -> Self {
        match arg {
            ServicesDispatchArg::Flat => ServicesDispatch::Flat,
            ServicesDispatchArg::Tree => ServicesDispatch::Tree,
        }
    }
}

/// `--ip-family` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FamilyArg {
    /// iptables (IPv4)
    Ipv4,
    /// ip6tables (IPv6)
    Ipv6,
}

/// `--endpoints-source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndpointsSourceArg {
    /// EndpointSlices if the input has any, else core/v1 Endpoints.
    Auto,
    /// discovery.k8s.io/v1 EndpointSlices only.
    Endpointslices,
    /// core/v1 Endpoints only.
    Endpoints,
}

/// Manifests plus the node facts and kube-proxy flags that shape the rules.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderInput {
    /// Manifest files or directories (YAML/JSON, multi-document, `kind: List`).
    #[arg(long = "objects", value_name = "PATH", num_args = 1..)]
    pub objects: Vec<PathBuf>,
    /// Node name whose endpoints count as local (also picks the Node object from the input).
    #[arg(long = "hostname-override", alias = "node", value_name = "NAME", env = "NODE_NAME", default_value = "")]
    pub node: String,
    /// IP family to render.
    #[arg(long, value_enum, default_value = "ipv4")]
    pub ip_family: FamilyArg,
    /// Pod network CIDR(s), comma-separated (default: from the flannel subnet file).
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub cluster_cidr: Vec<IpNet>,
    /// flannel's subnet.env; used for the cluster and node CIDRs when it exists.
    #[arg(long, value_name = "FILE")]
    pub flannel_subnet_file: Option<PathBuf>,
    /// How pod traffic is recognised.
    #[arg(long, value_enum, default_value = "ClusterCIDR")]
    pub detect_local_mode: DetectLocalMode,
    /// Bridge for `--detect-local-mode BridgeInterface`.
    #[arg(long, value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    /// Interface prefix for `--detect-local-mode InterfaceNamePrefix`.
    #[arg(long, value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// The node's primary IP(s) (default: the Node object's InternalIP).
    #[arg(long, value_delimiter = ',', value_name = "IP")]
    pub node_ip: Vec<IpAddr>,
    /// The node's interface addresses with prefix (default: the node IPs).
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub node_addresses: Vec<IpNet>,
    /// Only these CIDRs accept NodePorts (default: every local address); `primary` = the node IPs.
    #[arg(long, value_delimiter = ',', value_name = "CIDR|primary")]
    pub nodeport_addresses: Vec<String>,
    /// Masquerade all ClusterIP traffic.
    #[arg(long)]
    pub masquerade_all: bool,
    /// Bit of the packet mark used for masquerading (0–31).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u8).range(0..=31))]
    pub iptables_masquerade_bit: u8,
    /// Allow NodePorts on 127.0.0.1 (IPv4).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub iptables_localhost_nodeports: bool,
    /// iptables supports `MASQUERADE --random-fully`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub random_fully: bool,
    /// The nfacct counters exist (adds kube-proxy's `-m nfacct` metering rules).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub nfacct: bool,
    /// `nf_conntrack_tcp_be_liberal` is set (omits the INVALID drop rule).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub conntrack_tcp_be_liberal: bool,
    /// Layout of nat KUBE-SERVICES: `flat` (kube-proxy's) or `tree` (destination-prefix dispatch).
    #[arg(long, value_enum, default_value = "flat", env = "KUBENAT_SERVICES_DISPATCH")]
    pub services_dispatch: ServicesDispatchArg,
    /// Where endpoints come from.
    #[arg(long, value_enum, default_value = "auto")]
    pub endpoints_source: EndpointsSourceArg,
    /// Treat any skipped object as an error (exit 2).
    #[arg(long)]
    pub strict: bool,
}

/// What the shared input produces.
pub struct Prepared {
    /// The cluster view.
    pub state: ClusterState,
    /// The node configuration for the chosen family.
    pub node: NodeConfig,
}

impl Prepared {
    /// The restore body.
    pub fn ruleset(&self) -> Ruleset {
        render::render(&self.state, &self.node)
    }

    /// The built-in chain jumps.
    pub fn jumps(&self) -> Vec<JumpRule> {
        render::jump_rules(&self.node)
    }
}

impl RenderInput {
    /// Loads the manifests, reports bad objects on stderr, and builds state and node config.
    pub fn prepare(&self) -> anyhow::Result<Prepared> {
        if self.objects.is_empty() {
            bail!("--objects PATH… is required: the manifests (files or directories) to render");
        }
        if let Some(missing) = self.objects.iter().find(|p| !p.exists()) {
            bail!("--objects {}: no such file or directory", missing.display());
        }
        let loaded = manifests::load_paths(&self.objects);
        let source = match self.endpoints_source {
            EndpointsSourceArg::Auto => EndpointsSource::Auto,
            EndpointsSourceArg::Endpointslices => EndpointsSource::EndpointSlices,
            EndpointsSourceArg::Endpoints => EndpointsSource::Endpoints,
        };
        let converted = convert::cluster_state(&loaded.objects, source);
        let problems: Vec<String> =
            loaded.problems.iter().chain(converted.problems.iter()).map(ToString::to_string).collect();
        for problem in &problems {
            eprintln!("kubenat: warning: {problem}");
        }
        if self.strict && !problems.is_empty() {
            bail!("{} object(s) skipped and --strict is set", problems.len());
        }
        let node = self.node_config(&loaded.objects)?;
        Ok(Prepared { state: converted.state, node })
    }

    fn family(&self) -> IpFamily {
        match self.ip_family {
            FamilyArg::Ipv4 => IpFamily::V4,
            FamilyArg::Ipv6 => IpFamily::V6,
        }
    }

    /// The shared node options these flags describe.
    pub fn node_options(&self) -> NodeOptions {
        NodeOptions {
            node_name: self.node.clone(),
            cluster_cidrs: self.cluster_cidr.clone(),
            detect_local_mode: match self.detect_local_mode {
                DetectLocalMode::ClusterCidr => config::DetectLocalMode::ClusterCidr,
                DetectLocalMode::NodeCidr => config::DetectLocalMode::NodeCidr,
                DetectLocalMode::BridgeInterface => config::DetectLocalMode::BridgeInterface,
                DetectLocalMode::InterfaceNamePrefix => config::DetectLocalMode::InterfaceNamePrefix,
                DetectLocalMode::None => config::DetectLocalMode::None,
            },
            pod_bridge_interface: self.pod_bridge_interface.clone(),
            pod_interface_name_prefix: self.pod_interface_name_prefix.clone(),
            node_ips: self.node_ip.clone(),
            node_addresses: self.node_addresses.clone(),
            nodeport_addresses: self.nodeport_addresses.clone(),
            masquerade_all: self.masquerade_all,
            masquerade_bit: self.iptables_masquerade_bit,
            localhost_nodeports: self.iptables_localhost_nodeports,
            random_fully: self.random_fully,
            nfacct: self.nfacct,
            conntrack_tcp_be_liberal: self.conntrack_tcp_be_liberal,
            services_dispatch: self.services_dispatch.into(),
        }
    }

    /// Builds the node configuration from flags, the Node object and flannel's subnet.env.
    fn node_config(&self, objects: &manifests::Objects) -> anyhow::Result<NodeConfig> {
        let family = self.family();
        let node_obj = objects
            .nodes
            .iter()
            .find(|n| !self.node.is_empty() && n.object.metadata.name.as_deref() == Some(self.node.as_str()));
        let facts = node_obj.map(|n| convert::node_facts(&n.object));
        let flannel = match &self.flannel_subnet_file {
            Some(path) => {
                Some(subnet_env::read(path).with_context(|| format!("--flannel-subnet-file {}", path.display()))?)
            }
            None => None,
        };
        let opts = self.node_options();
        if opts.detect_local_mode == config::DetectLocalMode::ClusterCidr
            && opts.cluster_cidr(family, flannel.as_ref()).is_none()
        {
            eprintln!(
                "kubenat: note: no {family} cluster CIDR (--cluster-cidr or --flannel-subnet-file): ClusterIP traffic from outside the cluster will not be masqueraded"
            );
        }
        Ok(opts.node_config(family, facts.as_ref(), flannel.as_ref())?)
    }
}
