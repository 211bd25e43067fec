//! Behaviour tests: what the rendered rules *do*, independent of how they are spelled. Each
//! scenario in `fixtures/scenarios/` is rendered by the real binary, parsed back, and packets are
//! walked through it with the tracer: `(src, dst, proto) → endpoints with probabilities |
//! REJECT | DROP | no match`, plus whether the packet is masqueraded.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;

use kubenat::inspect::trace::{trace, Packet, TraceEnv, Verdict};
use kubenat::model::Protocol;
use kubenat::rules::parse;
use kubenat::rules::ruleset::Ruleset;

const NODE_IP: &str = "192.168.1.10";
const POD: &str = "10.244.1.20";
const OUTSIDE: &str = "203.0.113.99";

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// DNAT to these endpoints with these probabilities.
    Endpoints(&'static [(&'static str, f64)]),
    Reject,
    Drop,
    /// No service rule matched; the packet continues untouched.
    NoMatch,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    proto: Protocol,
    from_node: bool,
    expect: Expect,
    /// Expected masquerade decision for every outcome (None: not checked).
    masq: Option<bool>,
}

const fn case(name: &'static str, src: &'static str, dst: &'static str, expect: Expect, masq: Option<bool>) -> Case {
    Case { name, src, dst, proto: Protocol::Tcp, from_node: false, expect, masq }
}

const fn udp(mut c: Case) -> Case {
    c.proto = Protocol::Udp;
    c
}

const fn node(mut c: Case) -> Case {
    c.from_node = true;
    c
}

const THIRD: f64 = 1.0 / 3.0;
const WEB3: &[(&str, f64)] = &[("10.244.1.5:8080", THIRD), ("10.244.2.7:8080", THIRD), ("10.244.3.9:8080", THIRD)];
const WEB2: &[(&str, f64)] = &[("10.244.1.5:8080", 0.5), ("10.244.2.7:8080", 0.5)];
const INGRESS3: &[(&str, f64)] = &[("10.244.1.5:8080", THIRD), ("10.244.1.6:8080", THIRD), ("10.244.2.7:8080", THIRD)];
const INGRESS_LOCAL: &[(&str, f64)] = &[("10.244.1.5:8080", 0.5), ("10.244.1.6:8080", 0.5)];

fn render(scenario: &str, ipv6: bool) -> Ruleset {
    let dir = Path::new("fixtures/scenarios").join(scenario);
    let mut args = vec![
        "render".to_string(),
        "--objects".into(),
        dir.join("manifests.yaml").display().to_string(),
        "fixtures/scenarios/common-node.yaml".into(),
        "--jumps".into(),
    ];
    let extra = std::fs::read_to_string(dir.join("args")).expect("args");
    args.extend(extra.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
    if ipv6 {
        args.push("--ip-family=ipv6".into());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kubenat")).args(&args).output().expect("run kubenat");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse::parse(&String::from_utf8_lossy(&out.stdout)).expect("rendered rules parse")
}

fn run(scenario: &str, ipv6: bool, local_ips: &[&str], cases: &[Case]) {
    let rules = render(scenario, ipv6);
    let env = TraceEnv { local_ips: local_ips.iter().map(|ip| ip.parse().expect("ip")).collect() };
    for c in cases {
        let src: IpAddr = c.src.parse().expect("src");
        let dst: SocketAddr = c.dst.parse().expect("dst");
        let mut packet = Packet::new(src, dst, c.proto);
        packet.from_node = c.from_node;
        let t = trace(&rules, &packet, &env);
        let ctx = format!("{scenario}: {}: {} -> {} {:?}\n{t}", c.name, c.src, c.dst, c.proto);
        match c.expect {
            Expect::Endpoints(expected) => {
                let got = t.endpoints();
                let want: BTreeMap<SocketAddr, f64> =
                    expected.iter().map(|(a, p)| (a.parse().expect("endpoint"), *p)).collect();
                assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{ctx}");
                for (addr, p) in &want {
                    assert!((got[addr] - p).abs() < 1e-6, "{ctx}\n{addr}: got p={} want {p}", got[addr]);
                }
            }
            Expect::Reject => assert!(t.is_reject(), "{ctx}"),
            Expect::Drop => assert!(t.is_drop(), "{ctx}"),
            Expect::NoMatch => {
                assert!(t.outcomes.iter().all(|o| matches!(o.verdict, Verdict::Accept)), "{ctx}");
            }
        }
        if let Some(masq) = c.masq {
            for o in &t.outcomes {
                assert_eq!(o.masquerade, masq, "{ctx}\noutcome {o}");
            }
        }
    }
}

#[test]
fn clusterip_multi_endpoint() {
    run(
        "clusterip-multi-endpoint",
        false,
        &[NODE_IP],
        &[
            case("pod to cluster IP", POD, "10.96.100.10:80", Expect::Endpoints(WEB3), Some(false)),
            case("off-cluster source is masqueraded", OUTSIDE, "10.96.100.10:80", Expect::Endpoints(WEB3), Some(true)),
            case("wrong port", POD, "10.96.100.10:81", Expect::NoMatch, Some(false)),
            udp(case("wrong protocol", POD, "10.96.100.10:80", Expect::NoMatch, Some(false))),
            node(case("node to cluster IP", NODE_IP, "10.96.100.10:80", Expect::Endpoints(WEB3), Some(true))),
        ],
    );
}

#[test]
fn hairpin_is_masqueraded_only_towards_itself() {
    let rules = render("clusterip-multi-endpoint", false);
    let env = TraceEnv { local_ips: vec![NODE_IP.parse().expect("ip")] };
    let packet = Packet::new("10.244.1.5".parse().expect("ip"), "10.96.100.10:80".parse().expect("dst"), Protocol::Tcp);
    let t = trace(&rules, &packet, &env);
    for o in &t.outcomes {
        let to_self = matches!(o.verdict, Verdict::Dnat(a) if a.ip().to_string() == "10.244.1.5");
        assert_eq!(o.masquerade, to_self, "{t}");
    }
    assert_eq!(t.endpoints().len(), 3);
}

#[test]
fn multi_port_named_and_unnamed() {
    let dns = &[("10.244.1.3:53", 0.5), ("10.244.2.3:53", 0.5)];
    run(
        "multi-port",
        false,
        &[NODE_IP],
        &[
            udp(case("dns over udp", POD, "10.96.0.10:53", Expect::Endpoints(dns), Some(false))),
            case("dns over tcp", POD, "10.96.0.10:53", Expect::Endpoints(dns), Some(false)),
            case(
                "metrics",
                POD,
                "10.96.0.10:9153",
                Expect::Endpoints(&[("10.244.1.3:9153", 0.5), ("10.244.2.3:9153", 0.5)]),
                None,
            ),
            case("unnamed port", POD, "10.96.200.20:5432", Expect::Endpoints(&[("10.244.2.40:5432", 1.0)]), None),
        ],
    );
}

#[test]
fn no_endpoints_are_rejected() {
    run(
        "no-endpoints",
        false,
        &[NODE_IP],
        &[
            case("cluster IP", POD, "10.96.200.20:5432", Expect::Reject, None),
            case("named port cluster IP", POD, "10.96.50.5:80", Expect::Reject, None),
            case("external IP", OUTSIDE, "203.0.113.50:80", Expect::Reject, None),
            case("node port", OUTSIDE, "192.168.1.10:30500", Expect::Reject, None),
        ],
    );
}

#[test]
fn node_ports() {
    run(
        "nodeport",
        false,
        &[NODE_IP],
        &[
            case("external to NodePort", OUTSIDE, "192.168.1.10:30080", Expect::Endpoints(WEB2), Some(true)),
            udp(case(
                "external to UDP NodePort",
                OUTSIDE,
                "192.168.1.10:30090",
                Expect::Endpoints(&[("10.244.1.5:9090", 0.5), ("10.244.2.7:9090", 0.5)]),
                Some(true),
            )),
            case("pod to NodePort on the node IP", POD, "192.168.1.10:30080", Expect::Endpoints(WEB2), Some(true)),
            node(case("localhost NodePort", "127.0.0.1", "127.0.0.1:30080", Expect::Endpoints(WEB2), Some(true))),
            case("unused port", OUTSIDE, "192.168.1.10:30081", Expect::NoMatch, None),
            case("not a local address", OUTSIDE, "192.168.1.11:30080", Expect::NoMatch, None),
        ],
    );
}

#[test]
fn external_ips() {
    run(
        "external-ips",
        false,
        &[NODE_IP],
        &[
            case("outside to external IP", OUTSIDE, "203.0.113.10:80", Expect::Endpoints(WEB2), Some(true)),
            case("pod to external IP", POD, "203.0.113.11:80", Expect::Endpoints(WEB2), Some(true)),
            case("other port", OUTSIDE, "203.0.113.10:443", Expect::NoMatch, None),
        ],
    );
}

#[test]
fn load_balancer_and_source_ranges() {
    let shop = &[("10.244.1.5:8443", 0.5), ("10.244.2.7:8443", 0.5)];
    run(
        "loadbalancer-source-ranges",
        false,
        &[NODE_IP],
        &[
            case("allowed source", "198.51.100.7", "198.18.0.1:443", Expect::Endpoints(shop), Some(true)),
            case("second LB IP, allowed", "198.51.100.7", "198.18.0.2:443", Expect::Endpoints(shop), Some(true)),
            case("source outside the ranges", OUTSIDE, "198.18.0.1:443", Expect::Drop, None),
            case("NodePort bypasses source ranges", OUTSIDE, "192.168.1.10:31443", Expect::Endpoints(shop), Some(true)),
            case("proxy-mode ingress IP not captured", OUTSIDE, "198.18.0.3:443", Expect::NoMatch, None),
            case(
                "LB without ranges",
                OUTSIDE,
                "198.18.0.9:80",
                Expect::Endpoints(&[("10.244.2.9:8080", 1.0)]),
                Some(true),
            ),
            node(case("node inside a range", NODE_IP, "198.18.0.1:443", Expect::Endpoints(shop), Some(true))),
        ],
    );
}

#[test]
fn session_affinity_rules_are_history_dependent() {
    let rules = render("session-affinity", false);
    let env = TraceEnv { local_ips: vec![NODE_IP.parse().expect("ip")] };
    let packet = Packet::new(POD.parse().expect("ip"), "10.96.7.7:80".parse().expect("dst"), Protocol::Tcp);
    let t = trace(&rules, &packet, &env);
    assert_eq!(t.endpoints().len(), 2, "{t}");
    assert!(t.outcomes.iter().all(|o| o.affinity_checked), "{t}");
}

#[test]
fn external_traffic_policy_local() {
    run(
        "etp-local",
        false,
        &[NODE_IP],
        &[
            case(
                "outside to LB keeps source, local only",
                OUTSIDE,
                "198.18.0.80:80",
                Expect::Endpoints(INGRESS_LOCAL),
                Some(false),
            ),
            case("outside to NodePort", OUTSIDE, "192.168.1.10:30800", Expect::Endpoints(INGRESS_LOCAL), Some(false)),
            case("outside to external IP", OUTSIDE, "203.0.113.80:80", Expect::Endpoints(INGRESS_LOCAL), Some(false)),
            case(
                "pod to LB short-circuits to Cluster",
                POD,
                "198.18.0.80:80",
                Expect::Endpoints(INGRESS3),
                Some(false),
            ),
            node(case("node to external IP", NODE_IP, "203.0.113.80:80", Expect::Endpoints(INGRESS3), Some(true))),
            case("pod to cluster IP", POD, "10.96.80.80:80", Expect::Endpoints(INGRESS3), Some(false)),
        ],
    );
}

#[test]
fn external_traffic_policy_local_without_local_endpoints() {
    run(
        "etp-local-no-local-endpoints",
        false,
        &[NODE_IP],
        &[
            case("outside to LB is dropped", OUTSIDE, "198.18.0.80:80", Expect::Drop, None),
            case("outside to NodePort is dropped", OUTSIDE, "192.168.1.10:30800", Expect::Drop, None),
            case("pod to LB still works", POD, "198.18.0.80:80", Expect::Endpoints(INGRESS3), Some(false)),
            case("pod to cluster IP", POD, "10.96.80.80:80", Expect::Endpoints(INGRESS3), Some(false)),
        ],
    );
}

#[test]
fn internal_traffic_policy_local() {
    run(
        "itp-local",
        false,
        &[NODE_IP],
        &[
            case("no local endpoint: dropped", POD, "10.96.9.9:9100", Expect::Drop, None),
            udp(case(
                "local endpoint only",
                POD,
                "10.96.0.53:53",
                Expect::Endpoints(&[("10.244.1.5:53", 1.0)]),
                Some(false),
            )),
        ],
    );
}

#[test]
fn terminating_fallback_and_zone_hints() {
    run(
        "terminating-fallback",
        false,
        &[NODE_IP],
        &[case(
            "only serving terminating endpoints",
            POD,
            "10.96.11.11:80",
            Expect::Endpoints(&[("10.244.1.5:8080", 0.5), ("10.244.3.9:8080", 0.5)]),
            Some(false),
        )],
    );
    run(
        "zone-hints",
        false,
        &[NODE_IP],
        &[case(
            "only endpoints hinted for zone-a",
            POD,
            "10.96.12.12:80",
            Expect::Endpoints(&[("10.244.1.5:8080", 0.5), ("10.244.4.2:8080", 0.5)]),
            Some(false),
        )],
    );
}

#[test]
fn prefer_same_node_hints() {
    run(
        "prefer-same-node",
        false,
        &[NODE_IP],
        &[
            udp(case(
                "every endpoint has node hints: only this node's",
                POD,
                "10.96.13.13:53",
                Expect::Endpoints(&[("10.244.1.5:5353", 1.0)]),
                Some(false),
            )),
            udp(case(
                "one endpoint lacks node hints: zone hints instead",
                POD,
                "10.96.13.14:53",
                Expect::Endpoints(&[("10.244.1.6:5353", 0.5), ("10.244.2.8:5353", 0.5)]),
                Some(false),
            )),
        ],
    );
}

#[test]
fn masquerade_all_and_flannel_cluster_cidr() {
    run(
        "masquerade-all",
        false,
        &[NODE_IP],
        &[case("pod traffic masqueraded too", POD, "10.96.100.10:80", Expect::Endpoints(WEB3), Some(true))],
    );
    run(
        "flannel-subnet-env",
        false,
        &[NODE_IP],
        &[
            case("flannel pod", "10.42.1.20", "10.96.100.10:80", Expect::Endpoints(WEB2), Some(false)),
            case("outside the flannel network", "10.244.1.20", "10.96.100.10:80", Expect::Endpoints(WEB2), Some(true)),
        ],
    );
}

#[test]
fn dual_stack_ipv6() {
    run(
        "dual-stack",
        true,
        &["fd00:192:168:1::10"],
        &[
            case(
                "v6 pod to v6 cluster IP",
                "fd00:10:244:1::20",
                "[fd00:10:96::100]:80",
                Expect::Endpoints(&[("[fd00:10:244:1::5]:8080", 0.5), ("[fd00:10:244:2::7]:8080", 0.5)]),
                Some(false),
            ),
            case(
                "v6-only service without endpoints",
                "fd00:10:244:1::20",
                "[fd00:10:96::200]:80",
                Expect::Reject,
                None,
            ),
            case(
                "v6 NodePort",
                "2001:db8::99",
                "[fd00:192:168:1::10]:30080",
                Expect::Endpoints(&[("[fd00:10:244:1::5]:8080", 0.5), ("[fd00:10:244:2::7]:8080", 0.5)]),
                Some(true),
            ),
        ],
    );
    run(
        "dual-stack",
        false,
        &[NODE_IP],
        &[case("v4 side", POD, "10.96.100.10:80", Expect::Endpoints(WEB2), Some(false))],
    );
}
