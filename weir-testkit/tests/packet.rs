//! The packet-socket helpers on a real veth pair: a tagged frame arrives
//! tagged (the kernel took the tag out; the helper puts it back, 802.1Q or
//! 802.1ad), an untagged one untagged, and a capture tells frames sent from received ones.
//!
//! Needs root (CI runs as root); fails, never skips, without it.

use std::net::Ipv4Addr;
use std::time::Duration;

use weir_testkit::capture::{Capture, Captured};
use weir_testkit::frame::{self, Mac, View};
use weir_testkit::packet::RawSocket;
use weir_testkit::{require_root_and_ip, VethHost};

#[test]
fn tags_survive_the_kernel_taking_them_out() {
    require_root_and_ip().expect("packet sockets need root and iproute2");
    let tag = format!("wk{}", std::process::id() % 100_000);
    let h = VethHost::create(&format!("{tag}-a"), &format!("{tag}a"), "198.18.24.1").unwrap();
    let inside = Capture::start(&h.ns, "eth0").unwrap();
    let outside = RawSocket::open(&h.host_if).unwrap();
    let outside_cap = Capture::start_here(&h.host_if).unwrap();

    let src = Mac([0x02, 0x77, 0, 0, 0, 1]);
    let arp = frame::arp_request(
        src,
        Ipv4Addr::new(198, 18, 24, 9),
        Ipv4Addr::new(198, 18, 24, 1),
    );
    for vid in [7u16, 4094] {
        outside.send(&frame::tagged(&arp, vid)).unwrap();
    }
    let service = frame::tagged_tpid(&arp, frame::TPID_8021AD, 5);
    outside.send(&service).unwrap();
    outside.send(&arp).unwrap();

    let from_src = |f: &Captured| f.view().src() == Some(src);
    for vid in [7u16, 4094] {
        let f = inside
            .wait_for(Duration::from_secs(5), |f| {
                from_src(f) && f.view().vid() == Some(vid)
            })
            .unwrap_or_else(|| panic!("tagged frame of VLAN {vid} not seen inside"));
        assert!(!f.outgoing);
        assert_eq!(
            f.bytes,
            frame::tagged(&arp, vid),
            "the frame as it was sent"
        );
        assert_eq!(f.wire_len, arp.len() + 4);
    }
    let f = inside
        .wait_for(Duration::from_secs(5), |f| {
            from_src(f) && f.view().tag() == Some((frame::TPID_8021AD, 5))
        })
        .expect("802.1ad-tagged frame not seen inside");
    assert_eq!(f.bytes, service, "the service tag's TPID kept");
    let f = inside
        .wait_for(Duration::from_secs(5), |f| {
            from_src(f) && f.view().tag().is_none()
        })
        .expect("untagged frame not seen inside");
    assert_eq!(f.bytes, arp);
    assert_eq!(
        View(&f.bytes).arp().unwrap().target_ip,
        Ipv4Addr::new(198, 18, 24, 1)
    );

    // The namespace's stack answers the untagged request (and ignores the
    // tagged ones: it has no VLAN device); the outside capture sees our four
    // frames leave and the reply come in.
    let reply = outside_cap
        .wait_for(Duration::from_secs(5), |f| {
            f.view()
                .arp()
                .is_some_and(|a| a.op == frame::ARP_REPLY && a.target_mac == src)
        })
        .expect("no ARP reply");
    assert!(!reply.outgoing);
    let sent = outside_cap.stop().unwrap();
    assert_eq!(sent.iter().filter(|f| f.outgoing && from_src(f)).count(), 4);
    let inside = inside.stop().unwrap();
    assert_eq!(
        inside.iter().filter(|f| from_src(f)).count(),
        4,
        "each once"
    );
}
