//! The node's interface addresses, as kube-proxy lists them for `--nodeport-addresses` (Go's
//! `net.InterfaceAddrs`): every address of every interface, read through rtnetlink.

use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;
use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;

use super::{Error, Result};

/// Where the node's interface addresses come from.
pub trait InterfaceAddresses: Send + Sync {
    /// Every address configured on an interface, with its prefix length, in interface order.
    fn addresses(&self) -> Result<Vec<IpNet>>;
}

/// The addresses of the caller's network namespace, by an `RTM_GETADDR` dump.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetlinkAddresses;

impl InterfaceAddresses for NetlinkAddresses {
    fn addresses(&self) -> Result<Vec<IpNet>> {
        let request = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        let replies = super::netlink::exchange(NETLINK_ROUTE, NLM_F_DUMP, request).map_err(Error::Addresses)?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(msg) => address(msg),
                _ => None,
            })
            .collect())
    }
}

/// The interface's own address of one `RTM_NEWADDR`: `IFA_LOCAL` where the kernel gives one
/// (on a point-to-point link `IFA_ADDRESS` is the peer), else `IFA_ADDRESS`.
pub fn address(msg: &AddressMessage) -> Option<IpNet> {
    let find = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if want_local => Some(*ip),
            AddressAttribute::Address(ip) if !want_local => Some(*ip),
            _ => None,
        })
    };
    let ip: IpAddr = find(true).or_else(|| find(false))?;
    IpNet::new(ip, msg.header.prefix_len).ok()
}

/// Addresses a test sets (the fake of [`InterfaceAddresses`]).
#[derive(Debug, Default)]
pub struct FakeAddresses {
    addresses: Mutex<Vec<IpNet>>,
}

impl FakeAddresses {
    /// Starts with `addresses`.
    pub fn new(addresses: Vec<IpNet>) -> Self {
        FakeAddresses { addresses: Mutex::new(addresses) }
    }

    /// Replaces the addresses (an address added or removed on the node).
    pub fn set(&self, addresses: Vec<IpNet>) {
        *self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = addresses;
    }
}

impl InterfaceAddresses for FakeAddresses {
    fn addresses(&self) -> Result<Vec<IpNet>> {
        Ok(self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::AddressFamily;

    use super::*;

    fn msg(prefix_len: u8, attrs: Vec<AddressAttribute>) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.attributes = attrs;
        msg
    }

    #[test]
    fn local_wins_over_the_peer_address() {
        let local: IpAddr = "10.1.2.3".parse().unwrap();
        let peer: IpAddr = "10.1.2.9".parse().unwrap();
        let ptp = msg(32, vec![AddressAttribute::Address(peer), AddressAttribute::Local(local)]);
        assert_eq!(address(&ptp), Some("10.1.2.3/32".parse().unwrap()));
        let v6 = msg(64, vec![AddressAttribute::Address("fd00::5".parse().unwrap())]);
        assert_eq!(address(&v6), Some("fd00::5/64".parse().unwrap()));
        assert_eq!(address(&msg(24, vec![])), None);
        assert_eq!(address(&msg(40, vec![AddressAttribute::Local(local)])), None, "bad prefix");
    }

    #[test]
    fn the_loopback_address_is_listed() {
        // Every namespace has lo; dumping needs no privilege.
        let addrs = NetlinkAddresses.addresses().expect("RTM_GETADDR dump");
        assert!(addrs.iter().any(|a| a.addr() == IpAddr::from([127, 0, 0, 1])), "{addrs:?}");
    }
}
