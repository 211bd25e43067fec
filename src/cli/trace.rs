//! `kubenat trace`: where a new connection goes through a ruleset (DNAT targets with their
//! probabilities, masquerade, DROP/REJECT), read from an iptables-save or restore dump.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use kubenat::rules::parse;
use kubenat::rules::ruleset::Ruleset;

use super::common::RenderInput;
use super::render::with_jumps;
use kubenat::inspect::trace::{self, Packet, Trace, TraceEnv};
use kubenat::model::{IpFamily, Protocol};

/// Arguments of `kubenat trace`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// iptables-save output or iptables-restore input to trace through (`-` reads stdin).
    #[arg(long, value_name = "DUMP", conflicts_with = "objects")]
    rules: Option<PathBuf>,
    /// Source address of the packet (default with --from-node: the first --node-ip).
    #[arg(long, value_name = "IP")]
    src: Option<IpAddr>,
    /// Destination, e.g. `10.96.0.10:53/udp` or `[fd00::1]:80` (protocol defaults to tcp).
    #[arg(long, value_name = "IP:PORT[/PROTO]", value_parser = parse_destination)]
    dst: Destination,
    /// Render the rules from manifests instead of reading a dump (with the render flags;
    /// `--node-ip` / `--node-addresses` also say which addresses are local).
    #[command(flatten)]
    render: RenderInput,
    /// The packet is generated on the node (nat OUTPUT instead of PREROUTING).
    #[arg(long)]
    from_node: bool,
    /// The interface the packet arrives on (matches `-i`).
    #[arg(long, value_name = "NAME")]
    in_interface: Option<String>,
}

impl Args {
    /// The kube-proxy flags given.
    pub fn kube(&self) -> &kubenat::config::KubeProxyFlags {
        &self.render.kube
    }
}

/// The parsed `--dst` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// Address and port.
    pub addr: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// Parses `IP:PORT[/tcp|udp|sctp]`, IPv6 in brackets.
fn parse_destination(text: &str) -> Result<Destination, String> {
    const FORM: &str = "expected IP:PORT[/tcp|udp|sctp], e.g. 10.96.0.10:53/udp or [fd00::1]:80";
    let (addr, protocol) = match text.rsplit_once('/') {
        Some((addr, proto)) => {
            let protocol =
                Protocol::parse(proto).ok_or_else(|| format!("unknown protocol {proto:?} (tcp, udp or sctp)"))?;
            (addr, protocol)
        }
        None => (text, Protocol::Tcp),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| format!("{addr:?} is not an address with a port: {FORM}"))?;
    Ok(Destination { addr, protocol })
}

/// Reads the dump named by `--rules` (`-` = stdin) and parses it.
fn read_rules(path: &PathBuf) -> anyhow::Result<Ruleset> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("--rules -: reading stdin")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("--rules {}: reading", path.display()))?
    };
    parse::parse(&text).with_context(|| format!("--rules {}: not an iptables-save/restore dump", path.display()))
}

/// The packet and node the arguments describe.
fn packet_and_env(args: &Args, extra_local: &[IpAddr]) -> anyhow::Result<(Packet, TraceEnv)> {
    let mut local_ips: Vec<IpAddr> = args.render.kube.node_ip.clone();
    local_ips.extend(args.render.node_addresses.iter().map(|n| n.addr()));
    local_ips.extend(extra_local.iter().copied());
    local_ips.dedup();
    let src = match (args.src, args.from_node, local_ips.first()) {
        (Some(src), _, _) => src,
        (None, true, Some(ip)) => *ip,
        (None, true, None) => bail!("--src is required (or give --node-ip with --from-node)"),
        (None, false, _) => bail!("--src is required"),
    };
    if IpFamily::of(&src) != IpFamily::of(&args.dst.addr.ip()) {
        bail!("--src {src} and --dst {} are of different IP families", args.dst.addr);
    }
    if let Some(name) = &args.in_interface {
        if name.is_empty() || name.len() > 15 || !name.chars().all(|c| c.is_ascii_graphic() && c != '/') {
            bail!("--in-interface {name:?} is not an interface name");
        }
    }
    let mut packet = Packet::new(src, args.dst.addr, args.dst.protocol);
    packet.from_node = args.from_node;
    packet.in_interface = args.in_interface.clone();
    Ok((packet, TraceEnv { local_ips }))
}

/// Traces the packet the arguments describe through `ruleset`, wherever the ruleset came from.
pub fn trace_ruleset(ruleset: &Ruleset, args: &Args, extra_local: &[IpAddr]) -> anyhow::Result<Trace> {
    let (packet, env) = packet_and_env(args, extra_local)?;
    Ok(trace::trace(ruleset, &packet, &env))
}

/// Runs `kubenat trace`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (ruleset, node_ips) = match &args.rules {
        Some(path) => (read_rules(path)?, Vec::new()),
        None if !args.render.objects.is_empty() => {
            let prepared = args.render.prepare()?;
            let ruleset = with_jumps(prepared.ruleset(), &prepared.jumps());
            (ruleset, prepared.node.node_ips)
        }
        None => {
            bail!("give --rules DUMP (an iptables-save or iptables-restore text, `-` for stdin) or --objects PATH…")
        }
    };
    let result = trace_ruleset(&ruleset, &args, &node_ips)?;
    print!("{result}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("trace").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn destinations() {
        let d = parse_destination("10.96.0.10:53/udp").unwrap();
        assert_eq!((d.addr.to_string(), d.protocol), ("10.96.0.10:53".into(), Protocol::Udp));
        let d = parse_destination("[fd00::1]:80").unwrap();
        assert_eq!((d.addr.to_string(), d.protocol), ("[fd00::1]:80".into(), Protocol::Tcp));
        assert_eq!(parse_destination("[fd00::1]:80/SCTP").unwrap().protocol, Protocol::Sctp);
        assert!(parse_destination("10.96.0.10").unwrap_err().contains("IP:PORT"));
        assert!(parse_destination("10.96.0.10:99999").is_err());
        assert!(parse_destination("10.96.0.10:80/icmp").unwrap_err().contains("icmp"));
    }

    #[test]
    fn bad_values_name_their_flag() {
        let err = args(&["--rules", "x", "--dst", "nope"]).unwrap_err().to_string();
        assert!(err.contains("--dst"), "{err}");
        let err = args(&["--rules", "x", "--src", "1.2.3", "--dst", "1.1.1.1:80"]).unwrap_err().to_string();
        assert!(err.contains("--src"), "{err}");
        let err = args(&["--dst", "1.1.1.1:80", "--node-ip", "a.b"]).unwrap_err().to_string();
        assert!(err.contains("--node-ip"), "{err}");
    }

    #[test]
    fn packet_from_arguments() {
        let a = args(&["--dst", "10.96.0.1:443", "--node-ip", "192.168.1.10,10.0.0.1", "--from-node"]).unwrap();
        let (packet, env) = packet_and_env(&a, &[]).unwrap();
        assert_eq!(packet.src, "192.168.1.10".parse::<IpAddr>().unwrap());
        assert!(packet.from_node);
        assert_eq!(env.local_ips.len(), 2);

        let a = args(&["--dst", "10.96.0.1:443"]).unwrap();
        assert!(packet_and_env(&a, &[]).unwrap_err().to_string().contains("--src"));
        let a = args(&["--src", "fd00::1", "--dst", "10.96.0.1:443"]).unwrap();
        assert!(packet_and_env(&a, &[]).unwrap_err().to_string().contains("families"));
        let a = args(&["--src", "10.0.0.1", "--dst", "10.96.0.1:443", "--in-interface", "bad name"]).unwrap();
        assert!(packet_and_env(&a, &[]).unwrap_err().to_string().contains("--in-interface"));
    }

    #[test]
    fn traces_a_dump() {
        let dump = "*nat\n:PREROUTING ACCEPT [0:0]\n\
                    -A PREROUTING -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 10.244.0.2:6443\nCOMMIT\n";
        let ruleset = parse::parse(dump).unwrap();
        let a = args(&["--src", "10.244.0.9", "--dst", "10.96.0.1:443"]).unwrap();
        let t = trace_ruleset(&ruleset, &a, &[]).unwrap();
        assert!(t.to_string().starts_with("10.244.0.2:6443 p=1.000 masquerade=no via nat/PREROUTING"), "{t}");
    }
}
