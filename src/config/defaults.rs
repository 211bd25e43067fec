//! kube-proxy's defaulting of `KubeProxyConfiguration`: every zero-valued field and every `null`
//! pointer gets kube-proxy's default, so a kubeadm-generated file (every field written, zero
//! meaning "default") behaves exactly like a minimal one. Applied to the file before flags, as
//! kube-proxy applies defaults to its configuration struct before the command line sets fields.

use std::net::{IpAddr, SocketAddr};

use super::duration::GoDuration;
use super::types::{KubeProxyConfiguration, API_VERSION, KIND};

/// `/healthz` port.
pub const HEALTHZ_PORT: u16 = 10256;
/// `/metrics` port.
pub const METRICS_PORT: u16 = 10249;
/// `--iptables-masquerade-bit`.
pub const MASQUERADE_BIT: i32 = 14;
/// `--oom-score-adj`.
pub const OOM_SCORE_ADJ: i32 = -999;
/// `--conntrack-max-per-core`.
pub const CONNTRACK_MAX_PER_CORE: i32 = 32_768;
/// `--conntrack-min`.
pub const CONNTRACK_MIN: i32 = 131_072;
/// `--kube-api-content-type`.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Fills every unset field with kube-proxy's default.
pub fn apply(c: &mut KubeProxyConfiguration) {
    fill(&mut c.api_version, API_VERSION);
    fill(&mut c.kind, KIND);
    fill(&mut c.bind_address, "0.0.0.0");
    // The servers' default addresses follow the family of bindAddress.
    let v6 = c.bind_address.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6());
    let (any, loopback) = if v6 { ("::", "::1") } else { ("0.0.0.0", "127.0.0.1") };
    c.healthz_bind_address = with_default_port(&c.healthz_bind_address, any, HEALTHZ_PORT);
    c.metrics_bind_address = with_default_port(&c.metrics_bind_address, loopback, METRICS_PORT);
    let ipt = &mut c.iptables;
    ipt.masquerade_bit.get_or_insert(MASQUERADE_BIT);
    ipt.localhost_node_ports.get_or_insert(true);
    duration(&mut ipt.sync_period, 30);
    duration(&mut ipt.min_sync_period, 1);
    duration(&mut c.ipvs.sync_period, 30);
    let nft = &mut c.nftables;
    nft.masquerade_bit.get_or_insert(MASQUERADE_BIT);
    duration(&mut nft.sync_period, 30);
    duration(&mut nft.min_sync_period, 1);
    c.oom_score_adj.get_or_insert(OOM_SCORE_ADJ);
    let ct = &mut c.conntrack;
    ct.max_per_core.get_or_insert(CONNTRACK_MAX_PER_CORE);
    ct.min.get_or_insert(CONNTRACK_MIN);
    ct.tcp_established_timeout.get_or_insert(GoDuration::from_secs(24 * 3600));
    ct.tcp_close_wait_timeout.get_or_insert(GoDuration::from_secs(3600));
    duration(&mut c.config_sync_period, 15 * 60);
    let client = &mut c.client_connection;
    fill(&mut client.content_type, CONTENT_TYPE);
    if client.qps == 0.0 {
        client.qps = 5.0;
    }
    if client.burst == 0 {
        client.burst = 10;
    }
    fill(&mut c.logging.format, "text");
    if c.logging.flush_frequency.0.is_zero() {
        c.logging.flush_frequency.0 = GoDuration::from_secs(5);
    }
}

fn fill(field: &mut String, default: &str) {
    if field.is_empty() {
        *field = default.to_string();
    }
}

fn duration(field: &mut GoDuration, default_secs: u64) {
    if field.is_zero() {
        *field = GoDuration::from_secs(default_secs);
    }
}

/// kube-proxy's bind address defaulting: empty → `default_ip:port`; an IP without a port gets
/// `port`; anything else is kept for validation to judge.
pub fn with_default_port(address: &str, default_ip: &str, port: u16) -> String {
    let address = match address.trim() {
        "" => default_ip,
        given => given,
    };
    match address.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => address.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_become_kube_proxy_defaults() {
        let mut c = KubeProxyConfiguration::default();
        apply(&mut c);
        assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
        assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
        assert_eq!(c.iptables.masquerade_bit, Some(14));
        assert_eq!(c.iptables.sync_period, GoDuration::from_secs(30));
        assert_eq!(c.iptables.min_sync_period, GoDuration::from_secs(1));
        assert_eq!(c.iptables.localhost_node_ports, Some(true));
        assert_eq!(c.oom_score_adj, Some(-999));
        assert_eq!(c.conntrack.max_per_core, Some(32_768));
        assert_eq!(c.conntrack.min, Some(131_072));
        assert_eq!(c.conntrack.tcp_established_timeout, Some(GoDuration::from_secs(86_400)));
        assert_eq!(c.conntrack.tcp_close_wait_timeout, Some(GoDuration::from_secs(3_600)));
        assert_eq!(c.config_sync_period, GoDuration::from_secs(900));
        assert_eq!((c.client_connection.qps, c.client_connection.burst), (5.0, 10));
        assert_eq!(c.bind_address, "0.0.0.0");
    }

    #[test]
    fn explicit_values_and_zero_pointers_are_kept() {
        let mut c = KubeProxyConfiguration::default();
        c.conntrack.max_per_core = Some(0);
        c.conntrack.tcp_established_timeout = Some(GoDuration::ZERO);
        c.iptables.masquerade_bit = Some(0);
        c.iptables.sync_period = GoDuration::from_secs(10);
        c.healthz_bind_address = "127.0.0.1".into();
        c.metrics_bind_address = "::1".into();
        apply(&mut c);
        assert_eq!(c.conntrack.max_per_core, Some(0));
        assert_eq!(c.conntrack.tcp_established_timeout, Some(GoDuration::ZERO));
        assert_eq!(c.iptables.masquerade_bit, Some(0));
        assert_eq!(c.iptables.sync_period, GoDuration::from_secs(10));
        assert_eq!(c.healthz_bind_address, "127.0.0.1:10256");
        assert_eq!(c.metrics_bind_address, "[::1]:10249");
        let mut c = KubeProxyConfiguration { bind_address: "::".into(), ..Default::default() };
        apply(&mut c);
        assert_eq!((c.healthz_bind_address.as_str(), c.metrics_bind_address.as_str()), ("[::]:10256", "[::1]:10249"));
    }
}
