//! Everything decided about one service port before its rules are written: which chains it
//! needs (from its endpoints and traffic policies), their names and the refusals.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::endpoints::{self, Categorized};
use crate::model::{Endpoint, NodeConfig, ServicePort};
use crate::rules::chain_names::{endpoint_chain, ServiceChains};
use crate::rules::ruleset::ChainName;

/// What a filter rule does with traffic that has nowhere to go, and why.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    /// `REJECT` (no endpoints at all) or `DROP` (no local endpoints).
    pub target: &'static str,
    /// `"ns/svc:port has no endpoints"` / `"… has no local endpoints"`.
    pub comment: String,
}

/// Everything decided about one service port before its rules are written.
pub(super) struct ServiceCtx<'a> {
    pub svc: &'a ServicePort,
    /// `ns/name:port` (kube-proxy's service port name string).
    pub name: String,
    pub cluster_ip: IpAddr,
    pub chains: ServiceChains,
    pub external_ips: Vec<IpAddr>,
    pub lb_ips: Vec<IpAddr>,
    pub source_ranges: Vec<IpNet>,
    pub eps: Categorized<'a>,
    /// KUBE-SEP-* name of every reachable endpoint (hashed once per sync).
    pub endpoint_chains: HashMap<SocketAddr, ChainName>,
    pub has_endpoints: bool,
    pub has_internal_endpoints: bool,
    pub has_external_endpoints: bool,
    pub uses_cluster_chain: bool,
    pub uses_local_chain: bool,
    pub uses_external_chain: bool,
    pub uses_fw_chain: bool,
    /// SVC or SVL: where ClusterIP traffic goes.
    pub internal_chain: ChainName,
    /// SVC or SVL: where the EXT chain finally sends external traffic.
    pub external_policy_chain: ChainName,
    /// EXT, or FW when source ranges apply.
    pub lb_chain: ChainName,
    pub internal_refusal: Option<Refusal>,
    pub external_refusal: Option<Refusal>,
}

impl<'a> ServiceCtx<'a> {
    /// The KUBE-SEP-* chain of a reachable endpoint.
    pub fn sep(&self, ep: &Endpoint) -> ChainName {
        match self.endpoint_chains.get(&ep.addr) {
            Some(name) => name.clone(),
            None => endpoint_chain(&self.svc.name, &ep.addr),
        }
    }

    /// Decides the chains of `svc` for `node`'s family, or `None` if the service has no
    /// cluster IP of that family.
    pub fn new(svc: &'a ServicePort, node: &NodeConfig) -> Option<Self> {
        let family = node.family;
        let cluster_ip = svc.cluster_ip(family)?;
        let in_family = |ip: &&IpAddr| family.contains(ip);
        let endpoints: Vec<&Endpoint> = svc.endpoints.iter().filter(|e| family.contains(&e.addr.ip())).collect();
        let eps = endpoints::categorize(&endpoints, svc, node);
        let endpoint_chains = eps.reachable.iter().map(|e| (e.addr, endpoint_chain(&svc.name, &e.addr))).collect();
        let chains = ServiceChains::for_service(&svc.name);
        let name = svc.name.to_string();

        let has_endpoints = eps.has_any;
        let uses_cluster_chain = !eps.cluster.is_empty() && endpoints::uses_cluster_endpoints(svc, family);
        let uses_local_chain = !eps.local.is_empty() && endpoints::uses_local_endpoints(svc, family);

        let (internal_chain, has_internal_endpoints) = if svc.internal_policy_local() {
            (chains.local.clone(), has_endpoints && !eps.local.is_empty())
        } else {
            (chains.cluster.clone(), has_endpoints)
        };
        let (external_policy_chain, has_external_endpoints) = if svc.external_policy_local(family) {
            (chains.local.clone(), has_endpoints && !eps.local.is_empty())
        } else {
            (chains.cluster.clone(), has_endpoints)
        };

        let external_ips: Vec<IpAddr> = svc.external_ips.iter().filter(in_family).copied().collect();
        let lb_ips: Vec<IpAddr> = svc.load_balancer_ips.iter().filter(in_family).copied().collect();
        let source_ranges: Vec<IpNet> =
            svc.source_ranges.iter().filter(|n| family.contains(&n.addr())).copied().collect();

        let uses_external_chain = has_endpoints && svc.externally_accessible(family);
        let uses_fw_chain = has_endpoints && !lb_ips.is_empty() && !source_ranges.is_empty();
        let lb_chain = if uses_fw_chain { chains.firewall.clone() } else { chains.external.clone() };

        let (internal_refusal, external_refusal) = if !has_endpoints {
            let refusal = Refusal { target: "REJECT", comment: format!("{name} has no endpoints") };
            (Some(refusal.clone()), Some(refusal))
        } else {
            let drop = || Refusal { target: "DROP", comment: format!("{name} has no local endpoints") };
            ((!has_internal_endpoints).then(drop), (!has_external_endpoints).then(drop))
        };

        Some(ServiceCtx {
            svc,
            name,
            cluster_ip,
            chains,
            external_ips,
            lb_ips,
            source_ranges,
            eps,
            endpoint_chains,
            has_endpoints,
            has_internal_endpoints,
            has_external_endpoints,
            uses_cluster_chain,
            uses_local_chain,
            uses_external_chain,
            uses_fw_chain,
            internal_chain,
            external_policy_chain,
            lb_chain,
            internal_refusal,
            external_refusal,
        })
    }
}
