//! Where the daemon's bytes go at scale, and what one endpoint change costs: N Services × E
//! endpoints (one EndpointSlice each, shaped as the API server returns them, managed fields
//! stripped) held as the kube-rs reflector stores held them, against the compact store that
//! replaced them; then the incremental rendering kept per service port, the whole ruleset a
//! full sync assembles from it and that ruleset's restore text. One endpoint change: the full
//! conversion and render every sync did before, against the store's update, a snapshot and the
//! incremental update with its plan. Live heap bytes are counted by a global allocator.
//!
//! `cargo run --release --example memory_budget -- [N=10000] [E=10]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use kubenat::apply::exec::Backend;
use kubenat::k8s::convert::{self, object_key, StateBuilder};
use kubenat::k8s::watch::store::{EndpointsKey, EndpointsKind, Store};
use kubenat::model::{build, IpFamily};
use kubenat::rules::plan::{plan_partial_with, PlanOptions};
use kubenat::rules::render::incremental::Incremental;
use serde_json::{json, Value};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout, as the caller guarantees for `alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `realloc` itself.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn uid(i: usize, j: usize) -> String {
    format!("{i:08x}-{j:04x}-4a6e-9c1d-{:012x}", i * 131 + j)
}

fn service(i: usize) -> Service {
    let name = format!("svc-{i}");
    let ip = format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256);
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "default", "uid": uid(i, 0), "resourceVersion": format!("{}", 1000 + i),
            "creationTimestamp": "2024-05-01T10:00:00Z", "labels": { "app": name },
        },
        "spec": {
            "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
            "selector": { "app": name },
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
        },
        "status": { "loadBalancer": {} },
    }))
    .expect("service")
}

fn slice(i: usize, endpoints: usize, generation: usize) -> EndpointSlice {
    let svc = format!("svc-{i}");
    let eps: Vec<Value> = (0..endpoints)
        .map(|j| {
            let n = i * endpoints + j + generation;
            json!({
                "addresses": [format!("10.{}.{}.{}", 128 + n / 65536, (n / 256) % 256, n % 256)],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "nodeName": format!("node-{}", n % 100),
                "zone": "zone-a",
                "targetRef": { "kind": "Pod", "namespace": "default", "name": format!("{svc}-pod-{j}"), "uid": uid(i, j + 1) },
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{svc}-abcde"), "generateName": format!("{svc}-"), "namespace": "default",
            "uid": uid(i, 9999), "resourceVersion": format!("{}", 50000 + i + generation),
            "creationTimestamp": "2024-05-01T10:00:01Z",
            "labels": {
                "kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "app": svc,
            },
            "annotations": { "endpoints.kubernetes.io/last-change-trigger-time": "2024-05-01T10:00:01Z" },
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": svc, "uid": uid(i, 0),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        "endpoints": eps,
    }))
    .expect("slice")
}

/// Feeds `objects` to a reflector store as a list and returns it.
fn reflect<K>(objects: &[K]) -> reflector::Store<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    for obj in objects {
        writer.apply_watcher_event(&Event::InitApply(obj.clone()));
    }
    writer.apply_watcher_event(&Event::InitDone);
    reader
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let n = args.next().unwrap_or(10_000);
    let e = args.next().unwrap_or(10);
    let services: Vec<Service> = (0..n).map(service).collect();
    let slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, e, 0)).collect();

    let base = live();
    let svc_store = reflect(&services);
    let slice_store = reflect(&slices);
    let reflectors = live() - base;

    let base = live();
    let started = Instant::now();
    let mut full = StateBuilder::new();
    for svc in svc_store.state() {
        full.add_service(&svc, None);
    }
    for s in slice_store.state() {
        full.add_endpoint_slice(&s, None);
    }
    let converted = full.finish();
    let full_time = started.elapsed();
    let state_bytes = live() - base;

    let base = live();
    let started = Instant::now();
    let mut store = Store::new();
    let all = services.iter().map(|s| (object_key(&s.metadata), convert::service_ports(s))).collect();
    store.relist_services(all);
    let all: BTreeMap<_, _> = slices
        .iter()
        .map(|s| {
            (EndpointsKey { kind: EndpointsKind::Slice, object: object_key(&s.metadata) }, convert::slice_endpoints(s))
        })
        .collect();
    store.relist_endpoints(EndpointsKind::Slice, all);
    store.relist_node(None);
    let list_time = started.elapsed();
    let compact = live() - base;
    assert_eq!(store.state(), &converted.state, "the store and a full conversion agree");

    let node = build::node(IpFamily::V4);
    let base = live();
    let started = Instant::now();
    let mut rendered = Incremental::new(store.state(), &node);
    let render_time = started.elapsed();
    let rendered_bytes = live() - base;
    let base = live();
    let whole = rendered.ruleset();
    let whole_bytes = live() - base;
    let base = live();
    let text = whole.to_string();
    let text_bytes = live() - base;
    drop((text, whole));

    // One endpoint change: what every sync paid before (the full conversion above) against
    // the store's update plus a snapshot.
    let changed = slice(n / 2, e, 1);
    let started = Instant::now();
    let key = EndpointsKey { kind: EndpointsKind::Slice, object: object_key(&changed.metadata) };
    store.apply_endpoints(key, convert::slice_endpoints(&changed));
    let update_time = started.elapsed();
    // A snapshot copies the map's pointers: the median of five (the first touches cold memory).
    let mut times = Vec::new();
    let mut snapshot = None;
    for _ in 0..5 {
        let started = Instant::now();
        snapshot = store.snapshot();
        times.push(started.elapsed());
    }
    times.sort();
    let (snapshot, snapshot_time) = (snapshot.expect("listed"), times[2]);
    let started = Instant::now();
    let change = rendered.update(&snapshot.state, &node);
    let plan = plan_partial_with(&change.last, &change.next, &PlanOptions::for_backend(Backend::Nft));
    let incremental_time = started.elapsed();
    assert_eq!(change.ports, 1, "one port re-rendered");

    println!("{n} services x {e} endpoints (one EndpointSlice each)");
    println!("reflector stores (Services + EndpointSlices): {:8.1} MiB", mib(reflectors));
    println!("compact store, incl. its ClusterState:        {:8.1} MiB", mib(compact));
    println!("  of which the ClusterState alone:            {:8.1} MiB", mib(state_bytes));
    println!("full conversion (each sync before):           {:8.1} ms", full_time.as_secs_f64() * 1e3);
    println!("initial list into the store:                  {:8.1} ms", list_time.as_secs_f64() * 1e3);
    println!("one endpoint change, store update:            {:8.3} ms", update_time.as_secs_f64() * 1e3);
    println!("snapshot (map of Arc pointers):               {:8.3} ms", snapshot_time.as_secs_f64() * 1e3);
    println!("incremental rendering (kept per port):        {:8.1} MiB", mib(rendered_bytes));
    println!("  first render:                               {:8.1} ms", render_time.as_secs_f64() * 1e3);
    println!("whole ruleset assembled for a full sync:      {:8.1} MiB", mib(whole_bytes));
    println!("its restore text:                             {:8.1} MiB", mib(text_bytes));
    println!(
        "one endpoint change, update + plan:           {:8.3} ms ({} rules written)",
        incremental_time.as_secs_f64() * 1e3,
        plan.rule_count()
    );
    drop((snapshot, converted, svc_store, slice_store, rendered));
}
