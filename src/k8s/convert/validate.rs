//! Checks and parsers for values that reach iptables text: names, port names, IPs and CIDRs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::model::{IpFamily, Protocol};

/// Label that hands a Service (and its slices) to another proxy.
pub(super) const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label the EndpointSlice controller puts on objects of headless Services.
pub(super) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The label (if any) that makes kube-proxy ignore an object, whatever its value.
pub(super) fn ignored_by_label(labels: Option<&BTreeMap<String, String>>) -> Option<&'static str> {
    let labels = labels?;
    [SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL].into_iter().find(|label| labels.contains_key(*label))
}

/// A DNS-1123 label: 1–63 lowercase letters, digits and `-`, starting and ending alphanumeric.
pub(super) fn dns_label(value: &str) -> Result<(), &'static str> {
    if value.len() > 63 {
        return Err("must be at most 63 characters (a DNS-1123 label)");
    }
    label_chars(value).map_err(|_| {
        "must be lowercase letters, digits and '-', starting and ending with a letter or digit \
         (a DNS-1123 label)"
    })
}

/// A DNS-1123 subdomain: at most 253 characters, DNS-1123 label characters joined by `.`.
pub(super) fn dns_subdomain(value: &str) -> Result<(), &'static str> {
    if value.len() > 253 {
        return Err("must be at most 253 characters (a DNS-1123 subdomain)");
    }
    value.split('.').try_for_each(label_chars).map_err(|_| {
        "must be lowercase letters, digits, '-' and '.', each part starting and ending with a \
         letter or digit (a DNS-1123 subdomain)"
    })
}

fn label_chars(part: &str) -> Result<(), ()> {
    let bytes = part.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if bytes.iter().all(allowed) && edge(bytes.first()) && edge(bytes.last()) {
        Ok(())
    } else {
        Err(())
    }
}

/// A label value, as zones are: at most 63 letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit.
pub(super) fn label_value(value: &str) -> Result<(), &'static str> {
    let bytes = value.as_bytes();
    let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    if value.len() > 63 {
        Err("must be at most 63 characters (a label value)")
    } else if !bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || !alnum(bytes.first())
        || !alnum(bytes.last())
    {
        Err("must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit (a label value)")
    } else {
        Ok(())
    }
}

/// An IANA service name as Kubernetes requires for port names: at most 15 lowercase letters,
/// digits and `-`, at least one letter, no `-` at either end and no `--`.
pub(super) fn port_name(value: &str) -> Result<(), &'static str> {
    if value.len() > 15 {
        Err("must be at most 15 characters")
    } else if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        Err("must be lowercase letters, digits and '-'")
    } else if !value.bytes().any(|b| b.is_ascii_lowercase()) {
        Err("must contain at least one letter")
    } else if value.starts_with('-') || value.ends_with('-') || value.contains("--") {
        Err("must not start or end with '-' or contain '--'")
    } else {
        Ok(())
    }
}

/// A port number in 1..=65535.
pub(super) fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|port| *port != 0)
}

/// Parses an IP the way kube-proxy does (Go's sloppy parser: IPv4 octets may carry leading
/// zeros and are read as decimal); IPv4-mapped IPv6 addresses become IPv4.
pub(super) fn parse_ip(value: &str) -> Option<IpAddr> {
    let ip = value.parse::<IpAddr>().ok().or_else(|| ipv4_leading_zeros(value).map(IpAddr::V4))?;
    Some(ip.to_canonical())
}

fn ipv4_leading_zeros(value: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = value.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 10 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = u8::try_from(part.parse::<u32>().ok()?).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// Parses `addr/prefix`, clearing host bits as Go's `ParseCIDR` does (`10.0.0.1/8` → `10.0.0.0/8`).
pub(super) fn parse_cidr(value: &str) -> Option<IpNet> {
    let (addr, prefix) = value.split_once('/')?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ip = addr.parse::<IpAddr>().ok().or_else(|| ipv4_leading_zeros(addr).map(IpAddr::V4))?;
    IpNet::new(ip, prefix.parse().ok()?).ok().map(|net| net.trunc())
}

/// `TCP`, `UDP`, `SCTP` as Kubernetes spells them.
pub(super) fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// `IPv4` / `IPv6` as an EndpointSlice's addressType spells them.
pub(super) fn family_name(family: IpFamily) -> &'static str {
    family.api_name()
}

/// Parses a protocol: unset or empty means TCP; `Err` carries the unknown value.
pub(super) fn protocol(value: Option<&str>) -> Result<Protocol, String> {
    match value {
        None | Some("") => Ok(Protocol::Tcp),
        Some(raw) => Protocol::parse(raw).ok_or_else(|| raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for good in ["a", "web", "kube-system", "0abc", &"a".repeat(63)] {
            assert_eq!(dns_label(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "a-", "Web", "a.b", "a b", "we\"b", "a\nb", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dns_subdomains() {
        for good in ["a", "node-1.example.com", "ip-10-0-0-1.ec2.internal"] {
            assert_eq!(dns_subdomain(good), Ok(()), "{good}");
        }
        for bad in ["", "a..b", ".a", "a.", "A.b", "a_b", &"a".repeat(254)] {
            assert!(dns_subdomain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_values() {
        for good in ["zone-a", "us-east-1a", "Zone_1.b", &"z".repeat(63)] {
            assert_eq!(label_value(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "a-", "zone a", "zone\n-j", "z\"", "zöne", &"z".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_names() {
        for good in ["http", "dns-tcp", "h2c", "a", "metrics-port123"] {
            assert_eq!(port_name(good), Ok(()), "{good}");
        }
        for bad in ["", "80", "HTTP", "-http", "http-", "a--b", "sixteen-chars-ab", "-j ACCEPT"] {
            assert!(port_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_numbers() {
        assert_eq!(port_number(1), Some(1));
        assert_eq!(port_number(65535), Some(65535));
        assert_eq!(port_number(0), None);
        assert_eq!(port_number(65536), None);
        assert_eq!(port_number(-80), None);
    }

    #[test]
    fn ips_parse_like_go_sloppy() {
        let ip = |s: &str| parse_ip(s).map(|ip| ip.to_string());
        assert_eq!(ip("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("010.000.0.01").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("::ffff:10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("FD00::0005").as_deref(), Some("fd00::5"));
        for bad in ["", "10.0.0.256", "10.0.0", "10.0.0.1.2", " 10.0.0.1", "1e1.0.0.1", "fe80::1%eth0"] {
            assert_eq!(parse_ip(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cidrs_clear_host_bits() {
        let net = |s: &str| parse_cidr(s).map(|n| n.to_string());
        assert_eq!(net("10.244.1.1/24").as_deref(), Some("10.244.1.0/24"));
        assert_eq!(net("fd00::5/64").as_deref(), Some("fd00::/64"));
        assert_eq!(net("010.0.0.0/8").as_deref(), Some("10.0.0.0/8"));
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "x/8", "::/129"] {
            assert_eq!(parse_cidr(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn protocols() {
        assert_eq!(protocol(None), Ok(Protocol::Tcp));
        assert_eq!(protocol(Some("UDP")), Ok(Protocol::Udp));
        assert_eq!(protocol(Some("ICMP")), Err("ICMP".to_string()));
    }
}
