//! The tracer on odd, broken and less common rules: loops, depth, bad values, interfaces,
//! rule ordering, policies, IPv6, REDIRECT.

use super::{assert_endpoints, packet, run};
use crate::inspect::trace::testutil::rules;
use crate::inspect::trace::walk::{MAX_BRANCHES, MAX_DEPTH};
use crate::inspect::trace::{trace, Packet, TraceEnv, Verdict};
use crate::model::Protocol;

fn single_verdict(text: &str, p: &Packet) -> Verdict {
    let t = run(text, p);
    assert_eq!(t.outcomes.len(), 1, "{t}");
    t.outcomes[0].verdict.clone()
}

fn dnat(addr: &str) -> Verdict {
    Verdict::Dnat(addr.parse().unwrap())
}

#[test]
fn jump_loops_are_detected() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n\
                -A PREROUTING -j KUBE-A\n-A KUBE-A -j KUBE-B\n-A KUBE-B -j KUBE-A\n";
    let t = run(text, &packet("10.0.0.1", "10.96.0.1:80"));
    assert_eq!(t.outcomes.len(), 1, "{t}");
    let Verdict::Aborted { chain, reason } = &t.outcomes[0].verdict else { panic!("{t}") };
    assert_eq!(chain, "nat/KUBE-A");
    assert!(reason.contains("loop") && reason.contains("KUBE-B"), "{reason}");
    assert!(t.to_string().starts_with("ABORTED (jump loop"), "{t}");
}

#[test]
fn deep_nesting_is_cut_off() {
    let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j C0\n");
    for i in 0..MAX_DEPTH + 5 {
        text.push_str(&format!(":C{i} - [0:0]\n-A C{i} -j C{}\n", i + 1));
    }
    let t = run(&text, &packet("10.0.0.1", "10.96.0.1:80"));
    assert!(matches!(&t.outcomes[0].verdict, Verdict::Aborted { reason, .. } if reason.contains("deeper")), "{t}");
}

#[test]
fn branch_explosion_is_bounded_and_keeps_total_probability() {
    let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n");
    for i in 0..MAX_BRANCHES + 10 {
        let port = 1000 + i % 50_000;
        text.push_str(&format!(
            "-A PREROUTING -m statistic --mode random --probability 0.00001 -j DNAT --to-destination 10.1.0.1:{port}\n"
        ));
    }
    let t = run(&text, &packet("10.0.0.1", "10.96.0.1:80"));
    let total: f64 = t.outcomes.iter().map(|o| o.probability).sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
    assert!(t.outcomes.iter().any(|o| matches!(o.verdict, Verdict::Aborted { .. })));
}

#[test]
fn odd_rules_never_panic_and_are_noted() {
    let text = r#"
*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -d not-an-ip -j DROP
-A PREROUTING -s 10.0.0.0/99 -j DROP
-A PREROUTING -m statistic --mode random --probability abc -j DROP
-A PREROUTING -m statistic --mode nth --every 2 -j DROP
-A PREROUTING -m set --match-set foo dst -j DROP
-A PREROUTING -p tcp --dport http -j DROP
-A PREROUTING -o eth0 -j DROP
-A PREROUTING -m addrtype --dst-type BROADCAST -j DROP
-A PREROUTING -m mark --mark zz -j DROP
-A PREROUTING
-A PREROUTING -j
-A PREROUTING --dport
-A PREROUTING -j MARK --set-xmark zzz
-A PREROUTING -j MARK --weird 1
-A PREROUTING -j WEIRD
-A PREROUTING -j DNAT --to-destination garbage
-A PREROUTING -j REDIRECT --to-ports x
-A PREROUTING -j DNAT --to-destination 10.244.0.9:8080
"#;
    let t = run(text, &packet("10.0.0.1", "10.96.0.1:80"));
    assert_eq!(t.outcomes.len(), 1, "{t}");
    assert_eq!(t.outcomes[0].verdict, dnat("10.244.0.9:8080"), "{t}");
    for needle in [
        "not-an-ip",
        "10.0.0.0/99",
        "probability",
        "nth",
        "--match-set",
        "http",
        "-o",
        "BROADCAST",
        "mark \"zz\"",
        "MARK",
        "WEIRD",
        "DNAT",
        "REDIRECT",
    ] {
        assert!(t.notes.iter().any(|n| n.contains(needle)), "no note about {needle}:\n{t}");
    }
}

#[test]
fn interfaces_with_wildcards_and_negation() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n\
                -A PREROUTING -i veth+ -j DNAT --to-destination 10.0.0.1:1\n\
                -A PREROUTING ! -i eth0 -j DNAT --to-destination 10.0.0.2:2\n\
                -A PREROUTING -j DNAT --to-destination 10.0.0.3:3\n";
    let on = |iface: Option<&str>| {
        let mut p = packet("10.9.9.9", "10.96.0.1:80");
        p.in_interface = iface.map(str::to_string);
        single_verdict(text, &p)
    };
    assert_eq!(on(None), dnat("10.0.0.2:2"));
    assert_eq!(on(Some("veth12ab")), dnat("10.0.0.1:1"));
    assert_eq!(on(Some("eth0")), dnat("10.0.0.3:3"));
    assert_eq!(on(Some("cni0")), dnat("10.0.0.2:2"));
}

#[test]
fn inserts_deletes_and_gotos_follow_iptables_semantics() {
    let p = packet("10.9.9.9", "10.96.0.1:80");
    let inserted = "*nat\n:PREROUTING ACCEPT [0:0]\n\
                    -A PREROUTING -j DNAT --to-destination 10.0.0.1:1\n\
                    -I PREROUTING -j DNAT --to-destination 10.0.0.2:2\n";
    assert_eq!(single_verdict(inserted, &p), dnat("10.0.0.2:2"));

    let deleted = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-OLD - [0:0]\n\
                   -A KUBE-OLD -j DNAT --to-destination 10.0.0.9:9\n\
                   -A PREROUTING -j KUBE-OLD\n-A PREROUTING -j DNAT --to-destination 10.0.0.1:1\n-X KUBE-OLD\n";
    let t = run(deleted, &p);
    assert_eq!(t.outcomes[0].verdict, dnat("10.0.0.1:1"), "{t}");
    assert!(t.notes.iter().any(|n| n.contains("KUBE-OLD")), "{t}");

    let goto = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-A - [0:0]\n:KUBE-G - [0:0]\n\
                -A PREROUTING -j KUBE-A\n-A PREROUTING -j DNAT --to-destination 10.0.0.1:1\n\
                -A KUBE-A -g KUBE-G\n-A KUBE-A -j DNAT --to-destination 10.0.0.9:9\n";
    assert_eq!(single_verdict(goto, &p), dnat("10.0.0.1:1"));
}

#[test]
fn marks_set_and_tested_in_every_spelling() {
    // 0xff00 & 0xb0f0 = 0xb000, ^ 0x1 = 0xb001, ^ 0x4000 (set-xmark with a zero mask) = 0xf001.
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n\
                -A PREROUTING -j MARK --set-mark 0xff00/0xffff\n\
                -A PREROUTING -j MARK --and-mark 0xb0f0\n\
                -A PREROUTING -j MARK --xor-mark 0x1\n\
                -A PREROUTING -j MARK --set-xmark 0x4000/0x0\n\
                -A PREROUTING -m mark ! --mark 0x4000/0x4000 -j DROP\n\
                -A PREROUTING -m mark --mark 0xb001/0xffff -j DROP\n\
                -A PREROUTING -m mark --mark 0xf001 -m connmark --mark 0x1 -j DROP\n\
                -A PREROUTING -m mark --mark 0xf001 -m connmark --mark 0x0 -j DNAT --to-destination 10.0.0.1:1\n";
    assert_eq!(single_verdict(text, &packet("10.9.9.9", "10.96.0.1:80")), dnat("10.0.0.1:1"));
}

#[test]
fn chain_policy_drop_applies_when_nothing_accepts() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DNAT --to-destination 10.244.0.9:80\n\
                COMMIT\n*filter\n:FORWARD DROP [0:0]\nCOMMIT\n";
    let v = single_verdict(text, &packet("10.9.9.9", "10.96.0.1:80"));
    assert_eq!(v, Verdict::Drop { chain: "filter/FORWARD".into(), comment: Some("chain policy".into()) });
}

#[test]
fn dnat_state_is_visible_to_conntrack_matches() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n\
                -A PREROUTING -p tcp -d 10.96.0.1 --dport 80 -j DNAT --to-destination 192.168.1.10:10250\n\
                COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n\
                -A INPUT -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n";
    let t = run(text, &packet("10.244.1.1", "10.96.0.1:80"));
    assert_eq!(t.outcomes[0].verdict, dnat("192.168.1.10:10250"), "{t}");
    assert!(t.outcomes[0].chains.contains(&"filter/INPUT".into()), "{t}");
    let t = run(text, &packet("10.244.1.1", "192.168.1.10:22"));
    assert!(t.is_drop(), "{t}");
}

#[test]
fn redirect_and_multiport() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n\
                -A PREROUTING -p udp -m multiport --dports 53,5353:5360 -j REDIRECT --to-ports 15053\n";
    let mut p = packet("10.244.1.1", "10.96.0.10:5355");
    p.protocol = Protocol::Udp;
    let t = run(text, &p);
    assert_eq!(t.outcomes[0].verdict, Verdict::Redirect(15053));
    assert!(t.to_string().starts_with("REDIRECT to local port 15053 p=1.000 masquerade=no"), "{t}");
    p.dport = 80;
    assert!(run(text, &p).is_accept());
}

#[test]
fn ipv6_service_and_node_port() {
    let text = r#"
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-V6 - [0:0]
:KUBE-SEP-V6 - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SERVICES -d fd00:10:96::1/128 -p udp -m udp --dport 53 -j KUBE-SVC-V6
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p udp -m udp --dport 30053 -j KUBE-MARK-MASQ
-A KUBE-NODEPORTS -p udp -m udp --dport 30053 -j KUBE-SVC-V6
-A KUBE-SVC-V6 ! -s fd00:10:244::/56 -d fd00:10:96::1/128 -p udp -m udp --dport 53 -j KUBE-MARK-MASQ
-A KUBE-SVC-V6 -j KUBE-SEP-V6
-A KUBE-SEP-V6 -p udp -m udp -j DNAT --to-destination [fd00:10:244:1::7]:5353
"#;
    let env = TraceEnv { local_ips: vec!["fd00::10".parse().unwrap()] };
    let dns = |src: &str, dst: &str| {
        let mut p = packet(src, dst);
        p.protocol = Protocol::Udp;
        trace(&rules(text), &p, &env)
    };
    let t = dns("fd00:10:244:2::3", "[fd00:10:96::1]:53");
    assert_endpoints(&t, &[("[fd00:10:244:1::7]:5353", 1.0)]);
    assert!(!t.outcomes[0].masquerade, "{t}");
    let t = dns("2001:db8::1", "[fd00::10]:30053");
    assert_endpoints(&t, &[("[fd00:10:244:1::7]:5353", 1.0)]);
    assert!(t.outcomes[0].masquerade, "{t}");
}

#[test]
fn missing_tables_are_not_listed_as_visited() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DNAT --to-destination 10.0.0.1:1\n";
    let t = run(text, &packet("10.9.9.9", "10.96.0.1:80"));
    assert_eq!(t.outcomes[0].chains, ["nat/PREROUTING"]);
    assert!(t.notes.is_empty(), "{t}");
    let empty = run("", &packet("10.9.9.9", "10.96.0.1:80"));
    assert!(empty.is_accept(), "{empty}");
    assert!(empty.outcomes[0].chains.is_empty());
}
