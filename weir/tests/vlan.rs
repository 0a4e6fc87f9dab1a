//! End to end: VLAN isolation by the real `weir run` daemon. One bridge, five
//! afpacket ports on veths into namespaces: a10 and b10 on access VLAN 10,
//! a20 and b20 on access VLAN 20, and a trunk of both whose far end is a
//! namespace where the test sends and receives 802.1Q-tagged frames through
//! a raw packet socket (this host's kernel has no 8021q module).
//!
//! Every namespace's interface is captured from before the daemon starts to
//! the end, so besides what each step checks on its own, the test ends by
//! checking every frame any namespace received: nothing crossed a VLAN.
//!
//! Needs root (CI runs as root); fails, never skips, without it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use vhost_user::testguest::wait_until;
use weir_testkit::capture::{Capture, Captured};
use weir_testkit::frame::{self, Mac};
use weir_testkit::packet::RawSocket;
use weir_testkit::{require_root_and_ip, tcp_transfer, Netns, VethHost};

mod common;
use common::{kernel_config, kernel_port, loss_pct, ping, ping_within, Daemon};

/// Bytes of each verified TCP transfer.
const TRANSFER_BYTES: u64 = 10_000_000;

/// How long a step waits for a frame or a counter it expects.
const WAIT: Duration = Duration::from_secs(10);

/// The source addresses the test puts on frames it sends from the trunk's
/// far end, one per VLAN (0: untagged), so that captures tell them apart.
const T10: Mac = Mac([0x02, 0x77, 0x6c, 0, 0, 10]);
const T20: Mac = Mac([0x02, 0x77, 0x6c, 0, 0, 20]);
const T30: Mac = Mac([0x02, 0x77, 0x6c, 0, 0, 30]);
const T0: Mac = Mac([0x02, 0x77, 0x6c, 0, 0, 0]);

/// All hosts share one subnet, whatever their VLAN: a host then asks for a
/// host of the other VLAN by broadcast ARP on its link, which is what
/// isolation must stop (with two subnets its stack would not even try).
fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 23, last)
}

/// A namespace behind an access port.
struct Access {
    /// Port name and namespace suffix.
    name: &'static str,
    vlan: u16,
    ip: Ipv4Addr,
    host: VethHost,
    mac: Mac,
    cap: Capture,
}

impl Access {
    fn ns(&self) -> &Netns {
        &self.host.ns
    }
}

/// Received by the captured host (not sent by it).
fn incoming(f: &Captured) -> bool {
    !f.outgoing
}

/// An ARP request from `src` for `target`.
fn arp_request_for(f: &Captured, src: Mac, target: Ipv4Addr) -> bool {
    f.view().src() == Some(src)
        && f.view()
            .arp()
            .is_some_and(|a| a.op == frame::ARP_REQUEST && a.target_ip == target)
}

/// A ping that must get no answer; two seconds is long for one that would
/// (a reply takes milliseconds once ARP is answered).
fn ping_unanswered(from: &Access, to: &Access) {
    let r = ping_within(from.ns(), &to.ip.to_string(), 2, "0.2", 2);
    assert!(
        r.is_err(),
        "{} (VLAN {}) reached {} (VLAN {}): {r:?}",
        from.name,
        from.vlan,
        to.name,
        to.vlan
    );
}

/// Every port's `key` counter, from one listing.
fn counters(d: &Daemon, key: &str) -> BTreeMap<String, u64> {
    d.ports()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["stats"][key].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Each port's change of a counter between two listings.
fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .collect()
}

/// The (VLAN, port) entries bridge br0 has learned for `mac`.
fn learned(d: &Daemon, mac: Mac) -> Vec<(u16, String)> {
    let fdb = d.json(&["fdb", "show", "--bridge", "br0"]);
    fdb.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mac"] == mac.to_string().as_str())
        .map(|e| {
            (
                e["vlan"].as_u64().unwrap() as u16,
                e["port"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A port's frames dropped as `vlan-filtered`.
fn vlan_filtered(d: &Daemon, port: &str) -> u64 {
    d.port_json(port)["stats"]["drops"]["vlan-filtered"]
        .as_u64()
        .unwrap_or(0)
}

/// `from` pings both hosts of the other VLAN, and gets no answer. Its ARP
/// requests reach `peer` (its own VLAN) untagged and the trunk tagged with
/// its VLAN; weir sends none of them to the other VLAN's ports, and those
/// namespaces' kernels receive nothing.
fn broadcasts_stay_in_the_vlan(
    d: &Daemon,
    from: &Access,
    peer: &Access,
    other: [&Access; 2],
    trunk_cap: &Capture,
) {
    let rx_before = counters(d, "rx_packets");
    let tx_before = counters(d, "tx_packets");
    let kernel_rx = |h: &Access| h.ns().counter("eth0", "rx_packets").unwrap();
    let other_rx_before = other.map(kernel_rx);
    std::thread::scope(|s| {
        for to in other {
            s.spawn(move || ping_unanswered(from, to));
        }
    });
    for to in other {
        // The stack keeps asking after ping gives up (three requests a
        // second apart): wait until it has given up too, so that no request
        // comes later, into the next step's counts.
        let given_up = wait_until(WAIT.as_secs(), || {
            from.ns()
                .exec(&["ip", "neigh", "show", &to.ip.to_string(), "dev", "eth0"])
                .is_ok_and(|s| s.contains("FAILED"))
        });
        assert!(given_up, "{} still resolving {}", from.name, to.name);
        let asked = |f: &Captured| incoming(f) && arp_request_for(f, from.mac, to.ip);
        trunk_cap
            .wait_for(WAIT, |f| asked(f) && f.view().vid() == Some(from.vlan))
            .unwrap_or_else(|| {
                panic!(
                    "{}'s ARP request for {} did not reach the trunk tagged {}: {:?}\n{}",
                    from.name,
                    to.name,
                    from.vlan,
                    trunk_cap.matching(asked),
                    d.log()
                )
            });
        peer.cap
            .wait_for(WAIT, |f| asked(f) && f.view().tag().is_none())
            .unwrap_or_else(|| {
                panic!(
                    "{}'s ARP request for {} did not reach {} untagged: {:?}",
                    from.name,
                    to.name,
                    peer.name,
                    peer.cap.matching(asked)
                )
            });
    }
    // Every request weir took from `from` went to the peer and the trunk,
    // once each (the links are quiet: see `VethHost::create_quiet`)...
    let settled = wait_until(WAIT.as_secs(), || {
        let rx = delta(&counters(d, "rx_packets"), &rx_before)[from.name];
        let tx = delta(&counters(d, "tx_packets"), &tx_before);
        rx > 0 && tx[peer.name] == rx && tx["trunk"] == rx
    });
    let rx = delta(&counters(d, "rx_packets"), &rx_before);
    let tx = delta(&counters(d, "tx_packets"), &tx_before);
    assert!(
        settled,
        "{}'s broadcasts: received {rx:?}, sent {tx:?}",
        from.name
    );
    // ... and to no port of the other VLAN, whose kernels saw nothing.
    for (h, before) in other.iter().zip(other_rx_before) {
        assert_eq!(
            tx[h.name], 0,
            "weir sent {} frames of VLAN {} to {} (VLAN {}): sent {tx:?}",
            tx[h.name], from.vlan, h.name, h.vlan
        );
        assert_eq!(
            kernel_rx(h) - before,
            0,
            "{} (VLAN {}) received frames while only VLAN {} spoke",
            h.name,
            h.vlan,
            from.vlan
        );
    }
}

#[test]
fn access_ports_isolate_vlans_and_the_trunk_carries_both_tagged() {
    require_root_and_ip().expect("the end-to-end test needs root and iproute2");
    let start = std::time::Instant::now();
    let tag = format!("wl{}", std::process::id() % 100_000);

    let access = |name: &'static str, vlan: u16, last: u8| {
        let host = VethHost::create_quiet(
            &format!("{tag}-{name}"),
            &format!("{tag}{name}"),
            &ip(last).to_string(),
        )
        .unwrap();
        let mac = Mac::parse(&host.mac().unwrap()).unwrap();
        let cap = Capture::start(&host.ns, "eth0").unwrap();
        Access {
            name,
            vlan,
            ip: ip(last),
            host,
            mac,
            cap,
        }
    };
    let a10 = access("a10", 10, 1);
    let b10 = access("b10", 10, 2);
    let a20 = access("a20", 20, 3);
    let b20 = access("b20", 20, 4);
    // The trunk's far end: its stack takes no part (it has no VLAN device,
    // and its address is never asked for); the test speaks for it with a
    // raw socket and listens with a capture.
    let trunk = VethHost::create_quiet(
        &format!("{tag}-tr"),
        &format!("{tag}tr"),
        &ip(254).to_string(),
    )
    .unwrap();
    let trunk_cap = Capture::start(&trunk.ns, "eth0").unwrap();
    let trunk_tx = RawSocket::open_in(&trunk.ns, "eth0").unwrap();

    // Both ways of writing each mode: vlan_mode given, or implied by the
    // presence of `tag`.
    let mut config = kernel_config("", &[]);
    for (h, keys) in [
        (&a10, "vlan_mode = \"access\"\ntag = 10\n"),
        (&b10, "tag = 10\n"),
        (&a20, "vlan_mode = \"access\"\ntag = 20\n"),
        (&b20, "tag = 20\n"),
    ] {
        config += &kernel_port(h.name, "afpacket", &h.host.host_if, keys);
    }
    config += &kernel_port("trunk", "afpacket", &trunk.host_if, "trunks = [10, 20]\n");
    let dir = std::env::temp_dir().join(format!("weir-vlan-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Daemon::start(&dir, &config);
    d.wait_up(&["a10", "b10", "a20", "b20", "trunk"]);

    // 1. Broadcasts stay in their VLAN, and leave the trunk tagged with it.
    broadcasts_stay_in_the_vlan(&d, &a10, &b10, [&a20, &b20], &trunk_cap);
    broadcasts_stay_in_the_vlan(&d, &b20, &a20, [&a10, &b10], &trunk_cap);

    // 2. Within a VLAN: ping, and verified TCP both ways, both VLANs at once.
    for (x, y) in [(&a10, &b10), (&b10, &a10), (&a20, &b20), (&b20, &a20)] {
        let out = ping(x.ns(), &y.ip.to_string(), 2, "0.2")
            .unwrap_or_else(|e| panic!("ping {} -> {}: {e}\n{}", x.name, y.name, d.log()));
        assert_eq!(loss_pct(&out), 0.0, "{} -> {}: {out}", x.name, y.name);
    }
    for pairs in [[(&a10, &b10), (&a20, &b20)], [(&b10, &a10), (&b20, &a20)]] {
        std::thread::scope(|s| {
            for (x, y) in pairs {
                let d = &d;
                s.spawn(move || {
                    let t = tcp_transfer(x.ns(), y.ns(), &y.ip.to_string(), 5201, TRANSFER_BYTES)
                        .unwrap_or_else(|e| {
                            panic!("TCP {} -> {}: {e:#}\n{}", x.name, y.name, d.log())
                        });
                    eprintln!(
                        "{} -> {}: {TRANSFER_BYTES} B in {:.2} s",
                        x.name,
                        y.name,
                        t.as_secs_f64()
                    );
                });
            }
        });
    }
    for h in [&a10, &b10, &a20, &b20] {
        assert_eq!(
            learned(&d, h.mac),
            [(h.vlan, h.name.to_string())],
            "{} learned in its VLAN only",
            h.name
        );
    }

    // 3. From the trunk, tagged: a broadcast of VLAN 10 reaches a10 and b10
    //    untagged, a10 answers, and the answer (a known unicast by then)
    //    arrives at the trunk tagged 10; the same for an ICMP echo. Then
    //    VLAN 20, to b20.
    let from_trunk = [(T10, ip(110), &a10, &b10), (T20, ip(120), &b20, &a20)];
    for (src, src_ip, target, peer) in from_trunk {
        let vlan = target.vlan;
        let request = frame::arp_request(src, src_ip, target.ip);
        trunk_tx.send(&frame::tagged(&request, vlan)).unwrap();
        for h in [target, peer] {
            let f = h
                .cap
                .wait_for(WAIT, |f| incoming(f) && arp_request_for(f, src, target.ip))
                .unwrap_or_else(|| {
                    panic!(
                        "the trunk's ARP request of VLAN {vlan} did not reach {}",
                        h.name
                    )
                });
            assert_eq!(
                f.bytes, request,
                "{} got the request untagged, unchanged",
                h.name
            );
        }
        let reply = trunk_cap
            .wait_for(WAIT, |f| {
                incoming(f)
                    && f.view().arp().is_some_and(|a| {
                        a.op == frame::ARP_REPLY && a.sender_ip == target.ip && a.target_mac == src
                    })
            })
            .unwrap_or_else(|| panic!("{} did not answer the trunk's ARP request", target.name));
        assert_eq!(
            (reply.view().src(), reply.view().dst(), reply.view().vid()),
            (Some(target.mac), Some(src), Some(vlan)),
            "{}'s ARP reply on the trunk",
            target.name
        );

        let echo = frame::icmp_echo_request(
            (src, src_ip),
            (target.mac, target.ip),
            0x7700 + vlan,
            1,
            b"weir vlan",
        );
        trunk_tx.send(&frame::tagged(&echo, vlan)).unwrap();
        let reply = trunk_cap
            .wait_for(WAIT, |f| {
                incoming(f)
                    && f.view()
                        .icmp_echo()
                        .is_some_and(|e| e.reply && e.id == 0x7700 + vlan && e.src_ip == target.ip)
            })
            .unwrap_or_else(|| panic!("{} did not answer the trunk's ping", target.name));
        assert_eq!(
            (reply.view().src(), reply.view().dst(), reply.view().vid()),
            (Some(target.mac), Some(src), Some(vlan)),
            "{}'s echo reply on the trunk",
            target.name
        );
        if target
            .cap
            .wait_for(WAIT, |f| incoming(f) && f.bytes == echo)
            .is_none()
        {
            let echoed = target
                .cap
                .matching(|f| incoming(f) && f.view().icmp_echo().is_some_and(|e| !e.reply));
            panic!(
                "{} did not get the echo request untagged, unchanged: {echoed:?}",
                target.name
            );
        }
    }
    for (mac, vlan) in [(T10, 10), (T20, 20)] {
        assert_eq!(learned(&d, mac), [(vlan, "trunk".to_string())], "{mac}");
    }

    // A frame of VLAN 20 addressed to a10 itself (whose address VLAN 20 has
    // not learned) is flooded in VLAN 20; that a10 does not get it, step 5
    // checks.
    let hop = frame::icmp_echo_request((T20, ip(120)), (a10.mac, a10.ip), 0x7720, 2, b"hop");
    trunk_tx.send(&frame::tagged(&hop, 20)).unwrap();
    for h in [&a20, &b20] {
        h.cap
            .wait_for(WAIT, |f| incoming(f) && f.bytes == hop)
            .unwrap_or_else(|| panic!("VLAN 20's flood of a frame for a10 missed {}", h.name));
    }

    // 4. Frames no VLAN of the port takes are dropped and counted: from the
    //    trunk, three of VLAN 30, one untagged (VLAN 0 is not trunked) and
    //    one with an 802.1ad service tag of VLAN 10 (not a customer tag);
    //    from a10's namespace, one tagged 20 (an access port takes no tags).
    let trunk_before = vlan_filtered(&d, "trunk");
    let a10_before = vlan_filtered(&d, "a10");
    for _ in 0..3 {
        trunk_tx
            .send(&frame::tagged(
                &frame::arp_request(T30, ip(130), a10.ip),
                30,
            ))
            .unwrap();
    }
    trunk_tx
        .send(&frame::arp_request(T0, ip(100), a10.ip))
        .unwrap();
    trunk_tx
        .send(&frame::tagged_tpid(
            &frame::arp_request(T0, ip(100), a10.ip),
            frame::TPID_8021AD,
            10,
        ))
        .unwrap();
    let a10_tx = RawSocket::open_in(a10.ns(), "eth0").unwrap();
    a10_tx
        .send(&frame::tagged(
            &frame::arp_request(a10.mac, a10.ip, b20.ip),
            20,
        ))
        .unwrap();
    let counted = wait_until(WAIT.as_secs(), || {
        vlan_filtered(&d, "trunk") - trunk_before >= 5 && vlan_filtered(&d, "a10") - a10_before >= 1
    });
    let (trunk_vf, a10_vf) = (
        vlan_filtered(&d, "trunk") - trunk_before,
        vlan_filtered(&d, "a10") - a10_before,
    );
    assert!(
        counted && trunk_vf == 5 && a10_vf == 1,
        "vlan-filtered: trunk {trunk_vf} (sent 5), a10 {a10_vf} (sent 1)\n{}",
        d.ports()
    );
    assert_eq!(
        learned(&d, a10.mac),
        [(10, "a10".to_string())],
        "a refused frame is not learned"
    );
    // `weir stats` reports the same.
    let stats = d.json(&["stats"]);
    let trunk_stats = common::port_entry(&stats["ports"], "trunk");
    assert_eq!(
        trunk_stats["stats"]["drops"]["vlan-filtered"].as_u64(),
        Some(vlan_filtered(&d, "trunk")),
        "{stats}"
    );

    // 5. Everything each namespace received, from before the daemon started
    //    (stopped now, so that whatever it still had to send is in): an
    //    access namespace only untagged frames from its own VLAN's hosts and
    //    the trunk's sender of that VLAN; the trunk only frames tagged with
    //    the VLAN of the host that sent them.
    drop(d);
    let vlan_of: BTreeMap<Mac, u16> = [&a10, &b10, &a20, &b20]
        .iter()
        .map(|h| (h.mac, h.vlan))
        .collect();
    // A source of VLAN `vlan` other than `me`: another access host of it,
    // or the trunk's sender of it.
    let of_vlan_but = |m: Mac, vlan: u16, me: Mac| {
        let trunk_src = if vlan == 10 { T10 } else { T20 };
        m != me && (vlan_of.get(&m) == Some(&vlan) || m == trunk_src)
    };
    for h in [a10, b10, a20, b20] {
        let frames = h.cap.stop().unwrap();
        let got: Vec<_> = frames.iter().filter(|f| incoming(f)).collect();
        assert!(!got.is_empty(), "{} received nothing", h.name);
        let bad: Vec<_> = got
            .iter()
            .filter(|f| {
                f.view().tag().is_some()
                    || !f
                        .view()
                        .src()
                        .is_some_and(|m| of_vlan_but(m, h.vlan, h.mac))
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{} (VLAN {}) received {} of {} frames it must not: {bad:?}",
            h.name,
            h.vlan,
            bad.len(),
            got.len()
        );
        eprintln!(
            "{}: {} frames received, all of VLAN {}",
            h.name,
            got.len(),
            h.vlan
        );
    }
    let frames = trunk_cap.stop().unwrap();
    let got: Vec<_> = frames.iter().filter(|f| incoming(f)).collect();
    let bad: Vec<_> = got
        .iter()
        .filter(|f| {
            let v = f.view();
            // Only the access hosts' frames, so never one of the trunk's
            // own sources (no hairpin).
            let src_vlan = v.src().and_then(|m| vlan_of.get(&m).copied());
            src_vlan.is_none() || v.vid() != src_vlan
        })
        .collect();
    assert!(
        bad.is_empty(),
        "the trunk received {} of {} frames it must not: {bad:?}",
        bad.len(),
        got.len()
    );
    for vlan in [10, 20] {
        assert!(
            got.iter().any(|f| f.view().vid() == Some(vlan)),
            "the trunk received nothing of VLAN {vlan}"
        );
    }
    eprintln!(
        "trunk: {} frames received, each tagged with its sender's VLAN; {:.1} s in all",
        got.len(),
        start.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
