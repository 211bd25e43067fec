//! `--nodeport-addresses` as kube-proxy reads it: entries (CIDRs and the keywords `primary`,
//! `localhost`, `all`), what they mean for one family, which interface addresses they select,
//! and whether they let localhost NodePorts stay on. Pure: the addresses come from the caller.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::IpFamily;

/// One `--nodeport-addresses` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortEntry {
    /// A CIDR of either family.
    Cidr(IpNet),
    /// `primary`: the node's primary IP of each family (from the Node, `--node-ip`).
    Primary,
    /// `localhost`: `127.0.0.0/8` and `::1/128`.
    Localhost,
    /// `all`: `0.0.0.0/0` and `::/0`.
    All,
}

/// An entry that is neither a CIDR nor a keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry(pub String);

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a CIDR or one of \"primary\", \"localhost\", \"all\"", self.0)
    }
}

impl NodePortEntry {
    /// Parses one entry (surrounding blanks ignored; keywords are lower-case, as upstream).
    pub fn parse(s: &str) -> Result<Self, BadEntry> {
        match s.trim() {
            "primary" => Ok(NodePortEntry::Primary),
            "localhost" => Ok(NodePortEntry::Localhost),
            "all" => Ok(NodePortEntry::All),
            other => other.parse().map(NodePortEntry::Cidr).map_err(|_| BadEntry(s.to_string())),
        }
    }

    /// Parses every entry.
    pub fn parse_all<S: AsRef<str>>(entries: &[S]) -> Result<Vec<Self>, BadEntry> {
        entries.iter().map(|e| NodePortEntry::parse(e.as_ref())).collect()
    }

    /// The CIDRs this entry stands for (`primary`: one host CIDR per non-loopback node IP).
    fn cidrs(self, node_ips: &[IpAddr]) -> Vec<IpNet> {
        let v4 = |a: [u8; 4], len| IpNet::new(IpAddr::from(a), len).ok();
        let v6 = |a: [u16; 8], len| IpNet::new(IpAddr::from(a), len).ok();
        match self {
            NodePortEntry::Cidr(net) => vec![net],
            NodePortEntry::Primary => {
                node_ips.iter().filter(|ip| !ip.is_loopback()).map(|ip| IpNet::from(*ip)).collect()
            }
            NodePortEntry::Localhost => {
                [v4([127, 0, 0, 0], 8), v6([0, 0, 0, 0, 0, 0, 0, 1], 128)].into_iter().flatten().collect()
            }
            NodePortEntry::All => [v4([0; 4], 0), v6([0; 8], 0)].into_iter().flatten().collect(),
        }
    }
}

/// Which local addresses accept NodePort traffic for one family (`--nodeport-addresses`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NodePortAddresses {
    /// Every local address (`-m addrtype --dst-type LOCAL`).
    #[default]
    All,
    /// Only node addresses inside these CIDRs (one `-d ip` rule each).
    Cidrs(Vec<IpNet>),
}

impl NodePortAddresses {
    /// What `entries` mean for `family`, as kube-proxy's per-family handling: the entries'
    /// CIDRs of that family; none at all (including no entries) or any zero-length prefix
    /// means every local address. `node_ips` resolve `primary`.
    pub fn for_family(entries: &[NodePortEntry], family: IpFamily, node_ips: &[IpAddr]) -> Self {
        let cidrs: Vec<IpNet> =
            entries.iter().flat_map(|e| e.cidrs(node_ips)).filter(|net| family.contains(&net.addr())).collect();
        if cidrs.is_empty() || cidrs.iter().any(|net| net.prefix_len() == 0) {
            NodePortAddresses::All
        } else {
            NodePortAddresses::Cidrs(cidrs)
        }
    }

    /// The distinct addresses of `family` among `addresses` (the node's interface addresses, in
    /// their order) that these CIDRs select; empty for [`NodePortAddresses::All`], which needs
    /// no list.
    pub fn matching(&self, family: IpFamily, addresses: &[IpNet]) -> Vec<IpAddr> {
        let NodePortAddresses::Cidrs(cidrs) = self else {
            return Vec::new();
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in addresses.iter().map(IpNet::addr) {
            if family.contains(&ip) && !out.contains(&ip) && cidrs.iter().any(|c| c.contains(&ip)) {
                out.push(ip);
            }
        }
        out
    }
}

/// Whether `entries` let IPv4 localhost NodePorts stay on: kube-proxy turns them off unless an
/// IPv4 CIDR is a loopback address or contains `127.0.0.0` (no IPv4 entries means
/// `0.0.0.0/0`, which does). `primary` never counts: kube-proxy leaves loopback node IPs out.
pub fn contains_ipv4_loopback(entries: &[NodePortEntry]) -> bool {
    let loopback_start = IpAddr::from(Ipv4Addr::new(127, 0, 0, 0));
    let v4: Vec<IpNet> = entries
        .iter()
        .flat_map(|e| match e {
            // The node IPs are not known here; they are never loopback, but they are IPv4 CIDRs.
            NodePortEntry::Primary => vec![IpNet::from(IpAddr::from(Ipv4Addr::UNSPECIFIED))],
            other => other.cidrs(&[]),
        })
        .filter(|net| net.addr().is_ipv4())
        .collect();
    v4.is_empty() || v4.iter().any(|net| net.addr().is_loopback() || net.contains(&loopback_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(s: &[&str]) -> Vec<NodePortEntry> {
        NodePortEntry::parse_all(s).unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn keywords_and_cidrs_parse() {
        assert_eq!(
            entries(&[" primary", "localhost", "all"]),
            [NodePortEntry::Primary, NodePortEntry::Localhost, NodePortEntry::All]
        );
        assert_eq!(entries(&["10.0.0.0/8"]), [NodePortEntry::Cidr(net("10.0.0.0/8"))]);
        assert!(NodePortEntry::parse("Primary").is_err());
        assert!(NodePortEntry::parse("10.0.0.0/33").unwrap_err().to_string().contains("\"localhost\""));
    }

    #[test]
    fn a_family_without_entries_or_with_a_zero_cidr_matches_all() {
        let v4_only = entries(&["10.0.0.0/8"]);
        assert_eq!(NodePortAddresses::for_family(&v4_only, IpFamily::V6, &[]), NodePortAddresses::All);
        assert_eq!(
            NodePortAddresses::for_family(&v4_only, IpFamily::V4, &[]),
            NodePortAddresses::Cidrs(vec![net("10.0.0.0/8")])
        );
        assert_eq!(NodePortAddresses::for_family(&[], IpFamily::V4, &[]), NodePortAddresses::All);
        assert_eq!(
            NodePortAddresses::for_family(&entries(&["all", "10.0.0.0/8"]), IpFamily::V4, &[]),
            NodePortAddresses::All
        );
        assert_eq!(
            NodePortAddresses::for_family(&entries(&["10.0.0.0/8", "0.0.0.0/0"]), IpFamily::V4, &[]),
            NodePortAddresses::All
        );
    }

    #[test]
    fn primary_is_the_non_loopback_node_ips_and_combines() {
        let ips: Vec<IpAddr> =
            vec!["192.168.1.10".parse().unwrap(), "127.0.0.1".parse().unwrap(), "fd00::10".parse().unwrap()];
        let npa = NodePortAddresses::for_family(&entries(&["primary", "localhost"]), IpFamily::V4, &ips);
        assert_eq!(npa, NodePortAddresses::Cidrs(vec![net("192.168.1.10/32"), net("127.0.0.0/8")]));
        let v6 = NodePortAddresses::for_family(&entries(&["primary"]), IpFamily::V6, &ips);
        assert_eq!(v6, NodePortAddresses::Cidrs(vec![net("fd00::10/128")]));
        // No node IP of the family: nothing of that family, so every address.
        assert_eq!(NodePortAddresses::for_family(&entries(&["primary"]), IpFamily::V6, &[]), NodePortAddresses::All);
    }

    #[test]
    fn matching_dedups_filters_family_and_keeps_order() {
        let npa = NodePortAddresses::Cidrs(vec![net("10.0.0.0/8"), net("127.0.0.0/8")]);
        let addrs =
            [net("192.168.1.10/24"), net("10.1.2.3/16"), net("127.0.0.1/8"), net("10.1.2.3/16"), net("fd00::1/64")];
        let want: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        assert_eq!(npa.matching(IpFamily::V4, &addrs), want);
        assert!(npa.matching(IpFamily::V6, &addrs).is_empty());
        assert!(NodePortAddresses::All.matching(IpFamily::V4, &addrs).is_empty());
    }

    #[test]
    fn ipv4_loopback_as_kube_proxy_decides_it() {
        for (given, want) in [
            (&[][..], true),
            (&["10.0.0.0/8"][..], false),
            (&["127.0.0.1/32"][..], true),
            (&["127.0.2.0/28"][..], true),
            (&["64.0.0.0/2"][..], true),
            (&["::1/128"][..], true), // no IPv4 entry: 0.0.0.0/0
            (&["::1/128", "10.0.0.0/8"][..], false),
            (&["primary"][..], false),
            (&["primary", "localhost"][..], true),
            (&["all"][..], true),
        ] {
            assert_eq!(contains_ipv4_loopback(&entries(given)), want, "{given:?}");
        }
    }
}
