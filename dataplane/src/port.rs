//! The port abstraction every driver implements: burst receive and transmit on one
//! queue pair.
//!
//! Layer: ports. Implemented by `pmd` (kernel interfaces, VFIO NICs, in-memory and
//! pcap ports) and by `vhost-user` (VM vNICs); consumed by `worker`. On the packet
//! path: `rx_burst`/`tx_burst` are called once per poll, never per packet.
//!
//! A [`Port`] value is **one queue pair** of a device, owned by exactly one worker
//! at a time; a device with `n` queues yields `n` values. That is what lets drivers
//! keep plain (non-atomic) ring state and lets the worker count with single-writer
//! [`QueueStats`].

use std::sync::Arc;

use arrayvec::ArrayVec;

use crate::mbuf::Mbuf;
use crate::stats::QueueStats;
use crate::wire::GsoKind;

/// Most packets moved by one `rx_burst`/`tx_burst` call.
pub const MAX_BURST: usize = 32;

/// A burst of packets: a fixed-capacity array on the caller's stack, reused across
/// polls (no heap allocation).
pub type Burst = ArrayVec<Mbuf, MAX_BURST>;

/// Link state as the port sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Frames can flow.
    Up,
    /// No carrier / peer not connected / interface down.
    Down,
}

impl LinkState {
    /// "up" or "down".
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// One queue pair of a network port, driven by polling.
///
/// Contract:
/// - `rx_burst` appends up to `burst.remaining_capacity()` received frames to
///   `burst` and returns how many it appended. It never blocks. Each frame's
///   [`Mbuf::port`] may be left unset; the worker stamps it.
/// - `tx_burst` takes frames from the **front** of `burst`, queues them for
///   transmission and returns how many it took; frames it could not take (queue
///   full) stay in `burst`, in order, and the caller decides (drop and count
///   `TxFull`, or retry). Taken frames are owned by the port from then on.
/// - Neither call allocates on the heap, takes a lock, or logs. A syscall per burst
///   is allowed where the kernel interface requires it (AF_PACKET, TAP, AF_XDP
///   kicks), never one per packet where a batched call exists.
/// - Driver-level problems (a malformed descriptor, a kernel error) are counted in
///   [`Port::stats`] and never panic.
///
/// # Checksum offload
/// A frame may carry a partial TCP/UDP checksum ([`Mbuf::partial_csum`]), e.g.
/// from a VM that negotiated VIRTIO_NET_F_CSUM. Who completes it is decided
/// per egress port, once, by [`Port::accepts_partial_csum`]:
/// - `false` (the default, every kernel or NIC port): the worker completes
///   pending checksums in software right before `tx_burst`
///   ([`complete_partial_csums`]), so such a driver only ever sees finished
///   frames and needs no offload code.
/// - `true`: the driver's `tx_burst` takes frames with pending checksums and
///   must, per frame, either hand the metadata on to its peer (a vhost-user
///   guest that negotiated VIRTIO_NET_F_GUEST_CSUM) or complete it itself.
///   The decision sits in the driver because only it knows, at the moment it
///   writes a frame, what its peer negotiated (a guest may reconnect with
///   other features between two bursts).
///
/// Completion clears the metadata, so a frame's checksum is computed at most
/// once, and each flood copy is completed (or handed on) independently.
///
/// # Segmentation offload
/// A frame may be a TSO frame of up to 64 KiB ([`Mbuf::gso`]), e.g. from a VM
/// that negotiated VIRTIO_NET_F_HOST_TSO4. [`Port::accepts_gso`] says, per
/// kind and burst, whether the driver can hand it on whole (a vhost-user guest
/// that negotiated GUEST_TSO4/6). If not (the default), the worker cuts it into
/// MSS-sized frames with complete checksums before `tx_burst`
/// ([`crate::wire::TsoPlan`]). A driver that said yes but finds, writing the
/// frame, that its peer changed features since, drops it and counts it.
pub trait Port: Send {
    /// Receives up to `burst.remaining_capacity()` frames.
    fn rx_burst(&mut self, burst: &mut Burst) -> usize;

    /// Transmits frames from the front of `burst`; see the trait docs.
    fn tx_burst(&mut self, burst: &mut Burst) -> usize;

    /// Current link state. Cheap; called once per poll round at most.
    fn link(&self) -> LinkState {
        LinkState::Up
    }

    /// Counters of this queue. The worker adds rx/tx/drops; the driver adds its
    /// own errors and drops. Both run on the owning worker's thread.
    fn stats(&self) -> &Arc<QueueStats>;

    /// Periodic housekeeping on the owning worker (about every millisecond, and
    /// when idle): reclaim completed transmissions, refill receive rings, refresh
    /// link state. Default: nothing.
    fn housekeeping(&mut self) {}

    /// True if `tx_burst` handles frames that still carry a partial checksum
    /// (see "Checksum offload" above). Default false: the caller completes them
    /// first. Called once per burst.
    fn accepts_partial_csum(&self) -> bool {
        false
    }

    /// True if `tx_burst` can pass TSO frames of `kind` on whole (see
    /// "Segmentation offload" above). Default false: the caller segments them
    /// first. Called at most once per TSO frame.
    fn accepts_gso(&self, kind: GsoKind) -> bool {
        let _ = kind;
        false
    }

    /// For a queue of a tunnel port: the tunnel. The worker then
    /// encapsulates what it sends there itself and passes the packets
    /// straight on to the underlay, and switches what it decapsulates as
    /// received on this queue ([`crate::tunnel`]). Asked once, when the
    /// worker takes the queue. Default: None.
    fn tunnel(&self) -> Option<&Arc<crate::tunnel::TunnelShared>> {
        None
    }
}

/// Completes in software every partial checksum pending on the frames of
/// `burst` (for an egress port that cannot hand the metadata on). Costs one
/// header check per frame, plus one pass over the L4 segment of each frame
/// that has a checksum pending.
#[inline]
pub fn complete_partial_csums(burst: &mut Burst) {
    for m in burst.iter_mut() {
        if m.partial_csum().is_some() {
            m.complete_csum();
        }
    }
}

impl<P: Port + ?Sized> Port for Box<P> {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        (**self).rx_burst(burst)
    }
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        (**self).tx_burst(burst)
    }
    fn link(&self) -> LinkState {
        (**self).link()
    }
    fn stats(&self) -> &Arc<QueueStats> {
        (**self).stats()
    }
    fn housekeeping(&mut self) {
        (**self).housekeeping()
    }
    fn accepts_partial_csum(&self) -> bool {
        (**self).accepts_partial_csum()
    }
    fn accepts_gso(&self, kind: GsoKind) -> bool {
        (**self).accepts_gso(kind)
    }
    fn tunnel(&self) -> Option<&Arc<crate::tunnel::TunnelShared>> {
        (**self).tunnel()
    }
}
