//! Partial-sync planning time for synthetic clusters (N ClusterIP services × 10 ready
//! endpoints): one endpoint changed, one service added, one removed — with big chains edited
//! rule by rule (the nft options, `edits/…`) and with every changed chain rewritten
//! (kube-proxy's way, `rewrite/…`). `cargo bench --bench plan`; prints each plan's size next to
//! the full ruleset's once. `incremental/…` times the same changes through incremental
//! rendering (what the daemon does now).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kubenat::apply::exec::Backend;
use kubenat::model::ClusterState;
use kubenat::rules::plan::{plan_partial_with, PlanOptions, PlanStats};
use kubenat::rules::render::incremental::Incremental;
use kubenat::rules::render::render;
use kubenat::rules::ruleset::Ruleset;

#[path = "support/synthetic.rs"]
mod synthetic;

use synthetic::{name, node, ENDPOINTS};

fn service(s: u32) -> kubenat::model::ServicePort {
    synthetic::service(s, ENDPOINTS)
}

fn synthetic(services: u32) -> ClusterState {
    synthetic::state(services, ENDPOINTS)
}

/// The three changes, each applied to a copy of `base`.
fn changes(base: &ClusterState, services: u32) -> Vec<(&'static str, ClusterState)> {
    let mut endpoint_changed = base.clone();
    if let Some(svc) = endpoint_changed.services.get_mut(&name(services / 2)).map(std::sync::Arc::make_mut) {
        svc.endpoints[3].addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 250, 0, 1)), 8080);
        svc.endpoints.sort_by_cached_key(|e| e.key());
    }
    let mut added = base.clone();
    added.services.insert(name(services), service(services).into());
    let mut removed = base.clone();
    removed.services.remove(&name(services / 2));
    vec![("endpoint-changed", endpoint_changed), ("service-added", added), ("service-removed", removed)]
}

fn bench_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_partial");
    group.sample_size(20);
    let node = node();
    let modes = [("edits", PlanOptions::for_backend(Backend::Nft)), ("rewrite", PlanOptions::REWRITE)];
    for services in [1_000u32, 10_000, 20_000] {
        let base = synthetic(services);
        let last = render(&base, &node);
        let full = PlanStats::of(&last);
        println!(
            "N={services}: full ruleset {} rules, {} chains, {} bytes",
            full.rules_written, full.chains_written, full.bytes
        );
        for (change, state) in changes(&base, services) {
            let next: Ruleset = render(&state, &node);
            for (mode, opts) in modes {
                let plan = PlanStats::of(&plan_partial_with(&last, &next, &opts));
                println!(
                    "N={services} {change} {mode}: partial {} rules, {} chains written, {} deleted, {} bytes ({:.3}% of full)",
                    plan.rules_written,
                    plan.chains_written,
                    plan.chains_deleted,
                    plan.bytes,
                    100.0 * plan.bytes as f64 / full.bytes as f64
                );
                group.bench_with_input(BenchmarkId::new(format!("{mode}/{change}"), services), &next, |b, next| {
                    b.iter(|| black_box(plan_partial_with(&last, next, &opts)))
                });
            }
        }
    }
    group.finish();
}

/// The daemon's partial sync since incremental rendering: `Incremental::update` re-renders the
/// changed port and the plan works on the changed chains only. Each iteration applies the change
/// and reverts it (two updates and two plans): halve the time for one.
fn bench_incremental(c: &mut Criterion) {
    let mut group = c.benchmark_group("incremental");
    group.sample_size(20);
    let node = node();
    let opts = PlanOptions::for_backend(Backend::Nft);
    for services in [1_000u32, 10_000, 20_000] {
        let base = synthetic(services);
        let mut rendered = Incremental::new(&base, &node);
        for (change, state) in changes(&base, services) {
            group.bench_with_input(BenchmarkId::new(format!("{change}+revert"), services), &state, |b, state| {
                b.iter(|| {
                    for target in [state, &base] {
                        let change = rendered.update(target, &node);
                        black_box(plan_partial_with(&change.last, &change.next, &opts));
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_plan, bench_incremental);
criterion_main!(benches);
