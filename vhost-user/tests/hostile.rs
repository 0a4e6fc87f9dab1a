//! A hostile frontend against weir's device socket, while a second device with a
//! well-behaved frontend keeps forwarding.
//!
//! The well-behaved frontend is `vhost::vhost_user::Frontend` over a guest whose
//! memory is a memfd shared with the device; its rings and frames are written with
//! `pwrite`, so the test needs no `unsafe`. Malformed messages the library's
//! frontend refuses to send are written raw: a 12-byte header, the payload, and
//! fds as SCM_RIGHTS.
//!
//! Each case checks that the device reports the problem (`error()`, link Down,
//! `PortError` drops), that the process survives, that a healthy frontend can use
//! the same device afterwards, and that the bystander device still forwards.
//! Cases run one at a time (fd counting needs a quiet process).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dataplane::{Burst, DropReason, LinkState, Mempool, Port};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VringConfigData};
use vhost_user::testguest::spec::{
    F_PROTOCOL_FEATURES, F_VERSION_1, GET_FEATURES, NET_SET_MTU, PROTO_MQ, PROTO_NET_MTU,
    PROTO_REPLY_ACK, SET_FEATURES, SET_MEM_TABLE, SET_VRING_CALL, SET_VRING_NUM,
};
use vhost_user::testguest::{self, region, ring_at, wait_until, Guest, Handshake, Layout, UADDR};
use vhost_user::{create, VhostUserConfig, VhostUserDevice, VhostUserPort};

// virtio split-ring flags.
const DESC_F_NEXT: u16 = 1;

/// Guest memory layout: one memfd-backed region at guest address 0.
const MEM_BYTES: u64 = 0x10_0000;
const QSIZE: u16 = 8;
const BUF: u64 = 0x1_0000;
const LAYOUT: Layout = Layout {
    mem_bytes: MEM_BYTES,
    queue_size: QSIZE,
    tx_buf: BUF,
    tx_stride: 0x1000,
};

fn pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(2048))
}

fn memfd(len: u64) -> File {
    testguest::memfd(len).unwrap()
}

/// A guest with blocking eventfds, as a careless frontend might pass: weir
/// must make its writes non-blocking itself.
fn guest() -> Guest {
    Guest::new(LAYOUT, 0).unwrap()
}

/// Handshake and both rings, enabled, through the `vhost` crate's frontend.
fn attach(g: &Guest, sock: &Path) -> Frontend {
    let how = Handshake {
        features: 0,
        protocol: VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ,
        enable: true,
    };
    g.attach(sock, &how).unwrap()
}

fn frame(seq: u8) -> [u8; 64] {
    testguest::frame([0x02, 0, 0, 0, 0, seq])
}

/// Polls `port` until `want` frames arrived or `secs` passed.
fn receive(port: &mut VhostUserPort, want: usize, secs: u64) -> usize {
    let mut burst = Burst::new();
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(secs);
    while got < want && Instant::now() < end {
        let n = port.rx_burst(&mut burst);
        burst.clear();
        got += n;
        if n == 0 {
            port.housekeeping();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

/// A device, its port and its socket.
struct Dev {
    dev: VhostUserDevice,
    port: VhostUserPort,
    sock: PathBuf,
}

fn device(dir: &Path, name: &str) -> Dev {
    let sock = dir.join(format!("{name}.sock"));
    let cfg = testguest::server_config(sock.clone());
    let mut dev = create(name, &cfg, pool()).unwrap();
    let port = dev.take_queues().pop().unwrap();
    Dev { dev, port, sock }
}

impl Dev {
    /// Waits (5 s at most), housekeeping the port as a worker does, until the
    /// link is up; whether it came up.
    fn link_up(&mut self) -> bool {
        wait_until(5, || {
            self.port.housekeeping();
            self.dev.link() == LinkState::Up
        })
    }

    /// Drops `frontend` (closing its connection) and asserts that the device
    /// sees it go within 5 s.
    fn disconnect(&self, frontend: impl Sized) {
        drop(frontend);
        assert!(
            wait_until(5, || !self.dev.is_connected()),
            "disconnect not seen; error {:?}",
            self.dev.error()
        );
    }
}

/// The device forwards guest frames from a fresh well-behaved frontend.
fn assert_serves(d: &mut Dev) {
    let mut g = guest();
    let fe = attach(&g, &d.sock);
    assert!(
        d.link_up(),
        "link not up for a healthy frontend; error {:?}",
        d.dev.error()
    );
    g.send_frames(4);
    assert_eq!(receive(&mut d.port, 4, 5), 4, "error {:?}", d.dev.error());
    assert_eq!(g.used_idx(1), 4);
    assert_eq!(d.dev.error(), None);
    drop(fe);
    assert!(wait_until(5, || {
        d.port.housekeeping();
        !d.dev.is_connected()
    }));
}

/// Runs `case` against a fresh device while a bystander device with a healthy
/// frontend forwards before and after; then checks the hostile device still
/// serves a healthy frontend.
fn with_bystander(case: impl FnOnce(&mut Dev)) {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut b = device(dir.path(), "bystander");
    let mut bg = guest();
    let _bfe = attach(&bg, &b.sock);
    bg.send_frame(&frame(1));
    assert_eq!(receive(&mut b.port, 1, 5), 1);

    let mut h = device(dir.path(), "hostile");
    case(&mut h);
    assert_serves(&mut h);

    bg.send_frames(3);
    assert_eq!(
        receive(&mut b.port, 3, 5),
        3,
        "bystander stopped forwarding"
    );
    assert_eq!(b.dev.error(), None);
    assert_eq!(b.dev.link(), LinkState::Up);
}

/// A raw frontend whose every message must go through.
struct Raw(testguest::RawFrontend);

impl Raw {
    fn connect(sock: &Path) -> Raw {
        Raw(testguest::RawFrontend::connect(sock).unwrap())
    }

    fn send(&self, request: u32, flags: u32, payload: &[u8], fds: &[BorrowedFd<'_>]) {
        self.0.send(request, flags, payload, fds).unwrap();
    }

    fn send_bytes(&self, b: &[u8], fds: &[BorrowedFd<'_>]) {
        self.0.send_bytes(b, fds).unwrap();
    }

    fn get_u64(&mut self, request: u32) -> u64 {
        self.0.get_u64(request).expect("u64 reply")
    }

    /// Sends with NEED_REPLY; true if the backend acked success.
    fn request(&mut self, request: u32, payload: &[u8], fds: &[BorrowedFd<'_>]) -> bool {
        self.0.request_acked(request, payload, fds).expect("ack")
    }

    /// SET_OWNER, features, and the protocol features `protocol`.
    fn negotiated(sock: &Path, protocol: u64) -> Raw {
        let mut r = Raw::connect(sock);
        r.0.negotiate(F_VERSION_1 | F_PROTOCOL_FEATURES, protocol)
            .expect("handshake");
        r
    }

    /// SET_OWNER, features, and REPLY_ACK.
    fn handshake(sock: &Path) -> Raw {
        Raw::negotiated(sock, PROTO_REPLY_ACK | PROTO_MQ)
    }

    /// True once the backend closed the connection.
    fn closed_within(&mut self, secs: u64) -> bool {
        self.0.closed_within(Duration::from_secs(secs))
    }
}

/// Waits (the crate's frontend does not always wait for acks) until the
/// device's error mentions `what`.
fn assert_error_mentions(d: &Dev, what: &str) {
    let has = || d.dev.error().is_some_and(|e| e.contains(what));
    assert!(
        wait_until(5, has),
        "error {:?} does not mention {what:?}",
        d.dev.error()
    );
}

#[test]
fn region_larger_than_its_memfd_is_refused_before_mapping_and_leaks_no_fd() {
    with_bystander(|h| {
        let mem = memfd(0x8000);
        let mut r = Raw::handshake(&h.sock);
        let before = testguest::open_fds();
        let t = testguest::mem_table_payload(&[(0, MEM_BYTES, UADDR, 0)]);
        assert!(!r.request(SET_MEM_TABLE, &t, &[mem.as_fd()]));
        assert_eq!(testguest::open_fds(), before, "refused region fd leaked");
        assert_error_mentions(h, "needs 1048576 bytes of its file, which has 32768");
        // Through the library's frontend too, then a ring in the unbacked tail:
        // no mapping exists for it, so the ring never starts.
        let g = Guest { mem, ..guest() };
        let fe = Frontend::connect(&h.sock, 3);
        drop(r);
        let fe = fe.unwrap();
        fe.set_owner().unwrap();
        fe.get_features().unwrap();
        fe.set_features(F_VERSION_1 | F_PROTOCOL_FEATURES).unwrap();
        let mut fe = fe;
        fe.get_protocol_features().unwrap();
        fe.set_protocol_features(VhostUserProtocolFeatures::REPLY_ACK)
            .unwrap();
        // The crate's frontend may not wait for the ack; the device's error
        // tells.
        let _ = fe.set_mem_table(&[region(&g.mem, 0, MEM_BYTES)]);
        fe.set_vring_num(1, QSIZE).unwrap();
        assert_error_mentions(h, "which has 32768");
        let tail = 0xc000;
        let addr = VringConfigData {
            queue_max_size: QSIZE,
            queue_size: QSIZE,
            flags: 0,
            desc_table_addr: UADDR + tail,
            used_ring_addr: UADDR + tail + 0x2000,
            avail_ring_addr: UADDR + tail + 0x1000,
            log_addr: None,
        };
        let _ = fe.set_vring_addr(1, &addr);
        let _ = fe.set_vring_kick(1, g.kick[1].as_ref().unwrap());
        let _ = fe.set_vring_enable(1, true);
        h.port.housekeeping();
        assert_eq!(receive(&mut h.port, 1, 1), 0);
        assert_eq!(h.port.link(), LinkState::Down);
        assert_eq!(h.dev.link(), LinkState::Down);
        assert!(h.dev.error().is_some());
        h.disconnect(fe);
    });
}

#[test]
fn malformed_memory_tables_are_refused() {
    with_bystander(|h| {
        let mut r = Raw::handshake(&h.sock);
        let m = [memfd(0x10000), memfd(0x10000)];
        let fd = |i: usize| m[i].as_fd();
        let before = testguest::open_fds();
        let cases: [(&str, Vec<u8>, Vec<BorrowedFd<'_>>); 5] = [
            (
                "overlap",
                testguest::mem_table_payload(&[
                    (0, 0x10000, UADDR, 0),
                    (0x8000, 0x10000, UADDR + 0x10_0000, 0),
                ]),
                vec![fd(0), fd(1)],
            ),
            (
                "overflows",
                testguest::mem_table_payload(&[(u64::MAX - 0xfff, 0x10000, UADDR, 0)]),
                vec![fd(0)],
            ),
            (
                "size 0",
                testguest::mem_table_payload(&[(0, 0, UADDR, 0)]),
                vec![fd(0)],
            ),
            (
                "9 regions",
                testguest::mem_table_payload(
                    &(0..9u64)
                        .map(|i| (i << 20, 0x1000, UADDR + (i << 20), 0))
                        .collect::<Vec<_>>(),
                ),
                (0..9).map(|i| fd(i % 2)).collect(),
            ),
            (
                "file descriptors attached",
                testguest::mem_table_payload(&[(0, 0x10000, UADDR, 0)]),
                vec![],
            ),
        ];
        for (what, t, fds) in cases {
            assert!(!r.request(SET_MEM_TABLE, &t, &fds), "{what} accepted");
            assert_error_mentions(h, what);
        }
        assert_eq!(testguest::open_fds(), before, "refused fds leaked");
        // The connection survives refusals: a valid table is still accepted.
        let t = testguest::mem_table_payload(&[(0, 0x10000, UADDR, 0)]);
        assert!(r.request(SET_MEM_TABLE, &t, &[fd(0)]));
    });
}

#[test]
fn absurd_queue_sizes_are_refused() {
    with_bystander(|h| {
        let mut r = Raw::handshake(&h.sock);
        for size in [0u32, 6, 32769, 65536, 65537, u32::MAX] {
            let mut p = 1u32.to_le_bytes().to_vec();
            p.extend_from_slice(&size.to_le_bytes());
            assert!(!r.request(SET_VRING_NUM, &p, &[]), "size {size} accepted");
            assert_error_mentions(h, &format!("size {size} is not a power of two"));
            assert_eq!(h.port.link(), LinkState::Down);
        }
        let mut p = 1u32.to_le_bytes().to_vec();
        p.extend_from_slice(&256u32.to_le_bytes());
        assert!(r.request(SET_VRING_NUM, &p, &[]));
    });
}

#[test]
fn missing_and_wrong_kind_of_fds_are_refused_and_never_block() {
    with_bystander(|h| {
        let mut r = Raw::handshake(&h.sock);
        // SET_VRING_CALL without an fd and without the NOFD flag.
        assert!(!r.request(SET_VRING_CALL, &1u64.to_le_bytes(), &[]));
        assert_error_mentions(h, "0 file descriptors attached, 1 expected");
        // A pipe as call "eventfd": refused (a full pipe would block the worker,
        // a closed one raise SIGPIPE).
        let (rd, wr) = rustix::pipe::pipe().unwrap();
        drop(rd);
        assert!(!r.request(SET_VRING_CALL, &1u64.to_le_bytes(), &[wr.as_fd()]));
        assert_error_mentions(h, "call fd is not an eventfd");
        // With NOFD (polling guest) it is fine.
        assert!(r.request(SET_VRING_CALL, &(1u64 | 1 << 8).to_le_bytes(), &[]));
    });
}

#[test]
fn full_call_eventfd_does_not_block_the_worker() {
    with_bystander(|h| {
        let mut g = guest();
        let fe = attach(&g, &h.sock);
        // The frontend fills the eventfd counter: a blocking write would hang.
        g.call[1]
            .as_ref()
            .unwrap()
            .write(0xffff_ffff_ffff_fffe)
            .unwrap();
        assert!(h.link_up());
        g.send_frames(4);
        let t = Instant::now();
        assert_eq!(receive(&mut h.port, 4, 5), 4);
        assert!(t.elapsed() < Duration::from_secs(2));
        h.disconnect(fe);
    });
}

#[test]
fn truncated_messages_drop_only_that_connection() {
    with_bystander(|h| {
        for (what, bytes) in [
            ("payload short", {
                let mut b = Vec::new();
                b.extend_from_slice(&SET_FEATURES.to_le_bytes());
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&8u32.to_le_bytes());
                b.extend_from_slice(&[1, 2, 3]);
                b
            }),
            ("header only", {
                let mut b = Vec::new();
                b.extend_from_slice(&SET_MEM_TABLE.to_le_bytes());
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&40u32.to_le_bytes());
                b
            }),
            ("partial header", vec![2, 0, 0, 0, 1]),
        ] {
            let mut r = Raw::connect(&h.sock);
            assert!(wait_until(5, || h.dev.is_connected()));
            r.send_bytes(&bytes, &[]);
            // While this device's control waits, another device's control
            // completes a whole handshake.
            let dir = tempfile::tempdir().unwrap();
            let mut other = device(dir.path(), "other");
            let t = Instant::now();
            let g = guest();
            let fe = attach(&g, &other.sock);
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{what}: other control slow"
            );
            assert!(other.link_up());
            drop(fe);
            assert!(r.closed_within(5), "{what}: stalled connection not dropped");
            assert_error_mentions(h, "of a message within");
            assert!(wait_until(5, || !h.dev.is_connected()));
        }
    });
}

#[test]
fn bad_descriptors_put_the_queue_in_error_without_crashing() {
    type Setup = fn(&mut Guest);
    let cases: [(&str, Setup, &str); 4] = [
        (
            "outside memory",
            |g| {
                g.desc(1, 0, MEM_BYTES - 8, 64, 0, 0);
                g.push(1, 0);
            },
            "descriptor buffer outside guest memory",
        ),
        (
            "loop",
            |g| {
                g.desc(1, 0, BUF, 16, DESC_F_NEXT, 1);
                g.desc(1, 1, BUF, 16, DESC_F_NEXT, 0);
                g.push(1, 0);
            },
            "descriptor chain loops",
        ),
        (
            "huge length",
            |g| {
                g.desc(1, 0, BUF, u32::MAX, 0, 0);
                g.push(1, 0);
            },
            "descriptor buffer outside guest memory",
        ),
        (
            "avail index jump",
            |g| {
                g.write(ring_at(1).1 + 2, &100u16.to_le_bytes());
            },
            "available index moved",
        ),
    ];
    for (what, setup, err) in cases {
        with_bystander(|h| {
            let mut g = guest();
            let fe = attach(&g, &h.sock);
            assert!(h.link_up());
            setup(&mut g);
            let drops = h.port.stats().drops(DropReason::PortError);
            assert_eq!(receive(&mut h.port, 1, 1), 0, "{what}");
            assert!(
                h.port.stats().drops(DropReason::PortError) > drops,
                "{what}"
            );
            assert_error_mentions(h, err);
            assert_eq!(h.port.link(), LinkState::Down, "{what}");
            assert_eq!(h.dev.link(), LinkState::Down, "{what}");
            h.disconnect(fe);
        });
    }
}

#[test]
fn zero_length_frames_are_dropped_and_the_ring_continues() {
    with_bystander(|h| {
        let mut g = guest();
        let fe = attach(&g, &h.sock);
        assert!(h.link_up());
        g.desc(1, 0, BUF, 0, 0, 0);
        g.push(1, 0);
        g.send_frame(&frame(7));
        assert_eq!(receive(&mut h.port, 1, 5), 1);
        assert!(wait_until(2, || g.used_idx(1) == 2));
        assert_eq!(h.port.stats().drops(DropReason::Malformed), 1);
        assert_eq!(h.dev.error(), None);
        assert_eq!(h.dev.link(), LinkState::Up);
        h.disconnect(fe);
    });
}

#[test]
fn an_idle_frontend_is_not_timed_out() {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut d = device(dir.path(), "idle");
    let mut g = guest();
    let mut fe = attach(&g, &d.sock);
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.dev.is_connected());
    // Still answers after the idle period.
    assert!(fe.get_queue_num().unwrap() >= 2);
    g.send_frame(&frame(1));
    assert_eq!(receive(&mut d.port, 1, 5), 1);
}

#[test]
fn memory_file_shrunk_under_weir_puts_only_that_port_in_error() {
    with_bystander(|h| {
        let mut g = guest();
        let mut fe = attach(&g, &h.sock);
        assert!(h.link_up());
        g.send_frames(4);
        assert_eq!(receive(&mut h.port, 4, 5), 4);
        // The frontend truncates the memfd weir has mapped: the next access
        // to the ring raises SIGBUS. Without the guard the test process dies.
        g.mem.set_len(0).unwrap();
        let drops = h.port.stats().drops(DropReason::PortError);
        assert_eq!(receive(&mut h.port, 1, 1), 0);
        assert!(h.port.stats().drops(DropReason::PortError) > drops);
        assert_error_mentions(h, "guest memory file shrunk under its mapping");
        assert_eq!(h.port.link(), LinkState::Down);
        assert_eq!(h.dev.link(), LinkState::Down);
        // Transmitting to the guest does not fault again or crash either.
        let mut burst = Burst::new();
        assert_eq!(h.port.tx_burst(&mut burst), 0);
        // Setting the ring up again on the same (lost) table does not start it.
        fe.set_vring_enable(1, false).unwrap();
        fe.set_vring_enable(1, true).unwrap();
        h.port.housekeeping();
        assert_eq!(receive(&mut h.port, 1, 1), 0);
        assert_eq!(h.dev.link(), LinkState::Down);
        h.disconnect(fe);
    });
}

/// The library still answers on this connection: the port's control is alive.
fn assert_answers(r: &mut Raw) {
    assert_ne!(r.get_u64(GET_FEATURES) & F_VERSION_1, 0);
}

#[test]
fn net_mtu_is_offered_and_net_set_mtu_is_checked_against_the_data_room() {
    // Ethernet header and one VLAN tag must fit the data room with the MTU.
    let max = u64::from(pool().data_room()) - 18;
    with_bystander(|h| {
        // NET_MTU is offered, and the library acks the set with it.
        let mut r = Raw::negotiated(&h.sock, PROTO_REPLY_ACK | PROTO_MQ | PROTO_NET_MTU);
        assert_eq!(h.dev.mtu(), None);

        assert!(r.request(NET_SET_MTU, &1500u64.to_le_bytes(), &[]));
        assert_eq!(h.dev.mtu(), Some(1500));
        assert_eq!(h.dev.error(), None);
        assert_answers(&mut r);
        assert!(r.request(NET_SET_MTU, &max.to_le_bytes(), &[]));
        assert_eq!(h.dev.mtu(), Some(max as u16));
        assert!(r.request(NET_SET_MTU, &68u64.to_le_bytes(), &[]));
        assert_eq!(h.dev.mtu(), Some(68));

        for bad in [max + 1, 9000, 65536, u64::MAX, 67, 0] {
            assert!(
                !r.request(NET_SET_MTU, &bad.to_le_bytes(), &[]),
                "MTU {bad} accepted"
            );
            assert_error_mentions(h, &format!("NET_SET_MTU {bad}: outside 68..={max}"));
            assert_eq!(h.dev.mtu(), Some(68), "refused MTU {bad} was stored");
            assert_answers(&mut r);
        }
        // A short payload is refused too.
        assert!(!r.request(NET_SET_MTU, &1500u32.to_le_bytes(), &[]));
        assert_error_mentions(h, "payload of 4 bytes is too short");
        assert_answers(&mut r);

        // Without NEED_REPLY nothing comes back; the next reply is the next
        // request's.
        r.send(NET_SET_MTU, 0, &1400u64.to_le_bytes(), &[]);
        assert_answers(&mut r);
        assert_eq!(h.dev.mtu(), Some(1400));

        // A new frontend starts without an MTU.
        h.disconnect(r);
        let mut r = Raw::handshake(&h.sock);
        assert_answers(&mut r);
        assert_eq!(h.dev.mtu(), None);
    });
}

#[test]
fn a_capped_device_offers_its_cap_and_refuses_a_larger_net_set_mtu() {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("capped.sock");
    let cfg = VhostUserConfig {
        mtu: Some(1450),
        ..testguest::server_config(sock.clone())
    };
    let dev = create("capped", &cfg, pool()).unwrap();
    assert_eq!(dev.offered_mtu(), Some(1450));
    let mut r = Raw::negotiated(&sock, PROTO_REPLY_ACK | PROTO_MQ | PROTO_NET_MTU);
    for bad in [1451u64, 1500] {
        assert!(!r.request(NET_SET_MTU, &bad.to_le_bytes(), &[]), "{bad}");
        let err = dev.error().unwrap_or_default();
        assert!(
            err.contains(&format!("NET_SET_MTU {bad}: outside 68..=1450")),
            "{err}"
        );
        assert_eq!(dev.mtu(), None);
        assert_answers(&mut r);
    }
    assert!(r.request(NET_SET_MTU, &1450u64.to_le_bytes(), &[]));
    assert_eq!(dev.mtu(), Some(1450));
    // Without a cap, 1500 is offered.
    let plain = create(
        "plain",
        &testguest::server_config(dir.path().join("plain.sock")),
        pool(),
    )
    .unwrap();
    assert_eq!(plain.offered_mtu(), Some(1500));
}

#[test]
fn net_set_mtu_without_net_mtu_acked_is_refused() {
    with_bystander(|h| {
        // Acks REPLY_ACK and MQ, not NET_MTU.
        let mut r = Raw::handshake(&h.sock);
        assert!(!r.request(NET_SET_MTU, &1500u64.to_le_bytes(), &[]));
        assert_error_mentions(h, "protocol feature NET_MTU was not negotiated");
        assert_eq!(h.dev.mtu(), None);
        assert_answers(&mut r);
    });
}
