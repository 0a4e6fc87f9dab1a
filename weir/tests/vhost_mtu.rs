//! A vhost-user frontend sets its MTU (VHOST_USER_NET_SET_MTU, as QEMU does
//! for `host_mtu`) through the real `weir run` daemon, and `weir port list`
//! shows it; an MTU weir's buffers cannot hold is refused with a failure ack
//! and shown as the port's error.
//!
//! The frontend writes raw messages on the socket (`testguest::RawFrontend`):
//! a 12-byte header (request, flags, size) and the payload, as the vhost-user
//! spec frames them.

use vhost_user::testguest::spec::{
    F_PROTOCOL_FEATURES, F_VERSION_1, GET_FEATURES, NET_SET_MTU, PROTO_NET_MTU, PROTO_REPLY_ACK,
};
use vhost_user::testguest::RawFrontend;

mod common;
use common::Daemon;

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

    let mut r = RawFrontend::connect(&dir.join("vm0.sock")).unwrap();
    // Fails unless NET_MTU is offered and acked.
    r.negotiate(
        F_VERSION_1 | F_PROTOCOL_FEATURES,
        PROTO_REPLY_ACK | PROTO_NET_MTU,
    )
    .unwrap();

    let mut set_mtu = |mtu: u64| {
        r.request_acked(NET_SET_MTU, &mtu.to_le_bytes(), &[])
            .unwrap()
    };
    assert!(set_mtu(1400), "{}", d.log());
    let p = d.ports();
    assert_eq!(p[0]["mtu"], 1400, "{p}");
    assert_eq!(p[0]["state"], "ok", "{p}");
    assert_eq!(mtu_column(&d.ok(&["port", "list"]), "vm0"), "1400");

    // Larger than any mbuf data room weir configures by default.
    assert!(!set_mtu(9000));
    let p = d.ports();
    assert_eq!(p[0]["mtu"], 1400, "{p}");
    let state = p[0]["state"].as_str().unwrap();
    assert!(state.contains("NET_SET_MTU 9000: outside 68..="), "{state}");
    // The connection still works.
    assert_ne!(r.get_u64(GET_FEATURES).unwrap() & F_VERSION_1, 0);
    drop(r);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
