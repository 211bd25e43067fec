//! The ctnetlink encoder and decoder against hand-assembled bytes (the layout of
//! `linux/netfilter/nfnetlink_conntrack.h`), independent of the crates' own emitters.

use super::*;

const NESTED: u16 = 0x8000;

/// One attribute: length, type, value, padding to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn nested(kind: u16, children: &[Vec<u8>]) -> Vec<u8> {
    nla(kind | NESTED, &children.concat())
}

/// CTA_TUPLE_* (1 orig, 2 reply) of `proto` from `src` to `dst`.
fn tuple(kind: u16, proto: u8, src: &str, dst: &str) -> Vec<u8> {
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let ip = |attr_v4: u16, attr_v6: u16, ip: IpAddr| match ip {
        IpAddr::V4(v4) => nla(attr_v4, &v4.octets()),
        IpAddr::V6(v6) => nla(attr_v6, &v6.octets()),
    };
    nested(
        kind,
        &[
            nested(1, &[ip(1, 3, src.ip()), ip(2, 4, dst.ip())]),
            nested(2, &[nla(1, &[proto]), nla(2, &src.port().to_be_bytes()), nla(3, &dst.port().to_be_bytes())]),
        ],
    )
}

/// One netlink message: header (type, flags, seq, pid 0), nfgenmsg, attributes.
fn message(kind: u16, flags: u16, seq: u32, family: u8, attributes: &[Vec<u8>]) -> Vec<u8> {
    let body = [vec![family, 0, 0, 0], attributes.concat()].concat();
    let mut out = Vec::new();
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&body);
    out
}

/// A dumped entry as the kernel sends it (IPCTNL_MSG_CT_NEW in subsystem 1, NLM_F_MULTI),
/// with the attributes the reconciler ignores around the tuples.
fn entry(seq: u32, proto: u8, orig: (&str, &str), reply: (&str, &str), id: u32) -> Vec<u8> {
    let family = if orig.0.starts_with('[') { 10 } else { 2 };
    message(
        0x0100,
        2,
        seq,
        family,
        &[
            tuple(1, proto, orig.0, orig.1),
            tuple(2, proto, reply.0, reply.1),
            nla(3, &0x18e_u32.to_be_bytes()), // CTA_STATUS
            nla(7, &117_u32.to_be_bytes()),   // CTA_TIMEOUT
            nla(8, &0_u32.to_be_bytes()),     // CTA_MARK
            nla(11, &1_u32.to_be_bytes()),    // CTA_USE
            nla(CTA_ID, &id.to_be_bytes()),
        ],
    )
}

fn done(seq: u32) -> Vec<u8> {
    message(NLMSG_DONE, 2, seq, 0, &[])
}

fn walk_all(datagram: &[u8], seq: u32) -> (Result<Walk, String>, Vec<Flow>) {
    let mut flows = Vec::new();
    let walked = walk(datagram, seq, &mut |m| flows.extend(flow_of(m)));
    (walked, flows)
}

#[test]
fn decodes_dumped_entries_of_both_families() {
    let datagram = [
        entry(7, 17, ("10.244.0.5:40000", "10.96.0.10:53"), ("10.244.1.7:5353", "10.244.0.5:40000"), 0xdead_beef),
        entry(7, 6, ("10.244.0.5:40001", "10.96.0.1:443"), ("10.244.1.9:6443", "10.244.0.5:40001"), 2),
        entry(7, 17, ("[fd00::5]:40000", "[fd00:96::10]:53"), ("[fd00:244::7]:5353", "[fd00::5]:40000"), 3),
    ]
    .concat();
    let (walked, flows) = walk_all(&datagram, 7);
    assert_eq!(walked, Ok(Walk::More));
    let shown: Vec<String> = flows.iter().map(|f| format!("{f} id={:?}", f.id)).collect();
    assert_eq!(
        shown,
        [
            "udp 10.244.0.5:40000 -> 10.96.0.10:53 reply-from 10.244.1.7:5353 id=Some(3735928559)",
            "tcp 10.244.0.5:40001 -> 10.96.0.1:443 reply-from 10.244.1.9:6443 id=Some(2)",
            "udp [fd00::5]:40000 -> [fd00:96::10]:53 reply-from [fd00:244::7]:5353 id=Some(3)",
        ]
    );
}

#[test]
fn done_error_and_other_requests() {
    let flow = entry(7, 17, ("10.0.0.1:1", "10.96.0.10:53"), ("10.96.0.10:53", "10.0.0.1:1"), 1);
    // A late answer to request 6 is skipped; NLMSG_DONE ends the dump.
    let stale = entry(6, 17, ("10.0.0.9:9", "10.96.0.10:53"), ("10.96.0.10:53", "10.0.0.9:9"), 9);
    let (walked, flows) = walk_all(&[stale, flow, done(7)].concat(), 7);
    assert_eq!(walked, Ok(Walk::Done));
    assert_eq!(flows.len(), 1);
    assert!(!flows[0].is_dnat(), "reply from the address it was sent to");
    // NLMSG_ERROR carries -errno after the header; 0 acknowledges.
    let error = |code: i32| {
        let mut m = message(NLMSG_ERROR, 0, 7, 0, &[]);
        m.truncate(16);
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0; 16]); // the request's header, echoed
        let length = m.len() as u32;
        m[0..4].copy_from_slice(&length.to_ne_bytes());
        m
    };
    assert_eq!(walk_all(&error(-2), 7).0, Ok(Walk::Errno(2)));
    assert_eq!(walk_all(&error(0), 7).0, Ok(Walk::Errno(0)));
    // A frame longer than the datagram is an error, not a panic.
    let mut bad = done(7);
    bad[0] = 200;
    assert!(walk_all(&bad, 7).0.is_err());
}

#[test]
fn an_undecodable_entry_is_skipped() {
    // CTA_TUPLE_ORIG without ports: not a flow the reconciler could name.
    let no_ports =
        message(0x0100, 2, 7, 2, &[nested(1, &[nested(1, &[nla(1, &[10, 0, 0, 1]), nla(2, &[10, 0, 0, 2])])])]);
    let (walked, flows) = walk_all(&[no_ports, done(7)].concat(), 7);
    assert_eq!((walked, flows), (Ok(Walk::Done), vec![]));
}

#[test]
fn delete_names_the_original_tuple_and_the_id() {
    let mut flow = Flow::new(
        Protocol::Udp,
        "10.244.0.5:40000".parse().unwrap(),
        "10.96.0.10:53".parse().unwrap(),
        "10.244.1.7:5353".parse().unwrap(),
    );
    flow.id = Some(0x0102_0304);
    let bytes = encode(IpFamily::V4, delete_request(&flow), NLM_F_REQUEST | NLM_F_ACK, 9);
    let expected = message(
        0x0102, // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
        NLM_F_REQUEST | NLM_F_ACK,
        9,
        2,
        &[tuple(1, 17, "10.244.0.5:40000", "10.96.0.10:53"), nla(CTA_ID, &[1, 2, 3, 4])],
    );
    assert_eq!(bytes, expected);

    let v6 = Flow::new(
        Protocol::Udp,
        "[fd00::5]:40000".parse().unwrap(),
        "[fd00:96::10]:53".parse().unwrap(),
        "[fd00:244::7]:5353".parse().unwrap(),
    );
    let bytes = encode(IpFamily::V6, delete_request(&v6), NLM_F_REQUEST | NLM_F_ACK, 1);
    let expected =
        message(0x0102, NLM_F_REQUEST | NLM_F_ACK, 1, 10, &[tuple(1, 17, "[fd00::5]:40000", "[fd00:96::10]:53")]);
    assert_eq!(bytes, expected);
}

#[test]
fn dump_request_is_a_get_with_the_dump_flags() {
    let bytes = encode(IpFamily::V6, ConntrackMessage::Get(Vec::new()), NLM_F_REQUEST | NLM_F_DUMP, 3);
    assert_eq!(bytes, message(0x0101, NLM_F_REQUEST | NLM_F_DUMP, 3, 10, &[]));
}
