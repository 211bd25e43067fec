//! Property: when big chains are edited rule by rule, the full ruleset of `last` followed by the
//! plan leaves on the fake kernel exactly what a full load of `next` leaves — for random service
//! changes on a cluster whose KUBE-SERVICES is edited, and for arbitrary chains with moves,
//! insertions, deletions and duplicate rules (which must fall back to a rewrite).

use proptest::prelude::*;

use crate::apply::exec::{Iptables, RestoreOptions};
use crate::apply::fake::FakeIptables;
use crate::model::build::{self, node, state};
use crate::model::{ClusterState, IpFamily, ServicePort};
use crate::rules::plan::*;
use crate::rules::render::render;
use crate::rules::ruleset::{Arg, ChainName, Rule, RuleOp, Ruleset, Table, TableName};

const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: true };

/// Edits every changed chain of 8 rules or more, however big the edit.
const EAGER: PlanOptions = PlanOptions { edit_min_rules: Some(8), edit_max_percent: 100 };

fn after(inputs: &[&Ruleset]) -> String {
    let fake = FakeIptables::new();
    for input in inputs.iter().filter(|r| !r.tables.is_empty()) {
        if let Err(e) = fake.restore(IpFamily::V4, &input.to_string(), NOFLUSH) {
            panic!("{e}\ninput:\n{input}");
        }
    }
    fake.state_text(IpFamily::V4)
}

fn edit_lines(plan: &Ruleset) -> usize {
    plan.tables.iter().flat_map(|t| &t.rules).filter(|r| r.op != RuleOp::Append).count()
}

fn service(i: u16, endpoint: u16) -> ServicePort {
    let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
    let ep = format!("10.244.{}.{}:8080", endpoint / 250, endpoint % 250 + 1);
    build::service(&format!("svc-{i:03}"), &ip, &[ep.as_str()])
}

/// A change to one service: 0 removes it, 1 moves its endpoint, 2 (re)adds it.
fn changed(base: &ClusterState, ops: &[(u16, u8)]) -> ClusterState {
    let mut next = base.clone();
    for &(i, op) in ops {
        let s = service(i, i);
        match op {
            0 => drop(next.services.remove(&s.name)),
            1 => drop(next.services.insert(s.name.clone(), service(i, i + 500).into())),
            _ => drop(next.services.insert(s.name.clone(), s.into())),
        }
    }
    next
}

/// A chain of `KUBE-T` rules, one per id, each `-m comment --comment r<id> -j ACCEPT`.
fn chain_of(ids: &[u8]) -> Ruleset {
    let mut nat = Table::new(TableName::Nat);
    let chain = ChainName::new("KUBE-T").expect("valid");
    nat.declare(&chain);
    for id in ids {
        nat.rules.push(Rule::append(&chain).arg(Arg::new("--comment", format!("r{id}"))).jump("ACCEPT"));
    }
    Ruleset { tables: vec![nat] }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn edited_services_equal_full(
        present in prop::collection::btree_set(0u16..130, 70..110),
        ops in prop::collection::vec((0u16..130, 0u8..3), 1..12),
        eager in any::<bool>(),
    ) {
        let base = state(present.iter().map(|i| service(*i, *i)).collect());
        let next = changed(&base, &ops);
        let (last, next) = (render(&base, &node(IpFamily::V4)), render(&next, &node(IpFamily::V4)));
        let opts = if eager { EAGER } else { PlanOptions::for_backend(crate::rules::backend::Backend::Nft) };
        let plan = plan_partial_with(&last, &next, &opts);
        prop_assert_eq!(after(&[&last, &plan]), after(&[&next]), "plan:\n{}", plan);
        let rewritten = plan.tables.iter().any(|t| t.is_declared("KUBE-SERVICES"));
        prop_assert!(!rewritten, "KUBE-SERVICES (70+ rules) is edited, not rewritten:\n{}", plan);
        prop_assert_eq!(plan_partial_with(&next, &next, &opts), Ruleset::default());
    }

    #[test]
    fn edited_chains_equal_full(
        old in prop::collection::vec(0u8..40, 0..40),
        new in prop::collection::vec(0u8..40, 0..40),
        percent in 1usize..120,
    ) {
        let (last, next) = (chain_of(&old), chain_of(&new));
        let opts = PlanOptions { edit_min_rules: Some(1), edit_max_percent: percent };
        let plan = plan_partial_with(&last, &next, &opts);
        prop_assert_eq!(after(&[&last, &plan]), after(&[&next]), "plan:\n{}", plan);
        let limit = old.len().max(new.len()) * percent / 100;
        prop_assert!(edit_lines(&plan) <= limit.max(1), "edit larger than allowed:\n{}", plan);
    }
}

#[test]
fn one_service_added_or_removed_at_scale_is_one_line() {
    let base = state((0..300).map(|i| service(i, i)).collect());
    let last = render(&base, &node(IpFamily::V4));
    for ops in [[(300u16, 2u8)], [(150, 0)]] {
        let next = render(&changed(&base, &ops), &node(IpFamily::V4));
        let plan = plan_partial_with(&last, &next, &PlanOptions::default());
        let services: Vec<&Rule> = plan.tables.iter().flat_map(|t| t.chain_rules("KUBE-SERVICES")).collect();
        assert_eq!(services.len(), 1, "{plan}");
        assert!(matches!(services[0].op, RuleOp::Insert(Some(_)) | RuleOp::Delete), "{plan}");
        assert_eq!(after(&[&last, &plan]), after(&[&next]));
        let rewrite = plan_partial_with(&last, &next, &PlanOptions::REWRITE);
        let rewritten: Vec<&Rule> = rewrite.tables.iter().flat_map(|t| t.chain_rules("KUBE-SERVICES")).collect();
        assert!(rewritten.len() >= 300, "kube-proxy style rewrites the chain");
    }
}
