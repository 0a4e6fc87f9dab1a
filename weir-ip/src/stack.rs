//! The stack thread: drains the host ring, snoops each frame, runs smoltcp,
//! sends the due ARP probes and reports resolved next hops.
//!
//! Layer: control (slow path), one thread per port with an address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arrayvec::ArrayVec;
use dataplane::ring::Ring;
use dataplane::{MacAddr, Mbuf};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr, IpProtocol,
    Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

use crate::config::Host;
use crate::device::HostDevice;
use crate::neigh::Probe;
use crate::snoop::{self, Rx};
use crate::{Link, NeighbourHook, Shared, BURST, IDLE_SLEEP};

/// Bytes of an ARP request over Ethernet (no padding: as smoltcp sends its
/// replies; NICs pad short frames).
const ARP_FRAME: usize = 14 + 28;

/// How often forgotten neighbours are swept out.
const EXPIRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) struct Runner {
    host: Host,
    shared: Arc<Shared>,
    rx: Arc<Ring<Mbuf>>,
    link: Box<dyn Link>,
    on_neighbour: NeighbourHook,
}

/// An ARP request from `src` for `target`, broadcast or to `dst`.
pub(crate) fn arp_request(
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    target: Ipv4Addr,
    dst: Option<MacAddr>,
) -> [u8; ARP_FRAME] {
    let mut buf = [0u8; ARP_FRAME];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(src_mac.0),
        dst_addr: EthernetAddress(dst.unwrap_or(MacAddr::BROADCAST).0),
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut frame);
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(src_mac.0),
        source_protocol_addr: src_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

/// Bytes of a neighbour advertisement with a target link-layer option.
const NA_FRAME: usize = 14 + 40 + 24 + 8;

/// A solicited neighbour advertisement of `target` at `our_mac`, to `to`.
/// Override is set: `target` is a unicast address of ours (RFC 4861
/// §7.2.4).
pub(crate) fn neighbour_advert(
    our_mac: MacAddr,
    target: Ipv6Addr,
    to: Ipv6Addr,
    to_mac: MacAddr,
) -> [u8; NA_FRAME] {
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(our_mac.0))),
    });
    let ip = Ipv6Repr {
        src_addr: target,
        dst_addr: to,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    debug_assert_eq!(14 + ip.buffer_len() + icmp.buffer_len(), NA_FRAME);
    let mut buf = [0u8; NA_FRAME];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(our_mac.0),
        dst_addr: EthernetAddress(to_mac.0),
        ethertype: EthernetProtocol::Ipv6,
    }
    .emit(&mut frame);
    let mut p = Ipv6Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut p);
    icmp.emit(
        &target,
        &to,
        &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// Keeps a snooped sender worth a neighbour entry; counts one that claims
/// an address of ours from another MAC.
fn note_sender(
    host: &Host,
    counters: &crate::Counters,
    sender: Option<(IpAddr, MacAddr)>,
    learnt: &mut Vec<(IpAddr, MacAddr)>,
) {
    let Some((ip, mac)) = sender else { return };
    if host.snoopable(ip, mac) {
        learnt.push((ip, mac));
    } else if host.is_own(ip) && mac != host.mac {
        // Relaxed: statistics.
        counters.address_conflicts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Runner {
    pub fn new(
        host: Host,
        shared: Arc<Shared>,
        rx: Arc<Ring<Mbuf>>,
        link: Box<dyn Link>,
        on_neighbour: NeighbourHook,
    ) -> Runner {
        Runner {
            host,
            shared,
            rx,
            link,
            on_neighbour,
        }
    }

    pub fn run(self) {
        let Runner {
            host,
            shared,
            rx,
            link,
            on_neighbour,
        } = self;
        let counters = &shared.counters;
        let start = Instant::now();
        let smol_now = |t: Instant| {
            smoltcp::time::Instant::from_micros(
                i64::try_from(t.saturating_duration_since(start).as_micros()).unwrap_or(i64::MAX),
            )
        };
        let mut dev = HostDevice::new(link, host.mtu, BURST);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(host.mac.0)));
        // Seeds smoltcp's identifiers (no TCP here); std's per-process keys.
        config.random_seed =
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), &host.port);
        let mut iface = Interface::new(config, &mut dev.with(counters), smol_now(start));
        iface.update_ip_addrs(|addrs| {
            for (ip, prefix) in host.addresses() {
                // `HostConfig::check` bounds the count by the table's size.
                let _ = addrs.push(IpCidr::new(IpAddress::from(ip), prefix));
            }
        });
        if let Some(gw) = host.gateway4 {
            if iface.routes_mut().add_default_ipv4_route(gw).is_err() {
                tracing::warn!(port = %host.port, %gw, "route table full: no IPv4 default route");
            }
        }
        if let Some(gw) = host.gateway6 {
            if iface.routes_mut().add_default_ipv6_route(gw).is_err() {
                tracing::warn!(port = %host.port, %gw, "route table full: no IPv6 default route");
            }
        }
        let mut sockets = SocketSet::new(Vec::new());
        let mut burst: ArrayVec<Mbuf, BURST> = ArrayVec::new();
        let mut learnt: Vec<(IpAddr, MacAddr)> = Vec::with_capacity(BURST);
        let mut probes: Vec<Probe> = Vec::new();
        let mut events: Vec<(Ipv4Addr, MacAddr)> = Vec::new();
        let mut next_expiry = start + EXPIRY_EVERY;
        let mut adverts: Vec<[u8; NA_FRAME]> = Vec::with_capacity(BURST);
        tracing::debug!(port = %host.port, addrs = ?host.addresses(), "host stack started");

        // Acquire: pairs with the Release store in `HostStack::drop`.
        while !shared.stop.load(Ordering::Acquire) {
            let n = rx.dequeue_burst(&mut burst, BURST);
            let now = Instant::now();
            // Relaxed (all counters): independent statistics.
            if n > 0 {
                counters.rx_frames.fetch_add(n as u64, Ordering::Relaxed);
            }
            for m in burst.drain(..) {
                match snoop::inspect(m.data()) {
                    Rx::Malformed => {
                        counters.rx_malformed.fetch_add(1, Ordering::Relaxed);
                    }
                    Rx::Ignored => {
                        counters.rx_ignored.fetch_add(1, Ordering::Relaxed);
                    }
                    Rx::Stack(sender) => {
                        note_sender(&host, counters, sender, &mut learnt);
                        dev.rx.push_back(m);
                    }
                    Rx::UnicastSolicit {
                        sender,
                        from,
                        from_mac,
                        target,
                    } => {
                        note_sender(&host, counters, sender, &mut learnt);
                        if host.is_own(target.into()) && from_mac.is_unicast() {
                            adverts.push(neighbour_advert(host.mac, target, from, from_mac));
                        }
                        // smoltcp does not answer it, but fills its cache
                        // from the source link-layer option.
                        dev.rx.push_back(m);
                    }
                }
            }
            // The table first: whoever sees a reply finds its sender learnt.
            {
                let mut table = shared.table();
                for (ip, mac) in learnt.drain(..) {
                    table.learn(ip, mac, now);
                }
                table.due_probes(now, &mut probes);
                if now >= next_expiry {
                    table.expire(now);
                    next_expiry = now + EXPIRY_EVERY;
                }
                table.take_events(&mut events);
                let (evicted, refused) = table.evictions();
                counters
                    .neighbours_evicted
                    .store(evicted, Ordering::Relaxed);
                counters
                    .neighbours_refused
                    .store(refused, Ordering::Relaxed);
            }
            for na in adverts.drain(..) {
                if dev.send(counters, &na) {
                    counters
                        .neighbour_solicits_answered
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            iface.poll(smol_now(now), &mut dev.with(counters), &mut sockets);
            // Dropped frames smoltcp did not read (none today): free them.
            dev.rx.clear();

            for p in probes.drain(..) {
                let Some(src) = host.source_for(p.ip) else {
                    continue;
                };
                let frame = arp_request(host.mac, src, p.ip, p.dst_mac);
                dev.send(counters, &frame);
                counters.arp_probes_sent.fetch_add(1, Ordering::Relaxed);
            }
            for (ip, mac) in events.drain(..) {
                tracing::info!(port = %host.port, %ip, %mac, "next hop resolved");
                counters.neighbour_updates.fetch_add(1, Ordering::Relaxed);
                on_neighbour(ip, mac);
            }
            if n == 0 {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
        tracing::debug!(port = %host.port, "host stack stopped");
    }
}
