//! AF_XDP driver against real veth pairs in network namespaces (copy mode,
//! generic XDP). Needs root; fails, never skips, without it.

mod xdp_common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use dataplane::{Burst, DropReason, LinkState, Mempool, Port};
use pmd::afxdp::{AfXdpConfig, AfXdpError, AfXdpPort};
use xdp_common::{arp_request, is_arp_reply, require_root, VethNs};

/// A locally administered MAC that no interface here has.
const TEST_MAC: [u8; 6] = [0x02, 0x77, 0x65, 0x69, 0x72, 0x01];

/// Smaller than the default, so parallel tests stay well within locked memory.
fn small_cfg() -> AfXdpConfig {
    AfXdpConfig {
        frame_count: 512,
        rx_size: 256,
        tx_size: 256,
        fill_size: 256,
        comp_size: 256,
        ..AfXdpConfig::default()
    }
}

/// Kills and reaps a spawned child (by its own pid) if the test ends first.
struct ChildGuard(Child);

impl ChildGuard {
    fn spawn(mut cmd: std::process::Command) -> ChildGuard {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning child");
        ChildGuard(child)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn frame_with(len: usize, bytes: &[u8], pool: &'static Mempool) -> dataplane::Mbuf {
    let mut m = pool.alloc().expect("mbuf");
    m.room_mut()[..bytes.len()].copy_from_slice(bytes);
    m.set_len(len.max(bytes.len())).expect("fits");
    m
}

#[test]
fn receives_arp_broadcasts_from_the_namespace() {
    let v = VethNs::new([10, 77, 1, 1]);
    let pool = Mempool::for_tests(1024);
    let mut port = AfXdpPort::open(&v.host_if, pool, &AfXdpConfig::default())
        .unwrap_or_else(|e| panic!("open {}: {e:?}", v.host_if));
    assert_eq!(port.link(), LinkState::Up);
    assert_eq!(port.iface(), v.host_if);

    // Nobody has .2, so the namespace keeps broadcasting ARP requests for it.
    let _ping = ChildGuard::spawn(v.ns_command(&["ping", "-c", "3", "-W", "1", "10.77.1.2"]));

    let deadline = Instant::now() + Duration::from_secs(8);
    let mut arp_from_ns = 0;
    let mut burst = Burst::new();
    while arp_from_ns == 0 && Instant::now() < deadline {
        let n = port.rx_burst(&mut burst);
        for m in burst.drain(..) {
            let f = m.data();
            if f.len() >= 14 && f[6..12] == v.ns_mac && f[12..14] == [0x08, 0x06] {
                arp_from_ns += 1;
            }
        }
        port.housekeeping();
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        arp_from_ns > 0,
        "no ARP frame from {:02x?} received",
        v.ns_mac
    );
    assert_eq!(port.stats().drops(DropReason::NoBuffers), 0);
    assert_eq!(port.stats().rx_errors.get(), 0);
}

#[test]
fn transmitted_arp_request_reaches_namespace_and_is_answered() {
    let v = VethNs::new([10, 77, 2, 1]);
    let pool = Mempool::for_tests(1024);
    let mut port = AfXdpPort::open(&v.host_if, pool, &small_cfg())
        .unwrap_or_else(|e| panic!("open {}: {e:?}", v.host_if));
    let rx_before = v.ns_rx_packets();

    let req = arp_request(TEST_MAC, [10, 77, 2, 9], v.ns_ip);
    let mut burst = Burst::new();
    for _ in 0..4 {
        burst.push(frame_with(req.len(), &req, pool));
    }
    let sent = port.tx_burst(&mut burst);
    assert_eq!(sent, 4, "tx ring should take a small burst");
    assert!(burst.is_empty());

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut replies = 0;
    while replies == 0 && Instant::now() < deadline {
        port.rx_burst(&mut burst);
        replies += burst
            .drain(..)
            .filter(|m| is_arp_reply(m.data(), TEST_MAC, v.ns_ip))
            .count();
        port.housekeeping();
        std::thread::sleep(Duration::from_millis(1));
    }
    let rx_after = v.ns_rx_packets();
    assert!(
        rx_after >= rx_before + 4,
        "namespace rx_packets went {rx_before} -> {rx_after}"
    );
    assert!(replies > 0, "no ARP reply from {:?}", v.ns_ip);
    assert_eq!(port.stats().tx_errors.get(), 0);
    assert_eq!(port.stats().drops(DropReason::Malformed), 0);
}

#[test]
fn oversize_and_empty_frames_are_taken_and_counted() {
    let v = VethNs::new([10, 77, 3, 1]);
    let pool = Mempool::for_tests(64);
    let mut port = AfXdpPort::open(&v.host_if, pool, &small_cfg())
        .unwrap_or_else(|e| panic!("open {}: {e:?}", v.host_if));
    let max = port.max_frame_bytes();
    let req = arp_request(TEST_MAC, [10, 77, 3, 9], v.ns_ip);
    let mut burst = Burst::new();
    burst.push(frame_with(0, &[], pool));
    burst.push(frame_with(max + 1, &req, pool));
    burst.push(frame_with(req.len(), &req, pool));
    assert_eq!(port.tx_burst(&mut burst), 3);
    assert!(burst.is_empty());
    assert_eq!(port.stats().drops(DropReason::Malformed), 2);
}

/// One rx burst from `from`, transmitted on `to`; leftovers are dropped.
fn forward(from: &mut AfXdpPort, to: &mut AfXdpPort, burst: &mut Burst, sent: &mut usize) -> usize {
    let n = from.rx_burst(burst);
    *sent += to.tx_burst(burst);
    burst.clear();
    n
}

#[test]
fn forwarding_between_two_ports_carries_ping() {
    let a = VethNs::new([10, 77, 4, 1]);
    let b = VethNs::new([10, 77, 4, 2]);
    let pool = Mempool::for_tests(2048);
    let mut pa = AfXdpPort::open(&a.host_if, pool, &small_cfg())
        .unwrap_or_else(|e| panic!("open {}: {e:?}", a.host_if));
    // One port without need_wakeup, so both kick policies carry traffic.
    let no_wakeup = AfXdpConfig {
        need_wakeup: false,
        ..small_cfg()
    };
    let mut pb = AfXdpPort::open(&b.host_if, pool, &no_wakeup)
        .unwrap_or_else(|e| panic!("open {}: {e:?}", b.host_if));

    let mut ping =
        ChildGuard::spawn(a.ns_command(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.4.2"]));

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut burst = Burst::new();
    let mut forwarded = 0;
    let status = loop {
        let mut moved = forward(&mut pa, &mut pb, &mut burst, &mut forwarded);
        moved += forward(&mut pb, &mut pa, &mut burst, &mut forwarded);
        pa.housekeeping();
        pb.housekeeping();
        if let Some(status) = ping.0.try_wait().expect("waiting for ping") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        if moved == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let status = status.expect("ping did not finish within 10 s");
    assert!(
        status.success(),
        "ping through the AF_XDP ports failed ({forwarded} frames forwarded)"
    );
    // ARP both ways plus three echo requests and replies.
    assert!(forwarded >= 8, "only {forwarded} frames forwarded");
}

#[test]
fn missing_interface_is_named() {
    let name = format!("nx{}", std::process::id());
    let err = AfXdpPort::open(&name, Mempool::for_tests(32), &AfXdpConfig::default())
        .expect_err("no such interface");
    assert!(
        matches!(&err, AfXdpError::NoSuchInterface { iface } if *iface == name),
        "{err:?}"
    );
    assert!(err.to_string().contains(&name), "{err}");
}

#[test]
fn invalid_name_is_rejected_before_touching_the_system() {
    let err = AfXdpPort::open("../lo", Mempool::for_tests(32), &AfXdpConfig::default())
        .expect_err("invalid name");
    assert!(matches!(err, AfXdpError::InvalidName { .. }), "{err:?}");
}

#[test]
fn missing_queue_is_named() {
    let v = VethNs::new([10, 77, 5, 1]);
    let cfg = AfXdpConfig {
        queue_id: 63,
        ..small_cfg()
    };
    let err = AfXdpPort::open(&v.host_if, Mempool::for_tests(32), &cfg).expect_err("no queue 63");
    assert!(
        matches!(&err, AfXdpError::NoSuchQueue { queue_id: 63, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&v.host_if), "{err}");
}

#[test]
fn second_socket_on_the_same_queue_is_refused_with_a_reason() {
    let v = VethNs::new([10, 77, 6, 1]);
    let pool = Mempool::for_tests(64);
    let _first = AfXdpPort::open(&v.host_if, pool, &small_cfg())
        .unwrap_or_else(|e| panic!("open {}: {e:?}", v.host_if));
    let err = AfXdpPort::open(&v.host_if, pool, &small_cfg()).expect_err("queue is taken");
    let msg = err.to_string();
    assert!(msg.contains(&v.host_if), "{msg}");
    assert!(
        matches!(err, AfXdpError::XdpAttach { .. }),
        "{err:?} ({msg})"
    );
}

#[test]
fn zero_copy_on_veth_is_refused_with_a_reason() {
    // veth has native XDP but no zero-copy AF_XDP support.
    let v = VethNs::new([10, 77, 7, 1]);
    let cfg = AfXdpConfig {
        zero_copy: true,
        ..small_cfg()
    };
    let err = AfXdpPort::open(&v.host_if, Mempool::for_tests(32), &cfg).expect_err("no zero-copy");
    assert!(
        matches!(&err, AfXdpError::ZeroCopyUnsupported { iface, .. } if *iface == v.host_if),
        "{err:?}"
    );
    // The failed attempt leaves nothing attached: copy mode works right after.
    AfXdpPort::open(&v.host_if, Mempool::for_tests(32), &small_cfg())
        .unwrap_or_else(|e| panic!("copy mode after failed zero-copy: {e:?}"));
}

/// Floods `count` broadcast pings out of the namespace end, quickly, and waits.
fn broadcast_pings(v: &VethNs, count: u32) {
    let bcast = format!("{}.{}.{}.255", v.ns_ip[0], v.ns_ip[1], v.ns_ip[2]);
    let n = count.to_string();
    let mut ping = ChildGuard::spawn(v.ns_command(&[
        "ping", "-b", "-q", "-c", &n, "-i", "0.002", "-W", "1", &bcast,
    ]));
    let deadline = Instant::now() + Duration::from_secs(8);
    while ping.0.try_wait().expect("waiting for ping").is_none() {
        assert!(Instant::now() < deadline, "broadcast ping did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Receives until nothing arrives for 200 ms; returns frames received.
fn drain_rx(port: &mut AfXdpPort) -> usize {
    let mut burst = Burst::new();
    let mut total = 0;
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(200) {
        let n = port.rx_burst(&mut burst);
        burst.clear();
        port.housekeeping();
        if n > 0 {
            total += n;
            idle_since = Instant::now();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    total
}

#[test]
fn frames_beyond_the_rx_ring_count_as_overrun() {
    let v = VethNs::new([10, 77, 8, 1]);
    let cfg = AfXdpConfig {
        frame_count: 64,
        rx_size: 32,
        tx_size: 32,
        fill_size: 32,
        comp_size: 32,
        ..AfXdpConfig::default()
    };
    let mut port = AfXdpPort::open(&v.host_if, Mempool::for_tests(256), &cfg)
        .unwrap_or_else(|e| panic!("open {}: {e:?}", v.host_if));
    // Not polling while 100 frames arrive: 32 receive frames, the rest dropped.
    broadcast_pings(&v, 100);
    // The kernel's drop count reaches housekeeping a little after the
    // frames: wait for at least the frames 32 receive frames cannot hold.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        port.housekeeping();
        if port.stats().drops(DropReason::RxOverrun) >= 100 - 32 {
            break;
        }
        assert!(Instant::now() < deadline, "overruns never counted");
        std::thread::sleep(Duration::from_millis(1));
    }
    let overrun = port.stats().drops(DropReason::RxOverrun);
    let received = drain_rx(&mut port);
    assert!(received <= 32, "received {received} with 32 receive frames");
    assert!(received > 0, "nothing received");
    assert!(
        overrun >= 100 - received as u64,
        "{received} received, only {overrun} counted as overrun"
    );
}

#[test]
fn empty_mempool_counts_no_buffers_and_recycles_frames() {
    let v = VethNs::new([10, 77, 9, 1]);
    let pool = Mempool::for_tests(64);
    let mut port = AfXdpPort::open(&v.host_if, pool, &small_cfg())
        .unwrap_or_else(|e| panic!("open {}: {e:?}", v.host_if));
    let held: Vec<_> = std::iter::from_fn(|| pool.alloc()).collect();
    assert!(!held.is_empty());

    broadcast_pings(&v, 20);
    assert_eq!(drain_rx(&mut port), 0, "nothing to copy into");
    let no_buffers = port.stats().drops(DropReason::NoBuffers);
    assert!(no_buffers >= 20, "NoBuffers = {no_buffers}");

    // The UMEM frames went back to the fill ring: with mbufs back, frames flow.
    drop(held);
    broadcast_pings(&v, 20);
    assert!(drain_rx(&mut port) >= 20);
}

#[test]
fn link_follows_the_peer_after_housekeeping() {
    let v = VethNs::new([10, 77, 10, 1]);
    let mut port = AfXdpPort::open(&v.host_if, Mempool::for_tests(32), &small_cfg())
        .unwrap_or_else(|e| panic!("open {}: {e:?}", v.host_if));
    assert_eq!(port.link(), LinkState::Up);
    let wait_for = |port: &mut AfXdpPort, want: LinkState| {
        let deadline = Instant::now() + Duration::from_secs(3);
        while port.link() != want && Instant::now() < deadline {
            port.housekeeping();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(port.link(), want);
    };
    v.ns_exec(&["ip", "link", "set", &v.ns_if, "down"]);
    wait_for(&mut port, LinkState::Down);
    v.ns_exec(&["ip", "link", "set", &v.ns_if, "up"]);
    wait_for(&mut port, LinkState::Up);
}

#[test]
fn root_is_required_and_present() {
    // Documents the requirement in the test list; fails loudly when not root.
    require_root();
}
