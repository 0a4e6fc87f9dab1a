//! TSO end to end through the daemon: `weir run` with one worker and
//! vhost-user ports on one bridge, weir's own virtio-net frontend on each.
//! A negotiates HOST_TSO4/6 and sends large TCP frames (IPv4 and IPv6) with a
//! segmentation request; the worker cuts them into MSS-sized segments for B
//! (no TSO, no GUEST_CSUM), each checked as a TCP/IP stack would, and hands
//! them whole to C (GUEST_TSO4/6). Also: the TSO buffer pool exists only once
//! a vhost-user port does, a guest TSO frame that finds it empty is dropped and
//! counted, and a pool that cannot be created leaves the port up without TSO.
//!
//! Needs no root and no hugepages (the pools use normal pages).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane::testutil::inet::{fold, sum16, tcp_pseudo_sum};

use vhost_user::defs::{
    F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_GUEST_TSO6, F_HOST_TSO4, F_HOST_TSO6, NET_HDR_BYTES,
    NET_HDR_F_NEEDS_CSUM,
};
use vhost_user::frontend::{FrontendConfig, VirtioNetFrontend};
use vhost_user::testguest;

mod common;
use common::{add_vhost_args, Daemon};

const MSS: usize = 1448;
const PAYLOAD: usize = 20_000;
/// Segments of one frame: 13 of `MSS` bytes and the rest.
const SEGMENTS: usize = PAYLOAD.div_ceil(MSS);
const SEQ: u32 = 0xfff0_0000;
const IP_ID: u16 = 0xfffe;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const TCP_FIN: u8 = 0x01;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ip {
    V4,
    V6,
}

impl Ip {
    /// Offset of the TCP header.
    fn l4(self) -> usize {
        match self {
            Ip::V4 => 14 + 20,
            Ip::V6 => 14 + 40,
        }
    }
}

/// A fresh directory for one test's config, sockets and logs, removed
/// afterwards.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("weir-tso-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Payload byte `i` of frame `tag`: a pattern that differs per frame and
/// does not repeat with the MSS.
fn payload_byte(tag: u8, i: usize) -> u8 {
    (i * 7 + i / 251) as u8 ^ tag
}

/// One TCP frame from A to `dst` carrying `PAYLOAD` bytes, FIN|PSH|ACK, as a
/// driver with HOST_TSO hands it over: IP lengths for the whole frame, the
/// IPv4 header checksum done, the TCP checksum field holding the
/// pseudo-header sum (NEEDS_CSUM).
fn tso_frame(ip: Ip, dst: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&MAC_A);
    match ip {
        Ip::V4 => {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + 20 + PAYLOAD) as u16;
            f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8]);
            f.extend_from_slice(&IP_ID.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
            f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
            let csum = !fold(sum16(&f[14..34]));
            f[24..26].copy_from_slice(&csum.to_be_bytes());
        }
        Ip::V6 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let plen = (20 + PAYLOAD) as u16;
            f.extend_from_slice(&[0x60, 0, 0, 0, (plen >> 8) as u8, plen as u8, 6, 64]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        }
    }
    let l4 = ip.l4();
    f.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
    f.extend_from_slice(&SEQ.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0x50, TCP_FIN | TCP_PSH | TCP_ACK, 0xff, 0xff]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend((0..PAYLOAD).map(|i| payload_byte(tag, i)));
    let pseudo = fold(tcp_pseudo_sum(&f, matches!(ip, Ip::V6), 20 + PAYLOAD));
    f[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
    f
}

/// The virtio-net header of a TSO frame from [`tso_frame`], cut at `MSS`.
fn tso_hdr(ip: Ip) -> [u8; NET_HDR_BYTES] {
    testguest::tso_net_hdr(matches!(ip, Ip::V6), ip.l4(), MSS as u16)
}

/// A small broadcast frame from `src`, so that the bridge learns it.
fn hello(src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(60, 0);
    f
}

/// Frontend config for a port that sends or receives TSO frames.
fn large() -> FrontendConfig {
    FrontendConfig {
        queue_size: 16,
        max_frame_bytes: 65535,
        hugepages: false,
    }
}

fn plain() -> FrontendConfig {
    FrontendConfig {
        queue_size: 64,
        max_frame_bytes: 1518,
        hugepages: false,
    }
}

fn sock(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// Checksum offload and HOST_TSO4/6: the driver of a guest that hands weir
/// TSO frames.
const HOST_TSO: u64 = F_CSUM | F_HOST_TSO4 | F_HOST_TSO6;

/// A frontend on port `name` that asks for `features` (what it negotiated is
/// for the test to check) with room for TSO frames.
fn large_frontend(dir: &Path, name: &str, features: u64) -> VirtioNetFrontend {
    VirtioNetFrontend::connect_with_features(&sock(dir, name), &large(), features).unwrap()
}

fn config(dir: &Path, tso_mbufs: u32, vhost: &[&str], extra: &str) -> String {
    let mut cfg = format!(
        "[dataplane]\nworkers = \"0\"\nmbufs = 2048\nhugepages = \"never\"\n\
         idle_sleep_us = 50\ntso_mbufs = {tso_mbufs}\n[[bridge]]\nname = \"br0\"\n{extra}"
    );
    for name in vhost {
        cfg += &format!(
            "[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nbridge = \"br0\"\n",
            sock(dir, name).display()
        );
    }
    cfg
}

/// Receives until `want` frames arrived (5 s at most).
fn take(
    fe: &mut VirtioNetFrontend,
    want: usize,
    what: &str,
) -> Vec<([u8; NET_HDR_BYTES], Vec<u8>)> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got.len() < want {
        assert!(
            Instant::now() < end,
            "{what}: got {} of {want} frames",
            got.len()
        );
        fe.rx_take(usize::MAX, |h, f| got.push((*h, f.to_vec())));
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

/// Sends `frames` in one burst (one avail index update).
fn send(fe: &mut VirtioNetFrontend, frames: &[([u8; NET_HDR_BYTES], Vec<u8>)]) {
    fe.tx_reclaim();
    for (h, f) in frames {
        assert!(fe.tx_send(h, f), "frontend tx queue full");
    }
    fe.tx_publish();
}

/// Checks the segments B got for `frame` as a receiving TCP/IP stack would,
/// and that their payloads put back together are the frame's.
fn check_segments(ip: Ip, frame: &[u8], segs: &[([u8; NET_HDR_BYTES], Vec<u8>)]) {
    let l4 = ip.l4();
    assert_eq!(segs.len(), SEGMENTS, "{ip:?}: segment count");
    let mut payload = Vec::new();
    for (i, (h, s)) in segs.iter().enumerate() {
        assert_eq!(
            h[0], 0,
            "{ip:?} segment {i}: no NEEDS_CSUM for a guest without GUEST_CSUM"
        );
        assert_eq!(h[1], 0, "{ip:?} segment {i}: no gso request");
        let data = MSS.min(PAYLOAD - i * MSS);
        assert_eq!(s.len(), l4 + 20 + data, "{ip:?} segment {i} length");
        assert_eq!(&s[..14], &frame[..14], "{ip:?} segment {i} Ethernet header");
        let l4_len = s.len() - l4;
        match ip {
            Ip::V4 => {
                let total = usize::from(u16::from_be_bytes([s[16], s[17]]));
                assert_eq!(total, s.len() - 14, "segment {i} IPv4 total length");
                let id = u16::from_be_bytes([s[18], s[19]]);
                assert_eq!(id, IP_ID.wrapping_add(i as u16), "segment {i} IPv4 id");
                assert_eq!(fold(sum16(&s[14..34])), 0xffff, "segment {i} IPv4 checksum");
                // Everything else in the IP header is the original's.
                assert_eq!(
                    &s[20..24],
                    &frame[20..24],
                    "segment {i} IPv4 flags, ttl, proto"
                );
                assert_eq!(&s[26..34], &frame[26..34], "segment {i} IPv4 addresses");
            }
            Ip::V6 => {
                let plen = usize::from(u16::from_be_bytes([s[18], s[19]]));
                assert_eq!(plen, l4_len, "segment {i} IPv6 payload length");
                assert_eq!(&s[14..18], &frame[14..18]);
                assert_eq!(&s[20..54], &frame[20..54], "segment {i} IPv6 header");
            }
        }
        let seq = u32::from_be_bytes(s[l4 + 4..l4 + 8].try_into().unwrap());
        assert_eq!(
            seq,
            SEQ.wrapping_add((i * MSS) as u32),
            "{ip:?} segment {i} seq"
        );
        assert_eq!(&s[l4..l4 + 4], &frame[l4..l4 + 4], "ports");
        assert_eq!(&s[l4 + 8..l4 + 12], &frame[l4 + 8..l4 + 12], "ack");
        let flags = s[l4 + 13];
        let last = i == SEGMENTS - 1;
        let want = if last {
            TCP_FIN | TCP_PSH | TCP_ACK
        } else {
            TCP_ACK
        };
        assert_eq!(flags, want, "{ip:?} segment {i} TCP flags");
        let tcp = fold(sum16(&s[l4..]) + tcp_pseudo_sum(s, matches!(ip, Ip::V6), l4_len));
        assert_eq!(tcp, 0xffff, "{ip:?} segment {i} TCP checksum");
        payload.extend_from_slice(&s[l4 + 20..]);
    }
    assert!(
        payload == frame[l4 + 20..],
        "{ip:?}: payload reassembles byte for byte"
    );
}

/// Checks the frame C got whole: the same bytes, the segmentation request and
/// the partial checksum in its virtio-net header.
fn check_whole(ip: Ip, frame: &[u8], got: &[([u8; NET_HDR_BYTES], Vec<u8>)]) {
    assert_eq!(got.len(), 1, "{ip:?}: one frame");
    let (h, f) = &got[0];
    let sent = tso_hdr(ip);
    assert_eq!(
        h[0] & NET_HDR_F_NEEDS_CSUM,
        NET_HDR_F_NEEDS_CSUM,
        "NEEDS_CSUM"
    );
    assert_eq!(h[1], sent[1], "{ip:?} gso_type");
    assert_eq!(h[2..4], sent[2..4], "{ip:?} hdr_len");
    assert_eq!(h[4..6], sent[4..6], "{ip:?} gso_size");
    assert_eq!(h[6..10], sent[6..10], "{ip:?} csum_start, csum_offset");
    assert_eq!(f.len(), frame.len(), "{ip:?} length");
    assert!(f == frame, "{ip:?}: frame bytes unchanged");
}

fn tso_pool(d: &Daemon) -> serde_json::Value {
    d.json(&["stats"])["tso_pool"].clone()
}

fn drops(d: &Daemon, port: &str) -> serde_json::Value {
    d.port_json(port)["stats"]["drops"].clone()
}

/// Asserts that `weir stats` prints `what`.
fn assert_stats_show(d: &Daemon, what: &str) {
    let text = d.ok(&["stats"]);
    assert!(text.contains(what), "{text}");
}

/// Waits until the bridge has learned `mac` on `port`.
fn wait_learned(d: &Daemon, mac: &str, port: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let fdb = d.json(&["fdb", "show"]);
        let found = fdb
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == mac && e["port"] == port);
        if found {
            return;
        }
        assert!(Instant::now() < end, "{mac} not learned on {port}: {fdb}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn tso_frames_are_segmented_for_a_plain_guest_and_whole_for_a_tso_guest() {
    let tmp = TestDir::new("segment");
    let dir = tmp.path();
    // A non-vhost-user port needs no TSO buffers: none are made for it.
    let d = Daemon::start(
        dir,
        &config(dir, 64, &[], "[[port]]\nname = \"r0\"\ntype = \"ring\"\n"),
    );
    assert!(tso_pool(&d).is_null(), "TSO pool without a vhost-user port");
    for name in ["a", "b", "c"] {
        let s = sock(dir, name).display().to_string();
        d.ok(&add_vhost_args(name, &s, &["--bridge", "br0"]));
    }
    let pool = tso_pool(&d);
    assert_eq!(
        pool["total"], 64,
        "TSO pool made with the first vhost-user port: {pool}"
    );

    let gtso = F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_CSUM;
    let mut fe_a = large_frontend(dir, "a", HOST_TSO);
    let mut fe_b = VirtioNetFrontend::connect(&sock(dir, "b"), &plain()).unwrap();
    let mut fe_c = large_frontend(dir, "c", gtso);
    assert_eq!(
        fe_a.features() & HOST_TSO,
        HOST_TSO,
        "A negotiated HOST_TSO4/6"
    );
    assert_eq!(
        fe_b.features() & (HOST_TSO | gtso),
        0,
        "B negotiated no offload"
    );
    assert_eq!(fe_c.features() & gtso, gtso, "C negotiated GUEST_TSO4/6");
    d.wait_up(&["a", "b", "c"]);

    // Learn B and C; each hears the other's broadcast.
    let none = [0u8; NET_HDR_BYTES];
    send(&mut fe_b, &[(none, hello(MAC_B))]);
    wait_learned(&d, "02:00:00:00:00:0b", "b");
    send(&mut fe_c, &[(none, hello(MAC_C))]);
    wait_learned(&d, "02:00:00:00:00:0c", "c");
    assert_eq!(take(&mut fe_b, 1, "B hears C")[0].1, hello(MAC_C));
    assert_eq!(take(&mut fe_c, 1, "C hears B")[0].1, hello(MAC_B));
    let b_tx = d.port_counter("b", "tx_packets");
    let c_tx = d.port_counter("c", "tx_packets");

    for (n, ip) in [Ip::V4, Ip::V6].into_iter().enumerate() {
        let to_b = tso_frame(ip, MAC_B, 2 * n as u8);
        send(&mut fe_a, &[(tso_hdr(ip), to_b.clone())]);
        check_segments(ip, &to_b, &take(&mut fe_b, SEGMENTS, "B segments"));
        let to_c = tso_frame(ip, MAC_C, 2 * n as u8 + 1);
        send(&mut fe_a, &[(tso_hdr(ip), to_c.clone())]);
        check_whole(ip, &to_c, &take(&mut fe_c, 1, "C whole frame"));
    }

    // Nothing else arrived, and weir's counters agree.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fe_b.rx_take(usize::MAX, |_, _| ()), 0, "B got extra frames");
    assert_eq!(fe_c.rx_take(usize::MAX, |_, _| ()), 0, "C got extra frames");
    assert_eq!(d.port_counter("a", "rx_packets"), 4, "the 4 TSO frames in");
    assert_eq!(
        d.port_counter("b", "tx_packets") - b_tx,
        2 * SEGMENTS as u64,
        "B: one tx packet per segment"
    );
    assert_eq!(
        d.port_counter("c", "tx_packets") - c_tx,
        2,
        "C: the frames whole"
    );
    for p in ["a", "b", "c"] {
        assert_eq!(drops(&d, p), serde_json::json!({}), "drops on {p}");
    }
    let stats = fe_b.stats().bad_used + fe_c.stats().bad_used;
    assert_eq!(stats, 0, "frontends saw bad used elements");
    // Every large buffer went back.
    let pool = tso_pool(&d);
    assert_eq!(pool["available"], pool["total"], "{pool}");
    assert_stats_show(&d, "tso pool: 64 of 64 buffers free");
}

#[test]
fn tso_frame_that_finds_no_large_buffer_is_dropped_and_counted() {
    let tmp = TestDir::new("nobuf");
    let dir = tmp.path();
    // One large buffer; the pool is made at start for the configured ports.
    let d = Daemon::start(dir, &config(dir, 1, &["a", "b"], ""));
    assert_eq!(tso_pool(&d)["total"], 1);
    let mut fe_a = large_frontend(dir, "a", HOST_TSO);
    let mut fe_b = VirtioNetFrontend::connect(&sock(dir, "b"), &plain()).unwrap();
    d.wait_up(&["a", "b"]);

    // Two TSO frames in one burst: the first takes the only large buffer
    // (held until the worker has cut it), the second finds none.
    let first = tso_frame(Ip::V4, MAC_B, 1);
    let second = tso_frame(Ip::V4, MAC_B, 2);
    send(
        &mut fe_a,
        &[(tso_hdr(Ip::V4), first.clone()), (tso_hdr(Ip::V4), second)],
    );
    check_segments(Ip::V4, &first, &take(&mut fe_b, SEGMENTS, "first frame"));
    assert_eq!(drops(&d, "a"), serde_json::json!({"no-tso-buffers": 1}));
    // The ring goes on: the next frame gets the buffer back.
    let third = tso_frame(Ip::V6, MAC_B, 3);
    send(&mut fe_a, &[(tso_hdr(Ip::V6), third.clone())]);
    check_segments(Ip::V6, &third, &take(&mut fe_b, SEGMENTS, "third frame"));
    assert_eq!(d.port_counter("a", "rx_packets"), 2);
    assert_stats_show(&d, "no-tso-buffers=1");
}

#[test]
fn port_without_memory_for_tso_buffers_comes_up_without_tso() {
    let tmp = TestDir::new("nomem");
    let dir = tmp.path();
    // 16384 buffers of 64 KiB (1 GiB) cannot be mapped under a 768 MiB
    // address-space limit; everything else fits (the daemon peaks near
    // 350 MiB of address space, mostly reserved thread stacks and heaps).
    let d = Daemon::start_limited(dir, &config(dir, 16_384, &["a"], ""), Some(768 * 1024));
    assert!(tso_pool(&d).is_null());
    let fe = large_frontend(dir, "a", HOST_TSO | F_GUEST_TSO4 | F_GUEST_TSO6);
    let tso = F_HOST_TSO4 | F_HOST_TSO6 | F_GUEST_TSO4 | F_GUEST_TSO6;
    assert_eq!(fe.features() & tso, 0, "TSO offered without buffers");
    assert_eq!(fe.features() & F_CSUM, F_CSUM, "checksum offload stays");
    d.wait_up(&["a"]);
    let log = d.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("comes up without TSO"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {log}");
    assert!(warnings[0].contains("WARN"), "{log}");
    assert!(
        warnings[0].contains("tso_mbufs"),
        "names the setting: {log}"
    );
}

#[test]
fn a_guest_flooding_tso_frames_is_held_to_its_share_of_the_tso_pool() {
    let tmp = TestDir::new("share");
    let dir = tmp.path();
    let names = ["a", "b", "c", "d", "e", "f"];
    let d = Daemon::start(dir, &config(dir, 256, &names, ""));
    let pool = tso_pool(&d);
    assert_eq!(
        pool["port_share"], 64,
        "a quarter of the pool per port: {pool}"
    );
    assert_stats_show(
        &d,
        "buffers free, 65407 B data room, normal pages, at most 64 per port",
    );
    let mut fe_a = large_frontend(dir, "a", HOST_TSO);
    let mut fe_b = large_frontend(dir, "b", HOST_TSO);
    let mut others: Vec<VirtioNetFrontend> = names[2..]
        .iter()
        .map(|n| VirtioNetFrontend::connect(&sock(dir, n), &plain()).unwrap())
        .collect();
    d.wait_up(&names);
    let none = [0u8; NET_HDR_BYTES];
    send(&mut others[0], &[(none, hello(MAC_C))]);
    wait_learned(&d, "02:00:00:00:00:0c", "c");

    // A broadcasts 16 TSO frames in one burst: 16 large buffers, and 4 copies
    // of each for the other 5 ports, 80 in all while the burst is switched.
    // Its share is 64: the last 16 copies are refused and counted.
    let frames: Vec<_> = (0..16)
        .map(|i| (tso_hdr(Ip::V4), tso_frame(Ip::V4, [0xff; 6], i)))
        .collect();
    send(&mut fe_a, &frames);
    let end = Instant::now() + Duration::from_secs(5);
    while drops(&d, "a")["pool-share"] != 16 || tso_pool(&d)["available"] != 256 {
        assert!(
            Instant::now() < end,
            "drops on a {}, pool {}",
            drops(&d, "a"),
            tso_pool(&d)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(drops(&d, "a"), serde_json::json!({"pool-share": 16}));
    assert_eq!(d.port_counter("a", "rx_packets"), 16);

    // B's TSO frames still get large buffers.
    while others[0].rx_take(usize::MAX, |_, _| ()) > 0 {}
    let to_c = tso_frame(Ip::V4, MAC_C, 99);
    send(&mut fe_b, &[(tso_hdr(Ip::V4), to_c.clone())]);
    check_segments(Ip::V4, &to_c, &take(&mut others[0], SEGMENTS, "C segments"));
    // (B's only drops are the flood it could not take into its ring.)
    let b = drops(&d, "b");
    assert!(
        b["pool-share"].is_null() && b["no-tso-buffers"].is_null(),
        "{b}"
    );
    assert_eq!(d.port_counter("b", "rx_packets"), 1);
}
