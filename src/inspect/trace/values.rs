//! Parsers for the argument values the tracer interprets: addresses, ports, marks, NAT targets.
//! Each returns `None` on text it does not understand; callers turn that into a note.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// `10.0.0.1`, `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, `fd00::/64`: a network (a host is `/32`/`/128`).
pub(super) fn net(text: &str) -> Option<IpNet> {
    match text.split_once('/') {
        None => text.parse::<IpAddr>().ok().map(IpNet::from),
        Some((ip, len)) => {
            if let Ok(net) = text.parse::<IpNet>() {
                return Some(net);
            }
            let ip: IpAddr = ip.parse().ok()?;
            let mask: IpAddr = len.parse().ok()?;
            IpNet::with_netmask(ip, mask).ok()
        }
    }
}

/// A comma-separated list of networks; `None` if any element is unparseable.
pub(super) fn nets(text: &str) -> Option<Vec<IpNet>> {
    text.split(',').map(net).collect()
}

/// One port or an inclusive range: `80`, `80:90`, `:90`, `80:`.
fn port_range(text: &str) -> Option<(u16, u16)> {
    match text.split_once(':') {
        None => {
            let p = text.parse().ok()?;
            Some((p, p))
        }
        Some((lo, hi)) => {
            let lo = if lo.is_empty() { 0 } else { lo.parse().ok()? };
            let hi = if hi.is_empty() { u16::MAX } else { hi.parse().ok()? };
            Some((lo, hi))
        }
    }
}

/// A comma-separated list of ports and ranges (`--dport 80`, `--dports 80,443,8000:8080`).
pub(super) fn ports(text: &str) -> Option<Vec<(u16, u16)>> {
    text.split(',').map(port_range).collect()
}

/// A 32-bit number in decimal or `0x` hex.
pub(super) fn number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// `value[/mask]`, the mask defaulting to all ones.
pub(super) fn mark(text: &str) -> Option<(u32, u32)> {
    match text.split_once('/') {
        None => Some((number(text)?, u32::MAX)),
        Some((value, mask)) => Some((number(value)?, number(mask)?)),
    }
}

/// Whether `-p value` covers `name` (`tcp`/`udp`/`sctp`), by name or protocol number.
pub(super) fn protocol_matches(value: &str, name: &str) -> bool {
    let value = value.to_ascii_lowercase();
    let number = match name {
        "tcp" => "6",
        "udp" => "17",
        "sctp" => "132",
        _ => "",
    };
    value == "all" || value == "0" || value == name || value == number
}

/// The first address and port of a DNAT `--to-destination`:
/// `ip`, `ip:port`, `ip1-ip2:p1-p2`, `[v6]:port`, `v6`. `None` when unparseable.
/// The boolean says whether a range was cut down to its first element.
pub(super) fn nat_destination(text: &str) -> Option<(IpAddr, Option<u16>, bool)> {
    let (ip_part, port_part) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        match after {
            "" => (ip, None),
            _ => (ip, Some(after.strip_prefix(':')?)),
        }
    } else if text.matches(':').count() == 1 {
        let (ip, port) = text.split_once(':')?;
        (ip, Some(port))
    } else {
        (text, None)
    };
    let (first_ip, ip_range) = match ip_part.split_once('-') {
        Some((first, _)) => (first, true),
        None => (ip_part, false),
    };
    let ip: IpAddr = first_ip.parse().ok()?;
    let (port, port_range) = match port_part {
        None => (None, false),
        Some(p) => {
            let (first, range) = match p.split_once('-') {
                Some((first, _)) => (first, true),
                None => (p, false),
            };
            (Some(first.parse().ok()?), range)
        }
    };
    Some((ip, port, ip_range || port_range))
}

/// The first port of `REDIRECT --to-ports 8080[-8090]`.
pub(super) fn redirect_port(text: &str) -> Option<u16> {
    text.split(['-', ',']).next()?.parse().ok()
}

/// The socket address DNAT produces, keeping `dport` when the target names no port.
pub(super) fn dnat_target(text: &str, dport: u16) -> Option<(SocketAddr, bool)> {
    let (ip, port, ranged) = nat_destination(text)?;
    Some((SocketAddr::new(ip, port.unwrap_or(dport)), ranged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_in_every_spelling() {
        let n = |s: &str| net(s).map(|n| n.to_string());
        assert_eq!(n("10.96.0.1"), Some("10.96.0.1/32".into()));
        assert_eq!(n("10.96.0.1/32"), Some("10.96.0.1/32".into()));
        assert_eq!(n("10.0.0.0/255.0.0.0"), Some("10.0.0.0/8".into()));
        assert_eq!(n("fd00::1"), Some("fd00::1/128".into()));
        assert_eq!(n("fd00::/64"), Some("fd00::/64".into()));
        assert_eq!(n("example.com"), None);
        assert_eq!(n("10.0.0.0/99"), None);
        assert_eq!(nets("1.1.1.1,2.2.2.0/24").map(|v| v.len()), Some(2));
        assert_eq!(nets("1.1.1.1,bad"), None);
    }

    #[test]
    fn ports_marks_and_protocols() {
        assert_eq!(ports("80"), Some(vec![(80, 80)]));
        assert_eq!(ports("80:90,:10,65000:"), Some(vec![(80, 90), (0, 10), (65000, 65535)]));
        assert_eq!(ports("http"), None);
        assert_eq!(mark("0x4000/0x4000"), Some((0x4000, 0x4000)));
        assert_eq!(mark("0x4000"), Some((0x4000, u32::MAX)));
        assert_eq!(mark("16384/0x0"), Some((0x4000, 0)));
        assert_eq!(mark("0xzz"), None);
        assert!(protocol_matches("TCP", "tcp"));
        assert!(protocol_matches("6", "tcp"));
        assert!(protocol_matches("all", "udp"));
        assert!(!protocol_matches("udp", "tcp"));
    }

    #[test]
    fn nat_destinations() {
        let d = |s: &str| dnat_target(s, 80).map(|(a, r)| (a.to_string(), r));
        assert_eq!(d("10.244.2.7:8080"), Some(("10.244.2.7:8080".into(), false)));
        assert_eq!(d("10.244.2.7"), Some(("10.244.2.7:80".into(), false)));
        assert_eq!(d("[fd00::7]:8080"), Some(("[fd00::7]:8080".into(), false)));
        assert_eq!(d("fd00::7"), Some(("[fd00::7]:80".into(), false)));
        assert_eq!(d("10.0.0.1-10.0.0.9:80-90"), Some(("10.0.0.1:80".into(), true)));
        assert_eq!(d("10.0.0.300:80"), None);
        assert_eq!(d("[fd00::7]x"), None);
        assert_eq!(redirect_port("15001"), Some(15001));
        assert_eq!(redirect_port("15001-15005"), Some(15001));
    }
}
