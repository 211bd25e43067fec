//! Render (and write) time for synthetic clusters: N ClusterIP services × 10 ready endpoints.
//! `cargo bench --bench render`; numbers are recorded in BENCHMARKS.md.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kubenat::iptables::render::render;
use kubenat::model::{ClusterState, Endpoint, LocalDetector, NodeConfig, Protocol, ServicePort, ServicePortName};

fn synthetic(services: u32, endpoints: u32) -> ClusterState {
    let mut state = ClusterState::default();
    for s in 0..services {
        let name = ServicePortName {
            namespace: format!("ns{}", s % 100),
            name: format!("svc-{s}"),
            port: "http".into(),
            protocol: Protocol::Tcp,
        };
        let mut eps: Vec<Endpoint> = (0..endpoints)
            .map(|e| {
                let n = s * endpoints + e;
                let ip = Ipv4Addr::new(10, 128 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
                Endpoint {
                    addr: SocketAddr::new(IpAddr::V4(ip), 8080),
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: Some(format!("node-{}", n % 50)),
                    zone_hints: vec![],
                }
            })
            .collect();
        eps.sort_by_cached_key(|e| e.key());
        let vip = Ipv4Addr::new(172, 30, (s >> 8) as u8, s as u8);
        let port = ServicePort { endpoints: eps, ..ServicePort::new(name.clone(), vec![IpAddr::V4(vip)], 80) };
        state.services.insert(name, port);
    }
    state
}

fn node() -> NodeConfig {
    NodeConfig {
        node_name: "node-1".into(),
        local_detector: LocalDetector::Cidr("10.128.0.0/9".parse().expect("cidr")),
        ..NodeConfig::default()
    }
}

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
