//! Rule-edit partial syncs on the real kernel (nft and legacy `iptables-restore` in throwaway
//! namespaces), through the daemon's `Syncer`: after a full sync of a 200-service cluster, each
//! partial sync edits KUBE-SERVICES (and any other big chain) with `-D`/`-I`/`-A` lines and must
//! leave exactly what a full sync of the same state leaves in a fresh namespace. A foreign rule
//! in our chain survives an edit; a rule of ours deleted behind our back makes the partial
//! restore fail and the sync fall back to a full one. Needs root (skips otherwise, fails under
//! CI=true).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kubenat::apply::exec::{Backend, ExecIptables, Iptables, Tool};
use kubenat::config::NodeOptions;
use kubenat::conntrack::FakeConntrack;
use kubenat::health::HealthState;
use kubenat::k8s::watch::{Changes, Snapshot};
use kubenat::metrics::{Metrics, SyncKind};
use kubenat::model::build;
use kubenat::model::{ClusterState, Endpoint, IpFamily, Protocol, ServicePort, ServicePortName};
use kubenat::rules::parse::parse;
use kubenat::rules::plan::{plan_partial_with, PlanOptions};
use kubenat::rules::render::render;
use kubenat::rules::ruleset::{RuleOp, Ruleset, TableName};
use kubenat::sync::{FamilyReport, SyncOptions, Syncer};
use testkit::netns::NetNs;

const V4: IpFamily = IpFamily::V4;

fn available(backend: Backend) -> bool {
    testkit::require_root() && testkit::require_program(&backend.binary(V4, Tool::Restore))
}

fn name(i: u32) -> ServicePortName {
    ServicePortName {
        namespace: "bench".into(),
        name: format!("svc-{i:04}").into(),
        port: "http".into(),
        protocol: Protocol::Tcp,
    }
}

/// Service `i`: ClusterIP 10.96.x.y:80; every third has a NodePort; `endpoints` from a pool
/// keyed by `seed` (none for an empty pool, so filter REJECT rules appear too).
fn service(i: u32, endpoints: u32, seed: u32) -> ServicePort {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8));
    let mut eps: Vec<Endpoint> = (0..endpoints)
        .map(|e| {
            let n = (i * 7 + e * 3 + seed * 11) % 60_000;
            Endpoint {
                node_name: Some(format!("node-{}", n % 3)),
                ..build::endpoint(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 244, (n / 250) as u8, (n % 250 + 1) as u8)),
                    8080,
                ))
            }
        })
        .collect();
    eps.sort_by_cached_key(|e| e.key());
    eps.dedup_by(|a, b| a.key() == b.key());
    let node_port = (i % 3 == 0).then(|| 30_000 + i as u16);
    ServicePort { endpoints: eps, node_port, ..ServicePort::new(name(i), vec![ip], 80) }
}

fn base() -> ClusterState {
    let mut state = ClusterState::default();
    for i in 0..200 {
        state.services.insert(name(i), service(i, if i % 10 == 9 { 0 } else { 2 }, 0).into());
    }
    state
}

/// A small deterministic generator (no randomness crate needed for a fixed walk).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

/// One step of changes: services removed and added, endpoints moved or emptied.
fn step(state: &ClusterState, rng: &mut Lcg, round: u32) -> ClusterState {
    let mut next = state.clone();
    for _ in 0..3 {
        next.services.remove(&name(rng.below(260)));
        let i = rng.below(260);
        next.services.insert(name(i), service(i, 1 + rng.below(3), round).into());
        let i = rng.below(260);
        next.services.insert(name(i), service(i, 0, round).into());
    }
    next
}

fn syncer(ns: &NetNs, backend: Backend) -> Syncer {
    let ipt = Arc::new(ExecIptables::new(backend).in_netns(ns.name()));
    let opts = SyncOptions {
        min_sync_period: Duration::from_secs(1),
        sync_period: Duration::from_secs(30),
        families: vec![V4],
        node: NodeOptions {
            node_name: "node-1".into(),
            cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
            ..NodeOptions::default()
        },
        flannel: None,
    };
    let (metrics, _registry) = Metrics::new();
    Syncer::new(opts, ipt, Arc::new(FakeConntrack::new()), metrics, HealthState::new(Duration::from_secs(60)))
}

fn sync(syncer: &mut Syncer, state: &ClusterState, full: bool) -> FamilyReport {
    let snapshot = Snapshot { state: state.clone(), node: None, problems: vec![] };
    let mut reports = syncer.sync(&snapshot, &Changes::default(), full).unwrap_or_else(|e| panic!("sync: {e}"));
    reports.pop().expect("one family")
}

/// KUBE-* chains of filter and nat as the kernel saves them, each with its rules in order,
/// sorted by chain (nft lists chains in creation order).
fn kube_chains(ns: &NetNs, backend: Backend) -> Vec<(TableName, String, Vec<String>)> {
    let ipt = ExecIptables::new(backend).in_netns(ns.name());
    let mut out = Vec::new();
    for table in [TableName::Filter, TableName::Nat] {
        let text = ipt.save(V4, Some(table)).unwrap_or_else(|e| panic!("save: {e}"));
        let saved = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for t in &saved.tables {
            for decl in t.chains.iter().filter(|c| c.name.as_str().starts_with("KUBE-")) {
                let rules = t.chain_rules(decl.name.as_str()).map(ToString::to_string).collect();
                out.push((t.name, decl.name.to_string(), rules));
            }
        }
    }
    out.sort();
    out
}

fn node_render(state: &ClusterState) -> Ruleset {
    let opts = NodeOptions {
        node_name: "node-1".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
        ..NodeOptions::default()
    };
    render(state, &opts.node_config(V4, None, None).expect("node config"))
}

/// Edit lines (`-D`/`-I`) in nat chain `chain` of `plan`, and whether `plan` declares it.
fn edits_of(plan: &Ruleset, chain: &str) -> (usize, bool) {
    let Some(nat) = plan.table(TableName::Nat) else { return (0, false) };
    (nat.chain_rules(chain).filter(|r| r.op != RuleOp::Append).count(), nat.is_declared(chain))
}

fn partial_syncs_equal_full_syncs(backend: Backend) {
    if !available(backend) {
        return;
    }
    let ns = NetNs::new("kpart");
    let mut live = syncer(&ns, backend);
    let mut state = base();
    assert_eq!(sync(&mut live, &state, true).kind, SyncKind::Full);
    let mut rng = Lcg(0x6b75_6265_6e61_7400);
    let mut edited = 0;
    for round in 1..=5 {
        let next = step(&state, &mut rng, round);
        let plan = plan_partial_with(&node_render(&state), &node_render(&next), &PlanOptions::for_backend(backend));
        let (lines, declared) = edits_of(&plan, "KUBE-SERVICES");
        assert!(!declared, "round {round}: nat KUBE-SERVICES rewritten instead of edited:\n{plan}");
        edited += lines;
        let report = sync(&mut live, &next, false);
        assert_eq!((report.kind, report.partial_failed), (SyncKind::Partial, false), "round {round}");
        assert_eq!(report.bytes, plan.to_string().len(), "round {round}: the syncer applied this plan");

        let fresh_ns = NetNs::new("kpart");
        sync(&mut syncer(&fresh_ns, backend), &next, true);
        let (partial, full) = (kube_chains(&ns, backend), kube_chains(&fresh_ns, backend));
        assert!(partial.iter().any(|(_, c, r)| c == "KUBE-SERVICES" && r.len() > 100), "rules loaded");
        assert_eq!(partial, full, "{backend} round {round}: partial sync vs full sync; plan:\n{plan}");
        state = next;
    }
    assert!(edited >= 5, "the walk exercised rule edits ({edited} lines)");
}

#[test]
fn nft_rule_edit_partial_syncs_equal_full_syncs() {
    partial_syncs_equal_full_syncs(Backend::Nft);
}

#[test]
fn legacy_rule_edit_partial_syncs_equal_full_syncs() {
    partial_syncs_equal_full_syncs(Backend::Legacy);
}

/// The rule text (after `-A KUBE-SERVICES `) of service `i` as the kernel saved it.
fn saved_rule(chains: &[(TableName, String, Vec<String>)], i: u32) -> Option<String> {
    let needle = format!("bench/svc-{i:04}:http cluster IP");
    let (_, _, rules) = chains.iter().find(|(t, c, _)| *t == TableName::Nat && c == "KUBE-SERVICES")?;
    rules.iter().find(|r| r.contains(&needle)).and_then(|r| r.strip_prefix("-A KUBE-SERVICES ")).map(str::to_string)
}

fn foreign_rules_and_missing_rules(backend: Backend) {
    if !available(backend) {
        return;
    }
    let ns = NetNs::new("kpart");
    let iptables = format!("iptables-{backend}");
    let mut live = syncer(&ns, backend);
    let mut state = base();
    sync(&mut live, &state, true);

    // Someone inserts a rule into our chain: deleting by spec still removes exactly ours.
    ns.run_ok(&[&iptables, "-w", "5", "-t", "nat", "-I", "KUBE-SERVICES", "2", "-s", "192.0.2.1/32", "-j", "RETURN"]);
    state.services.remove(&name(5));
    state.services.insert(name(300), service(300, 2, 0).into());
    let report = sync(&mut live, &state, false);
    assert_eq!((report.kind, report.partial_failed), (SyncKind::Partial, false));
    let chains = kube_chains(&ns, backend);
    let services = &chains.iter().find(|(t, c, _)| *t == TableName::Nat && c == "KUBE-SERVICES").expect("chain").2;
    assert!(services.iter().any(|r| r.contains("192.0.2.1")), "the foreign rule survives");
    assert!(saved_rule(&chains, 5).is_none() && saved_rule(&chains, 300).is_some(), "{services:#?}");

    // Someone deletes one of our rules: our `-D` by spec fails, the sync falls back to full.
    let gone = saved_rule(&chains, 7).expect("svc-7 rule");
    let mut argv = vec![iptables.as_str(), "-w", "5", "-t", "nat", "-D", "KUBE-SERVICES"];
    let words = shell_words(&gone);
    argv.extend(words.iter().map(String::as_str));
    ns.run_ok(&argv);
    state.services.remove(&name(7));
    let report = sync(&mut live, &state, false);
    assert_eq!((report.kind, report.partial_failed), (SyncKind::Full, true), "missing rule → full sync");
    let fresh_ns = NetNs::new("kpart");
    sync(&mut syncer(&fresh_ns, backend), &state, true);
    assert_eq!(kube_chains(&ns, backend), kube_chains(&fresh_ns, backend), "the full sync repaired everything");
}

/// Splits saved rule text into words, honouring the double quotes iptables-save puts around
/// comments with spaces.
fn shell_words(text: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => words.extend((!word.is_empty()).then(|| std::mem::take(&mut word))),
            c => word.push(c),
        }
    }
    words.extend((!word.is_empty()).then_some(word));
    words
}

#[test]
fn nft_foreign_rules_survive_and_missing_rules_force_a_full_sync() {
    foreign_rules_and_missing_rules(Backend::Nft);
}

#[test]
fn legacy_foreign_rules_survive_and_missing_rules_force_a_full_sync() {
    foreign_rules_and_missing_rules(Backend::Legacy);
}
