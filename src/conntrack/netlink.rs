//! `NetlinkConntrack`: the kernel's conntrack table over ctnetlink (`NETLINK_NETFILTER`,
//! subsystem `NFNL_SUBSYS_CTNETLINK`), without the `conntrack` program.
//!
//! Crates: `netlink-sys` (the socket), `netlink-packet-core` (netlink framing, NLMSG_DONE /
//! NLMSG_ERROR) and `netlink-packet-netfilter` (conntrack NEW/GET/DELETE messages with the
//! CTA_TUPLE_ORIG / CTA_TUPLE_REPLY attributes: IPv4/IPv6 addresses, protocol number, ports),
//! all from the rust-netlink project that also maintains `rtnetlink`. They cover a dump and a
//! delete by tuple; the one attribute they do not name, CTA_ID, is written and read as a raw
//! attribute here. A dump is read one datagram at a time and each entry is handed on at once,
//! so memory stays bounded by one receive buffer whatever the table size.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol as CtProtocol, Tuple,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NetlinkAddr};
use nix::sys::socket::MsgFlags;

use super::{Conntrack, Error, Flow, Result};
use crate::model::{IpFamily, Protocol};

/// `CTA_ID`: the entry's id (big-endian u32); a delete naming it only matches that entry.
const CTA_ID: u16 = 12;
/// `NLMSG_ERROR` and `NLMSG_DONE` message types.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// How long one receive may wait for the kernel.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger than any datagram the kernel sends (dump batches are at most 32 KiB).
const RECEIVE_BUFFER: usize = 64 * 1024;

/// Conntrack over one netlink socket. The socket is opened on first use, by the calling
/// thread, in that thread's network namespace; after any error it is closed and the next call
/// opens a new one (so no late answer can be mistaken for the next request's).
#[derive(Debug, Default)]
pub struct NetlinkConntrack {
    channel: Mutex<Option<Channel>>,
}

impl NetlinkConntrack {
    /// A handle that has not opened its socket yet.
    pub fn new() -> Self {
        NetlinkConntrack::default()
    }

    /// Runs `op` on the open channel (opening it first), dropping the channel after an error.
    fn with_channel<T>(&self, op: impl FnOnce(&mut Channel) -> Result<T>) -> Result<T> {
        let mut slot = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(Channel::open()?);
        }
        let Some(channel) = slot.as_mut() else {
            unreachable!("opened above");
        };
        let result = op(channel);
        if result.is_err() {
            *slot = None;
        }
        result
    }
}

impl Conntrack for NetlinkConntrack {
    fn for_each_udp_flow(&self, family: IpFamily, visit: &mut dyn FnMut(Flow)) -> Result<()> {
        self.with_channel(|channel| {
            let request = ConntrackMessage::Get(Vec::new());
            let seq = channel.send(family, request, NLM_F_REQUEST | NLM_F_DUMP, "dump")?;
            channel.receive(family, seq, "dump", &mut |message| {
                if let Some(flow) = flow_of(message).filter(|f| f.protocol == Protocol::Udp) {
                    visit(flow);
                }
            })
        })
    }

    fn delete(&self, flow: &Flow) -> Result<bool> {
        let family = flow.family();
        self.with_channel(|channel| {
            let seq = channel.send(family, delete_request(flow), NLM_F_REQUEST | NLM_F_ACK, "delete")?;
            match channel.receive(family, seq, "delete", &mut |_| {}) {
                Ok(()) => Ok(true),
                Err(Error::Kernel { source, .. }) if source.raw_os_error() == Some(libc_enoent()) => Ok(false),
                Err(err) => Err(err),
            }
        })
    }
}

/// ENOENT: the entry to delete does not exist (any more).
fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

/// An open ctnetlink socket with its sequence counter and receive buffer.
#[derive(Debug)]
struct Channel {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
}

impl Channel {
    fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(Error::Open)?;
        socket.bind_auto().map_err(Error::Open)?;
        socket.connect(&NetlinkAddr::new(0, 0)).map_err(Error::Open)?;
        let timeout = nix::sys::time::TimeVal::new(RECEIVE_TIMEOUT.as_secs() as _, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|errno| Error::Open(errno.into()))?;
        Ok(Channel { socket, seq: 0, buffer: Vec::with_capacity(RECEIVE_BUFFER) })
    }

    /// Sends one conntrack request; returns its sequence number.
    fn send(&mut self, family: IpFamily, message: ConntrackMessage, flags: u16, op: &'static str) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = encode(family, message, flags, self.seq);
        self.socket.send(&bytes, 0).map_err(|source| Error::Io { operation: op, family, source })?;
        Ok(self.seq)
    }

    /// Reads answers to request `seq` until NLMSG_DONE or an NLMSG_ERROR (0 = acknowledged),
    /// handing every other message of that request to `each`.
    fn receive(
        &mut self,
        family: IpFamily,
        seq: u32,
        op: &'static str,
        each: &mut dyn FnMut(&ConntrackMessage),
    ) -> Result<()> {
        loop {
            self.buffer.clear();
            // MSG_TRUNC: the return value is the datagram's full size, so truncation shows.
            let size = self.socket.recv(&mut self.buffer, MsgFlags::MSG_TRUNC.bits()).map_err(|source| Error::Io {
                operation: op,
                family,
                source,
            })?;
            if size > self.buffer.len() {
                return Err(Error::Decode { family, reason: format!("datagram of {size} bytes truncated") });
            }
            match walk(&self.buffer, seq, each).map_err(|reason| Error::Decode { family, reason })? {
                Walk::More => {}
                Walk::Done => return Ok(()),
                Walk::Errno(0) => return Ok(()),
                Walk::Errno(errno) => {
                    return Err(Error::Kernel { operation: op, family, source: io::Error::from_raw_os_error(errno) })
                }
            }
        }
    }
}

/// How a datagram ended.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// More datagrams follow.
    More,
    /// NLMSG_DONE: the dump is complete.
    Done,
    /// NLMSG_ERROR with this (positive) errno; 0 is an acknowledgement.
    Errno(i32),
}

/// Walks the netlink messages of one datagram (pure). Messages of other requests are skipped;
/// a conntrack entry that cannot be decoded is skipped too (it cannot be one we would delete
/// safely), a malformed netlink frame is an error.
fn walk(datagram: &[u8], seq: u32, each: &mut dyn FnMut(&ConntrackMessage)) -> Result<Walk, String> {
    let mut offset = 0;
    while offset < datagram.len() {
        let frame = NetlinkBuffer::new_checked(&datagram[offset..]).map_err(|e| e.to_string())?;
        let length = frame.length() as usize;
        if length < 16 || offset + length > datagram.len() {
            return Err(format!("netlink message length {length} at offset {offset}"));
        }
        let bytes = &datagram[offset..offset + length];
        offset += length.next_multiple_of(4);
        if frame.sequence_number() != seq {
            continue;
        }
        match frame.message_type() {
            NLMSG_DONE => return Ok(Walk::Done),
            NLMSG_ERROR => {
                let code = bytes.get(16..20).ok_or("short NLMSG_ERROR")?;
                let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                return Ok(Walk::Errno(-code));
            }
            _ => {
                if let Ok(message) = NetlinkMessage::<NetfilterMessage>::deserialize(bytes) {
                    if let NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(entry),
                        ..
                    }) = &message.payload
                    {
                        each(entry);
                    }
                }
            }
        }
    }
    Ok(Walk::More)
}

/// One request, framed: netlink header, nfgenmsg (family, version 0, res_id 0), attributes.
fn encode(family: IpFamily, message: ConntrackMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let payload = NetfilterMessage::new(NetfilterHeader::new(proto_family(family), 0, 0), message);
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

fn proto_family(family: IpFamily) -> NetfilterProtoFamily {
    match family {
        IpFamily::V4 => NetfilterProtoFamily::IPv4,
        IpFamily::V6 => NetfilterProtoFamily::IPv6,
    }
}

/// IPCTNL_MSG_CT_DELETE for `flow`: its original tuple, and its id when known.
fn delete_request(flow: &Flow) -> ConntrackMessage {
    let protocol = match flow.protocol {
        Protocol::Tcp => CtProtocol::Tcp,
        Protocol::Udp => CtProtocol::Udp,
        Protocol::Sctp => CtProtocol::Sctp,
    };
    let tuple = vec![
        Tuple::Ip(vec![IPTuple::SourceAddress(flow.orig_src.ip()), IPTuple::DestinationAddress(flow.orig_dst.ip())]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(protocol),
            ProtoTuple::SourcePort(flow.orig_src.port()),
            ProtoTuple::DestinationPort(flow.orig_dst.port()),
        ]),
    ];
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(tuple)];
    if let Some(id) = flow.id {
        attributes.push(ConntrackAttribute::Other(DefaultNla::new(CTA_ID, id.to_be_bytes().to_vec())));
    }
    ConntrackMessage::Delete(attributes)
}

/// The flow a dumped entry describes; `None` for entries that are not TCP, UDP or SCTP or
/// lack an address or port.
fn flow_of(message: &ConntrackMessage) -> Option<Flow> {
    let ConntrackMessage::New(attributes) = message else {
        return None;
    };
    let (mut orig, mut reply, mut id) = (None, None, None);
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuple) => orig = Some(endpoints_of(tuple)?),
            ConntrackAttribute::CtaTupleReply(tuple) => reply = Some(endpoints_of(tuple)?),
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ID => {
                let mut value = [0u8; 4];
                if nla.value_len() == 4 {
                    nla.emit_value(&mut value);
                    id = Some(u32::from_be_bytes(value));
                }
            }
            _ => {}
        }
    }
    let (protocol, orig_src, orig_dst) = orig?;
    let (_, reply_src, _) = reply?;
    Some(Flow { protocol, orig_src, orig_dst, reply_src, id })
}

/// (protocol, source, destination) of one CTA_TUPLE_* attribute.
fn endpoints_of(tuple: &[Tuple]) -> Option<(Protocol, SocketAddr, SocketAddr)> {
    let (mut src, mut dst, mut sport, mut dport, mut protocol): (Option<IpAddr>, Option<IpAddr>, _, _, _) =
        (None, None, None, None, None);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for proto in protos {
                    match proto {
                        ProtoTuple::Protocol(p) => protocol = Some(*p),
                        ProtoTuple::SourcePort(p) => sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => dport = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let protocol = match protocol? {
        CtProtocol::Tcp => Protocol::Tcp,
        CtProtocol::Udp => Protocol::Udp,
        CtProtocol::Sctp => Protocol::Sctp,
        _ => return None,
    };
    Some((protocol, SocketAddr::new(src?, sport?), SocketAddr::new(dst?, dport?)))
}

#[cfg(test)]
mod tests;
