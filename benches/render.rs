//! Render (and write) time for synthetic clusters: N ClusterIP services × 10 ready endpoints.
//! `cargo bench --bench render`; numbers are recorded in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kubenat::rules::render::render;

#[path = "support/synthetic.rs"]
mod synthetic;

use synthetic::{node, state as synthetic};

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group.sample_size(10);
    for services in [1_000u32, 10_000, 20_000] {
        let state = synthetic(services, 10);
        let node = node();
        group.bench_with_input(BenchmarkId::new("ruleset", services), &state, |b, s| {
            b.iter(|| black_box(render(s, &node)))
        });
        group.bench_with_input(BenchmarkId::new("ruleset+text", services), &state, |b, s| {
            b.iter(|| black_box(render(s, &node).to_string()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
