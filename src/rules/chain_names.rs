//! Every chain name kubenat writes: kube-proxy's fixed names and its hashed per-service names.

use std::net::SocketAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::ruleset::ChainName;
use crate::model::ServicePortName;

/// nat and filter `KUBE-SERVICES`.
pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
/// filter `KUBE-EXTERNAL-SERVICES`.
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// nat and filter `KUBE-NODEPORTS`.
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
/// nat `KUBE-POSTROUTING`.
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
/// nat `KUBE-MARK-MASQ`.
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// filter `KUBE-FORWARD`.
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
/// filter `KUBE-PROXY-FIREWALL`.
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// filter `KUBE-FIREWALL` (shared with kubelet: the localhost guard).
pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";
/// The empty canary chain in mangle, nat and filter.
pub const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";

/// Prefix of the destination-prefix chains of `--services-dispatch=tree` (nat only).
pub const DISPATCH_CHAIN_PREFIX: &str = "KUBE-DISP-";

/// Prefixes of the chains kube-proxy (and kubenat) create per service, plus kubenat's
/// per-prefix dispatch chains: every nat chain whose set depends on the services.
pub const SERVICE_CHAIN_PREFIXES: [&str; 6] =
    ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-", DISPATCH_CHAIN_PREFIX];

/// Whether `name` is a per-service chain (`KUBE-SVC-…`, `KUBE-SEP-…` …) or a dispatch chain
/// (`KUBE-DISP-…`): the chains stale-chain removal and `--cleanup` delete in nat.
pub fn is_service_chain(name: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A fixed kube-proxy chain.
pub fn fixed(name: &'static str) -> ChainName {
    ChainName::fixed(name)
}

/// First 16 characters of base32(sha256(input)), kube-proxy's chain-name hash.
pub fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    // Base32 turns each 5 bytes into 8 characters on their own: the first 10 bytes are the
    // first 16 characters of the whole digest's encoding.
    base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest[..10])
}

/// The 16-character suffix shared by a service port's SVC/SVL/EXT/FW chains.
fn service_hash(svc: &ServicePortName) -> String {
    hash16(&format!("{svc}{}", svc.protocol.as_str()))
}

fn prefixed(prefix: &str, hash: &str) -> ChainName {
    ChainName::new(format!("{prefix}{hash}")).expect("prefix + 16 base32 chars is a valid chain name")
}

/// Whether `name` is a tree-dispatch chain (`KUBE-DISP-…`).
pub fn is_dispatch_chain(name: &str) -> bool {
    name.starts_with(DISPATCH_CHAIN_PREFIX)
}

/// The dispatch chain for destinations inside `prefix`: `KUBE-DISP-` + hash16 of the family
/// and the prefix (host bits cleared), so the name depends on nothing but the prefix.
pub fn dispatch_chain(prefix: IpNet) -> ChainName {
    let family = match prefix {
        IpNet::V4(_) => "ipv4",
        IpNet::V6(_) => "ipv6",
    };
    prefixed(DISPATCH_CHAIN_PREFIX, &hash16(&format!("{family}/{}", prefix.trunc())))
}

/// The four per-service-port chain names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChains {
    /// `KUBE-SVC-…`: Cluster traffic policy dispatch.
    pub cluster: ChainName,
    /// `KUBE-SVL-…`: Local traffic policy dispatch.
    pub local: ChainName,
    /// `KUBE-EXT-…`: entry for external destinations.
    pub external: ChainName,
    /// `KUBE-FW-…`: loadBalancerSourceRanges filter.
    pub firewall: ChainName,
}

impl ServiceChains {
    /// Names for `svc`.
    pub fn for_service(svc: &ServicePortName) -> Self {
        let h = service_hash(svc);
        ServiceChains {
            cluster: prefixed("KUBE-SVC-", &h),
            local: prefixed("KUBE-SVL-", &h),
            external: prefixed("KUBE-EXT-", &h),
            firewall: prefixed("KUBE-FW-", &h),
        }
    }
}

/// `KUBE-SEP-…` for one endpoint of `svc`.
pub fn endpoint_chain(svc: &ServicePortName, endpoint: &SocketAddr) -> ChainName {
    prefixed("KUBE-SEP-", &hash16(&format!("{svc}{}{endpoint}", svc.protocol.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn spn(ns: &str, name: &str, port: &str, protocol: Protocol) -> ServicePortName {
        ServicePortName { namespace: ns.into(), name: name.into(), port: port.into(), protocol }
    }

    #[test]
    fn reference_vectors() {
        let cases = [
            (spn("ns1", "svc1", "p80", Protocol::Tcp), "XPGD46QRK7WJZT7O"),
            (spn("ns2", "svc2", "p80", Protocol::Tcp), "GNZBNJ2PO5MGZ6GT"),
            (spn("ns4", "svc4", "p80", Protocol::Tcp), "4SW47YFZTEDKD3PK"),
            (spn("ns5", "svc5", "p80", Protocol::Tcp), "NUKIZ6OKUXPJNT4C"),
            (spn("default", "kubernetes", "https", Protocol::Tcp), "NPX46M4PTMTKRN6Y"),
            (spn("kube-system", "kube-dns", "dns", Protocol::Udp), "TCOU7JCQXEZGVUNU"),
            (spn("kube-system", "kube-dns", "dns-tcp", Protocol::Tcp), "ERIFXISQEP7F7OF4"),
            (spn("default", "web", "http", Protocol::Tcp), "CDGGSHYLG3RE2FKL"),
        ];
        for (svc, hash) in cases {
            let chains = ServiceChains::for_service(&svc);
            assert_eq!(chains.cluster.as_str(), format!("KUBE-SVC-{hash}"), "{svc}");
            assert_eq!(chains.local.as_str(), format!("KUBE-SVL-{hash}"));
            assert_eq!(chains.external.as_str(), format!("KUBE-EXT-{hash}"));
            assert_eq!(chains.firewall.as_str(), format!("KUBE-FW-{hash}"));
        }
    }

    #[test]
    fn endpoint_vectors() {
        let cases = [
            (spn("ns1", "svc1", "p80", Protocol::Tcp), "10.180.0.1:80", "SXIVWICOYRO3J4NJ"),
            (spn("ns2", "svc2", "p80", Protocol::Tcp), "10.180.0.2:80", "RS4RBKLTHTF2IUXJ"),
            (spn("ns4", "svc4", "p80", Protocol::Tcp), "10.180.0.4:80", "UKSFD7AGPMPPLUHC"),
            (spn("ns4", "svc4", "p80", Protocol::Tcp), "10.180.0.5:80", "C6EBXVWJJZMIWKLZ"),
            (spn("ns5", "svc5", "p80", Protocol::Tcp), "10.180.0.3:80", "I77PXRDZVX7PMWMN"),
            (spn("default", "web", "http", Protocol::Tcp), "10.244.1.5:8080", "AFGSLHOD2HFNCBX4"),
            (spn("default", "web", "http", Protocol::Tcp), "10.244.2.7:8080", "2RIJ5GIYXEFH6G4D"),
            (spn("default", "web", "http", Protocol::Tcp), "10.244.3.9:8080", "RBX5X5TOEG5GD3RO"),
        ];
        for (svc, ep, hash) in cases {
            let chain = endpoint_chain(&svc, &ep.parse().unwrap());
            assert_eq!(chain.as_str(), format!("KUBE-SEP-{hash}"), "{svc} {ep}");
        }
    }

    #[test]
    fn unnamed_port_and_ipv6_inputs() {
        // Unnamed ports hash `ns/name` + protocol; IPv6 endpoints use brackets.
        let svc = spn("default", "db", "", Protocol::Tcp);
        assert_eq!(ServiceChains::for_service(&svc).cluster.as_str(), format!("KUBE-SVC-{}", hash16("default/dbtcp")));
        let ep: SocketAddr = "[fd00::5]:8080".parse().unwrap();
        assert_eq!(endpoint_chain(&svc, &ep).as_str(), format!("KUBE-SEP-{}", hash16("default/dbtcp[fd00::5]:8080")));
        assert!(is_service_chain("KUBE-FW-ABC") && !is_service_chain("KUBE-SERVICES"));
    }

    #[test]
    fn dispatch_names_depend_only_on_family_and_prefix() {
        let a = dispatch_chain("10.96.0.0/16".parse().unwrap());
        assert_eq!(a, dispatch_chain("10.96.77.1/16".parse().unwrap()), "host bits are ignored");
        assert_ne!(a, dispatch_chain("10.96.0.0/20".parse().unwrap()));
        assert_ne!(a, dispatch_chain("10.97.0.0/16".parse().unwrap()));
        assert_ne!(dispatch_chain("::/4".parse().unwrap()), dispatch_chain("0.0.0.0/4".parse().unwrap()));
        let v6 = dispatch_chain("fd00:10:96:ffff:ffff:ffff:ffff:fff0/124".parse().unwrap());
        for name in [&a, &v6] {
            assert!(name.as_str().len() <= 28 && is_dispatch_chain(name.as_str()) && is_service_chain(name.as_str()));
        }
        assert_eq!(a.as_str(), format!("KUBE-DISP-{}", hash16("ipv4/10.96.0.0/16")));
    }
}
