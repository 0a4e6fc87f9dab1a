//! Shared set-up for the switch-core benchmarks: a switch with one bridge of
//! `n` in-memory ports, an FDB pre-loaded with `K` stations, and bursts of
//! frames between those stations in a pseudo-random order.
//!
//! Layer: tooling above `dataplane`, `pmd` and `vhost-user`; not part of the
//! dataplane. The vhost-user ring rig is in [`vring`], the VXLAN
//! encapsulation and decapsulation rig in [`tunnel`]. Used
//! by the divan benchmark (`benches/switch.rs`) and by the `switch-insns`
//! binary that `callgrind.sh` runs under valgrind.
//!
//! # What one step measures
//!
//! A [`Rig`] runs one input burst of [`BURST`] frames through
//! [`Forwarder::process`] and [`Forwarder::drain`], exactly as a worker does
//! between `rx_burst` and `tx_burst`. Two ways to feed it:
//!
//! - [`Rig::step_recycled`]: the frames are built once; the drain sink puts the
//!   staged buffers back into the input burst they came from, so no buffer is
//!   allocated or freed (switch cost only; flood copies beyond one burst are
//!   freed).
//! - [`Rig::step_pooled`]: each burst is allocated from the mempool and a
//!   64-byte frame template copied in (what a receive path does), and the sink
//!   is a [`pmd::memport::NullPort`] that frees everything.
//!
//! Station `i` (0-based) has MAC `02:00:00:xx:xx:xx` with `i` in the low bits
//! and is learned on port `i % n`. Burst `b` enters on port `b % n`; each of its
//! frames comes from a station on that port and, for unicast, goes to a station
//! on another port, so every frame takes the learn-refresh and known-unicast
//! paths. Stations are picked by a full-period affine walk, so consecutive
//! frames hit unrelated FDB slots.

#![warn(missing_docs)]
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use dataplane::ids::{BridgeId, MacAddr, PortId, VlanId, WorkerId};
use dataplane::mempool::{HugepagePolicy, MempoolConfig};
use dataplane::switch::{
    acl, Acl, AclRule, Bridge, Fdb, FdbConfig, Forwarder, Learn, PortEntry, PortLimits, PortPolicy,
    PortSecurity, PortVlan, Switch, SwitchTables, VlanMode,
};
use dataplane::wire::ethertype;
use dataplane::{Burst, Mempool, Port, QueueStats, MAX_BURST};
use pmd::memport::NullPort;

pub mod path;
pub mod tunnel;
pub mod vring;

/// Frames per input burst.
pub const BURST: usize = MAX_BURST;

/// Bytes of every frame template (the largest frame built here, a tagged one).
pub const TEMPLATE_BYTES: usize = 64;

/// Length of an untagged frame: the 60-byte Ethernet minimum without FCS.
pub const UNTAGGED_LEN: usize = 60;

/// Length of a tagged frame: 60 bytes plus the 4-byte 802.1Q tag.
pub const TAGGED_LEN: usize = 64;

/// Most frames built for one scenario; larger MAC counts are sampled.
pub const MAX_FRAMES: usize = 65_536;

/// The coarse clock value used for pre-learning and for every burst, so
/// learning always takes the refresh fast path (same port, same second).
pub const NOW_SECS: u32 = 1;

/// Where frames are addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// Known unicast: source learned on the ingress port, destination on
    /// another port.
    Unicast,
    /// Broadcast: flooded to every other port of the bridge.
    Broadcast,
}

/// One benchmark case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Destination kind.
    pub traffic: Traffic,
    /// Number of stations (MACs) pre-learned; a multiple of `n_ports`.
    pub macs: u32,
    /// Ports on the bridge (2..=64).
    pub n_ports: u16,
    /// 802.1Q VLAN the frames are tagged with, if any.
    pub vlan: Option<VlanId>,
    /// Consecutive frames of a burst with the same source and destination (a
    /// few flows per burst, as a VM's TCP streams send them); 1: every frame
    /// its own pair.
    pub pair_run: u32,
    /// VLAN mode of every port; `None`: no VLAN settings (the plain path).
    pub port_vlan: Option<VlanMode>,
    /// Rules of the security group every port applies to what it sends
    /// ([`bench_acl`]); 0: none.
    pub acl_rules: u32,
    /// Port security on every port: its own stations' MACs and the frames'
    /// source address allowed.
    pub security: bool,
    /// Ingress policing and an egress rate on every port, too high to drop
    /// anything (the cost of the token buckets alone).
    pub limits: bool,
    /// Build at least this many frames (at most [`MAX_FRAMES`]). Every frame
    /// has a TCP source port of its own (of 60 000), so this is also the
    /// number of distinct flows the cases cycle through.
    pub min_frames: usize,
}

impl Scenario {
    /// Known unicast on a 4-port bridge, untagged.
    pub fn unicast(macs: u32) -> Scenario {
        Scenario {
            traffic: Traffic::Unicast,
            macs,
            n_ports: 4,
            vlan: None,
            pair_run: 1,
            port_vlan: None,
            acl_rules: 0,
            security: false,
            limits: false,
            min_frames: 0,
        }
    }

    /// Known unicast, untagged, in runs of `run` frames with one source and
    /// destination (a divisor of the burst size).
    pub fn unicast_runs(macs: u32, run: u32) -> Scenario {
        Scenario {
            pair_run: run.max(1),
            ..Scenario::unicast(macs)
        }
    }

    /// Broadcast on a 4-port bridge (each frame goes to the 3 other ports).
    pub fn broadcast(macs: u32) -> Scenario {
        Scenario {
            traffic: Traffic::Broadcast,
            ..Scenario::unicast(macs)
        }
    }

    /// Known unicast on a 4-port bridge, tagged with VLAN 100.
    pub fn tagged(macs: u32) -> Scenario {
        Scenario {
            vlan: Some(VlanId(100)),
            ..Scenario::unicast(macs)
        }
    }

    /// Known unicast between access ports of VLAN 100 on a 4-port bridge:
    /// untagged frames through the feature pipeline, none retagged.
    pub fn access(macs: u32) -> Scenario {
        Scenario {
            port_vlan: Some(VlanMode::Access),
            ..Scenario::unicast(macs)
        }
    }

    /// Known unicast between trunk ports of VLAN 100 on a 4-port bridge:
    /// tagged frames through the feature pipeline, none retagged.
    pub fn trunk(macs: u32) -> Scenario {
        Scenario {
            port_vlan: Some(VlanMode::Trunk),
            ..Scenario::tagged(macs)
        }
    }

    /// Known unicast on a 4-port bridge whose ports apply a security group
    /// of `rules` rules ([`bench_acl`]) to what they send.
    pub fn acl(macs: u32, rules: u32) -> Scenario {
        Scenario {
            acl_rules: rules.max(1),
            ..Scenario::unicast(macs)
        }
    }

    /// [`Scenario::acl`] with more flows than a worker's flow cache holds
    /// (60 000 source ports over [`MAX_FRAMES`] frames), so that every frame
    /// misses it and goes to the classifier.
    pub fn acl_new_flows(macs: u32, rules: u32) -> Scenario {
        Scenario {
            min_frames: MAX_FRAMES,
            ..Scenario::acl(macs, rules)
        }
    }

    /// Known unicast on a 4-port bridge whose ports have port security.
    pub fn secured(macs: u32) -> Scenario {
        Scenario {
            security: true,
            ..Scenario::unicast(macs)
        }
    }

    /// Known unicast on a 4-port bridge whose ports police what they send
    /// and limit what they receive (at rates nothing reaches).
    pub fn limited(macs: u32) -> Scenario {
        Scenario {
            limits: true,
            ..Scenario::unicast(macs)
        }
    }

    /// Known unicast on a 4-port bridge whose ports use every stage: access
    /// VLAN, port security, a security group of 10 rules in, policing and an
    /// egress rate.
    pub fn all_features(macs: u32) -> Scenario {
        Scenario {
            port_vlan: Some(VlanMode::Access),
            acl_rules: 10,
            security: true,
            limits: true,
            ..Scenario::unicast(macs)
        }
    }

    /// The pipeline settings of port `port`, if any.
    pub fn port_policy(&self, port: u16) -> Option<PortPolicy> {
        if self.port_vlan.is_none() && self.acl_rules == 0 && !self.security && !self.limits {
            return None;
        }
        let vlan = match self.port_vlan {
            None => Ok(PortVlan::trunk_all()),
            Some(VlanMode::Access) => PortVlan::new(Some(VlanMode::Access), Some(100), &[]),
            Some(mode) => PortVlan::new(Some(mode), None, &[100]),
        };
        Some(PortPolicy {
            vlan: vlan.expect("benchmark VLAN settings"),
            acl_in: (self.acl_rules > 0).then(|| Arc::new(bench_acl(self.acl_rules))),
            security: self.security.then(|| {
                // Station i is on port i % n_ports.
                let own: Vec<MacAddr> = (u32::from(port)..self.macs)
                    .step_by(usize::from(self.n_ports))
                    .map(station_mac)
                    .collect();
                PortSecurity::new(&own, &[BENCH_SRC_IP.into()]).expect("benchmark port security")
            }),
            limits: if self.limits {
                // 100 Gbit/s: no benchmark frame is ever over it.
                PortLimits::new(Some(100_000_000), None, Some(100_000_000), None)
            } else {
                PortLimits::default()
            },
            ..PortPolicy::default()
        })
    }

    /// The VLAN the stations are learned in.
    pub fn learn_vlan(&self) -> VlanId {
        match self.port_vlan {
            Some(VlanMode::Access) => VlanId(100),
            _ => self.vlan.unwrap_or(VlanId::NONE),
        }
    }

    /// Number of frames built: enough to walk every station once (and at
    /// least `min_frames`), rounded up to whole bursts, at most
    /// [`MAX_FRAMES`].
    pub fn frame_count(&self) -> usize {
        let per_round = BURST * usize::from(self.n_ports);
        (self.macs as usize)
            .max(self.min_frames)
            .clamp(per_round, MAX_FRAMES)
            .next_multiple_of(per_round)
    }

    /// Frame length on the wire (without FCS).
    pub fn frame_len(&self) -> usize {
        if self.vlan.is_some() {
            TAGGED_LEN
        } else {
            UNTAGGED_LEN
        }
    }

    /// FDB size: twice the station count, so the table runs at most a quarter
    /// full (the table itself rounds slots up to a power of two at least twice
    /// `max_entries`).
    pub fn fdb_config(&self) -> FdbConfig {
        FdbConfig {
            max_entries: (self.macs as usize * 2).max(1024),
            max_per_port: 0,
            aging_secs: 300,
            learn_per_sec: 0,
        }
    }
}

/// MAC of station `i`: locally administered unicast, `i` in the low 32 bits.
#[inline]
pub fn station_mac(i: u32) -> MacAddr {
    MacAddr::from_u64(0x0200_0000_0000 | u64::from(i))
}

/// A full-period walk over `0..n`: `x -> (x + step) mod n` with `step`
/// coprime to `n` and near `n / phi`, so successive values are far apart.
#[derive(Clone, Copy, Debug)]
struct Walk {
    n: u64,
    step: u64,
    x: u64,
}

impl Walk {
    fn new(n: u32, start: u32) -> Walk {
        let n = u64::from(n.max(1));
        let mut step = ((n as f64) * 0.618_033_988_75) as u64 | 1;
        while gcd(step, n) != 1 {
            step += 2;
        }
        Walk {
            n,
            step: step % n,
            x: u64::from(start) % n,
        }
    }

    fn next(&mut self) -> u32 {
        let v = self.x;
        self.x = (self.x + self.step) % self.n;
        v as u32
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Writes an Ethernet frame (optionally 802.1Q-tagged) into a template.
pub(crate) fn write_frame(
    dst: MacAddr,
    src: MacAddr,
    vlan: Option<VlanId>,
    seq: u32,
) -> [u8; TEMPLATE_BYTES] {
    let mut f = [0u8; TEMPLATE_BYTES];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    let mut at = 12;
    if let Some(v) = vlan {
        f[at..at + 2].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        f[at + 2..at + 4].copy_from_slice(&v.0.to_be_bytes());
        at += 4;
    }
    f[at..at + 2].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    // IPv4 and TCP headers (for the security-group cases): 10.0.0.1 port
    // 1024 + seq mod 60 000 to 10.0.0.2 port 80, the frame's sequence
    // number as the TCP sequence number.
    let ip = at + 2;
    f[ip..ip + 20].copy_from_slice(&[
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    let tcp = ip + 20;
    let sport = 1024 + (seq % 60_000) as u16;
    f[tcp..tcp + 2].copy_from_slice(&sport.to_be_bytes());
    f[tcp + 2..tcp + 4].copy_from_slice(&BENCH_TCP_PORT.to_be_bytes());
    f[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Destination port of every benchmark frame.
pub const BENCH_TCP_PORT: u16 = 80;

/// Source address of every benchmark frame.
pub const BENCH_SRC_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 1);

/// A security group of `n` rules (at least 1) that every benchmark frame
/// passes only by its last rule: `n - 1` rules deny TCP from other
/// addresses to other ports (each a /32 and a port of its own, so every
/// field is cut into many intervals), the last allows TCP to
/// [`BENCH_TCP_PORT`], and the default denies.
pub fn bench_acl(n: u32) -> Acl {
    let mut rules: Vec<AclRule> = (0..n.saturating_sub(1))
        .map(|i| AclRule {
            proto: Some(acl::proto::TCP),
            src: Some(acl::Cidr {
                addr: std::net::IpAddr::from([10, 1, (i >> 8) as u8, i as u8]),
                len: 32,
            }),
            dst_ports: Some((1000 + i as u16, 1000 + i as u16)),
            action: acl::Action::Deny,
            ..AclRule::default()
        })
        .collect();
    rules.push(AclRule {
        proto: Some(acl::proto::TCP),
        dst_ports: Some((BENCH_TCP_PORT, BENCH_TCP_PORT)),
        ..AclRule::default()
    });
    Acl::new(rules, acl::Action::Deny).expect("benchmark security group")
}

/// The frames of a scenario, in bursts: `(ingress port, templates)`.
pub fn frame_plan(sc: &Scenario) -> Vec<(PortId, Vec<[u8; TEMPLATE_BYTES]>)> {
    let n = u32::from(sc.n_ports);
    assert!(n >= 2, "a bridge needs at least two ports");
    assert!(
        sc.macs >= n && sc.macs.is_multiple_of(n),
        "MAC count {} must be a non-zero multiple of the port count {n}",
        sc.macs
    );
    let per_port = sc.macs / n;
    let mut src_walk = Walk::new(per_port, 0);
    let mut dst_walk = Walk::new(per_port, per_port / 2);
    let bursts = sc.frame_count() / BURST;
    let mut seq = 0u32;
    (0..bursts)
        .map(|b| {
            let p = b as u32 % n;
            let (mut src, mut dst) = (MacAddr::BROADCAST, MacAddr::BROADCAST);
            let frames = (0..BURST as u32)
                .map(|j| {
                    if j % sc.pair_run == 0 {
                        src = station_mac(src_walk.next() * n + p);
                        dst = match sc.traffic {
                            Traffic::Broadcast => MacAddr::BROADCAST,
                            Traffic::Unicast => {
                                let q = (p + 1 + j / sc.pair_run % (n - 1)) % n;
                                station_mac(dst_walk.next() * n + q)
                            }
                        };
                    }
                    seq += 1;
                    write_frame(dst, src, sc.vlan, seq)
                })
                .collect();
            (PortId(p as u16), frames)
        })
        .collect()
}

/// A switch with one bridge `br0` over ports `0..n_ports`, all links up.
pub fn build_switch(n_ports: u16, fdb: &FdbConfig) -> Arc<Switch> {
    let sw = Switch::new();
    sw.update(|t| {
        t.bridges.push(Some(Bridge {
            id: BridgeId(0),
            name: "br0".into(),
            ports: (0..n_ports).map(PortId).collect(),
            fdb: Arc::new(Fdb::new(fdb)),
        }));
        for i in 0..n_ports {
            let e = PortEntry::new(PortId(i), &format!("p{i}"), Some(BridgeId(0)), WorkerId(0));
            // Relaxed: set up before any worker or benchmark reads the tables.
            e.link_up.store(true, Ordering::Relaxed);
            t.ports.push(Some(Arc::new(e)));
        }
    });
    sw
}

/// Learns station `i` on port `i % n_ports` for every `i < macs`.
///
/// # Panics
/// If the table refuses a station (it is sized too small).
pub fn prelearn(fdb: &Fdb, macs: u32, n_ports: u16, vlan: VlanId) {
    for i in 0..macs {
        let port = PortId((i % u32::from(n_ports)) as u16);
        let r = fdb.learn(vlan, station_mac(i), port, NOW_SECS);
        assert_eq!(r, Learn::Learned, "pre-learning station {i}");
    }
}

/// A mempool of small buffers (64 bytes of data room, no headroom): enough for
/// the frames built here, with a footprint of 128 bytes per buffer.
///
/// # Panics
/// If the pool cannot be created.
pub fn small_pool(name: &str, n_mbufs: u32) -> &'static Mempool {
    Mempool::create(&MempoolConfig {
        name: name.into(),
        n_mbufs,
        data_room: TEMPLATE_BYTES as u32,
        headroom: 0,
        cache_size: 256,
        hugepages: HugepagePolicy::Never,
        port_share: 0,
    })
    .expect("benchmark mempool")
}

/// The mempool the vring benchmarks dequeue into: the daemon's buffer size
/// (128 bytes of headroom, 2 048 of data room) and per-thread cache, normal
/// pages.
///
/// # Panics
/// If the pool cannot be created.
pub fn vring_pool() -> &'static Mempool {
    Mempool::create(&MempoolConfig {
        name: "vring".into(),
        n_mbufs: 4096,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::default()
    })
    .expect("benchmark mempool")
}

/// A small pool of normal pages for a rig's own frames (`name`: the
/// pool's name): 1024 buffers of 256 bytes with 128 of headroom.
///
/// # Panics
/// If the pool cannot be created.
pub(crate) fn rig_pool(name: &str) -> &'static Mempool {
    Mempool::create(&MempoolConfig {
        name: name.into(),
        n_mbufs: 1024,
        data_room: 256,
        headroom: 128,
        cache_size: 256,
        hugepages: HugepagePolicy::Never,
        port_share: 0,
    })
    .expect("benchmark mempool")
}

/// A switch, its forwarder and a scenario's frames, ready to step.
pub struct Rig {
    /// The scenario this rig runs.
    pub scenario: Scenario,
    /// The switch (kept alive for the tables).
    pub switch: Arc<Switch>,
    tables: Arc<SwitchTables>,
    fwd: Forwarder,
    stats: QueueStats,
    pool: &'static Mempool,
    /// Pre-built bursts for [`Rig::step_recycled`].
    bursts: Vec<(PortId, Burst)>,
    /// Templates for [`Rig::step_pooled`].
    plan: Vec<(PortId, Vec<[u8; TEMPLATE_BYTES]>)>,
    input: Burst,
    sink: NullPort,
    next: usize,
}

impl std::fmt::Debug for Rig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rig")
            .field("scenario", &self.scenario)
            .field("bursts", &self.plan.len())
            .finish()
    }
}

impl Rig {
    /// Builds the switch, pre-learns the stations and builds the frames.
    ///
    /// # Panics
    /// On an impossible scenario (see [`frame_plan`]) or if memory runs out.
    pub fn new(sc: Scenario) -> Rig {
        let switch = build_switch(sc.n_ports, &sc.fdb_config());
        switch.update(|t| {
            for i in 0..sc.n_ports {
                t.set_policy(PortId(i), sc.port_policy(i).map(Arc::new));
            }
        });
        let tables = switch.load();
        let bridge = tables.bridges[0].as_ref().expect("bridge 0");
        prelearn(&bridge.fdb, sc.macs, sc.n_ports, sc.learn_vlan());
        let plan = frame_plan(&sc);
        // Every pre-built frame, plus flood copies, plus per-thread cache slack.
        let n_mbufs = sc.frame_count() + BURST * usize::from(sc.n_ports) + 1024;
        let pool = small_pool("bench", n_mbufs as u32);
        let len = sc.frame_len();
        let bursts = plan
            .iter()
            .map(|(port, frames)| {
                let burst: Burst = frames.iter().map(|t| fill(pool, t, len)).collect();
                (*port, burst)
            })
            .collect();
        let mut fwd = Forwarder::new();
        fwd.prepare(&tables);
        Rig {
            scenario: sc,
            switch,
            tables,
            fwd,
            stats: QueueStats::default(),
            pool,
            bursts,
            plan,
            input: Burst::new(),
            sink: NullPort::new(),
            next: 0,
        }
    }

    /// Number of distinct bursts (frames / [`BURST`]).
    pub fn burst_count(&self) -> usize {
        self.plan.len()
    }

    /// Frames dropped so far (should stay 0: every case is forwardable).
    pub fn drops(&self) -> u64 {
        self.stats.snapshot().total_drops()
    }

    /// Switches the next pre-built burst and puts the output back in its place
    /// (no buffer allocated or freed, except flood copies beyond one burst).
    /// Returns the number of frames switched.
    #[inline]
    pub fn step_recycled(&mut self) -> usize {
        let (port, burst) = &mut self.bursts[self.next];
        let n = burst.len();
        self.fwd
            .process(&self.tables, *port, burst, NOW_SECS, &self.stats);
        self.fwd.drain(|_, out| recycle(burst, out));
        self.next += 1;
        if self.next == self.bursts.len() {
            self.next = 0;
        }
        n
    }

    /// Allocates the next burst from the pool (copying in the templates),
    /// switches it, and frees the output through a null sink. Returns the number
    /// of frames switched.
    #[inline]
    pub fn step_pooled(&mut self) -> usize {
        let (port, frames) = &self.plan[self.next];
        let len = self.scenario.frame_len();
        for t in frames {
            self.input.push(fill(self.pool, t, len));
        }
        let n = self.input.len();
        self.fwd
            .process(&self.tables, *port, &mut self.input, NOW_SECS, &self.stats);
        let sink = &mut self.sink;
        self.fwd.drain(|_, out| {
            sink.tx_burst(out);
        });
        self.next += 1;
        if self.next == self.plan.len() {
            self.next = 0;
        }
        n
    }
}

/// The sink of [`Rig::step_recycled`]: moves a drained stage's frames back
/// into the input burst they came from. Frames beyond the burst's capacity
/// (flood copies) are freed.
///
/// Benchmark plumbing, not switch work: kept out of line under its own name
/// so that `callgrind.sh` can subtract its instructions (callgrind's
/// inclusive count for this function) from the step's.
#[inline(never)]
pub fn recycle(into: &mut Burst, out: &mut Burst) {
    for m in out.drain(..) {
        let _ = into.try_push(m);
    }
}

/// One buffer from `pool` holding the first `len` bytes of `template`.
///
/// # Panics
/// If the pool is empty (it is sized for every scenario here).
#[inline]
fn fill(pool: &'static Mempool, template: &[u8; TEMPLATE_BYTES], len: usize) -> dataplane::Mbuf {
    let mut m = pool.alloc().expect("benchmark pool sized for every frame");
    // Whole template at a fixed size: a few vector stores, no memcpy call.
    let room: &mut [u8; TEMPLATE_BYTES] = (&mut m.room_mut()[..TEMPLATE_BYTES])
        .try_into()
        .expect("pool data room holds a template");
    *room = *template;
    m.set_len(len).expect("frame fits its buffer");
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::wire::parse_l2;

    #[test]
    fn walk_visits_every_value_once() {
        for n in [1, 2, 250, 1000, 4096] {
            let mut w = Walk::new(n, 7);
            let mut seen = vec![false; n as usize];
            for _ in 0..n {
                let v = w.next() as usize;
                assert!(!seen[v], "n={n}: {v} twice");
                seen[v] = true;
            }
        }
    }

    #[test]
    fn unicast_frames_come_from_the_ingress_port_and_go_elsewhere() {
        let sc = Scenario::unicast(1000);
        let plan = frame_plan(&sc);
        assert_eq!(plan.len() * BURST, sc.frame_count());
        for (port, frames) in &plan {
            for f in frames {
                let l2 = parse_l2(&f[..sc.frame_len()]).unwrap();
                let src = (l2.src.to_u64() & 0xffff_ffff) as u32;
                let dst = (l2.dst.to_u64() & 0xffff_ffff) as u32;
                assert!(src < sc.macs && dst < sc.macs);
                assert_eq!(src % 4, u32::from(port.0));
                assert_ne!(dst % 4, u32::from(port.0));
            }
        }
    }

    #[test]
    fn every_case_forwards_without_drops() {
        for sc in [
            Scenario::unicast(1000),
            Scenario::broadcast(1000),
            Scenario::tagged(1000),
        ] {
            let mut rig = Rig::new(sc);
            let before = rig.pool.in_use();
            for _ in 0..rig.burst_count() * 2 {
                assert_eq!(rig.step_recycled(), BURST);
                assert_eq!(rig.step_pooled(), BURST);
            }
            assert_eq!(rig.drops(), 0, "{sc:?}");
            assert_eq!(rig.pool.in_use(), before, "{sc:?}: buffers leaked");
        }
    }
}
