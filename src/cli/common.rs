//! Arguments shared by `render`, `trace` and `apply`: where the objects come from and every
//! fact about the node that the daemon would probe on a live node.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use ipnet::IpNet;
use kubenat::flannel::subnet_env;
use kubenat::iptables::render::{self, JumpRule};
use kubenat::iptables::ruleset::Ruleset;
use kubenat::k8s::convert::{self, EndpointsSource};
use kubenat::k8s::manifests;
use kubenat::model::{ClusterState, IpFamily, LocalDetector, NodeConfig, NodePortAddresses};

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

        let in_family = |net: &&IpNet| family.contains(&net.addr());
        let cluster_cidr = self
            .cluster_cidr
            .iter()
            .find(in_family)
            .or_else(|| flannel.as_ref().and_then(|f| f.networks.iter().find(in_family)))
            .copied();
        let node_cidr = flannel
            .as_ref()
            .and_then(|f| f.subnets.iter().find(in_family).copied())
            .or_else(|| facts.as_ref().and_then(|f| f.pod_cidrs.iter().find(in_family).copied()));

        let local_detector = match self.detect_local_mode {
            DetectLocalMode::None => LocalDetector::None,
            DetectLocalMode::ClusterCidr => cluster_cidr.map_or(LocalDetector::None, LocalDetector::Cidr),
            DetectLocalMode::NodeCidr => match node_cidr {
                Some(cidr) => LocalDetector::Cidr(cidr),
                None => bail!(
                    "--detect-local-mode NodeCIDR needs the node's pod CIDR: pass --flannel-subnet-file or a Node object named by --hostname-override"
                ),
            },
            DetectLocalMode::BridgeInterface => match &self.pod_bridge_interface {
                Some(name) if valid_interface(name) => LocalDetector::Bridge(name.clone()),
                Some(name) => bail!("--pod-bridge-interface {name:?} is not a valid interface name"),
                None => bail!("--detect-local-mode BridgeInterface needs --pod-bridge-interface"),
            },
            DetectLocalMode::InterfaceNamePrefix => match &self.pod_interface_name_prefix {
                Some(prefix) if valid_interface(prefix) => LocalDetector::InterfacePrefix(prefix.clone()),
                Some(prefix) => bail!("--pod-interface-name-prefix {prefix:?} is not a valid interface name prefix"),
                None => bail!("--detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix"),
            },
        };
        if self.detect_local_mode == DetectLocalMode::ClusterCidr && cluster_cidr.is_none() {
            eprintln!(
                "kubenat: note: no {family} cluster CIDR (--cluster-cidr or --flannel-subnet-file): ClusterIP traffic from outside the cluster will not be masqueraded"
            );
        }

        let mut node_ips: Vec<IpAddr> = self.node_ip.clone();
        if node_ips.is_empty() {
            node_ips = facts.as_ref().map(|f| f.internal_ips.clone()).unwrap_or_default();
        }
        let mut local_addresses = self.node_addresses.clone();
        if local_addresses.is_empty() {
            local_addresses = node_ips.iter().map(|ip| IpNet::from(*ip)).collect();
        }
        let nodeport_addresses = self.nodeport_addresses(&node_ips)?;

        Ok(NodeConfig {
            family,
            node_name: self.node.clone(),
            zone: facts.and_then(|f| f.zone),
            node_ips,
            local_addresses,
            local_detector,
            masquerade_all: self.masquerade_all,
            masquerade_bit: self.iptables_masquerade_bit,
            nodeport_addresses,
            localhost_nodeports: self.iptables_localhost_nodeports,
            random_fully: self.random_fully,
            nfacct: self.nfacct,
            conntrack_tcp_be_liberal: self.conntrack_tcp_be_liberal,
        })
    }

    fn nodeport_addresses(&self, node_ips: &[IpAddr]) -> anyhow::Result<NodePortAddresses> {
        if self.nodeport_addresses.is_empty() {
            return Ok(NodePortAddresses::All);
        }
        let mut cidrs = Vec::new();
        for value in &self.nodeport_addresses {
            if value == "primary" {
                cidrs.extend(node_ips.iter().map(|ip| IpNet::from(*ip)));
            } else {
                let net: IpNet = value
                    .trim()
                    .parse()
                    .with_context(|| format!("--nodeport-addresses: {value:?} is not a CIDR or \"primary\""))?;
                cidrs.push(net);
            }
        }
        Ok(NodePortAddresses::Cidrs(cidrs))
    }
}

/// Linux interface names: 1–15 characters, no `/`, whitespace, quotes or `+`.
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '"' | '\'' | '\\' | '+' | '!'))
}
