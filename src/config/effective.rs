//! The effective configuration, built the way kube-proxy builds it: the `--config` file decoded
//! and defaulted, then every given flag written over it, then validated. Also what kubenat
//! says about it at start: unknown fields, other modes' settings, and every setting kubenat
//! does not act on (never dropped silently).

use std::time::Duration;

use super::decode::{self, Decoded};
use super::defaults;
use super::duration::GoDuration;
use super::features;
use super::flags::KubeProxyFlags;
use super::types::{KubeProxyConfiguration, Nftables, Winkernel};
use super::validate::{self, parse_bind_address};
use super::{DetectLocalMode, Error, NodeOptions};
use crate::model::{contains_ipv4_loopback, NodePortEntry, ServicesDispatch};

/// How loud a start-up note is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Expected and harmless (e.g. other modes' settings).
    Info,
    /// Something set that kubenat does not do, or that looks wrong.
    Warn,
}

/// One line to log at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// How loud.
    pub level: Level,
    /// The line.
    pub text: String,
    /// About what only the daemon does (node set-up, servers, the API client): the offline
    /// tools leave it out.
    pub daemon_only: bool,
}

/// The configuration in force and what to say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// File + defaults + flags, validated.
    pub config: KubeProxyConfiguration,
    /// Start-up notes, in order.
    pub notes: Vec<Note>,
}

/// File (if any) → defaults → flags → validation.
pub fn resolve(flags: &KubeProxyFlags) -> Result<Effective, Error> {
    let decoded = match &flags.config {
        Some(path) => decode::load_file(path)?,
        None => Decoded { config: KubeProxyConfiguration::default(), unknown_fields: Vec::new() },
    };
    let mut config = decoded.config;
    defaults::apply(&mut config);
    let ignored = flags.overlay(&mut config)?;
    validate::validate(&config)?;
    // kube-proxy's platform defaults, applied after the flags (what /configz and
    // --write-config-to show).
    if config.mode.is_empty() {
        config.mode = "iptables".into();
    }
    if config.detect_local_mode.is_empty() {
        config.detect_local_mode = "ClusterCIDR".into();
    }
    let mut notes = Vec::new();
    if !ignored.is_empty() {
        notes.push(warn(format!(
            "ignored because --config is given (kube-proxy ignores them too; set them in the file): {}",
            ignored.join(", ")
        )));
    }
    if !decoded.unknown_fields.is_empty() {
        let path = flags.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        notes.push(warn(format!(
            "--config {path}: unknown field(s) ignored, as kube-proxy's lenient decoding does: {}",
            decoded.unknown_fields.join(", ")
        )));
    }
    notes.extend(other_modes(&config));
    notes.extend(not_acted_on(&config).into_iter().map(daemon_only));
    notes.extend(features::notes(&config.feature_gates));
    Ok(Effective { config, notes })
}

fn warn(text: String) -> Note {
    Note { level: Level::Warn, text, daemon_only: false }
}

fn info(text: String) -> Note {
    Note { level: Level::Info, text, daemon_only: false }
}

fn daemon_only(note: Note) -> Note {
    Note { daemon_only: true, ..note }
}

/// One info line naming the other modes' and platforms' sections that carry settings.
fn other_modes(c: &KubeProxyConfiguration) -> Option<Note> {
    let mut defaulted = KubeProxyConfiguration::default();
    defaults::apply(&mut defaulted);
    let mut set = Vec::new();
    if c.ipvs != defaulted.ipvs {
        set.push("ipvs");
    }
    // --masquerade-all / --iptables-masquerade-bit / sync periods also fill nftables.
    let mirrored = Nftables {
        masquerade_all: c.iptables.masquerade_all,
        masquerade_bit: c.iptables.masquerade_bit,
        sync_period: c.iptables.sync_period,
        min_sync_period: c.iptables.min_sync_period,
    };
    if c.nftables != mirrored && c.nftables != defaulted.nftables {
        set.push("nftables");
    }
    if c.winkernel != Winkernel::default() || c.windows_run_as_service {
        set.push("winkernel/windowsRunAsService");
    }
    (!set.is_empty()).then(|| {
        daemon_only(info(format!("settings for other proxy modes and platforms are ignored: {}", set.join(", "))))
    })
}

/// One warning naming every setting kubenat does not act on (yet), with its value.
fn not_acted_on(c: &KubeProxyConfiguration) -> Vec<Note> {
    let mut fields: Vec<String> = Vec::new();
    if c.enable_profiling {
        fields.push("enableProfiling (no Go profiler; /debug/pprof is not served)".into());
    }
    if !c.show_hidden_metrics_for_version.is_empty() {
        fields.push("showHiddenMetricsForVersion (kubenat hides no metrics)".into());
    }
    if !c.client_connection.accept_content_types.is_empty() {
        fields.push("clientConnection.acceptContentTypes (kubenat speaks JSON)".into());
    }
    if !c.logging.vmodule.is_empty() {
        fields.push("logging.vmodule (applied as one level for everything: the highest given)".into());
    }
    if c.logging.options.values().any(|v| !zeroish(v)) {
        fields.push("logging.options (split streams and buffer sizes)".into());
    }
    let mut notes = Vec::new();
    if !fields.is_empty() {
        notes.push(warn(format!("kubenat does not act on: {}", fields.join("; "))));
    }
    if c.client_connection.content_type != "application/json" {
        notes.push(info(format!(
            "clientConnection.contentType {:?}: kubenat talks JSON to the API server",
            c.client_connection.content_type
        )));
    }
    notes
}

/// Whether a JSON value is a zero of its kind (kubeadm writes `infoBufferSize: "0"`).
fn zeroish(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0",
        Value::Array(items) => items.iter().all(zeroish),
        Value::Object(map) => map.values().all(zeroish),
    }
}

impl Effective {
    /// The rule-shaping options: `node_name` is the already resolved node name.
    pub fn node_options(&self, node_name: String, node_ips: Vec<std::net::IpAddr>) -> Result<NodeOptions, Error> {
        let c = &self.config;
        let mode = &c.detect_local_mode;
        let detect_local_mode = DetectLocalMode::parse(mode).ok_or_else(|| Error::Field {
            field: "detectLocalMode",
            flag: "--detect-local-mode",
            reason: format!("{mode:?} is not a detect-local mode"),
        })?;
        let dispatch = c.iptables.services_dispatch.as_deref().unwrap_or("flat");
        let services_dispatch = ServicesDispatch::parse(dispatch).ok_or_else(|| Error::Field {
            field: "iptables.servicesDispatch",
            flag: "--services-dispatch",
            reason: format!("{dispatch:?}: expected flat or tree"),
        })?;
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let node = NodeOptions {
            node_name,
            cluster_cidrs: validate::cluster_cidrs(&c.cluster_cidr)?,
            detect_local_mode,
            pod_bridge_interface: non_empty(&c.detect_local.bridge_interface),
            pod_interface_name_prefix: non_empty(&c.detect_local.interface_name_prefix),
            node_ips,
            nodeport_addresses: c.node_port_addresses.clone(),
            masquerade_all: c.iptables.masquerade_all,
            masquerade_bit: c.iptables.masquerade_bit.and_then(|b| u8::try_from(b).ok()).unwrap_or(14),
            // kube-proxy turns localhost NodePorts off when nodePortAddresses excludes IPv4
            // loopback (then route_localnet is not needed either).
            localhost_nodeports: c.iptables.localhost_node_ports.unwrap_or(true)
                && NodePortEntry::parse_all(&c.node_port_addresses).is_ok_and(|e| contains_ipv4_loopback(&e)),
            services_dispatch,
            prefer_same_node: c.feature_gates.get("PreferSameTrafficDistribution").copied().unwrap_or(true),
            ..NodeOptions::default()
        };
        node.validate()?;
        Ok(node)
    }

    /// The node name `hostnameOverride` gives, as kube-proxy reads it (trimmed, lower-cased);
    /// `None` when it is empty (the daemon then uses the host name).
    pub fn hostname_override(&self) -> Option<String> {
        Some(self.config.hostname_override.trim().to_lowercase()).filter(|name| !name.is_empty())
    }

    /// `iptables.syncPeriod`.
    pub fn sync_period(&self) -> Duration {
        to_std(self.config.iptables.sync_period)
    }

    /// `iptables.minSyncPeriod`.
    pub fn min_sync_period(&self) -> Duration {
        to_std(self.config.iptables.min_sync_period)
    }

    /// `healthzBindAddress` (`None`: off).
    pub fn healthz_address(&self) -> Option<std::net::SocketAddr> {
        parse_bind_address(&self.config.healthz_bind_address).flatten()
    }

    /// `metricsBindAddress` (`None`: off).
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        parse_bind_address(&self.config.metrics_bind_address).flatten()
    }

    /// The configuration as kube-proxy's `--write-config-to` writes it.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.config).unwrap_or_default()
    }
}

fn to_std(d: GoDuration) -> Duration {
    d.to_std().unwrap_or_default()
}
