//! A vhost-user frontend sets its MTU (VHOST_USER_NET_SET_MTU, as QEMU does
//! for `host_mtu`) through the real `weir run` daemon, and `weir port list`
//! shows it; an MTU weir's buffers cannot hold is refused with a failure ack
//! and shown as the port's error.
//!
//! The frontend writes raw messages on the socket: a 12-byte header (request,
//! flags, size) and the payload, as the vhost-user spec frames them.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

mod common;
use common::Daemon;

// vhost-user spec message codes, flags and feature bits.
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const NET_SET_MTU: u32 = 20;
const NEED_REPLY: u32 = 0x8;
const F_VERSION_1: u64 = 1 << 32;
const F_PROTOCOL_FEATURES: u64 = 1 << 30;
const PROTO_REPLY_ACK: u64 = 1 << 3;
const PROTO_NET_MTU: u64 = 1 << 4;

struct Raw(UnixStream);

impl Raw {
    fn connect(sock: &Path) -> Raw {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw(s)
    }

    fn send(&mut self, request: u32, flags: u32, payload: &[u8]) {
        let mut b = Vec::new();
        b.extend_from_slice(&request.to_le_bytes());
        b.extend_from_slice(&(1 | flags).to_le_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
        self.0.write_all(&b).unwrap();
    }

    /// Reads one u64 reply to `request`.
    fn reply(&mut self, request: u32) -> u64 {
        let mut h = [0u8; 12];
        self.0.read_exact(&mut h).expect("reply header");
        assert_eq!(u32::from_le_bytes(h[..4].try_into().unwrap()), request);
        assert_eq!(u32::from_le_bytes(h[8..].try_into().unwrap()), 8);
        let mut p = [0u8; 8];
        self.0.read_exact(&mut p).expect("reply payload");
        u64::from_le_bytes(p)
    }

    fn get_u64(&mut self, request: u32) -> u64 {
        self.send(request, 0, &[]);
        self.reply(request)
    }

    /// Sends with NEED_REPLY; true if acked with success.
    fn request(&mut self, request: u32, value: u64) -> bool {
        self.send(request, NEED_REPLY, &value.to_le_bytes());
        self.reply(request) == 0
    }
}

/// The MTU column of `name`'s row in the `weir port list` table.
fn mtu_column(table: &str, name: &str) -> String {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let end = header.find("MTU").expect("MTU column") + "MTU".len();
    let row = lines
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
    let start = header[..end - 3].trim_end().len();
    row[start..end].trim().to_owned()
}

#[test]
fn net_set_mtu_from_a_frontend_shows_in_port_list() {
    let dir = std::env::temp_dir().join(format!("weir-mtu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = Daemon::start(
        &dir,
        &common::vhost_config(&dir, &["vm0"], "server", 1, 4096),
    );
    assert_eq!(mtu_column(&d.ok(&["port", "list"]), "vm0"), "-");

    let mut r = Raw::connect(&dir.join("vm0.sock"));
    r.send(SET_OWNER, 0, &[]);
    assert_ne!(r.get_u64(GET_FEATURES) & F_PROTOCOL_FEATURES, 0);
    r.send(
        SET_FEATURES,
        0,
        &(F_VERSION_1 | F_PROTOCOL_FEATURES).to_le_bytes(),
    );
    let proto = r.get_u64(GET_PROTOCOL_FEATURES);
    assert_ne!(proto & PROTO_NET_MTU, 0, "NET_MTU not offered: {proto:#x}");
    assert!(r.request(SET_PROTOCOL_FEATURES, PROTO_REPLY_ACK | PROTO_NET_MTU));

    assert!(r.request(NET_SET_MTU, 1400), "{}", d.log());
    let p = d.ports();
    assert_eq!(p[0]["mtu"], 1400, "{p}");
    assert_eq!(p[0]["state"], "ok", "{p}");
    assert_eq!(mtu_column(&d.ok(&["port", "list"]), "vm0"), "1400");

    // Larger than any mbuf data room weir configures by default.
    assert!(!r.request(NET_SET_MTU, 9000));
    let p = d.ports();
    assert_eq!(p[0]["mtu"], 1400, "{p}");
    let state = p[0]["state"].as_str().unwrap();
    assert!(state.contains("NET_SET_MTU 9000: outside 68..="), "{state}");
    // The connection still works.
    assert_ne!(r.get_u64(GET_FEATURES) & F_VERSION_1, 0);
    drop(r);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
