//! End to end on the real kernel for the legacy userspace proxy mode (`kubenat --proxy-mode
//! userspace`): the daemon runs in a lab's node namespace against the test API server, iptables
//! portal rules steer service traffic to the daemon's own proxy sockets, and the daemon copies
//! bytes to a backend. Real TCP/UDP traffic proves it: pod → ClusterIP, node → ClusterIP,
//! NodePort (from a pod, the node, and an external client in its own namespace), failover when a
//! backend dies, ClientIP affinity, a 60,000-byte UDP datagram, switching between iptables and
//! userspace mode in both directions, ports of local external IPs held (conflicts reported,
//! retried, released), and the host IP found without `--node-ip`. Needs root (skips otherwise,
//! fails under CI=true).
//!
//! Lab: pods 0 and 1 run identity servers (`pod-0`, `pod-1`) on 8080/TCP and 5353/UDP, pod 0
//! also a UDP echo server on 9999; pod 2 is the client. `--node-ip` is pod 2's gateway
//! (10.244.3.1), the node's address facing the client.
//!
//! In userspace mode the proxy (the daemon, in the node namespace) dials the backend itself,
//! so a backend sees the node — its own gateway address — as the client, never the pod.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use kubenat::apply::exec::{Backend, Tool};
use kubenat::model::IpFamily;
use serde_json::{json, Value};
use tempfile::TempDir;
use testkit::apiserver::ApiServer;
use testkit::daemon::{self, poll, Daemon, DaemonOptions};
use testkit::lab::Lab;
use testkit::netns::NetNs;
use testkit::objects::{self, Port};
use testkit::process::{self, Spawned};
use testkit::traffic::{self, Proto, Reply, Server};

/// ClusterIP of `default/web` (`http` 80→8080/TCP NodePort 30080, `dns` 53→5353/UDP).
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// ClusterIP of `default/sticky` (ClientIP affinity, 80→8080/TCP).
const STICKY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
/// ClusterIP of `default/big` (9999/UDP → pod 0's echo server).
const BIG_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);
/// NodePort of `default/web:http`.
const NODE_PORT: u16 = 30080;
/// NodePort of `default/web:dns`.
const UDP_NODE_PORT: u16 = 30053;
/// ClusterIP of `default/ext` (external IPs: a local address of the node and a foreign one).
const EXT_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 14);
/// Ports of `default/ext` on its external IPs: `held` (TCP 8081, UDP 8053) and `squat` (TCP 8082).
const EXT_TCP_PORT: u16 = 8081;
const EXT_UDP_PORT: u16 = 8053;
const EXT_SQUAT_PORT: u16 = 8082;
/// An external IP that is no address of the node (TEST-NET-1): nothing to hold for it.
const FOREIGN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
/// The "external client" network: the node's side and the client's side of its veth.
const EXT_NODE_SIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const EXT_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// UDP echo port in pod 0.
const ECHO_PORT: u16 = 9999;
/// Every "eventually" is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
/// Per-request timeout of the traffic client (covers the proxy's dial retries, 250+500 ms…).
const REQUEST: Duration = Duration::from_secs(3);
/// The client pod.
const CLIENT: usize = 2;
/// The proxy port range given to the daemon.
const PORT_RANGE: std::ops::RangeInclusive<u16> = 36000..=36999;

// ---------------------------------------------------------------------------------------------
// Objects.

/// `default/web`: NodePort Service, `http` 80→8080/TCP (nodePort 30080), `dns` 53→5353/UDP.
fn web_ports() -> Vec<Port> {
    vec![Port::tcp("http", 80, 8080).node_port(NODE_PORT), Port::udp("dns", 53, 5353).node_port(UDP_NODE_PORT)]
}

/// `default/sticky`: ClientIP affinity over both backends.
fn sticky() -> Value {
    let service = objects::service("sticky", STICKY_IP, &[Port::tcp("http", 80, 8080)]);
    objects::merge(
        service,
        json!({ "spec": {
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 10800 } },
        } }),
    )
}

/// `default/big`: 9999/UDP to pod 0's echo server.
fn big_ports() -> Vec<Port> {
    vec![Port::udp("echo", ECHO_PORT, ECHO_PORT)]
}

/// Ready endpoints on this node.
fn ready(addresses: &[Ipv4Addr]) -> Vec<objects::Ep> {
    objects::ready_on(addresses, objects::NODE)
}

// ---------------------------------------------------------------------------------------------
// UDP echo server and big-datagram client.

/// argv: port. Echoes every datagram (up to 65535 bytes) back to its sender.
const ECHO_SERVER_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(120)
print("ready", flush=True)
try:
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(data, addr)
except (TimeoutError, KeyboardInterrupt):
    pass
"#;

/// argv: host port size. Sends one datagram of `size` pseudo-random bytes, prints
/// `intact`, `mismatch <sent> <received>` or `timeout`.
const BIG_CLIENT_PY: &str = r#"
import os, socket, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = os.urandom(size)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.settimeout(1.5)
s.connect((host, port))
s.send(payload)
try:
    data = s.recv(65535)
except TimeoutError:
    print("timeout"); sys.exit(0)
except OSError as e:
    print("error " + str(e)); sys.exit(0)
print("intact" if data == payload else "mismatch %d %d" % (len(payload), len(data)))
"#;

// ---------------------------------------------------------------------------------------------
// The environment.

/// A lab with backends in pods 0 and 1, the API server in the node namespace, and (once
/// started) the daemon. Fields drop in order: daemon first, the namespaces last.
struct Env {
    daemon: Option<Daemon>,
    api: ApiServer,
    servers: Vec<Option<Server>>,
    _echo: Spawned,
    lab: Lab,
    dir: TempDir,
    backend: Backend,
    starts: u32,
    /// Whether the daemon gets `--node-ip` (otherwise it must find the host IP itself).
    node_ip_flag: bool,
}

impl Env {
    /// `None` (test skipped) when not root or a tool is missing.
    fn new() -> Option<Env> {
        let backend = Backend::Nft;
        let tools = [backend.binary(IpFamily::V4, Tool::Restore), backend.binary(IpFamily::V4, Tool::Save)];
        if !testkit::require_root()
            || !testkit::require_program("iptables")
            || !tools.iter().all(|t| testkit::require_program(t))
        {
            return None;
        }
        let lab = Lab::new(3);
        let mut servers = Vec::new();
        for i in 0..2 {
            let name = format!("pod-{i}");
            servers.push(Some(Server::start(&lab.pod(i).ns, Proto::Tcp, 8080, &name)));
            servers.push(Some(Server::start(&lab.pod(i).ns, Proto::Udp, 5353, &name)));
        }
        let port = ECHO_PORT.to_string();
        let echo = Spawned::until_ready(
            &lab.pod(0).ns.argv(&[daemon::python(), "-c", ECHO_SERVER_PY, &port]),
            traffic::SERVER_READY_TIMEOUT,
        );
        let api = ApiServer::start_in_netns(lab.node.name());
        let node_ip = lab.pod(0).gateway;
        api.apply(objects::node(objects::NODE, Some(node_ip)));
        let (ip0, ip1) = (lab.pod(0).ip, lab.pod(1).ip);
        api.apply(objects::service("web", CLUSTER_IP, &web_ports()));
        api.apply(objects::slice("web", &ready(&[ip0, ip1]), &web_ports()));
        api.apply(sticky());
        api.apply(objects::slice("sticky", &ready(&[ip0, ip1]), &[Port::tcp("http", 80, 8080)]));
        api.apply(objects::service("big", BIG_IP, &big_ports()));
        api.apply(objects::slice("big", &ready(&[ip0]), &big_ports()));
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Env { daemon: None, api, servers, _echo: echo, lab, dir, backend, starts: 0, node_ip_flag: true })
    }

    /// The node's primary IP (`--node-ip`): the source address the node itself uses towards the
    /// service CIDR. In the lab that is pod 0's gateway (`ip route get 10.96.0.10` picks the
    /// first address for the `10.96.0.0/12 dev lo` route); on a real node it is the node IP.
    /// Node-originated traffic is DNATed to it, and the proxy's UDP replies only match the
    /// connection when this is the address the node sends from (kube-proxy had the same rule).
    fn node_ip(&self) -> Ipv4Addr {
        self.lab.pod(0).gateway
    }

    fn options(&self, userspace: bool) -> DaemonOptions {
        let mut opts = DaemonOptions::new(self.backend.as_str());
        if userspace {
            opts.extra_args = [
                "--proxy-mode",
                "userspace",
                "--proxy-port-range",
                "36000-36999",
                "--udp-timeout",
                "250ms",
                "--bind-address",
                "0.0.0.0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if self.node_ip_flag {
                opts.extra_args.extend(["--node-ip".to_string(), self.node_ip().to_string()]);
            }
        } else {
            opts.extra_args = vec!["--proxy-mode".into(), "iptables".into()];
        }
        opts
    }

    /// Starts a daemon (userspace or iptables mode). In iptables mode waits for its first full
    /// restore; in userspace mode (individual iptables commands, no restores) waits until the
    /// ClusterIP answers TCP and UDP through the proxy.
    fn start_daemon(&mut self, userspace: bool) {
        self.starts += 1;
        let kubeconfig = self.api.kubeconfig(self.dir.path());
        let log = self.dir.path().join(format!("kubenat-{}.log", self.starts));
        let mut daemon = Daemon::start(&self.lab.node, &kubeconfig, &log, &self.options(userspace));
        if !userspace {
            daemon.wait_full_syncs(1.0, WAIT);
        }
        self.daemon = Some(daemon);
        self.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 10);
        self.until_served_by(Proto::Udp, &["pod-0", "pod-1"], 10);
    }

    fn started() -> Option<Env> {
        let mut env = Env::new()?;
        env.start_daemon(true);
        Some(env)
    }

    fn stop_daemon(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let status = daemon.terminate();
            eprintln!("daemon #{} exited: {status}", self.starts);
        }
    }

    fn client(&self) -> &NetNs {
        &self.lab.pod(CLIENT).ns
    }

    /// The address a backend pod sees when the node dials it: the pod's gateway.
    fn node_side_of(&self, server: &str) -> IpAddr {
        let i: usize = server.strip_prefix("pod-").and_then(|n| n.parse().ok()).expect("pod-N");
        self.lab.pod(i).gateway.into()
    }

    fn save(&self) -> String {
        self.lab.node_save(self.backend)
    }

    fn fail(&self, what: &str) -> ! {
        let mut logs = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path().join(format!("kubenat-{n}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            logs += &format!("\n--- daemon log #{n} ---\n{text}");
        }
        panic!("{what}\n--- iptables-save ({}) ---\n{}{logs}", self.backend, self.save());
    }

    fn until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        poll(WAIT, Duration::from_millis(100), check)
            .unwrap_or_else(|| self.fail(&format!("timed out after {WAIT:?}: {what}")))
    }

    /// Waits until `count` requests from the client pod to `default/web` are all answered and
    /// exactly `servers` answered.
    fn until_served_by(&self, proto: Proto, servers: &[&str], count: usize) -> Vec<Reply> {
        let to = match proto {
            Proto::Tcp => SocketAddr::from((CLUSTER_IP, 80)),
            Proto::Udp => SocketAddr::from((CLUSTER_IP, 53)),
        };
        self.until_served_by_at(self.client(), proto, to, servers, count)
    }

    fn until_served_by_at(
        &self,
        from: &NetNs,
        proto: Proto,
        to: SocketAddr,
        servers: &[&str],
        count: usize,
    ) -> Vec<Reply> {
        let want: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        let mut last = Vec::new();
        let found = poll(WAIT, Duration::from_millis(100), || {
            last = traffic::requests(from, proto, to, Duration::from_secs(1), count);
            (answered_by(&last).as_ref() == Some(&want)).then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            self.fail(&format!(
                "{proto:?} from {} to {to} never answered only by {want:?}; last: {:?}",
                from.name(),
                traffic::tally(&last)
            ))
        })
    }

    /// Every reply came from a backend that saw the node (its gateway) as the client.
    fn assert_proxied(&self, replies: &[Reply], what: &str) {
        for reply in replies {
            match reply {
                Reply::Answer { server, client } if *client == self.node_side_of(server) => {}
                other => self.fail(&format!("{what}: {other} (want an answer that saw the node as client)")),
            }
        }
    }

    /// The chains declared in the node's rules (all tables).
    fn chains(&self) -> Vec<String> {
        chains(&self.save())
    }
}

/// The sorted, distinct servers that answered — `None` if any request was not answered.
fn answered_by(replies: &[Reply]) -> Option<Vec<String>> {
    let mut names: Vec<String> = replies.iter().map(|r| r.server().map(str::to_string)).collect::<Option<_>>()?;
    names.sort();
    names.dedup();
    Some(names)
}

/// The chains declared in `iptables-save` text (`:NAME POLICY [p:b]`).
fn chains(save: &str) -> Vec<String> {
    let mut chains: Vec<String> =
        save.lines().filter_map(|l| l.strip_prefix(':')?.split_whitespace().next().map(str::to_string)).collect();
    chains.sort();
    chains.dedup();
    chains
}

fn is_iptables_mode_chain(chain: &str) -> bool {
    chain.starts_with("KUBE-SVC-") || chain.starts_with("KUBE-SEP-") || chain == "KUBE-SERVICES"
}

fn is_userspace_chain(chain: &str) -> bool {
    chain.starts_with("KUBE-PORTALS-") || chain.starts_with("KUBE-NODEPORT-")
}

/// The proxy ports named by `--to-ports N` / `--to-destination IP:N` in the portal rules.
fn proxy_ports(save: &str) -> Vec<u16> {
    save.lines()
        .filter(|l| l.starts_with("-A KUBE-PORTALS-") || l.starts_with("-A KUBE-NODEPORT-"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            while let Some(w) = words.next() {
                if w == "--to-ports" {
                    return words.next()?.parse().ok();
                }
                if w == "--to-destination" {
                    return words.next()?.rsplit_once(':')?.1.parse().ok();
                }
            }
            None
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Pod → ClusterIP, TCP and UDP, through the proxy.

#[test]
fn pod_to_cluster_ip_tcp_and_udp_through_the_proxy() {
    let Some(env) = Env::started() else { return };
    let save = env.save();
    for chain in ["KUBE-PORTALS-CONTAINER", "KUBE-PORTALS-HOST", "KUBE-NODEPORT-CONTAINER", "KUBE-NODEPORT-HOST"] {
        if !chains(&save).iter().any(|c| c == chain) {
            env.fail(&format!("chain {chain} missing"));
        }
    }
    if !save.contains("-A KUBE-NODEPORT-NON-LOCAL") {
        env.fail("no KUBE-NODEPORT-NON-LOCAL rule for the NodePort");
    }
    let ports = proxy_ports(&save);
    if ports.is_empty() || !ports.iter().all(|p| PORT_RANGE.contains(p)) {
        env.fail(&format!("proxy ports {ports:?} not all in {PORT_RANGE:?}"));
    }
    if !save.contains(&format!("--to-destination {}:", env.node_ip())) {
        env.fail("no HOST-chain DNAT to --node-ip");
    }
    let tcp = env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 20);
    env.assert_proxied(&tcp, "pod → ClusterIP TCP");
    let udp = env.until_served_by(Proto::Udp, &["pod-0", "pod-1"], 20);
    env.assert_proxied(&udp, "pod → ClusterIP UDP");
    eprintln!("pod → ClusterIP: TCP {:?}, UDP {:?}", traffic::tally(&tcp), traffic::tally(&udp));
}

// ---------------------------------------------------------------------------------------------
// 2. Node-originated traffic to the ClusterIP (nat OUTPUT → KUBE-PORTALS-HOST → DNAT node-ip).

#[test]
fn node_to_cluster_ip_through_the_proxy() {
    let Some(env) = Env::started() else { return };
    let node = &env.lab.node;
    let tcp = env.until_served_by_at(node, Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), &["pod-0", "pod-1"], 20);
    env.assert_proxied(&tcp, "node → ClusterIP TCP");
    let udp = env.until_served_by_at(node, Proto::Udp, SocketAddr::from((CLUSTER_IP, 53)), &["pod-0", "pod-1"], 20);
    env.assert_proxied(&udp, "node → ClusterIP UDP");
}

// ---------------------------------------------------------------------------------------------
// 3. NodePort from the client pod to the node's address.

#[test]
fn node_port_from_a_pod() {
    let Some(env) = Env::started() else { return };
    let to = SocketAddr::from((env.node_ip(), NODE_PORT));
    let tcp = env.until_served_by_at(env.client(), Proto::Tcp, to, &["pod-0", "pod-1"], 20);
    env.assert_proxied(&tcp, "pod → NodePort TCP");
    // And from the node itself (KUBE-NODEPORT-HOST).
    let tcp = env.until_served_by_at(&env.lab.node, Proto::Tcp, to, &["pod-0", "pod-1"], 20);
    env.assert_proxied(&tcp, "node → NodePort TCP");
}

// ---------------------------------------------------------------------------------------------
// 4. A dead backend (still listed as ready): the proxy's dial retry hides it.

#[test]
fn dead_backend_is_retried_around() {
    let Some(mut env) = Env::started() else { return };
    env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 10);
    // servers[2] is pod-1's TCP server: kill it, the EndpointSlice still lists pod 1.
    drop(env.servers[2].take());
    let replies = traffic::requests(env.client(), Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), REQUEST, 30);
    if answered_by(&replies).as_deref() != Some(&["pod-0".to_string()][..]) {
        env.fail(&format!(
            "with pod-1 dead, new connections: {:?} (want all answered by pod-0)",
            traffic::tally(&replies)
        ));
    }
    env.assert_proxied(&replies, "after failover");
}

// ---------------------------------------------------------------------------------------------
// 5. ClientIP affinity.

#[test]
fn client_ip_affinity_pins_one_backend() {
    let Some(env) = Env::started() else { return };
    let to = SocketAddr::from((STICKY_IP, 80));
    let first = env.until("the sticky Service answers", || {
        let reply = traffic::request(env.client(), Proto::Tcp, to, REQUEST);
        reply.server().map(str::to_string)
    });
    let replies = traffic::requests(env.client(), Proto::Tcp, to, REQUEST, 10);
    if answered_by(&replies) != Some(vec![first.clone()]) {
        env.fail(&format!("affinity: first answer {first}, then {:?}", traffic::tally(&replies)));
    }
    // The same backends without affinity (default/web) do round-robin over both.
    env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 10);
}

// ---------------------------------------------------------------------------------------------
// 6. A 60,000-byte UDP datagram, both ways.

#[test]
fn big_udp_datagram_arrives_intact() {
    let Some(env) = Env::started() else { return };
    let (host, port) = (BIG_IP.to_string(), ECHO_PORT.to_string());
    let argv = env.client().argv(&[daemon::python(), "-c", BIG_CLIENT_PY, &host, &port, "60000"]);
    let mut last = String::new();
    let ok = poll(WAIT, Duration::from_millis(200), || {
        let out = process::run(&argv, Duration::from_secs(5));
        last =
            format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim());
        (last == "intact").then_some(())
    });
    if ok.is_none() {
        env.fail(&format!("60,000-byte UDP datagram through the proxy: {last}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 7. iptables → userspace → iptables.

#[test]
fn switching_modes_cleans_up_the_other_modes_rules() {
    let Some(mut env) = Env::new() else { return };
    // iptables mode: DNAT, the backend sees the pod itself.
    env.start_daemon(false);
    let client_ip: IpAddr = env.lab.pod(CLIENT).ip.into();
    let replies = env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 10);
    if !replies.iter().all(|r| matches!(r, Reply::Answer { client, .. } if *client == client_ip)) {
        env.fail(&format!("iptables mode: backends did not see the pod as client: {replies:?}"));
    }
    if !env.chains().iter().any(|c| c.starts_with("KUBE-SVC-")) {
        env.fail("iptables mode wrote no KUBE-SVC- chains");
    }
    env.stop_daemon();

    // → userspace.
    env.start_daemon(true);
    env.until("no iptables-mode chains left in userspace mode", || {
        let left: Vec<String> = env.chains().into_iter().filter(|c| is_iptables_mode_chain(c)).collect();
        left.is_empty().then_some(())
    });
    let tcp = env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 10);
    env.assert_proxied(&tcp, "userspace after iptables");
    env.until_served_by(Proto::Udp, &["pod-0", "pod-1"], 10);
    env.stop_daemon();

    // → iptables again.
    env.start_daemon(false);
    env.until("no userspace chains left in iptables mode", || {
        let left: Vec<String> = env.chains().into_iter().filter(|c| is_userspace_chain(c)).collect();
        left.is_empty().then_some(())
    });
    let replies = env.until_served_by(Proto::Tcp, &["pod-0", "pod-1"], 10);
    if !replies.iter().all(|r| matches!(r, Reply::Answer { client, .. } if *client == client_ip)) {
        env.fail(&format!("iptables mode after userspace: backends did not see the pod: {replies:?}"));
    }
    env.until_served_by(Proto::Udp, &["pod-0", "pod-1"], 10);
    // NodePort back in iptables mode too.
    let to = SocketAddr::from((env.node_ip(), NODE_PORT));
    env.until_served_by_at(env.client(), Proto::Tcp, to, &["pod-0", "pod-1"], 10);
}

// ---------------------------------------------------------------------------------------------
// 8. NodePort from an "external client": its own namespace (not a pod, not the node), joined to
//    the node by a veth, default route via the node.

/// The external client's namespace; its veth goes away with it.
fn external_client(lab: &Lab) -> NetNs {
    let ns = NetNs::new("ext");
    // The node end lives in the node namespace, so its name only has to be unique there.
    let node_if = "vext0";
    lab.node.ip(&["link", "add", node_if, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]);
    lab.node.ip(&["addr", "add", &format!("{EXT_NODE_SIDE}/24"), "dev", node_if]);
    lab.node.ip(&["link", "set", node_if, "up"]);
    ns.ip(&["addr", "add", &format!("{EXT_CLIENT}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "default", "via", &EXT_NODE_SIDE.to_string()]);
    ns
}

#[test]
fn node_port_from_an_external_client_namespace() {
    let Some(env) = Env::started() else { return };
    let ext = external_client(&env.lab);
    // The node's address facing the client, and the node IP behind it (routed through the node).
    for node_addr in [EXT_NODE_SIDE, env.node_ip()] {
        let to = SocketAddr::from((node_addr, NODE_PORT));
        let tcp = env.until_served_by_at(&ext, Proto::Tcp, to, &["pod-0", "pod-1"], 20);
        env.assert_proxied(&tcp, &format!("external client → {to} TCP"));
        let to = SocketAddr::from((node_addr, UDP_NODE_PORT));
        let udp = env.until_served_by_at(&ext, Proto::Udp, to, &["pod-0", "pod-1"], 20);
        env.assert_proxied(&udp, &format!("external client → {to} UDP"));
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Ports on local external IPs are held; a taken one is reported, retried, then held; all are
//    released with the Service.

/// `default/ext`: external IPs `local` (an address of the node) and [`FOREIGN_IP`].
fn ext_ports() -> Vec<Port> {
    vec![
        Port::tcp("tcp", EXT_TCP_PORT, 8080),
        Port::udp("udp", EXT_UDP_PORT, 5353),
        Port::tcp("squat", EXT_SQUAT_PORT, 8080),
    ]
}

fn ext_service(local: Ipv4Addr) -> Value {
    let service = objects::service("ext", EXT_CLUSTER_IP, &ext_ports());
    objects::merge(service, json!({ "spec": { "externalIPs": [local.to_string(), FOREIGN_IP.to_string()] } }))
}

/// argv: ip port tcp|udp. Prints `taken` when the port cannot be bound (in use), `free` when it
/// can, else the error.
const PORT_PROBE_PY: &str = r#"
import errno, socket, sys
ip, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
try:
    s.bind((ip, port))
    print("free")
except OSError as e:
    print("taken" if e.errno == errno.EADDRINUSE else "error " + str(e))
"#;

/// argv: ip port. Listens on ip:port (TCP) until killed.
const SQUATTER_PY: &str = r#"
import socket, sys, time
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
time.sleep(120)
"#;

/// The conflicts gauge of the userspace proxy.
const PORT_CONFLICTS: &str = "kubenat_userspace_port_conflicts";

impl Env {
    fn port_state(&self, ip: Ipv4Addr, port: u16, proto: &str) -> String {
        let (ip, port) = (ip.to_string(), port.to_string());
        let argv = self.lab.node.argv(&[daemon::python(), "-c", PORT_PROBE_PY, &ip, &port, proto]);
        String::from_utf8_lossy(&process::run(&argv, Duration::from_secs(5)).stdout).trim().to_string()
    }

    fn until_port(&self, ip: Ipv4Addr, port: u16, proto: &str, want: &str) {
        let wait = Duration::from_secs(20); // a retried claim waits for the next sync (5 s period)
        let mut last = String::new();
        let found = poll(wait, Duration::from_millis(200), || {
            last = self.port_state(ip, port, proto);
            (last == want).then_some(())
        });
        if found.is_none() {
            self.fail(&format!("{ip}:{port}/{proto}: {last}, want {want} within {wait:?}"));
        }
    }

    fn conflicts(&self) -> Option<f64> {
        self.daemon.as_ref()?.metrics().map(|m| m.get(PORT_CONFLICTS))
    }
}

#[test]
fn local_external_ip_ports_are_held_conflicts_reported_and_released() {
    let Some(env) = Env::started() else { return };
    let local = env.lab.pod(1).gateway;
    let (ip, squat_port) = (local.to_string(), EXT_SQUAT_PORT.to_string());
    let squatter = Spawned::until_ready(
        &env.lab.node.argv(&[daemon::python(), "-c", SQUATTER_PY, &ip, &squat_port]),
        Duration::from_secs(5),
    );
    env.api.apply(ext_service(local));
    env.api.apply(objects::slice("ext", &ready(&[env.lab.pod(0).ip, env.lab.pod(1).ip]), &ext_ports()));
    // The external IP is served through the proxy (portal rules), and its ports are held.
    for (proto, port) in [(Proto::Tcp, EXT_TCP_PORT), (Proto::Udp, EXT_UDP_PORT), (Proto::Tcp, EXT_SQUAT_PORT)] {
        let to = SocketAddr::from((local, port));
        let replies = env.until_served_by_at(env.client(), proto, to, &["pod-0", "pod-1"], 10);
        env.assert_proxied(&replies, &format!("pod → external IP {to}"));
    }
    env.until_port(local, EXT_TCP_PORT, "tcp", "taken");
    env.until_port(local, EXT_UDP_PORT, "udp", "taken");
    env.until("the taken port is reported in the conflicts gauge", || (env.conflicts()? == 1.0).then_some(()));
    let log = env.daemon.as_ref().map(|d| d.log()).unwrap_or_default();
    if !log.contains("could not claim the port") {
        env.fail("the conflict was not logged");
    }
    // Freed: the claim is retried and the port held by the daemon.
    drop(squatter);
    env.until_port(local, EXT_SQUAT_PORT, "tcp", "taken");
    env.until("the conflict clears", || (env.conflicts()? == 0.0).then_some(()));
    // Released with the Service.
    env.api.delete("Service", "default", "ext");
    for (port, proto) in [(EXT_TCP_PORT, "tcp"), (EXT_UDP_PORT, "udp"), (EXT_SQUAT_PORT, "tcp")] {
        env.until_port(local, port, proto, "free");
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Without --node-ip the host IP is the node's own source address toward the cluster IPs,
//     not merely the Node object's InternalIP: node-originated UDP only works with that one.

/// `src` of `ip route get dst` in `ns`.
fn route_source(ns: &NetNs, dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let out = ns.run_ok(&["ip", "route", "get", &dst.to_string()]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "src")?;
    words.next()?.parse().ok()
}

#[test]
fn without_node_ip_flag_node_traffic_is_dnated_to_its_own_source_address() {
    let Some(mut env) = Env::new() else { return };
    let Some(source) = route_source(&env.lab.node, CLUSTER_IP) else {
        env.fail("no route source toward the ClusterIP")
    };
    // The Node object names another local address of the node.
    let other = [env.lab.pod(0).gateway, env.lab.pod(1).gateway].into_iter().find(|ip| *ip != source);
    let Some(other) = other else { env.fail("no second node address") };
    env.api.apply(objects::node(objects::NODE, Some(other)));
    env.node_ip_flag = false;
    env.start_daemon(true);
    if !env.save().contains(&format!("--to-destination {source}:")) {
        env.fail(&format!("HOST chains do not DNAT to the node's source address {source}"));
    }
    let node = &env.lab.node;
    let udp = env.until_served_by_at(node, Proto::Udp, SocketAddr::from((CLUSTER_IP, 53)), &["pod-0", "pod-1"], 20);
    env.assert_proxied(&udp, "node → ClusterIP UDP without --node-ip");
    let tcp = env.until_served_by_at(node, Proto::Tcp, SocketAddr::from((CLUSTER_IP, 80)), &["pod-0", "pod-1"], 20);
    env.assert_proxied(&tcp, "node → ClusterIP TCP without --node-ip");
}
