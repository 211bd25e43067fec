//! Applier tests against the in-memory `FakeIptables`.

use super::*;

use crate::apply::exec::Result as ExecResult;
use crate::apply::fake::FakeIptables;
use crate::model::build::{self, node, state};
use crate::rules::extras::plan;
use crate::rules::render::{jump_rules, render};

const V4: IpFamily = IpFamily::V4;

/// The fake kernel, reporting the nft backend (so big inputs go in pieces).
struct Nft<'a>(&'a FakeIptables);

impl Iptables for Nft<'_> {
    fn restore(&self, family: IpFamily, input: &str, opts: RestoreOptions) -> ExecResult<()> {
        self.0.restore(family, input, opts)
    }
    fn save(&self, family: IpFamily, table: Option<TableName>) -> ExecResult<String> {
        self.0.save(family, table)
    }
    fn backend(&self) -> Backend {
        Backend::Nft
    }
}

fn desired(services: usize) -> (Ruleset, Vec<JumpRule>) {
    let services = (0..services)
        .map(|i| {
            build::service(&format!("svc-{i}"), &format!("10.96.0.{}", i + 1), &[&format!("10.244.1.{}:8080", i + 1)])
        })
        .collect();
    let node = node(V4);
    (render(&state(services), &node), jump_rules(&node))
}

fn small_pieces(mode: Mode) -> ApplierOptions {
    ApplierOptions { nft_chains_per_transaction: 8, ..ApplierOptions::for_backend(Backend::Nft, mode) }
}

/// Userspace mode's portal chain and its jump, as an older kube-proxy left them.
const USERSPACE_LEFTOVERS: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
    :KUBE-PORTALS-CONTAINER - [0:0]\n-A PREROUTING -m comment --comment \"handle ClusterIPs\" \
    -j KUBE-PORTALS-CONTAINER\n-A KUBE-PORTALS-CONTAINER -d 10.96.0.1/32 -p tcp -j REDIRECT --to-ports 4000\nCOMMIT\n";

#[test]
fn full_apply_in_pieces_on_nft_ends_where_one_transaction_does() {
    let (desired, jumps) = desired(12);
    let (whole, pieces) = (FakeIptables::new(), FakeIptables::new());
    let one = Applier::new(&whole, V4, Mode::Iptables).full(&desired, &jumps, History::Unknown).unwrap();
    let nft = Nft(&pieces);
    let many =
        Applier::with_options(&nft, V4, small_pieces(Mode::Iptables)).full(&desired, &jumps, History::Unknown).unwrap();
    assert_eq!(one.transactions, 1, "the fake's backend is not nft: never split");
    assert!(many.transactions > 3, "{} pieces", many.transactions);
    assert_eq!(pieces.restore_log(V4).len(), many.transactions);
    assert_eq!(pieces.state_text(V4), whole.state_text(V4));
    assert_eq!(many.report, one.report, "the same rules, however they are cut");
    assert_eq!(one.report, ApplyReport::of(&plan(&desired, &jumps, &Ruleset::default())));
}

#[test]
fn dry_run_returns_what_full_writes_and_writes_nothing() {
    let (desired, jumps) = desired(12);
    let fake = FakeIptables::new();
    let nft = Nft(&fake);
    let applier = Applier::with_options(&nft, V4, small_pieces(Mode::Iptables));
    let texts = applier.full_dry_run(&desired, &jumps).unwrap();
    assert!(fake.restore_log(V4).is_empty());
    applier.full(&desired, &jumps, History::Unknown).unwrap();
    assert_eq!(fake.restore_log(V4), texts);
}

#[test]
fn full_apply_removes_the_other_modes_chains_only() {
    let (desired, jumps) = desired(2);
    let fake = FakeIptables::new();
    fake.set_rules(V4, USERSPACE_LEFTOVERS).unwrap();
    let applied = Applier::new(&fake, V4, Mode::Iptables).full(&desired, &jumps, History::Unknown).unwrap();
    let state = fake.state_text(V4);
    assert!(!state.contains("KUBE-PORTALS-CONTAINER"), "{state}");
    assert!(state.contains(":KUBE-SVC-"), "{state}");
    assert_eq!(applied.report.chains_deleted, 1);

    // And back: userspace mode removes iptables mode's chains, not its own.
    let portals = parse::parse(USERSPACE_LEFTOVERS).unwrap();
    let portal_jumps: Vec<JumpRule> = Vec::new();
    Applier::new(&fake, V4, Mode::Userspace).full(&portals, &portal_jumps, History::Unknown).unwrap();
    let state = fake.state_text(V4);
    assert!(state.contains(":KUBE-PORTALS-CONTAINER"), "{state}");
    assert!(!state.contains("KUBE-SVC-") && !state.contains(":KUBE-SERVICES"), "{state}");
}

#[test]
fn partial_apply_writes_only_changes_and_nothing_when_none() {
    let (before, jumps) = desired(3);
    let (after, _) = desired(4);
    let fake = FakeIptables::new();
    let applier = Applier::new(&fake, V4, Mode::Iptables);
    applier.full(&before, &jumps, History::Unknown).unwrap();
    assert_eq!(applier.partial(&before, &before).unwrap(), Applied::default());
    assert_eq!(fake.restore_log(V4).len(), 1, "no restore when nothing changed");
    let applied = applier.partial(&before, &after).unwrap();
    assert_eq!(applied.transactions, 1);
    assert!(applied.bytes < after.to_string().len(), "only the changed chains");
    let fresh = FakeIptables::new();
    Applier::new(&fresh, V4, Mode::Iptables).full(&after, &jumps, History::Unknown).unwrap();
    assert_eq!(fake.state_text(V4), fresh.state_text(V4));
}

#[test]
fn canary_follows_the_mangle_table() {
    let (desired, jumps) = desired(1);
    let fake = FakeIptables::new();
    let applier = Applier::new(&fake, V4, Mode::Iptables);
    applier.full(&desired, &jumps, History::Unknown).unwrap();
    assert!(!applier.canary_missing());
    fake.flush_table(V4, TableName::Mangle);
    assert!(applier.canary_missing());
}

#[test]
fn full_sync_reads_only_declarations_and_built_in_chain_rules() {
    let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\n\
                 -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
                 -A KUBE-SVC-X -j KUBE-SEP-Y\n-A POSTROUTING -j FLANNEL-POSTRTG\nCOMMIT\n";
    let kept = without_user_chain_rules(saved);
    assert_eq!(
        kept,
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\n\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -j FLANNEL-POSTRTG\nCOMMIT\n"
    );
}
