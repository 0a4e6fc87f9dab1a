//! A MAC flood against the real daemon: one namespace sends frames from
//! thousands of random source addresses through an AF_PACKET port until the
//! FDB is full; a station that comes up afterwards on another port must still
//! reach its peer at once, and be learned soon after.
//!
//! Needs root and python3 (for the raw socket in the namespace); fails, never
//! skips, without them.

use std::time::{Duration, Instant};

use weir_testkit::{require_root_and_ip, VethHost};

mod common;
use common::Daemon;

/// Sends `count` broadcast frames from random locally administered source
/// addresses out of `eth0`, in rounds of 500 every 0.2 s (a sustained flood,
/// not one burst the kernel would drop).
const FLOOD: &str = r#"
import os, socket, sys, time
count = int(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
payload = b"\x88\xb5" + bytes(46)
sent = 0
while sent < count:
    for _ in range(min(500, count - sent)):
        src = bytearray(os.urandom(6))
        src[0] = (src[0] | 0x02) & 0xfe
        s.send(b"\xff" * 6 + bytes(src) + payload)
        sent += 1
    time.sleep(0.2)
print(sent)
"#;

fn fdb_entries(d: &Daemon) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["fdb", "show", "--bridge", "br0", "--json"])).unwrap();
    v.as_array().cloned().unwrap_or_default()
}

/// Polls `f` every 100 ms until it holds or `timeout` passes.
fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mac_flood_leaves_a_new_station_reachable_and_learnable() {
    require_root_and_ip().expect("the MAC flood test needs root and iproute2");
    let tag = format!("wf{}", std::process::id() % 100_000);
    let a = VethHost::create(&format!("{tag}-a"), &format!("{tag}a"), "198.18.22.1").unwrap();
    let b = VethHost::create(&format!("{tag}-b"), &format!("{tag}b"), "198.18.22.2").unwrap();
    // A small table, and no per-port limit: the one port can fill it alone.
    let config = common::kernel_config(
        "[fdb]\nmax_entries = 2048\nmax_per_port = 0",
        &[
            ("pa", "afpacket", &a.host_if),
            ("pb", "afpacket", &b.host_if),
        ],
    );
    let dir = std::env::temp_dir().join(format!("weir-fdb-flood-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Daemon::start(&dir, &config);
    d.wait_up(&["pa", "pb"]);

    // Three times the table, over about five seconds: more than the default
    // learning rate fills it with.
    let sent =
        a.ns.exec(&["python3", "-c", FLOOD, "6000"])
            .unwrap_or_else(|e| panic!("flood: {e:#}"));
    assert_eq!(sent.trim(), "6000");
    assert!(
        wait_for(Duration::from_secs(10), || fdb_entries(&d).len() >= 2048),
        "the flood did not fill the table: {} entries\n{}",
        fdb_entries(&d).len(),
        d.log()
    );

    // The new station: its frames must be forwarded although the table is
    // full, and its address learned once housekeeping has made room.
    let c = VethHost::create(&format!("{tag}-c"), &format!("{tag}c"), "198.18.22.3").unwrap();
    d.ok(&[
        "port", "add", "pc", "--type", "afpacket", "--iface", &c.host_if, "--bridge", "br0",
    ]);
    d.wait_up(&["pc"]);
    let out =
        c.ns.exec(&["ping", "-c", "3", "-i", "0.2", "-w", "10", "198.18.22.2"])
            .unwrap_or_else(|e| panic!("new station cut off by the flood: {e:#}\n{}", d.log()));
    assert!(out.contains(" 0% packet loss"), "{out}");
    let c_mac = c.mac().unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let _ = c.ns.exec(&["ping", "-c", "1", "-w", "1", "198.18.22.2"]);
            fdb_entries(&d)
                .iter()
                .any(|e| e["mac"] == c_mac.as_str() && e["port"] == "pc")
        }),
        "the new station was never learned\n{}",
        d.log()
    );
    let pa = d.port_json("pa");
    assert!(
        pa["stats"]["unlearned"]["fdb-full"].as_u64().unwrap_or(0) > 0,
        "refusals not counted: {pa}"
    );
}
