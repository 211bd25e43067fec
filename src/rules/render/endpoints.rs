//! Which endpoints each traffic policy uses: readiness, terminating fallback, topology hints and
//! locality (kube-proxy's `CategorizeEndpoints`).

use std::sync::Arc;

use crate::model::{ClusterState, Endpoint, IpFamily, NodeConfig, ServicePort};

/// The endpoint sets a service port's chains are built from.
#[derive(Debug, Default)]
pub(super) struct Categorized<'a> {
    /// Endpoints for the Cluster policy (SVC chain).
    pub cluster: Vec<&'a Endpoint>,
    /// Endpoints for the Local policy (SVL chain).
    pub local: Vec<&'a Endpoint>,
    /// Every endpoint some chain jumps to (one SEP chain each), sorted by `IP:port`.
    pub reachable: Vec<&'a Endpoint>,
    /// Whether the service has usable endpoints anywhere in the cluster.
    pub has_any: bool,
}

/// Whether the Cluster policy chain is needed: internal policy Cluster, or any external
/// destination (the EXT chain short-circuits pod and node traffic to it).
pub(super) fn uses_cluster_endpoints(svc: &ServicePort, family: IpFamily) -> bool {
    !svc.internal_policy_local() || svc.externally_accessible(family)
}

/// Whether the Local policy chain is needed.
pub(super) fn uses_local_endpoints(svc: &ServicePort, family: IpFamily) -> bool {
    svc.internal_policy_local() || svc.external_policy_local(family)
}

/// Service ports of `node`'s family with a Local policy and no local endpoints to use, as
/// kube-proxy counts them for `kubeproxy_sync_proxy_rules_no_local_endpoints_total`:
/// `(internal, external)`.
pub fn no_local_endpoints(state: &ClusterState, node: &NodeConfig) -> (usize, usize) {
    let family = node.family;
    let (mut internal, mut external) = (0, 0);
    let local_policy = |s: &&ServicePort| s.internal_policy_local() || s.external_policy_local(family);
    for svc in state.services.values().map(Arc::as_ref).filter(|s| s.cluster_ip(family).is_some()).filter(local_policy)
    {
        let endpoints: Vec<&Endpoint> = svc.endpoints.iter().filter(|e| family.contains(&e.addr.ip())).collect();
        if !categorize(&endpoints, svc, node).local.is_empty() {
            continue;
        }
        internal += usize::from(svc.internal_policy_local());
        external += usize::from(svc.external_policy_local(family));
    }
    (internal, external)
}

/// Which hints narrow the Cluster policy's endpoints (kube-proxy's topology mode from hints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology<'n> {
    /// Every ready endpoint.
    All,
    /// Those hinted for this node (`trafficDistribution: PreferSameNode`).
    SameNode(&'n str),
    /// Those hinted for this node's zone (PreferSameZone / PreferClose, topology-aware routing).
    SameZone(&'n str),
}

impl Topology<'_> {
    fn admits(self, ep: &Endpoint) -> bool {
        match self {
            Topology::All => true,
            Topology::SameNode(node) => ep.node_hints.iter().any(|n| n == node),
            Topology::SameZone(zone) => ep.zone_hints.iter().any(|z| z == zone),
        }
    }
}

/// Node hints apply (with the PreferSameTrafficDistribution gate) when every ready endpoint has
/// node hints and one is hinted for this node; otherwise zone hints apply when the node has a
/// zone, every ready endpoint has zone hints and one is hinted for this node's zone.
fn topology<'n>(endpoints: &[&Endpoint], node: &'n NodeConfig) -> Topology<'n> {
    let zone = node.zone.as_deref().filter(|z| !z.is_empty());
    let (mut all_node_hints, mut for_node, mut all_zone_hints, mut for_zone) = (true, false, true, false);
    for ep in endpoints.iter().filter(|e| e.ready) {
        all_node_hints &= !ep.node_hints.is_empty();
        for_node |= ep.node_hints.contains(&node.node_name);
        all_zone_hints &= !ep.zone_hints.is_empty();
        for_zone |= zone.is_some_and(|zone| ep.zone_hints.iter().any(|z| z == zone));
    }
    match zone {
        _ if node.prefer_same_node && all_node_hints && for_node => Topology::SameNode(&node.node_name),
        Some(zone) if all_zone_hints && for_zone => Topology::SameZone(zone),
        _ => Topology::All,
    }
}

fn serving_terminating(ep: &Endpoint) -> bool {
    ep.serving && ep.terminating
}

/// Splits `endpoints` (already of the rendered family, sorted) by traffic policy.
pub(super) fn categorize<'a>(endpoints: &[&'a Endpoint], svc: &ServicePort, node: &NodeConfig) -> Categorized<'a> {
    let mut out = Categorized::default();
    let mut use_topology = false;
    if uses_cluster_endpoints(svc, node.family) {
        let mode = topology(endpoints, node);
        use_topology = mode != Topology::All;
        out.cluster = endpoints.iter().copied().filter(|e| e.ready && mode.admits(e)).collect();
        if out.cluster.is_empty() {
            out.cluster = endpoints.iter().copied().filter(|e| serving_terminating(e)).collect();
        }
        out.has_any = !out.cluster.is_empty();
    }

    if !uses_local_endpoints(svc, node.family) {
        out.reachable = out.cluster.clone();
        return out;
    }

    let local = |e: &&Endpoint| e.is_local(&node.node_name);
    let (mut local_ready, mut local_terminating) = (false, false);
    for ep in endpoints {
        if ep.ready {
            out.has_any = true;
            local_ready |= local(ep);
        } else if serving_terminating(ep) {
            out.has_any = true;
            local_terminating |= local(ep);
        }
    }
    let mut use_terminating = false;
    if local_ready {
        out.local = endpoints.iter().copied().filter(|e| local(e) && e.ready).collect();
    } else if local_terminating {
        use_terminating = true;
        out.local = endpoints.iter().copied().filter(|e| local(e) && serving_terminating(e)).collect();
    }

    if !uses_cluster_endpoints(svc, node.family) {
        out.reachable = out.local.clone();
        return out;
    }
    if !use_topology && !use_terminating {
        // Every ready endpoint is in `cluster`, so it already contains every local one.
        out.reachable = out.cluster.clone();
        return out;
    }
    let mut merged: Vec<&Endpoint> = out.cluster.iter().chain(out.local.iter()).copied().collect();
    merged.sort_by_cached_key(|e| e.key());
    merged.dedup_by(|a, b| a.key() == b.key());
    out.reachable = merged;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServicePortName, TrafficPolicy};

    fn ep(addr: &str, ready: bool, terminating: bool, node: &str, zones: &[&str]) -> Endpoint {
        Endpoint {
            addr: addr.parse().unwrap(),
            ready,
            serving: ready || terminating,
            terminating,
            node_name: Some(node.into()),
            zone_hints: zones.iter().map(|z| z.to_string()).collect(),
            node_hints: vec![],
        }
    }

    fn svc(internal: TrafficPolicy, external: TrafficPolicy, node_port: Option<u16>) -> ServicePort {
        ServicePort {
            name: ServicePortName {
                namespace: "ns".into(),
                name: "s".into(),
                port: "p".into(),
                protocol: Protocol::Tcp,
            },
            cluster_ips: vec!["10.96.0.1".parse().unwrap()],
            port: 80,
            node_port,
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            affinity_timeout: None,
            external_policy: external,
            internal_policy: internal,
            health_check_node_port: None,
            endpoints: vec![],
        }
    }

    fn node(zone: Option<&str>) -> NodeConfig {
        NodeConfig { node_name: "n1".into(), zone: zone.map(Into::into), ..NodeConfig::default() }
    }

    fn keys(eps: &[&Endpoint]) -> Vec<String> {
        eps.iter().map(|e| e.key()).collect()
    }

    #[test]
    fn terminating_fallback_only_without_ready() {
        let eps = [ep("10.0.0.1:80", false, true, "n2", &[]), ep("10.0.0.2:80", true, false, "n2", &[])];
        let refs: Vec<&Endpoint> = eps.iter().collect();
        let c = categorize(&refs, &svc(TrafficPolicy::Cluster, TrafficPolicy::Cluster, None), &node(None));
        assert_eq!(keys(&c.cluster), ["10.0.0.2:80"]);
        let c = categorize(&refs[..1], &svc(TrafficPolicy::Cluster, TrafficPolicy::Cluster, None), &node(None));
        assert_eq!(keys(&c.cluster), ["10.0.0.1:80"]);
        assert!(c.has_any);
    }

    #[test]
    fn topology_hints_need_every_ready_endpoint_hinted() {
        let eps = [ep("10.0.0.1:80", true, false, "n2", &["a"]), ep("10.0.0.2:80", true, false, "n3", &["b"])];
        let refs: Vec<&Endpoint> = eps.iter().collect();
        let s = svc(TrafficPolicy::Cluster, TrafficPolicy::Cluster, None);
        assert_eq!(keys(&categorize(&refs, &s, &node(Some("a"))).cluster), ["10.0.0.1:80"]);
        assert_eq!(categorize(&refs, &s, &node(Some("c"))).cluster.len(), 2, "no hint for zone c");
        assert_eq!(categorize(&refs, &s, &node(None)).cluster.len(), 2, "node without zone");
        let partial = [ep("10.0.0.1:80", true, false, "n2", &["a"]), ep("10.0.0.2:80", true, false, "n3", &[])];
        let refs: Vec<&Endpoint> = partial.iter().collect();
        assert_eq!(categorize(&refs, &s, &node(Some("a"))).cluster.len(), 2);
    }

    #[test]
    fn local_policy_uses_local_and_merges_reachable() {
        let eps = [
            ep("10.0.0.1:80", true, false, "n1", &[]),
            ep("10.0.0.2:80", true, false, "n2", &[]),
            ep("10.0.0.3:80", false, true, "n1", &[]),
        ];
        let refs: Vec<&Endpoint> = eps.iter().collect();
        let s = svc(TrafficPolicy::Cluster, TrafficPolicy::Local, Some(30000));
        let c = categorize(&refs, &s, &node(None));
        assert_eq!(keys(&c.local), ["10.0.0.1:80"]);
        assert_eq!(keys(&c.cluster), ["10.0.0.1:80", "10.0.0.2:80"]);
        assert_eq!(keys(&c.reachable), ["10.0.0.1:80", "10.0.0.2:80"]);

        // Only a terminating endpoint locally: Local falls back to it, reachable merges.
        let c = categorize(&refs[1..], &s, &node(None));
        assert_eq!(keys(&c.local), ["10.0.0.3:80"]);
        assert_eq!(keys(&c.reachable), ["10.0.0.2:80", "10.0.0.3:80"]);

        // internalTrafficPolicy=Local without external destinations: local only.
        let s = svc(TrafficPolicy::Local, TrafficPolicy::Cluster, None);
        let c = categorize(&refs[1..2], &s, &node(None));
        assert!(c.local.is_empty() && c.cluster.is_empty() && c.has_any);
    }

    #[test]
    fn counts_local_policies_without_local_endpoints() {
        let mut state = ClusterState::default();
        let mut add = |name: &str, internal, external, node_port, eps: Vec<Endpoint>| {
            let mut s = svc(internal, external, node_port);
            s.name.name = name.into();
            s.endpoints = eps;
            state.services.insert(s.name.clone(), s.into());
        };
        let remote = || vec![ep("10.0.0.2:80", true, false, "n2", &[])];
        add("itp-none", TrafficPolicy::Local, TrafficPolicy::Cluster, None, remote());
        add("etp-none", TrafficPolicy::Cluster, TrafficPolicy::Local, Some(30001), remote());
        add("both-none", TrafficPolicy::Local, TrafficPolicy::Local, Some(30002), vec![]);
        add(
            "etp-local",
            TrafficPolicy::Cluster,
            TrafficPolicy::Local,
            Some(30003),
            vec![ep("10.0.0.1:80", true, false, "n1", &[])],
        );
        add("etp-not-external", TrafficPolicy::Cluster, TrafficPolicy::Local, None, remote());
        add("cluster", TrafficPolicy::Cluster, TrafficPolicy::Cluster, Some(30004), remote());
        assert_eq!(no_local_endpoints(&state, &node(None)), (2, 2));
        let v6 = NodeConfig { family: IpFamily::V6, ..node(None) };
        assert_eq!(no_local_endpoints(&state, &v6), (0, 0), "no IPv6 cluster IPs");
    }

    fn with_nodes(mut e: Endpoint, nodes: &[&str]) -> Endpoint {
        e.node_hints = nodes.iter().map(|n| n.to_string()).collect();
        e
    }

    #[test]
    fn node_hints_prefer_the_same_node_then_fall_back_to_zones() {
        let s = svc(TrafficPolicy::Cluster, TrafficPolicy::Cluster, None);
        let eps = [
            with_nodes(ep("10.0.0.1:80", true, false, "n1", &["a"]), &["n1"]),
            with_nodes(ep("10.0.0.2:80", true, false, "n2", &["a"]), &["n2"]),
            with_nodes(ep("10.0.0.3:80", true, false, "n3", &["b"]), &["n3"]),
        ];
        let refs: Vec<&Endpoint> = eps.iter().collect();
        let c = categorize(&refs, &s, &node(Some("a")));
        assert_eq!(keys(&c.cluster), ["10.0.0.1:80"], "hinted for this node");
        let off = NodeConfig { prefer_same_node: false, ..node(Some("a")) };
        assert_eq!(keys(&categorize(&refs, &s, &off).cluster), ["10.0.0.1:80", "10.0.0.2:80"], "gate off: zone hints");
        // No endpoint hinted for this node: zone hints decide.
        let other = NodeConfig { node_name: "n9".into(), ..node(Some("b")) };
        assert_eq!(keys(&categorize(&refs, &s, &other).cluster), ["10.0.0.3:80"]);
        // One ready endpoint without node hints: node hints are ignored.
        let mixed = [eps[0].clone(), ep("10.0.0.2:80", true, false, "n2", &[])];
        let refs: Vec<&Endpoint> = mixed.iter().collect();
        assert_eq!(categorize(&refs, &s, &node(None)).cluster.len(), 2);
        // A not-ready endpoint's missing hints do not count.
        let unready = [eps[0].clone(), ep("10.0.0.2:80", false, false, "n2", &[])];
        let refs: Vec<&Endpoint> = unready.iter().collect();
        assert_eq!(keys(&categorize(&refs, &s, &node(None)).cluster), ["10.0.0.1:80"]);
    }
}
