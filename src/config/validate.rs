//! kube-proxy's start-up validation of the effective configuration (file + defaults + flags),
//! plus kubenat's own limits (the modes it implements). Every error names the configuration
//! field and the flag that sets it, and says what is accepted.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::duration::GoDuration;
use super::types::KubeProxyConfiguration;
use super::Error;
use crate::model::NodePortEntry;

/// The modes kubenat runs (`""` is the platform default, iptables).
pub const MODES: [&str; 3] = ["", "iptables", "userspace"];
/// kube-proxy's detect-local modes (`""` is ClusterCIDR); kubenat adds `none` (for messages;
/// `DetectLocalMode::parse` decides).
pub const DETECT_LOCAL_MODES: [&str; 5] = ["ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix", "none"];

fn invalid(field: &'static str, flag: &'static str, reason: impl Into<String>) -> Error {
    Error::Field { field, flag, reason: reason.into() }
}

/// Checks the effective configuration; the first problem is returned.
pub fn validate(c: &KubeProxyConfiguration) -> Result<(), Error> {
    validate_mode(c)?;
    let ipt = &c.iptables;
    match ipt.masquerade_bit {
        Some(bit) if !(0..=31).contains(&bit) => {
            return Err(invalid("iptables.masqueradeBit", "--iptables-masquerade-bit", format!("{bit} is not in 0-31")))
        }
        _ => {}
    }
    positive(ipt.sync_period, "iptables.syncPeriod", "--iptables-sync-period")?;
    not_negative(ipt.min_sync_period, "iptables.minSyncPeriod", "--iptables-min-sync-period")?;
    if ipt.min_sync_period > ipt.sync_period {
        return Err(invalid(
            "iptables.minSyncPeriod",
            "--iptables-min-sync-period",
            format!("{} must not be longer than iptables.syncPeriod {}", ipt.min_sync_period, ipt.sync_period),
        ));
    }
    positive(c.config_sync_period, "configSyncPeriod", "--config-sync-period")?;
    validate_conntrack(c)?;
    if let Some(adj) = c.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid("oomScoreAdj", "--oom-score-adj", format!("{adj} is not in -1000..1000")));
        }
    }
    if c.bind_address.parse::<IpAddr>().is_err() {
        return Err(invalid("bindAddress", "--bind-address", format!("{:?} is not an IP address", c.bind_address)));
    }
    bind_address(&c.healthz_bind_address, "healthzBindAddress", "--healthz-bind-address")?;
    bind_address(&c.metrics_bind_address, "metricsBindAddress", "--metrics-bind-address")?;
    cluster_cidrs(&c.cluster_cidr)?;
    validate_detect_local(c)?;
    if let Err(bad) = NodePortEntry::parse_all(&c.node_port_addresses) {
        return Err(invalid("nodePortAddresses", "--nodeport-addresses", bad.to_string()));
    }
    let client = &c.client_connection;
    if !(client.qps.is_finite() && client.qps >= 0.0) {
        return Err(invalid("clientConnection.qps", "--kube-api-qps", format!("{} is not a rate >= 0", client.qps)));
    }
    if client.burst < 0 {
        return Err(invalid("clientConnection.burst", "--kube-api-burst", format!("{} is negative", client.burst)));
    }
    if !matches!(c.logging.format.as_str(), "text" | "json") {
        return Err(invalid(
            "logging.format",
            "--logging-format",
            format!("{:?}: expected text or json", c.logging.format),
        ));
    }
    Ok(())
}

fn validate_mode(c: &KubeProxyConfiguration) -> Result<(), Error> {
    if MODES.contains(&c.mode.as_str()) {
        return Ok(());
    }
    let reason = match c.mode.as_str() {
        "ipvs" | "nftables" | "kernelspace" => format!(
            "{:?} is another proxy's mode; kubenat programs iptables (\"\" or iptables) or runs the userspace proxy \
             (userspace); switching would leave that mode's rules in place",
            c.mode
        ),
        other => format!("{other:?}: expected \"\", iptables or userspace"),
    };
    Err(invalid("mode", "--proxy-mode", reason))
}

fn validate_conntrack(c: &KubeProxyConfiguration) -> Result<(), Error> {
    let ct = &c.conntrack;
    for (value, field, flag) in [
        (ct.max_per_core, "conntrack.maxPerCore", "--conntrack-max-per-core"),
        (ct.min, "conntrack.min", "--conntrack-min"),
    ] {
        if let Some(n) = value.filter(|n| *n < 0) {
            return Err(invalid(field, flag, format!("{n} is negative")));
        }
    }
    for (value, field, flag) in [
        (ct.tcp_established_timeout, "conntrack.tcpEstablishedTimeout", "--conntrack-tcp-timeout-established"),
        (ct.tcp_close_wait_timeout, "conntrack.tcpCloseWaitTimeout", "--conntrack-tcp-timeout-close-wait"),
        (Some(ct.udp_timeout), "conntrack.udpTimeout", "--conntrack-udp-timeout"),
        (Some(ct.udp_stream_timeout), "conntrack.udpStreamTimeout", "--conntrack-udp-timeout-stream"),
    ] {
        not_negative(value.unwrap_or_default(), field, flag)?;
    }
    Ok(())
}

fn validate_detect_local(c: &KubeProxyConfiguration) -> Result<(), Error> {
    let mode = c.detect_local_mode.as_str();
    if super::DetectLocalMode::parse(mode).is_none() {
        return Err(invalid(
            "detectLocalMode",
            "--detect-local-mode",
            format!("{mode:?}: expected {}", DETECT_LOCAL_MODES.join(", ")),
        ));
    }
    let check = |value: &str, field, flag| {
        if value.is_empty() {
            Err(invalid(field, flag, format!("required by detectLocalMode {mode}")))
        } else if !super::valid_interface(value) {
            Err(invalid(field, flag, format!("{value:?} is not an interface name")))
        } else {
            Ok(())
        }
    };
    if mode.eq_ignore_ascii_case("BridgeInterface") {
        check(&c.detect_local.bridge_interface, "detectLocal.bridgeInterface", "--pod-bridge-interface")?;
    }
    if mode.eq_ignore_ascii_case("InterfaceNamePrefix") {
        check(&c.detect_local.interface_name_prefix, "detectLocal.interfaceNamePrefix", "--pod-interface-name-prefix")?;
    }
    Ok(())
}

fn positive(d: GoDuration, field: &'static str, flag: &'static str) -> Result<(), Error> {
    if d.is_zero() || d.is_negative() {
        return Err(invalid(field, flag, format!("{d} must be greater than 0")));
    }
    Ok(())
}

fn not_negative(d: GoDuration, field: &'static str, flag: &'static str) -> Result<(), Error> {
    if d.is_negative() {
        return Err(invalid(field, flag, format!("{d} must not be negative")));
    }
    Ok(())
}

/// An `IP:port` bind address, or empty (the server is off).
pub fn parse_bind_address(text: &str) -> Option<Option<SocketAddr>> {
    if text.is_empty() {
        return Some(None);
    }
    text.parse::<SocketAddr>().ok().map(Some)
}

fn bind_address(text: &str, field: &'static str, flag: &'static str) -> Result<(), Error> {
    match parse_bind_address(text) {
        Some(_) => Ok(()),
        None => Err(invalid(field, flag, format!("{text:?} is not IP:port (or an IP, or empty to disable)"))),
    }
}

/// `clusterCIDR`: comma-separated CIDRs, at most one per family.
pub fn cluster_cidrs(text: &str) -> Result<Vec<IpNet>, Error> {
    let mut cidrs: Vec<IpNet> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let cidr: IpNet =
            part.parse().map_err(|_| invalid("clusterCIDR", "--cluster-cidr", format!("{part:?} is not a CIDR")))?;
        if cidrs.iter().any(|c| c.addr().is_ipv4() == cidr.addr().is_ipv4()) {
            return Err(invalid("clusterCIDR", "--cluster-cidr", format!("{text:?} has two CIDRs of one IP family")));
        }
        cidrs.push(cidr);
    }
    Ok(cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults;

    fn defaulted() -> KubeProxyConfiguration {
        let mut c = KubeProxyConfiguration::default();
        defaults::apply(&mut c);
        c
    }

    fn error(f: impl FnOnce(&mut KubeProxyConfiguration)) -> String {
        let mut c = defaulted();
        f(&mut c);
        validate(&c).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        validate(&defaulted()).unwrap();
    }

    #[test]
    fn each_error_names_field_and_flag() {
        type Change = Box<dyn FnOnce(&mut KubeProxyConfiguration)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.iptables.sync_period = GoDuration::ZERO), "--iptables-sync-period"),
            (Box::new(|c| c.iptables.min_sync_period = GoDuration::parse("-1s").unwrap()), "iptables.minSyncPeriod"),
            (Box::new(|c| c.iptables.masquerade_bit = Some(32)), "--iptables-masquerade-bit"),
            (Box::new(|c| c.mode = "ipvs".into()), "mode"),
            (Box::new(|c| c.mode = "fast".into()), "--proxy-mode"),
            (Box::new(|c| c.conntrack.max_per_core = Some(-1)), "conntrack.maxPerCore"),
            (Box::new(|c| c.conntrack.udp_timeout = GoDuration::parse("-1s").unwrap()), "--conntrack-udp-timeout"),
            (Box::new(|c| c.oom_score_adj = Some(-1001)), "--oom-score-adj"),
            (Box::new(|c| c.healthz_bind_address = "localhost:x".into()), "healthzBindAddress"),
            (Box::new(|c| c.metrics_bind_address = "1.2.3.4:99999".into()), "--metrics-bind-address"),
            (Box::new(|c| c.bind_address = "any".into()), "--bind-address"),
            (Box::new(|c| c.cluster_cidr = "10.0.0.0/8,10.1.0.0/16".into()), "clusterCIDR"),
            (Box::new(|c| c.cluster_cidr = "10.0.0.0/33".into()), "--cluster-cidr"),
            (Box::new(|c| c.detect_local_mode = "Pods".into()), "detectLocalMode"),
            (Box::new(|c| c.detect_local_mode = "BridgeInterface".into()), "--pod-bridge-interface"),
            (Box::new(|c| c.node_port_addresses = vec!["bogus".into()]), "nodePortAddresses"),
            (Box::new(|c| c.client_connection.burst = -1), "--kube-api-burst"),
            (Box::new(|c| c.logging.format = "xml".into()), "logging.format"),
            (Box::new(|c| c.config_sync_period = GoDuration::ZERO), "configSyncPeriod"),
        ];
        for (change, want) in cases {
            let e = error(change);
            assert!(e.contains(want), "{e:?} should name {want}");
        }
    }

    #[test]
    fn empty_bind_addresses_turn_servers_off() {
        assert_eq!(parse_bind_address(""), Some(None));
        assert_eq!(parse_bind_address("[::1]:10249"), Some(Some("[::1]:10249".parse().unwrap())));
        assert_eq!(parse_bind_address("127.0.0.1"), None);
    }
}
