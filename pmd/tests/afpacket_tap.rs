//! AF_PACKET and TAP ports on real kernel interfaces: veth pairs into network
//! namespaces, and TAP interfaces moved into them. Runs as root (CI does); fails,
//! never skips, otherwise.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    arp_request, ipv4, require_root, subnet, unique_name, wait_for, LocalVeth, Netns, Veth,
};
use dataplane::{Burst, LinkState, Mempool, Port};
use pmd::{AfPacketConfig, AfPacketError, AfPacketPort, TapError, TapPort};

const TIMEOUT: Duration = Duration::from_secs(3);
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const FAKE_MAC: [u8; 6] = [0x02, 0x77, 0x65, 0x69, 0x72, 0x01];

fn pool() -> &'static Mempool {
    Mempool::for_tests(1024)
}

/// Receives from `port` (with housekeeping) until a frame satisfies `want`.
fn recv_matching(port: &mut dyn Port, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let mut burst = Burst::new();
    wait_for(TIMEOUT, || {
        port.housekeeping();
        port.rx_burst(&mut burst);
        let hit = burst
            .iter()
            .find(|m| want(m.data()))
            .map(|m| m.data().to_vec());
        burst.clear();
        hit
    })
}

/// Transmits one frame, retrying while the port's queue is full.
fn send_frame(port: &mut dyn Port, pool: &'static Mempool, frame: &[u8]) {
    let mut burst = Burst::new();
    let mut m = pool.alloc().expect("mbuf");
    m.extend_from_slice(frame).expect("frame fits");
    burst.push(m);
    let sent = wait_for(TIMEOUT, || {
        port.tx_burst(&mut burst);
        port.housekeeping();
        burst.is_empty().then_some(())
    });
    assert!(sent.is_some(), "port never took the frame");
}

fn is_arp_from(frame: &[u8], src: [u8; 6]) -> bool {
    frame.len() >= 42 && frame[6..12] == src && frame[12..14] == ETHERTYPE_ARP
}

/// An IP round trip from `from` to `to_ip` (in `to`) and back: a UDP datagram to
/// a closed port, answered with ICMP port-unreachable. The datagram leaves `from`
/// with checksum offload, so it only arrives intact if the ports completed it.
fn assert_ip_round_trip(from: &Netns, to: &Netns, to_ip: &str) {
    let before = from.snmp("Icmp", "InDestUnreachs");
    from.send_udp(to_ip);
    let answered = wait_for(TIMEOUT, || {
        (from.snmp("Icmp", "InDestUnreachs") > before).then_some(())
    });
    assert_eq!(
        to.snmp("Udp", "InCsumErrors"),
        0,
        "datagram arrived with a bad checksum"
    );
    assert!(answered.is_some(), "no ICMP answer came back from {to_ip}");
}

/// Moves frames both ways between two ports on a thread until dropped.
struct Forwarder<A: Port + 'static, B: Port + 'static> {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(A, B)>>,
}

impl<A: Port + 'static, B: Port + 'static> Forwarder<A, B> {
    fn start(mut a: A, mut b: B) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut burst = Burst::new();
            // Relaxed: a stop request, nothing is published through it.
            while !flag.load(Ordering::Relaxed) {
                let mut moved = a.rx_burst(&mut burst);
                b.tx_burst(&mut burst);
                burst.clear();
                moved += b.rx_burst(&mut burst);
                a.tx_burst(&mut burst);
                burst.clear();
                a.housekeeping();
                b.housekeeping();
                if moved == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            (a, b)
        });
        Forwarder {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (A, B) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("forwarder thread")
    }
}

impl<A: Port + 'static, B: Port + 'static> Drop for Forwarder<A, B> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn afpacket_open_on_missing_interface_names_it() {
    require_root();
    let name = unique_name('m');
    let err = AfPacketPort::open(&name, pool(), &AfPacketConfig::default()).unwrap_err();
    assert!(
        matches!(err, AfPacketError::NoSuchInterface { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&name), "{err}");
    let err = AfPacketPort::open("bad/name", pool(), &AfPacketConfig::default()).unwrap_err();
    assert!(matches!(err, AfPacketError::InvalidName { .. }), "{err:?}");
}

#[test]
fn afpacket_receives_broadcasts_sent_in_the_namespace() {
    let ns = Netns::new();
    let net = subnet();
    let veth = Veth::new(&ns, &format!("{net}.1"));
    let mut port = AfPacketPort::open(&veth.outer, pool(), &AfPacketConfig::default()).unwrap();
    assert_eq!(port.link(), LinkState::Up);
    let mac = ns.mac(&veth.inner);

    ns.send_udp(&format!("{net}.99"));
    let frame =
        recv_matching(&mut port, |f| is_arp_from(f, mac)).expect("ARP request from the namespace");
    assert_eq!(frame[..6], [0xff; 6], "broadcast destination");
    assert_eq!(frame[28..32], ipv4(&format!("{net}.1")), "sender IP");
    assert_eq!(port.stats().rx_errors.get(), 0);
}

#[test]
fn afpacket_transmits_frames_the_namespace_answers() {
    let ns = Netns::new();
    let net = subnet();
    let veth = Veth::new(&ns, &format!("{net}.1"));
    let pool = pool();
    let mut port = AfPacketPort::open(&veth.outer, pool, &AfPacketConfig::default()).unwrap();
    let ns_mac = ns.mac(&veth.inner);
    let before = ns.counter(&veth.inner, "rx_packets");

    let req = arp_request(
        FAKE_MAC,
        ipv4(&format!("{net}.99")),
        ipv4(&format!("{net}.1")),
    );
    send_frame(&mut port, pool, &req);
    let reply = recv_matching(&mut port, |f| {
        is_arp_from(f, ns_mac) && f[..6] == FAKE_MAC && f[21] == 2
    })
    .expect("ARP reply to the frame we sent");
    assert_eq!(reply[22..28], ns_mac, "reply names the namespace's MAC");
    assert!(ns.counter(&veth.inner, "rx_packets") > before);
    assert_eq!(port.stats().tx_errors.get(), 0);
}

#[test]
fn afpacket_drops_frames_it_cannot_send_and_counts_them() {
    let ns = Netns::new();
    let veth = Veth::new(&ns, &format!("{}.1", subnet()));
    let pool = pool();
    let mut port = AfPacketPort::open(&veth.outer, pool, &AfPacketConfig::default()).unwrap();
    let mut burst = Burst::new();
    for len in [10usize, 1600] {
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&vec![0xab; len]).unwrap();
        burst.push(m);
    }
    assert_eq!(port.tx_burst(&mut burst), 2);
    assert!(burst.is_empty());
    assert_eq!(port.stats().tx_errors.get(), 2);
}

#[test]
fn afpacket_reinserts_vlan_tags_the_kernel_stripped() {
    // The receiving kernel moves an 802.1Q or 802.1ad tag into packet metadata
    // (no VLAN device needed); the port must hand the frame over tagged as sent.
    let pair = LocalVeth::new();
    let pool = pool();
    let cfg = AfPacketConfig::default();
    let mut tx = AfPacketPort::open(&pair.a, pool, &cfg).unwrap();
    let mut rx = AfPacketPort::open(&pair.b, pool, &cfg).unwrap();
    for (tpid, tci) in [(0x8100u16, 0x6005u16), (0x88a8, 0x0123)] {
        let arp = arp_request(FAKE_MAC, [192, 168, 5, 1], [192, 168, 5, 2]);
        let mut tagged = arp[..12].to_vec();
        tagged.extend_from_slice(&tpid.to_be_bytes());
        tagged.extend_from_slice(&tci.to_be_bytes());
        tagged.extend_from_slice(&arp[12..]);
        send_frame(&mut tx, pool, &tagged);
        let got = recv_matching(&mut rx, |f| {
            f.len() >= 18 && f[6..12] == FAKE_MAC && f[12..14] == tpid.to_be_bytes()
        })
        .unwrap_or_else(|| panic!("tagged frame with TPID {tpid:#x}"));
        assert_eq!(got, tagged, "frame received byte for byte as sent");
    }
}

#[test]
fn afpacket_queues_split_one_interface_with_fanout() {
    let ns = Netns::new();
    let net = subnet();
    let veth = Veth::new(&ns, &format!("{net}.1"));
    let mut queues =
        AfPacketPort::open_queues(&veth.outer, 2, pool(), &AfPacketConfig::default()).unwrap();
    assert_eq!(queues.len(), 2);
    let group = queues[0].fanout_group();
    assert!(group.is_some());
    assert_eq!(queues[1].fanout_group(), group);
    let mac = ns.mac(&veth.inner);

    ns.send_udp(&format!("{net}.99"));
    let mut burst = Burst::new();
    let got = wait_for(TIMEOUT, || {
        for q in queues.iter_mut() {
            q.rx_burst(&mut burst);
        }
        let hit = burst.iter().any(|m| is_arp_from(m.data(), mac));
        burst.clear();
        hit.then_some(())
    });
    assert!(got.is_some(), "one of the queues receives the ARP request");
}

#[test]
fn afpacket_forwarding_loop_connects_two_namespaces() {
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let net = subnet();
    let (ip1, ip2) = (format!("{net}.1"), format!("{net}.2"));
    let (v1, v2) = (Veth::new(&ns1, &ip1), Veth::new(&ns2, &ip2));
    let cfg = AfPacketConfig::default();
    let a = AfPacketPort::open(&v1.outer, pool(), &cfg).unwrap();
    let b = AfPacketPort::open(&v2.outer, pool(), &cfg).unwrap();
    let fwd = Forwarder::start(a, b);

    // ns1 ARPs for ns2 (broadcast through A then B), ns2 answers (unicast back).
    let (mac1, mac2) = (ns1.mac(&v1.inner), ns2.mac(&v2.inner));
    ns1.send_udp(&ip2);
    let resolved = wait_for(TIMEOUT, || ns1.neighbour(&ip2).filter(|m| *m == mac2));
    assert!(
        resolved.is_some(),
        "ns1 resolved {ip2} to ns2's MAC through the ports"
    );
    assert_eq!(
        ns2.neighbour(&ip1),
        Some(mac1),
        "ns2 learned ns1 from the request"
    );
    assert_ip_round_trip(&ns1, &ns2, &ip2);

    let (a, b) = fwd.finish();
    for p in [a.stats(), b.stats()] {
        assert_eq!(p.rx_errors.get() + p.tx_errors.get(), 0);
    }
}

#[test]
fn tap_and_afpacket_ports_connect_two_namespaces() {
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let net = subnet();
    let (ip1, ip2) = (format!("{net}.1"), format!("{net}.2"));
    let tap_name = unique_name('t');
    let tap = TapPort::create(&tap_name, pool()).unwrap();
    assert_eq!(tap.name(), tap_name);
    assert_eq!(tap.link(), LinkState::Up);
    // The queue keeps working after the interface moves to another namespace.
    common::run(&["ip", "link", "set", &tap_name, "netns", &ns1.name]);
    ns1.exec(&["ip", "addr", "add", &format!("{ip1}/24"), "dev", &tap_name]);
    ns1.exec(&["ip", "link", "set", &tap_name, "up"]);
    let v2 = Veth::new(&ns2, &ip2);
    let b = AfPacketPort::open(&v2.outer, pool(), &AfPacketConfig::default()).unwrap();
    let fwd = Forwarder::start(tap, b);

    let (mac1, mac2) = (ns1.mac(&tap_name), ns2.mac(&v2.inner));
    ns1.send_udp(&ip2);
    let resolved = wait_for(TIMEOUT, || ns1.neighbour(&ip2).filter(|m| *m == mac2));
    assert!(
        resolved.is_some(),
        "ns1 resolved {ip2} to ns2's MAC through TAP and AF_PACKET"
    );
    assert_eq!(ns2.neighbour(&ip1), Some(mac1));
    assert_ip_round_trip(&ns1, &ns2, &ip2);

    // And the other way round: ns2 asks, the reply comes back through the TAP.
    ns2.flush_neighbours();
    ns1.flush_neighbours();
    ns2.send_udp(&ip1);
    let resolved = wait_for(TIMEOUT, || ns2.neighbour(&ip1).filter(|m| *m == mac1));
    assert!(
        resolved.is_some(),
        "ns2 resolved {ip1} through AF_PACKET and TAP"
    );

    let (tap, b) = fwd.finish();
    assert_eq!(tap.stats().rx_errors.get() + tap.stats().tx_errors.get(), 0);
    assert_eq!(b.stats().rx_errors.get() + b.stats().tx_errors.get(), 0);
    drop(tap);
    // Not persistent: the interface goes away with its last queue (and ns1 with it).
    // The kernel unregisters it asynchronously after the last fd closes.
    let gone = wait_for(TIMEOUT, || {
        (!common::try_run(&[
            "ip", "netns", "exec", &ns1.name, "ip", "link", "show", &tap_name,
        ])
        .status
        .success())
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "{tap_name} still exists after its last queue closed"
    );
}

#[test]
fn tap_receives_and_transmits_in_the_namespace() {
    let ns = Netns::new();
    let net = subnet();
    let pool = pool();
    let name = unique_name('t');
    let mut tap = TapPort::create(&name, pool).unwrap();
    common::run(&["ip", "link", "set", &name, "netns", &ns.name]);
    ns.exec(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", &name]);
    ns.exec(&["ip", "link", "set", &name, "up"]);
    let ns_mac = ns.mac(&name);

    ns.send_udp(&format!("{net}.99"));
    let req =
        recv_matching(&mut tap, |f| is_arp_from(f, ns_mac)).expect("ARP request read from the TAP");
    assert_eq!(req[..6], [0xff; 6]);

    let ask = arp_request(
        FAKE_MAC,
        ipv4(&format!("{net}.99")),
        ipv4(&format!("{net}.1")),
    );
    send_frame(&mut tap, pool, &ask);
    recv_matching(&mut tap, |f| {
        is_arp_from(f, ns_mac) && f[..6] == FAKE_MAC && f[21] == 2
    })
    .expect("ARP reply to the frame written to the TAP");
}

#[test]
fn tap_multi_queue_creates_one_interface_with_two_queues() {
    require_root();
    let name = unique_name('q');
    let queues = TapPort::create_queues(&name, 2, pool()).unwrap();
    assert_eq!(queues.len(), 2);
    assert!(queues
        .iter()
        .all(|q| q.name() == name && q.link() == LinkState::Up));
    let details = common::run(&["ip", "-d", "link", "show", &name]);
    assert!(details.contains("multi_queue"), "{details}");
    assert!(details.contains("UP"), "{details}");
    // A single-queue attach to a multi-queue interface is refused clearly.
    let err = TapPort::create(&name, pool()).unwrap_err();
    assert!(matches!(err, TapError::Mismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&name), "{err}");
    drop(queues);
    assert!(
        !common::try_run(&["ip", "link", "show", &name])
            .status
            .success(),
        "removed with its queues"
    );
}

#[test]
fn tap_second_single_queue_attach_is_busy() {
    require_root();
    let name = unique_name('s');
    let _first = TapPort::create(&name, pool()).unwrap();
    let err = TapPort::create(&name, pool()).unwrap_err();
    assert!(matches!(err, TapError::Busy { .. }), "{err:?}");
    let err = TapPort::create("", pool()).unwrap_err();
    assert!(matches!(err, TapError::InvalidName { .. }), "{err:?}");
}

#[test]
fn afpacket_resumes_a_partly_consumed_block_across_bursts() {
    let pair = LocalVeth::new();
    let pool = pool();
    let cfg = AfPacketConfig::default();
    let mut tx = AfPacketPort::open(&pair.a, pool, &cfg).unwrap();
    let mut rx = AfPacketPort::open(&pair.b, pool, &cfg).unwrap();
    const N: u16 = 100;
    let mut out = Burst::new();
    for i in 0..N {
        let mut f = arp_request(FAKE_MAC, [192, 168, 9, 1], [192, 168, 9, 2]);
        f[40..42].copy_from_slice(&i.to_be_bytes()); // sequence number in the target IP
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&f).unwrap();
        out.push(m);
        if out.is_full() || i == N - 1 {
            let sent = wait_for(TIMEOUT, || {
                tx.tx_burst(&mut out);
                tx.housekeeping();
                out.is_empty().then_some(())
            });
            assert!(sent.is_some(), "transmit ring never drained");
        }
    }
    // Leave three free slots per call, so blocks are consumed a few frames at a time.
    let mut burst = Burst::new();
    let mut seen = Vec::new();
    wait_for(TIMEOUT, || {
        while burst.len() < burst.capacity() - 3 {
            burst.push(pool.alloc().unwrap());
        }
        let n = rx.rx_burst(&mut burst);
        assert!(n <= 3);
        let filler = burst.capacity() - 3;
        for m in burst.drain(..).skip(filler) {
            let d = m.data();
            if d[6..12] == FAKE_MAC {
                seen.push(u16::from_be_bytes([d[40], d[41]]));
            }
        }
        (seen.len() >= usize::from(N)).then_some(())
    });
    assert_eq!(
        seen,
        (0..N).collect::<Vec<_>>(),
        "every frame once, in order"
    );
    assert_eq!(rx.stats().rx_errors.get(), 0);
}
