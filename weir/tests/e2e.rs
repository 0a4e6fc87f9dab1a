//! End to end: the real `weir run` daemon, driven through its CLI, switching
//! between network namespaces attached through AF_PACKET, AF_XDP and TAP ports.
//!
//! Needs root (CI runs as root); fails, never skips, without it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weir_testkit::{adopt_into, require_root_and_ip, tcp_transfer, Netns, VethHost};

mod common;
use common::{loss_pct, ping, Daemon};

/// Bytes of each TCP transfer, with the default offloads and with checksum
/// offload off.
const TRANSFER_BYTES: u64 = 100_000_000;

/// A port's drop counters by reason.
fn drops(d: &Daemon, port: &str) -> serde_json::Value {
    d.port_json(port)["stats"]["drops"].clone()
}

/// Ping and a verified TCP transfer of `len_bytes` between every ordered pair of
/// `hosts` (named "a", "b", "c", behind ports "pa", "pb", "pc"), on TCP ports
/// from `first_port` up. With `tso`, transfers between the AF_PACKET and TAP
/// ports must cross as super-frames.
fn every_pair_transfers(
    d: &Daemon,
    hosts: &[(&str, &Netns, &str)],
    len_bytes: u64,
    first_port: u16,
    what: &str,
    tso: bool,
) {
    // Ports whose kernel peer sends and takes TSO super-frames.
    let tso_ports = ["a", "c"];
    let mut port = first_port;
    for (xn, x, _) in hosts {
        for (yn, y, yip) in hosts {
            if xn == yn {
                continue;
            }
            let out = ping(x, yip, 2, "0.2")
                .unwrap_or_else(|e| panic!("{what}: ping {xn} -> {yn}: {e}\n{}", d.log()));
            assert_eq!(loss_pct(&out), 0.0, "{what}: {xn} -> {yn}: {out}");
            let (ingress, egress) = (format!("p{xn}"), format!("p{yn}"));
            let counters = || {
                [
                    d.port_counter(&ingress, "rx_tso_packets"),
                    d.port_counter(&egress, "tx_tso_packets"),
                    d.port_counter(&egress, "tso_segmented"),
                ]
            };
            let before = counters();
            let t = tcp_transfer(x, y, yip, port, len_bytes)
                .unwrap_or_else(|e| panic!("{what}: TCP {xn} -> {yn}: {e:#}\n{}", d.log()));
            let after = counters();
            let [rx_tso, tx_tso, cut] = [0, 1, 2].map(|i| after[i] - before[i]);
            if tso && tso_ports.contains(xn) && tso_ports.contains(yn) {
                // Super-frames crossed whole: the sender's came in as such
                // and left as such, none cut by weir.
                assert!(
                    rx_tso > 0 && tx_tso > 0 && cut == 0,
                    "{what}: {xn} -> {yn}: {rx_tso} super-frames in, {tx_tso} out whole, \
                     {cut} segmented by weir"
                );
            }
            eprintln!(
                "{what}: {xn} -> {yn}: {len_bytes} B in {:.2} s ({:.0} Mbit/s)",
                t.as_secs_f64(),
                len_bytes as f64 * 8.0 / t.as_secs_f64() / 1e6
            );
            port += 1;
        }
    }
}

fn control_roundtrip(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn three_namespaces_switch_through_afpacket_afxdp_and_tap() {
    require_root_and_ip().expect("the end-to-end test needs root and iproute2");
    let tag = format!("we{}", std::process::id() % 100_000);
    let a = VethHost::create(&format!("{tag}-a"), &format!("{tag}a"), "198.18.20.1").unwrap();
    let b = VethHost::create(&format!("{tag}-b"), &format!("{tag}b"), "198.18.20.2").unwrap();
    let c = Netns::create(&format!("{tag}-c")).unwrap();
    let tap = format!("{tag}c");
    let config = common::kernel_config(
        "",
        &[
            ("pa", "afpacket", &a.host_if),
            ("pb", "afxdp", &b.host_if),
            ("pc", "tap", &tap),
        ],
    );
    let dir = std::env::temp_dir().join(format!("weir-e2e-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut d = Daemon::start(&dir, &config);
    adopt_into(&c, &tap, "198.18.20.3").unwrap();
    d.wait_up(&["pa", "pb", "pc"]);

    // 1. Every pair, both ways.
    let hosts: [(&str, &Netns, &str); 3] = [
        ("a", &a.ns, "198.18.20.1"),
        ("b", &b.ns, "198.18.20.2"),
        ("c", &c, "198.18.20.3"),
    ];
    // Warm-up: resolve ARP on every pair first (a loaded machine may take longer
    // than one ping interval for the first broadcast round trip).
    for (xn, x, _) in &hosts {
        for (yn, _, yip) in &hosts {
            if xn != yn {
                let _ = ping(x, yip, 1, "0.2");
            }
        }
    }
    for (xn, x, _) in &hosts {
        for (yn, _, yip) in &hosts {
            if xn != yn {
                let out = ping(x, yip, 2, "0.2")
                    .unwrap_or_else(|e| panic!("{xn} -> {yn}: {e}\n{}", d.log()));
                assert_eq!(loss_pct(&out), 0.0, "{xn} -> {yn}: {out}");
            }
        }
    }
    let fdb = d.ok(&["fdb", "show", "--bridge", "br0", "--json"]);
    let fdb: serde_json::Value = serde_json::from_str(&fdb).unwrap();
    let a_mac = a.mac().unwrap();
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == a_mac.as_str() && e["port"] == "pa"),
        "a's MAC learned on pa: {fdb}"
    );

    // 2. TCP between every pair, both ways, with the namespaces' default
    //    offloads (partial checksums, TSO super-frames from AF_PACKET and TAP
    //    peers), every byte verified; once learned, none of it is flooded to
    //    the third port.
    let ports = ["pa", "pb", "pc"];
    let c_tx_before = d.port_counter("pc", "tx_packets");
    let a_rx_before = d.port_counter("pa", "rx_bytes");
    let b_tx_before = d.port_counter("pb", "tx_bytes");
    tcp_transfer(&a.ns, &b.ns, "198.18.20.2", 5201, TRANSFER_BYTES)
        .unwrap_or_else(|e| panic!("TCP a -> b: {e:#}\n{}", d.log()));
    let a_rx = d.port_counter("pa", "rx_bytes") - a_rx_before;
    let c_tx = d.port_counter("pc", "tx_packets") - c_tx_before;
    assert!(
        a_rx > TRANSFER_BYTES,
        "the transfer went through pa: {a_rx} bytes"
    );
    assert!(
        c_tx < 50,
        "{c_tx} frames of a's {a_rx} bytes leaked to c: learned unicast must not flood"
    );
    assert!(d.port_counter("pb", "tx_bytes") - b_tx_before >= a_rx * 9 / 10);
    every_pair_transfers(&d, &hosts, TRANSFER_BYTES, 5300, "default offloads", true);
    for p in ports {
        let drops = drops(&d, p);
        for reason in ["malformed", "no-tso-buffers", "mtu-exceeded"] {
            assert!(
                drops[reason].as_u64().unwrap_or(0) == 0,
                "{p} dropped frames as {reason} with default offloads: {drops}"
            );
        }
    }
    // The same with checksum (and so segmentation) offload off in every
    // namespace, as some users set it.
    for (_, ns, _) in &hosts {
        ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]).unwrap();
    }
    every_pair_transfers(&d, &hosts, TRANSFER_BYTES, 5400, "tx off", false);

    // 3. Hot-add and hot-remove a port while a and c ping each other fast.
    let pinger = {
        let name = a.ns.name().to_string();
        std::thread::spawn(move || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &name,
                    "ping",
                    "-c",
                    "300",
                    "-i",
                    "0.01",
                    "-w",
                    "30",
                    "198.18.20.3",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let e = VethHost::create(&format!("{tag}-e"), &format!("{tag}e"), "198.18.20.5").unwrap();
    d.ok(&[
        "port", "add", "pe", "--type", "afpacket", "--iface", &e.host_if, "--bridge", "br0",
    ]);
    d.wait_up(&["pe"]);
    let out =
        ping(&e.ns, "198.18.20.1", 2, "0.2").unwrap_or_else(|err| panic!("hot-added port: {err}"));
    assert_eq!(loss_pct(&out), 0.0, "{out}");
    d.ok(&["port", "del", "pe"]);
    assert!(
        ping(&e.ns, "198.18.20.1", 1, "0.2").is_err(),
        "removed port still forwards"
    );
    let fast = pinger.join().unwrap();
    assert_eq!(
        loss_pct(&fast),
        0.0,
        "a <-> c lost packets while pe came and went: {fast}"
    );
    drop(e);

    // 4. Bad input: garbage and oversized control messages, a missing interface.
    let reply = control_roundtrip(&d.socket, b"\x00\xffnot json\n");
    assert!(reply.contains("\"ok\":false"), "{reply}");
    let mut big = vec![b'x'; 100_000];
    big.push(b'\n');
    let reply = control_roundtrip(&d.socket, &big);
    assert!(reply.contains("too long"), "{reply}");
    let (ok, _, err) = d.cli(&[
        "port",
        "add",
        "px",
        "--type",
        "afpacket",
        "--iface",
        "nosuchif0",
        "--bridge",
        "br0",
    ]);
    assert!(!ok);
    assert!(
        err.contains("nosuchif0"),
        "error names the interface: {err}"
    );
    assert!(d.alive(), "daemon died: {}", d.log());
    let out = ping(&b.ns, "198.18.20.3", 2, "0.2").expect("still forwarding after bad input");
    assert_eq!(loss_pct(&out), 0.0);

    // The counters of a healthy run: nothing dropped for lack of buffers.
    let stats: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
    assert!(stats["mempool"]["available"].as_u64().unwrap() > 0);
    let pmd = d.ok(&["pmd", "show"]);
    assert!(pmd.contains("pa:0"), "{pmd}");
}

/// Without TSO buffers (`tso_mbufs = 0`), an AF_PACKET port cuts the
/// super-frames its namespace sends (Linux's default offloads) into segments
/// on receive, so TCP still works both ways, every byte verified, and says so
/// in `tso_segmented`.
#[test]
fn afpacket_without_tso_buffers_segments_on_receive() {
    require_root_and_ip().expect("the end-to-end test needs root and iproute2");
    let tag = format!("wn{}", std::process::id() % 100_000);
    let a = VethHost::create(&format!("{tag}-a"), &format!("{tag}a"), "198.18.21.1").unwrap();
    let b = VethHost::create(&format!("{tag}-b"), &format!("{tag}b"), "198.18.21.2").unwrap();
    let config = common::kernel_config(
        "tso_mbufs = 0",
        &[
            ("pa", "afpacket", &a.host_if),
            ("pb", "afpacket", &b.host_if),
        ],
    );
    let dir = std::env::temp_dir().join(format!("weir-e2e-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Daemon::start(&dir, &config);
    d.wait_up(&["pa", "pb"]);
    let _ = ping(&a.ns, "198.18.21.2", 1, "0.2");
    let stats: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
    assert!(stats["tso_pool"].is_null(), "no TSO pool: {stats}");
    let hosts: [(&str, &Netns, &str); 2] =
        [("a", &a.ns, "198.18.21.1"), ("b", &b.ns, "198.18.21.2")];
    every_pair_transfers(
        &d,
        &hosts,
        TRANSFER_BYTES / 4,
        5500,
        "no TSO buffers",
        false,
    );
    for p in ["pa", "pb"] {
        assert!(
            d.port_counter(p, "tso_segmented") > 0,
            "{p}: the namespace's super-frames were cut on receive"
        );
        assert_eq!(d.port_counter(p, "tx_tso_packets"), 0, "{p}");
        let drops = drops(&d, p);
        for reason in ["malformed", "no-tso-buffers", "mtu-exceeded"] {
            assert!(
                drops[reason].as_u64().unwrap_or(0) == 0,
                "{p} dropped frames as {reason}: {drops}"
            );
        }
    }
}

/// UDP segmentation (`UDP_SEGMENT`, as QUIC stacks use it) from a namespace
/// behind an `afpacket` port: the kernel hands weir one train of datagrams
/// per send with a GSO_UDP_L4 header, and weir cuts it into datagrams for an
/// `afpacket` and a `tap` peer. Every datagram arrives, each with its own
/// length and a checksum the receiving stack accepts.
#[test]
fn udp_segmentation_from_a_namespace_arrives_as_datagrams() {
    require_root_and_ip().expect("the end-to-end test needs root and iproute2");
    let tag = format!("wu{}", std::process::id() % 100_000);
    let a = VethHost::create(&format!("{tag}-a"), &format!("{tag}a"), "198.18.22.1").unwrap();
    let b = VethHost::create(&format!("{tag}-b"), &format!("{tag}b"), "198.18.22.2").unwrap();
    let c = Netns::create(&format!("{tag}-c")).unwrap();
    let tap = format!("{tag}c");
    let config = common::kernel_config(
        "",
        &[
            ("pa", "afpacket", &a.host_if),
            ("pb", "afpacket", &b.host_if),
            ("pc", "tap", &tap),
        ],
    );
    let dir = std::env::temp_dir().join(format!("weir-e2e-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Daemon::start(&dir, &config);
    adopt_into(&c, &tap, "198.18.22.3").unwrap();
    d.wait_up(&["pa", "pb", "pc"]);
    // 20 sends of 8 datagrams of 1000 bytes, each datagram numbered.
    const SENDS: usize = 20;
    const PER_SEND: usize = 8;
    let receiver = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
s.settimeout(3)
seen, bad = set(), 0
print("ready", flush=True)
try:
    while True:
        d = s.recv(65535)
        n = int.from_bytes(d[:4], "big")
        if len(d) != 1000 or d[4:] != bytes([n % 251]) * 996:
            bad += 1
        seen.add(n)
except socket.timeout:
    pass
print(len(seen), bad)
"#;
    let sender = format!(
        r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_UDP, 103, 1000)  # UDP_SEGMENT
for i in range({SENDS}):
    buf = b"".join((i * {PER_SEND} + j).to_bytes(4, "big") + bytes([(i * {PER_SEND} + j) % 251]) * 996 for j in range({PER_SEND}))
    s.sendto(buf, (sys.argv[1], 9999))
    time.sleep(0.01)
"#
    );
    for (name, ns, ip, port) in [
        ("b", &b.ns, "198.18.22.2", "pb"),
        ("c", &c, "198.18.22.3", "pc"),
    ] {
        // Resolve ARP first: a train sent before it would wait in the
        // neighbour queue, which keeps only a few packets.
        let out = ping(&a.ns, ip, 1, "0.2").unwrap_or_else(|e| panic!("ping {name}: {e}"));
        assert_eq!(loss_pct(&out), 0.0, "{out}");
        let cut_before = d.port_counter(port, "tso_segmented");
        let mut rx = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "python3", "-c", receiver, ip])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(rx.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        a.ns.exec(&["python3", "-c", &sender, ip])
            .unwrap_or_else(|e| panic!("UDP_SEGMENT sender: {e:#}"));
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(
            line.trim(),
            format!("{} 0", SENDS * PER_SEND),
            "{name}: datagrams received, bad ones\n{}",
            d.log()
        );
        let _ = rx.wait();
        assert!(
            d.port_counter(port, "tso_segmented") - cut_before >= SENDS as u64,
            "{name}: trains cut by weir"
        );
    }
    assert!(d.port_counter("pa", "rx_tso_packets") >= 2 * SENDS as u64);
    assert_eq!(drops(&d, "pa")["malformed"].as_u64().unwrap_or(0), 0);
}
