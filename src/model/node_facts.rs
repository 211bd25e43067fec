//! What the proxy knows about its own Node (read from the Node object by `k8s::convert`):
//! zone, pod CIDRs, addresses, and whether it is leaving the cluster.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a Node should stop receiving load-balancer traffic (kube-proxy's "not eligible").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// `metadata.deletionTimestamp` is set.
    Deleting,
    /// Tainted `ToBeDeletedByClusterAutoscaler` (any value or effect).
    ToBeDeletedByClusterAutoscaler,
}

/// Facts about a Node that the proxy configuration and health use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// `topology.kubernetes.io/zone` label, if set and not empty.
    pub zone: Option<String>,
    /// `spec.podCIDRs` (or `spec.podCIDR`), host bits cleared; invalid entries left out.
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses` of type InternalIP, then ExternalIP; invalid entries left out.
    pub internal_ips: Vec<IpAddr>,
    /// Set while the Node is being deleted or drained by the cluster autoscaler.
    pub leaving: Option<Leaving>,
}

impl NodeFacts {
    /// Whether load balancers should keep sending traffic here: `/healthz` answers 503 with
    /// `nodeEligible: false` otherwise.
    pub fn eligible(&self) -> bool {
        self.leaving.is_none()
    }
}
