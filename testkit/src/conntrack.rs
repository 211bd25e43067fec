//! The `conntrack` CLI as the real-kernel tests' independent witness: insert flows
//! (`conntrack -I`) and read the table back (`conntrack -L`), inside a test's namespace.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::netns::NetNs;

/// One entry as `conntrack -L` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    /// `udp`, `tcp`, …
    pub proto: String,
    /// Original source.
    pub orig_src: SocketAddr,
    /// Original destination.
    pub orig_dst: SocketAddr,
    /// Reply source.
    pub reply_src: SocketAddr,
}

/// `conntrack -L -f FAMILY` (`ipv4` or `ipv6`) inside `ns`, sorted.
pub fn list(ns: &NetNs, family: &str) -> Vec<Listed> {
    let out = ns.run_ok(&["conntrack", "-L", "-f", family]);
    let mut flows: Vec<Listed> = out.lines().filter_map(parse).collect();
    flows.sort();
    flows
}

/// `udp 17 29 src=A dst=B sport=P dport=Q [UNREPLIED] src=C dst=D sport=R dport=S …`.
pub fn parse(line: &str) -> Option<Listed> {
    let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in line.split_whitespace().filter_map(|t| t.split_once('=')) {
        values.entry(k).or_default().push(v);
    }
    let get = |k: &str, i: usize| values.get(k).and_then(|v| v.get(i)).copied();
    let addr = |ip: &str, port: &str| Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?));
    Some(Listed {
        proto: line.split_whitespace().next()?.to_string(),
        orig_src: addr(get("src", 0)?, get("sport", 0)?)?,
        orig_dst: addr(get("dst", 0)?, get("dport", 0)?)?,
        reply_src: addr(get("src", 1)?, get("sport", 1)?)?,
    })
}

/// Inserts one flow `src → dst` of `proto` (`udp`/`tcp`) into `ns`'s table with
/// `conntrack -I`; `reply_src` makes it look DNATed (`None`: the reply comes from `dst`).
pub fn insert(ns: &NetNs, proto: &str, src: &str, dst: &str, reply_src: Option<&str>) {
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().expect("src"), dst.parse().expect("dst"));
    let reply: SocketAddr = reply_src.map_or(dst, |r| r.parse().expect("reply src"));
    let (s, d, r) = (src.ip().to_string(), dst.ip().to_string(), reply.ip().to_string());
    let (sp, dp, rp) = (src.port().to_string(), dst.port().to_string(), reply.port().to_string());
    // The family follows from the addresses (`-I` refuses `-f`).
    let mut argv = vec!["conntrack", "-I", "-p", proto, "-s", &s, "-d", &d, "--sport", &sp];
    argv.extend(["--dport", &dp, "--reply-src", &r, "--reply-dst", &s, "--reply-port-src", &rp]);
    argv.extend(["--reply-port-dst", &sp, "--timeout", "300"]);
    if proto == "tcp" {
        argv.extend(["--state", "ESTABLISHED"]);
    }
    ns.run_ok(&argv);
}
