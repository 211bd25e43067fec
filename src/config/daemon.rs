//! Everything the node daemon takes from kube-proxy's flags and configuration file, resolved
//! once at start: the effective configuration, the proxy mode, the node's options, the sync
//! periods and the server addresses. Each error names the flag to fix.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{resolve, Effective, Error, KubeProxyConfiguration, KubeProxyFlags, NodeOptions, Result};
use crate::userspace::PortRange;

/// The proxy mode the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// NAT rules in iptables (kube-proxy's default; `mode: ""` too).
    Iptables,
    /// The legacy userspace proxy.
    Userspace,
}

impl ProxyMode {
    /// The mode's name, as `mode:` and `/proxyMode` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Userspace => "userspace",
        }
    }
}

/// Where the userspace proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserspaceOptions {
    /// `--bind-address` (never loopback: pods could not reach it).
    pub bind: IpAddr,
    /// `--proxy-port-range`.
    pub range: PortRange,
}

/// The daemon's configuration from kube-proxy's flags and file.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The effective `KubeProxyConfiguration` and the start-up notes.
    pub effective: Effective,
    /// `mode`.
    pub mode: ProxyMode,
    /// Userspace mode's listening options (`None` in iptables mode).
    pub userspace: Option<UserspaceOptions>,
    /// The options that shape the rules on this node.
    pub node: NodeOptions,
    /// `iptables.syncPeriod`.
    pub sync_period: Duration,
    /// `iptables.minSyncPeriod`.
    pub min_sync_period: Duration,
    /// `healthzBindAddress` (`None`: disabled).
    pub healthz: Option<SocketAddr>,
    /// `metricsBindAddress` (`None`: disabled).
    pub metrics: Option<SocketAddr>,
    /// `clientConnection.kubeconfig` (`None`: in-cluster configuration).
    pub kubeconfig: Option<PathBuf>,
    /// `--master`: the API server URL, overriding the kubeconfig's.
    pub master: Option<String>,
}

impl DaemonConfig {
    /// Resolves `flags` (and the `--config` file they name) as kube-proxy does; the node name
    /// is `hostnameOverride`, else this host's name.
    pub fn resolve(flags: &KubeProxyFlags) -> Result<Self> {
        let effective = resolve(flags)?;
        let c = &effective.config;
        // kube-proxy: the override is trimmed and lower-cased; empty means the hostname.
        let node_name = effective.hostname_override().unwrap_or_else(hostname);
        if node_name.is_empty() {
            return Err(Error::Flag {
                flag: "--hostname-override",
                reason: "no node name: set it (or NODE_NAME), the host name is empty".to_string(),
            });
        }
        let node = effective.node_options(node_name, flags.node_ip.clone())?;
        let mode = if c.mode == "userspace" { ProxyMode::Userspace } else { ProxyMode::Iptables };
        let userspace = match mode {
            ProxyMode::Iptables => None,
            ProxyMode::Userspace => Some(userspace(c)?),
        };
        let kubeconfig = Some(&c.client_connection.kubeconfig).filter(|p| !p.is_empty()).map(PathBuf::from);
        Ok(DaemonConfig {
            mode,
            userspace,
            node,
            sync_period: effective.sync_period(),
            min_sync_period: effective.min_sync_period(),
            healthz: effective.healthz_address(),
            metrics: effective.metrics_address(),
            kubeconfig,
            master: flags.master.clone(),
            effective,
        })
    }
}

/// The host's name as the kernel reports it, lower-cased (kube-proxy's default node name).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_lowercase()).unwrap_or_default()
}

/// The userspace proxy's listening options.
fn userspace(c: &KubeProxyConfiguration) -> Result<UserspaceOptions> {
    let range = PortRange::parse(&c.port_range).map_err(|e| Error::Field {
        field: "portRange",
        flag: "--proxy-port-range",
        reason: e.to_string(),
    })?;
    let field = |reason: String| Error::Field { field: "bindAddress", flag: "--bind-address", reason };
    let bind: IpAddr =
        c.bind_address.parse().map_err(|_| field(format!("{:?} is not an IP address", c.bind_address)))?;
    if bind.is_loopback() {
        return Err(field(format!("{bind}: the userspace proxy cannot listen on loopback (pods could not reach it)")));
    }
    Ok(UserspaceOptions { bind, range })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> KubeProxyFlags {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            kube: KubeProxyFlags,
        }
        Cli::try_parse_from(std::iter::once("kubenat").chain(args.iter().copied())).expect("flags parse").kube
    }

    #[test]
    fn iptables_mode_by_default_with_kube_proxys_periods() {
        let config = DaemonConfig::resolve(&flags(&["--hostname-override", "Node-A "])).unwrap();
        assert_eq!(config.mode, ProxyMode::Iptables);
        assert!(config.userspace.is_none());
        assert_eq!(config.node.node_name, "node-a");
        assert_eq!(config.sync_period, Duration::from_secs(30));
        assert_eq!(config.min_sync_period, Duration::from_secs(1));
        assert_eq!(config.healthz, Some("0.0.0.0:10256".parse().unwrap()));
        assert_eq!(config.metrics, Some("127.0.0.1:10249".parse().unwrap()));
        assert_eq!(config.kubeconfig, None);
    }

    #[test]
    fn userspace_mode_names_the_bad_flag() {
        let base = ["--hostname-override", "n", "--proxy-mode", "userspace"];
        let loopback = flags(&[&base[..], &["--bind-address", "127.0.0.1"]].concat());
        let err = DaemonConfig::resolve(&loopback).unwrap_err().to_string();
        assert!(err.starts_with("bindAddress (--bind-address): 127.0.0.1"), "{err}");
        let range = flags(&[&base[..], &["--bind-address", "10.0.0.1", "--proxy-port-range", "9-3"]].concat());
        let err = DaemonConfig::resolve(&range).unwrap_err().to_string();
        assert!(err.starts_with("portRange (--proxy-port-range)"), "{err}");
        let ok = flags(&[&base[..], &["--bind-address", "10.0.0.1"]].concat());
        let config = DaemonConfig::resolve(&ok).unwrap();
        assert_eq!(config.mode, ProxyMode::Userspace);
        assert_eq!(config.userspace.unwrap().bind, "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
