//! A small hand-written kube-proxy-style ruleset (restore input, exactly the shapes kube-proxy
//! writes) for kernel tests: two services on one ClusterIP with two endpoints each, and a
//! service without endpoints. Independent of the renderer on purpose.

use std::net::Ipv4Addr;

/// ClusterIP of `default/web` (80/TCP) and `kube-system/dns` (53/UDP).
pub const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// ClusterIP of `default/empty` (80/TCP, 53/UDP), which has no endpoints (filter REJECT).
pub const NO_ENDPOINTS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// Endpoint port of `default/web` (TCP).
pub const WEB_TARGET_PORT: u16 = 8080;
/// Endpoint port of `kube-system/dns` (UDP).
pub const DNS_TARGET_PORT: u16 = 5353;

/// kube-proxy's restore input (no built-in jumps) for `default/web:http` 10.96.0.10:80/TCP and
/// `kube-system/dns:dns` 10.96.0.10:53/UDP, both with endpoints `a` and `b` (8080/TCP,
/// 5353/UDP), plus `default/empty` 10.96.0.11:80/TCP and :53/UDP without endpoints.
pub fn services(a: Ipv4Addr, b: Ipv4Addr) -> String {
    let mut text = String::from(
        r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-SERVICES -m comment --comment "default/empty:http has no endpoints" -m tcp -p tcp -d 10.96.0.11 --dport 80 -j REJECT
-A KUBE-SERVICES -m comment --comment "default/empty:dns has no endpoints" -m udp -p udp -d 10.96.0.11 --dport 53 -j REJECT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-WEB - [0:0]
:KUBE-SEP-WEB-A - [0:0]
:KUBE-SEP-WEB-B - [0:0]
:KUBE-SVC-DNS - [0:0]
:KUBE-SEP-DNS-A - [0:0]
:KUBE-SEP-DNS-B - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-WEB
-A KUBE-SERVICES -m comment --comment "kube-system/dns:dns cluster IP" -m udp -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-DNS
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
"#,
    );
    for (svc, chain, proto, port, target_port) in [
        ("default/web:http", "WEB", "tcp", 80, WEB_TARGET_PORT),
        ("kube-system/dns:dns", "DNS", "udp", 53, DNS_TARGET_PORT),
    ] {
        text += &format!(
            "-A KUBE-SVC-{chain} -m comment --comment \"{svc} cluster IP\" -m {proto} -p {proto} -d {CLUSTER_IP} --dport {port} ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n\
             -A KUBE-SVC-{chain} -m comment --comment \"{svc} -> {a}:{target_port}\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-{chain}-A\n\
             -A KUBE-SVC-{chain} -m comment --comment \"{svc} -> {b}:{target_port}\" -j KUBE-SEP-{chain}-B\n"
        );
        for (suffix, ip) in [("A", a), ("B", b)] {
            text += &format!(
                "-A KUBE-SEP-{chain}-{suffix} -m comment --comment {svc} -s {ip} -j KUBE-MARK-MASQ\n\
                 -A KUBE-SEP-{chain}-{suffix} -m comment --comment {svc} -m {proto} -p {proto} -j DNAT --to-destination {ip}:{target_port}\n"
            );
        }
    }
    text + "COMMIT\n"
}

/// The built-in jumps, written by hand the way kube-proxy inserts them.
pub const JUMPS: &str = r#"*filter
-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I FORWARD 1 -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-I OUTPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
COMMIT
*nat
-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
COMMIT
"#;
