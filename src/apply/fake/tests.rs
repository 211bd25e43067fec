use std::sync::Arc;

use super::*;
use crate::apply::apply_once;
use crate::model::build::{self, node, state};
use crate::rules::canonical::{canonical, CanonicalRule};
use crate::rules::parse::parse;
use crate::rules::render::{jump_rules, render};
use crate::rules::ruleset::Ruleset;

const V4: IpFamily = IpFamily::V4;
const V6: IpFamily = IpFamily::V6;
const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: false };
const FLUSH: RestoreOptions = RestoreOptions { noflush: false, counters: false };

/// nat with flannel's chain (jumped to from POSTROUTING) and one of ours.
const PRELOAD: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
    :FLANNEL-POSTRTG - [0:0]\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n\
    -A POSTROUTING -j FLANNEL-POSTRTG\n-A FLANNEL-POSTRTG -s 10.244.0.0/16 -j RETURN\n\
    -A KUBE-A -j ACCEPT\n-A KUBE-B -j KUBE-A\nCOMMIT\n";

fn preloaded() -> FakeIptables {
    let fake = FakeIptables::new();
    fake.set_rules(V4, PRELOAD).unwrap();
    fake
}

/// The rules of `chain` in `table`, as written.
fn rules(fake: &FakeIptables, table: TableName, chain: &str) -> Vec<String> {
    let saved = parse(&fake.save(V4, Some(table)).unwrap()).unwrap();
    saved.table(table).unwrap().chain_rules(chain).map(|r| r.to_string()).collect()
}

fn chains(fake: &FakeIptables, table: TableName) -> Vec<String> {
    let saved = parse(&fake.save(V4, Some(table)).unwrap()).unwrap();
    saved.table(table).unwrap().chains.iter().map(|c| c.name.to_string()).collect()
}

fn restore_failure(result: Result<()>) -> RestoreFailure {
    match result {
        Err(Error::Restore(failure)) => *failure,
        other => panic!("expected a restore failure, got {other:?}"),
    }
}

#[test]
fn noflush_flushes_declared_chains_only() {
    let fake = preloaded();
    let input = "*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j DROP\n-A FLANNEL-POSTRTG -j MASQUERADE\nCOMMIT\n";
    fake.restore(V4, input, NOFLUSH).unwrap();
    assert_eq!(rules(&fake, TableName::Nat, "KUBE-A"), ["-A KUBE-A -j DROP"]);
    assert_eq!(
        rules(&fake, TableName::Nat, "FLANNEL-POSTRTG"),
        ["-A FLANNEL-POSTRTG -s 10.244.0.0/16 -j RETURN", "-A FLANNEL-POSTRTG -j MASQUERADE"],
        "an existing chain may be appended to without declaring it"
    );
    assert_eq!(rules(&fake, TableName::Nat, "POSTROUTING"), ["-A POSTROUTING -j FLANNEL-POSTRTG"]);
    assert_eq!(rules(&fake, TableName::Nat, "KUBE-B"), ["-A KUBE-B -j KUBE-A"]);
}

#[test]
fn without_noflush_the_table_is_replaced() {
    let fake = preloaded();
    fake.restore(V4, "*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j DROP\nCOMMIT\n", FLUSH).unwrap();
    assert_eq!(chains(&fake, TableName::Nat), ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "KUBE-A"]);
    assert!(rules(&fake, TableName::Nat, "POSTROUTING").is_empty());
    let err = restore_failure(fake.restore(V4, "*nat\n-A KUBE-B -j ACCEPT\nCOMMIT\n", FLUSH));
    assert_eq!(err.line, Some(2), "without --noflush the old chains are gone: {err}");
}

#[test]
fn jump_to_a_missing_chain_rejects_the_table_atomically() {
    let fake = preloaded();
    fake.restore(V4, "*filter\n:KUBE-F - [0:0]\nCOMMIT\n", NOFLUSH).unwrap();
    let before = fake.state_text(V4);
    let input = "*nat\n:KUBE-A - [0:0]\n:KUBE-NEW - [0:0]\n-A KUBE-NEW -j ACCEPT\n-A KUBE-A -j KUBE-NOPE\nCOMMIT\n";
    let err = restore_failure(fake.restore(V4, input, NOFLUSH));
    assert_eq!((err.line, err.message.as_str()), (Some(6), "Chain 'KUBE-NOPE' does not exist"));
    assert_eq!(err.culprit.map(|c| c.number), Some(5), "the jump is named");
    assert_eq!(fake.state_text(V4), before, "nothing of the rejected table was kept");

    // Real iptables-restore keeps the tables committed before the failing one.
    let input = "*filter\n:KUBE-G - [0:0]\nCOMMIT\n*nat\n-A KUBE-A -j KUBE-NOPE\nCOMMIT\n";
    let err = restore_failure(fake.restore(V4, input, NOFLUSH));
    assert_eq!(err.line, Some(6));
    assert!(chains(&fake, TableName::Filter).contains(&"KUBE-G".to_string()));
    assert_eq!(rules(&fake, TableName::Nat, "KUBE-A"), ["-A KUBE-A -j ACCEPT"]);
}

#[test]
fn delete_chain_needs_an_empty_unreferenced_user_chain() {
    let fake = preloaded();
    let before = fake.state_text(V4);
    let referenced = restore_failure(fake.restore(V4, "*nat\n:KUBE-A - [0:0]\n-X KUBE-A\nCOMMIT\n", NOFLUSH));
    assert_eq!(referenced.line, Some(3));
    assert!(referenced.message.contains("busy"), "{referenced}");
    let not_empty = restore_failure(fake.restore(V4, "*nat\n-X KUBE-B\nCOMMIT\n", NOFLUSH));
    assert!(not_empty.message.contains("not empty"), "{not_empty}");
    let missing = restore_failure(fake.restore(V4, "*nat\n-X KUBE-NONE\nCOMMIT\n", NOFLUSH));
    assert!(missing.message.contains("does not exist"), "{missing}");
    assert_eq!(fake.state_text(V4), before);

    // Flushing the referrer in the same transaction makes it deletable, as our plans do.
    fake.restore(V4, "*nat\n:KUBE-B - [0:0]\n:KUBE-A - [0:0]\n-X KUBE-A\nCOMMIT\n", NOFLUSH).unwrap();
    assert!(!chains(&fake, TableName::Nat).contains(&"KUBE-A".to_string()));
}

#[test]
fn insert_positions_and_deletes() {
    let fake = FakeIptables::new();
    fake.restore(V4, "*filter\n:KUBE-C - [0:0]\n-A KUBE-C -j ACCEPT\n-A KUBE-C -j DROP\nCOMMIT\n", NOFLUSH).unwrap();
    fake.restore(V4, "*filter\n-I KUBE-C 2 -j RETURN\n-I KUBE-C -j LOG\n-I KUBE-C 5 -j REJECT\nCOMMIT\n", NOFLUSH)
        .unwrap();
    let expected = ["-j LOG", "-j ACCEPT", "-j RETURN", "-j DROP", "-j REJECT"].map(|r| format!("-A KUBE-C {r}"));
    assert_eq!(rules(&fake, TableName::Filter, "KUBE-C"), expected);
    let too_far = restore_failure(fake.restore(V4, "*filter\n-A KUBE-C -j LOG\n-I KUBE-C 8 -j LOG\nCOMMIT\n", NOFLUSH));
    assert_eq!((too_far.line, too_far.message.as_str()), (Some(3), "Index of insertion too big."));

    // -D removes the first rule that means the same (`--jump` is `-j`).
    fake.restore(V4, "*filter\n-A KUBE-C -j ACCEPT\n-D KUBE-C --jump ACCEPT\nCOMMIT\n", NOFLUSH).unwrap();
    let after = rules(&fake, TableName::Filter, "KUBE-C");
    assert_eq!(after[1..], [expected[2].clone(), expected[3].clone(), expected[4].clone(), expected[1].clone()]);
    let missing = restore_failure(fake.restore(V4, "*filter\n-D KUBE-C -j MARK --set-mark 1\nCOMMIT\n", NOFLUSH));
    assert_eq!(missing.line, Some(2));
}

#[test]
fn kernel_checks_at_commit() {
    let fake = FakeIptables::new();
    let masq =
        restore_failure(fake.restore(V4, "*filter\n:KUBE-X - [0:0]\n-A KUBE-X -j MASQUERADE\nCOMMIT\n", NOFLUSH));
    assert!(masq.message.contains("only valid in the nat table"), "{masq}");
    let looped = "*nat\n:KUBE-X - [0:0]\n:KUBE-Y - [0:0]\n-A KUBE-X -j KUBE-Y\n-A KUBE-Y -j KUBE-X\nCOMMIT\n";
    assert!(restore_failure(fake.restore(V4, looped, NOFLUSH)).message.contains("loop"));
    let builtin = restore_failure(fake.restore(V4, "*nat\n-A OUTPUT -j PREROUTING\nCOMMIT\n", NOFLUSH));
    assert!(builtin.message.contains("built-in"), "{builtin}");
    let syntax =
        restore_failure(fake.restore(V4, "*nat\n:KUBE-X - [0:0]\n-A KUBE-X \"unterminated\nCOMMIT\n", NOFLUSH));
    assert_eq!(syntax.line, Some(3), "{syntax}");
    assert!(syntax.message.starts_with("unterminated quote"), "{syntax}");
    let open = restore_failure(fake.restore(V4, "*nat\n:KUBE-X - [0:0]\n", NOFLUSH));
    assert_eq!(open.line, Some(1), "{open}");
    assert_eq!(fake.state_text(V4), "", "nothing loaded");
}

#[test]
fn injected_failures_change_nothing_and_are_logged() {
    let fake = FakeIptables::new();
    fake.fail_next(2);
    let input = "*filter\n:KUBE-A - [0:0]\nCOMMIT\n";
    for _ in 0..2 {
        let err = restore_failure(fake.restore(V4, input, NOFLUSH));
        assert_eq!(err.message, "injected failure");
    }
    assert_eq!(fake.state_text(V4), "");
    fake.restore(V4, input, NOFLUSH).unwrap();
    assert_eq!(fake.restore_log(V4), [input; 3]);
    assert!(fake.restore_log(V6).is_empty());
}

/// Every rule of our chains, per table and chain, in order and in canonical form.
fn kube_rules(ruleset: &Ruleset) -> Vec<(TableName, String, Vec<CanonicalRule>)> {
    let mut out = Vec::new();
    for table in &ruleset.tables {
        for chain in table.chains.iter().filter(|c| c.name.as_str().starts_with("KUBE-")) {
            let rules = table.chain_rules(chain.name.as_str()).map(canonical).collect();
            out.push((table.name, chain.name.to_string(), rules));
        }
    }
    out.sort_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
    out
}

#[test]
fn save_parses_back_to_what_was_restored() {
    let desired =
        render(&state(vec![build::service("web", "10.96.0.10", &["10.244.1.5:8080", "10.244.2.7:8080"])]), &node(V4));
    let fake = FakeIptables::new();
    fake.restore(V4, &desired.to_string(), NOFLUSH).unwrap();
    let saved = parse(&fake.save(V4, None).unwrap()).unwrap();
    assert_eq!(kube_rules(&saved), kube_rules(&desired));
    assert_eq!(fake.save(V4, None).unwrap(), fake.state_text(V4));
    let resaved = FakeIptables::new();
    resaved.set_rules(V4, &fake.state_text(V4)).unwrap();
    assert_eq!(resaved.state_text(V4), fake.state_text(V4), "save output restores to the same state");
    let untouched = fake.save(V4, Some(TableName::Mangle)).unwrap();
    assert!(untouched.starts_with("*mangle\n:PREROUTING ACCEPT [0:0]\n"), "{untouched}");
    assert_eq!(fake.state_text(V6), "", "families are separate");
}

#[test]
fn apply_once_twice_inserts_jumps_once() {
    let node = node(V4);
    let desired = render(&state(vec![build::service("web", "10.96.0.10", &["10.244.1.5:8080"])]), &node);
    let jumps = jump_rules(&node);
    let fake: Arc<dyn Iptables + Send + Sync> = Arc::new(preloaded());
    let first = apply_once(fake.as_ref(), V4, &desired, &jumps).unwrap();
    let second = apply_once(fake.as_ref(), V4, &desired, &jumps).unwrap();
    assert_eq!((first.jumps_inserted, second.jumps_inserted), (jumps.len(), 0));
    assert_eq!(first.chains_deleted, 0, "KUBE-A and KUBE-B are not service chains");
    let saved = parse(&fake.save(V4, Some(TableName::Nat)).unwrap()).unwrap();
    let nat = saved.table(TableName::Nat).unwrap();
    let prerouting: Vec<_> = nat.chain_rules("PREROUTING").filter(|r| r.target() == Some("KUBE-SERVICES")).collect();
    assert_eq!(prerouting.len(), 1);
    let postrouting: Vec<_> = nat.chain_rules("POSTROUTING").filter_map(|r| r.target()).collect();
    assert_eq!(postrouting, ["KUBE-POSTROUTING", "FLANNEL-POSTRTG"], "flannel's jump survives, ours first");
    assert!(nat.is_declared("KUBE-PROXY-CANARY"));
}

#[test]
fn flush_table_removes_our_chains_and_canary() {
    let fake = preloaded();
    fake.restore(V4, "*filter\n:KUBE-F - [0:0]\nCOMMIT\n", NOFLUSH).unwrap();
    fake.flush_table(V4, TableName::Nat);
    assert_eq!(chains(&fake, TableName::Nat), ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]);
    assert!(chains(&fake, TableName::Filter).contains(&"KUBE-F".to_string()));
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<FakeIptables>();
}
