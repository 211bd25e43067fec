//! Times one conntrack reconciliation of a large table, run by `scripts/bench-conntrack.sh`
//! inside a throwaway network namespace: fills that namespace's table with N UDP flows over
//! ctnetlink (pipelined NEW requests — `conntrack -I` runs one process per flow), then measures
//! a plain netlink dump of the table (the floor: reading it is the least a reconciliation
//! must do) and one reconciliation with `kubenat::conntrack::reconcile`, which must delete the
//! stale share and keep the rest. Peak RSS is reset before each phase (`/proc/self/clear_refs`)
//! and reported as the growth over the RSS the phase started with.
//!
//! Cluster: 100 UDP services (10.96.0.1..100:53) × 10 endpoints (10.244.S.E:5353). Every flow
//! goes to a service; STALE_PERCENT of them are DNATed to a pod that is not an endpoint.
//!
//! `cargo run --release --example bench_conntrack -- N STALE_PERCENT` (as root, in a netns)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use kubenat::conntrack::{reconcile, Conntrack, Frontends, NetlinkConntrack};
use kubenat::model::build;
use kubenat::model::{ClusterState, Endpoint, IpFamily, NodeConfig, Protocol, ServicePort, ServicePortName};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol as CtProtocol, Tuple,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NetlinkAddr};

const SERVICES: u32 = 100;
const ENDPOINTS: u32 = 10;
/// NEW requests in flight before their acknowledgements are read.
const BATCH: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let stale_percent: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);

    let started = Instant::now();
    insert_flows(n, stale_percent);
    println!("insert: {n} flows in {:.2} s (pipelined ctnetlink NEW)", started.elapsed().as_secs_f64());

    let ct = NetlinkConntrack::new();
    let (dump_s, dump_kib, listed) = measure(|| {
        let mut count = 0usize;
        ct.for_each_udp_flow(IpFamily::V4, &mut |_| count += 1).expect("dump");
        count
    });
    println!("floor: netlink dump of {listed} flows in {:.3} s, peak RSS +{dump_kib} KiB", dump_s);

    let frontends = Frontends::new(&cluster(), &NodeConfig::default());
    let (rec_s, rec_kib, outcome) = measure(|| reconcile(&ct, &frontends));
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    println!(
        "reconcile: listed {} stale {} deleted {} in {:.3} s, peak RSS +{rec_kib} KiB",
        outcome.listed, outcome.stale, outcome.deleted, rec_s
    );
    let expected = (0..n).filter(|i| is_stale(*i, stale_percent)).count();
    assert_eq!(outcome.deleted, expected, "every stale flow deleted");
    let mut left = 0usize;
    ct.for_each_udp_flow(IpFamily::V4, &mut |_| left += 1).expect("dump");
    assert_eq!(left, n as usize - expected, "every other flow kept");
    println!("ratio: reconcile / dump = {:.2}", rec_s / dump_s);
    println!("per deleted flow: {:.1} us", (rec_s - dump_s).max(0.0) * 1e6 / outcome.deleted.max(1) as f64);
}

/// Runs `f`; returns its time, its peak RSS growth in KiB and its result.
fn measure<T>(f: impl FnOnce() -> T) -> (f64, u64, T) {
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets VmHWM to the current RSS
    let before = status_kib("VmRSS");
    let started = Instant::now();
    let out = f();
    let seconds = started.elapsed().as_secs_f64();
    (seconds, status_kib("VmHWM").saturating_sub(before), out)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn service_ip(s: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, (s + 1) as u8)
}

fn endpoint_ip(s: u32, e: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, s as u8, (e + 1) as u8)
}

fn is_stale(i: u32, stale_percent: u32) -> bool {
    i % 100 < stale_percent
}

/// Flow `i`: client 10.200.x.y:port → service i % 100, DNATed to one of its endpoints, or (the
/// stale share) to 10.245.S.E, a pod that is no endpoint.
fn flow(i: u32, stale_percent: u32) -> (SocketAddr, SocketAddr, SocketAddr) {
    let s = i % SERVICES;
    let client =
        SocketAddr::new(Ipv4Addr::new(10, 200, (i >> 16) as u8, (i >> 8) as u8).into(), 1024 + (i & 0xff) as u16);
    let service = SocketAddr::new(service_ip(s).into(), 53);
    let e = (i / SERVICES) % ENDPOINTS;
    let backend =
        if is_stale(i, stale_percent) { Ipv4Addr::new(10, 245, s as u8, (e + 1) as u8) } else { endpoint_ip(s, e) };
    (client, service, SocketAddr::new(backend.into(), 5353))
}

fn cluster() -> ClusterState {
    let mut services = BTreeMap::new();
    for s in 0..SERVICES {
        let name = ServicePortName {
            namespace: "bench".into(),
            name: format!("svc-{s}").into(),
            port: "dns".into(),
            protocol: Protocol::Udp,
        };
        let endpoints = (0..ENDPOINTS)
            .map(|e| Endpoint { node_name: None, ..build::endpoint(SocketAddr::new(endpoint_ip(s, e).into(), 5353)) })
            .collect();
        let port = ServicePort { endpoints, ..ServicePort::new(name.clone(), vec![IpAddr::V4(service_ip(s))], 53) };
        services.insert(name, port.into());
    }
    ClusterState { services }
}

fn tuple(src: SocketAddr, dst: SocketAddr) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![IPTuple::SourceAddress(src.ip()), IPTuple::DestinationAddress(dst.ip())]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(CtProtocol::Udp),
            ProtoTuple::SourcePort(src.port()),
            ProtoTuple::DestinationPort(dst.port()),
        ]),
    ]
}

/// Creates the flows with IPCTNL_MSG_CT_NEW, BATCH requests per round trip.
fn insert_flows(n: u32, stale_percent: u32) {
    let mut socket = Socket::new(NETLINK_NETFILTER).expect("netlink socket");
    socket.bind_auto().expect("bind");
    socket.connect(&NetlinkAddr::new(0, 0)).expect("connect");
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut pending = 0usize;
    for i in 0..n {
        let (client, service, backend) = flow(i, stale_percent);
        let attributes = vec![
            ConntrackAttribute::CtaTupleOrig(tuple(client, service)),
            ConntrackAttribute::CtaTupleReply(tuple(backend, client)),
            ConntrackAttribute::CtaTimeout(3600),
        ];
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
        header.sequence_number = i;
        let payload = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            ConntrackMessage::New(attributes),
        );
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(payload));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        socket.send(&bytes, 0).expect("send");
        pending += 1;
        if pending == BATCH || i + 1 == n {
            while pending > 0 {
                buffer.clear();
                socket.recv(&mut buffer, 0).expect("recv ack");
                pending -= acknowledgements(&buffer);
            }
        }
    }
}

/// Counts the NLMSG_ERROR acknowledgements in a datagram; panics on a non-zero error.
fn acknowledgements(datagram: &[u8]) -> usize {
    let mut offset = 0;
    let mut acks = 0;
    while offset + 20 <= datagram.len() {
        let len = u32::from_ne_bytes(datagram[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(datagram[offset + 4..offset + 6].try_into().expect("2 bytes"));
        if kind == 2 {
            let code = i32::from_ne_bytes(datagram[offset + 16..offset + 20].try_into().expect("4 bytes"));
            assert_eq!(code, 0, "conntrack NEW refused: errno {}", -code);
            acks += 1;
        }
        offset += len.max(16).next_multiple_of(4);
    }
    acks
}
