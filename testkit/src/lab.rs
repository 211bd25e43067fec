//! `Lab`: a one-node "cluster" in namespaces — a node namespace that routes (and NATs) between
//! pod namespaces, each joined to it by a veth pair. Addresses exist only inside the lab.
//!
//! What this kernel taught us (6.x; see `kernel_exec.rs` for the proofs):
//! - `Topology::Routed` (default): each pod has its own /24 on its own veth
//!   (`10.244.<i+1>.2`, gateway `10.244.<i+1>.1`). Pod → ClusterIP → DNAT → other pod is plain
//!   L3 forwarding through the node, in both directions, so conntrack always sees the reply and
//!   no `br_netfilter` is needed. This is the robust choice for service tests.
//! - `Topology::Bridge`: pods share `10.244.0.0/24` on bridge `kn0` (node `10.244.0.1`, pods
//!   `10.244.0.<i+2>`), like a CNI bridge. After DNAT to a pod on the same bridge, the reply
//!   goes pod → pod at L2 and bypasses the node's IP stack; only with
//!   `net.bridge.bridge-nf-call-iptables=1` does conntrack see (and un-DNAT) it, otherwise the
//!   client times out. The `net.bridge.*` sysctls are per network namespace on current kernels
//!   (they exist inside a new namespace when `br_netfilter` is loaded/built in, default 1).
//! - The node has `10.96.0.0/12 dev lo` so ClusterIP packets are routable before DNAT: pod
//!   traffic to a ClusterIP without a DNAT rule then reaches filter FORWARD (where
//!   kube-proxy's REJECT lives) instead of failing routing with "network unreachable", and
//!   node-originated traffic (nat OUTPUT) gets a source address.

use std::net::{Ipv4Addr, SocketAddr};

use kubenat::apply::exec::{Backend, ExecIptables, Tool};
use kubenat::model::IpFamily;

use super::netns::NetNs;

/// The lab's service CIDR, routed to `lo` on the node.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The lab's cluster (pod) CIDR.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The bridge's name in `Topology::Bridge`.
pub const BRIDGE: &str = "kn0";

/// How pods are wired to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One routed /24 per pod; no bridge, no br_netfilter needed.
    Routed,
    /// All pods on bridge `kn0` in one /24; `br_netfilter` sets
    /// `net.bridge.bridge-nf-call-iptables` in the node namespace.
    Bridge {
        /// The value to set for `net.bridge.bridge-nf-call-iptables`.
        br_netfilter: bool,
    },
}

/// What to build.
#[derive(Debug, Clone, Copy)]
pub struct LabConfig {
    /// Number of pod namespaces.
    pub pods: usize,
    /// How they are wired.
    pub topology: Topology,
}

/// One pod namespace.
#[derive(Debug)]
pub struct Pod {
    /// Its namespace.
    pub ns: NetNs,
    /// Its address on `eth0`.
    pub ip: Ipv4Addr,
    /// Its default gateway (the node).
    pub gateway: Ipv4Addr,
    /// The node-side interface of its veth pair.
    pub node_if: String,
}

impl Pod {
    /// `ip:port` of this pod.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

/// A node namespace plus pods; everything is deleted when it drops.
#[derive(Debug)]
pub struct Lab {
    /// The node (where kube-proxy's rules go). `ip_forward=1`.
    pub node: NetNs,
    /// The pods, in creation order.
    pub pods: Vec<Pod>,
    /// How they are wired.
    pub topology: Topology,
}

impl Lab {
    /// A routed lab with `pods` pods.
    pub fn new(pods: usize) -> Lab {
        Lab::with(LabConfig { pods, topology: Topology::Routed })
    }

    /// Builds the lab described by `config` (panics on failure; namespaces are still removed).
    pub fn with(config: LabConfig) -> Lab {
        assert!(config.pods <= 200, "addresses are allocated per pod from one octet");
        let node = NetNs::new("node");
        node.sysctl("net.ipv4.ip_forward", "1");
        node.ip(&["route", "add", SERVICE_CIDR, "dev", "lo"]);
        let mut lab = Lab { node, pods: Vec::with_capacity(config.pods), topology: config.topology };
        if let Topology::Bridge { br_netfilter } = config.topology {
            lab.node.ip(&["link", "add", BRIDGE, "type", "bridge"]);
            lab.node.ip(&["addr", "add", "10.244.0.1/24", "dev", BRIDGE]);
            lab.node.ip(&["link", "set", BRIDGE, "up"]);
            lab.node.sysctl("net.bridge.bridge-nf-call-iptables", if br_netfilter { "1" } else { "0" });
        }
        for i in 0..config.pods {
            let pod = lab.add_pod(i);
            lab.pods.push(pod);
        }
        lab
    }

    fn add_pod(&self, i: usize) -> Pod {
        let ns = NetNs::new(&format!("pod{i}"));
        let octet = u8::try_from(i).expect("pods <= 200");
        // Interface names only need to be unique inside each namespace: the veth is created
        // in the node namespace with its peer directly in the pod, never in the root namespace.
        let node_if = format!("veth{i}");
        self.node.ip(&["link", "add", &node_if, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]);
        let (ip, gateway) = match self.topology {
            Topology::Routed => {
                let gateway = Ipv4Addr::new(10, 244, octet + 1, 1);
                self.node.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &node_if]);
                (Ipv4Addr::new(10, 244, octet + 1, 2), gateway)
            }
            Topology::Bridge { .. } => {
                self.node.ip(&["link", "set", &node_if, "master", BRIDGE]);
                (Ipv4Addr::new(10, 244, 0, octet + 2), Ipv4Addr::new(10, 244, 0, 1))
            }
        };
        self.node.ip(&["link", "set", &node_if, "up"]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &gateway.to_string()]);
        Pod { ns, ip, gateway, node_if }
    }

    /// Pod `i`.
    pub fn pod(&self, i: usize) -> &Pod {
        &self.pods[i]
    }

    /// `ExecIptables` running `backend`'s binaries in the node namespace.
    pub fn node_iptables(&self, backend: Backend) -> ExecIptables {
        ExecIptables::new(backend).in_netns(self.node.name())
    }

    /// `iptables-save` (the backend's) of the node namespace, for assertions and failure output.
    pub fn node_save(&self, backend: Backend) -> String {
        let save = backend.binary(IpFamily::V4, Tool::Save);
        self.node.run_ok(&[&save])
    }
}
