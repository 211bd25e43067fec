//! `FlannelCluster`: a two-node flannel-style cluster in namespaces, built the way flanneld and
//! the CNI bridge plugin program a real node (see the project reference on flannel, §1.1, §3.1,
//! §3.2, §5):
//!
//! - an underlay namespace with bridge `br0`; node namespaces (`eth0` 192.168.50.N/24) and an
//!   external client namespace (`eth0` 192.168.50.100/24) hang off it on veths;
//! - per node: bridge `cni0` (10.244.N.1/24) with pod namespaces on veths (hairpin on, pod MTU =
//!   FLANNEL_MTU), `ip_forward=1`, `bridge-nf-call-iptables=1`, flannel's `FLANNEL-POSTRTG`
//!   (`--ip-masq`) and `FLANNEL-FWD` rules applied with `iptables-nft-restore --noflush`, and a
//!   `subnet.env` written atomically;
//! - vxlan: `flannel.1` (VNI 1, dstport 8472, nolearning, MTU 1450, 10.244.N.0/32) plus, per
//!   remote node, a permanent neighbour entry, a permanent FDB entry and the
//!   `10.244.Y.0/24 via 10.244.Y.0 dev flannel.1 onlink` route, in flannel's order;
//! - host-gw: `10.244.Y.0/24 via 192.168.50.Y dev eth0`.
//!
//! `NodeDaemon` starts the real kubenat daemon in a node namespace as `node-N` (the shared
//! `daemon::Daemon` always runs as node-1 without a subnet file, so it cannot be reused here).
//! `Relay` is a TCP forwarder so node 2 can reach the test API server bound to 127.0.0.1 in
//! node 1.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use super::daemon::{self, bin, poll, Scrape, RESTORE_COUNT_FULL};
use super::netns::NetNs;
use super::process::{self, Spawned};

/// flannel's `Network`.
pub const NETWORK: &str = "10.244.0.0/16";
/// The underlay prefix length.
const UNDERLAY_PREFIX: u8 = 24;
/// The external client's underlay address.
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 100);
/// flannel's iptables binaries (nf_tables backend, like the daemon's `--iptables-backend nft`).
pub const IPTABLES: &str = "iptables-nft";
const IPTABLES_RESTORE: &str = "iptables-nft-restore";
const IPTABLES_SAVE: &str = "iptables-nft-save";

/// The flannel backend to wire the nodes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `flannel.1` VXLAN overlay.
    Vxlan,
    /// Plain routes via the peer node IP.
    HostGw,
}

impl Backend {
    /// Pod MTU (`FLANNEL_MTU`): uplink − 50 for vxlan.
    pub fn mtu(self) -> u32 {
        match self {
            Backend::Vxlan => 1450,
            Backend::HostGw => 1500,
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

/// One pod namespace on a node's `cni0`.
#[derive(Debug)]
pub struct FPod {
    /// Its namespace.
    pub ns: NetNs,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// One node.
#[derive(Debug)]
pub struct FNode {
    /// 1 or 2.
    pub index: u8,
    /// The node namespace.
    pub ns: NetNs,
    /// Underlay address 192.168.50.N.
    pub ip: Ipv4Addr,
    /// Pods on `cni0`: 10.244.N.2, .3 …
    pub pods: Vec<FPod>,
    /// This node's `subnet.env`.
    pub subnet_env: PathBuf,
}

impl FNode {
    /// `node-N`.
    pub fn name(&self) -> String {
        format!("node-{}", self.index)
    }

    /// This node's lease, 10.244.N.0/24.
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }

    /// Every address a packet masqueraded by this node can carry: underlay, `flannel.1`, `cni0`.
    pub fn addresses(&self) -> [Ipv4Addr; 3] {
        [self.ip, Ipv4Addr::new(10, 244, self.index, 0), Ipv4Addr::new(10, 244, self.index, 1)]
    }

    /// `iptables-nft -t TABLE -S CHAIN` in this node (empty string if the chain is missing).
    pub fn chain(&self, table: &str, chain: &str) -> String {
        let out = self.ns.exec(&[IPTABLES, "-w", "-t", table, "-S", chain]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `iptables-nft-save` of this node.
    pub fn save(&self) -> String {
        self.ns.run_ok(&[IPTABLES_SAVE])
    }

    /// Rewrites `subnet.env` atomically (temp file + rename), as flanneld does.
    pub fn write_subnet_env(&self, network: &str, mtu: u32) {
        write_subnet_env(&self.subnet_env, network, self.index, mtu);
    }
}

/// The cluster. Namespaces are deleted when it drops (pods first, the underlay last).
pub struct FlannelCluster {
    /// The backend it was built with.
    pub backend: Backend,
    /// node-1, node-2.
    pub nodes: Vec<FNode>,
    /// The off-cluster client on the underlay (192.168.50.100).
    pub external: NetNs,
    /// The underlay (bridge `br0`).
    pub underlay: NetNs,
    /// State directory (subnet.env files, kubeconfigs, logs).
    pub dir: tempfile::TempDir,
}

impl FlannelCluster {
    /// Builds the cluster with two pods per node (panics on failure; namespaces still removed).
    pub fn new(backend: Backend) -> FlannelCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let underlay = NetNs::new("ul");
        underlay.ip(&["link", "add", "br0", "type", "bridge"]);
        underlay.ip(&["link", "set", "br0", "up"]);
        let external = NetNs::new("ext");
        attach(&underlay, "ext", &external, EXTERNAL_IP);
        let mut cluster = FlannelCluster { backend, nodes: Vec::new(), external, underlay, dir };
        for index in 1..=2u8 {
            let node = cluster.add_node(index, 2);
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            for j in 0..cluster.nodes.len() {
                if i != j {
                    cluster.route_to(i, j);
                }
            }
        }
        for node in &cluster.nodes {
            install_flannel_rules(node, NETWORK);
            node.write_subnet_env(NETWORK, backend.mtu());
        }
        cluster
    }

    /// Node `n` (1-based, like the names).
    pub fn node(&self, n: usize) -> &FNode {
        &self.nodes[n - 1]
    }

    fn add_node(&self, index: u8, pods: u8) -> FNode {
        let ns = NetNs::new(&format!("n{index}"));
        let ip = Ipv4Addr::new(192, 168, 50, index);
        attach(&self.underlay, &format!("n{index}"), &ns, ip);
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.bridge.bridge-nf-call-iptables", "1");
        ns.ip(&["link", "add", "cni0", "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("10.244.{index}.1/24"), "dev", "cni0"]);
        ns.ip(&["link", "set", "cni0", "up"]);
        if self.backend == Backend::Vxlan {
            ns.ip(&[
                "link",
                "add",
                "flannel.1",
                "address",
                &vtep_mac(index),
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                &ip.to_string(),
                "dev",
                "eth0",
                "dstport",
                "8472",
                "nolearning",
            ]);
            ns.ip(&["link", "set", "flannel.1", "mtu", "1450"]);
            ns.ip(&["addr", "add", &format!("10.244.{index}.0/32"), "dev", "flannel.1"]);
            ns.ip(&["link", "set", "flannel.1", "up"]);
        }
        let mtu = self.backend.mtu().to_string();
        let mut pod_list = Vec::new();
        for k in 0..pods {
            let pod_ns = NetNs::new(&format!("n{index}p{k}"));
            let host_if = format!("veth{k}");
            ns.ip(&[
                "link",
                "add",
                &host_if,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod_ns.name(),
            ]);
            ns.ip(&["link", "set", &host_if, "master", "cni0"]);
            ns.ip(&["link", "set", &host_if, "type", "bridge_slave", "hairpin", "on"]);
            ns.ip(&["link", "set", &host_if, "up"]);
            let pod_ip = Ipv4Addr::new(10, 244, index, k + 2);
            pod_ns.ip(&["link", "set", "eth0", "mtu", &mtu]);
            pod_ns.ip(&["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"]);
            pod_ns.ip(&["link", "set", "eth0", "up"]);
            // The bridge plugin: default via the gateway; flannel's CNI adds the Network route.
            pod_ns.ip(&["route", "add", NETWORK, "via", &format!("10.244.{index}.1")]);
            pod_ns.ip(&["route", "add", "default", "via", &format!("10.244.{index}.1")]);
            pod_list.push(FPod { ns: pod_ns, ip: pod_ip });
        }
        let subnet_env = self.dir.path().join(format!("node{index}")).join("subnet.env");
        std::fs::create_dir_all(subnet_env.parent().expect("parent")).expect("mkdir run/flannel");
        FNode { index, ns, ip, pods: pod_list, subnet_env }
    }

    /// Programs node `from`'s path to node `to`'s lease, as flannel's backend does.
    fn route_to(&self, from: usize, to: usize) {
        let (a, b) = (&self.nodes[from], &self.nodes[to]);
        let lease = b.pod_cidr();
        match self.backend {
            Backend::Vxlan => {
                let gw = format!("10.244.{}.0", b.index);
                let mac = vtep_mac(b.index);
                a.ns.ip(&["neigh", "add", &gw, "lladdr", &mac, "dev", "flannel.1", "nud", "permanent"]);
                a.ns.run_ok(&[
                    "bridge",
                    "fdb",
                    "add",
                    &mac,
                    "dev",
                    "flannel.1",
                    "dst",
                    &b.ip.to_string(),
                    "self",
                    "permanent",
                ]);
                a.ns.ip(&["route", "add", &lease, "via", &gw, "dev", "flannel.1", "onlink"]);
            }
            Backend::HostGw => {
                a.ns.ip(&["route", "add", &lease, "via", &b.ip.to_string(), "dev", "eth0"]);
            }
        }
    }
}

/// A fixed VTEP MAC per node (flannel's is random but persisted).
fn vtep_mac(index: u8) -> String {
    format!("02:fa:00:00:00:{index:02x}")
}

/// Joins `ns` to the underlay bridge with `eth0` = `ip`/24 (peer `port` on `br0`).
fn attach(underlay: &NetNs, port: &str, ns: &NetNs, ip: Ipv4Addr) {
    underlay.ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]);
    underlay.ip(&["link", "set", port, "master", "br0"]);
    underlay.ip(&["link", "set", port, "up"]);
    ns.ip(&["addr", "add", &format!("{ip}/{UNDERLAY_PREFIX}"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
}

/// flanneld's `--ip-masq` and forward rule sets (§1.1, current versions), for `node`'s lease.
pub fn flannel_rules(network: &str, pod_cidr: &str) -> String {
    let m = r#"-m comment --comment "flanneld masq""#;
    let f = r#"-m comment --comment "flanneld forward""#;
    format!(
        "*nat\n\
         :FLANNEL-POSTRTG - [0:0]\n\
         -A POSTROUTING {m} -j FLANNEL-POSTRTG\n\
         -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {m} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {pod_cidr} -d {network} {m} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {network} -d {pod_cidr} {m} -j RETURN\n\
         -A FLANNEL-POSTRTG ! -s {network} -d {pod_cidr} {m} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {network} ! -d 224.0.0.0/4 {m} -j MASQUERADE --random-fully\n\
         -A FLANNEL-POSTRTG ! -s {network} -d {network} {m} -j MASQUERADE --random-fully\n\
         COMMIT\n\
         *filter\n\
         :FLANNEL-FWD - [0:0]\n\
         -A FORWARD {f} -j FLANNEL-FWD\n\
         -A FLANNEL-FWD -s {network} {f} -j ACCEPT\n\
         -A FLANNEL-FWD -d {network} {f} -j ACCEPT\n\
         COMMIT\n"
    )
}

/// Applies [`flannel_rules`] in `node` with `iptables-nft-restore --noflush`.
fn install_flannel_rules(node: &FNode, network: &str) {
    let path = node.subnet_env.with_file_name("flannel-rules");
    std::fs::write(&path, flannel_rules(network, &node.pod_cidr())).expect("write rules");
    node.ns.run_ok(&[IPTABLES_RESTORE, "-w", "--noflush", &path.to_string_lossy()]);
}

/// Writes subnet.env the way flanneld does (temp file + rename).
pub fn write_subnet_env(path: &Path, network: &str, index: u8, mtu: u32) {
    let text = format!(
        "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET=10.244.{index}.1/24\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n"
    );
    let tmp = path.with_extension("env.tmp");
    std::fs::write(&tmp, text).expect("write subnet.env.tmp");
    std::fs::rename(&tmp, path).expect("rename subnet.env");
}

/// Writes a kubeconfig for `server` (plain HTTP, no auth) at `path`.
pub fn write_kubeconfig(path: &Path, server: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n\
         users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
         user: test\n    namespace: default\ncurrent-context: test\npreferences: {{}}\n"
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// argv: listen_ip listen_port target_ip target_port. A threaded TCP relay.
const RELAY_PY: &str = r#"
import socket, sys, threading
lip, lport, tip, tport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((lip, lport))
ls.listen(64)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
def serve(c):
    try:
        u = socket.create_connection((tip, tport), timeout=5)
        u.settimeout(None)
    except OSError:
        c.close()
        return
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A TCP relay inside a namespace (killed when dropped, or with its namespace).
pub struct Relay {
    _child: Spawned,
}

impl Relay {
    /// Relays `listen` → `target` inside `ns`.
    pub fn start(ns: &NetNs, listen: (Ipv4Addr, u16), target: (Ipv4Addr, u16)) -> Relay {
        let (lip, lport, tip, tport) =
            (listen.0.to_string(), listen.1.to_string(), target.0.to_string(), target.1.to_string());
        let argv = ns.argv(&[daemon::python(), "-c", RELAY_PY, &lip, &lport, &tip, &tport]);
        Relay { _child: Spawned::until_ready(&argv, Duration::from_secs(5)) }
    }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(21_000);

/// The real kubenat daemon in a node namespace, as `node-N`, following the node's subnet.env.
pub struct NodeDaemon {
    child: Child,
    ns: String,
    /// Its log file.
    pub log: PathBuf,
    /// `/metrics` port on 127.0.0.1 in the node.
    pub metrics_port: u16,
}

impl NodeDaemon {
    /// Starts kubenat in `node` against `kubeconfig`: `--hostname-override node-N`,
    /// `--flannel-subnet-file` (the cluster CIDR comes from FLANNEL_NETWORK),
    /// `--iptables-backend nft`, `--iptables-sync-period sync_period`.
    pub fn start(node: &FNode, kubeconfig: &Path, log: &Path, sync_period: &str) -> NodeDaemon {
        let healthz_port = NEXT_PORT.fetch_add(2, Ordering::Relaxed);
        let metrics_port = healthz_port + 1;
        let (healthz, metrics) = (format!("127.0.0.1:{healthz_port}"), format!("127.0.0.1:{metrics_port}"));
        let name = node.name();
        let kubeconfig = kubeconfig.to_string_lossy().into_owned();
        let subnet = node.subnet_env.to_string_lossy().into_owned();
        let args = [
            "--kubeconfig",
            &kubeconfig,
            "--hostname-override",
            &name,
            "--flannel-subnet-file",
            &subnet,
            "--iptables-backend",
            "nft",
            "--iptables-min-sync-period",
            "100ms",
            "--iptables-sync-period",
            sync_period,
            "--healthz-bind-address",
            &healthz,
            "--metrics-bind-address",
            &metrics,
            "--log",
            "info",
        ];
        let file = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let stdout = file.try_clone().expect("dup log");
        let child = Command::new("ip")
            .args(["netns", "exec", node.ns.name(), bin()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()));
        NodeDaemon { child, ns: node.ns.name().to_string(), log: log.to_path_buf(), metrics_port }
    }

    /// Everything it printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A `/metrics` scrape, `None` when it does not answer 200.
    pub fn metrics(&self) -> Option<Scrape> {
        match daemon::http_get(&self.ns, &format!("http://127.0.0.1:{}/metrics", self.metrics_port)) {
            Some((200, body)) => Some(Scrape(body)),
            _ => None,
        }
    }

    /// Number of full restores so far (0 when /metrics does not answer).
    pub fn full_syncs(&self) -> f64 {
        self.metrics().map_or(0.0, |s| s.get(RESTORE_COUNT_FULL))
    }

    /// Waits (≤ `timeout`) for at least `n` full restores; `false` on timeout or exit.
    pub fn wait_full_syncs(&mut self, n: f64, timeout: Duration) -> bool {
        poll(timeout, Duration::from_millis(100), || {
            if self.child.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            (self.full_syncs() >= n).then_some(true)
        })
        .unwrap_or(false)
    }
}

impl Drop for NodeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `argv` in `ns` and returns stdout (success or not), bounded.
pub fn output(ns: &NetNs, argv: &[&str]) -> String {
    let out = process::run(&ns.argv(argv), process::COMMAND_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
