//! Which Service owns a clusterIP:port or a nodePort when several ask for it: the first by
//! namespace/name keeps it. A port whose clusterIP:port is taken is skipped whole; a port whose
//! nodePort is taken loses only its nodePort. One definition, used by [`super::StateBuilder`]
//! (over the whole set) and by the live store (over the Services sharing a claim).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::service::port_label;
use super::validate::protocol_name;
use crate::model::{Protocol, ServicePort};

/// Something a service port asks to own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Claim {
    /// One of its clusterIP:port pairs.
    Cluster(IpAddr, u16, Protocol),
    /// Its nodePort.
    Node(u16, Protocol),
}

/// Everything `port` asks to own (whether or not it gets it).
pub fn claims(port: &ServicePort) -> impl Iterator<Item = Claim> + '_ {
    let protocol = port.name.protocol;
    let cluster = port.cluster_ips.iter().map(move |ip| Claim::Cluster(*ip, port.port, protocol));
    cluster.chain(port.node_port.map(|node_port| Claim::Node(node_port, protocol)))
}

/// What became of a port after its claims were weighed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Used as converted.
    Kept,
    /// Used without its nodePort (another Service has it).
    NodePortDropped,
    /// Not used (another Service has one of its clusterIP:port pairs).
    Skipped,
}

impl Outcome {
    /// The port as it is used, or `None` when it is skipped.
    pub fn apply(self, mut port: ServicePort) -> Option<ServicePort> {
        match self {
            Outcome::Kept => Some(port),
            Outcome::NodePortDropped => {
                port.node_port = None;
                Some(port)
            }
            Outcome::Skipped => None,
        }
    }
}

/// Who got each claim so far. Feed it Services in namespace/name order, and each Service's
/// ports in spec order.
#[derive(Debug, Default)]
pub struct PortOwners {
    owners: HashMap<Claim, String>,
}

impl PortOwners {
    /// Claims what `port` asks for on behalf of the Service `label`; with the outcome, the
    /// reason when the port did not get everything.
    pub fn claim(&mut self, port: &ServicePort, label: &str) -> (Outcome, Option<String>) {
        let protocol = port.name.protocol;
        let what = port_label(&port.name.port, 0);
        for ip in &port.cluster_ips {
            if let Some(owner) = self.owners.get(&Claim::Cluster(*ip, port.port, protocol)) {
                let addr = SocketAddr::new(*ip, port.port);
                let reason =
                    format!("{what}: {addr}/{} is already used by {owner}; port skipped", protocol_name(protocol));
                return (Outcome::Skipped, Some(reason));
            }
        }
        for ip in &port.cluster_ips {
            self.owners.insert(Claim::Cluster(*ip, port.port, protocol), label.to_string());
        }
        let Some(node_port) = port.node_port else {
            return (Outcome::Kept, None);
        };
        match self.owners.entry(Claim::Node(node_port, protocol)) {
            Entry::Vacant(slot) => {
                slot.insert(label.to_string());
                (Outcome::Kept, None)
            }
            Entry::Occupied(owner) => {
                let owner = owner.get();
                let reason = format!(
                    "{what}: nodePort {node_port}/{} is already used by {owner}; nodePort ignored",
                    protocol_name(protocol)
                );
                (Outcome::NodePortDropped, Some(reason))
            }
        }
    }
}
