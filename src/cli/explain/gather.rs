//! The I/O half of `kubenat explain`: reads what the pure diagnosis judges — the rules of both
//! backends (`iptables-nft-save`, `iptables-legacy-save`), the UDP conntrack table (ctnetlink,
//! opened inside the namespace) and the sysctls — from this network namespace or a named one;
//! or only a saved dump, offline.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ipnet::IpNet;
use kubenat::apply::exec::{Backend, ExecIptables, Iptables};
use kubenat::conntrack::{Conntrack, Flow, NetlinkConntrack};
use kubenat::host::{InterfaceAddresses, NetlinkAddresses};
use kubenat::inspect::explain::{kube_proxy_chains, BackendChains, DaemonHealth, Observed};
use kubenat::model::IpFamily;
use kubenat::rules::parse;
use kubenat::rules::ruleset::Ruleset;
use kubenat::startup::{Facts, FlannelRules, Sysctl, SysctlReader};

/// How long one save tool may run.
const SAVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon's health server may take to connect and to answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Offline: the dump at `path` (`-` is stdin) as the live rules; nothing else is known.
pub fn offline(path: &Path) -> anyhow::Result<Observed> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("--rules -: reading stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("--rules {}: reading", path.display()))?
    };
    let rules = parse::parse(&text)
        .with_context(|| format!("--rules {}: not an iptables-save/restore dump", path.display()))?;
    Ok(Observed { rules, ..Observed::default() })
}

/// One backend's save output of `family`, parsed; `None` (with a note on stderr) when it
/// cannot be read.
fn read_backend(ipt: &dyn Iptables, family: IpFamily, name: &str) -> Option<Ruleset> {
    let text = match ipt.save(family, None) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("kubenat: note: {name}: {err:#}", err = anyhow::Error::new(err));
            return None;
        }
    };
    match parse::parse(&text) {
        Ok(rules) => Some(rules),
        Err(err) => {
            eprintln!("kubenat: note: {name} output not understood: {err}");
            None
        }
    }
}

/// The rules of both backends: the one holding more kube-proxy chains is the live one (nft
/// when tied), and both counts are kept for the backend-split check.
pub fn rules_of(
    nft: &dyn Iptables,
    legacy: &dyn Iptables,
    family: IpFamily,
) -> anyhow::Result<(Ruleset, BackendChains)> {
    let nft_rules = read_backend(nft, family, "iptables-nft-save");
    let legacy_rules = read_backend(legacy, family, "iptables-legacy-save");
    let chains = BackendChains {
        nft: nft_rules.as_ref().map(kube_proxy_chains),
        legacy: legacy_rules.as_ref().map(kube_proxy_chains),
    };
    let live = match (nft_rules, legacy_rules) {
        (Some(nft), Some(legacy)) => {
            if chains.legacy > chains.nft {
                legacy
            } else {
                nft
            }
        }
        (Some(rules), None) | (None, Some(rules)) => rules,
        (None, None) => bail!("could not read the rules with iptables-nft-save or iptables-legacy-save"),
    };
    Ok((live, chains))
}

/// The sysctls the node checks judge.
fn facts(reader: &SysctlReader) -> Facts {
    Facts {
        bridge_nf_call_iptables: reader.read(Sysctl::BridgeNfCallIptables),
        bridge_nf_call_ip6tables: reader.read(Sysctl::BridgeNfCallIp6tables),
        ip_forward: reader.read(Sysctl::IpForward),
        ipv6_forwarding: reader.read(Sysctl::Ipv6Forwarding),
        route_localnet: reader.read(Sysctl::RouteLocalnet),
        nf_conntrack_tcp_be_liberal: reader.read(Sysctl::NfConntrackTcpBeLiberal),
        flannel_rules: FlannelRules::default(),
    }
}

/// Every UDP flow of `family` in `ct`.
fn flows(ct: &dyn Conntrack, family: IpFamily) -> kubenat::conntrack::Result<Vec<Flow>> {
    let mut flows = Vec::new();
    ct.for_each_udp_flow(family, &mut |flow| flows.push(flow))?;
    Ok(flows)
}

/// Runs `f` on a thread that entered network namespace `name` (`setns`), so the sockets it
/// opens belong to that namespace; this thread stays where it is.
fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = format!("/var/run/netns/{name}");
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| -> anyhow::Result<T> {
            let file = std::fs::File::open(&path).with_context(|| format!("--netns {name}: opening {path}"))?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("--netns {name}: entering the namespace"))?;
            Ok(f())
        });
        thread.join().map_err(|_| anyhow!("reading conntrack in --netns {name}: the thread panicked"))?
    })
}

/// The interface addresses of this namespace or `netns`, as the daemon probes them before
/// every sync (they decide which addresses NodePorts answer on).
pub fn interface_addresses(netns: Option<&str>) -> anyhow::Result<Vec<IpNet>> {
    let listed = match netns {
        Some(name) => in_netns(name, || NetlinkAddresses.addresses())?,
        None => NetlinkAddresses.addresses(),
    };
    listed.context("listing the interface addresses")
}

/// Where to ask the daemon on this node: its `healthzBindAddress`, with an unspecified
/// address replaced by loopback; `None` when it is not an address with a port.
pub fn health_address(bind: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = bind.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    (addr.port() != 0).then_some(addr)
}

/// `GET /livez` from the daemon at `addr` (a 503 carries the same JSON body).
fn daemon_health(addr: SocketAddr) -> std::io::Result<DaemonHealth> {
    let mut stream = TcpStream::connect_timeout(&addr, HEALTH_TIMEOUT)?;
    stream.set_read_timeout(Some(HEALTH_TIMEOUT))?;
    stream.set_write_timeout(Some(HEALTH_TIMEOUT))?;
    stream.write_all(format!("GET /livez HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.take(1 << 20).read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).map_err(std::io::Error::other)
}

/// Everything observable in this network namespace, or in `netns`; the daemon's health when
/// `health` is given and it answers there.
pub fn live(netns: Option<&str>, family: IpFamily, health: Option<SocketAddr>) -> anyhow::Result<Observed> {
    let exec = |backend| ExecIptables { backend, netns: netns.map(String::from), timeout: SAVE_TIMEOUT };
    let (rules, backends) = rules_of(&exec(Backend::Nft), &exec(Backend::Legacy), family)?;
    let reader = match netns {
        Some(name) => SysctlReader::Netns(name.to_string()),
        None => SysctlReader::Local("/".into()),
    };
    let listed = match netns {
        Some(name) => in_netns(name, || flows(&NetlinkConntrack::new(), family))?,
        None => flows(&NetlinkConntrack::new(), family),
    };
    let flows = match listed {
        Ok(flows) => Some(flows),
        Err(err) => {
            eprintln!("kubenat: note: conntrack not checked: {:#}", anyhow::Error::new(err));
            None
        }
    };
    let asked = health.map(|addr| match netns {
        Some(name) => in_netns(name, || daemon_health(addr)).and_then(|r| r.map_err(anyhow::Error::from)),
        None => Ok(daemon_health(addr)?),
    });
    let daemon = match asked {
        Some(Ok(health)) => Some(health),
        Some(Err(err)) => {
            eprintln!("kubenat: note: daemon health not checked: {err:#}");
            None
        }
        None => None,
    };
    Ok(Observed { rules, backends, flows, facts: Some(facts(&reader)), daemon })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubenat::apply::exec::RestoreOptions;
    use kubenat::apply::fake::FakeIptables;

    const KUBE: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-X - [0:0]\nCOMMIT\n";

    fn loaded(text: &str) -> FakeIptables {
        let ipt = FakeIptables::new();
        ipt.restore(IpFamily::V4, text, RestoreOptions { noflush: true, counters: false }).unwrap();
        ipt
    }

    #[test]
    fn health_addresses() {
        assert_eq!(health_address("0.0.0.0:10256"), Some("127.0.0.1:10256".parse().unwrap()));
        assert_eq!(health_address("[::]:10256"), Some("[::1]:10256".parse().unwrap()));
        assert_eq!(health_address("10.0.0.5:10256"), Some("10.0.0.5:10256".parse().unwrap()));
        assert_eq!(health_address("0.0.0.0:0"), None);
        assert_eq!(health_address(""), None);
    }

    #[test]
    fn reads_the_daemon_livez() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let n = stream.read(&mut request).unwrap();
            assert!(String::from_utf8_lossy(&request[..n]).starts_with("GET /livez HTTP/1.0\r\n"));
            let body = r#"{"lastUpdated":"2026-01-01T00:00:00Z","currentTime":"2026-01-01T00:02:00Z","healthy":false}"#;
            let head = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n";
            stream.write_all(format!("{head}{body}").as_bytes()).unwrap();
        });
        let health = daemon_health(addr).unwrap();
        server.join().unwrap();
        assert!(!health.healthy);
        assert_eq!(health.last_updated, "2026-01-01T00:00:00Z");
        assert!(daemon_health(addr).is_err(), "nobody listens any more");
    }

    #[test]
    fn the_backend_with_kube_proxy_chains_is_live() {
        let (nft, legacy) = (FakeIptables::new(), loaded(KUBE));
        let (rules, chains) = rules_of(&nft, &legacy, IpFamily::V4).unwrap();
        assert_eq!(chains, BackendChains { nft: Some(0), legacy: Some(2) });
        assert_eq!(kube_proxy_chains(&rules), 2);
        let (rules, chains) = rules_of(&loaded(KUBE), &loaded(KUBE), IpFamily::V4).unwrap();
        assert_eq!((chains.nft, chains.legacy, kube_proxy_chains(&rules)), (Some(2), Some(2), 2));
    }

    #[test]
    fn an_unreadable_backend_is_unknown_not_empty() {
        let missing =
            ExecIptables { backend: Backend::Nft, netns: Some("knt-no-such-netns-x".into()), timeout: SAVE_TIMEOUT };
        let (_, chains) = rules_of(&missing, &loaded(KUBE), IpFamily::V4).unwrap();
        assert_eq!(chains, BackendChains { nft: None, legacy: Some(2) });
        assert!(rules_of(&missing, &missing, IpFamily::V4).is_err());
    }
}
