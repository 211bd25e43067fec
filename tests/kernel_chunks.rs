//! A full sync written in bottom-up pieces (what the daemon does on nft for big rulesets, see
//! `rules::chunks`) on the real kernel: every piece is accepted by `iptables-nft-restore
//! --noflush` in order — a piece that jumped to a chain not written yet would be refused —
//! and the tables end up exactly as one transaction leaves them, stale chains deleted; the
//! applier that `kubenat apply` and the daemon share does the same and removes the userspace
//! mode's leftovers. Needs root (skips otherwise, fails under CI=true).

use kubenat::apply::exec::{Backend, ExecIptables, Iptables, RestoreOptions, Tool};
use kubenat::model::{build, ClusterState, Endpoint, IpFamily, NodeConfig, Protocol, ServicePort, ServicePortName};
use kubenat::rules::chunks::split;
use kubenat::rules::parse::parse;
use kubenat::rules::render::{jump_rules, render};
use kubenat::rules::ruleset::{Ruleset, TableName};
use kubenat::rules::write::Merged;
use kubenat::{
    apply::{Applier, History, Mode},
    rules::extras::extras,
};
use testkit::netns::NetNs;

const V4: IpFamily = IpFamily::V4;
const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: false };

fn cluster(n: u32, shift: u32) -> ClusterState {
    let mut state = ClusterState::default();
    for i in 0..n {
        let name = ServicePortName {
            namespace: "default".into(),
            name: format!("svc-{i}").into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        };
        let mut eps: Vec<Endpoint> = (0..3)
            .map(|e| build::endpoint(format!("10.244.{}.{}:8080", (i + shift) % 250, e + 1).parse().unwrap()))
            .collect();
        eps.sort_by_cached_key(Endpoint::key);
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1).parse().unwrap();
        state
            .services
            .insert(name.clone(), ServicePort { endpoints: eps, ..ServicePort::new(name, vec![ip], 80) }.into());
    }
    state
}

fn node() -> NodeConfig {
    build::node(V4)
}

fn saved(ipt: &ExecIptables) -> String {
    let mut text = String::new();
    for table in [TableName::Filter, TableName::Nat] {
        text.push_str(&ipt.save(V4, Some(table)).expect("save"));
    }
    // Counters and the header comments differ between runs; rules and chains must not.
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads `before` in one transaction, then `after` (a) in one transaction and (b) in pieces of
/// at most `max` chains, each in its own namespace; returns both saves.
fn both_ways(backend: Backend, max: usize) -> Option<(String, String, usize)> {
    if !testkit::require_root() || !testkit::require_program(&backend.binary(V4, Tool::Restore)) {
        return None;
    }
    let node = node();
    let jumps = jump_rules(&node);
    let (before, after) = (render(&cluster(150, 0), &node), render(&cluster(120, 9), &node));
    let mut saves = Vec::new();
    let mut pieces = 0;
    for chunked in [false, true] {
        let ns = NetNs::new("chunks");
        let ipt = ExecIptables::new(backend).in_netns(ns.name());
        let extra = extras(&before, &jumps, &Ruleset::default());
        ipt.restore(V4, &Merged(&before, &extra).to_string(), NOFLUSH).expect("first load");
        let current = parse(&saved(&ipt)).expect("parse save");
        let extra = extras(&after, &jumps, &current);
        let texts = if chunked { split(&after, &extra, max) } else { vec![Merged(&after, &extra).to_string()] };
        pieces = pieces.max(texts.len());
        for (i, text) in texts.iter().enumerate() {
            ipt.restore(V4, text, NOFLUSH).unwrap_or_else(|e| panic!("piece {i} refused: {e}\n{text}"));
        }
        saves.push(saved(&ipt));
    }
    let chunked = saves.pop().unwrap();
    Some((saves.pop().unwrap(), chunked, pieces))
}

#[test]
fn pieces_equal_one_transaction_nft() {
    let Some((whole, chunked, pieces)) = both_ways(Backend::Nft, 60) else { return };
    assert!(pieces > 10, "only {pieces} pieces");
    assert!(!whole.contains("svc-149") && whole.contains("svc-119"), "the second state is loaded");
    assert_eq!(chunked, whole);
}

#[test]
fn pieces_equal_one_transaction_legacy() {
    // Never used on legacy (one transaction is linear there), but the pieces are valid input.
    let Some((whole, chunked, _)) = both_ways(Backend::Legacy, 200) else { return };
    assert_eq!(chunked, whole);
}

/// The applier every caller goes through (the daemon's full sync, `kubenat apply`) on nft: a
/// ruleset of more chains than one transaction should declare goes in pieces, the userspace
/// mode's leftovers (chain and jump) go too, and the tables end as one transaction of the same
/// rules leaves an empty namespace.
#[test]
fn applier_writes_pieces_and_removes_userspace_leftovers_nft() {
    if !testkit::require_root() || !testkit::require_program(&Backend::Nft.binary(V4, Tool::Restore)) {
        return;
    }
    let node = node();
    let jumps = jump_rules(&node);
    let desired = render(&cluster(200, 0), &node);
    let reference = NetNs::new("chunks");
    let ipt = ExecIptables::new(Backend::Nft).in_netns(reference.name());
    let extra = extras(&desired, &jumps, &Ruleset::default());
    ipt.restore(V4, &Merged(&desired, &extra).to_string(), NOFLUSH).expect("one transaction");

    let ns = NetNs::new("chunks");
    let ipt_pieces = ExecIptables::new(Backend::Nft).in_netns(ns.name());
    let leftovers = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-PORTALS-CONTAINER - [0:0]\n\
                     -A PREROUTING -m comment --comment \"handle ClusterIPs\" -j KUBE-PORTALS-CONTAINER\n\
                     -A KUBE-PORTALS-CONTAINER -d 10.96.9.9/32 -p tcp -j REDIRECT --to-ports 4000\nCOMMIT\n";
    ipt_pieces.restore(V4, leftovers, NOFLUSH).expect("userspace leftovers");
    let applied = Applier::new(&ipt_pieces, V4, Mode::Iptables)
        .full(&desired, &jumps, History::Unknown)
        .unwrap_or_else(|e| panic!("applier: {e:?}"));
    assert!(applied.transactions > 2, "{} transactions", applied.transactions);
    assert_eq!(applied.report.chains_deleted, 1, "only the portal chain");
    let after = saved(&ipt_pieces);
    assert!(!after.contains("PORTALS"), "{after}");
    assert_eq!(after, saved(&ipt));
}
