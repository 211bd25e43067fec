//! Property: on the fake kernel, the full ruleset of `a` followed by `plan_partial(a, b)`
//! leaves exactly what a full apply of `b` leaves, and the plan never rewrites an unchanged chain.

use proptest::prelude::*;

use crate::apply::exec::{Iptables, RestoreOptions};
use crate::apply::fake::FakeIptables;
use crate::inspect::diff::{diff, DiffOptions};
use crate::model::build::node;
use crate::model::IpFamily;
use crate::rules::parse::parse;
use crate::rules::plan::testutil::cluster_state;
use crate::rules::plan::*;
use crate::rules::render::render;
use crate::rules::ruleset::{Arg, ChainName, Rule, Ruleset, Table, TableName};

const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: true };

fn loaded(family: IpFamily, inputs: &[&Ruleset]) -> FakeIptables {
    let fake = FakeIptables::new();
    for input in inputs.iter().filter(|r| !r.tables.is_empty()) {
        if let Err(e) = fake.restore(family, &input.to_string(), NOFLUSH) {
            panic!("{e}\ninput:\n{input}");
        }
    }
    fake
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn partial_after_full_equals_full(a in cluster_state(), b in cluster_state(), v6 in any::<bool>()) {
        let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
        let (ra, rb) = (render(&a, &node(family)), render(&b, &node(family)));
        let plan = plan_partial(&ra, &rb);

        let partial = loaded(family, &[&ra, &plan]).state_text(family);
        let full = loaded(family, &[&rb]).state_text(family);
        prop_assert_eq!(&partial, &full, "plan:\n{}", plan);
        let (partial, full) = (parse(&partial).unwrap(), parse(&full).unwrap());
        let kube_only = DiffOptions { kube_only: true };
        prop_assert!(diff(&partial, &full, &kube_only).is_empty());

        // Minimal: every chain written differs from what `a` left in it.
        for table in &plan.tables {
            let before = ra.table(table.name);
            for decl in &table.chains {
                let old: Option<Vec<&Rule>> = before
                    .filter(|t| t.is_declared(decl.name.as_str()))
                    .map(|t| t.chain_rules(decl.name.as_str()).collect());
                let new: Vec<&Rule> = table.chain_rules(decl.name.as_str()).collect();
                prop_assert!(old.as_ref() != Some(&new), "{} rewritten unchanged", decl.name);
            }
        }
        prop_assert_eq!(plan_partial(&rb, &rb), Ruleset::default());
    }
}

/// A nat table over up to 150 chains `KUBE-C<n>` (more than the pairing window), declared in
/// random order, with rules in random order (chains' rules interleaved), ending in non-chain
/// targets so any subset is a valid restore input.
fn arbitrary_nat() -> impl Strategy<Value = Ruleset> {
    let chains = prop::collection::btree_set(0u8..150, 0..120).prop_map(|s| s.into_iter().collect::<Vec<_>>());
    chains
        .prop_flat_map(|names| {
            let n = names.len().max(1);
            let rules = prop::collection::vec((0..n, 0usize..4), 0..300);
            (Just(names).prop_shuffle(), rules)
        })
        .prop_map(|(names, rules)| {
            let mut nat = Table::new(TableName::Nat);
            let names: Vec<ChainName> =
                names.iter().map(|n| ChainName::new(format!("KUBE-C{n}")).expect("valid")).collect();
            for name in &names {
                nat.declare(name);
            }
            for (chain, target) in rules.into_iter().filter(|_| !names.is_empty()) {
                let target = ["ACCEPT", "DROP", "RETURN", "MARK"][target];
                let rule = Rule::append(&names[chain % names.len()]);
                let rule = if target == "MARK" {
                    rule.jump_with(target, [Arg::new("--set-mark", "1")])
                } else {
                    rule.jump(target)
                };
                nat.rules.push(rule);
            }
            Ruleset { tables: vec![nat] }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn partial_plans_arbitrary_rulesets(a in arbitrary_nat(), b in arbitrary_nat()) {
        let plan = plan_partial(&a, &b);
        let partial = loaded(IpFamily::V4, &[&a, &plan]).state_text(IpFamily::V4);
        let full = loaded(IpFamily::V4, &[&b]).state_text(IpFamily::V4);
        prop_assert_eq!(&partial, &full, "plan:\n{}", plan);
        prop_assert_eq!(plan_partial(&b, &b), Ruleset::default());
    }
}
