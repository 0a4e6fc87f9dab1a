//! A port on an existing kernel network interface (veth, a NIC left to the kernel
//! driver, a bridge) through an `AF_PACKET` socket with memory-mapped rings.
//!
//! Layer: ports. Depends on `dataplane` (port trait, mbufs, counters) and the
//! crate's OS boundary `crate::sys`. `rx_burst`/`tx_burst` are on the packet
//! path; `open*` and `housekeeping` are not.
//!
//! # Receive
//! A `TPACKET_V3` receive ring: the kernel packs frames into blocks and hands a
//! block over when it is full or after [`AfPacketConfig::block_timeout_ms`].
//! `rx_burst` polls the current block's status word in shared memory, so it makes
//! **no syscall**. Frames are copied into mbufs; a block may be consumed across
//! several bursts, and is returned to the kernel once every frame in it is taken.
//! The kernel strips an 802.1Q/802.1ad tag into the frame metadata; it is put
//! back into the frame bytes so the switch sees what was on the wire.
//!
//! The socket is set up so the port behaves like a switch port:
//! `PACKET_IGNORE_OUTGOING` (frames we or the host stack send on the interface
//! are not received back) and a promiscuous-mode membership (frames for every MAC
//! are received; the membership ends when the socket closes).
//!
//! # Transmit
//! A `PACKET_TX_RING` of fixed-size frames (with `TPACKET_V3` the transmit ring
//! keeps per-frame slots, V2 style). `tx_burst` copies each mbuf into the next
//! free slot, marks it `TP_STATUS_SEND_REQUEST`, and ends the burst with **one**
//! non-blocking `send()` that transmits all of them. This was chosen over
//! `sendmmsg` because the ring needs no per-packet `iovec`/`msghdr` set-up and
//! lets the kernel build buffers straight from shared memory. `PACKET_QDISC_BYPASS`
//! skips the qdisc layer (no queueing discipline applies to a switch port), and
//! `PACKET_LOSS` makes the kernel skip, rather than stall on, a frame it rejects.
//!
//! # Drops and errors
//! - `RxOverrun`: frames the kernel dropped because the receive ring was full
//!   (`PACKET_STATISTICS`, read in `housekeeping`).
//! - `NoBuffers`: a frame was received while the mempool was empty.
//! - `Malformed`: a received frame longer than an mbuf, shorter than an Ethernet
//!   header, or truncated by the kernel.
//! - `rx_errors`: an inconsistent block descriptor (the rest of the block is
//!   skipped). `tx_errors`: a frame shorter than an Ethernet header, or longer
//!   than the MTU or a transmit slot; such frames are taken and dropped.
//!
//! # Checksums and offloads
//! The kernel hands a packet socket what the peer's stack sent: with the
//! offloads Linux enables by default on a veth, TCP/UDP frames whose checksum
//! holds only the pseudo-header sum and TCP super-frames (TSO/GSO) of up to
//! 64 KiB. With [`AfPacketConfig::offloads`] (the default) the socket uses
//! `PACKET_VNET_HDR`: every received frame comes with a `virtio_net_hdr`,
//! mapped onto the mbuf's metadata exactly as vhost-user maps a guest's
//! ([`dataplane::wire::vnet`]): NEEDS_CSUM becomes [`dataplane::Mbuf::partial_csum`]
//! (its start moved by 4 when a stripped VLAN tag is put back), a TCP or UDP
//! (`UDP_SEGMENT`) GSO type becomes [`dataplane::Mbuf::gso`]. A super-frame
//! longer than a normal mbuf is copied into a buffer of the TSO pool
//! (`open_queues_with_tso`), and dropped as `NoTsoBuffers` when that pool (or
//! the port's share of it) is empty. Without a pool (`tso_mbufs = 0`) weir cuts the super-frame into
//! segments on receive, straight from the ring into normal mbufs with their
//! checksums complete (counted in `tso_segmented`); a frame whose segments
//! do not all fit the burst stays in the ring until the rest are out. A header
//! weir refuses (UFO, an unknown GSO type, offsets outside the frame) drops
//! the frame as `Malformed`.
//!
//! On transmit every frame gets a header too, so the port accepts partial
//! checksums (the kernel, or the peer's stack, finishes them) and, with a TSO
//! pool, TCP TSO frames (UDP trains are cut into datagrams by the worker, since
//! not every kernel takes GSO_UDP_L4 from a packet socket): those go whole
//! through a second, transmit-only socket whose ring has 64 KiB slots, and
//! the kernel segments them only if the interface cannot take them (a veth
//! takes them whole). When a burst moves from one ring to the other, the ring
//! left is kicked first, so frames leave in order.
//!
//! Without `offloads` (or on a kernel that refuses `PACKET_VNET_HDR`),
//! partial checksums are completed in software (`TP_STATUS_CSUMNOTREADY`,
//! [`dataplane::wire::complete_l4_checksum`]) and super-frames are dropped as
//! `Malformed`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::{Burst, DropReason, LinkState, Mempool, Port, QueueStats};

use crate::sys::netdev::{self, IfName};
use dataplane::wire::vnet::{self, VnetAccept, VNET_HDR_LEN};
use dataplane::wire::{Gso, TsoPlan};

use crate::sys::packet::{PacketSocket, RingLayout, RingMap, PACKET_VNET_HDR, TX_DATA_OFF};

/// How often `housekeeping` refreshes link state, MTU and kernel drop counters.
const REFRESH_PERIOD: Duration = Duration::from_millis(100);
/// Ethernet header bytes (two addresses and the EtherType).
const ETH_HLEN: usize = 14;
/// Bytes of an 802.1Q tag.
const VLAN_HLEN: usize = 4;
/// Default 802.1Q tag protocol identifier.
const TPID_8021Q: u16 = 0x8100;
/// Largest TSO frame: an IP datagram of 64 KiB behind an Ethernet header and
/// a VLAN tag.
const TSO_MAX_FRAME: usize = 65535 + ETH_HLEN + VLAN_HLEN;
/// What the kernel may put in a received frame's header: every TCP GSO kind
/// (the segmenter keeps CWR on the first segment, which is all ECN asks).
const KERNEL_ACCEPT: VnetAccept = VnetAccept {
    csum: true,
    tso4: true,
    tso6: true,
    uso: true,
    ecn: true,
};

// Layout of `tpacket_block_desc` / `tpacket3_hdr` (linux/if_packet.h).
const BD_NUM_PKTS: usize = 12;
const BD_FIRST_PKT: usize = 16;
const PH_NEXT_OFFSET: usize = 0;
const PH_SNAPLEN: usize = 12;
const PH_LEN: usize = 16;
const PH_STATUS: usize = 20;
const PH_MAC: usize = 24;
const PH_VLAN_TCI: usize = 32;
const PH_VLAN_TPID: usize = 36;

/// Ring geometry and options of an AF_PACKET port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Bytes per receive block; a multiple of the page size. Bounds the largest
    /// frame that can be received.
    pub block_size: usize,
    /// Receive blocks per queue.
    pub block_count: usize,
    /// Bytes per transmit slot (the largest frame sent is 48 bytes less); a
    /// multiple of 16.
    pub frame_size: usize,
    /// Transmit slots per queue (rounded up to fill whole pages).
    pub tx_frames: usize,
    /// `PACKET_FANOUT` group id for multi-queue ports; `None` lets the kernel pick
    /// an unused one. Group ids are shared by every process in the network
    /// namespace.
    pub fanout_group: Option<u16>,
    /// Longest a partly filled receive block waits before the kernel hands it
    /// over, in milliseconds. Bounds the added latency at low rates.
    pub block_timeout_ms: u32,
    /// Exchange checksum and segmentation offload metadata with the kernel
    /// (`PACKET_VNET_HDR`; see the module docs).
    pub offloads: bool,
    /// Transmit slots of 64 KiB for TSO frames (a second socket, only with a
    /// TSO pool and `offloads`).
    pub tso_tx_frames: usize,
}

impl Default for AfPacketConfig {
    /// 16 x 256 KiB receive blocks (4 MiB per queue), 512 transmit slots of
    /// 2 KiB, 1 ms block timeout, offloads on with 32 TSO transmit slots of
    /// 68 KiB (only with a TSO pool; the kernel may allocate each in a
    /// 128 KiB block, so up to 4 MiB per queue).
    fn default() -> Self {
        AfPacketConfig {
            block_size: 256 * 1024,
            block_count: 16,
            frame_size: 2048,
            tx_frames: 512,
            fanout_group: None,
            block_timeout_ms: 1,
            offloads: true,
            tso_tx_frames: 32,
        }
    }
}

/// Errors opening an AF_PACKET port.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// The name cannot be a Linux interface name.
    #[error("invalid interface name {iface:?}: must be 1 to 15 bytes without '/', ':', whitespace or NUL")]
    InvalidName {
        /// The name given.
        iface: String,
    },
    /// There is no interface of that name in this network namespace.
    #[error("no such network interface: {iface}")]
    NoSuchInterface {
        /// The name given.
        iface: String,
    },
    /// The process lacks `CAP_NET_RAW`.
    #[error("permission denied opening an AF_PACKET socket for {iface}: needs CAP_NET_RAW")]
    PermissionDenied {
        /// The interface.
        iface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The configuration cannot describe a valid ring.
    #[error(
        "invalid AF_PACKET ring configuration for {iface}: {reason} (block {block_size} B x \
         {block_count}, frame {frame_size} B, {tx_frames} tx frames, page {page_size} B)"
    )]
    InvalidConfig {
        /// The interface.
        iface: String,
        /// What is wrong.
        reason: &'static str,
        /// Configured receive block size.
        block_size: usize,
        /// Configured receive block count.
        block_count: usize,
        /// Configured frame size.
        frame_size: usize,
        /// Configured transmit slots.
        tx_frames: usize,
        /// The system page size.
        page_size: usize,
    },
    /// The kernel refused a ring (size limits, memory).
    #[error(
        "setting up the AF_PACKET {ring} ring for {iface} failed: block {block_size} B x \
         {block_count}, frame {frame_size} B"
    )]
    RingSetup {
        /// The interface.
        iface: String,
        /// "rx" or "tx".
        ring: &'static str,
        /// Block size requested.
        block_size: usize,
        /// Block count requested.
        block_count: usize,
        /// Frame size requested.
        frame_size: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Mapping the rings failed.
    #[error("mapping {len_bytes} bytes of AF_PACKET rings for {iface} failed")]
    Mmap {
        /// The interface.
        iface: String,
        /// Bytes requested.
        len_bytes: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Joining the fanout group failed.
    #[error(
        "joining PACKET_FANOUT group {group:?} on {iface} failed (the interface must be up; \
         the group id must not be used by another socket type or interface)"
    )]
    Fanout {
        /// The interface.
        iface: String,
        /// The group id asked for (`None`: a kernel-chosen one).
        group: Option<u16>,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another socket set-up step failed.
    #[error("{op} for AF_PACKET port on {iface} failed")]
    Socket {
        /// The interface.
        iface: String,
        /// The step, e.g. "bind".
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `open_queues` was asked for zero queues.
    #[error("an AF_PACKET port on {iface} needs at least one queue")]
    NoQueues {
        /// The interface.
        iface: String,
    },
}

/// One queue of an AF_PACKET port; see the module docs.
#[derive(Debug)]
pub struct AfPacketPort {
    sock: PacketSocket,
    rings: RingMap,
    pool: &'static Mempool,
    name: IfName,
    ifindex: u32,
    fanout_group: Option<u16>,
    stats: Arc<QueueStats>,
    /// Receive block being consumed.
    rx_block: usize,
    /// Frames of `rx_block` not yet taken; 0 when no block is open.
    rx_left: u32,
    /// Offset in `rx_block` of the next frame's header.
    rx_off: usize,
    /// Segments of the frame at `rx_off` already delivered: a super-frame
    /// segmented on receive (no TSO pool) that did not fit one burst stays
    /// in the ring until its last segment is out.
    rx_seg_next: usize,
    /// Next transmit slot to fill.
    tx_head: usize,
    /// Largest frame the interface and a slot accept.
    tx_max_len: usize,
    /// A `send()` kick failed; retry from `housekeeping`.
    kick_pending: bool,
    /// `PACKET_VNET_HDR` is on: frames carry a virtio-net header both ways.
    vnet: bool,
    /// Buffers for received super-frames longer than a normal mbuf.
    tso_pool: Option<&'static Mempool>,
    /// The transmit-only socket for TSO frames.
    tso_tx: Option<TsoTx>,
    link: LinkState,
    last_refresh: Instant,
}

impl AfPacketPort {
    /// Opens one queue on interface `iface`, receiving into mbufs from `pool`.
    ///
    /// # Errors
    /// See [`AfPacketError`]: bad name, missing interface, missing `CAP_NET_RAW`,
    /// invalid or refused ring geometry.
    pub fn open(
        iface: &str,
        pool: &'static Mempool,
        cfg: &AfPacketConfig,
    ) -> Result<AfPacketPort, AfPacketError> {
        let mut ports = Self::open_inner(iface, 1, pool, None, cfg)?;
        ports.pop().ok_or_else(|| AfPacketError::NoQueues {
            iface: iface.to_owned(),
        })
    }

    /// Opens `n_queues` queues on `iface`, joined in one `PACKET_FANOUT_HASH`
    /// group so that the kernel spreads flows over them (each flow sticks to one
    /// queue). With one queue and no [`AfPacketConfig::fanout_group`], no group is
    /// joined.
    ///
    /// # Errors
    /// As [`AfPacketPort::open`], plus [`AfPacketError::Fanout`] (e.g. the
    /// interface is down) and [`AfPacketError::NoQueues`].
    pub fn open_queues(
        iface: &str,
        n_queues: usize,
        pool: &'static Mempool,
        cfg: &AfPacketConfig,
    ) -> Result<Vec<AfPacketPort>, AfPacketError> {
        Self::open_inner(iface, n_queues, pool, None, cfg)
    }

    /// As [`AfPacketPort::open_queues`], with `tso_pool` holding buffers for
    /// received TSO super-frames; with it (and [`AfPacketConfig::offloads`])
    /// each queue also transmits TSO frames whole (see the module docs).
    ///
    /// # Errors
    /// As [`AfPacketPort::open_queues`].
    pub fn open_queues_with_tso(
        iface: &str,
        n_queues: usize,
        pool: &'static Mempool,
        tso_pool: Option<&'static Mempool>,
        cfg: &AfPacketConfig,
    ) -> Result<Vec<AfPacketPort>, AfPacketError> {
        Self::open_inner(iface, n_queues, pool, tso_pool, cfg)
    }

    fn open_inner(
        iface: &str,
        n_queues: usize,
        pool: &'static Mempool,
        tso_pool: Option<&'static Mempool>,
        cfg: &AfPacketConfig,
    ) -> Result<Vec<AfPacketPort>, AfPacketError> {
        let name = IfName::new(iface).ok_or_else(|| AfPacketError::InvalidName {
            iface: iface.to_owned(),
        })?;
        if n_queues == 0 {
            return Err(AfPacketError::NoQueues {
                iface: iface.to_owned(),
            });
        }
        let (rx, tx) = layouts(iface, cfg)?;
        let use_fanout = n_queues > 1 || cfg.fanout_group.is_some();
        let mut group = cfg.fanout_group;
        let mut ports = Vec::with_capacity(n_queues);
        for _ in 0..n_queues {
            let mut port = Self::open_one(name, pool, tso_pool, cfg, rx, tx)?;
            if use_fanout {
                let id =
                    port.sock
                        .join_fanout_hash(group)
                        .map_err(|source| AfPacketError::Fanout {
                            iface: iface.to_owned(),
                            group,
                            source,
                        })?;
                // Later queues join the group the first one created or joined.
                group = Some(id);
                port.fanout_group = Some(id);
            }
            // Promiscuous membership after bind/fanout: the socket is complete.
            port.sock
                .add_promisc(port.ifindex)
                .map_err(|source| AfPacketError::Socket {
                    iface: iface.to_owned(),
                    op: "enabling promiscuous mode (PACKET_ADD_MEMBERSHIP)",
                    source,
                })?;
            ports.push(port);
        }
        Ok(ports)
    }

    fn open_one(
        name: IfName,
        pool: &'static Mempool,
        tso_pool: Option<&'static Mempool>,
        cfg: &AfPacketConfig,
        rx: RingLayout,
        tx: RingLayout,
    ) -> Result<AfPacketPort, AfPacketError> {
        let iface = name.as_str();
        let sock = PacketSocket::new().map_err(|source| match source.kind() {
            io::ErrorKind::PermissionDenied => AfPacketError::PermissionDenied {
                iface: iface.to_owned(),
                source,
            },
            _ => AfPacketError::Socket {
                iface: iface.to_owned(),
                op: "socket(AF_PACKET)",
                source,
            },
        })?;
        let sock_err = |op: &'static str| {
            move |source| AfPacketError::Socket {
                iface: iface.to_owned(),
                op,
                source,
            }
        };
        let ifindex =
            netdev::ifindex(sock.fd(), &name).map_err(|source| match source.raw_os_error() {
                Some(libc::ENODEV) => AfPacketError::NoSuchInterface {
                    iface: iface.to_owned(),
                },
                _ => AfPacketError::Socket {
                    iface: iface.to_owned(),
                    op: "looking up the interface index",
                    source,
                },
            })?;
        sock.set_version_v3()
            .map_err(sock_err("setting PACKET_VERSION to TPACKET_V3"))?;
        let ring_err = |ring: &'static str, l: RingLayout| {
            move |source| AfPacketError::RingSetup {
                iface: iface.to_owned(),
                ring,
                block_size: l.block_size,
                block_count: l.block_count,
                frame_size: l.frame_size,
                source,
            }
        };
        // Both options must precede the rings. A kernel without
        // PACKET_VNET_HDR on ring sockets leaves the port without offloads.
        let vnet = cfg.offloads && sock.set_int(PACKET_VNET_HDR, 1).is_ok();
        // The kernel refuses PACKET_LOSS once a ring exists.
        sock.set_int(libc::PACKET_LOSS, 1)
            .map_err(sock_err("setting PACKET_LOSS"))?;
        sock.set_rx_ring(&rx, cfg.block_timeout_ms)
            .map_err(ring_err("rx", rx))?;
        sock.set_tx_ring(&tx).map_err(ring_err("tx", tx))?;
        sock.set_int(libc::PACKET_QDISC_BYPASS, 1)
            .map_err(sock_err("setting PACKET_QDISC_BYPASS"))?;
        sock.set_int(libc::PACKET_IGNORE_OUTGOING, 1)
            .map_err(sock_err("setting PACKET_IGNORE_OUTGOING"))?;
        let rings = sock
            .map_rings(rx, tx)
            .map_err(|source| AfPacketError::Mmap {
                iface: iface.to_owned(),
                len_bytes: rx.len_bytes() + tx.len_bytes(),
                source,
            })?;
        sock.bind(ifindex).map_err(sock_err("bind"))?;
        let tso_tx = match tso_pool {
            Some(_) if vnet && cfg.tso_tx_frames > 0 => {
                Some(TsoTx::open(ifindex, cfg.tso_tx_frames).map_err(|source| {
                    AfPacketError::Socket {
                        iface: iface.to_owned(),
                        op: "setting up the TSO transmit socket",
                        source,
                    }
                })?)
            }
            _ => None,
        };
        let mut port = AfPacketPort {
            sock,
            rings,
            pool,
            name,
            ifindex,
            fanout_group: None,
            stats: Arc::new(QueueStats::default()),
            rx_block: 0,
            rx_left: 0,
            rx_off: 0,
            rx_seg_next: 0,
            tx_head: 0,
            tx_max_len: 0,
            kick_pending: false,
            vnet,
            tso_pool,
            tso_tx,
            link: LinkState::Down,
            last_refresh: Instant::now(),
        };
        port.refresh();
        Ok(port)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether frames carry a virtio-net header (`PACKET_VNET_HDR`).
    pub fn offloads(&self) -> bool {
        self.vnet
    }

    /// The fanout group this queue belongs to, if any.
    pub fn fanout_group(&self) -> Option<u16> {
        self.fanout_group
    }

    /// Re-reads link state, MTU and the kernel's drop counter (three syscalls).
    fn refresh(&mut self) {
        self.last_refresh = Instant::now();
        self.link = match netdev::if_flags(self.sock.fd(), &self.name) {
            Ok(f) if f.up() && f.running() => LinkState::Up,
            _ => LinkState::Down,
        };
        let slot = self.rings.tx_data_capacity();
        self.tx_max_len = match netdev::if_mtu(self.sock.fd(), &self.name) {
            // The kernel accepts MTU + link header + one VLAN tag
            // (af_packet.c `tpacket_snd`).
            Ok(mtu) => slot.min(mtu as usize + ETH_HLEN + VLAN_HLEN),
            Err(_) => slot,
        };
        if let Ok(st) = self.sock.take_stats() {
            self.stats
                .drop_n(DropReason::RxOverrun, u64::from(st.drops));
        }
    }
}

/// The transmit-only socket of a queue that sends TSO frames whole: a ring
/// of slots that each hold a virtio-net header and a 64 KiB frame. Bound with
/// protocol 0, so the kernel gives it no received frame.
#[derive(Debug)]
struct TsoTx {
    sock: PacketSocket,
    rings: RingMap,
    head: usize,
    /// Frames queued since the last kick.
    queued: usize,
    kick_pending: bool,
}

impl TsoTx {
    fn open(ifindex: u32, frames: usize) -> io::Result<TsoTx> {
        let page = rustix::param::page_size();
        let slot = (TX_DATA_OFF + VNET_HDR_LEN + TSO_MAX_FRAME).div_ceil(page) * page;
        let tx = RingLayout {
            block_size: slot,
            block_count: frames,
            frame_size: slot,
        };
        let no_rx = RingLayout {
            block_size: 0,
            block_count: 0,
            frame_size: 0,
        };
        let sock = PacketSocket::new()?;
        sock.set_version_v3()?;
        sock.set_int(PACKET_VNET_HDR, 1)?;
        sock.set_int(libc::PACKET_LOSS, 1)?;
        sock.set_tx_ring(&tx)?;
        sock.set_int(libc::PACKET_QDISC_BYPASS, 1)?;
        let rings = sock.map_rings(no_rx, tx)?;
        sock.bind_tx_only(ifindex)?;
        Ok(TsoTx {
            sock,
            rings,
            head: 0,
            queued: 0,
            kick_pending: false,
        })
    }

    fn kick(&mut self) {
        self.queued = 0;
        self.kick_pending = self.sock.kick_tx().is_err();
    }
}

/// Checks `cfg` and derives the ring layouts.
fn layouts(iface: &str, cfg: &AfPacketConfig) -> Result<(RingLayout, RingLayout), AfPacketError> {
    let page = rustix::param::page_size();
    let bad = |reason| AfPacketError::InvalidConfig {
        iface: iface.to_owned(),
        reason,
        block_size: cfg.block_size,
        block_count: cfg.block_count,
        frame_size: cfg.frame_size,
        tx_frames: cfg.tx_frames,
        page_size: page,
    };
    if cfg.block_size == 0 || !cfg.block_size.is_multiple_of(page) {
        return Err(bad(
            "block size must be a non-zero multiple of the page size",
        ));
    }
    if !cfg.frame_size.is_multiple_of(16) || cfg.frame_size < TX_DATA_OFF + ETH_HLEN + 64 {
        return Err(bad(
            "frame size must be a multiple of 16 holding at least a minimal frame",
        ));
    }
    if cfg.frame_size > cfg.block_size {
        return Err(bad("frame size must not exceed the block size"));
    }
    if cfg.block_count == 0 || cfg.tx_frames == 0 {
        return Err(bad("block count and tx frames must be at least 1"));
    }
    let rx = RingLayout {
        block_size: cfg.block_size,
        block_count: cfg.block_count,
        frame_size: cfg.frame_size,
    };
    // Transmit blocks: the smallest page multiple holding one frame; enough of them
    // for `tx_frames`.
    let tx_block = cfg.frame_size.div_ceil(page) * page;
    let per_block = tx_block / cfg.frame_size;
    let tx = RingLayout {
        block_size: tx_block,
        block_count: cfg.tx_frames.div_ceil(per_block),
        frame_size: cfg.frame_size,
    };
    let max = u32::MAX as usize;
    let total = rx.len_bytes().checked_add(tx.len_bytes());
    if rx.frame_count() > max || tx.frame_count() > max || rx.len_bytes() > max || total.is_none() {
        return Err(bad("ring too large"));
    }
    Ok((rx, tx))
}

#[inline]
fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

#[inline]
fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// One received frame as described by its `tpacket3_hdr`.
struct RxFrame<'a> {
    data: &'a [u8],
    /// Length on the wire (without a stripped VLAN tag).
    wire_len: usize,
    /// (TPID, TCI) of a tag the kernel stripped.
    vlan: Option<(u16, u16)>,
    /// Offset of the next frame's header from this one's; 0 for the last.
    next: usize,
    /// The L4 checksum holds only the pseudo-header sum (`TP_STATUS_CSUMNOTREADY`).
    csum_partial: bool,
    /// The virtio-net header in front of the frame (`PACKET_VNET_HDR`).
    vnet_hdr: Option<&'a [u8; VNET_HDR_LEN]>,
}

/// Parses the frame header at `off` in `block`, and with `vnet` the
/// virtio-net header right before the frame; `None` if either lies outside.
#[inline]
fn parse_frame(block: &[u8], off: usize, vnet: bool) -> Option<RxFrame<'_>> {
    let hdr = block.get(off..)?;
    let next = rd_u32(hdr, PH_NEXT_OFFSET)? as usize;
    let snaplen = rd_u32(hdr, PH_SNAPLEN)? as usize;
    let wire_len = rd_u32(hdr, PH_LEN)? as usize;
    let status = rd_u32(hdr, PH_STATUS)?;
    let mac = rd_u16(hdr, PH_MAC)? as usize;
    let data = hdr.get(mac..mac.checked_add(snaplen)?)?;
    let vlan = if status & libc::TP_STATUS_VLAN_VALID != 0 {
        let tci = rd_u32(hdr, PH_VLAN_TCI)? as u16;
        let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
            rd_u16(hdr, PH_VLAN_TPID)?
        } else {
            TPID_8021Q
        };
        Some((tpid, tci))
    } else {
        None
    };
    let csum_partial = status & libc::TP_STATUS_CSUMNOTREADY != 0;
    let vnet_hdr = if vnet {
        Some(
            hdr.get(mac.checked_sub(VNET_HDR_LEN)?..mac)?
                .try_into()
                .ok()?,
        )
    } else {
        None
    };
    Some(RxFrame {
        data,
        wire_len,
        vlan,
        next,
        csum_partial,
        vnet_hdr,
    })
}

/// The offload metadata of a received frame of `len` bytes from its
/// virtio-net header. The kernel counts `csum_start` from the frame without a
/// tag it stripped; `tagged`: that tag is put back, 4 bytes in front.
#[inline]
fn rx_meta(
    hdr: &[u8; VNET_HDR_LEN],
    len: usize,
    tagged: bool,
) -> Result<vnet::VnetMeta, vnet::VnetError> {
    if !tagged || hdr[vnet::FLAGS_OFF] & vnet::F_NEEDS_CSUM == 0 {
        return vnet::decode(hdr, len, KERNEL_ACCEPT);
    }
    let mut h = *hdr;
    let at = vnet::CSUM_START_OFF;
    let start = u16::from_le_bytes([h[at], h[at + 1]])
        .checked_add(VLAN_HLEN as u16)
        .ok_or(vnet::VnetError::CsumOutsideFrame)?;
    h[at..at + 2].copy_from_slice(&start.to_le_bytes());
    vnet::decode(&h, len, KERNEL_ACCEPT)
}

/// Copies `data` into `out`, inserting the tag `(tpid, tci)` after the two MAC
/// addresses if given. Returns the frame length, or `None` if it does not fit or
/// is too short to carry a tag.
#[inline]
fn copy_frame(out: &mut [u8], data: &[u8], vlan: Option<(u16, u16)>) -> Option<usize> {
    match vlan {
        None => {
            out.get_mut(..data.len())?.copy_from_slice(data);
            Some(data.len())
        }
        Some((tpid, tci)) => {
            let len = data.len() + VLAN_HLEN;
            let (addrs, rest) = (data.get(..12)?, data.get(12..)?);
            let out = out.get_mut(..len)?;
            out[..12].copy_from_slice(addrs);
            out[12..14].copy_from_slice(&tpid.to_be_bytes());
            out[14..16].copy_from_slice(&tci.to_be_bytes());
            out[16..].copy_from_slice(rest);
            Some(len)
        }
    }
}

/// Cuts the received super-frame `f` into normal mbufs from `pool`, from
/// segment `from` on, as many as `burst` has room for; each segment leaves
/// with its checksums complete. Returns the next segment when the burst
/// filled first; `None` when the frame is done (delivered, or dropped and
/// counted).
fn segment_frame(
    pool: &'static Mempool,
    stats: &QueueStats,
    f: &RxFrame<'_>,
    gso: Gso,
    from: usize,
    burst: &mut Burst,
) -> Option<usize> {
    if burst.remaining_capacity() == 0 {
        return Some(from);
    }
    let plan = match TsoPlan::new(f.data, gso) {
        Ok(p) => p,
        Err(e) => {
            stats.drop_one(e.into());
            return None;
        }
    };
    let tag = if f.vlan.is_some() { VLAN_HLEN } else { 0 };
    if plan.max_segment_len() + tag > pool.data_room() as usize {
        stats.drop_one(DropReason::Malformed);
        return None;
    }
    if from == 0 {
        stats.tso_segmented.inc();
    }
    for i in from..plan.segments() {
        if burst.remaining_capacity() == 0 {
            return Some(i);
        }
        let Some(mut m) = pool.alloc() else {
            stats.drop_one(DropReason::NoBuffers);
            continue;
        };
        let room = m.room_mut();
        let n = plan.write_segment(f.data, i, &mut room[tag..]);
        if let Some((tpid, tci)) = f.vlan.filter(|_| n > 0) {
            // The kernel stripped the tag: put it back behind the addresses.
            room.copy_within(tag..tag + 12, 0);
            room[12..14].copy_from_slice(&tpid.to_be_bytes());
            room[14..16].copy_from_slice(&tci.to_be_bytes());
        }
        if n == 0 || m.set_len(n + tag).is_err() {
            stats.drop_one(DropReason::Malformed);
            continue;
        }
        // Cannot fail: checked above.
        let _ = burst.try_push(m);
    }
    None
}

impl Port for AfPacketPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let start = burst.len();
        // Every frame looked at, delivered or dropped, costs one unit, so a burst
        // does bounded work even while dropping.
        let mut budget = burst.remaining_capacity();
        while budget > 0 {
            let Some(block) = self.rings.rx_block(self.rx_block) else {
                break;
            };
            if self.rx_left == 0 {
                // Opening a block just handed over.
                match (rd_u32(block, BD_NUM_PKTS), rd_u32(block, BD_FIRST_PKT)) {
                    (Some(n), Some(first)) => {
                        self.rx_left = n;
                        self.rx_off = first as usize;
                    }
                    _ => self.stats.rx_errors.inc(),
                }
            }
            while self.rx_left > 0 && budget > 0 {
                budget -= 1;
                let (left_before, off_before) = (self.rx_left, self.rx_off);
                let Some(f) = parse_frame(block, self.rx_off, self.vnet) else {
                    // Inconsistent descriptor: skip the rest of the block.
                    self.stats.rx_errors.inc();
                    self.rx_left = 0;
                    break;
                };
                self.rx_left -= 1;
                if self.rx_left > 0 {
                    if f.next == 0 {
                        self.stats.rx_errors.inc();
                        self.rx_left = 0;
                    }
                    self.rx_off += f.next;
                }
                let len = f.data.len() + if f.vlan.is_some() { VLAN_HLEN } else { 0 };
                if f.data.len() < f.wire_len || f.data.len() < ETH_HLEN {
                    self.stats.drop_one(DropReason::Malformed);
                    continue;
                }
                let meta = match f.vnet_hdr.map(|h| rx_meta(h, len, f.vlan.is_some())) {
                    None => vnet::VnetMeta::default(),
                    Some(Ok(meta)) => meta,
                    Some(Err(_)) => {
                        self.stats.drop_one(DropReason::Malformed);
                        continue;
                    }
                };
                let (pool, empty) = if len <= self.pool.data_room() as usize {
                    (self.pool, DropReason::NoBuffers)
                } else {
                    match (meta.gso, self.tso_pool) {
                        (Some(_), Some(p)) if len <= p.data_room() as usize => {
                            (p, DropReason::NoTsoBuffers)
                        }
                        (Some(gso), None) => {
                            let from = self.rx_seg_next;
                            match segment_frame(self.pool, &self.stats, &f, gso, from, burst) {
                                Some(next) => {
                                    // The burst is full: the rest of this
                                    // frame's segments go out next time.
                                    self.rx_seg_next = next;
                                    (self.rx_left, self.rx_off) = (left_before, off_before);
                                    budget = 0;
                                }
                                None => {
                                    self.rx_seg_next = 0;
                                    budget = budget.min(burst.remaining_capacity());
                                }
                            }
                            continue;
                        }
                        _ => {
                            self.stats.drop_one(DropReason::Malformed);
                            continue;
                        }
                    }
                };
                let Some(mut m) = pool.alloc() else {
                    self.stats.drop_one(empty);
                    continue;
                };
                match copy_frame(m.room_mut(), f.data, f.vlan) {
                    Some(n) if m.set_len(n).is_ok() => {
                        if f.vnet_hdr.is_some() {
                            m.set_partial_csum(meta.partial);
                            m.set_gso(meta.gso);
                        } else if f.csum_partial {
                            dataplane::wire::complete_l4_checksum(m.data_mut());
                        }
                        // Cannot fail: `budget` never exceeds the free capacity.
                        let _ = burst.try_push(m);
                    }
                    _ => self.stats.drop_one(DropReason::Malformed),
                }
            }
            if self.rx_left > 0 {
                // Burst full mid-block: continue here next time.
                break;
            }
            self.rings.rx_release(self.rx_block);
            self.rx_block = (self.rx_block + 1) % self.rings.rx_block_count();
        }
        burst.len() - start
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n_slots = self.rings.tx_frame_count();
        let mut taken = 0;
        let mut queued = 0;
        for m in burst.iter() {
            let len = m.len();
            let hdr = if self.vnet {
                match vnet::encode(m.partial_csum(), m.gso(), m.data()) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        self.stats.tx_errors.inc();
                        taken += 1;
                        continue;
                    }
                }
            } else {
                None
            };
            let prefix: &[u8] = hdr.as_ref().map_or(&[], |h| &h[..]);
            if m.gso().is_some() {
                // Only offered with the TSO socket (`accepts_gso`).
                let Some(t) = self.tso_tx.as_mut().filter(|_| len <= TSO_MAX_FRAME) else {
                    self.stats.tx_errors.inc();
                    taken += 1;
                    continue;
                };
                if queued > 0 {
                    // Frames before this one leave first.
                    self.kick_pending = self.sock.kick_tx().is_err();
                    queued = 0;
                }
                if !t.rings.tx_queue(t.head, prefix, m.data()) {
                    break;
                }
                t.head = (t.head + 1) % t.rings.tx_frame_count();
                t.queued += 1;
                taken += 1;
                continue;
            }
            if !(ETH_HLEN..=self.tx_max_len).contains(&len) {
                // The kernel would reject it; drop it here where it can be counted.
                self.stats.tx_errors.inc();
                taken += 1;
                continue;
            }
            if let Some(t) = self.tso_tx.as_mut().filter(|t| t.queued > 0) {
                t.kick();
            }
            if !self.rings.tx_queue(self.tx_head, prefix, m.data()) {
                // Next slot still owned by the kernel: the ring is full.
                break;
            }
            self.tx_head = (self.tx_head + 1) % n_slots;
            taken += 1;
            queued += 1;
        }
        burst.drain(..taken);
        if let Some(t) = self
            .tso_tx
            .as_mut()
            .filter(|t| t.queued > 0 || t.kick_pending)
        {
            t.kick();
        }
        if queued > 0 || self.kick_pending {
            // Frames stay requested in the ring if this fails (e.g. ENOBUFS); the
            // next burst or housekeeping kicks again.
            self.kick_pending = self.sock.kick_tx().is_err();
        }
        taken
    }

    fn link(&self) -> LinkState {
        self.link
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn accepts_partial_csum(&self) -> bool {
        self.vnet
    }

    fn accepts_gso(&self, kind: dataplane::wire::GsoKind) -> bool {
        // UDP trains are cut by weir: not every kernel takes GSO_UDP_L4
        // from a packet socket.
        self.tso_tx.is_some() && kind != dataplane::wire::GsoKind::Udp
    }

    fn housekeeping(&mut self) {
        if self.kick_pending {
            self.kick_pending = self.sock.kick_tx().is_err();
        }
        if let Some(t) = self.tso_tx.as_mut().filter(|t| t.kick_pending) {
            t.kick();
        }
        if self.last_refresh.elapsed() >= REFRESH_PERIOD {
            self.refresh();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a block with one `tpacket3_hdr` at `off` describing `data`.
    fn frame_hdr(block: &mut [u8], off: usize, data: &[u8], status: u32, tci: u32, tpid: u16) {
        let mac = 68usize;
        block[off + PH_NEXT_OFFSET..][..4].copy_from_slice(&0u32.to_ne_bytes());
        block[off + PH_SNAPLEN..][..4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        block[off + PH_LEN..][..4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        block[off + PH_STATUS..][..4].copy_from_slice(&status.to_ne_bytes());
        block[off + PH_MAC..][..2].copy_from_slice(&(mac as u16).to_ne_bytes());
        block[off + PH_VLAN_TCI..][..4].copy_from_slice(&tci.to_ne_bytes());
        block[off + PH_VLAN_TPID..][..2].copy_from_slice(&tpid.to_ne_bytes());
        block[off + mac..][..data.len()].copy_from_slice(data);
    }

    const ARP_START: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06, 0x00, 0x01,
    ];

    #[test]
    fn stripped_vlan_tag_is_reinserted_after_the_addresses() {
        let mut block = vec![0u8; 512];
        frame_hdr(
            &mut block,
            48,
            &ARP_START,
            libc::TP_STATUS_VLAN_VALID,
            0x2005,
            0,
        );
        let f = parse_frame(&block, 48, false).unwrap();
        assert_eq!(f.vlan, Some((0x8100, 0x2005)));
        let mut out = [0u8; 64];
        let n = copy_frame(&mut out, f.data, f.vlan).unwrap();
        assert_eq!(
            &out[..n],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x81, 0x00, 0x20, 0x05,
                0x08, 0x06, 0x00, 0x01
            ]
        );
    }

    #[test]
    fn tag_protocol_is_taken_from_the_header_when_valid() {
        let mut block = vec![0u8; 512];
        let st = libc::TP_STATUS_VLAN_VALID | libc::TP_STATUS_VLAN_TPID_VALID;
        frame_hdr(&mut block, 0, &ARP_START, st, 7, 0x88a8);
        let f = parse_frame(&block, 0, false).unwrap();
        assert_eq!(f.vlan, Some((0x88a8, 7)));
    }

    #[test]
    fn untagged_frames_are_copied_unchanged() {
        let mut block = vec![0u8; 512];
        frame_hdr(&mut block, 0, &ARP_START, 0, 0, 0);
        let f = parse_frame(&block, 0, false).unwrap();
        assert_eq!(f.vlan, None);
        let mut out = [0u8; 16];
        assert_eq!(copy_frame(&mut out, f.data, f.vlan), Some(16));
        assert_eq!(out, ARP_START);
        // No room for a tag: refused, not truncated.
        assert_eq!(copy_frame(&mut out, f.data, Some((0x8100, 1))), None);
    }

    #[test]
    fn headers_pointing_outside_the_block_are_rejected() {
        let mut block = vec![0u8; 128];
        frame_hdr(&mut block, 0, &ARP_START, 0, 0, 0);
        block[PH_SNAPLEN..][..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_frame(&block, 0, false).is_none());
        assert!(parse_frame(&block, 120, false).is_none());
        assert!(parse_frame(&block, usize::MAX, false).is_none());
    }

    #[test]
    fn virtio_net_header_is_read_in_front_of_the_frame() {
        let mut block = vec![0u8; 512];
        frame_hdr(&mut block, 0, &ARP_START, 0, 0, 0);
        // frame_hdr puts the frame at 68: the header occupies 58..68.
        let h = [vnet::F_NEEDS_CSUM, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0];
        block[58..68].copy_from_slice(&h);
        assert_eq!(parse_frame(&block, 0, true).unwrap().vnet_hdr, Some(&h));
        assert_eq!(parse_frame(&block, 0, false).unwrap().vnet_hdr, None);
        // A frame with no room for a header in front of it is refused.
        block[PH_MAC..][..2].copy_from_slice(&4u16.to_ne_bytes());
        assert!(parse_frame(&block, 0, true).is_none());
    }

    #[test]
    fn kernel_header_maps_onto_offload_metadata() {
        use dataplane::wire::{Gso, GsoKind, PartialCsum};
        let tso = [
            vnet::F_NEEDS_CSUM,
            vnet::GSO_TCPV4,
            54,
            0,
            0xa8,
            5,
            34,
            0,
            16,
            0,
        ];
        let m = rx_meta(&tso, 9000, false).unwrap();
        assert_eq!(
            m.partial,
            Some(PartialCsum {
                start: 34,
                offset: 16
            })
        );
        assert_eq!(
            m.gso,
            Some(Gso {
                kind: GsoKind::Tcp4,
                mss: 1448
            })
        );
        // With the stripped tag put back, the checksum starts 4 bytes later.
        let m = rx_meta(&tso, 9004, true).unwrap();
        assert_eq!(m.partial.map(|p| p.start), Some(38));
        // The kernel's ECN bit is taken; CWR handling is the segmenter's.
        let mut ecn = tso;
        ecn[1] |= vnet::GSO_ECN;
        assert_eq!(rx_meta(&ecn, 9000, false).unwrap().gso, m.gso);
        // UDP segmentation (UDP_SEGMENT) is taken.
        let uso = [1, vnet::GSO_UDP_L4, 42, 0, 0xc8, 5, 34, 0, 6, 0];
        assert_eq!(
            rx_meta(&uso, 9000, false).unwrap().gso,
            Some(Gso {
                kind: GsoKind::Udp,
                mss: 1480
            })
        );
        // Refused, so counted as malformed by rx_burst: UFO, an unknown
        // type, no checksum request, offsets past the end (also when the tag
        // moves them there, or would overflow).
        for (h, len, tagged) in [
            ([1, vnet::GSO_UDP, 42, 0, 0xc8, 5, 34, 0, 6, 0], 9000, false),
            ([1, 0x22, 54, 0, 0xa8, 5, 34, 0, 16, 0], 9000, false),
            (
                [0, vnet::GSO_TCPV6, 74, 0, 0x94, 5, 0, 0, 0, 0],
                9000,
                false,
            ),
            ([1, 0, 0, 0, 0, 0, 34, 0, 16, 0], 51, false),
            ([1, 0, 0, 0, 0, 0, 34, 0, 16, 0], 55, true),
            ([1, 0, 0, 0, 0, 0, 0xfe, 0xff, 0, 0], 9000, true),
        ] {
            assert!(rx_meta(&h, len, tagged).is_err(), "{h:?} len {len}");
        }
        assert!(rx_meta(&[1, 0, 0, 0, 0, 0, 34, 0, 16, 0], 52, false).is_ok());
    }

    #[test]
    fn ring_geometry_is_checked() {
        let page = rustix::param::page_size();
        let (rx, tx) = layouts("x", &AfPacketConfig::default()).unwrap();
        assert_eq!(rx.len_bytes(), 16 * 256 * 1024);
        assert!(tx.frame_count() >= 512);
        assert_eq!(tx.block_size % page, 0);
        for cfg in [
            AfPacketConfig {
                block_size: page + 1,
                ..Default::default()
            },
            AfPacketConfig {
                frame_size: 2047,
                ..Default::default()
            },
            AfPacketConfig {
                frame_size: 64,
                ..Default::default()
            },
            AfPacketConfig {
                block_count: 0,
                ..Default::default()
            },
            AfPacketConfig {
                tx_frames: 0,
                ..Default::default()
            },
            AfPacketConfig {
                block_size: page,
                frame_size: 2 * page,
                ..Default::default()
            },
        ] {
            let e = layouts("veth9", &cfg).unwrap_err();
            assert!(e.to_string().contains("veth9"), "{e}");
        }
    }
}
