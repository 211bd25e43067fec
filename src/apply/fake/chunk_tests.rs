use crate::apply::exec::{Iptables, RestoreOptions};
use crate::apply::fake::FakeIptables;
use crate::model::build::{self, node, state};
use crate::model::{ClusterState, IpFamily};
use crate::rules::chunks::*;
use crate::rules::extras::extras;
use crate::rules::parse::parse;
use crate::rules::render::{jump_rules, render};
use crate::rules::ruleset::Ruleset;
use crate::rules::write::Merged;

const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: false };

/// `n` services with 3 endpoints each, the first `shift` endpoint hosts moved by one.
fn cluster(n: u32, shift: u32) -> ClusterState {
    let services: Vec<_> = (0..n)
        .map(|i| {
            let eps: Vec<String> = (0..3).map(|e| format!("10.244.{}.{}:8080", (i + shift) % 250, e + 1)).collect();
            let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
            build::service(&format!("svc-{i}"), &format!("10.96.{}.{}", i / 250, i % 250 + 1), &eps)
        })
        .collect();
    state(services)
}

/// Applies `texts` one by one to `ipt` (each must be accepted: every intermediate state is a
/// valid kernel state), then returns the saved state.
fn apply_all(ipt: &FakeIptables, texts: &[String]) -> String {
    for (i, text) in texts.iter().enumerate() {
        ipt.restore(IpFamily::V4, text, NOFLUSH).unwrap_or_else(|e| panic!("transaction {i} refused: {e}\n{text}"));
    }
    ipt.state_text(IpFamily::V4)
}

#[test]
fn pieces_give_the_same_tables_as_one_transaction() {
    let node = node(IpFamily::V4);
    let jumps = jump_rules(&node);
    let (before, after) = (render(&cluster(120, 0), &node), render(&cluster(100, 7), &node));

    let (whole, pieces) = (FakeIptables::new(), FakeIptables::new());
    for ipt in [&whole, &pieces] {
        let extra = extras(&before, &jumps, &Ruleset::default());
        ipt.restore(IpFamily::V4, &Merged(&before, &extra).to_string(), NOFLUSH).unwrap();
    }
    let current = parse(&whole.state_text(IpFamily::V4)).unwrap();
    let extra = extras(&after, &jumps, &current);
    assert!(!extra.table(crate::rules::ruleset::TableName::Nat).unwrap().deletes.is_empty(), "stale chains to delete");
    whole.restore(IpFamily::V4, &Merged(&after, &extra).to_string(), NOFLUSH).unwrap();

    assert!(needs_split(&after, &extra, 40));
    let texts = split(&after, &extra, 40);
    assert!(texts.len() > 5, "{} transactions", texts.len());
    assert!(texts.iter().all(|t| t.lines().filter(|l| l.starts_with(':')).count() <= 40 + 120 * 4));
    assert_eq!(apply_all(&pieces, &texts), whole.state_text(IpFamily::V4));
}

#[test]
fn chains_come_after_the_chains_they_jump_to() {
    let node = node(IpFamily::V4);
    let ruleset = render(&cluster(30, 0), &node);
    let texts = split(&ruleset, &Ruleset::default(), 10);
    let position =
        |chain: &str| texts.iter().position(|t| t.starts_with("*nat") && t.contains(&format!("\n:{chain} "))).unwrap();
    let nat = ruleset.table(crate::rules::ruleset::TableName::Nat).unwrap();
    for rule in &nat.rules {
        if let Some(target) = rule.target().filter(|t| nat.is_declared(t)) {
            assert!(position(target) <= position(rule.chain.as_str()), "{} written before {target}", rule.chain);
        }
    }
    // A fresh table accepts every piece in order (a jump to a chain not yet written would fail).
    apply_all(&FakeIptables::new(), &texts);
}

#[test]
fn small_inputs_stay_one_transaction_per_table() {
    let node = node(IpFamily::V4);
    let ruleset = render(&cluster(3, 0), &node);
    let extra = extras(&ruleset, &jump_rules(&node), &Ruleset::default());
    assert!(!needs_split(&ruleset, &extra, NFT_CHAINS_PER_TRANSACTION));
    let texts = split(&ruleset, &extra, NFT_CHAINS_PER_TRANSACTION);
    assert_eq!(texts.len(), 3, "filter, nat, mangle");
    let whole = FakeIptables::new();
    whole.restore(IpFamily::V4, &Merged(&ruleset, &extra).to_string(), NOFLUSH).unwrap();
    assert_eq!(apply_all(&FakeIptables::new(), &texts), whole.state_text(IpFamily::V4));
}
