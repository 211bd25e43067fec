//! Syncer tests against the in-memory `FakeIptables` and `FakeConntrack`.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::apply::fake::FakeIptables;
use crate::conntrack::{FakeConntrack, Flow};
use crate::model::{build, ClusterState, Endpoint, Protocol, ServicePort, ServicePortName};
use crate::rules::chain_names::ServiceChains;

fn service(name: &str, ip: &str, protocol: Protocol, endpoints: &[&str]) -> ServicePort {
    let mut eps: Vec<Endpoint> = endpoints
        .iter()
        .map(|e| Endpoint { node_name: Some("node-1".into()), ..build::endpoint(e.parse().expect("endpoint")) })
        .collect();
    eps.sort_by_key(|e| e.key());
    let name = ServicePortName { namespace: "ns".into(), name: name.into(), port: String::new().into(), protocol };
    ServicePort { endpoints: eps, ..ServicePort::new(name, vec![ip.parse().expect("ip")], 80) }
}

fn snapshot(services: Vec<ServicePort>) -> Snapshot {
    Snapshot {
        state: ClusterState { services: services.into_iter().map(|s| (s.name.clone(), s.into())).collect() },
        node: None,
        problems: vec![],
    }
}

struct Rig {
    ipt: Arc<FakeIptables>,
    ct: Arc<FakeConntrack>,
    syncer: Syncer,
}

fn rig() -> Rig {
    let ipt = Arc::new(FakeIptables::new());
    let ct = Arc::new(FakeConntrack::new());
    let opts = SyncOptions {
        min_sync_period: Duration::from_secs(1),
        sync_period: Duration::from_secs(30),
        families: vec![IpFamily::V4],
        node: NodeOptions {
            node_name: "node-1".into(),
            cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
            ..NodeOptions::default()
        },
        flannel: None,
    };
    let (metrics, _registry) = Metrics::new();
    let health = HealthState::new(Duration::from_secs(60));
    let syncer = Syncer::new(opts, ipt.clone(), ct.clone(), metrics, health);
    Rig { ipt, ct, syncer }
}

fn web(endpoints: &[&str]) -> ServicePort {
    service("web", "10.96.0.10", Protocol::Tcp, endpoints)
}

#[test]
fn first_sync_is_full_then_nothing_to_do() {
    let mut r = rig();
    let snap = snapshot(vec![web(&["10.244.1.2:8080", "10.244.2.2:8080"])]);
    let reports = r.syncer.sync(&snap, &Changes::default(), false).expect("sync");
    assert_eq!(reports[0].kind, SyncKind::Full);
    let log = r.ipt.restore_log(IpFamily::V4);
    assert_eq!(log.len(), 1);
    assert!(log[0].contains("-I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"));
    assert!(log[0].contains(":KUBE-PROXY-CANARY - [0:0]"));
    let reports = r.syncer.sync(&snap, &Changes::default(), false).expect("sync");
    assert_eq!((reports[0].kind, reports[0].bytes), (SyncKind::Partial, 0));
    assert_eq!(r.ipt.restore_log(IpFamily::V4).len(), 1, "no restore when nothing changed");
}

#[test]
fn endpoint_change_writes_only_the_service_chains() {
    let mut r = rig();
    let other = service("other", "10.96.0.11", Protocol::Tcp, &["10.244.3.3:80"]);
    r.syncer.sync(&snapshot(vec![web(&["10.244.1.2:8080"]), other.clone()]), &Changes::default(), false).expect("sync");
    let snap = snapshot(vec![web(&["10.244.1.2:8080", "10.244.2.2:8080"]), other]);
    let reports = r.syncer.sync(&snap, &Changes::default(), false).expect("sync");
    assert_eq!(reports[0].kind, SyncKind::Partial);
    let input = r.ipt.restore_log(IpFamily::V4).pop().expect("partial input");
    assert!(input.contains(":KUBE-SVC-"), "{input}");
    assert!(!input.contains(":KUBE-SERVICES"), "KUBE-SERVICES unchanged, must not be rewritten:\n{input}");
    assert!(!input.contains("ns/other"), "unchanged services are not written:\n{input}");
    assert!(!input.contains("-I "), "no jump rules on a partial sync:\n{input}");
    assert!(reports[0].bytes < 1500, "{} bytes", reports[0].bytes);
}

#[test]
fn failed_partial_falls_back_to_full_and_failed_full_keeps_rules() {
    let mut r = rig();
    r.syncer.sync(&snapshot(vec![web(&["10.244.1.2:8080"])]), &Changes::default(), false).expect("sync");
    let good = r.ipt.state_text(IpFamily::V4);
    r.ipt.fail_next(1);
    let snap = snapshot(vec![web(&["10.244.2.2:8080"])]);
    let reports = r.syncer.sync(&snap, &Changes::default(), false).expect("falls back");
    assert!(reports[0].partial_failed && reports[0].kind == SyncKind::Full);
    assert!(r.ipt.state_text(IpFamily::V4).contains("10.244.2.2:8080"));

    r.ipt.fail_next(5);
    let before = r.ipt.state_text(IpFamily::V4);
    let err = r.syncer.sync(&snapshot(vec![web(&["10.244.9.9:8080"])]), &Changes::default(), false);
    assert!(matches!(err, Err(Error::Restore { .. })), "{err:?}");
    assert_eq!(r.ipt.state_text(IpFamily::V4), before, "last good rules stay");
    assert_ne!(before, good);
}

#[test]
fn first_full_sync_removes_stale_chains_and_keeps_other_owners() {
    let mut r = rig();
    r.ipt
        .set_rules(
            IpFamily::V4,
            "*nat\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n:KUBE-SVC-STALE0000000000 - [0:0]\n\
             -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
             -A FLANNEL-POSTRTG -s 10.244.0.0/16 -j RETURN\nCOMMIT\n",
        )
        .expect("preload");
    r.syncer.sync(&snapshot(vec![web(&["10.244.1.2:8080"])]), &Changes::default(), false).expect("sync");
    let state = r.ipt.state_text(IpFamily::V4);
    assert!(!state.contains("KUBE-SVC-STALE"), "{state}");
    assert!(state.contains("-A FLANNEL-POSTRTG -s 10.244.0.0/16 -j RETURN"), "{state}");
    assert!(state.contains("-j FLANNEL-POSTRTG"), "{state}");
}

fn udp_flow(client_port: u16, dst: &str, reply_src: &str) -> Flow {
    let client = SocketAddr::new("10.244.0.9".parse().expect("ip"), client_port);
    Flow::new(Protocol::Udp, client, dst.parse().expect("dst"), reply_src.parse().expect("reply"))
}

fn dns(endpoints: &[&str]) -> ServicePort {
    service("dns", "10.96.0.53", Protocol::Udp, endpoints)
}

#[test]
fn first_sync_reconciles_flows_older_than_the_daemon() {
    let mut r = rig();
    let kept = udp_flow(1, "10.96.0.53:80", "10.244.1.2:53");
    let wrong_port = udp_flow(2, "10.96.0.53:80", "10.244.1.2:54");
    let gone = udp_flow(3, "10.96.0.53:80", "10.244.2.2:53");
    let black_hole = udp_flow(4, "10.96.0.53:80", "10.96.0.53:80");
    for flow in [&kept, &wrong_port, &gone, &black_hole] {
        r.ct.add_flow(flow.clone());
    }
    let snap = snapshot(vec![dns(&["10.244.1.2:53"]), web(&["10.244.1.2:8080"])]);
    r.syncer.sync(&snap, &Changes::default(), false).expect("sync");
    assert_eq!(r.ct.deleted(), [wrong_port, gone, black_hole]);
    assert_eq!(r.ct.flows(), [kept]);
    assert_eq!(r.ct.listings(), 1);
    r.syncer.sync(&snap, &Changes::default(), false).expect("sync");
    assert_eq!(r.ct.listings(), 1, "nothing changed: no second listing");
}

#[test]
fn endpoint_changes_reconcile_again_and_deleted_services_are_cleaned() {
    let mut r = rig();
    r.syncer.sync(&snapshot(vec![dns(&["10.244.1.2:53", "10.244.2.2:53"])]), &Changes::default(), false).expect("sync");
    let to_a = udp_flow(1, "10.96.0.53:80", "10.244.1.2:53");
    let to_b = udp_flow(2, "10.96.0.53:80", "10.244.2.2:53");
    r.ct.add_flow(to_a.clone());
    r.ct.add_flow(to_b.clone());
    r.syncer.sync(&snapshot(vec![dns(&["10.244.1.2:53"])]), &Changes::default(), false).expect("sync");
    assert_eq!(r.ct.deleted(), [to_b]);
    // N → 0: the service stays, its last endpoint goes (kubernetes#139628).
    r.syncer.sync(&snapshot(vec![dns(&[])]), &Changes::default(), false).expect("sync");
    assert_eq!(r.ct.flows(), []);
    // The service is deleted: flows still addressed to its cluster IP are stale too.
    let late = udp_flow(3, "10.96.0.53:80", "10.96.0.53:80");
    r.ct.add_flow(late.clone());
    r.syncer.sync(&snapshot(vec![]), &Changes::default(), false).expect("sync");
    assert_eq!(r.ct.flows(), []);
    assert_eq!(r.ct.listings(), 4);
}

#[test]
fn a_failed_reconciliation_is_retried_after_the_next_sync() {
    let mut r = rig();
    r.ct.add_flow(udp_flow(1, "10.96.0.53:80", "10.244.2.2:53"));
    r.ct.refuse_listing(true);
    let snap = snapshot(vec![dns(&["10.244.1.2:53"])]);
    r.syncer.sync(&snap, &Changes::default(), false).expect("a conntrack failure does not fail the sync");
    assert_eq!(r.ct.flows().len(), 1);
    r.ct.refuse_listing(false);
    r.syncer.sync(&snap, &Changes::default(), false).expect("sync");
    assert_eq!(r.ct.flows(), []);
}

#[test]
fn no_udp_services_no_listing() {
    let mut r = rig();
    r.syncer.sync(&snapshot(vec![web(&["10.244.1.2:8080"])]), &Changes::default(), false).expect("sync");
    assert_eq!(r.ct.listings(), 0);
}

#[tokio::test]
async fn userspace_mode_writes_portals_and_removes_iptables_mode_chains() {
    use crate::userspace::proxier::{Proxier, ProxierConfig};
    use crate::userspace::{Limits, PortRange};
    let r = rig();
    r.ipt
        .set_rules(
            IpFamily::V4,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLD0000000000000 - [0:0]\n\
             -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-OLD0000000000000\nCOMMIT\n",
        )
        .expect("preload");
    let config = ProxierConfig {
        bind: "127.0.0.2".parse().expect("ip"),
        range: PortRange::parse("").expect("range"),
        udp_timeout: Duration::from_millis(250),
        max_udp_sessions: 16,
        tcp: Limits::default(),
    };
    let bind = config.bind;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut syncer = r.syncer.with_userspace(Proxier::new(config, shutdown.clone()), bind);
    let snap = snapshot(vec![web(&["10.244.1.2:8080"])]);
    if let Err(err) = syncer.sync(&snap, &Changes::default(), false) {
        panic!("{err}\n{}", r.ipt.restore_log(IpFamily::V4).join("\n---\n"));
    }
    let state = r.ipt.state_text(IpFamily::V4);
    assert!(state.contains("-A KUBE-PORTALS-CONTAINER -d 10.96.0.10/32 -p tcp"), "{state}");
    assert!(state.contains("-j DNAT --to-destination 127.0.0.2:"), "{state}");
    assert!(!state.contains("KUBE-SERVICES") && !state.contains("KUBE-SVC-"), "iptables-mode chains left:\n{state}");
    shutdown.cancel();
}

/// `n` services of 10 endpoints each (over 1,000 endpoints from 101 on: large-cluster mode).
fn many(n: usize) -> Vec<ServicePort> {
    (0..n)
        .map(|i| {
            let endpoints: Vec<String> =
                (0..10).map(|j| format!("10.244.{}.{}:8080", i / 25, (i % 25) * 10 + j + 1)).collect();
            let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
            service(&format!("svc-{i}"), &format!("10.96.{}.{}", i / 250, i % 250 + 1), Protocol::Tcp, &endpoints)
        })
        .collect()
}

/// Pretends the last full sync of IPv4 happened `ago`.
fn full_sync_was(r: &mut Rig, ago: Duration) {
    r.syncer.last_full.insert(IpFamily::V4, Instant::now().checked_sub(ago).expect("clock"));
}

#[test]
fn quiet_periods_stay_partial_until_the_full_sync_period() {
    let mut r = rig();
    let snap = snapshot(vec![web(&["10.244.1.2:8080"])]);
    assert_eq!(r.syncer.sync(&snap, &Changes::default(), false).expect("sync")[0].kind, SyncKind::Full);
    for _ in 0..3 {
        assert_eq!(r.syncer.sync(&snap, &Changes::default(), false).expect("sync")[0].kind, SyncKind::Partial);
    }
    assert_eq!(r.ipt.restore_log(IpFamily::V4).len(), 1, "quiet periods restore nothing");
    full_sync_was(&mut r, FULL_SYNC_PERIOD + Duration::from_secs(1));
    assert_eq!(r.syncer.sync(&snap, &Changes::default(), false).expect("sync")[0].kind, SyncKind::Full);
    assert_eq!(r.syncer.sync(&snap, &Changes::default(), false).expect("sync")[0].kind, SyncKind::Partial);
}

#[test]
fn large_clusters_skip_the_hourly_full_sync() {
    let mut r = rig();
    let snap = snapshot(many(101));
    assert!(large_cluster(&snap.state, IpFamily::V4));
    assert_eq!(r.syncer.sync(&snap, &Changes::default(), false).expect("sync")[0].kind, SyncKind::Full);
    full_sync_was(&mut r, FULL_SYNC_PERIOD + Duration::from_secs(1));
    assert_eq!(r.syncer.sync(&snap, &Changes::default(), false).expect("sync")[0].kind, SyncKind::Partial);
    assert_eq!(r.syncer.sync(&snap, &Changes::default(), true).expect("sync")[0].kind, SyncKind::Full, "forced");
}

#[test]
fn large_clusters_delete_stale_chains_once_a_sync_period() {
    let mut r = rig();
    let services = many(102);
    let gone = ServiceChains::for_service(&services[0].name).cluster.to_string();
    assert_eq!(
        r.syncer.sync(&snapshot(services.clone()), &Changes::default(), false).expect("sync")[0].kind,
        SyncKind::Full
    );
    let nat = |r: &Rig| r.ipt.save(IpFamily::V4, Some(TableName::Nat)).expect("save");
    assert!(nat(&r).contains(&format!(":{gone} ")));

    // Removed right after the full sync (a clean-up): its chains stay, unreferenced.
    let snap = snapshot(services[1..].to_vec());
    assert_eq!(r.syncer.sync(&snap, &Changes::default(), false).expect("sync")[0].kind, SyncKind::Partial);
    let text = nat(&r);
    assert!(text.contains(&format!(":{gone} ")), "deletion deferred");
    assert!(!text.contains(&format!("-j {gone}")), "but no longer referenced");
    assert!(r.syncer.deferred[&IpFamily::V4].len() > 1, "its SVC and SEP chains wait");

    // A sync period later the next sync deletes them, even with nothing else to do.
    let long_ago = Instant::now().checked_sub(r.syncer.opts.sync_period + Duration::from_secs(1)).expect("clock");
    r.syncer.last_cleanup.insert(IpFamily::V4, long_ago);
    assert_eq!(r.syncer.sync(&snap, &Changes::default(), false).expect("sync")[0].kind, SyncKind::Partial);
    assert!(!nat(&r).contains(&format!(":{gone} ")), "deleted at the clean-up");
    assert!(!r.syncer.deferred.contains_key(&IpFamily::V4));
}

#[test]
fn small_clusters_delete_stale_chains_at_once() {
    let mut r = rig();
    let services = vec![web(&["10.244.1.2:8080"]), service("db", "10.96.0.11", Protocol::Tcp, &["10.244.1.3:5432"])];
    let gone = ServiceChains::for_service(&services[1].name).cluster.to_string();
    r.syncer.sync(&snapshot(services.clone()), &Changes::default(), false).expect("sync");
    r.syncer.sync(&snapshot(services[..1].to_vec()), &Changes::default(), false).expect("sync");
    assert!(!r.ipt.save(IpFamily::V4, Some(TableName::Nat)).expect("save").contains(&format!(":{gone} ")));
}

#[test]
fn node_eligibility_follows_the_node_object() {
    use super::run::node_eligible;
    use crate::model::{Leaving, NodeFacts};
    let plain = NodeFacts::default();
    let tainted = NodeFacts { leaving: Some(Leaving::ToBeDeletedByClusterAutoscaler), ..NodeFacts::default() };
    let deleting = NodeFacts { leaving: Some(Leaving::Deleting), ..NodeFacts::default() };
    assert!(node_eligible(None, false), "a Node never seen counts as eligible");
    assert!(node_eligible(Some(&plain), true));
    assert!(!node_eligible(Some(&tainted), true));
    assert!(!node_eligible(Some(&deleting), false));
    assert!(!node_eligible(None, true), "a Node seen before and now gone was deleted");
}

#[test]
fn each_sync_publishes_its_outcome_and_what_it_programmed() {
    let r = rig();
    let view = crate::health::ServicesView::default();
    let mut syncer = r.syncer.with_view(view.clone());
    let name = web(&[]).name;
    syncer.sync(&snapshot(vec![web(&["10.244.1.2:8080"])]), &Changes::default(), false).expect("sync");
    let first = view.current();
    let outcome = first.last_sync.clone().expect("published");
    assert_eq!((outcome.kind, outcome.error), (Some(SyncKind::Full), None));
    assert_eq!(first.ports[&name].chains.cluster, Some(ServiceChains::for_service(&name).cluster));

    r.ipt.fail_next(5);
    let failed = syncer.sync(&snapshot(vec![web(&["10.244.9.9:8080"])]), &Changes::default(), false);
    assert!(failed.is_err());
    let after = view.current();
    let error = after.last_sync.as_ref().and_then(|s| s.error.clone()).expect("the error is published");
    assert!(error.contains("restore failed"), "{error}");
    assert!(Arc::ptr_eq(&after.ports[&name], &first.ports[&name]), "a failed sync keeps the programmed view");
}

#[test]
fn a_service_back_before_the_clean_up_keeps_its_chains() {
    let mut r = rig();
    let services = many(102);
    let back = ServiceChains::for_service(&services[0].name).cluster.to_string();
    r.syncer.sync(&snapshot(services.clone()), &Changes::default(), false).expect("sync");
    r.syncer.sync(&snapshot(services[1..].to_vec()), &Changes::default(), false).expect("sync");
    assert!(!r.syncer.deferred[&IpFamily::V4].is_empty(), "deferred");
    // It comes back (its chains are rendered again), then the clean-up runs.
    r.syncer.sync(&snapshot(services.clone()), &Changes::default(), false).expect("sync");
    let long_ago = Instant::now().checked_sub(r.syncer.opts.sync_period + Duration::from_secs(1)).expect("clock");
    r.syncer.last_cleanup.insert(IpFamily::V4, long_ago);
    let mut changed = services.clone();
    changed[5] = ServicePort { endpoints: vec![], ..changed[5].clone() };
    let report = r.syncer.sync(&snapshot(changed.clone()), &Changes::default(), false).expect("sync");
    assert_eq!((report[0].kind, report[0].partial_failed), (SyncKind::Partial, false));
    let nat = r.ipt.save(IpFamily::V4, Some(TableName::Nat)).expect("save");
    assert!(nat.contains(&format!(":{back} ")) && nat.contains(&format!("-j {back}")), "still programmed");
    assert_eq!(r.ipt.state_text(IpFamily::V4), full_sync_of(&snapshot(changed)));
}

/// What a fresh syncer's full sync of `snap` leaves in the fake kernel.
fn full_sync_of(snap: &Snapshot) -> String {
    let mut fresh = rig();
    fresh.syncer.sync(snap, &Changes::default(), true).expect("full sync");
    fresh.ipt.state_text(IpFamily::V4)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

    /// Partial syncs of random state sequences leave the kernel exactly as a full sync of the
    /// last state does.
    #[test]
    fn partial_syncs_end_where_a_full_sync_does(states in proptest::collection::vec(crate::rules::plan::testutil::cluster_state(), 2..6)) {
        let mut r = rig();
        for (i, state) in states.into_iter().enumerate() {
            let snap = Snapshot { state, node: None, problems: vec![] };
            let report = r.syncer.sync(&snap, &Changes::default(), false).expect("sync");
            proptest::prop_assert_eq!(report[0].kind, if i == 0 { SyncKind::Full } else { SyncKind::Partial });
            proptest::prop_assert!(!report[0].partial_failed, "a partial restore failed (fell back to full)");
            proptest::prop_assert_eq!(r.ipt.state_text(IpFamily::V4), full_sync_of(&snap));
        }
    }
}
