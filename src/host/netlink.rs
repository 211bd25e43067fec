//! One request/response exchange on a netlink socket (netlink-sys), for the probes here:
//! sends one message and collects the replies until the dump's end or the kernel's ack.

use std::io;

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};

/// Largest datagram read at once (the kernel splits dumps into messages of at most a page or
/// two; 64 KiB is the usual receive size of netlink libraries).
const RECV_BUFFER: usize = 64 * 1024;

/// How long one reply may take: the probes run on the sync thread, which must never hang on
/// a kernel that does not answer.
const RECEIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `payload` on a new socket of `protocol` with `flags` (`NLM_F_REQUEST` is added) and
/// returns the inner messages of the replies. With `NLM_F_DUMP` it reads until the dump's end;
/// otherwise `NLM_F_ACK` is added and it reads until the ack. A kernel error reply becomes
/// the `io::Error` of its errno (e.g. `ENOENT`).
pub fn exchange<I>(protocol: isize, flags: u16, payload: I) -> io::Result<Vec<I>>
where
    I: NetlinkSerializable + NetlinkDeserializable,
{
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout = nix::sys::time::TimeVal::new(RECEIVE_TIMEOUT.as_secs() as _, 0);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
        .map_err(io::Error::from)?;
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut message = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(payload));
    message.header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
    message.header.sequence_number = 1;
    message.finalize();
    let mut request = vec![0; message.buffer_len()];
    message.serialize(&mut request);
    socket.send(&request, 0)?;

    let mut replies = Vec::new();
    let mut buffer = Vec::with_capacity(RECV_BUFFER);
    loop {
        buffer.clear();
        let n = socket.recv(&mut buffer, 0)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "netlink socket closed"));
        }
        for reply in split(&buffer) {
            let reply = NetlinkMessage::<I>::deserialize(reply).map_err(invalid)?;
            match reply.payload {
                NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                NetlinkPayload::Done(_) => return Ok(replies),
                // An ack is an error message with code 0.
                NetlinkPayload::Error(err) if err.code.is_none() => return Ok(replies),
                NetlinkPayload::Error(err) => return Err(err.to_io()),
                _ => {}
            }
        }
    }
}

/// The messages of one datagram (each starts with its length; they are 4-byte aligned).
pub fn split(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        let (message, after) = rest.split_at(len);
        rest = after.get(len.next_multiple_of(4) - len..).unwrap_or_default();
        Some(message)
    })
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_walks_aligned_messages_and_stops_at_garbage() {
        let mut datagram = Vec::new();
        for (len, fill) in [(16u32, 1u8), (18, 2), (20, 3)] {
            datagram.extend(len.to_ne_bytes());
            datagram.extend(std::iter::repeat_n(fill, len as usize - 4));
            datagram.resize(datagram.len().next_multiple_of(4), 0);
        }
        datagram.extend([9, 0, 0, 0]); // shorter than a header
        let lens: Vec<usize> = split(&datagram).map(<[u8]>::len).collect();
        assert_eq!(lens, [16, 18, 20]);
        let firsts: Vec<u8> = split(&datagram).map(|m| m[4]).collect();
        assert_eq!(firsts, [1, 2, 3]);
    }
}
