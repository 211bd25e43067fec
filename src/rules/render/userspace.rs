//! Legacy userspace proxy mode (kube-proxy ≤ 1.25, `--proxy-mode=userspace`): "portal" rules
//! that steer service traffic to a local proxy socket per service port.
//!
//! Chains: nat `KUBE-PORTALS-CONTAINER` (from PREROUTING), `KUBE-PORTALS-HOST` (from OUTPUT),
//! `KUBE-NODEPORT-CONTAINER` / `KUBE-NODEPORT-HOST` (same, restricted to local destinations),
//! and filter `KUBE-NODEPORT-NON-LOCAL` (from INPUT, for default-deny firewalls).
//!
//! Rules are written in iptables-save argument order (`-d ip/32 -p tcp -m comment … -m tcp
//! --dport …`), not in the order upstream passed them to `iptables -C`: old kube-proxy fell back
//! to grepping iptables-save output, so the save form is the one that matters.
//!
//! Per service port, in upstream's `openPortal` order: the ClusterIP portal, each externalIP
//! portal, each LoadBalancer ingress portal, then the NodePort. Services without endpoints
//! still get every portal: the userspace proxier opened portals from Service objects alone and
//! closed accepted connections when there was no backend (clients see connect-then-close).

use std::net::{IpAddr, SocketAddr};

use crate::model::{ClusterState, NodeConfig, PortPlan, Protocol};
use crate::rules::ruleset::{Arg, ChainName, Rule, RuleBuilder, RuleOp, Ruleset, Table, TableName};

use super::JumpRule;

/// nat: traffic arriving from pods/bridge/outside to a portal IP.
pub const KUBE_PORTALS_CONTAINER: &str = "KUBE-PORTALS-CONTAINER";
/// nat: locally generated traffic to a portal IP.
pub const KUBE_PORTALS_HOST: &str = "KUBE-PORTALS-HOST";
/// nat: arriving traffic to a NodePort.
pub const KUBE_NODEPORT_CONTAINER: &str = "KUBE-NODEPORT-CONTAINER";
/// nat: locally generated traffic to a NodePort.
pub const KUBE_NODEPORT_HOST: &str = "KUBE-NODEPORT-HOST";
/// filter: accepts new connections to proxy ports that NodePorts redirect to.
pub const KUBE_NODEPORT_NON_LOCAL: &str = "KUBE-NODEPORT-NON-LOCAL";

const PORTALS_COMMENT: &str = "handle ClusterIPs; NOTE: this must be before the NodePort rules";
const NODEPORTS_COMMENT: &str = "handle service NodePorts; NOTE: this must be the last rule in the chain";
const NON_LOCAL_COMMENT: &str = "Ensure that non-local NodePort traffic can flow";

/// `ip/32` or `ip/128`, as old kube-proxy's `ToCIDR` wrote destinations.
fn to_cidr(ip: IpAddr) -> String {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    format!("{ip}/{bits}")
}

/// `[-d ip/len] -p proto -m comment --comment C -m proto --dport port`
fn portal(chain: &'static str, dst: Option<IpAddr>, proto: Protocol, comment: &str, port: u16) -> RuleBuilder {
    let mut rule = Rule::append(&ChainName::fixed(chain));
    if let Some(ip) = dst {
        rule = rule.arg(Arg::new("-d", to_cidr(ip)));
    }
    rule.arg(Arg::new("-p", proto.as_str())).comment(comment).module(proto.as_str()).dport(port)
}

fn physdev_not_in(rule: RuleBuilder) -> RuleBuilder {
    rule.module("physdev").arg(Arg::bare("--physdev-is-in").negate())
}

/// Where the proxy listens and how each kind of traffic reaches it.
struct Targets {
    bind: IpAddr,
    /// DNAT destination for locally generated traffic (REDIRECT/DNAT to 127.0.0.1 misbehaved).
    host: IpAddr,
}

impl Targets {
    /// CONTAINER chains: REDIRECT when bound to any address, else DNAT to the bind address.
    fn container(&self, rule: RuleBuilder, port: u16) -> Rule {
        if self.bind.is_unspecified() {
            rule.jump_with("REDIRECT", [Arg::new("--to-ports", port.to_string())])
        } else {
            Self::dnat(rule, self.bind, port)
        }
    }

    /// HOST chains: always DNAT to the host address.
    fn host(&self, rule: RuleBuilder, port: u16) -> Rule {
        Self::dnat(rule, self.host, port)
    }

    fn dnat(rule: RuleBuilder, ip: IpAddr, port: u16) -> Rule {
        rule.jump_with("DNAT", [Arg::new("--to-destination", SocketAddr::new(ip, port).to_string())])
    }
}

/// Renders the userspace portal rules (nat, then filter) for `node.family`.
///
/// `host_ip` is the node's primary address, used for the HOST chains' DNAT when `bind` is
/// unspecified (0.0.0.0 or ::); when bound to a specific address the HOST chains DNAT to `bind`,
/// as upstream's `iptablesHostPortalArgs` did. Service ports missing from `plan`, or without a
/// ClusterIP of the rendered family, get no rules.
pub fn render_portals(
    state: &ClusterState,
    node: &NodeConfig,
    plan: &PortPlan,
    bind: IpAddr,
    host_ip: IpAddr,
) -> Ruleset {
    let family = node.family;
    let targets = Targets { bind, host: if bind.is_unspecified() { host_ip } else { bind } };
    let mut nat = Table::new(TableName::Nat);
    for chain in [KUBE_PORTALS_CONTAINER, KUBE_PORTALS_HOST, KUBE_NODEPORT_CONTAINER, KUBE_NODEPORT_HOST] {
        nat.push_chain(&ChainName::fixed(chain));
    }
    let mut filter = Table::new(TableName::Filter);
    filter.push_chain(&ChainName::fixed(KUBE_NODEPORT_NON_LOCAL));

    for svc in state.services.values() {
        let (Some(cluster_ip), Some(proxy_port)) = (svc.cluster_ip(family), plan.get(&svc.name)) else {
            continue;
        };
        let proto = svc.name.protocol;
        let comment = svc.name.to_string();
        let at = |chain, ip| portal(chain, Some(ip), proto, &comment, svc.port);

        // ClusterIP and LoadBalancer ingress IPs: one CONTAINER and one HOST rule each.
        let plain = |nat: &mut Table, ip| {
            nat.rules.push(targets.container(at(KUBE_PORTALS_CONTAINER, ip), proxy_port));
            nat.rules.push(targets.host(at(KUBE_PORTALS_HOST, ip), proxy_port));
        };
        plain(&mut nat, cluster_ip);
        // externalIPs: not from a local bridge port, or addressed to this node; HOST only local.
        for &ip in svc.external_ips.iter().filter(|ip| family.contains(ip)) {
            nat.rules.push(targets.container(physdev_not_in(at(KUBE_PORTALS_CONTAINER, ip)), proxy_port));
            nat.rules.push(targets.container(at(KUBE_PORTALS_CONTAINER, ip).dst_type_local(), proxy_port));
            nat.rules.push(targets.host(at(KUBE_PORTALS_HOST, ip).dst_type_local(), proxy_port));
        }
        for &ip in svc.load_balancer_ips.iter().filter(|ip| family.contains(ip)) {
            plain(&mut nat, ip);
        }
        if let Some(node_port) = svc.node_port {
            let rule = portal(KUBE_NODEPORT_CONTAINER, None, proto, &comment, node_port);
            nat.rules.push(targets.container(rule, proxy_port));
            nat.rules.push(targets.host(portal(KUBE_NODEPORT_HOST, None, proto, &comment, node_port), proxy_port));
            let accept = portal(KUBE_NODEPORT_NON_LOCAL, None, proto, &comment, proxy_port)
                .module("state")
                .arg(Arg::new("--state", "NEW"))
                .jump("ACCEPT");
            filter.rules.push(accept);
        }
    }
    Ruleset { tables: vec![nat, filter] }
}

fn builtin_jump(table: TableName, from: &'static str, op: RuleOp, pre: &[Arg], comment: &str, to: &str) -> JumpRule {
    let mut rule = Rule::append(&ChainName::fixed(from)).args(pre.iter().cloned()).comment(comment).jump(to);
    rule.op = op;
    JumpRule { table, rule }
}

/// The five jumps from built-in chains, in upstream's `iptablesInit` order. The position is
/// carried in `rule.op` (so no `JumpRule` field is needed): the PORTALS jumps and the filter
/// INPUT jump are `Insert(Some(1))` (must precede everything, notably the NodePort jumps); the
/// NODEPORT jumps are `Append` (must be the last rule of PREROUTING/OUTPUT). Write them with
/// their own op; do not force them all to position 1.
pub fn userspace_jump_rules() -> Vec<JumpRule> {
    use TableName::{Filter, Nat};
    let first = RuleOp::Insert(Some(1));
    let local = [Arg::new("-m", "addrtype"), Arg::new("--dst-type", "LOCAL")];
    vec![
        builtin_jump(Nat, "PREROUTING", first, &[], PORTALS_COMMENT, KUBE_PORTALS_CONTAINER),
        builtin_jump(Nat, "OUTPUT", first, &[], PORTALS_COMMENT, KUBE_PORTALS_HOST),
        builtin_jump(Nat, "PREROUTING", RuleOp::Append, &local, NODEPORTS_COMMENT, KUBE_NODEPORT_CONTAINER),
        builtin_jump(Nat, "OUTPUT", RuleOp::Append, &local, NODEPORTS_COMMENT, KUBE_NODEPORT_HOST),
        builtin_jump(Filter, "INPUT", first, &[], NON_LOCAL_COMMENT, KUBE_NODEPORT_NON_LOCAL),
    ]
}

/// Adds `jumps` to `ruleset` with their own ops (restore input for an empty namespace).
pub fn with_userspace_jumps(mut ruleset: Ruleset, jumps: &[JumpRule]) -> Ruleset {
    for jump in jumps {
        ruleset.table_mut(jump.table).rules.push(jump.rule.clone());
    }
    ruleset
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpFamily, PortPlanError, ServicePort, ServicePortName};

    fn web() -> ServicePort {
        let name = ServicePortName {
            namespace: "default".into(),
            name: "web".into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        };
        ServicePort { node_port: Some(30080), ..ServicePort::new(name, vec!["10.96.100.10".parse().unwrap()], 80) }
    }

    fn state(svcs: Vec<ServicePort>) -> ClusterState {
        ClusterState { services: svcs.into_iter().map(|s| (s.name.clone(), s.into())).collect() }
    }

    /// The rules of every table, nat first, one per line (the save-like body, no headers).
    fn lines(state: &ClusterState, node: &NodeConfig, bind: &str, host: &str) -> Vec<String> {
        let plan = PortPlan(state.services.keys().map(|k| (k.clone(), 36467)).collect());
        let rs = render_portals(state, node, &plan, bind.parse().unwrap(), host.parse().unwrap());
        rs.tables.iter().flat_map(|t| t.rules.iter().map(ToString::to_string)).collect()
    }

    /// A rule as iptables-save prints it: like the restore form, but comments always quoted
    /// (the kernel test in tests/userspace_render.rs checks this against real iptables-save).
    fn save_line(rule: &Rule) -> String {
        let mut line = format!("-A {}", rule.chain);
        for arg in &rule.args {
            match arg.value() {
                Some(v) if arg.flag == "--comment" => line.push_str(&format!(" --comment \"{v}\"")),
                _ => line.push_str(&format!(" {arg}")),
            }
        }
        line
    }

    #[test]
    fn reference_example_is_byte_identical() {
        let expected = r#"-A KUBE-PORTALS-CONTAINER -d 10.96.100.10/32 -p tcp -m comment --comment "default/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 36467
-A KUBE-PORTALS-HOST -d 10.96.100.10/32 -p tcp -m comment --comment "default/web:http" -m tcp --dport 80 -j DNAT --to-destination 192.168.1.10:36467
-A KUBE-NODEPORT-CONTAINER -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080 -j REDIRECT --to-ports 36467
-A KUBE-NODEPORT-HOST -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080 -j DNAT --to-destination 192.168.1.10:36467
-A KUBE-NODEPORT-NON-LOCAL -p tcp -m comment --comment "default/web:http" -m tcp --dport 36467 -m state --state NEW -j ACCEPT"#;
        let state = state(vec![web()]);
        let plan = PortPlan(state.services.keys().map(|k| (k.clone(), 36467)).collect());
        let rs = render_portals(&state, &NodeConfig::default(), &plan, [0, 0, 0, 0].into(), [192, 168, 1, 10].into());
        let ours: Vec<String> = rs.tables.iter().flat_map(|t| t.rules.iter().map(save_line)).collect();
        assert_eq!(ours.join("\n"), expected);
        let rs = render_portals(&state, &NodeConfig::default(), &PortPlan::default(), [0; 4].into(), [0; 4].into());
        let declared: Vec<&str> = rs.tables.iter().flat_map(|t| t.chains.iter().map(|c| c.name.as_str())).collect();
        assert_eq!(
            declared,
            [
                KUBE_PORTALS_CONTAINER,
                KUBE_PORTALS_HOST,
                KUBE_NODEPORT_CONTAINER,
                KUBE_NODEPORT_HOST,
                KUBE_NODEPORT_NON_LOCAL
            ]
        );
        assert_eq!(rs.rule_count(), 0, "service ports without a planned proxy port get no rules");
    }

    #[test]
    fn specific_bind_address_uses_dnat_everywhere() {
        let got = lines(&state(vec![web()]), &NodeConfig::default(), "192.168.1.20", "192.168.1.10");
        assert!(got[0].ends_with("-j DNAT --to-destination 192.168.1.20:36467"), "{}", got[0]);
        assert!(got[1].ends_with("-j DNAT --to-destination 192.168.1.20:36467"), "{}", got[1]);
        assert!(got[2].ends_with("-j DNAT --to-destination 192.168.1.20:36467"), "{}", got[2]);
    }

    #[test]
    fn external_ips_get_physdev_and_local_rules() {
        let svc = ServicePort {
            node_port: None,
            external_ips: vec!["203.0.113.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
            ..web()
        };
        let got = lines(&state(vec![svc]), &NodeConfig::default(), "0.0.0.0", "192.168.1.10");
        let c = "-p tcp -m comment --comment default/web:http -m tcp --dport 80";
        assert_eq!(
            got[2..],
            [
                format!("-A KUBE-PORTALS-CONTAINER -d 203.0.113.7/32 {c} -m physdev ! --physdev-is-in -j REDIRECT --to-ports 36467"),
                format!("-A KUBE-PORTALS-CONTAINER -d 203.0.113.7/32 {c} -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 36467"),
                format!("-A KUBE-PORTALS-HOST -d 203.0.113.7/32 {c} -m addrtype --dst-type LOCAL -j DNAT --to-destination 192.168.1.10:36467"),
            ]
        );
    }

    #[test]
    fn load_balancer_ips_are_plain_portals() {
        let svc = ServicePort { load_balancer_ips: vec!["198.51.100.9".parse().unwrap()], ..web() };
        let got = lines(&state(vec![svc]), &NodeConfig::default(), "0.0.0.0", "192.168.1.10");
        let c = "-p tcp -m comment --comment default/web:http -m tcp --dport 80";
        assert_eq!(got[2], format!("-A KUBE-PORTALS-CONTAINER -d 198.51.100.9/32 {c} -j REDIRECT --to-ports 36467"));
        assert_eq!(
            got[3],
            format!("-A KUBE-PORTALS-HOST -d 198.51.100.9/32 {c} -j DNAT --to-destination 192.168.1.10:36467")
        );
        assert!(got[4].starts_with("-A KUBE-NODEPORT-CONTAINER "), "NodePort after the portals");
        assert_eq!(got.len(), 7);
    }

    #[test]
    fn ipv6_uses_128_and_bracketed_dnat() {
        let mut svc = web();
        svc.name.protocol = Protocol::Udp;
        svc.cluster_ips.push("fd00:96::10".parse().unwrap());
        let node = NodeConfig { family: IpFamily::V6, ..NodeConfig::default() };
        let got = lines(&state(vec![svc]), &node, "::", "fd00:192:168:1::10");
        let c = "-p udp -m comment --comment default/web:http -m udp --dport 80";
        assert_eq!(got[0], format!("-A KUBE-PORTALS-CONTAINER -d fd00:96::10/128 {c} -j REDIRECT --to-ports 36467"));
        let dnat = "-j DNAT --to-destination [fd00:192:168:1::10]:36467";
        assert_eq!(got[1], format!("-A KUBE-PORTALS-HOST -d fd00:96::10/128 {c} {dnat}"));
        assert_eq!(got.len(), 5);
        assert!(lines(&state(vec![web()]), &node, "::", "fd00::1").is_empty(), "no IPv6 ClusterIP, no portals");
    }

    #[test]
    fn port_plan_is_sequential_in_service_order() {
        let mut b = web();
        b.name.name = "api".into();
        let s = state(vec![web(), b.clone()]);
        let plan = PortPlan::sequential(&s, 36000).unwrap();
        assert_eq!(plan.get(&b.name), Some(36000));
        assert_eq!(plan.get(&web().name), Some(36001));
        assert_eq!(PortPlan::sequential(&s, 65535), Err(PortPlanError { start: 65535, needed: 2 }));
        assert!(PortPlan::sequential(&s, 65534).is_ok());
        assert!(PortPlan::sequential(&s, 0).is_err());
    }

    #[test]
    fn jump_rules_positions_and_comments() {
        let got: Vec<String> = userspace_jump_rules().iter().map(|j| format!("{} {}", j.table, j.rule)).collect();
        assert_eq!(
            got,
            [
                "nat -I PREROUTING 1 -m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" -j KUBE-PORTALS-CONTAINER",
                "nat -I OUTPUT 1 -m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" -j KUBE-PORTALS-HOST",
                "nat -A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment \"handle service NodePorts; NOTE: this must be the last rule in the chain\" -j KUBE-NODEPORT-CONTAINER",
                "nat -A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment \"handle service NodePorts; NOTE: this must be the last rule in the chain\" -j KUBE-NODEPORT-HOST",
                "filter -I INPUT 1 -m comment --comment \"Ensure that non-local NodePort traffic can flow\" -j KUBE-NODEPORT-NON-LOCAL",
            ]
        );
    }
}
