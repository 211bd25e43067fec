use super::*;
use crate::rules::ruleset::Arg;
use crate::rules::ruleset::{ChainDecl, ChainName, Table};

fn chain(name: &str) -> ChainName {
    ChainName::new(name).unwrap()
}

fn jump(table: TableName, from: &str, ctstate: bool, comment: &str, to: &str) -> JumpRule {
    let mut rule = Rule::append(&chain(from));
    if ctstate {
        rule = rule.module("conntrack").arg(Arg::new("--ctstate", "NEW"));
    }
    let mut rule = rule.comment(comment).jump(to);
    rule.op = RuleOp::Insert(Some(1));
    JumpRule { table, rule }
}

fn jumps() -> Vec<JumpRule> {
    vec![
        jump(TableName::Filter, "FORWARD", true, "kubernetes service portals", "KUBE-SERVICES"),
        jump(TableName::Nat, "OUTPUT", false, "kubernetes service portals", "KUBE-SERVICES"),
        jump(TableName::Nat, "PREROUTING", false, "kubernetes service portals", "KUBE-SERVICES"),
    ]
}

fn desired() -> Ruleset {
    let mut filter = Table::new(TableName::Filter);
    filter.declare(&chain("KUBE-SERVICES"));
    let mut nat = Table::new(TableName::Nat);
    for name in ["KUBE-SERVICES", "KUBE-SVC-NEW", "KUBE-SEP-NEW"] {
        nat.declare(&chain(name));
    }
    nat.rules.push(Rule::append(&chain("KUBE-SERVICES")).dst("10.96.0.10".parse().unwrap()).jump("KUBE-SVC-NEW"));
    Ruleset { tables: vec![filter, nat] }
}

/// A table as `iptables-save` would show it: built-ins with policies, then user chains.
fn saved(name: TableName, builtins: &[&str], chains: &[&str], rules: Vec<Rule>) -> Table {
    let mut t = Table::new(name);
    for b in builtins {
        t.chains.push(ChainDecl { name: chain(b), policy: Some("ACCEPT".into()) });
    }
    for c in chains {
        t.declare(&chain(c));
    }
    t.rules = rules;
    t
}

fn inserted(plan: &Ruleset) -> Vec<String> {
    plan.tables
        .iter()
        .flat_map(|t| {
            t.rules.iter().filter(|r| matches!(r.op, RuleOp::Insert(_))).map(move |r| format!("{} {r}", t.name))
        })
        .collect()
}

#[test]
fn fresh_node_gets_every_jump_in_order_and_canaries() {
    let out = plan(&desired(), &jumps(), &Ruleset::default());
    assert_eq!(inserted(&out), [
        "filter -I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "nat -I OUTPUT 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "nat -I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    ]);
    let order: Vec<TableName> = out.tables.iter().map(|t| t.name).collect();
    assert_eq!(order, [TableName::Filter, TableName::Nat, TableName::Mangle]);
    for t in &out.tables {
        assert!(t.is_declared(KUBE_PROXY_CANARY), "{} lacks the canary", t.name);
        assert!(t.deletes.is_empty());
    }
    // Everything desired is still there, in its order, before the inserts.
    let nat = out.table(TableName::Nat).unwrap();
    assert_eq!(nat.rules[0], desired().table(TableName::Nat).unwrap().rules[0]);
    let text = out.to_string();
    assert!(text.find(":KUBE-SVC-NEW").unwrap() < text.find("-I PREROUTING 1").unwrap());
}

#[test]
fn jumps_already_present_in_saved_form_are_not_inserted_again() {
    // iptables-save order: `-p`/`-s`/`-d` first, matches in given order; we only compare meaning.
    let fwd = Rule::append(&chain("FORWARD"))
        .comment("kubernetes service portals")
        .module("conntrack")
        .arg(Arg::new("--ctstate", "NEW"))
        .jump("KUBE-SERVICES");
    let pre = Rule::append(&chain("PREROUTING")).comment("kubernetes service portals").jump("KUBE-SERVICES");
    let current = Ruleset {
        tables: vec![
            saved(TableName::Filter, &["INPUT", "FORWARD", "OUTPUT"], &["KUBE-SERVICES"], vec![fwd]),
            saved(TableName::Nat, &["PREROUTING", "OUTPUT"], &["KUBE-SERVICES"], vec![pre]),
        ],
    };
    let out = plan(&desired(), &jumps(), &current);
    assert_eq!(
        inserted(&out),
        ["nat -I OUTPUT 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"]
    );
}

#[test]
fn a_jump_in_another_chain_or_with_another_comment_does_not_count() {
    let wrong_chain = Rule::append(&chain("INPUT")).comment("kubernetes service portals").jump("KUBE-SERVICES");
    let wrong_comment = Rule::append(&chain("PREROUTING")).comment("something else").jump("KUBE-SERVICES");
    let current = Ruleset { tables: vec![saved(TableName::Nat, &[], &[], vec![wrong_chain, wrong_comment])] };
    assert_eq!(inserted(&plan(&desired(), &jumps(), &current)).len(), 3);
}

#[test]
fn stale_service_chains_are_deleted_and_nothing_else() {
    let current = Ruleset {
        tables: vec![saved(
            TableName::Nat,
            &["PREROUTING", "POSTROUTING"],
            &[
                "DOCKER",
                "FLANNEL-POSTRTG",
                "KUBE-KUBELET-CANARY",
                "KUBE-MARK-DROP",
                "KUBE-SERVICES",
                "KUBE-SEP-NEW",
                "KUBE-SEP-OLD",
                "KUBE-SVC-NEW",
                "KUBE-SVC-OLD",
                "KUBE-FW-OLD",
            ],
            Vec::new(),
        )],
    };
    let out = plan(&desired(), &[], &current);
    let deleted: Vec<&str> = out.table(TableName::Nat).unwrap().deletes.iter().map(ChainName::as_str).collect();
    assert_eq!(deleted, ["KUBE-SEP-OLD", "KUBE-SVC-OLD", "KUBE-FW-OLD"]);
    assert!(out.table(TableName::Filter).unwrap().deletes.is_empty());
    let text = out.to_string();
    assert!(text.contains(":KUBE-SVC-OLD - [0:0]\n") && text.contains("-X KUBE-SVC-OLD\n"), "{text}");
    assert!(!text.contains("DOCKER") && !text.contains("FLANNEL") && !text.contains("MARK-DROP"), "{text}");
}

#[test]
fn planning_is_idempotent_once_applied() {
    let first = plan(&desired(), &jumps(), &Ruleset::default());
    // Simulate the kernel after the restore: inserted jumps become ordinary rules.
    let mut applied = first.clone();
    for t in &mut applied.tables {
        for r in &mut t.rules {
            r.op = RuleOp::Append;
        }
    }
    let second = plan(&desired(), &jumps(), &applied);
    assert!(inserted(&second).is_empty());
    assert_eq!(ApplyReport::of(&second).jumps_inserted, 0);
    assert_eq!(ApplyReport::of(&first).jumps_inserted, 3);
}

#[test]
fn normaliser_compares_meaning_not_spelling() {
    let a = |args: Vec<Arg>| Rule::new(RuleOp::Append, chain("INPUT"), args);
    let ours = a(vec![
        Arg::new("-m", "tcp"),
        Arg::new("-p", "tcp"),
        Arg::new("-d", "10.96.0.10"),
        Arg::new("-m", "conntrack"),
        Arg::new("--ctstate", "RELATED,ESTABLISHED"),
        Arg::new("-j", "KUBE-X"),
    ]);
    let theirs = a(vec![
        Arg::new("-d", "10.96.0.10/32"),
        Arg::new("--protocol", "TCP"),
        Arg::new("-m", "conntrack"),
        Arg::new("--ctstate", "ESTABLISHED,RELATED"),
        Arg::new("--jump", "KUBE-X"),
    ]);
    assert!(has_rule(&in_input(theirs.clone()), TableName::Filter, &ours));
    let negated = a(vec![Arg::new("-d", "10.96.0.10").negate(), Arg::new("-p", "tcp"), Arg::new("-j", "KUBE-X")]);
    assert!(!has_rule(&in_input(theirs), TableName::Filter, &negated));
}

fn in_input(rule: Rule) -> Ruleset {
    let mut table = Table::new(TableName::Filter);
    table.rules.push(rule);
    Ruleset { tables: vec![table] }
}

#[test]
fn merged_extras_write_the_same_text_as_the_plan() {
    let current = Ruleset {
        tables: vec![saved(TableName::Nat, &["PREROUTING", "OUTPUT"], &["KUBE-SVC-OLD", "KUBE-SERVICES"], Vec::new())],
    };
    for current in [Ruleset::default(), current] {
        let extra = extras(&desired(), &jumps(), &current);
        let merged = crate::rules::write::Merged(&desired(), &extra).to_string();
        assert_eq!(merged, plan(&desired(), &jumps(), &current).to_string());
        // Only the additions, never a copy of the rendered rules.
        assert_eq!(extra.rule_count(), jumps().len());
    }
}

#[test]
fn a_missing_jump_target_is_created_empty_and_a_present_one_left_alone() {
    let firewall = |from: &str| {
        let mut rule = Rule::append(&chain(from)).jump("KUBE-FIREWALL");
        rule.op = RuleOp::Insert(Some(1));
        JumpRule { table: TableName::Filter, rule }
    };
    let jumps = [firewall("INPUT"), firewall("OUTPUT")];
    // Neither rendered nor present: declared once (created empty), before the jumps use it.
    let fresh = extras(&desired(), &jumps, &Ruleset::default());
    let filter = fresh.table(TableName::Filter).unwrap();
    assert_eq!(filter.chains.iter().filter(|c| c.name.as_str() == "KUBE-FIREWALL").count(), 1);
    assert_eq!(inserted(&fresh).len(), 2);
    // Present (kubelet's, with its rules): not declared again, which would flush it.
    let current = Ruleset { tables: vec![saved(TableName::Filter, &["INPUT", "OUTPUT"], &["KUBE-FIREWALL"], vec![])] };
    let kept = extras(&desired(), &jumps, &current);
    assert!(!kept.table(TableName::Filter).unwrap().is_declared("KUBE-FIREWALL"));
}
