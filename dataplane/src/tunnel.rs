//! Tunnel ports (VXLAN, Geneve) and weir's own addresses on an underlay
//! port: the packet-path halves (docs/overlay.md).
//!
//! Layer: switch. A tunnel port is a switch port with one queue per worker
//! ([`TunnelPort`]), so that every worker encapsulates and decapsulates on
//! its own, in the round that switched or received the frame:
//!
//! - Transmit: the switch stages frames for the tunnel like for any port;
//!   the worker hands the burst to [`TunnelShared::encap_burst`], which wraps
//!   each frame in the outer headers prebuilt for its remote endpoint
//!   ([`TunnelState`]), and sends the result straight on to the underlay
//!   port (its own queue of it, or the underlay's handoff ring).
//! - Receive: what an underlay port receives for weir is split off before
//!   the switch sees the burst ([`HostPort::demux`]). Tunnel packets are
//!   checked and stripped into a [`Decapped`] burst, which the same worker
//!   switches at once as received on the tunnel port (its own queue of it
//!   keeps the counters). ARP, ND and packets for weir's addresses go to the
//!   host stack's ring (a control thread, off the workers' CPUs).
//!
//! Everything the control plane changes (neighbours, MTU, the underlay's
//! entry) is published whole through an `ArcSwap`, never written under a
//! worker.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ids::{MacAddr, PortId, VlanId};
use crate::mbuf::Mbuf;
use crate::port::{Burst, LinkState, Port, MAX_BURST};
use crate::ring::Ring;
use crate::stats::{DropReason, QueueStats};
use crate::switch::vlan::{pop_tag, push_tag};
use crate::switch::{Fdb, FdbConfig, FdbKey, PortEntry};
use crate::wire::ethertype;
use crate::wire::tunnel::{self, OuterHeader, TunnelKind};

/// Frames a tunnel port's receive ring holds: decapsulated by a worker
/// that has no queue of the tunnel yet (the moment after the port is
/// added), for its first queue to switch.
pub const TUNNEL_RX_RING: usize = 1024;

/// Most remote endpoints one tunnel replicates to.
pub const MAX_REMOTES: usize = 64;

/// Most remote slots a tunnel has: its remotes and those just left out.
pub const MAX_SLOTS: usize = 2 * MAX_REMOTES;

/// How a slot holds address `ip`: its bytes as they are (no byte swap to
/// compare with a packet's), 0 for none.
#[inline(always)]
fn slot_value(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// [`TunnelShared::set_remotes`] refused a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a tunnel has at most {MAX_REMOTES} remotes, none of them 0.0.0.0")]
pub struct BadRemotes;

/// Frames the host stack's ring holds (ARP, ND, ICMP for weir).
pub const HOST_RX_RING: usize = 256;

/// One remote endpoint of a tunnel.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Its address; unspecified (0.0.0.0, never a remote's) for a slot no
    /// remote has (see [`TunnelShared::set_remotes`]).
    pub ip: Ipv4Addr,
    /// The outer headers towards it, once its next hop's MAC is known.
    pub header: Option<OuterHeader>,
}

/// What a tunnel port's transmit path reads, published whole by the control
/// plane when a neighbour, the MTU, the underlay or the remotes change.
#[derive(Debug, Default)]
pub struct TunnelState {
    /// The underlay port (None while it is missing: frames are dropped as
    /// `tunnel-unresolved`).
    pub underlay: Option<Arc<PortEntry>>,
    /// By slot ([`TunnelShared::remote_slots`]), the index the tunnel's
    /// table keeps a station's remote by.
    pub remotes: Vec<Remote>,
    /// Longest inner frame (without a `vlan_vni` tag) that fits the
    /// underlay's MTU with the outer headers.
    pub max_frame: usize,
    /// The slots that have a remote: where unknown and group frames go.
    flood: Vec<u16>,
}

impl TunnelState {
    /// The state of a tunnel over `underlay` with `remotes` by slot.
    pub fn new(
        underlay: Option<Arc<PortEntry>>,
        remotes: Vec<Remote>,
        max_frame: usize,
    ) -> TunnelState {
        let flood = (0..remotes.len() as u16)
            .filter(|&i| !remotes[usize::from(i)].ip.is_unspecified())
            .collect();
        TunnelState {
            underlay,
            remotes,
            max_frame,
            flood,
        }
    }
}

/// Which VNI a frame travels with (see `VniMap` in weir-config).
#[derive(Debug)]
pub enum Vnis {
    /// One VNI; frames go as they are.
    Single(u32),
    /// A VNI per bridge VLAN: `(vlan, vni)` sorted by VLAN.
    ByVlan(Vec<(u16, u32)>),
}

impl Vnis {
    /// The VNI of bridge VLAN `vid`.
    #[inline]
    fn of_vlan(&self, vid: u16) -> Option<u32> {
        match self {
            Vnis::Single(v) => Some(*v),
            Vnis::ByVlan(m) => m
                .binary_search_by_key(&vid, |&(v, _)| v)
                .ok()
                .map(|i| m[i].1),
        }
    }

    /// For a received VNI: None if not carried; Some(None) to pass the
    /// frame as it is; Some(Some(vid)) to tag it with `vid`.
    #[inline]
    fn vlan_of(&self, vni: u32) -> Option<Option<u16>> {
        match self {
            Vnis::Single(v) => (*v == vni).then_some(None),
            Vnis::ByVlan(m) => m.iter().find(|&&(_, n)| n == vni).map(|&(v, _)| Some(v)),
        }
    }
}

/// A tunnel port's state shared by its queue, the workers that decapsulate
/// for it and the control plane.
#[derive(Debug)]
pub struct TunnelShared {
    /// Port name, for diagnostics.
    pub name: Arc<str>,
    /// Its switch port.
    pub id: PortId,
    /// The encapsulation.
    pub kind: TunnelKind,
    /// UDP destination port.
    pub dst_port: u16,
    /// Source address of its packets.
    pub local_ip: Ipv4Addr,
    /// The remote endpoints by slot, the first `slot_count`: an address as
    /// [`slot_value`] has it, 0 for a slot no remote has now. A slot is a remote's id in
    /// [`TunnelShared::fdb`] for as long as it is listed. Decapsulation
    /// reads them in place; only [`TunnelShared::set_remotes`] writes.
    slots: [AtomicU32; MAX_SLOTS],
    slot_count: AtomicUsize,
    vnis: Vnis,
    /// Decapsulated frames for the port's first queue (see
    /// [`TUNNEL_RX_RING`]).
    rx: Ring<Mbuf>,
    /// Inner (VLAN, MAC) → remote: learned on decapsulation, or set
    /// statically (`fdb add --remote`). The "port" of an entry is the
    /// remote's index.
    pub fdb: Fdb,
    state: ArcSwap<TunnelState>,
}

impl TunnelShared {
    /// A tunnel with no underlay yet (publish one with
    /// [`TunnelShared::publish`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        id: PortId,
        kind: TunnelKind,
        dst_port: u16,
        local_ip: Ipv4Addr,
        remote_ips: Vec<Ipv4Addr>,
        vnis: Vnis,
        fdb: &FdbConfig,
    ) -> Arc<TunnelShared> {
        let remote_ips = &remote_ips[..remote_ips.len().min(MAX_REMOTES)];
        let remotes = remote_ips
            .iter()
            .map(|&ip| Remote { ip, header: None })
            .collect();
        let slots = std::array::from_fn(|i| {
            AtomicU32::new(remote_ips.get(i).map_or(0, |&ip| slot_value(ip)))
        });
        Arc::new(TunnelShared {
            name: name.into(),
            id,
            kind,
            dst_port,
            local_ip,
            slots,
            slot_count: AtomicUsize::new(remote_ips.len()),
            vnis,
            rx: Ring::new(TUNNEL_RX_RING),
            fdb: Fdb::new(&FdbConfig {
                // One remote may stand for many stations: no per-remote cap
                // below the table's own.
                max_per_port: 0,
                ..fdb.clone()
            }),
            state: ArcSwap::from_pointee(TunnelState::new(None, remotes, 0)),
        })
    }

    /// Replaces what the transmit path reads.
    pub fn publish(&self, state: TunnelState) {
        self.state.store(Arc::new(state));
    }

    /// What the transmit path reads now.
    pub fn state(&self) -> Arc<TunnelState> {
        self.state.load_full()
    }

    /// The slots in use (at most [`MAX_SLOTS`]).
    #[inline(always)]
    fn slots(&self) -> &[AtomicU32] {
        // Acquire: the slots written before the count was raised.
        let n = self.slot_count.load(Ordering::Acquire);
        &self.slots[..n.min(MAX_SLOTS)]
    }

    /// The remote in a slot as it holds it.
    fn slot_ip(slot: &AtomicU32) -> Option<Ipv4Addr> {
        // Relaxed: each slot is a value of its own.
        match slot.load(Ordering::Relaxed) {
            0 => None,
            a => Some(Ipv4Addr::from(a.to_ne_bytes())),
        }
    }

    /// The remote endpoints by slot (None: a slot no remote has now).
    pub fn remote_slots(&self) -> Vec<Option<Ipv4Addr>> {
        self.slots().iter().map(Self::slot_ip).collect()
    }

    /// The slot of remote `ip`, if it is one.
    #[inline(always)]
    pub fn remote_index(&self, ip: Ipv4Addr) -> Option<usize> {
        let a = slot_value(ip);
        if a == 0 {
            return None; // the free slots' mark
        }
        // Relaxed: as in remote_slots.
        self.slots()
            .iter()
            .position(|s| s.load(Ordering::Relaxed) == a)
    }

    /// The remote in `slot`, if one is.
    pub fn remote_ip(&self, slot: usize) -> Option<Ipv4Addr> {
        self.slots().get(slot).and_then(Self::slot_ip)
    }

    /// Makes `ips` the tunnel's remotes: a remote listed before keeps its
    /// slot (and what the tunnel's table learned behind it); a new one
    /// takes a slot an earlier change left free, or a new one. Returns the
    /// slots of the remotes gone, whose entries the caller flushes from
    /// [`TunnelShared::fdb`] once every worker has seen the change (until
    /// then one may still learn behind them); their slots are free from
    /// the next change on, so no more than [`MAX_SLOTS`] are ever needed.
    /// The caller publishes a [`TunnelState`] with the new slots for the
    /// transmit path.
    ///
    /// Control side only, one change at a time.
    ///
    /// # Errors
    /// More than [`MAX_REMOTES`] addresses, or 0.0.0.0 among them; nothing
    /// changes then.
    pub fn set_remotes(&self, ips: &[Ipv4Addr]) -> Result<Vec<usize>, BadRemotes> {
        if ips.len() > MAX_REMOTES || ips.iter().any(|ip| ip.is_unspecified()) {
            return Err(BadRemotes);
        }
        let old = self.remote_slots();
        let mut gone = Vec::new();
        for (i, slot) in old.iter().enumerate() {
            if slot.is_some_and(|ip| !ips.contains(&ip)) {
                // Relaxed: see remote_slots.
                self.slots[i].store(0, Ordering::Relaxed);
                gone.push(i);
            }
        }
        let mut free = (0..old.len()).filter(|&i| old[i].is_none());
        let mut count = old.len();
        for &ip in ips.iter().filter(|&&ip| !old.contains(&Some(ip))) {
            let i = free.next().unwrap_or_else(|| {
                count += 1;
                count - 1
            });
            // At most MAX_REMOTES live and MAX_REMOTES just freed.
            if let Some(s) = self.slots.get(i) {
                s.store(slot_value(ip), Ordering::Relaxed);
            }
        }
        // Release: the new slots before the count that takes them in.
        self.slot_count
            .store(count.min(MAX_SLOTS), Ordering::Release);
        Ok(gone)
    }

    /// Queue `queue` of the port, which the runtime gives a worker (one
    /// per worker). Queue 0 also switches what the receive ring holds.
    pub fn port(self: &Arc<Self>, queue: usize, stats: Arc<QueueStats>) -> TunnelPort {
        TunnelPort {
            shared: Arc::clone(self),
            reads_ring: queue == 0,
            stats,
        }
    }

    /// Puts decapsulated frames on the receive ring, for a worker that has
    /// no queue of the port; returns how many the full ring refused (they
    /// are freed).
    pub fn push_rx(&self, b: &mut Burst) -> usize {
        self.rx.enqueue_burst(b);
        let left = b.len();
        b.clear();
        left
    }

    /// Frames waiting on the receive ring.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }
}

/// A queue of a tunnel port. A worker does not call its `tx_burst`: it
/// encapsulates with [`TunnelShared::encap_burst`] and sends the result on
/// itself ([`Port::tunnel`]). `tx_burst` does the same through the
/// underlay's handoff ring, for any other caller.
#[derive(Debug)]
pub struct TunnelPort {
    shared: Arc<TunnelShared>,
    reads_ring: bool,
    stats: Arc<QueueStats>,
}

/// The VLAN id of an 802.1Q-tagged frame, if it is one.
#[inline]
fn tag_of(d: &[u8]) -> Option<u16> {
    if d.len() >= 18 && u16::from_be_bytes([d[12], d[13]]) == ethertype::VLAN {
        Some(u16::from_be_bytes([d[14], d[15]]) & 0x0fff)
    } else {
        None
    }
}

impl TunnelShared {
    /// Encapsulates the frames of `b` (ready to send: no TSO frame, no
    /// partial checksum) for their remotes and hands the outer packets to
    /// `emit` a burst at a time, with the underlay's entry; `emit` must
    /// leave the burst empty. Drops are counted in `stats`. Returns what
    /// the tunnel took ([`Encapsulated`]). Leaves `b` empty.
    #[inline]
    pub fn encap_burst(
        &self,
        b: &mut Burst,
        stats: &QueueStats,
        mut emit: impl FnMut(&PortEntry, &mut Burst),
    ) -> Encapsulated {
        let n = b.len() as u64;
        let st = self.state.load();
        let Some(underlay) = st.underlay.as_deref() else {
            stats.drop_n(DropReason::TunnelUnresolved, n);
            b.clear();
            return Encapsulated {
                failed: n,
                bytes: 0,
            };
        };
        let mut out = Encap {
            st: &st,
            stats,
            out: Burst::new(),
            emit: |o: &mut Burst| emit(underlay, o),
        };
        let mut failed = 0u64;
        let mut bytes = 0u64;
        let fdb = self.fdb.view();
        for mut m in b.drain(..) {
            let vid = tag_of(m.data());
            let vni = match &self.vnis {
                Vnis::Single(v) => *v,
                Vnis::ByVlan(_) => match vid.and_then(|v| self.vnis.of_vlan(v)) {
                    Some(vni) => {
                        pop_tag(&mut m);
                        vni
                    }
                    None => {
                        stats.drop_one(DropReason::VlanFiltered);
                        failed += 1;
                        continue;
                    }
                },
            };
            if m.len() > st.max_frame {
                stats.drop_one(DropReason::TunnelMtu);
                failed += 1;
                continue;
            }
            let d = m.data();
            // The switch passes no frame shorter than its Ethernet header.
            let Some(dst) = d.first_chunk::<6>().map(|a| MacAddr(*a)) else {
                stats.drop_one(DropReason::Malformed);
                failed += 1;
                continue;
            };
            bytes += d.len() as u64;
            let sport = tunnel::source_port(d);
            // With one remote (or none) every frame goes to it, known or
            // flooded: no lookup.
            let known = if st.flood.len() <= 1 || dst.is_multicast() {
                None
            } else {
                fdb.lookup_key(FdbKey::new(VlanId(vid.unwrap_or(0)), dst))
            };
            match known {
                Some(r) => out.one(r.index(), vni, sport, m),
                None => {
                    // Head-end replication: a copy to every remote but the
                    // last, which takes the frame itself.
                    let Some((&last, rest)) = st.flood.split_last() else {
                        stats.drop_one(DropReason::TunnelUnresolved);
                        continue;
                    };
                    for &i in rest {
                        match m.try_clone() {
                            Some(c) => out.one(usize::from(i), vni, sport, c),
                            None => stats.drop_one(DropReason::NoBuffers),
                        }
                    }
                    out.one(usize::from(last), vni, sport, m);
                }
            }
        }
        out.flush();
        Encapsulated { failed, bytes }
    }
}

/// What [`TunnelShared::encap_burst`] took of a burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encapsulated {
    /// Frames dropped before encapsulation (no VNI for their VLAN, too
    /// long, no underlay): the queue's `tx_errors`.
    pub failed: u64,
    /// Bytes of the inner frames that passed those checks (without a tag
    /// the VNI stands for): the queue's `tx_bytes`.
    pub bytes: u64,
}

/// The outer packets of one [`TunnelShared::encap_burst`], on their way to
/// the underlay.
struct Encap<'a, F: FnMut(&mut Burst)> {
    st: &'a TunnelState,
    stats: &'a QueueStats,
    out: Burst,
    emit: F,
}

impl<F: FnMut(&mut Burst)> Encap<'_, F> {
    /// Wraps `m` (the inner frame, ready) for `remote`, or drops it
    /// counted.
    #[inline(always)]
    fn one(&mut self, remote: usize, vni: u32, sport: u16, mut m: Mbuf) {
        let Some(h) = self.st.remotes.get(remote).and_then(|r| r.header.as_ref()) else {
            self.stats.drop_one(DropReason::TunnelUnresolved);
            return;
        };
        if h.encap(&mut m, vni, sport).is_err() {
            self.stats.drop_one(DropReason::NoBuffers);
            return;
        }
        if self.out.is_full() {
            self.flush();
        }
        self.out.push(m);
    }

    #[inline]
    fn flush(&mut self) {
        if !self.out.is_empty() {
            (self.emit)(&mut self.out);
            self.out.clear();
        }
    }
}

impl Port for TunnelPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        if !self.reads_ring {
            return 0;
        }
        let room = MAX_BURST - burst.len();
        self.shared.rx.dequeue_burst(burst, room)
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len();
        let stats = &*self.stats;
        let done = self.shared.encap_burst(burst, stats, |u, out| {
            u.hand_off(out);
            if !out.is_empty() {
                stats.drop_n(DropReason::HandoffFull, out.len() as u64);
                out.clear();
            }
        });
        if done.failed > 0 {
            stats.tx_errors.add(done.failed);
        }
        n
    }

    fn link(&self) -> LinkState {
        match &self.shared.state.load().underlay {
            Some(u) if u.is_up() => LinkState::Up,
            _ => LinkState::Down,
        }
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn tunnel(&self) -> Option<&Arc<TunnelShared>> {
        Some(&self.shared)
    }
}

/// What a worker needs to split an underlay port's received burst: weir's
/// addresses on the port and the tunnels it carries. Published per port in
/// the switch tables ([`crate::switch::SwitchTables::set_host`]).
#[derive(Debug)]
pub struct HostPort {
    /// weir's MAC address on the port.
    pub mac: MacAddr,
    /// weir's IPv4 addresses on the port.
    pub v4: Vec<Ipv4Addr>,
    /// weir's IPv6 addresses on the port.
    pub v6: Vec<Ipv6Addr>,
    /// Whether the port is on a bridge: broadcast and multicast frames
    /// weir takes are switched too.
    pub bridged: bool,
    /// The host stack's receive ring.
    pub to_host: Arc<Ring<Mbuf>>,
    /// The tunnels over this port.
    pub tunnels: Vec<Arc<TunnelShared>>,
}

/// The frames [`HostPort::demux`] decapsulated from one burst, each with
/// the index of its tunnel in [`HostPort::tunnels`].
pub struct Decapped {
    frames: Burst,
    tunnel: arrayvec::ArrayVec<u16, MAX_BURST>,
    /// What the last frame taught its tunnel's table (key, tunnel, remote):
    /// the same again in this burst is not learned twice (same `now`).
    learned: (u64, u16, u16),
}

impl Default for Decapped {
    fn default() -> Decapped {
        Decapped {
            frames: Burst::new(),
            tunnel: arrayvec::ArrayVec::new(),
            learned: (FdbKey::NONE_RAW, 0, 0),
        }
    }
}

impl Decapped {
    /// No frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    #[inline]
    fn push(&mut self, tunnel: usize, m: Mbuf) {
        // Both have room: demux takes at most one burst's frames.
        if self.frames.try_push(m).is_ok() {
            let _ = self.tunnel.try_push(tunnel as u16);
        }
    }

    /// Moves the frames of the first frame's tunnel, in order, into `to`
    /// and returns that tunnel's index; None if there is no frame left.
    #[inline]
    pub fn take_next(&mut self, to: &mut Burst) -> Option<usize> {
        let k = *self.tunnel.first()?;
        if self.tunnel.iter().all(|&t| t == k) {
            // The usual case: every frame of the burst is one tunnel's.
            to.extend(self.frames.drain(..));
            self.tunnel.clear();
            return Some(usize::from(k));
        }
        let (frames, tunnels) = (
            std::mem::take(&mut self.frames),
            std::mem::take(&mut self.tunnel),
        );
        for (m, t) in frames.into_iter().zip(tunnels) {
            if t == k {
                to.push(m);
            } else {
                self.push(usize::from(t), m);
            }
        }
        Some(usize::from(k))
    }
}

/// Where [`HostPort::demux`] sends a frame.
enum Verdict {
    /// Not weir's: the switch has it.
    Switch,
    /// For the host stack (and, `also_switch`, a copy to the switch).
    Host {
        also_switch: bool,
    },
    /// A tunnel packet: UDP payload from this offset.
    Tunnel(tunnel::Outer),
    Drop(DropReason),
}

impl HostPort {
    /// Whether `ip` is one of weir's IPv4 addresses here.
    #[inline]
    fn is_mine4(&self, ip: Ipv4Addr) -> bool {
        self.v4.contains(&ip)
    }

    /// The port's one tunnel and its one VNI, when that is all the port
    /// carries and the tunnel's address is weir's: the usual underlay, whose
    /// tunnel packets [`HostPort::to_sole`] recognises without
    /// [`HostPort::classify`]'s general tests.
    #[inline]
    fn sole_tunnel(&self) -> Option<(&TunnelShared, u32)> {
        match self.tunnels.as_slice() {
            [t] if self.is_mine4(t.local_ip) => match t.vnis {
                Vnis::Single(vni) => Some((t, vni)),
                Vnis::ByVlan(_) => None,
            },
            _ => None,
        }
    }

    /// Whether `d` is a packet of the sole tunnel `t` (VNI `vni`): sent to
    /// weir's MAC, a well-formed outer IPv4/UDP header to the tunnel's
    /// address and port, the tunnel's header with its VNI. Then the outer
    /// headers and the tunnel header's length. Any other frame (None) takes
    /// the general way, [`HostPort::classify`] and [`HostPort::decap`],
    /// which would have reached [`HostPort::strip`] with the same for this
    /// one.
    #[inline(always)]
    fn to_sole(&self, t: &TunnelShared, vni: u32, d: &[u8]) -> Option<(tunnel::Outer, usize)> {
        if *d.first_chunk::<6>()? != self.mac.0 {
            return None;
        }
        let o = tunnel::parse_outer(d).ok()?;
        if o.dst_port != t.dst_port || o.dst_ip != t.local_ip {
            return None;
        }
        let payload = d.get(o.payload_offset..o.payload_offset + o.payload_len)?;
        match t.kind.vni(payload) {
            Ok((v, hlen)) if v == vni => Some((o, hlen)),
            _ => None,
        }
    }

    fn classify(&self, d: &[u8]) -> Verdict {
        if d.len() < 14 {
            return Verdict::Switch; // the switch counts it malformed
        }
        let Some(dst) = d.first_chunk::<6>().map(|a| MacAddr(*a)) else {
            return Verdict::Switch;
        };
        let to_me = dst == self.mac;
        let group = dst.is_multicast();
        if !to_me && !group {
            return Verdict::Switch;
        }
        let host = Verdict::Host {
            also_switch: group && self.bridged,
        };
        match u16::from_be_bytes([d[12], d[13]]) {
            ethertype::ARP => host,
            ethertype::IPV4 if d.len() >= 34 => {
                let dst_ip = Ipv4Addr::new(d[30], d[31], d[32], d[33]);
                if !self.is_mine4(dst_ip) {
                    return if to_me {
                        Verdict::Drop(DropReason::NotLocal)
                    } else {
                        Verdict::Switch
                    };
                }
                match tunnel::parse_outer(d) {
                    Ok(o) if self.tunnels.iter().any(|t| t.dst_port == o.dst_port) => {
                        Verdict::Tunnel(o)
                    }
                    Ok(_) | Err(tunnel::DecapError::NotUdp) => host,
                    Err(_) => Verdict::Drop(DropReason::TunnelHeader),
                }
            }
            ethertype::IPV6 if d.len() >= 54 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&d[38..54]);
                let dst_ip = Ipv6Addr::from(a);
                if dst_ip.is_multicast() || self.v6.contains(&dst_ip) {
                    host
                } else if to_me {
                    Verdict::Drop(DropReason::NotLocal)
                } else {
                    Verdict::Switch
                }
            }
            _ if to_me => Verdict::Drop(DropReason::NotLocal),
            _ => Verdict::Switch,
        }
    }

    /// Takes out of `b` what is weir's: tunnel packets (decapsulated into
    /// `dec`, the inner source learned against the remote), frames for the
    /// host stack, and drops (counted in `stats`). What the switch should
    /// see stays in `b`, in order. `now` is the switch's clock, for
    /// learning.
    ///
    /// On a port that carries one tunnel with one VNI (the usual underlay),
    /// a frame is first tested for being that tunnel's packet, with the
    /// outer checks and the tunnel header only ([`HostPort::to_sole`]);
    /// every other frame goes through [`HostPort::classify`].
    #[inline(never)]
    pub fn demux(&self, b: &mut Burst, stats: &QueueStats, now: u32, dec: &mut Decapped) {
        let sole = self.sole_tunnel();
        let mut keep = Burst::new();
        for m in b.drain(..) {
            if let Some((t, vni)) = sole {
                if let Some((o, hlen)) = self.to_sole(t, vni, m.data()) {
                    self.strip(m, &o, 0, t, None, hlen, stats, now, dec);
                    continue;
                }
            }
            match self.classify(m.data()) {
                Verdict::Switch => keep.push(m),
                Verdict::Host { also_switch } => {
                    if also_switch {
                        if let Some(c) = m.try_clone() {
                            keep.push(c);
                        }
                    }
                    // A full ring loses the frame for the host only.
                    if self.to_host.push(m).is_err() {
                        stats.drop_one(DropReason::HandoffFull);
                    }
                }
                Verdict::Tunnel(o) => self.decap(m, &o, stats, now, dec),
                Verdict::Drop(r) => stats.drop_one(r),
            }
        }
        *b = keep;
    }

    #[inline]
    fn decap(&self, m: Mbuf, o: &tunnel::Outer, stats: &QueueStats, now: u32, dec: &mut Decapped) {
        let end = o.payload_offset + o.payload_len;
        let Some(payload) = m.data().get(o.payload_offset..end) else {
            stats.drop_one(DropReason::TunnelHeader);
            return;
        };
        let mut found = None;
        let mut header_ok = false;
        for (i, t) in self.tunnels.iter().enumerate() {
            if t.dst_port != o.dst_port {
                continue;
            }
            let Ok((vni, hlen)) = t.kind.vni(payload) else {
                continue;
            };
            header_ok = true;
            if t.local_ip != o.dst_ip {
                continue;
            }
            if let Some(vlan) = t.vnis.vlan_of(vni) {
                found = Some((i, t, vlan, hlen));
                break;
            }
        }
        let Some((index, t, vlan, hlen)) = found else {
            stats.drop_one(if header_ok {
                DropReason::TunnelVni
            } else {
                DropReason::TunnelHeader
            });
            return;
        };
        self.strip(m, o, index, t, vlan, hlen, stats, now, dec);
    }

    /// Decapsulates `m`, a packet of tunnel `t` (`index` in the port's
    /// list) whose outer headers `o` and tunnel header of `hlen` bytes are
    /// checked, for bridge VLAN `vlan` (None: as it comes), if it comes
    /// from one of the tunnel's remotes; learns the inner source against
    /// that remote.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn strip(
        &self,
        mut m: Mbuf,
        o: &tunnel::Outer,
        index: usize,
        t: &TunnelShared,
        vlan: Option<u16>,
        hlen: usize,
        stats: &QueueStats,
        now: u32,
        dec: &mut Decapped,
    ) {
        let end = o.payload_offset + o.payload_len;
        let Some(remote) = t.remote_index(o.src_ip) else {
            stats.drop_one(DropReason::TunnelRemote);
            return;
        };
        // Ethernet padding after the UDP payload goes, then the outer headers.
        let pad = m.len() - end;
        m.trim(pad);
        m.adj(o.payload_offset + hlen);
        if m.len() < 14 {
            stats.drop_one(DropReason::TunnelHeader);
            return;
        }
        let d = m.data();
        let Some(src) = d
            .get(6..)
            .and_then(|s| s.first_chunk::<6>())
            .map(|a| MacAddr(*a))
        else {
            stats.drop_one(DropReason::TunnelHeader);
            return;
        };
        let key_vlan = match vlan {
            Some(v) => v,
            None => tag_of(d).unwrap_or(0),
        };
        if let Some(v) = vlan {
            if tag_of(m.data()).is_some() {
                // A tagged frame inside a VNI that stands for one VLAN.
                stats.drop_one(DropReason::VlanFiltered);
                return;
            }
            if push_tag(&mut m, VlanId(v)).is_err() {
                stats.drop_one(DropReason::NoBuffers);
                return;
            }
        }
        let key = FdbKey::new(VlanId(key_vlan), src);
        let learned = (key.raw(), index as u16, remote as u16);
        if src.is_unicast() && learned != dec.learned {
            // A refusal (table full, rate) only means replies flood.
            let _ = t.fdb.view().learn_key(key, PortId(remote as u16), now);
            dec.learned = learned;
        }
        dec.push(index, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkerId;
    use crate::mempool::Mempool;
    use crate::testutil::{burst_of, eth_frame, mac, vlan_frame};

    /// One pool for these tests: a process has at most
    /// [`crate::mempool::MAX_POOLS`], and pools live for good.
    fn pool() -> &'static Mempool {
        static POOL: std::sync::OnceLock<&'static Mempool> = std::sync::OnceLock::new();
        POOL.get_or_init(|| Mempool::for_tests(1024))
    }

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

    #[test]
    fn vlan_maps_go_both_ways() {
        let v = Vnis::ByVlan(vec![(10, 5010), (20, 5020)]);
        assert_eq!(v.of_vlan(10), Some(5010));
        assert_eq!(v.of_vlan(30), None);
        assert_eq!(v.vlan_of(5020), Some(Some(20)));
        assert_eq!(v.vlan_of(5030), None);
        let s = Vnis::Single(7);
        assert_eq!(s.of_vlan(99), Some(7));
        assert_eq!(s.vlan_of(7), Some(None));
        assert_eq!(s.vlan_of(8), None);
    }

    /// One side of a tunnel: weir at `me` (host MAC `mac(me_n)`), remotes
    /// `remotes`, its underlay's entry, its tunnel and what its underlay
    /// demultiplexes with.
    struct Side {
        underlay: Arc<PortEntry>,
        tunnel: Arc<TunnelShared>,
        host: HostPort,
        port: TunnelPort,
        stats: Arc<QueueStats>,
        under_stats: QueueStats,
    }

    fn side(me: Ipv4Addr, me_n: u32, remotes: &[(Ipv4Addr, u32)], vnis: Vnis, mtu: usize) -> Side {
        let underlay = Arc::new(PortEntry::new(PortId(0), "uplink", None, WorkerId(0)));
        let tunnel = TunnelShared::new(
            "vx0",
            PortId(1),
            TunnelKind::Vxlan,
            4789,
            me,
            remotes.iter().map(|r| r.0).collect(),
            vnis,
            &FdbConfig::default(),
        );
        tunnel.publish(TunnelState::new(
            Some(Arc::clone(&underlay)),
            remotes
                .iter()
                .map(|&(ip, n)| Remote {
                    ip,
                    header: (n != 0).then(|| {
                        OuterHeader::new(TunnelKind::Vxlan, mac(me_n), mac(n), me, ip, 4789)
                    }),
                })
                .collect(),
            mtu - tunnel::MTU_OVERHEAD,
        ));
        let stats = Arc::new(QueueStats::default());
        Side {
            port: tunnel.port(0, Arc::clone(&stats)),
            host: HostPort {
                mac: mac(me_n),
                v4: vec![me],
                v6: Vec::new(),
                bridged: false,
                to_host: Arc::new(Ring::new(16)),
                tunnels: vec![Arc::clone(&tunnel)],
            },
            underlay,
            tunnel,
            stats,
            under_stats: QueueStats::default(),
        }
    }

    /// What `s` put on its underlay.
    fn sent(s: &Side) -> Burst {
        let mut b = Burst::new();
        s.underlay.take_handoff(&mut b, MAX_BURST);
        b
    }

    /// `s` receives `b` on its underlay; returns what is left for the
    /// switch and what it decapsulated for its tunnel port.
    fn receive(s: &mut Side, mut b: Burst) -> (Burst, Burst) {
        let mut dec = Decapped::default();
        s.host.demux(&mut b, &s.under_stats, 1, &mut dec);
        let mut inner = Burst::new();
        if let Some(k) = dec.take_next(&mut inner) {
            assert_eq!(k, 0, "the one tunnel");
        }
        assert!(dec.is_empty());
        (b, inner)
    }

    #[test]
    fn a_frame_crosses_a_tunnel_byte_exact_and_its_source_is_learned_against_the_remote() {
        let pool = pool();
        let mut a = side(A, 1, &[(B, 2)], Vnis::Single(5000), 1500);
        let mut b = side(B, 2, &[(A, 1)], Vnis::Single(5000), 1500);
        let frame = eth_frame(MacAddr::BROADCAST, mac(0x10), 0x0800, 100);
        let mut out = burst_of(pool, std::slice::from_ref(&frame));
        assert_eq!(a.port.tx_burst(&mut out), 1);
        let wire = sent(&a);
        assert_eq!(wire.len(), 1);
        assert_eq!(wire[0].len(), frame.len() + tunnel::OUTER_LEN);
        let (rest, inner) = receive(&mut b, wire);
        assert!(rest.is_empty());
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].data(), &frame[..]);
        assert_eq!(b.tunnel.fdb.lookup(VlanId(0), mac(0x10)), Some(PortId(0)));
        assert_eq!(b.under_stats.snapshot().total_drops(), 0);
        // And back: a reply to the learned station goes to its remote only.
        let reply = eth_frame(mac(0x10), mac(0x20), 0x0800, 60);
        let mut out = burst_of(pool, std::slice::from_ref(&reply));
        b.port.tx_burst(&mut out);
        let (_, inner) = receive(&mut a, sent(&b));
        assert_eq!(inner[0].data(), &reply[..]);
    }

    #[test]
    fn unknown_destinations_are_replicated_to_every_remote_and_known_ones_go_to_one() {
        let pool = pool();
        let mut a = side(A, 1, &[(B, 2), (C, 3)], Vnis::Single(1), 1500);
        let mut out = burst_of(pool, &[eth_frame(mac(0x30), mac(0x10), 0x0800, 60)]);
        a.port.tx_burst(&mut out);
        let wire = sent(&a);
        let dests: Vec<[u8; 4]> = wire
            .iter()
            .map(|m| m.data()[30..34].try_into().unwrap())
            .collect();
        assert_eq!(dests, vec![B.octets(), C.octets()]);
        a.tunnel
            .fdb
            .add_static(VlanId(0), mac(0x30), PortId(1))
            .unwrap();
        let mut out = burst_of(pool, &[eth_frame(mac(0x30), mac(0x10), 0x0800, 60)]);
        a.port.tx_burst(&mut out);
        let wire = sent(&a);
        assert_eq!(wire.len(), 1);
        assert_eq!(&wire[0].data()[30..34], &C.octets());
    }

    /// Gives side `s` (weir at `me`, MAC `mac(me_n)`) the flood list
    /// `remotes`, published as the control plane does; the slots freed are
    /// flushed at once (no worker runs here). Returns them.
    fn change_remotes(
        s: &mut Side,
        me: Ipv4Addr,
        me_n: u32,
        remotes: &[(Ipv4Addr, u32)],
    ) -> Vec<usize> {
        let ips: Vec<Ipv4Addr> = remotes.iter().map(|r| r.0).collect();
        let gone = s.tunnel.set_remotes(&ips).unwrap();
        let by_slot = s
            .tunnel
            .remote_slots()
            .iter()
            .map(
                |slot| match slot.and_then(|ip| remotes.iter().find(|r| r.0 == ip)) {
                    Some(&(ip, n)) => Remote {
                        ip,
                        header: Some(OuterHeader::new(
                            TunnelKind::Vxlan,
                            mac(me_n),
                            mac(n),
                            me,
                            ip,
                            4789,
                        )),
                    },
                    None => Remote {
                        ip: Ipv4Addr::UNSPECIFIED,
                        header: None,
                    },
                },
            )
            .collect();
        s.tunnel.publish(TunnelState::new(
            Some(Arc::clone(&s.underlay)),
            by_slot,
            1500 - tunnel::MTU_OVERHEAD,
        ));
        for &i in &gone {
            s.tunnel.fdb.flush_port(PortId(i as u16));
        }
        gone
    }

    #[test]
    fn a_changed_flood_list_keeps_the_remotes_that_stay_and_the_stations_behind_them() {
        let pool = pool();
        const D: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 4);
        const E: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 5);
        let mut a = side(A, 1, &[(B, 2), (C, 3)], Vnis::Single(1), 1500);
        let [mut b, mut c, mut d] =
            [(B, 2), (C, 3), (D, 4)].map(|(ip, n)| side(ip, n, &[(A, 1)], Vnis::Single(1), 1500));
        // A station behind each of B, C and D sends to a.
        let from = |s: &mut Side, station: u32| {
            let mut out = burst_of(
                pool,
                &[eth_frame(MacAddr::BROADCAST, mac(station), 0x0800, 60)],
            );
            s.port.tx_burst(&mut out);
            sent(s)
        };
        for (s, station) in [(&mut b, 0x20), (&mut c, 0x30)] {
            let (_, inner) = receive(&mut a, from(s, station));
            assert_eq!(inner.len(), 1);
        }
        let lookup = |a: &Side, n: u32| a.tunnel.fdb.lookup(VlanId(0), mac(n));
        assert_eq!(
            (lookup(&a, 0x20), lookup(&a, 0x30)),
            (Some(PortId(0)), Some(PortId(1)))
        );

        // B leaves, D joins: C keeps its slot and its station; B's slot is
        // left free and its station forgotten.
        assert_eq!(change_remotes(&mut a, A, 1, &[(C, 3), (D, 4)]), vec![0]);
        assert_eq!(a.tunnel.remote_slots(), vec![None, Some(C), Some(D)]);
        assert_eq!(
            (lookup(&a, 0x20), lookup(&a, 0x30)),
            (None, Some(PortId(1)))
        );
        assert_eq!(a.tunnel.remote_index(D), Some(2));
        assert_eq!(a.tunnel.remote_ip(0), None);
        // Flooded to C and D only, nothing counted for the free slot.
        let mut out = burst_of(
            pool,
            &[eth_frame(MacAddr::BROADCAST, mac(0x10), 0x0800, 60)],
        );
        a.port.tx_burst(&mut out);
        let dests: Vec<[u8; 4]> = sent(&a)
            .iter()
            .map(|m| m.data()[30..34].try_into().unwrap())
            .collect();
        assert_eq!(dests, vec![C.octets(), D.octets()]);
        assert_eq!(a.stats.snapshot().total_drops(), 0);
        // B's packets are no longer taken; D's are, learned in its slot.
        let (_, inner) = receive(&mut a, from(&mut b, 0x20));
        assert!(inner.is_empty());
        assert_eq!(a.under_stats.drops(DropReason::TunnelRemote), 1);
        let (_, inner) = receive(&mut a, from(&mut d, 0x40));
        assert_eq!(inner.len(), 1);
        assert_eq!(lookup(&a, 0x40), Some(PortId(2)));
        // A known station behind C still goes to C alone.
        let mut out = burst_of(pool, &[eth_frame(mac(0x30), mac(0x10), 0x0800, 60)]);
        a.port.tx_burst(&mut out);
        let wire = sent(&a);
        assert_eq!(wire.len(), 1);
        assert_eq!(&wire[0].data()[30..34], &C.octets());

        // The next remote takes the free slot; the others stay.
        assert!(change_remotes(&mut a, A, 1, &[(C, 3), (D, 4), (E, 5)]).is_empty());
        assert_eq!(a.tunnel.remote_slots(), vec![Some(E), Some(C), Some(D)]);
        assert_eq!(
            (lookup(&a, 0x30), lookup(&a, 0x40)),
            (Some(PortId(1)), Some(PortId(2)))
        );
        // Down to one remote: every frame goes to it without a lookup, even
        // one whose station was behind another.
        assert_eq!(change_remotes(&mut a, A, 1, &[(D, 4)]), vec![0, 1]);
        let mut out = burst_of(pool, &[eth_frame(mac(0x30), mac(0x10), 0x0800, 60)]);
        a.port.tx_burst(&mut out);
        let wire = sent(&a);
        assert_eq!(wire.len(), 1);
        assert_eq!(&wire[0].data()[30..34], &D.octets());
    }

    #[test]
    fn vlans_map_to_vnis_untagged_inside_and_back() {
        let pool = pool();
        let map = || Vnis::ByVlan(vec![(10, 5010), (20, 5020)]);
        let mut a = side(A, 1, &[(B, 2)], map(), 1500);
        let mut b = side(B, 2, &[(A, 1)], map(), 1500);
        let tagged = vlan_frame(MacAddr::BROADCAST, mac(0x10), VlanId(20), 80);
        let mut out = burst_of(
            pool,
            &[
                tagged.clone(),
                vlan_frame(MacAddr::BROADCAST, mac(0x10), VlanId(30), 80),
            ],
        );
        a.port.tx_burst(&mut out);
        assert_eq!(
            a.stats.drops(DropReason::VlanFiltered),
            1,
            "VLAN 30 maps to no VNI"
        );
        let wire = sent(&a);
        assert_eq!(wire.len(), 1);
        let d = wire[0].data();
        let vxlan = &d[tunnel::OUTER_LEN - 8..tunnel::OUTER_LEN];
        assert_eq!(&vxlan[4..7], &5020u32.to_be_bytes()[1..]);
        assert_ne!(
            &d[tunnel::OUTER_LEN + 12..tunnel::OUTER_LEN + 14],
            &[0x81, 0x00],
            "untagged inside"
        );
        let (_, inner) = receive(&mut b, wire);
        assert_eq!(
            inner[0].data(),
            &tagged[..],
            "tag 20 back on the other side"
        );
        assert_eq!(b.tunnel.fdb.lookup(VlanId(20), mac(0x10)), Some(PortId(0)));
    }

    /// What a host port made of one frame: left for the switch, taken for
    /// the host stack, decapsulated (bytes each), and the drops.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        switch: Vec<Vec<u8>>,
        host: Vec<Vec<u8>>,
        decapped: Vec<Vec<u8>>,
        /// The tunnel (index) of each run of decapsulated frames.
        tunnels: Vec<usize>,
        stats: String,
    }

    fn outcome(host: &HostPort, frame: &[u8]) -> Outcome {
        let stats = QueueStats::default();
        let mut b = burst_of(pool(), &[frame.to_vec()]);
        let mut dec = Decapped::default();
        host.demux(&mut b, &stats, 1, &mut dec);
        let mut inner = Burst::new();
        let mut tunnels = Vec::new();
        while let Some(k) = dec.take_next(&mut inner) {
            tunnels.push(k);
        }
        let bytes = |b: &Burst| b.iter().map(|m| m.data().to_vec()).collect::<Vec<_>>();
        let mut to_host = Vec::new();
        while let Some(m) = host.to_host.pop() {
            to_host.push(m.data().to_vec());
        }
        Outcome {
            switch: bytes(&b),
            host: to_host,
            decapped: bytes(&inner),
            tunnels,
            stats: format!("{:?}", stats.snapshot()),
        }
    }

    #[test]
    fn the_sole_tunnel_way_decides_as_the_general_one() {
        let mut a = side(A, 1, &[(B, 2)], Vnis::Single(5000), 1500);
        let b = side(B, 2, &[(A, 1), (C, 3)], Vnis::Single(5000), 1500);
        assert!(b.host.sole_tunnel().is_some());
        // The same port with a second tunnel, on another UDP port: every
        // frame takes the general way, and this test's reach that tunnel
        // by no path.
        let other = TunnelShared::new(
            "gnv0",
            PortId(2),
            TunnelKind::Geneve,
            6081,
            B,
            vec![A],
            Vnis::Single(5000),
            &FdbConfig::default(),
        );
        let general = HostPort {
            mac: b.host.mac,
            v4: b.host.v4.clone(),
            v6: Vec::new(),
            bridged: b.host.bridged,
            to_host: Arc::new(Ring::new(16)),
            tunnels: vec![Arc::clone(&b.tunnel), other],
        };
        assert!(general.sole_tunnel().is_none());
        let frame = eth_frame(mac(0x11), mac(0x10), 0x0800, 100);
        let mut out = burst_of(pool(), std::slice::from_ref(&frame));
        a.port.tx_burst(&mut out);
        let good = sent(&a)[0].data().to_vec();
        let crossing = outcome(&b.host, &good);
        assert_eq!(
            crossing.decapped,
            vec![frame.clone()],
            "the good packet crosses"
        );
        let mut rng = crate::testutil::XorShift(0x5eed_7e57_5eed_7e57);
        let mut variants = Vec::new();
        // Every bit of the outer headers and the inner Ethernet header.
        for bit in 0..(tunnel::OUTER_LEN + 14) * 8 {
            let mut f = good.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            variants.push(f);
        }
        // Every length, and random bytes in random places.
        variants.extend((0..good.len()).map(|n| good[..n].to_vec()));
        for _ in 0..5_000 {
            let mut f = good.clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let i = (rng.next_u64() % (tunnel::OUTER_LEN as u64 + 14)) as usize;
                f[i] = rng.next_u64() as u8;
            }
            variants.push(f);
        }
        // Each of those that changed the IPv4 header again with its
        // checksum right, so that they get past it.
        let mended: Vec<Vec<u8>> = variants
            .iter()
            .filter(|f| f.len() >= 34 && f[14..34] != good[14..34])
            .map(|f| {
                let mut f = f.clone();
                f[24..26].fill(0);
                let sum = crate::wire::ipv4::ones_complement_sum(&f[14..34]);
                f[24..26].copy_from_slice(&(!sum).to_be_bytes());
                f
            })
            .collect();
        variants.extend(mended);
        // From the other remote and from a host that is none, each with
        // its checksum right; to weir's MAC as a group; padded.
        for from in [C, Ipv4Addr::new(192, 0, 2, 99)] {
            let mut f = good.clone();
            f[26..30].copy_from_slice(&from.octets());
            f[24..26].fill(0);
            let sum = crate::wire::ipv4::ones_complement_sum(&f[14..34]);
            f[24..26].copy_from_slice(&(!sum).to_be_bytes());
            variants.push(f);
        }
        let mut f = good.clone();
        f[..6].copy_from_slice(&[0x01, 0, 0x5e, 0, 0, 1]);
        variants.push(f);
        let mut f = good.clone();
        f.extend_from_slice(&[0; 8]);
        variants.push(f);
        let mut crossed = 0;
        for f in &variants {
            let sole = outcome(&b.host, f);
            crossed += usize::from(!sole.decapped.is_empty());
            assert_eq!(sole, outcome(&general, f), "{f:02x?}");
        }
        assert!(crossed > 100, "{crossed} variants crossed");
    }

    #[test]
    fn what_does_not_belong_is_dropped_and_counted() {
        let pool = pool();
        let mut a = side(A, 1, &[(B, 2)], Vnis::Single(5000), 1500);
        let mut wrong_vni = side(B, 2, &[(A, 1)], Vnis::Single(6000), 1500);
        let mut stranger = side(B, 2, &[(C, 3)], Vnis::Single(5000), 1500);
        let frame = eth_frame(MacAddr::BROADCAST, mac(0x10), 0x0800, 100);
        let send = |a: &mut Side| {
            let mut out = burst_of(pool, std::slice::from_ref(&frame));
            a.port.tx_burst(&mut out);
            sent(a)
        };
        let (rest, inner) = receive(&mut wrong_vni, send(&mut a));
        assert!(rest.is_empty() && inner.is_empty());
        assert_eq!(wrong_vni.under_stats.drops(DropReason::TunnelVni), 1);
        let (rest, inner) = receive(&mut stranger, send(&mut a));
        assert!(rest.is_empty() && inner.is_empty());
        assert_eq!(stranger.under_stats.drops(DropReason::TunnelRemote), 1);
        // To weir's MAC but another address: not weir's, not switched.
        let mut wire = send(&mut a);
        let mut to_c = side(C, 2, &[(A, 1)], Vnis::Single(5000), 1500);
        let (rest, inner) = receive(&mut to_c, std::mem::take(&mut wire));
        assert!(rest.is_empty() && inner.is_empty());
        assert_eq!(to_c.under_stats.drops(DropReason::NotLocal), 1);
        // A bad outer checksum.
        let mut wire = send(&mut a);
        wire[0].data_mut()[24] ^= 0xff;
        let (_, inner) = receive(&mut stranger, wire);
        assert!(inner.is_empty());
        assert_eq!(stranger.under_stats.drops(DropReason::TunnelHeader), 1);
        // Too large for the underlay; and a remote with no MAC yet.
        let mut small = side(A, 1, &[(B, 2)], Vnis::Single(5000), 100);
        let mut out = burst_of(pool, std::slice::from_ref(&frame));
        small.port.tx_burst(&mut out);
        assert_eq!(small.stats.drops(DropReason::TunnelMtu), 1);
        let mut unresolved = side(A, 1, &[(B, 0)], Vnis::Single(5000), 1500);
        let mut out = burst_of(pool, std::slice::from_ref(&frame));
        unresolved.port.tx_burst(&mut out);
        assert_eq!(unresolved.stats.drops(DropReason::TunnelUnresolved), 1);
        assert!(sent(&unresolved).is_empty());
    }

    #[test]
    fn host_traffic_goes_to_the_host_ring_and_the_rest_to_the_switch() {
        let pool = pool();
        let mut s = side(A, 1, &[(B, 2)], Vnis::Single(1), 1500);
        let arp = eth_frame(MacAddr::BROADCAST, mac(9), 0x0806, 28);
        let other = eth_frame(mac(0x44), mac(9), 0x0800, 60);
        let (rest, _) = receive(&mut s, burst_of(pool, &[arp.clone(), other.clone()]));
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].data(), &other[..]);
        assert_eq!(s.host.to_host.pop().unwrap().data(), &arp[..]);
        // On a bridged underlay a broadcast goes to both.
        s.host.bridged = true;
        let (rest, _) = receive(&mut s, burst_of(pool, std::slice::from_ref(&arp)));
        assert_eq!(rest.len(), 1);
        assert!(s.host.to_host.pop().is_some());
        // Garbage of every length never panics.
        let mut wire = {
            let mut out = burst_of(
                pool,
                &[eth_frame(MacAddr::BROADCAST, mac(0x10), 0x0800, 100)],
            );
            let mut a = side(B, 2, &[(A, 1)], Vnis::Single(1), 1500);
            a.port.tx_burst(&mut out);
            sent(&a)
        };
        let full = wire[0].data().to_vec();
        wire.clear();
        for n in 0..full.len() {
            let _ = receive(&mut s, burst_of(pool, &[full[..n].to_vec()]));
        }
    }
}
