//! A frame's whole way from one bridge to another, for the `patch-path` and
//! `vxlan-path` cases of `switch-insns` (`benches/callgrind.sh`), and for
//! the guest-to-guest cases of `vring-insns` (`benches/vring-callgrind.sh`),
//! which put [`Path::carry`] between a guest's TX and RX rings.
//!
//! Two bridges, each switching between a station port and a port that joins
//! it to the other bridge, as `weir bench --features patch|vxlan` builds
//! them:
//!
//! - [`PathCase::Bridge`]: bridge A alone, from its station port to its
//!   joining port: plain L2, one switching.
//! - [`PathCase::Patch`]: the joining ports are a patch pair. A burst is
//!   switched on bridge A, carried across, and switched on bridge B.
//! - [`PathCase::Vxlan`]: the joining ports are VXLAN tunnel ports over two
//!   underlay ports. A burst is switched on bridge A, encapsulated by tunnel
//!   A ([`TunnelShared::encap_burst`]: VNI, MTU check, remote lookup, flow
//!   hash, outer headers), carried across, demultiplexed and decapsulated on
//!   underlay B ([`HostPort::demux`]: weir's MAC and address, outer checks,
//!   VNI, remote, learning), and switched on bridge B: what a worker does
//!   with it in `send_tunnel` and `switch_decapped`.
//! - [`PathCase::Vxlan3`]: the same, the tunnels' flood lists naming a
//!   third host too, as in a three-host overlay: with more than one remote,
//!   encapsulation looks each frame's remote up.
//!
//! The difference of the last two is what encapsulation and decapsulation
//! add to a frame's way; the `unicast` case is one bridge's switching
//! alone. Carrying a burst across (and back to the input, to reuse the
//! buffers) goes through [`crate::recycle`], which `callgrind.sh`
//! subtracts, as a wire would be.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dataplane::ids::{BridgeId, MacAddr, PortId, VlanId, WorkerId};
use dataplane::ring::Ring;
use dataplane::switch::{
    Bridge, Fdb, FdbConfig, Forwarder, Learn, PortEntry, Switch, SwitchTables,
};
use dataplane::tunnel::{Decapped, HostPort, Remote, TunnelShared, TunnelState, Vnis};
use dataplane::wire::tunnel::{OuterHeader, TunnelKind, MTU_OVERHEAD};
use dataplane::{Burst, QueueStats};

use crate::{recycle, station_mac, write_frame, BURST, NOW_SECS, TEMPLATE_BYTES};

/// How the two bridges are joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathCase {
    /// Not at all: bridge A alone switches the burst from its station port
    /// to its joining port (plain L2, the baseline of both others).
    Bridge,
    /// A patch pair.
    Patch,
    /// A VXLAN tunnel each, over a patch pair of underlay ports, each
    /// tunnel with the other as its only remote (two hosts).
    Vxlan,
    /// The same, each tunnel also listing a third host as a remote (three
    /// hosts): the flood list has two, so encapsulation looks each frame's
    /// remote up in the tunnel's table.
    Vxlan3,
}

/// The VNI of the tunnel.
const VNI: u32 = 5000;
/// The ports: bridge A's station port and joining port, bridge B's
/// joining port and station port, the underlay ports.
const A_STATION: u16 = 0;
const A_JOIN: u16 = 1;
const B_JOIN: u16 = 2;
const B_STATION: u16 = 3;
const A_UNDER: u16 = 4;
const B_UNDER: u16 = 5;
/// The underlay addresses and MACs.
const A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const A_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const B_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x02]);
/// The third host of [`PathCase::Vxlan3`] (listed, never sent to).
const C_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const C_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x03]);

/// The two bridges, their joining ports and one burst of frames.
pub struct PathRig {
    /// The way across.
    pub path: Path,
    burst: Burst,
}

/// The two bridges and their joining ports: the way a burst takes
/// ([`Path::carry`]).
pub struct Path {
    case: PathCase,
    /// The switch (kept alive for the tables).
    pub switch: Arc<Switch>,
    tables: Arc<SwitchTables>,
    fwd: Forwarder,
    stats: QueueStats,
    tunnel_a: Arc<TunnelShared>,
    host_b: Arc<HostPort>,
    wire: Burst,
    flows: u32,
}

impl std::fmt::Debug for PathRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathRig")
            .field("case", &self.path.case)
            .finish()
    }
}

impl Path {
    /// Builds the bridges and ports and learns `flows` station pairs (at
    /// least one) everywhere they will be looked up: station `f` behind
    /// bridge A, station `1000 + f` behind bridge B ([`Path::frame`]).
    ///
    /// # Panics
    /// If a table refuses a station.
    pub fn new(case: PathCase, flows: u32) -> Path {
        let flows = flows.max(1);
        let fdb_cfg = FdbConfig::default();
        let switch = Switch::new();
        let kind = TunnelKind::Vxlan;
        let tunnel = |id: u16, under: &Arc<PortEntry>, me, peer, me_mac, peer_mac| {
            let mut remotes = vec![(peer, peer_mac)];
            if case == PathCase::Vxlan3 {
                remotes.push((C_IP, C_MAC));
            }
            let t = TunnelShared::new(
                "vx",
                PortId(id),
                kind,
                kind.default_port(),
                me,
                remotes.iter().map(|r| r.0).collect(),
                Vnis::Single(VNI),
                &fdb_cfg,
            );
            t.publish(TunnelState::new(
                Some(Arc::clone(under)),
                remotes
                    .iter()
                    .map(|&(ip, mac)| Remote {
                        ip,
                        header: Some(OuterHeader::new(
                            kind,
                            me_mac,
                            mac,
                            me,
                            ip,
                            kind.default_port(),
                        )),
                    })
                    .collect(),
                1500 - MTU_OVERHEAD,
            ));
            t
        };
        let entry = |id: u16, bridge: Option<u16>| {
            let e = PortEntry::new(
                PortId(id),
                &format!("p{id}"),
                bridge.map(BridgeId),
                WorkerId(0),
            );
            // Relaxed: set up before anything reads the tables.
            e.link_up.store(true, Ordering::Relaxed);
            Arc::new(e)
        };
        let (under_a, under_b) = (entry(A_UNDER, None), entry(B_UNDER, None));
        let tunnel_a = tunnel(A_JOIN, &under_a, A_IP, B_IP, A_MAC, B_MAC);
        let tunnel_b = tunnel(B_JOIN, &under_b, B_IP, A_IP, B_MAC, A_MAC);
        let host_b = Arc::new(HostPort {
            mac: B_MAC,
            v4: vec![B_IP],
            v6: Vec::new(),
            bridged: false,
            to_host: Arc::new(Ring::new(16)),
            tunnels: vec![Arc::clone(&tunnel_b)],
        });
        switch.update(|t| {
            for (b, ports) in [[A_STATION, A_JOIN], [B_JOIN, B_STATION]]
                .iter()
                .enumerate()
            {
                t.bridges.push(Some(Bridge {
                    id: BridgeId(b as u16),
                    name: format!("br{b}").into(),
                    ports: ports.iter().copied().map(PortId).collect(),
                    fdb: Arc::new(Fdb::new(&fdb_cfg)),
                }));
            }
            for (id, bridge) in [(A_STATION, 0), (A_JOIN, 0), (B_JOIN, 1), (B_STATION, 1)] {
                t.ports.push(Some(entry(id, Some(bridge))));
            }
            t.ports.push(Some(under_a));
            t.ports.push(Some(under_b));
            if matches!(case, PathCase::Vxlan | PathCase::Vxlan3) {
                t.set_host(PortId(B_UNDER), Some(Arc::clone(&host_b)));
            }
        });
        let tables = switch.load();
        let fdb = |b: usize| &tables.bridges[b].as_ref().expect("bridge").fdb;
        let learn = |fdb: &Fdb, mac: MacAddr, port: u16| {
            let r = fdb.learn(VlanId(0), mac, PortId(port), NOW_SECS);
            assert_eq!(r, Learn::Learned, "pre-learning {mac}");
        };
        for i in 0..flows {
            let (src, dst) = (station_mac(i), station_mac(1000 + i));
            learn(fdb(0), src, A_STATION);
            learn(fdb(0), dst, A_JOIN);
            learn(fdb(1), src, B_JOIN);
            learn(fdb(1), dst, B_STATION);
            // The "port" of a tunnel's entry is the remote's index.
            learn(&tunnel_a.fdb, dst, 0);
            learn(&tunnel_b.fdb, src, 0);
        }
        let mut fwd = Forwarder::new();
        fwd.prepare(&tables);
        Path {
            case,
            switch,
            tables,
            fwd,
            stats: QueueStats::default(),
            tunnel_a,
            host_b,
            wire: Burst::new(),
            flows,
        }
    }

    /// Frame `i` of a burst: from station `i % flows` behind bridge A to
    /// station `1000 + i % flows` behind bridge B, the switch cases'
    /// 64-byte IPv4/TCP frame (`write_frame`) of flow `i % flows`.
    pub fn frame(&self, i: u32) -> [u8; TEMPLATE_BYTES] {
        let f = i % self.flows;
        write_frame(station_mac(1000 + f), station_mac(f), None, f)
    }

    /// Frames dropped or refused anywhere so far (0 unless the rig is
    /// broken).
    pub fn drops(&self) -> u64 {
        self.stats.snapshot().total_drops() + self.stats.tx_errors.get()
    }

    /// Takes `burst` (frames as [`Path::frame`] builds them) as received on
    /// bridge A's station port across, and puts what reaches the far end
    /// back into it: bridge A's joining port for [`PathCase::Bridge`],
    /// bridge B's station port for the others. Returns the number of
    /// frames taken.
    #[inline]
    pub fn carry(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len();
        let (t, stats, wire) = (&*self.tables, &self.stats, &mut self.wire);
        self.fwd
            .process(t, PortId(A_STATION), burst, NOW_SECS, stats);
        match self.case {
            PathCase::Bridge => {}
            PathCase::Patch => {
                self.fwd.drain(|_, out| recycle(wire, out));
                self.fwd.process(t, PortId(B_JOIN), wire, NOW_SECS, stats);
            }
            PathCase::Vxlan | PathCase::Vxlan3 => {
                let tunnel = &self.tunnel_a;
                self.fwd.drain(|_, out| {
                    let done = tunnel.encap_burst(out, stats, |_, o| recycle(wire, o));
                    stats.tx_errors.add(done.failed);
                });
                let mut dec = Decapped::default();
                self.host_b.demux(wire, stats, NOW_SECS, &mut dec);
                let mut inner = Burst::new();
                if dec.take_next(&mut inner).is_some() {
                    self.fwd
                        .process(t, PortId(B_JOIN), &mut inner, NOW_SECS, stats);
                }
                // Whatever demux left for the switch (nothing here).
                stats.tx_errors.add(wire.len() as u64);
                wire.clear();
            }
        }
        self.fwd.drain(|_, out| recycle(burst, out));
        n
    }
}

impl PathRig {
    /// The [`Path`] and a burst of its frames ([`Path::frame`]) from a pool
    /// of its own.
    ///
    /// # Panics
    /// If the pool cannot be created or a table refuses a station.
    pub fn new(case: PathCase, flows: u32) -> PathRig {
        let path = Path::new(case, flows);
        let pool = crate::rig_pool("path");
        let burst = (0..BURST as u32)
            .map(|i| {
                let mut m = pool.alloc().expect("pool sized for a burst");
                m.extend_from_slice(&path.frame(i)).expect("frame fits");
                m
            })
            .collect();
        PathRig { path, burst }
    }

    /// Frames dropped or refused anywhere so far (0 unless the rig is
    /// broken).
    pub fn drops(&self) -> u64 {
        self.path.drops()
    }

    /// Takes the burst across both bridges and back into place. Returns the
    /// number of frames.
    #[inline]
    pub fn step(&mut self) -> usize {
        self.path.carry(&mut self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_takes_every_frame_across_and_back_unchanged() {
        for case in [
            PathCase::Bridge,
            PathCase::Patch,
            PathCase::Vxlan,
            PathCase::Vxlan3,
        ] {
            let mut rig = PathRig::new(case, 4);
            let before: Vec<Vec<u8>> = rig.burst.iter().map(|m| m.data().to_vec()).collect();
            for _ in 0..10 {
                assert_eq!(rig.step(), BURST);
            }
            let after: Vec<Vec<u8>> = rig.burst.iter().map(|m| m.data().to_vec()).collect();
            assert_eq!(rig.drops(), 0, "{case:?}");
            let (mut b, mut a) = (before, after);
            b.sort();
            a.sort();
            assert_eq!(a, b, "{case:?}: the frames came back as they left");
        }
    }

    #[test]
    fn every_case_carries_a_guests_frames_to_its_rx_ring() {
        use crate::vring::{Layout, VringRig, BURST as VRING_BURST};
        for case in [
            PathCase::Bridge,
            PathCase::Patch,
            PathCase::Vxlan,
            PathCase::Vxlan3,
        ] {
            let mut path = Path::new(case, 4);
            let frames = (0..4).map(|i| path.frame(i).to_vec()).collect();
            let mut rig = VringRig::with_frames(Layout::Single, frames, crate::vring_pool());
            // Laps of the 256-entry rings, and a part of one.
            for _ in 0..20 {
                assert_eq!(
                    rig.step_through(|b| {
                        path.carry(b);
                    }),
                    VRING_BURST,
                    "{case:?}"
                );
            }
            assert_eq!(path.drops(), 0, "{case:?}");
            rig.verify().unwrap_or_else(|e| panic!("{case:?}: {e}"));
        }
    }
}
