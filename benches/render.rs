//! Render (and write) time for synthetic clusters: N ClusterIP services × 10 ready endpoints;
//! and what `kubenat render` does with them as manifests: load (one JSON List, or multi-document
//! YAML), convert, render and write the text. `cargo bench --bench render`; numbers are
//! recorded in BENCHMARKS.md.

use std::hint::black_box;
use std::io::Write as _;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kubenat::k8s::convert::{cluster_state, EndpointsSource};
use kubenat::k8s::manifests::load_str;
use kubenat::rules::render::render;

#[path = "support/objects.rs"]
mod objects;
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

/// Loading 10,000 Services + 10,000 EndpointSlices × 10 endpoints (+ the Node), and the whole
/// `kubenat render` pipeline on them (the text goes to a sink).
fn bench_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    let services = 10_000;
    let node = node();
    for (format, text, file) in [
        ("json-list", objects::json_list(services, 10), "objects.json"),
        ("yaml", objects::yaml_stream(services, 10), "objects.yaml"),
    ] {
        let loaded = load_str(&text, Path::new(file));
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems.first());
        assert_eq!(loaded.objects.len(), 2 * services as usize + 1);
        let converted = cluster_state(&loaded.objects, EndpointsSource::Auto);
        assert_eq!(converted.state, synthetic(services, 10), "the manifests hold the synthetic state");
        group.bench_with_input(BenchmarkId::new(format, services), &text, |b, t| {
            b.iter(|| black_box(load_str(t, Path::new(file))))
        });
        group.bench_with_input(BenchmarkId::new(format!("{format}+convert+render+text"), services), &text, |b, t| {
            b.iter(|| {
                let loaded = load_str(t, Path::new(file));
                let state = cluster_state(&loaded.objects, EndpointsSource::Auto).state;
                let mut sink = std::io::sink();
                write!(sink, "{}", render(&state, &node)).expect("sink");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_render, bench_load);
criterion_main!(benches);
