//! Counters shared between a worker (the only writer) and the control plane (a
//! reader), and the reasons a packet can be dropped.
//!
//! Layer: ports/stats. Updates are on the packet path; each is a plain load and
//! store (no locked instruction) because every counter has exactly one writer thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer event counter.
///
/// Only one thread may call [`Counter::add`] on a given counter (the worker that
/// owns the queue); any thread may read it. With one writer, load-then-store is exact
/// and costs an ordinary `mov` on x86, unlike `fetch_add`.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Single writer only (see the type docs).
    #[inline]
    pub fn add(&self, n: u64) {
        // Relaxed: readers want an eventually-consistent total, nothing is published
        // through the counter.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        // Relaxed: a statistic.
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! drop_reasons {
    ($( $(#[$m:meta])* $v:ident => $name:literal, )*) => {
        /// Why a packet was dropped. Every drop on the packet path is counted under
        /// exactly one reason, on the port where the decision was made.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $( $(#[$m])* $v, )* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            /// Number of reasons.
            pub const COUNT: usize = DropReason::ALL.len();

            /// Stable name used in stats output and the control API.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$v => $name,)* }
            }
        }
    };
}

drop_reasons! {
    /// Frame shorter than an Ethernet header, or longer than the buffer.
    Malformed => "malformed",
    /// No free mbuf (receive refill or flood copy).
    NoBuffers => "no-buffers",
    /// Destination was learned on the ingress port itself.
    SamePort => "same-port",
    /// IEEE 802.1D link-local group address (STP, LACP, pause), never forwarded.
    LinkLocal => "link-local",
    /// Ingress port is attached to no bridge.
    NoBridge => "no-bridge",
    /// Destination port no longer exists.
    NoRoute => "no-route",
    /// Egress port's link or admin state is down.
    PortDown => "port-down",
    /// Egress queue full.
    TxFull => "tx-full",
    /// Ring to the worker that owns the egress port was full.
    HandoffFull => "handoff-full",
    /// The kernel or device dropped frames before we could receive them.
    RxOverrun => "rx-overrun",
    /// The port is in an error state (for example a misbehaving peer).
    PortError => "port-error",
    /// A segmentation offload (TSO) frame from a guest found the pool of
    /// large buffers empty.
    NoTsoBuffers => "no-tso-buffers",
    /// Longer than the egress port's MTU allows (the MTU its guest set, plus
    /// the Ethernet header and one VLAN tag for a tagged frame).
    MtuExceeded => "mtu-exceeded",
    /// The ingress port holds its whole share of a buffer pool (the TSO
    /// pool): a frame or a flood copy past it is dropped, so that one port
    /// cannot take buffers every other port needs.
    PoolShare => "pool-share",
    /// A segmentation offload (TSO) frame asked for segments of fewer
    /// payload bytes than [`crate::wire::gso::MIN_MSS`], or a UDP train for
    /// more than [`crate::wire::gso::MAX_UDP_SEGMENTS`] datagrams.
    TsoMssTooSmall => "tso-mss-too-small",
    /// A guest's descriptor chain (or, for one frame to a guest with
    /// mergeable buffers, its chains together) held more buffers than one
    /// frame may take (256).
    ChainTooLong => "chain-too-long",
    /// The frame's VLAN is not one the port carries: a tag an access port
    /// does not take, a VLAN a trunk does not trunk, an 802.1ad (S-tag)
    /// frame on a bridge with VLAN port modes, or a known unicast frame for
    /// a port outside its VLAN.
    VlanFiltered => "vlan-filtered",
    /// Port security: the frame's source MAC (or an ARP sender or ND
    /// link-layer address in it) is not one the port allows.
    SpoofedMac => "spoofed-mac",
    /// Port security: the frame's source IP (or an ARP sender or ND target
    /// address in it) is not one the port allows.
    SpoofedIp => "spoofed-ip",
    /// Over the ingress port's `ingress_policing_rate` (and burst).
    Policed => "policed",
    /// A broadcast, multicast or unknown unicast frame over the ingress
    /// port's `storm_pps`.
    Storm => "storm",
    /// Over the egress port's `egress_rate` (counted on the ingress port,
    /// where the frame was switched).
    EgressRate => "egress-rate",
    /// A security group (`acl_in` of the ingress port or `acl_out` of the
    /// egress port) denied the frame.
    AclDeny => "acl-deny",
    /// Tunnel port: the inner frame is longer than the underlay's MTU
    /// minus the encapsulation's overhead.
    TunnelMtu => "tunnel-mtu",
    /// Tunnel port: the remote endpoint's next hop has no MAC address yet
    /// (or the underlay port is gone).
    TunnelUnresolved => "tunnel-unresolved",
    /// Underlay port: a tunnel packet with a VNI no tunnel on the port
    /// carries at that UDP port.
    TunnelVni => "tunnel-vni",
    /// Underlay port: a tunnel packet from an address that is not one of
    /// the tunnel's `remote_ips`.
    TunnelRemote => "tunnel-remote",
    /// Underlay port: a tunnel packet with a bad header (VXLAN flags,
    /// Geneve version, protocol or critical option, IPv4 checksum, a
    /// fragment).
    TunnelHeader => "tunnel-header",
    /// Underlay port: a unicast frame to weir's own MAC address for an IP
    /// address that is not weir's.
    NotLocal => "not-local",
    /// The egress port's receive filter does not take the destination: a
    /// unicast address not its own nor in its guest's table, or a
    /// multicast group its guest did not ask for (counted on the ingress
    /// port, where the frame was switched).
    RxFilter => "rx-filter",
}

impl From<crate::wire::gso::GsoError> for DropReason {
    /// Where a frame that cannot be segmented is counted: an MSS under the
    /// floor (or a UDP train of too many datagrams) apart, as malformed.
    fn from(e: crate::wire::gso::GsoError) -> DropReason {
        match e {
            crate::wire::gso::GsoError::MssTooSmall => DropReason::TsoMssTooSmall,
            crate::wire::gso::GsoError::Malformed | crate::wire::gso::GsoError::Unsupported => {
                DropReason::Malformed
            }
        }
    }
}

/// Why a frame's source address was not learned. The frame itself is
/// forwarded all the same (a switch that dropped it would let one port's MAC
/// flood cut every new station off); replies to it are flooded until the
/// address is learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Unlearned {
    /// The FDB holds its `max_entries`, or the address's probe window is full.
    FdbFull,
    /// The ingress port owns its `max_per_port` entries.
    PortMacLimit,
    /// The ingress port learned its `learn_per_sec` new addresses or moves
    /// this second.
    LearnRate,
}

impl Unlearned {
    /// Every reason, in counter order.
    pub const ALL: &'static [Unlearned] = &[
        Unlearned::FdbFull,
        Unlearned::PortMacLimit,
        Unlearned::LearnRate,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Unlearned::ALL.len();

    /// Stable name used in stats output and the control API.
    pub fn name(self) -> &'static str {
        match self {
            Unlearned::FdbFull => "fdb-full",
            Unlearned::PortMacLimit => "port-mac-limit",
            Unlearned::LearnRate => "learn-rate",
        }
    }
}

/// Buckets of the receive-to-transmit latency histogram: bucket `i` counts
/// frames that took at most `2^(LATENCY_MIN_LOG2_NS + i)` ns (and more than
/// the previous bucket's bound), the last one everything longer: the `le`
/// bounds of a Prometheus histogram.
pub const LATENCY_BUCKETS: usize = 24;

/// Log2 of the first latency bucket's upper bound in nanoseconds (128 ns);
/// the last finite bound is 2^29 ns, about 0.54 s.
pub const LATENCY_MIN_LOG2_NS: u32 = 7;

/// Upper bound of latency bucket `i` in nanoseconds; None for the last
/// (unbounded) one.
pub fn latency_bucket_le_ns(i: usize) -> Option<u64> {
    (i + 1 < LATENCY_BUCKETS).then(|| 1u64 << (LATENCY_MIN_LOG2_NS as usize + i))
}

/// The latency bucket of `ns` nanoseconds: a bit length and a clamp, no
/// branch on the value.
#[inline(always)]
pub fn latency_bucket(ns: u64) -> usize {
    // ns <= 2^k exactly when ns - 1 fits in k bits.
    let bits = u64::BITS - ns.saturating_sub(1).leading_zeros();
    (bits.saturating_sub(LATENCY_MIN_LOG2_NS) as usize).min(LATENCY_BUCKETS - 1)
}

/// Converts [`crate::time::cycles`] differences to nanoseconds with one
/// multiply and shift (a Q32 fixed-point factor computed once, on the
/// control side, from the measured clock rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CyclesToNs {
    q32: u64,
}

impl CyclesToNs {
    /// For a clock of `hz` ticks per second (at least 1).
    pub fn new(hz: u64) -> CyclesToNs {
        CyclesToNs {
            q32: ((1_000_000_000u128 << 32) / u128::from(hz.max(1))) as u64,
        }
    }

    /// For this host's clock ([`crate::switch::police::cycles_per_sec`];
    /// its first call measures for 10 ms: not on a worker).
    pub fn measured() -> CyclesToNs {
        CyclesToNs::new(crate::switch::police::cycles_per_sec())
    }

    /// `cycles` in nanoseconds.
    #[inline(always)]
    pub fn ns(self, cycles: u64) -> u64 {
        ((u128::from(cycles) * u128::from(self.q32)) >> 32) as u64
    }
}

/// Counters of one port queue. Written only by the worker that owns the queue;
/// summed over queues by the control plane.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Frames received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Frames transmitted.
    pub tx_packets: Counter,
    /// Bytes transmitted.
    pub tx_bytes: Counter,
    /// Receive errors reported by the driver.
    pub rx_errors: Counter,
    /// Transmit errors reported by the driver.
    pub tx_errors: Counter,
    /// Segmentation offload (TSO) super-frames received, each counted once
    /// also in `rx_packets`.
    pub rx_tso_packets: Counter,
    /// TSO super-frames handed whole to the port (its peer or the kernel
    /// segments them, if anyone does), each counted once also in
    /// `tx_packets`.
    pub tx_tso_packets: Counter,
    /// TSO super-frames weir cut into segments on this port: on transmit to
    /// a port that cannot take them whole (the segments are counted in
    /// `tx_packets`), or on receive by a port without buffers for them.
    pub tso_segmented: Counter,
    drops: [Counter; DropReason::COUNT],
    unlearned: [Counter; Unlearned::COUNT],
    /// Frames of the sampled bursts by receive-to-transmit time
    /// ([`latency_bucket`]).
    latency: [Counter; LATENCY_BUCKETS],
    /// Their summed receive-to-transmit time, ns.
    latency_sum_ns: Counter,
}

impl QueueStats {
    /// Counts `frames` frames of one burst received from this queue and
    /// switched and transmitted within `ns` nanoseconds. Called for sampled
    /// bursts only (one poll round in
    /// [`crate::worker::STAGE_SAMPLE_EVERY`]), once per burst.
    #[inline]
    pub fn record_latency(&self, ns: u64, frames: u64) {
        self.latency[latency_bucket(ns)].add(frames);
        self.latency_sum_ns.add(ns.wrapping_mul(frames));
    }

    /// Counts `n` drops for `reason`.
    #[inline]
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].add(n);
    }

    /// Counts one drop for `reason`.
    #[inline]
    pub fn drop_one(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }

    /// Drops so far for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }

    /// Counts one received frame whose source was not learned, for `reason`.
    #[inline]
    pub fn unlearned_one(&self, reason: Unlearned) {
        self.unlearned[reason as usize].inc();
    }

    /// Frames so far whose source was not learned for `reason`.
    pub fn unlearned(&self, reason: Unlearned) -> u64 {
        self.unlearned[reason as usize].get()
    }

    /// A plain copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut drops = [0; DropReason::COUNT];
        for (d, c) in drops.iter_mut().zip(&self.drops) {
            *d = c.get();
        }
        let mut unlearned = [0; Unlearned::COUNT];
        for (d, c) in unlearned.iter_mut().zip(&self.unlearned) {
            *d = c.get();
        }
        let mut latency = [0; LATENCY_BUCKETS];
        for (d, c) in latency.iter_mut().zip(&self.latency) {
            *d = c.get();
        }
        StatsSnapshot {
            latency,
            latency_sum_ns: self.latency_sum_ns.get(),
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            rx_errors: self.rx_errors.get(),
            tx_errors: self.tx_errors.get(),
            rx_tso_packets: self.rx_tso_packets.get(),
            tx_tso_packets: self.tx_tso_packets.get(),
            tso_segmented: self.tso_segmented.get(),
            drops,
            unlearned,
        }
    }
}

/// A copy of [`QueueStats`], summable across queues. With the `serde`
/// feature it is what the control API reports for a port or a queue: drops
/// and unlearned sources as maps from reason name to count, listing only the
/// reasons that occurred (`unlearned` left out when none did).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct StatsSnapshot {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// TSO super-frames received.
    pub rx_tso_packets: u64,
    /// TSO super-frames transmitted whole.
    pub tx_tso_packets: u64,
    /// TSO super-frames cut into segments by weir.
    pub tso_segmented: u64,
    /// Drops, indexed by `DropReason as usize`.
    #[cfg_attr(feature = "serde", serde(with = "by_name::drops"))]
    pub drops: [u64; DropReason::COUNT],
    /// Frames forwarded with their source not learned, indexed by
    /// `Unlearned as usize`.
    #[cfg_attr(
        feature = "serde",
        serde(with = "by_name::unlearned", skip_serializing_if = "by_name::all_zero")
    )]
    pub unlearned: [u64; Unlearned::COUNT],
    /// Frames of sampled bursts by receive-to-transmit time, indexed by
    /// [`latency_bucket`]. Not on the wire: the control API reports it as
    /// a port's `latency`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub latency: [u64; LATENCY_BUCKETS],
    /// Their summed receive-to-transmit time, ns (not on the wire either).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub latency_sum_ns: u64,
}

/// Counter arrays indexed by a reason, on the wire as `{"name": count}` maps
/// of the reasons that occurred. Names this build does not know are ignored
/// (a client older than the daemon).
#[cfg(feature = "serde")]
mod by_name {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    fn serialize<S: Serializer, const N: usize>(
        counts: &[u64; N],
        name: impl Fn(usize) -> &'static str,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(
            counts
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(i, n)| (name(i), n)),
        )
    }

    fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
        index: impl Fn(&str) -> Option<usize>,
    ) -> Result<[u64; N], D::Error> {
        let mut counts = [0; N];
        for (name, n) in BTreeMap::<String, u64>::deserialize(d)? {
            if let Some(i) = index(&name) {
                counts[i] = n;
            }
        }
        Ok(counts)
    }

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
    pub(super) fn all_zero<const N: usize>(counts: &[u64; N]) -> bool {
        counts.iter().all(|&n| n == 0)
    }

    pub(super) mod drops {
        use super::super::DropReason;
        use serde::{Deserializer, Serializer};

        const N: usize = DropReason::COUNT;

        pub(crate) fn serialize<S: Serializer>(c: &[u64; N], s: S) -> Result<S::Ok, S::Error> {
            super::serialize(c, |i| DropReason::ALL[i].name(), s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; N], D::Error> {
            super::deserialize(d, |name| {
                DropReason::ALL.iter().position(|r| r.name() == name)
            })
        }
    }

    pub(super) mod unlearned {
        use super::super::Unlearned;
        use serde::{Deserializer, Serializer};

        const N: usize = Unlearned::COUNT;

        pub(crate) fn serialize<S: Serializer>(c: &[u64; N], s: S) -> Result<S::Ok, S::Error> {
            super::serialize(c, |i| Unlearned::ALL[i].name(), s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; N], D::Error> {
            super::deserialize(d, |name| {
                Unlearned::ALL.iter().position(|r| r.name() == name)
            })
        }
    }
}

impl StatsSnapshot {
    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Frames forwarded with their source not learned, for one reason.
    pub fn unlearned(&self, reason: Unlearned) -> u64 {
        self.unlearned[reason as usize]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// The reasons frames were dropped for, by name, with their counts
    /// (only those that occurred).
    pub fn drops_by_name(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.drops(*r)))
            .filter(|&(_, n)| n > 0)
    }
}

impl StatsSnapshot {
    /// What was counted since `base`, an earlier snapshot of the same
    /// counters (`weir stats clear`). Saturates, so a base from before a
    /// counter was recreated reads as zero, never as a huge count.
    pub fn since(&self, base: &StatsSnapshot) -> StatsSnapshot {
        let mut d = StatsSnapshot {
            rx_packets: self.rx_packets.saturating_sub(base.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(base.rx_bytes),
            tx_packets: self.tx_packets.saturating_sub(base.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(base.tx_bytes),
            rx_errors: self.rx_errors.saturating_sub(base.rx_errors),
            tx_errors: self.tx_errors.saturating_sub(base.tx_errors),
            rx_tso_packets: self.rx_tso_packets.saturating_sub(base.rx_tso_packets),
            tx_tso_packets: self.tx_tso_packets.saturating_sub(base.tx_tso_packets),
            tso_segmented: self.tso_segmented.saturating_sub(base.tso_segmented),
            latency_sum_ns: self.latency_sum_ns.saturating_sub(base.latency_sum_ns),
            ..*self
        };
        for (a, b) in d.latency.iter_mut().zip(base.latency) {
            *a = a.saturating_sub(b);
        }
        for (a, b) in d.drops.iter_mut().zip(base.drops) {
            *a = a.saturating_sub(b);
        }
        for (a, b) in d.unlearned.iter_mut().zip(base.unlearned) {
            *a = a.saturating_sub(b);
        }
        d
    }
}

impl std::ops::AddAssign for StatsSnapshot {
    fn add_assign(&mut self, o: StatsSnapshot) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_errors += o.rx_errors;
        self.tx_errors += o.tx_errors;
        self.rx_tso_packets += o.rx_tso_packets;
        self.tx_tso_packets += o.tx_tso_packets;
        self.tso_segmented += o.tso_segmented;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        for (a, b) in self.unlearned.iter_mut().zip(o.unlearned) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(o.latency) {
            *a += b;
        }
        self.latency_sum_ns += o.latency_sum_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_every_counter_and_saturates() {
        let mut base = StatsSnapshot {
            rx_packets: 10,
            tx_bytes: 100,
            ..StatsSnapshot::default()
        };
        base.drops[DropReason::AclDeny as usize] = 3;
        let mut now = base;
        now += StatsSnapshot {
            rx_packets: 5,
            tx_bytes: 7,
            tso_segmented: 1,
            ..StatsSnapshot::default()
        };
        now.drops[DropReason::AclDeny as usize] += 2;
        let d = now.since(&base);
        assert_eq!((d.rx_packets, d.tx_bytes, d.tso_segmented), (5, 7, 1));
        assert_eq!(d.drops(DropReason::AclDeny), 2);
        assert_eq!(base.since(&now), StatsSnapshot::default());
    }

    #[test]
    fn latencies_fall_in_log2_buckets_of_nanoseconds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(128), 0);
        assert_eq!(latency_bucket(129), 1);
        assert_eq!(latency_bucket(256), 1);
        assert_eq!(latency_bucket(257), 2);
        assert_eq!(latency_bucket(1 << 29), LATENCY_BUCKETS - 2);
        assert_eq!(latency_bucket((1 << 29) + 1), LATENCY_BUCKETS - 1);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        // Each bucket holds what is at most its bound and over the previous one's.
        for i in 0..LATENCY_BUCKETS - 1 {
            let le = latency_bucket_le_ns(i).unwrap();
            assert_eq!(latency_bucket(le), i, "{le}");
            assert_eq!(latency_bucket(le + 1), i + 1, "{le}");
        }
        assert_eq!(latency_bucket_le_ns(LATENCY_BUCKETS - 1), None);
    }

    #[test]
    fn cycles_convert_to_nanoseconds() {
        let ghz3 = CyclesToNs::new(3_000_000_000);
        assert_eq!(ghz3.ns(3_000), 999, "rounded down by the fixed point");
        assert_eq!(ghz3.ns(3_000_000_000), 999_999_999);
        assert_eq!(CyclesToNs::new(1_000_000_000).ns(12_345), 12_345);
        assert_eq!(CyclesToNs::new(0).ns(1), 1_000_000_000);
    }

    #[test]
    fn recorded_latencies_snapshot_and_sum_over_queues() {
        let (q0, q1) = (QueueStats::default(), QueueStats::default());
        q0.record_latency(1_000, 32);
        q0.record_latency(100, 1);
        q1.record_latency(1_000, 4);
        let mut s = q0.snapshot();
        s += q1.snapshot();
        assert_eq!(s.latency[latency_bucket(1_000)], 36);
        assert_eq!(s.latency[0], 1, "100 ns is at most 128 ns");
        assert_eq!(s.latency.iter().sum::<u64>(), 37);
        assert_eq!(s.latency_sum_ns, 36_100);
    }

    #[test]
    fn a_frame_that_cannot_be_segmented_is_counted_by_why() {
        use crate::wire::gso::GsoError;
        assert_eq!(
            DropReason::from(GsoError::MssTooSmall),
            DropReason::TsoMssTooSmall
        );
        assert_eq!(DropReason::from(GsoError::Malformed), DropReason::Malformed);
        assert_eq!(
            DropReason::from(GsoError::Unsupported),
            DropReason::Malformed
        );
    }

    #[test]
    fn snapshots_sum_per_reason() {
        let q = QueueStats::default();
        q.rx_packets.add(3);
        q.drop_one(DropReason::TxFull);
        q.drop_n(DropReason::TxFull, 2);
        let mut s = q.snapshot();
        s += q.snapshot();
        assert_eq!(s.rx_packets, 6);
        assert_eq!(s.drops(DropReason::TxFull), 6);
        assert_eq!(s.total_drops(), 6);
        assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
        assert_eq!(DropReason::TxFull.name(), "tx-full");
    }
}
