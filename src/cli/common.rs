//! Arguments shared by `render`, `trace` and `apply`: where the objects come from and every
//! fact about the node that the daemon would probe on a live node.

use std::path::PathBuf;

use anyhow::{bail, Context};
use ipnet::IpNet;
use kubenat::config::effective::Level;
use kubenat::config::flags::parse_go_bool;
use kubenat::config::{self, KubeProxyConfiguration, KubeProxyFlags, NodeOptions};
use kubenat::flannel::subnet_env;
use kubenat::k8s::convert::{self, EndpointsSource};
use kubenat::k8s::manifests;
use kubenat::model::{ClusterState, IpFamily, NodeConfig};
use kubenat::rules::render::{self, JumpRule};
use kubenat::rules::ruleset::Ruleset;

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

/// Manifests plus every kube-proxy flag (and `--config`) and the node facts the daemon would
/// probe on a live node.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderInput {
    /// kube-proxy's flags, read exactly as the daemon reads them.
    #[command(flatten)]
    pub kube: KubeProxyFlags,
    /// Manifest files or directories (YAML/JSON, multi-document, `kind: List`).
    #[arg(long = "objects", value_name = "PATH", num_args = 1..)]
    pub objects: Vec<PathBuf>,
    /// IP family to render.
    #[arg(long, value_enum, default_value = "ipv4")]
    pub ip_family: FamilyArg,
    /// flannel's subnet.env; used for the cluster and node CIDRs when it exists.
    #[arg(long, value_name = "FILE")]
    pub flannel_subnet_file: Option<PathBuf>,
    /// The node's interface addresses with prefix (default: the node IPs).
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub node_addresses: Vec<IpNet>,
    /// iptables supports `MASQUERADE --random-fully` [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub random_fully: Option<bool>,
    /// The nfacct counters exist (adds kube-proxy's `-m nfacct` metering rules).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub nfacct: Option<bool>,
    /// Where endpoints come from.
    #[arg(long, value_enum, default_value = "auto")]
    pub endpoints_source: EndpointsSourceArg,
    /// Treat any skipped object as an error (exit 2).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub strict: Option<bool>,
}

/// What the shared input produces.
pub struct Prepared {
    /// The effective kube-proxy configuration (file + defaults + flags).
    pub config: KubeProxyConfiguration,
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
        // Flags and the configuration file first: a bad value is named before any file is read.
        let (opts, config) = self.options()?;
        if self.objects.is_empty() {
            bail!("--objects PATH… is required: the manifests (files or directories) to render");
        }
        if let Some(missing) = self.objects.iter().find(|p| !p.exists()) {
            bail!("--objects {}: no such file or directory", missing.display());
        }
        let loaded = manifests::load_paths(&self.objects);
        let problems: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        self.prepare_objects(&loaded.objects, problems, opts, config)
    }

    /// `--endpoints-source` as the converter takes it.
    pub fn endpoints_source(&self) -> EndpointsSource {
        match self.endpoints_source {
            EndpointsSourceArg::Auto => EndpointsSource::Auto,
            EndpointsSourceArg::Endpointslices => EndpointsSource::EndpointSlices,
            EndpointsSourceArg::Endpoints => EndpointsSource::Endpoints,
        }
    }

    /// Converts `objects` (from files or the API) into state and node config; `problems` are
    /// the loading problems so far, reported on stderr with the conversion's.
    pub fn prepare_objects(
        &self,
        objects: &manifests::Objects,
        mut problems: Vec<String>,
        opts: NodeOptions,
        config: KubeProxyConfiguration,
    ) -> anyhow::Result<Prepared> {
        let converted = convert::cluster_state(objects, self.endpoints_source());
        problems.extend(converted.problems.iter().map(ToString::to_string));
        for problem in &problems {
            eprintln!("kubenat: warning: {problem}");
        }
        if self.strict == Some(true) && !problems.is_empty() {
            bail!("{} object(s) skipped and --strict is set", problems.len());
        }
        let node = self.node_config(&opts, objects)?;
        Ok(Prepared { config, state: converted.state, node })
    }

    fn family(&self) -> IpFamily {
        match self.ip_family {
            FamilyArg::Ipv4 => IpFamily::V4,
            FamilyArg::Ipv6 => IpFamily::V6,
        }
    }

    /// The daemon actions an offline tool does not perform.
    fn check_no_daemon_action(&self) -> anyhow::Result<()> {
        if self.kube.write_config_to.is_some() || self.kube.init_only.is_some() {
            bail!("--write-config-to and --init-only are actions of the daemon (kubenat with no subcommand)");
        }
        Ok(())
    }

    /// The shared node options these flags (and `--config`) describe, exactly as the daemon
    /// resolves them; the probed facts come from this command's own flags.
    pub fn options(&self) -> anyhow::Result<(NodeOptions, KubeProxyConfiguration)> {
        self.check_no_daemon_action()?;
        let effective = config::resolve(&self.kube)?;
        for note in effective.notes.iter().filter(|n| n.level == Level::Warn && !n.daemon_only) {
            eprintln!("kubenat: warning: {}", note.text);
        }
        let name = effective.hostname_override().unwrap_or_default();
        let mut opts = effective.node_options(name, self.kube.node_ip.clone())?;
        opts.node_addresses.clone_from(&self.node_addresses);
        opts.random_fully = self.random_fully.unwrap_or(true);
        opts.nfacct = self.nfacct.unwrap_or(false);
        opts.conntrack_tcp_be_liberal = effective.config.conntrack.tcp_be_liberal;
        Ok((opts, effective.config))
    }

    /// Builds the node configuration from flags, the Node object and flannel's subnet.env.
    fn node_config(&self, opts: &NodeOptions, objects: &manifests::Objects) -> anyhow::Result<NodeConfig> {
        let family = self.family();
        let node_obj = objects
            .nodes
            .iter()
            .find(|n| !opts.node_name.is_empty() && n.object.metadata.name.as_deref() == Some(opts.node_name.as_str()));
        let facts = node_obj.map(|n| convert::node_facts(&n.object));
        let flannel = match &self.flannel_subnet_file {
            Some(path) => {
                Some(subnet_env::read(path).with_context(|| format!("--flannel-subnet-file {}", path.display()))?)
            }
            None => None,
        };
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
