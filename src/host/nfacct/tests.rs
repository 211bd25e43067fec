use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};

use super::*;

fn request(command: u8, name: &str) -> Vec<u8> {
    let message = AcctMessage { command, counter: Counter { name: name.into(), ..Counter::default() } };
    let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(message));
    nl.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    nl.header.sequence_number = 7;
    nl.finalize();
    let mut buf = vec![0xAA; nl.buffer_len()];
    nl.serialize(&mut buf);
    buf
}

#[test]
fn get_request_bytes() {
    let buf = request(MSG_GET, "ct_state_invalid_dropped_pkts");
    let name = b"ct_state_invalid_dropped_pkts";
    // nlmsghdr (16) + nfgenmsg (4) + nla header (4) + name + NUL, padded to 4.
    let want_len = 16 + 4 + (4 + name.len() + 1).next_multiple_of(4);
    assert_eq!(buf.len(), want_len);
    assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize, want_len);
    assert_eq!(u16::from_ne_bytes(buf[4..6].try_into().unwrap()), 0x0701, "NFNL_SUBSYS_ACCT << 8 | GET");
    assert_eq!(u16::from_ne_bytes(buf[6..8].try_into().unwrap()), NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
    assert_eq!(&buf[16..20], &[0, 0, 0, 0], "nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 0");
    assert_eq!(u16::from_ne_bytes(buf[20..22].try_into().unwrap()) as usize, 4 + name.len() + 1);
    assert_eq!(u16::from_ne_bytes(buf[22..24].try_into().unwrap()), ATTR_NAME);
    assert_eq!(&buf[24..24 + name.len()], name);
    assert!(buf[24 + name.len()..].iter().all(|b| *b == 0), "NUL and padding are zero");
}

#[test]
fn new_request_type() {
    let buf = request(MSG_NEW, "localhost_nps_accepted_pkts");
    assert_eq!(u16::from_ne_bytes(buf[4..6].try_into().unwrap()), 0x0700);
}

/// A reply as the kernel builds it: nfgenmsg, name, packets, bytes (and an unknown attribute).
fn reply(name: &str, packets: u64, bytes: u64) -> Vec<u8> {
    let mut payload = vec![0u8, 0, 0, 0];
    let mut attr = |kind: u16, value: &[u8]| {
        payload.extend(((4 + value.len()) as u16).to_ne_bytes());
        payload.extend(kind.to_ne_bytes());
        payload.extend(value);
        payload.resize(payload.len().next_multiple_of(4), 0);
    };
    attr(ATTR_NAME, &[name.as_bytes(), &[0]].concat());
    attr(ATTR_PKTS, &packets.to_be_bytes());
    attr(ATTR_BYTES, &bytes.to_be_bytes());
    attr(4, &1u32.to_be_bytes()); // NFACCT_USE
    let mut msg = Vec::new();
    msg.extend(((16 + payload.len()) as u32).to_ne_bytes());
    msg.extend(((SUBSYS_ACCT << 8) | u16::from(MSG_NEW)).to_ne_bytes());
    msg.extend(0u16.to_ne_bytes());
    msg.extend(7u32.to_ne_bytes());
    msg.extend(0u32.to_ne_bytes());
    msg.extend(payload);
    msg
}

#[test]
fn reply_decodes_name_packets_and_bytes() {
    let bytes = reply("dummy-metric", 123, 54321);
    let msg = NetlinkMessage::<AcctMessage>::deserialize(&bytes).unwrap();
    let NetlinkPayload::InnerMessage(inner) = msg.payload else { panic!("not an inner message") };
    assert_eq!(inner.counter, Counter { name: "dummy-metric".into(), packets: 123, bytes: 54321 });
    assert_eq!(inner.command, MSG_NEW);
}

#[test]
fn reply_of_another_subsystem_or_truncated_is_an_error() {
    let mut bytes = reply("x", 1, 1);
    bytes[5] = 1; // NFNL_SUBSYS_CTNETLINK
    assert!(NetlinkMessage::<AcctMessage>::deserialize(&bytes).is_err());
    let mut header = NetlinkHeader::default();
    header.message_type = 0x0700;
    assert!(AcctMessage::deserialize(&header, &[0, 0]).is_err());
}

#[test]
fn fake_creates_counts_and_rejects_bad_names() {
    let fake = FakeNfacct::default();
    assert_eq!(fake.get("a").unwrap(), None);
    fake.count("a", 5); // no counter yet: nothing counted
    fake.ensure("a").unwrap();
    fake.count("a", 5);
    fake.ensure("a").unwrap();
    assert_eq!(fake.get("a").unwrap().map(|c| c.packets), Some(5));
    assert!(fake.ensure("").is_err());
    assert!(fake.ensure(&"x".repeat(MAX_NAME + 1)).is_err());
}
