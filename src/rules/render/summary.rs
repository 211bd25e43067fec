//! One service port on its own: the chains render gives it and the rules it writes for it
//! (capture, refusal and policy rules, its own chains), without the rest of the ruleset. Read
//! by the daemon's `/debug/services` view; the decisions are [`ServiceCtx`]'s, made once.

use std::net::SocketAddr;

use super::service_ctx::ServiceCtx;
use super::{service, Output};
use crate::model::{NodeConfig, ServicePort};
use crate::rules::ruleset::{ChainName, Ruleset, Table, TableName};

/// The per-service chains render writes for one service port in one family; `None` for a
/// chain it does not write (e.g. every chain of a service without endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePortChains {
    /// `KUBE-SVC-…` (Cluster traffic policy dispatch).
    pub cluster: Option<ChainName>,
    /// `KUBE-SVL-…` (Local traffic policy dispatch).
    pub local: Option<ChainName>,
    /// `KUBE-EXT-…` (external destinations).
    pub external: Option<ChainName>,
    /// `KUBE-FW-…` (loadBalancerSourceRanges).
    pub firewall: Option<ChainName>,
    /// `KUBE-SEP-…` of every endpoint a dispatch chain jumps to, sorted by address.
    pub endpoints: Vec<(SocketAddr, ChainName)>,
}

/// The chains render writes for `svc` in `node`'s family; `None` when the service port has no
/// cluster IP of that family (render writes nothing for it).
pub fn service_port_chains(svc: &ServicePort, node: &NodeConfig) -> Option<ServicePortChains> {
    let ctx = ServiceCtx::new(svc, node)?;
    Some(ServicePortChains {
        cluster: ctx.uses_cluster_chain.then(|| ctx.chains.cluster.clone()),
        local: ctx.uses_local_chain.then(|| ctx.chains.local.clone()),
        external: ctx.uses_external_chain.then(|| ctx.chains.external.clone()),
        firewall: ctx.uses_fw_chain.then(|| ctx.chains.firewall.clone()),
        endpoints: ctx.eps.reachable.iter().map(|ep| (ep.addr, ctx.sep(ep))).collect(),
    })
}

/// Every rule [`render`](super::render) writes for `svc` in `node`'s family, in its order,
/// filter then nat, without the static rules; `large_cluster` as [`super::large_cluster`] says
/// for the whole state (it drops per-endpoint comments).
pub fn service_port_rules(svc: &ServicePort, node: &NodeConfig, large_cluster: bool) -> Ruleset {
    let mut out =
        Output { node, filter: Table::new(TableName::Filter), nat: Table::new(TableName::Nat), large_cluster };
    service::render_service(&mut out, svc);
    Ruleset { tables: vec![out.filter, out.nat] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterState, Endpoint, Protocol, ServicePortName};
    use crate::rules::chain_names::{endpoint_chain, ServiceChains};
    use crate::rules::render::render;

    fn web(endpoints: &[(&str, bool)]) -> ServicePort {
        let name = ServicePortName {
            namespace: "default".into(),
            name: "web".into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        };
        let endpoints = endpoints
            .iter()
            .map(|(addr, ready)| Endpoint {
                addr: addr.parse().unwrap(),
                ready: *ready,
                serving: *ready,
                terminating: false,
                node_name: Some("n1".into()),
                zone_hints: vec![],
                node_hints: vec![],
            })
            .collect();
        ServicePort { endpoints, ..ServicePort::new(name, vec!["10.96.0.10".parse().unwrap()], 80) }
    }

    #[test]
    fn chains_are_the_ones_the_full_render_declares() {
        let svc = web(&[("10.244.1.5:8080", true), ("10.244.2.7:8080", false)]);
        let node = NodeConfig { node_name: "n1".into(), ..NodeConfig::default() };
        let chains = service_port_chains(&svc, &node).unwrap();
        let names = ServiceChains::for_service(&svc.name);
        assert_eq!(chains.cluster, Some(names.cluster));
        assert_eq!((chains.local, chains.external, chains.firewall), (None, None, None));
        let sep = endpoint_chain(&svc.name, &"10.244.1.5:8080".parse().unwrap());
        assert_eq!(chains.endpoints, [("10.244.1.5:8080".parse().unwrap(), sep.clone())], "not-ready: no SEP");

        let state = ClusterState { services: [(svc.name.clone(), svc.clone().into())].into() };
        let full = render(&state, &node).to_string();
        assert!(full.contains(&format!(":{sep} - [0:0]")), "{full}");
        let own = service_port_rules(&svc, &node, false);
        for rule in own.tables.iter().flat_map(|t| &t.rules) {
            assert!(full.contains(&rule.to_string()), "{rule} not in the full render:\n{full}");
        }
        let v6 = NodeConfig { family: crate::model::IpFamily::V6, ..node };
        assert_eq!(service_port_chains(&svc, &v6), None, "no IPv6 cluster IP");
    }

    #[test]
    fn a_service_without_endpoints_has_no_chains_but_a_reject() {
        let svc = web(&[]);
        let node = NodeConfig::default();
        assert_eq!(service_port_chains(&svc, &node), Some(ServicePortChains::default()));
        let text = service_port_rules(&svc, &node, false).to_string();
        assert!(text.contains("-j REJECT"), "{text}");
    }
}
