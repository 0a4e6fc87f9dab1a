//! TSO end to end over vhost-user: weir's frontend negotiates HOST_TSO4/6 and
//! sends one large TCP frame with a segmentation request. It arrives as one
//! mbuf with its gso metadata; cut as the worker cuts it for a port without
//! TSO, the segments reach a plain frontend as valid TCP frames (lengths,
//! sequence numbers, IP and TCP checksums, payload); a frontend that
//! negotiated GUEST_TSO4/6 gets the frame whole with the request in its
//! virtio-net header.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dataplane::mempool::{HugepagePolicy, MempoolConfig};
use dataplane::testutil::inet::{fold, sum16, tcp_pseudo_sum};
use dataplane::wire::gso::MIN_MSS;
use dataplane::wire::{Gso, GsoKind, TsoPlan};
use dataplane::{Burst, DropReason, LinkState, Mempool, Port};
use vhost_user::defs::{
    F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_GUEST_TSO6, F_HOST_TSO4, F_HOST_TSO6, NET_HDR_BYTES,
};
use vhost_user::frontend::{FrontendConfig, VirtioNetFrontend};
use vhost_user::testguest;
use vhost_user::{create_with_tso, VhostUserDevice, VhostUserPort};

const MSS: u16 = 1448;
const PAYLOAD: usize = 20_000;
const SEQ: u32 = 0x1000_0000;

fn pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(2048))
}

fn tso_pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| {
        let p = Mempool::create(&MempoolConfig {
            name: "tso-test".into(),
            n_mbufs: 32,
            data_room: dataplane::mempool::MAX_DATA_ROOM,
            hugepages: HugepagePolicy::Never,
            cache_size: 8,
            ..MempoolConfig::default()
        })
        .expect("tso pool");
        p.set_segment_pool(pool());
        p
    })
}

fn payload_byte(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

/// One TCP frame (IPv4 or IPv6) carrying `PAYLOAD` bytes; the TCP checksum
/// field holds the pseudo-header sum, as a driver asking for NEEDS_CSUM
/// leaves it.
fn tso_frame(kind: GsoKind) -> (Vec<u8>, usize) {
    let mut f = vec![0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa];
    let l4 = match kind {
        GsoKind::Tcp4 => {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + 20 + PAYLOAD) as u16;
            f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8]);
            f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            34
        }
        GsoKind::Tcp6 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let plen = (20 + PAYLOAD) as u16;
            f.extend_from_slice(&[0x60, 0, 0, 0, (plen >> 8) as u8, plen as u8, 6, 64]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            54
        }
        GsoKind::Udp => unreachable!("TCP frames only"),
    };
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
    f.extend_from_slice(&SEQ.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..PAYLOAD).map(payload_byte));
    let pseudo = fold(tcp_pseudo_sum(
        &f,
        matches!(kind, GsoKind::Tcp6),
        20 + PAYLOAD,
    ));
    f[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
    (f, l4)
}

fn wait_up(dev: &VhostUserDevice, port: &mut VhostUserPort) {
    let end = Instant::now() + Duration::from_secs(5);
    while dev.link() != LinkState::Up {
        port.housekeeping();
        assert!(Instant::now() < end, "link not up: {:?}", dev.error());
        std::thread::sleep(Duration::from_millis(5));
    }
    // The port reads the negotiated features when it syncs its rings.
    port.housekeeping();
}

fn device(dir: &Path, name: &str) -> (VhostUserDevice, VhostUserPort, std::path::PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let cfg = testguest::server_config(sock.clone());
    let mut dev = create_with_tso(name, &cfg, pool(), Some(tso_pool())).unwrap();
    let port = dev.take_queues().pop().unwrap();
    (dev, port, sock)
}

fn big() -> FrontendConfig {
    FrontendConfig {
        queue_size: 16,
        max_frame_bytes: 65535,
        hugepages: false,
    }
}

/// The virtio-net header of a TSO frame of `kind` whose TCP header is at
/// `l4`, cut at `mss`.
fn tso_hdr(kind: GsoKind, l4: usize, mss: u16) -> [u8; NET_HDR_BYTES] {
    let v6 = match kind {
        GsoKind::Tcp4 => false,
        GsoKind::Tcp6 => true,
        GsoKind::Udp => unreachable!("TCP frames only"),
    };
    testguest::tso_net_hdr(v6, l4, mss)
}

fn run(kind: GsoKind) {
    let dir = tempfile::tempdir().unwrap();
    let (dev_a, mut port_a, sock_a) = device(dir.path(), "a");
    let (dev_b, mut port_b, sock_b) = device(dir.path(), "b");
    let (dev_c, mut port_c, sock_c) = device(dir.path(), "c");
    let mut fe_a = VirtioNetFrontend::connect_with_features(
        &sock_a,
        &big(),
        F_CSUM | F_HOST_TSO4 | F_HOST_TSO6,
    )
    .unwrap();
    assert_eq!(fe_a.features() & F_HOST_TSO4, F_HOST_TSO4);
    let plain = FrontendConfig {
        max_frame_bytes: 2048,
        hugepages: false,
        ..FrontendConfig::default()
    };
    let mut fe_b = VirtioNetFrontend::connect(&sock_b, &plain).unwrap();
    let mut fe_c = VirtioNetFrontend::connect_with_features(
        &sock_c,
        &big(),
        F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6,
    )
    .unwrap();
    wait_up(&dev_a, &mut port_a);
    wait_up(&dev_b, &mut port_b);
    wait_up(&dev_c, &mut port_c);
    assert!(!port_b.accepts_gso(kind), "plain frontend takes no TSO");
    assert!(
        port_c.accepts_gso(kind),
        "GUEST_TSO frontend takes TSO: features {:#x}",
        fe_c.features()
    );

    let (frame, l4) = tso_frame(kind);
    let hdr = tso_hdr(kind, l4, MSS);
    assert!(fe_a.tx_send(&hdr, &frame));
    fe_a.tx_publish();

    let mut burst = Burst::new();
    let end = Instant::now() + Duration::from_secs(5);
    while burst.is_empty() {
        assert!(Instant::now() < end, "TSO frame not received");
        port_a.rx_burst(&mut burst);
    }
    assert_eq!(burst.len(), 1);
    let m = &burst[0];
    assert_eq!(m.data(), &frame[..]);
    let gso = Gso { kind, mss: MSS };
    assert_eq!(m.gso(), Some(gso));

    // (a) Cut as the worker cuts it, to a port without TSO.
    let plan = TsoPlan::new(m.data(), gso).unwrap();
    let n = PAYLOAD.div_ceil(usize::from(MSS));
    assert_eq!(plan.segments(), n);
    let mut segs = Burst::new();
    for i in 0..n {
        let mut s = m.pool().segment_pool().alloc().unwrap();
        let len = plan.write_segment(m.data(), i, s.room_mut());
        s.set_len(len).unwrap();
        segs.push(s);
    }
    let end = Instant::now() + Duration::from_secs(5);
    while !segs.is_empty() {
        assert!(Instant::now() < end, "segments not taken");
        port_b.tx_burst(&mut segs);
    }
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got.len() < n {
        assert!(Instant::now() < end, "got {} of {n} segments", got.len());
        fe_b.rx_take(usize::MAX, |h, f| got.push((*h, f.to_vec())));
    }
    let mut payload = Vec::new();
    for (i, (h, s)) in got.iter().enumerate() {
        assert_eq!(h[1], 0, "segment {i}: no gso request");
        let data = usize::from(MSS).min(PAYLOAD - i * usize::from(MSS));
        assert_eq!(s.len(), l4 + 20 + data, "segment {i} length");
        assert_eq!(&s[..12], &frame[..12]);
        let l4_len = s.len() - l4;
        match kind {
            GsoKind::Tcp4 => {
                assert_eq!(
                    usize::from(u16::from_be_bytes([s[16], s[17]])),
                    s.len() - 14
                );
                assert_eq!(fold(sum16(&s[14..34])), 0xffff, "segment {i} IP checksum");
            }
            GsoKind::Tcp6 => {
                assert_eq!(usize::from(u16::from_be_bytes([s[18], s[19]])), l4_len);
            }
            GsoKind::Udp => unreachable!("TCP frames only"),
        }
        let seq = u32::from_be_bytes(s[l4 + 4..l4 + 8].try_into().unwrap());
        assert_eq!(seq, SEQ + (i * usize::from(MSS)) as u32, "segment {i} seq");
        let tcp = fold(sum16(&s[l4..]) + tcp_pseudo_sum(s, matches!(kind, GsoKind::Tcp6), l4_len));
        assert_eq!(tcp, 0xffff, "segment {i} TCP checksum");
        payload.extend_from_slice(&s[l4 + 20..]);
    }
    assert_eq!(payload, frame[l4 + 20..]);

    // (b) Whole, to a frontend that negotiated GUEST_TSO.
    let end = Instant::now() + Duration::from_secs(5);
    while !burst.is_empty() {
        assert!(Instant::now() < end, "TSO frame not taken");
        port_c.tx_burst(&mut burst);
    }
    let mut whole = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while whole.is_empty() {
        assert!(Instant::now() < end, "TSO frame not delivered");
        fe_c.rx_take(usize::MAX, |h, f| whole.push((*h, f.to_vec())));
    }
    assert_eq!(whole.len(), 1);
    let (h, f) = &whole[0];
    assert_eq!(h[1], hdr[1], "gso_type");
    assert_eq!(
        u16::from_le_bytes([h[2], h[3]]),
        (l4 + 20) as u16,
        "hdr_len"
    );
    assert_eq!(u16::from_le_bytes([h[4], h[5]]), MSS, "gso_size");
    assert_eq!(f.len(), frame.len());
    assert_eq!(f[l4 + 20..], frame[l4 + 20..]);
    assert_eq!(fe_b.stats().bad_used + fe_c.stats().bad_used, 0);
    assert_eq!(
        (dev_a.error(), dev_b.error(), dev_c.error()),
        (None, None, None)
    );
}

#[test]
fn tso4_frame_is_segmented_or_delivered_whole() {
    run(GsoKind::Tcp4);
}

#[test]
fn tso6_frame_is_segmented_or_delivered_whole() {
    run(GsoKind::Tcp6);
}

/// A TSO pool of 12 buffers in shares of 4 (the daemon gives each port a
/// quarter of its pool).
fn shared_tso_pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| {
        let p = Mempool::create(&MempoolConfig {
            name: "tso-shared-test".into(),
            n_mbufs: 12,
            data_room: dataplane::mempool::MAX_DATA_ROOM,
            hugepages: HugepagePolicy::Never,
            cache_size: 1,
            port_share: 4,
            ..MempoolConfig::default()
        })
        .expect("tso pool");
        p.set_segment_pool(pool());
        p
    })
}

#[test]
fn a_guest_holding_tso_buffers_stops_at_its_share_and_another_guest_still_sends_tso() {
    use dataplane::DropReason;
    let dir = tempfile::tempdir().unwrap();
    let device = |name: &str| {
        let cfg = testguest::server_config(dir.path().join(format!("{name}.sock")));
        let mut dev = create_with_tso(name, &cfg, pool(), Some(shared_tso_pool())).unwrap();
        let port = dev.take_queues().pop().unwrap();
        (dev, port, cfg.socket)
    };
    let (dev_a, mut port_a, sock_a) = device("a");
    let (dev_b, mut port_b, sock_b) = device("b");
    let features = F_CSUM | F_HOST_TSO4 | F_HOST_TSO6;
    let mut fe_a = VirtioNetFrontend::connect_with_features(&sock_a, &big(), features).unwrap();
    let mut fe_b = VirtioNetFrontend::connect_with_features(&sock_b, &big(), features).unwrap();
    wait_up(&dev_a, &mut port_a);
    wait_up(&dev_b, &mut port_b);
    let (frame, l4) = tso_frame(GsoKind::Tcp4);
    let hdr = tso_hdr(GsoKind::Tcp4, l4, MSS);

    // Guest a sends 12 TSO frames, as many as the pool holds, and its
    // frames stay held (a slow egress, a stuck worker's handoff ring).
    for _ in 0..12 {
        assert!(fe_a.tx_send(&hdr, &frame));
    }
    fe_a.tx_publish();
    let mut held = Burst::new();
    let a = port_a.stats().clone();
    let end = Instant::now() + Duration::from_secs(5);
    while held.len() as u64 + a.snapshot().total_drops() < 12 {
        assert!(Instant::now() < end, "guest a's frames not received");
        port_a.rx_burst(&mut held);
    }
    assert_eq!(held.len(), 4, "guest a holds its share");
    assert_eq!(a.drops(DropReason::PoolShare), 8);

    // Guest b's TSO frame still finds a large buffer.
    assert!(fe_b.tx_send(&hdr, &frame));
    fe_b.tx_publish();
    let mut got = Burst::new();
    let b = port_b.stats().clone();
    let end = Instant::now() + Duration::from_secs(5);
    while got.is_empty() && b.snapshot().total_drops() == 0 {
        assert!(Instant::now() < end, "guest b's frame not received");
        port_b.rx_burst(&mut got);
    }
    assert_eq!(b.snapshot().total_drops(), 0, "{:?}", b.snapshot());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data(), &frame[..]);
    drop((held, got));
    assert_eq!(shared_tso_pool().in_use(), 0);
}

/// A guest asking for segments of 1 byte (one frame would become ~20 000
/// segments here, ~65 000 at 64 KiB) or of anything below the floor is
/// refused and counted as `tso-mss-too-small`; the floor itself and the
/// frames behind still pass.
#[test]
fn tso_frame_with_an_mss_below_the_floor_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, mut port, sock) = device(dir.path(), "a");
    let mut fe =
        VirtioNetFrontend::connect_with_features(&sock, &big(), F_CSUM | F_HOST_TSO4 | F_HOST_TSO6)
            .unwrap();
    wait_up(&dev, &mut port);
    let mut want = Vec::new();
    for kind in [GsoKind::Tcp4, GsoKind::Tcp6] {
        let (frame, l4) = tso_frame(kind);
        for mss in [1, MIN_MSS - 1, 0, MIN_MSS] {
            assert!(fe.tx_send(&tso_hdr(kind, l4, mss), &frame));
        }
        want.push((frame, Gso { kind, mss: MIN_MSS }));
    }
    fe.tx_publish();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    // Until all eight frames are accounted for, as received or dropped.
    while got.len() as u64 + port.stats().snapshot().total_drops() < 8 {
        assert!(Instant::now() < end, "frames not taken: {} got", got.len());
        let mut burst = Burst::new();
        port.rx_burst(&mut burst);
        got.extend(burst.iter().map(|m| (m.data().to_vec(), m.gso().unwrap())));
    }
    let gso: Vec<Gso> = got.iter().map(|(_, g)| *g).collect();
    let want_gso: Vec<Gso> = want.iter().map(|(_, g)| *g).collect();
    assert_eq!(gso, want_gso, "only the frames at the floor pass");
    assert!(got == want, "frames changed on the way");
    let stats = port.stats().snapshot();
    assert_eq!(
        stats.drops(DropReason::TsoMssTooSmall),
        6,
        "1, 47 and 0 bytes"
    );
    assert_eq!(stats.total_drops(), 6);
    assert_eq!(dev.error(), None);
}
