//! weir's virtio-net frontend against weir's own vhost-user device: frames the
//! frontend sends arrive at the port byte for byte, and frames the port sends
//! arrive in the frontend's rx buffers.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dataplane::{Burst, LinkState, Mempool, Port};
use vhost_user::create;
use vhost_user::frontend::{FrontendConfig, VirtioNetFrontend, RX_PEEK_BYTES};
use vhost_user::testguest;

fn pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(2048))
}

fn frame(seq: u16) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..16].copy_from_slice(&seq.to_be_bytes());
    f
}

#[test]
fn frames_cross_both_directions_and_rings_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dev.sock");
    let cfg = testguest::server_config(sock.clone());
    let mut dev = create("fe", &cfg, pool()).unwrap();
    let mut port = dev.take_queues().pop().unwrap();
    let mut fe = VirtioNetFrontend::connect(
        &sock,
        &FrontendConfig {
            queue_size: 64,
            max_frame_bytes: 1518,
            hugepages: false,
        },
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while dev.link() != LinkState::Up {
        port.housekeeping();
        assert!(Instant::now() < end, "link not up: {:?}", dev.error());
        std::thread::sleep(Duration::from_millis(5));
    }
    fe.tx_fill_all(&frame(0));
    // 1000 frames through a 64-entry ring: free list and indices wrap.
    let total = 1000u16;
    let (mut sent, mut back, mut received) = (0u16, 0u16, 0u16);
    let mut burst = Burst::new();
    let end = Instant::now() + Duration::from_secs(10);
    while received < total {
        assert!(
            Instant::now() < end,
            "stalled: sent {sent} back {back} received {received}"
        );
        fe.tx_reclaim();
        while sent < total && fe.tx_push(&frame(sent), 64) {
            sent += 1;
        }
        fe.tx_publish();
        let n = port.rx_burst(&mut burst);
        for (i, m) in burst.iter().enumerate() {
            assert_eq!(
                m.data(),
                &frame(back + i as u16)[..],
                "frame {}",
                back + i as u16
            );
        }
        back += n as u16;
        // Echo to the frontend.
        port.tx_burst(&mut burst);
        burst.clear();
        fe.rx_harvest(usize::MAX, |len, peek| {
            assert_eq!(len, 64);
            assert_eq!(peek[..], frame(received)[..RX_PEEK_BYTES]);
            received += 1;
        });
    }
    let s = fe.stats();
    assert_eq!((s.tx_frames, s.rx_frames, s.bad_used), (1000, 1000, 0));
    assert_eq!(dev.error(), None);
}
