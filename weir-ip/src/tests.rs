//! The stack end to end: a real mempool and ring in, a recording link out,
//! frames built and checked with smoltcp's wire types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::ring::Ring;
use dataplane::{MacAddr, Mbuf, Mempool};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

use crate::stack::arp_request;
use crate::{HostConfig, HostStack, NeighbourState, DEFAULT_MTU};

const OUR_MAC: MacAddr = MacAddr([0x02, 0x77, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([0x02, 0x99, 0, 0, 0, 2]);
const GW_MAC: MacAddr = MacAddr([0x02, 0x99, 0, 0, 0, 0xfe]);
const OUR4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GW4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const OUR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// Long enough for a loaded 2-core CI machine; the tests wait on the frame
/// or counter they expect and return as soon as it is there.
const WAIT: Duration = Duration::from_secs(10);

fn caps() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

fn eth(b: MacAddr) -> EthernetAddress {
    EthernetAddress(b.0)
}

/// Records what the stack sends.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

impl Recorder {
    fn link(&self) -> Box<dyn crate::Link> {
        let sent = Arc::clone(&self.0);
        Box::new(move |f: &[u8]| {
            sent.lock().unwrap().push(f.to_vec());
            true
        })
    }

    /// Waits for a sent frame that `pred` accepts, removing the frames up to
    /// it; panics after [`WAIT`].
    fn wait_for<T>(&self, what: &str, mut pred: impl FnMut(&[u8]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let mut sent = self.0.lock().unwrap();
                if let Some(i) = sent.iter().position(|f| pred(f).is_some()) {
                    let f = sent.remove(i);
                    sent.drain(..i);
                    return pred(&f).unwrap();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {what} sent within {WAIT:?}; sent: {:02x?}",
                self.0.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct Rig {
    stack: HostStack,
    ring: Arc<Ring<Mbuf>>,
    pool: &'static Mempool,
    sent: Recorder,
    updates: Arc<Mutex<Vec<(Ipv4Addr, MacAddr)>>>,
}

impl Rig {
    fn new(gateway4: Option<Ipv4Addr>) -> Rig {
        let cfg = HostConfig {
            port: "uplink".into(),
            mac: OUR_MAC,
            addrs: vec![(OUR4.into(), 24), (OUR6.into(), 64)],
            gateway4,
            gateway6: None,
            mtu: DEFAULT_MTU,
        };
        let pool = Mempool::for_tests(256);
        let ring = Arc::new(Ring::new(64));
        let sent = Recorder::default();
        let updates = Arc::new(Mutex::new(Vec::new()));
        let u = Arc::clone(&updates);
        let stack = HostStack::spawn(
            cfg,
            Arc::clone(&ring),
            sent.link(),
            Box::new(move |ip, mac| u.lock().unwrap().push((ip, mac))),
        )
        .unwrap();
        Rig {
            stack,
            ring,
            pool,
            sent,
            updates,
        }
    }

    /// Queues `frame` as a worker would, waiting for room in the ring.
    fn inject(&self, frame: &[u8]) {
        let mut m = self.pool.alloc().expect("test pool has room");
        m.extend_from_slice(frame).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut m = Some(m);
        while let Some(b) = m.take() {
            if let Err(b) = self.ring.push(b) {
                assert!(Instant::now() < deadline, "host ring stays full");
                std::thread::sleep(Duration::from_millis(1));
                m = Some(b);
            }
        }
    }

    /// Waits until the stack has taken `n` frames in all.
    fn wait_rx(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        while self.stack.counters().rx_frames < n {
            assert!(Instant::now() < deadline, "stack did not take {n} frames");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The peer ARPs for weir's address, as a pinger does first, and gets
    /// the reply (which also tells smoltcp the peer's MAC).
    fn resolved_by_peer(&self) {
        self.inject(&arp(
            ArpOperation::Request,
            PEER_MAC,
            PEER4,
            MacAddr([0; 6]),
            OUR4,
        ));
        self.sent.wait_for("ARP reply", parse_arp);
    }

    fn wait_update(&self) -> (Ipv4Addr, MacAddr) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(u) = self.updates.lock().unwrap().first() {
                return *u;
            }
            assert!(Instant::now() < deadline, "on_neighbour not called");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn arp(
    op: ArpOperation,
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_mac: MacAddr,
    target: Ipv4Addr,
) -> Vec<u8> {
    let mut buf = vec![0u8; 42];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: eth(src_mac),
        dst_addr: eth(if op == ArpOperation::Request {
            MacAddr::BROADCAST
        } else {
            dst_mac
        }),
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut frame);
    ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: eth(src_mac),
        source_protocol_addr: src_ip,
        target_hardware_addr: eth(dst_mac),
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

/// Parses an ARP frame: (Ethernet destination, ARP repr).
fn parse_arp(f: &[u8]) -> Option<(MacAddr, ArpRepr)> {
    let e = EthernetFrame::new_checked(f).ok()?;
    if e.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    let r = ArpRepr::parse(&ArpPacket::new_checked(e.payload()).ok()?).ok()?;
    Some((MacAddr(e.dst_addr().0), r))
}

fn ping4(ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let ip = Ipv4Repr {
        src_addr: PEER4,
        dst_addr: OUR4,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 14 + ip.buffer_len() + icmp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: eth(PEER_MAC),
        dst_addr: eth(OUR_MAC),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut frame);
    let mut p = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut p, &caps());
    icmp.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps());
    buf
}

fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, MacAddr) {
    let o = a.octets();
    let mut s = [0u8; 16];
    s[0] = 0xff;
    s[1] = 0x02;
    s[11] = 0x01;
    s[12] = 0xff;
    s[13..].copy_from_slice(&o[13..]);
    (
        Ipv6Addr::from(s),
        MacAddr([0x33, 0x33, 0xff, o[13], o[14], o[15]]),
    )
}

fn icmp6(dst_mac: MacAddr, dst: Ipv6Addr, hop_limit: u8, icmp: &Icmpv6Repr) -> Vec<u8> {
    icmp6_from(PEER6, dst_mac, dst, hop_limit, icmp)
}

fn icmp6_from(
    src: Ipv6Addr,
    dst_mac: MacAddr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp: &Icmpv6Repr,
) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit,
    };
    let mut buf = vec![0u8; 14 + ip.buffer_len() + icmp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: eth(PEER_MAC),
        dst_addr: eth(dst_mac),
        ethertype: EthernetProtocol::Ipv6,
    }
    .emit(&mut frame);
    let mut p = Ipv6Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut p);
    icmp.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
        &caps(),
    );
    buf
}

fn neighbour_solicit() -> Vec<u8> {
    let (group, group_mac) = solicited_node(OUR6);
    icmp6(
        group_mac,
        group,
        255,
        &Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: OUR6,
            lladdr: Some(RawHardwareAddress::from(eth(PEER_MAC))),
        }),
    )
}

/// Parses an ICMPv6 frame from weir: (Ethernet destination, IPv6 source,
/// IPv6 destination, the ICMPv6 message re-serialised by the caller's closure).
fn parse_icmp6<T>(
    f: &[u8],
    get: impl FnOnce(MacAddr, &Ipv6Repr, Icmpv6Repr) -> Option<T>,
) -> Option<T> {
    let e = EthernetFrame::new_checked(f).ok()?;
    if e.ethertype() != EthernetProtocol::Ipv6 {
        return None;
    }
    let p = Ipv6Packet::new_checked(e.payload()).ok()?;
    let ip = Ipv6Repr::parse(&p).ok()?;
    let icmp = Icmpv6Packet::new_checked(p.payload()).ok()?;
    let r = Icmpv6Repr::parse(&ip.src_addr, &ip.dst_addr, &icmp, &caps()).ok()?;
    get(MacAddr(e.dst_addr().0), &ip, r)
}

#[test]
fn an_arp_request_for_our_address_gets_a_reply() {
    let rig = Rig::new(None);
    rig.inject(&arp(
        ArpOperation::Request,
        PEER_MAC,
        PEER4,
        MacAddr([0; 6]),
        OUR4,
    ));
    let (dst, reply) = rig.sent.wait_for("ARP reply", parse_arp);
    assert_eq!(dst, PEER_MAC);
    assert_eq!(
        reply,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: eth(OUR_MAC),
            source_protocol_addr: OUR4,
            target_hardware_addr: eth(PEER_MAC),
            target_protocol_addr: PEER4,
        }
    );
    let c = rig.stack.counters();
    assert_eq!(c.arp_requests_answered, 1);
    assert_eq!(c.tx_frames, 1);
    // The sender is snooped into the neighbour table.
    let n = rig.stack.neighbours();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].ip, IpAddr::V4(PEER4));
    assert_eq!(n[0].mac, Some(PEER_MAC));
    assert_eq!(n[0].state, NeighbourState::Reachable);
    assert!(!n[0].wanted);
}

#[test]
fn an_arp_request_for_another_address_is_not_answered() {
    let rig = Rig::new(None);
    rig.inject(&arp(
        ArpOperation::Request,
        PEER_MAC,
        PEER4,
        MacAddr([0; 6]),
        Ipv4Addr::new(192, 0, 2, 9),
    ));
    // Then one for us, so the test knows the first was handled.
    rig.resolved_by_peer();
    rig.wait_rx(2);
    assert_eq!(rig.stack.counters().arp_requests_answered, 1);
    assert!(rig.sent.0.lock().unwrap().is_empty(), "only one reply");
}

#[test]
fn an_echo_request_gets_a_reply_with_the_same_id_seq_and_payload() {
    let rig = Rig::new(None);
    // A pinger resolves us first, which also tells smoltcp its MAC.
    rig.resolved_by_peer();
    let payload: Vec<u8> = (0..56u8).collect();
    rig.inject(&ping4(0x1234, 7, &payload));
    let (dst, src_ip, dst_ip, ident, seq, data) = rig.sent.wait_for("echo reply", |f| {
        let e = EthernetFrame::new_checked(f).ok()?;
        let p = Ipv4Packet::new_checked(e.payload()).ok()?;
        let ip = Ipv4Repr::parse(&p, &caps()).ok()?;
        let icmp = Icmpv4Packet::new_checked(p.payload()).ok()?;
        match Icmpv4Repr::parse(&icmp, &caps()).ok()? {
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => Some((
                MacAddr(e.dst_addr().0),
                ip.src_addr,
                ip.dst_addr,
                ident,
                seq_no,
                data.to_vec(),
            )),
            _ => None,
        }
    });
    assert_eq!((dst, src_ip, dst_ip), (PEER_MAC, OUR4, PEER4));
    assert_eq!((ident, seq), (0x1234, 7));
    assert_eq!(data, payload);
    assert_eq!(rig.stack.counters().echo_requests_answered, 1);
}

#[test]
fn a_neighbour_solicit_gets_an_advert_and_ping6_works() {
    let rig = Rig::new(None);
    rig.inject(&neighbour_solicit());
    let (dst, target, lladdr, solicited) = rig.sent.wait_for("neighbour advert", |f| {
        parse_icmp6(f, |dst, ip, r| match r {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags,
                target_addr,
                lladdr,
            }) if ip.src_addr == OUR6 && ip.dst_addr == PEER6 && ip.hop_limit == 255 => Some((
                dst,
                target_addr,
                lladdr.map(|l| l.as_bytes().to_vec()),
                flags.contains(NdiscNeighborFlags::SOLICITED),
            )),
            _ => None,
        })
    });
    assert_eq!(dst, PEER_MAC);
    assert_eq!(target, OUR6);
    assert_eq!(lladdr.as_deref(), Some(&OUR_MAC.0[..]));
    assert!(solicited);
    assert_eq!(rig.stack.counters().neighbour_solicits_answered, 1);
    let n = rig.stack.neighbours();
    assert_eq!(n.len(), 1, "the solicitor is snooped: {n:?}");
    assert_eq!((n[0].ip, n[0].mac), (IpAddr::V6(PEER6), Some(PEER_MAC)));

    let data = b"weir ping6 payload".to_vec();
    rig.inject(&icmp6(
        OUR_MAC,
        OUR6,
        64,
        &Icmpv6Repr::EchoRequest {
            ident: 0xbeef,
            seq_no: 3,
            data: &data,
        },
    ));
    let (dst, ident, seq, got) = rig.sent.wait_for("echo6 reply", |f| {
        parse_icmp6(f, |dst, ip, r| match r {
            Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            } if ip.src_addr == OUR6 && ip.dst_addr == PEER6 => {
                Some((dst, ident, seq_no, data.to_vec()))
            }
            _ => None,
        })
    });
    assert_eq!((dst, ident, seq), (PEER_MAC, 0xbeef, 3));
    assert_eq!(got, data);
    assert_eq!(rig.stack.counters().echo_requests_answered, 1);
}

#[test]
fn a_wanted_peer_is_probed_by_arp_and_reported_once_it_answers() {
    let rig = Rig::new(None);
    rig.stack.set_wanted(vec![PEER4]);
    let (dst, req) = rig.sent.wait_for("ARP probe", parse_arp);
    assert_eq!(dst, MacAddr::BROADCAST);
    assert_eq!(
        req,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: eth(OUR_MAC),
            source_protocol_addr: OUR4,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: PEER4,
        }
    );
    let n = rig.stack.neighbours();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].mac, None);
    assert!(n[0].wanted);
    assert!(matches!(
        n[0].state,
        NeighbourState::Incomplete | NeighbourState::Failed
    ));
    assert!(rig.updates.lock().unwrap().is_empty());

    rig.inject(&arp(ArpOperation::Reply, PEER_MAC, PEER4, OUR_MAC, OUR4));
    assert_eq!(rig.wait_update(), (PEER4, PEER_MAC));
    let n = rig.stack.neighbours();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].ip, IpAddr::V4(PEER4));
    assert_eq!(n[0].mac, Some(PEER_MAC));
    assert_eq!(n[0].state, NeighbourState::Reachable);
    assert_eq!(n[0].confirmed_secs_ago, Some(0));
    assert!(n[0].wanted);
    assert_eq!(rig.stack.counters().neighbour_updates, 1);
    assert!(rig.stack.counters().arp_probes_sent >= 1);

    // The peer moves to another MAC (a gratuitous ARP): reported again.
    let moved = MacAddr([0x02, 0x99, 0, 0, 0, 3]);
    rig.inject(&arp(
        ArpOperation::Request,
        moved,
        PEER4,
        MacAddr([0; 6]),
        PEER4,
    ));
    let deadline = Instant::now() + WAIT;
    while rig.updates.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "MAC change not reported");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rig.updates.lock().unwrap()[1], (PEER4, moved));
}

#[test]
fn a_remote_off_the_subnet_resolves_through_the_gateway() {
    let rig = Rig::new(Some(GW4));
    let remote = Ipv4Addr::new(198, 51, 100, 7);
    assert_eq!(rig.stack.next_hop(remote), Some(GW4));
    assert_eq!(rig.stack.next_hop(PEER4), Some(PEER4));
    rig.stack.set_wanted(vec![remote]);
    let (_, req) = rig.sent.wait_for("ARP probe", parse_arp);
    let ArpRepr::EthernetIpv4 {
        target_protocol_addr,
        ..
    } = req
    else {
        panic!("not an IPv4 ARP")
    };
    assert_eq!(
        target_protocol_addr, GW4,
        "the gateway is probed, not the remote"
    );
    rig.inject(&arp(ArpOperation::Reply, GW_MAC, GW4, OUR_MAC, OUR4));
    assert_eq!(rig.wait_update(), (GW4, GW_MAC));
    let w = rig.stack.wanted();
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].dst, w[0].next_hop), (remote, Some(GW4)));
}

#[test]
fn a_remote_without_a_route_is_listed_unreachable_and_not_probed() {
    let rig = Rig::new(None);
    let remote = Ipv4Addr::new(198, 51, 100, 7);
    assert_eq!(rig.stack.next_hop(remote), None);
    rig.stack.set_wanted(vec![remote, PEER4]);
    rig.sent.wait_for("ARP probe", parse_arp);
    let w = rig.stack.wanted();
    assert_eq!(w[0].next_hop, None);
    assert_eq!(w[1].next_hop, Some(PEER4));
    let n = rig.stack.neighbours();
    assert_eq!(n.len(), 1, "only the on-link peer is a neighbour: {n:?}");
}

#[test]
fn the_probe_builder_makes_a_unicast_request_to_a_known_mac() {
    let f = arp_request(OUR_MAC, OUR4, PEER4, Some(PEER_MAC));
    let (dst, r) = parse_arp(&f).unwrap();
    assert_eq!(dst, PEER_MAC);
    assert!(matches!(
        r,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            target_protocol_addr: PEER4,
            ..
        }
    ));
}

#[test]
fn garbage_frames_are_counted_not_fatal() {
    let rig = Rig::new(None);
    let good_arp = arp(
        ArpOperation::Request,
        PEER_MAC,
        PEER4,
        MacAddr([0; 6]),
        OUR4,
    );
    let good_ping = ping4(1, 1, b"abcdefgh");
    let good_ns = neighbour_solicit();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    // Every truncation of each valid frame, down to nothing.
    for f in [&good_arp, &good_ping, &good_ns] {
        for len in 0..f.len() {
            frames.push(f[..len].to_vec());
        }
    }
    // A bad IPv4 header checksum, a bad ICMPv6 checksum on an NS.
    let mut bad = good_ping.clone();
    bad[14 + 10] ^= 0xff;
    frames.push(bad);
    let mut bad = good_ns.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    frames.push(bad);
    // Pseudo-random bytes with each EtherType the stack looks at.
    let mut x: u32 = 0x1234_5678;
    for i in 0..300 {
        let len = 14 + (i % 90);
        let mut f: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let et: [u8; 2] = [[0x08, 0x06], [0x08, 0x00], [0x86, 0xdd], [0x88, 0xb5]][i % 4];
        f[12..14].copy_from_slice(&et);
        frames.push(f);
    }
    // An unknown protocol, well-formed.
    let mut other = good_arp.clone();
    other[12..14].copy_from_slice(&[0x88, 0xb5]);
    frames.push(other);
    for f in &frames {
        rig.inject(f);
    }
    rig.wait_rx(frames.len() as u64);
    // The stack is still alive and answering.
    rig.inject(&good_arp);
    rig.sent.wait_for("ARP reply after garbage", |f| {
        parse_arp(f).filter(|(_, r)| {
            matches!(
                r,
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    ..
                }
            )
        })
    });
    assert!(rig.stack.is_running());
    let c = rig.stack.counters();
    assert_eq!(c.rx_frames, frames.len() as u64 + 1);
    // Every truncated frame was malformed: 42 + ping + NS truncations, and the
    // two bad checksums, at least.
    let truncated = good_arp.len() + good_ping.len() + good_ns.len();
    assert!(c.rx_malformed >= truncated as u64 + 2, "{c:?}");
    assert!(c.rx_ignored >= 1, "{c:?}");
    // Nothing in the garbage made weir learn a neighbour outside the subnet
    // or with a bad MAC; and the table stays bounded.
    for n in rig.stack.neighbours() {
        match n.ip {
            IpAddr::V4(a) => assert_eq!(a.octets()[..3], [192, 0, 2], "{n:?}"),
            IpAddr::V6(a) => assert_eq!(a.segments()[..4], [0xfd00, 0, 0, 0], "{n:?}"),
        }
        assert!(n.mac.is_some_and(|m| m.is_unicast()));
    }
}

#[test]
fn a_flood_of_arp_senders_keeps_the_table_bounded() {
    let cfg = HostConfig {
        port: "uplink".into(),
        mac: OUR_MAC,
        addrs: vec![(Ipv4Addr::new(10, 0, 0, 1).into(), 16)],
        gateway4: None,
        gateway6: None,
        mtu: DEFAULT_MTU,
    };
    let pool = Mempool::for_tests(256);
    let ring = Arc::new(Ring::new(64));
    let sent = Recorder::default();
    let stack = HostStack::spawn(cfg, Arc::clone(&ring), sent.link(), Box::new(|_, _| {})).unwrap();
    let rig = Rig {
        stack,
        ring,
        pool,
        sent,
        updates: Arc::default(),
    };
    rig.stack.set_wanted(vec![Ipv4Addr::new(10, 0, 0, 2)]);
    let n_senders = crate::NEIGHBOUR_CAPACITY as u32 + 500;
    for i in 0..n_senders {
        let ip = Ipv4Addr::from(0x0a00_0100 + i);
        let mac = MacAddr([0x02, 0x55, 0, 0, (i >> 8) as u8, i as u8]);
        rig.inject(&arp(
            ArpOperation::Request,
            mac,
            ip,
            MacAddr([0; 6]),
            Ipv4Addr::new(10, 0, 0, 77),
        ));
    }
    rig.wait_rx(u64::from(n_senders));
    // The stack takes a burst, then updates the table: wait for the last one.
    let last = IpAddr::V4(Ipv4Addr::from(0x0a00_0100 + n_senders - 1));
    let deadline = Instant::now() + WAIT;
    while !rig.stack.neighbours().iter().any(|n| n.ip == last) {
        assert!(Instant::now() < deadline, "last sender not learnt");
        std::thread::sleep(Duration::from_millis(1));
    }
    let n = rig.stack.neighbours();
    assert!(n.len() <= crate::NEIGHBOUR_CAPACITY, "{} entries", n.len());
    assert!(n
        .iter()
        .any(|n| n.wanted && n.ip == IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
    assert!(rig.stack.counters().neighbours_evicted >= 500);
}

#[test]
fn dropping_the_handle_stops_the_thread() {
    let rig = Rig::new(None);
    rig.resolved_by_peer();
    let Rig { stack, ring, .. } = rig;
    assert_eq!(Arc::strong_count(&ring), 2);
    drop(stack);
    // `drop` joined the thread, which held the other reference.
    assert_eq!(Arc::strong_count(&ring), 1, "the thread let go of the ring");
}

#[test]
fn a_unicast_neighbour_solicit_is_answered_once() {
    let rig = Rig::new(None);
    // As Linux confirms a neighbour: unicast to our address and MAC, no
    // source link-layer option (the answer goes to the frame's source).
    rig.inject(&icmp6(
        OUR_MAC,
        OUR6,
        255,
        &Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: OUR6,
            lladdr: None,
        }),
    ));
    let (dst, target, flags) = rig.sent.wait_for("neighbour advert", |f| {
        parse_icmp6(f, |dst, ip, r| match r {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags,
                target_addr,
                lladdr,
            }) if ip.src_addr == OUR6
                && ip.dst_addr == PEER6
                && ip.hop_limit == 255
                && lladdr.map(|l| l.as_bytes().to_vec()) == Some(OUR_MAC.0.to_vec()) =>
            {
                Some((dst, target_addr, flags))
            }
            _ => None,
        })
    });
    assert_eq!((dst, target), (PEER_MAC, OUR6));
    assert!(flags.contains(NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE));
    // One for another address: not answered. Then a multicast one, answered
    // by smoltcp, marks the end of what the stack has handled.
    rig.inject(&icmp6(
        OUR_MAC,
        OUR6,
        255,
        &Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: PEER6,
            lladdr: None,
        }),
    ));
    rig.inject(&neighbour_solicit());
    rig.sent.wait_for("second advert", |f| {
        parse_icmp6(f, |_, _, r| {
            matches!(r, Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { .. })).then_some(())
        })
    });
    rig.wait_rx(3);
    assert!(
        rig.sent.0.lock().unwrap().is_empty(),
        "one advert per solicit"
    );
    assert_eq!(rig.stack.counters().neighbour_solicits_answered, 2);
}

#[test]
fn another_mac_claiming_our_address_is_counted_not_learnt() {
    let rig = Rig::new(None);
    // A gratuitous ARP for our address from someone else.
    rig.inject(&arp(
        ArpOperation::Request,
        PEER_MAC,
        OUR4,
        MacAddr([0; 6]),
        OUR4,
    ));
    rig.wait_rx(1);
    let deadline = Instant::now() + WAIT;
    while rig.stack.counters().address_conflicts == 0 {
        assert!(Instant::now() < deadline, "conflict not counted");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(rig.stack.neighbours().is_empty());
}

#[test]
fn a_neighbour_solicit_with_a_low_hop_limit_teaches_nothing() {
    let rig = Rig::new(None);
    let (group, group_mac) = solicited_node(OUR6);
    // Forged from off-link (hop limit below 255): RFC 4861 says drop it.
    rig.inject(&icmp6(
        group_mac,
        group,
        64,
        &Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: OUR6,
            lladdr: Some(RawHardwareAddress::from(eth(PEER_MAC))),
        }),
    ));
    rig.inject(&arp(
        ArpOperation::Request,
        GW_MAC,
        GW4,
        MacAddr([0; 6]),
        OUR4,
    ));
    rig.sent.wait_for("ARP reply", parse_arp);
    rig.wait_rx(2);
    let n = rig.stack.neighbours();
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].ip, IpAddr::V4(GW4));
}

#[test]
fn every_single_bit_flip_of_valid_frames_is_survived() {
    let rig = Rig::new(Some(GW4));
    let originals = [
        arp(
            ArpOperation::Request,
            PEER_MAC,
            PEER4,
            MacAddr([0; 6]),
            OUR4,
        ),
        arp(ArpOperation::Reply, GW_MAC, GW4, OUR_MAC, OUR4),
        ping4(9, 9, b"0123456789abcdef"),
        neighbour_solicit(),
    ];
    let mut n = 0u64;
    for f in &originals {
        for bit in 0..f.len() * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            rig.inject(&g);
            n += 1;
        }
    }
    rig.wait_rx(n);
    assert!(rig.stack.is_running());
    // Flipped checksums and lengths were caught before smoltcp saw them.
    assert!(rig.stack.counters().rx_malformed > 0);
    // The table holds only plausible neighbours.
    for nb in rig.stack.neighbours() {
        assert!(
            nb.mac.is_some_and(|m| m.is_unicast() && m != OUR_MAC),
            "{nb:?}"
        );
        assert!(
            match nb.ip {
                IpAddr::V4(a) => a.octets()[..3] == [192, 0, 2] && a != OUR4,
                IpAddr::V6(a) => a.segments()[..4] == [0xfd00, 0, 0, 0] && a != OUR6,
            },
            "{nb:?}"
        );
    }
}

#[test]
fn a_neighbour_soliciting_from_its_link_local_address_is_answered_there() {
    let rig = Rig::new(None);
    let peer_ll: Ipv6Addr = "fe80::99:ff:fe00:2".parse().unwrap();
    let our_ll = crate::link_local(OUR_MAC);
    assert!(rig.stack.addresses().contains(&(IpAddr::V6(our_ll), 64)));
    for target in [OUR6, our_ll] {
        let (group, group_mac) = solicited_node(target);
        rig.inject(&icmp6_from(
            peer_ll,
            group_mac,
            group,
            255,
            &Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target_addr: target,
                lladdr: Some(RawHardwareAddress::from(eth(PEER_MAC))),
            }),
        ));
        let (dst, to, got) = rig.sent.wait_for("neighbour advert", |f| {
            parse_icmp6(f, |dst, ip, r| match r {
                Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { target_addr, .. }) => {
                    Some((dst, ip.dst_addr, target_addr))
                }
                _ => None,
            })
        });
        assert_eq!((dst, to, got), (PEER_MAC, peer_ll, target));
    }
    let n = rig.stack.neighbours();
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!((n[0].ip, n[0].mac), (IpAddr::V6(peer_ll), Some(PEER_MAC)));
}
