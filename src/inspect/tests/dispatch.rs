use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use crate::inspect::diff::{diff, DiffOptions};
use crate::inspect::trace::{trace, Packet, TraceEnv, Verdict};
use crate::model::{
    build, ClusterState, Endpoint, IpFamily, NodeConfig, NodePortAddresses, Protocol, ServicePort, ServicePortName,
    ServicesDispatch,
};
use crate::rules::chain_names::{is_dispatch_chain, KUBE_NODEPORTS, KUBE_SERVICES};
use crate::rules::parse::parse;
use crate::rules::plan::{changed_chains, ChangeKind};
use crate::rules::render::dispatch::*;
use crate::rules::render::render;
use crate::rules::ruleset::{ChainName, Rule, Ruleset, Table, TableName, MAX_CHAIN_NAME_LEN};

/// A small deterministic generator (xorshift64*), so the tests need no seed handling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn node(family: IpFamily, dispatch: ServicesDispatch) -> NodeConfig {
    NodeConfig {
        node_ips: vec!["192.168.1.10".parse().unwrap()],
        local_addresses: vec!["192.168.1.10/24".parse().unwrap()],
        services_dispatch: dispatch,
        ..build::node(family)
    }
}

fn name(i: usize, port: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName {
        namespace: format!("ns{}", i % 7).into(),
        name: format!("svc-{i}").into(),
        port: port.into(),
        protocol,
    }
}

fn service(name: ServicePortName, ip: IpAddr, port: u16, endpoints: usize) -> ServicePort {
    let eps = (0..endpoints)
        .map(|e| {
            let addr = match ip {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 244, (e % 3) as u8, 10 + e as u8)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0x244, e as u16 % 3, 0, 0, 0, 10 + e as u16)),
            };
            Endpoint {
                node_name: Some(format!("node-{}", e % 2)),
                ..build::endpoint(SocketAddr::new(addr, 8080 + port % 7))
            }
        })
        .collect::<Vec<_>>();
    let mut svc = ServicePort::new(name, vec![ip], port);
    svc.endpoints = eps;
    svc.endpoints.sort_by_cached_key(|e| e.key());
    svc
}

fn random_v4(rng: &mut Rng) -> IpAddr {
    // Anywhere in 10.96.0.0/12, like the API server's allocator.
    IpAddr::V4(Ipv4Addr::from(0x0a60_0000 | (rng.next() as u32 & 0x000f_ffff)))
}

fn random_v6(rng: &mut Rng) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(0xfd00_0010_0096_0000_0000_0000_0000_0000u128 | (rng.next() as u128 & 0xf_ffff)))
}

/// `n` services at random addresses of `family`, one TCP port each, 2 endpoints.
fn cluster(n: usize, family: IpFamily, seed: u64) -> ClusterState {
    let mut rng = Rng(seed);
    let mut state = ClusterState::default();
    for i in 0..n {
        let ip = if family == IpFamily::V4 { random_v4(&mut rng) } else { random_v6(&mut rng) };
        let svc = service(name(i, "http", Protocol::Tcp), ip, 80, 2);
        state.services.insert(svc.name.clone(), svc.into());
    }
    state
}

fn nat(ruleset: &Ruleset) -> &Table {
    ruleset.table(TableName::Nat).expect("nat")
}

fn rules_of<'a>(ruleset: &'a Ruleset, chain: &'a str) -> Vec<&'a Rule> {
    nat(ruleset).chain_rules(chain).collect()
}

#[test]
fn few_services_stay_flat_byte_for_byte() {
    let state = cluster(LEAF_RULES, IpFamily::V4, 7);
    let flat = render(&state, &node(IpFamily::V4, ServicesDispatch::Flat));
    let tree = render(&state, &node(IpFamily::V4, ServicesDispatch::Tree));
    assert_eq!(flat.to_string(), tree.to_string());
}

#[test]
fn tree_shape_names_and_jumps() {
    let state = cluster(600, IpFamily::V4, 11);
    let tree = render(&state, &node(IpFamily::V4, ServicesDispatch::Tree));
    let nat = nat(&tree);
    let dispatch: Vec<&ChainName> =
        nat.chains.iter().map(|c| &c.name).filter(|n| is_dispatch_chain(n.as_str())).collect();
    assert!(dispatch.len() > 16, "600 services need more than one level: {} chains", dispatch.len());
    let declared: BTreeSet<&str> = nat.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(declared.len(), nat.chains.len(), "a chain is declared twice");
    for rule in &nat.rules {
        if let Some(target) = rule.target().filter(|t| t.starts_with("KUBE-")) {
            assert!(declared.contains(target), "jump to undeclared {target}");
        }
    }
    let services = rules_of(&tree, KUBE_SERVICES);
    assert!(services.len() <= LEAF_RULES + 1, "root has {} rules", services.len());
    assert!(services.last().unwrap().comment().unwrap().contains("must be the last rule"));
    // Every ClusterIP is 10.96.0.0/12: path compression makes the root dispatch on /16s.
    for rule in &services[..services.len() - 1] {
        let (net, _) = dispatch_rule(rule).expect("root holds dispatch rules");
        assert_eq!(net.prefix_len(), 16, "{net}");
    }
    let mut depth_seen = 0;
    for chain in &dispatch {
        assert!(chain.as_str().len() <= MAX_CHAIN_NAME_LEN);
        let rules = rules_of(&tree, chain.as_str());
        assert!(!rules.is_empty() && rules.len() <= LEAF_RULES, "{chain}: {} rules", rules.len());
        if rules.iter().all(|r| dispatch_rule(r).is_some()) {
            depth_seen += 1;
        }
    }
    assert!(depth_seen > 0, "no interior dispatch chain below the root");
}

#[test]
fn rules_of_one_address_stay_together_in_order() {
    // One Service with 20 ports (more than a leaf holds) among 100 others.
    let mut state = cluster(100, IpFamily::V4, 3);
    let ip: IpAddr = "10.100.7.7".parse().unwrap();
    for p in 0..20u16 {
        let svc = service(name(999, &format!("p{p:02}"), Protocol::Tcp), ip, 1000 + p, 1);
        state.services.insert(svc.name.clone(), svc.into());
    }
    let flat = render(&state, &node(IpFamily::V4, ServicesDispatch::Flat));
    let tree = render(&state, &node(IpFamily::V4, ServicesDispatch::Tree));
    let on_ip = |r: &&Rule| r.get("-d").and_then(|a| a.value()) == Some("10.100.7.7");
    let flat_rules: Vec<&Rule> = rules_of(&flat, KUBE_SERVICES).into_iter().filter(on_ip).collect();
    let leaves: BTreeSet<&str> = nat(&tree)
        .rules
        .iter()
        .filter(|r| r.get("-d").and_then(|a| a.value()) == Some("10.100.7.7"))
        .map(|r| r.chain.as_str())
        .filter(|c| *c == KUBE_SERVICES || is_dispatch_chain(c))
        .collect();
    assert_eq!(leaves.len(), 1, "split over {leaves:?}");
    let leaf = leaves.into_iter().next().unwrap();
    let tree_rules: Vec<&Rule> = rules_of(&tree, leaf).into_iter().filter(on_ip).collect();
    let args = |rules: &[&Rule]| rules.iter().map(|r| r.args.clone()).collect::<Vec<_>>();
    assert_eq!(args(&flat_rules), args(&tree_rules));
    assert_eq!(tree_rules.len(), 20);
}

#[test]
fn nodeport_address_rules_stay_in_the_tail() {
    let state = cluster(100, IpFamily::V4, 5);
    let mut config = node(IpFamily::V4, ServicesDispatch::Tree);
    config.nodeport_addresses = NodePortAddresses::Cidrs(vec!["192.168.1.0/24".parse().unwrap()]);
    let tree = render(&state, &config);
    let services = rules_of(&tree, KUBE_SERVICES);
    let last = services.last().unwrap();
    assert_eq!((last.target(), last.get("-d").and_then(|a| a.value())), (Some(KUBE_NODEPORTS), Some("192.168.1.10")));
    assert!(services[..services.len() - 1].iter().all(|r| dispatch_rule(r).is_some()));
}

#[test]
fn flatten_gives_back_the_flat_layout() {
    for family in [IpFamily::V4, IpFamily::V6] {
        let state = cluster(400, family, 21);
        let flat = render(&state, &node(family, ServicesDispatch::Flat));
        let tree = render(&state, &node(family, ServicesDispatch::Tree));
        assert_ne!(flat, tree);
        // Through text, as `kubenat diff` reads a dump.
        let tree = parse(&tree.to_string()).unwrap();
        let flattened = flatten(&tree);
        assert!(!nat(&flattened).chains.iter().any(|c| is_dispatch_chain(c.name.as_str())));
        let d = diff(&flattened, &flat, &DiffOptions::default());
        assert!(d.is_empty(), "{family}:\n{d}");
        assert!(diff(&tree, &flat, &DiffOptions::default()).is_empty(), "diff flattens by itself");
    }
}

#[test]
fn flatten_keeps_a_misplaced_rule_visible() {
    let state = cluster(100, IpFamily::V4, 9);
    let flat = render(&state, &node(IpFamily::V4, ServicesDispatch::Flat));
    let mut tree = render(&state, &node(IpFamily::V4, ServicesDispatch::Tree));
    // Move one leaf rule to a leaf whose prefix does not contain its address.
    let nat = tree.table_mut(TableName::Nat);
    let leaf_rules: Vec<usize> = (0..nat.rules.len())
        .filter(|&i| is_dispatch_chain(nat.rules[i].chain.as_str()) && dispatch_rule(&nat.rules[i]).is_none())
        .collect();
    let (a, b) =
        (leaf_rules[0], *leaf_rules.iter().find(|&&i| nat.rules[i].chain != nat.rules[leaf_rules[0]].chain).unwrap());
    nat.rules[a].chain = nat.rules[b].chain.clone();
    let d = diff(&tree, &flat, &DiffOptions::default());
    assert!(!d.is_empty(), "a rule in the wrong leaf must not be hidden by flattening");
}

#[test]
fn adding_a_service_rewrites_at_most_two_chains() {
    let before = cluster(300, IpFamily::V4, 42);
    let config = node(IpFamily::V4, ServicesDispatch::Tree);
    let old = render(&before, &config);
    let mut rng = Rng(4242);
    let (mut small, trials) = (0, 60);
    for t in 0..trials {
        let mut after = before.clone();
        let svc = service(name(10_000 + t, "http", Protocol::Tcp), random_v4(&mut rng), 80, 2);
        after.services.insert(svc.name.clone(), svc.into());
        let new = render(&after, &config);
        let changes: Vec<_> = changed_chains(&old, &new)
            .into_iter()
            .filter(|c| c.table == TableName::Nat)
            .filter(|c| c.chain.as_str() == KUBE_SERVICES || is_dispatch_chain(c.chain.as_str()))
            .collect();
        let rewritten = changes.iter().filter(|c| c.kind == ChangeKind::Changed).count();
        assert!(rewritten <= 2, "trial {t}: {changes:?}");
        assert!(changes.iter().all(|c| c.kind != ChangeKind::Removed), "trial {t}: {changes:?}");
        assert!(changes.len() <= 2 + 16, "trial {t}: {changes:?}");
        if changes.len() <= 2 {
            small += 1;
        }
    }
    // A leaf that overflows splits into new chains; that must stay the exception.
    assert!(small * 10 >= trials * 9, "only {small}/{trials} additions touched ≤ 2 dispatch chains");
}

#[test]
fn removing_a_service_rewrites_at_most_two_chains() {
    let before = cluster(300, IpFamily::V4, 43);
    let config = node(IpFamily::V4, ServicesDispatch::Tree);
    let old = render(&before, &config);
    for victim in before.services.keys().take(40) {
        let mut after = before.clone();
        after.services.remove(victim);
        let new = render(&after, &config);
        let rewritten = changed_chains(&old, &new)
            .into_iter()
            .filter(|c| c.chain.as_str() == KUBE_SERVICES || is_dispatch_chain(c.chain.as_str()))
            .filter(|c| c.kind == ChangeKind::Changed)
            .count();
        assert!(rewritten <= 2, "{victim}: {rewritten} chains rewritten");
    }
}

/// Verdicts and probabilities of every path, without the chains walked.
fn outcome(ruleset: &Ruleset, packet: &Packet) -> Vec<(String, bool)> {
    let env = TraceEnv { local_ips: vec!["192.168.1.10".parse().unwrap()] };
    let t = trace(ruleset, packet, &env);
    let mut out: Vec<(String, bool)> = t
        .outcomes
        .iter()
        .map(|o| {
            let verdict = match &o.verdict {
                Verdict::Aborted { reason, .. } => panic!("trace aborted: {reason}"),
                v => format!("{v:?} p={:.6}", o.probability),
            };
            (verdict, o.masquerade)
        })
        .collect();
    out.sort();
    out
}

fn services_strategy() -> impl Strategy<Value = (Vec<(u32, u16, bool, u8)>, bool)> {
    // (address bits within the /12, port, udp?, endpoints) per service; IPv6 or not.
    let svc = (0u32..0x10_0000, prop::sample::select(vec![53u16, 80, 443]), any::<bool>(), 0u8..3);
    (prop::collection::vec(svc, 0..120), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Tracing through the tree gives exactly the flat layout's outcome, for service
    /// addresses, their neighbours and random destinations.
    #[test]
    fn tree_and_flat_route_every_packet_alike((specs, v6) in services_strategy(), probes in prop::collection::vec((0usize..200, 0u32..0x10_0000, 0u8..4), 24)) {
        let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
        let addr = |bits: u32| -> IpAddr {
            match family {
                IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(0x0a60_0000 | bits)),
                IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(0xfd00_0010_0096_0000_0000_0000_0000_0000u128 | u128::from(bits))),
            }
        };
        let mut state = ClusterState::default();
        let mut ips = Vec::new();
        for (i, &(bits, port, udp, eps)) in specs.iter().enumerate() {
            // Some services share an address (other ports of one Service).
            let bits = if i % 5 == 4 { specs[i - 1].0 } else { bits };
            let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
            let svc = service(name(i, "p", protocol), addr(bits), port, eps as usize);
            ips.push((bits, port, protocol));
            state.services.insert(svc.name.clone(), svc.into());
        }
        let flat = render(&state, &node(family, ServicesDispatch::Flat));
        let tree = render(&state, &node(family, ServicesDispatch::Tree));
        let src = match family {
            IpFamily::V4 => "10.244.5.5".parse().unwrap(),
            IpFamily::V6 => "fd00:10:244:5::5".parse().unwrap(),
        };
        for (pick, random_bits, kind) in probes {
            let (bits, port, protocol) = match (ips.get(pick % ips.len().max(1)), kind) {
                (Some(&(bits, port, protocol)), 0) => (bits, port, protocol),
                (Some(&(bits, _, protocol)), 1) => (bits, 80, protocol),
                (Some(&(bits, port, _)), 2) => (bits ^ 1, port, Protocol::Tcp),
                _ => (random_bits, 80, Protocol::Tcp),
            };
            let packet = Packet::new(src, SocketAddr::new(addr(bits), port), protocol);
            prop_assert_eq!(outcome(&flat, &packet), outcome(&tree, &packet), "{:?}", packet);
        }
    }
}

#[test]
fn ipv6_tree_is_built_on_nibbles() {
    let state = cluster(300, IpFamily::V6, 77);
    let tree = render(&state, &node(IpFamily::V6, ServicesDispatch::Tree));
    let mut lengths: BTreeMap<u8, usize> = BTreeMap::new();
    for rule in &nat(&tree).rules {
        if let Some((net, _)) = dispatch_rule(rule) {
            assert!(net.addr().is_ipv6() && net.prefix_len() % 4 == 0, "{net}");
            *lengths.entry(net.prefix_len()).or_default() += 1;
        }
    }
    // Addresses differ only in their last 20 bits: the root dispatches on /112s.
    assert_eq!(lengths.keys().next(), Some(&112), "{lengths:?}");
}
