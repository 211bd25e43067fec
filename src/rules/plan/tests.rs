use super::*;
use crate::model::build::{self, node, state};
use crate::model::{ClusterState, IpFamily};
use crate::rules::chain_names::{endpoint_chain, ServiceChains};
use crate::rules::render::render;
use crate::rules::ruleset::Rule;

const V4: IpFamily = IpFamily::V4;

fn rendered(state: &ClusterState, family: IpFamily) -> Ruleset {
    render(state, &node(family))
}

/// `default/web` with three endpoints and `default/db` with one.
fn base() -> ClusterState {
    state(vec![
        build::service("web", "10.96.0.10", &["10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.9:8080"]),
        build::service("db", "10.96.0.20", &["10.244.1.6:5432"]),
    ])
}

fn sep(name: &str, addr: &str) -> String {
    endpoint_chain(&build::port_name("default", name, "http"), &addr.parse().unwrap()).to_string()
}

fn svc_chain(name: &str) -> String {
    ServiceChains::for_service(&build::port_name("default", name, "http")).cluster.to_string()
}

/// (table, declared chains, chains with rules written, deleted chains) of one plan table.
type Shape = (TableName, Vec<String>, Vec<String>, Vec<String>);

fn shape(plan: &Ruleset) -> Vec<Shape> {
    let names = |it: &mut dyn Iterator<Item = &ChainName>| {
        let mut v: Vec<String> = it.map(ToString::to_string).collect();
        v.sort();
        v.dedup();
        v
    };
    plan.tables
        .iter()
        .map(|t| {
            let declared = names(&mut t.chains.iter().map(|c| &c.name));
            let written = names(&mut t.rules.iter().map(|r| &r.chain));
            (t.name, declared, written, names(&mut t.deletes.iter()))
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every rule of every chain the plan writes, exactly as in `next`.
fn assert_chains_whole(plan: &Ruleset, next: &Ruleset) {
    for table in &plan.tables {
        let full = next.table(table.name).unwrap();
        for decl in &table.chains {
            let written: Vec<&Rule> = table.chain_rules(decl.name.as_str()).collect();
            let wanted: Vec<&Rule> = full.chain_rules(decl.name.as_str()).collect();
            assert_eq!(written, wanted, "{} {}", table.name, decl.name);
        }
    }
}

#[test]
fn unchanged_plans_nothing() {
    let r = rendered(&base(), V4);
    assert_eq!(plan_partial(&r, &r), Ruleset::default());
    assert!(changed_chains(&r, &r).is_empty());
    assert_eq!(PlanStats::of(&plan_partial(&r, &r)), PlanStats::default());
    assert_eq!(plan_partial(&Ruleset::default(), &Ruleset::default()), Ruleset::default());
}

#[test]
fn one_endpoint_replaced_writes_the_service_and_the_new_endpoint_only() {
    let a = base();
    let mut b = a.clone();
    b.services.insert(
        build::port_name("default", "web", "http"),
        build::service("web", "10.96.0.10", &["10.244.1.5:8080", "10.244.2.7:8080", "10.244.4.4:8080"]).into(),
    );
    let (ra, rb) = (rendered(&a, V4), rendered(&b, V4));
    let plan = plan_partial(&ra, &rb);
    let expected_written = sorted(vec![svc_chain("web"), sep("web", "10.244.4.4:8080")]);
    assert_eq!(
        shape(&plan),
        [(TableName::Nat, expected_written.clone(), expected_written, vec![sep("web", "10.244.3.9:8080")])],
        "KUBE-SERVICES, filter and the unchanged SEP chains are not written:\n{plan}"
    );
    assert_chains_whole(&plan, &rb);
    let kinds: Vec<(String, ChangeKind)> =
        changed_chains(&ra, &rb).into_iter().map(|c| (c.chain.to_string(), c.kind)).collect();
    assert_eq!(
        kinds,
        [
            (svc_chain("web"), ChangeKind::Changed),
            (sep("web", "10.244.4.4:8080"), ChangeKind::Added),
            (sep("web", "10.244.3.9:8080"), ChangeKind::Removed),
        ]
    );
}

#[test]
fn one_endpoint_removed_rewrites_the_probabilities_and_deletes_its_chain() {
    let a = base();
    let mut b = a.clone();
    b.services.insert(
        build::port_name("default", "web", "http"),
        build::service("web", "10.96.0.10", &["10.244.1.5:8080", "10.244.2.7:8080"]).into(),
    );
    let plan = plan_partial(&rendered(&a, V4), &rendered(&b, V4));
    let web = vec![svc_chain("web")];
    assert_eq!(shape(&plan), [(TableName::Nat, web.clone(), web, vec![sep("web", "10.244.3.9:8080")])]);
    assert!(plan.to_string().contains("--probability 0.5000000000"), "{plan}");
}

#[test]
fn service_added_rewrites_kube_services_and_writes_its_chains() {
    let a = base();
    let mut b = a.clone();
    let new = build::service("api", "10.96.0.30", &["10.244.5.5:443", "10.244.6.6:443"]);
    b.services.insert(new.name.clone(), new.into());
    let (ra, rb) = (rendered(&a, V4), rendered(&b, V4));
    let plan = plan_partial(&ra, &rb);
    let nat = sorted(vec![
        "KUBE-SERVICES".into(),
        svc_chain("api"),
        sep("api", "10.244.5.5:443"),
        sep("api", "10.244.6.6:443"),
    ]);
    assert_eq!(shape(&plan), [(TableName::Nat, nat.clone(), nat, vec![])]);
    assert_chains_whole(&plan, &rb);
    let services: Vec<&Rule> = plan.table(TableName::Nat).unwrap().chain_rules("KUBE-SERVICES").collect();
    assert_eq!(services.len(), 4, "every KUBE-SERVICES rule, the nodeports one last");
}

#[test]
fn service_removed_deletes_its_chains_and_rewrites_kube_services() {
    let a = base();
    let mut b = a.clone();
    b.services.remove(&build::port_name("default", "web", "http"));
    let plan = plan_partial(&rendered(&a, V4), &rendered(&b, V4));
    let deleted = sorted(vec![
        svc_chain("web"),
        sep("web", "10.244.1.5:8080"),
        sep("web", "10.244.2.7:8080"),
        sep("web", "10.244.3.9:8080"),
    ]);
    let services = vec!["KUBE-SERVICES".to_string()];
    assert_eq!(shape(&plan), [(TableName::Nat, services.clone(), services, deleted)]);
    // The writer flushes deleted chains with the declarations and deletes them after every
    // rule, so KUBE-SERVICES no longer jumps to KUBE-SVC-… when it goes.
    let text = plan.to_string();
    let position = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} in\n{text}"));
    let (flush, delete) = (position(&format!(":{} - [0:0]", svc_chain("web"))), position("-X "));
    let last_rule = text.rfind("-A KUBE-SERVICES").unwrap();
    assert!(flush < position("-A KUBE-SERVICES") && last_rule < delete, "{text}");
}

#[test]
fn filter_only_change_leaves_nat_alone() {
    let a = base();
    let mut b = a.clone();
    let empty = build::service("empty", "10.96.0.40", &[]);
    b.services.insert(empty.name.clone(), empty.into());
    let plan = plan_partial(&rendered(&a, V4), &rendered(&b, V4));
    let services = vec!["KUBE-SERVICES".to_string()];
    assert_eq!(shape(&plan), [(TableName::Filter, services.clone(), services, vec![])], "{plan}");
    assert!(plan.to_string().contains("has no endpoints"), "{plan}");
}

#[test]
fn ipv6_endpoint_change() {
    let six = |eps: &[&str]| state(vec![build::service("web", "fd00:96::10", eps)]);
    let (a, b) = (six(&["[fd00:10:244::5]:8080", "[fd00:10:244::6]:8080"]), six(&["[fd00:10:244::5]:8080"]));
    let (ra, rb) = (rendered(&a, IpFamily::V6), rendered(&b, IpFamily::V6));
    let plan = plan_partial(&ra, &rb);
    let web = vec![svc_chain("web")];
    assert_eq!(shape(&plan), [(TableName::Nat, web.clone(), web, vec![sep("web", "[fd00:10:244::6]:8080")])]);
    assert!(plan.to_string().contains("-j KUBE-SEP-"), "{plan}");
}

#[test]
fn stats_count_the_plan() {
    let a = base();
    let mut b = a.clone();
    b.services.remove(&build::port_name("default", "db", "http"));
    let plan = plan_partial(&rendered(&a, V4), &rendered(&b, V4));
    let stats = PlanStats::of(&plan);
    let expected = PlanStats { chains_written: 1, rules_written: 2, chains_deleted: 2, bytes: plan.to_string().len() };
    assert_eq!(stats, expected, "{plan}");
}

fn table(name: TableName, chains: &[&str], rules: &[(&str, &str)]) -> Table {
    let mut t = Table::new(name);
    for c in chains {
        t.declare(&ChainName::new(*c).unwrap());
    }
    for (chain, target) in rules {
        t.rules.push(Rule::append(&ChainName::new(*chain).unwrap()).jump(target));
    }
    t
}

#[test]
fn only_kube_chains_are_deleted_and_tables_may_vanish() {
    let last = Ruleset {
        tables: vec![
            table(TableName::Filter, &["KUBE-A", "OTHER"], &[("KUBE-A", "ACCEPT"), ("OTHER", "DROP")]),
            table(TableName::Nat, &["KUBE-B"], &[]),
        ],
    };
    let next = Ruleset { tables: vec![table(TableName::Filter, &["KUBE-A"], &[("KUBE-A", "ACCEPT")])] };
    let plan = plan_partial(&last, &next);
    assert_eq!(shape(&plan), [(TableName::Nat, vec![], vec![], vec!["KUBE-B".to_string()])]);
}

#[test]
fn an_emptied_chain_is_declared_without_rules_and_a_new_empty_chain_is_created() {
    let last = Ruleset { tables: vec![table(TableName::Nat, &["KUBE-A"], &[("KUBE-A", "ACCEPT")])] };
    let next = Ruleset { tables: vec![table(TableName::Nat, &["KUBE-A", "KUBE-B"], &[])] };
    let plan = plan_partial(&last, &next);
    let both = vec!["KUBE-A".to_string(), "KUBE-B".to_string()];
    assert_eq!(shape(&plan), [(TableName::Nat, both, vec![], vec![])]);
}

#[test]
fn rule_order_within_a_chain_counts() {
    let ab = [("KUBE-A", "ACCEPT"), ("KUBE-A", "DROP")];
    let ba = [("KUBE-A", "DROP"), ("KUBE-A", "ACCEPT")];
    let last = Ruleset { tables: vec![table(TableName::Filter, &["KUBE-A"], &ab)] };
    let next = Ruleset { tables: vec![table(TableName::Filter, &["KUBE-A"], &ba)] };
    assert_eq!(plan_partial(&last, &next).rule_count(), 2);
}

/// A large rendered cluster plans one endpoint change in well under 100 ms (release builds;
/// debug builds are ~10× slower, so the bound here is generous and the bench has the number).
#[test]
fn large_plan_is_fast() {
    let a = state(
        (0..2000u32)
            .map(|s| {
                let eps: Vec<String> =
                    (0..10).map(|e| format!("10.{}.{}.{}:8080", 128 + s / 250, s % 250, e + 1)).collect();
                let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
                build::service(&format!("svc-{s}"), &format!("172.30.{}.{}", s / 250, s % 250), &eps)
            })
            .collect(),
    );
    let mut b = a.clone();
    if let Some(s) = b.services.get_mut(&build::port_name("default", "svc-7", "http")).map(std::sync::Arc::make_mut) {
        s.endpoints[3].addr = "10.200.0.1:8080".parse().unwrap();
    }
    let (ra, rb) = (rendered(&a, V4), rendered(&b, V4));
    let started = std::time::Instant::now();
    let plan = plan_partial(&ra, &rb);
    let elapsed = started.elapsed();
    assert_eq!(PlanStats::of(&plan).chains_written, 2, "{plan}");
    assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn later_sections_flush_delete_and_redeclare() {
    let mut again = table(TableName::Nat, &["KUBE-A", "KUBE-B"], &[("KUBE-A", "DROP"), ("KUBE-B", "ACCEPT")]);
    again.deletes.push(ChainName::new("KUBE-C").unwrap());
    let gone = Table { deletes: vec![ChainName::new("KUBE-B").unwrap()], ..Table::new(TableName::Nat) };
    let last = Ruleset {
        tables: vec![
            table(TableName::Nat, &["KUBE-A", "KUBE-C"], &[("KUBE-A", "ACCEPT"), ("KUBE-C", "ACCEPT")]),
            again,
            gone,
            table(TableName::Nat, &["KUBE-B"], &[("KUBE-B", "RETURN")]),
        ],
    };
    // What `last` leaves: KUBE-A [DROP], KUBE-B [RETURN] (deleted, declared again); no KUBE-C.
    let next = Ruleset {
        tables: vec![table(TableName::Nat, &["KUBE-A", "KUBE-B"], &[("KUBE-A", "DROP"), ("KUBE-B", "RETURN")])],
    };
    assert_eq!(plan_partial(&last, &next), Ruleset::default());
    let kinds: Vec<_> = changed_chains(&next, &last).into_iter().map(|c| (c.chain.to_string(), c.kind)).collect();
    assert!(kinds.is_empty(), "{kinds:?}");
}
