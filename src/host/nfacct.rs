//! nfacct counters (nfnetlink_acct), the packet counts behind kube-proxy's `-m nfacct` rules:
//! the message codec (no crate speaks this subsystem), the [`Nfacct`] trait, the netlink
//! implementation and an in-memory fake.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkSerializable, NlaBuffer, NlasIterator};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::{Error, Result};

/// `NFNL_SUBSYS_ACCT`: nfnetlink's accounting subsystem.
const SUBSYS_ACCT: u16 = 7;
/// `NFNL_MSG_ACCT_NEW`.
const MSG_NEW: u8 = 0;
/// `NFNL_MSG_ACCT_GET`.
const MSG_GET: u8 = 1;
/// `NFACCT_NAME`: the counter's name, NUL-terminated.
const ATTR_NAME: u16 = 1;
/// `NFACCT_PKTS`: packets, big-endian u64.
const ATTR_PKTS: u16 = 2;
/// `NFACCT_BYTES`: bytes, big-endian u64.
const ATTR_BYTES: u16 = 3;
/// Size of `struct nfgenmsg` (family, version, big-endian resource id).
const NFGENMSG_LEN: usize = 4;
/// The kernel's limit on a name (`NFACCT_NAME_MAX` is 32 with the NUL).
pub const MAX_NAME: usize = 31;

/// One counter as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counter {
    /// Its name.
    pub name: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// One nfnetlink_acct message: a command and the counter it is about. Requests carry only the
/// name; replies carry name, packets and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcctMessage {
    /// `NFNL_MSG_ACCT_*` (the low byte of the netlink message type).
    pub command: u8,
    /// The counter.
    pub counter: Counter,
}

impl AcctMessage {
    fn name_attr_len(&self) -> usize {
        4 + (self.counter.name.len() + 1).next_multiple_of(4)
    }
}

impl NetlinkSerializable for AcctMessage {
    fn message_type(&self) -> u16 {
        (SUBSYS_ACCT << 8) | u16::from(self.command)
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.name_attr_len()
    }

    /// `nfgenmsg { AF_UNSPEC, NFNETLINK_V0, res_id 0 }` then the name attribute (length counts
    /// the header and the NUL, not the padding).
    fn serialize(&self, buffer: &mut [u8]) {
        buffer.fill(0);
        let name = self.counter.name.as_bytes();
        let attr = &mut buffer[NFGENMSG_LEN..];
        let len = (4 + name.len() + 1) as u16;
        attr[0..2].copy_from_slice(&len.to_ne_bytes());
        attr[2..4].copy_from_slice(&ATTR_NAME.to_ne_bytes());
        attr[4..4 + name.len()].copy_from_slice(name);
    }
}

impl NetlinkDeserializable for AcctMessage {
    type Error = io::Error;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> io::Result<Self> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("nfacct reply: {what}"));
        if header.message_type >> 8 != SUBSYS_ACCT {
            return Err(invalid("not of the accounting subsystem"));
        }
        let attrs = payload.get(NFGENMSG_LEN..).ok_or_else(|| invalid("shorter than nfgenmsg"))?;
        let mut counter = Counter::default();
        for attr in NlasIterator::new(attrs) {
            let attr: NlaBuffer<&[u8]> = attr.map_err(|e| invalid(&e.to_string()))?;
            let value = attr.value();
            match attr.kind() {
                ATTR_NAME => {
                    let text = value.split(|b| *b == 0).next().unwrap_or_default();
                    counter.name = String::from_utf8_lossy(text).into_owned();
                }
                ATTR_PKTS => counter.packets = be_u64(value).ok_or_else(|| invalid("packets"))?,
                ATTR_BYTES => counter.bytes = be_u64(value).ok_or_else(|| invalid("bytes"))?,
                _ => {}
            }
        }
        Ok(AcctMessage { command: (header.message_type & 0xff) as u8, counter })
    }
}

fn be_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

/// The kernel's nfacct objects, as kube-proxy uses them: ensure a counter, read one.
pub trait Nfacct: Send + Sync {
    /// Creates the counter `name` unless it exists.
    fn ensure(&self, name: &str) -> Result<()>;
    /// The counter `name`, `None` when it does not exist.
    fn get(&self, name: &str) -> Result<Option<Counter>>;
}

/// nfacct through nfnetlink (`NETLINK_NETFILTER`), in the caller's network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetlinkNfacct;

impl NetlinkNfacct {
    /// The netlink nfacct, when the kernel has it: as kube-proxy, a GET of a name that need
    /// not exist must either find it or answer `ENOENT`; any other answer (no nfnetlink_acct,
    /// no permission) means nfacct is unavailable.
    pub fn probe() -> Result<Self> {
        let nfacct = NetlinkNfacct;
        nfacct.get("IMayExist").map(|_| nfacct)
    }

    fn request(command: u8, flags: u16, name: &str) -> Result<Vec<AcctMessage>> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Error::NfacctName(name.to_string()));
        }
        let message = AcctMessage { command, counter: Counter { name: name.to_string(), ..Counter::default() } };
        super::netlink::exchange(NETLINK_NETFILTER, flags, message)
            .map_err(|source| Error::Nfacct { name: name.to_string(), source })
    }
}

impl Nfacct for NetlinkNfacct {
    fn ensure(&self, name: &str) -> Result<()> {
        if self.get(name)?.is_some() {
            return Ok(());
        }
        match NetlinkNfacct::request(MSG_NEW, NLM_F_CREATE | NLM_F_EXCL, name) {
            // Created meanwhile by someone else: the kernel answers EBUSY for a taken name.
            Err(Error::Nfacct { source, .. }) if source.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) => {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    fn get(&self, name: &str) -> Result<Option<Counter>> {
        match NetlinkNfacct::request(MSG_GET, 0, name) {
            Ok(replies) => Ok(replies.into_iter().map(|m| m.counter).find(|c| c.name == name)),
            Err(Error::Nfacct { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// An in-memory nfacct for tests and `--dry-run`: counters are created on demand; `count`
/// plays the kernel's part.
#[derive(Debug, Default)]
pub struct FakeNfacct {
    counters: Mutex<BTreeMap<String, Counter>>,
}

impl FakeNfacct {
    /// Adds `packets` to counter `name` (as matching packets would), if it exists.
    pub fn count(&self, name: &str, packets: u64) {
        if let Some(c) = self.lock().get_mut(name) {
            c.packets += packets;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Counter>> {
        self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Nfacct for FakeNfacct {
    fn ensure(&self, name: &str) -> Result<()> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Error::NfacctName(name.to_string()));
        }
        self.lock().entry(name.to_string()).or_insert_with(|| Counter { name: name.to_string(), ..Counter::default() });
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Option<Counter>> {
        Ok(self.lock().get(name).cloned())
    }
}

#[cfg(test)]
mod tests;
