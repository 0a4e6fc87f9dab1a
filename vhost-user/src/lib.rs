//! Poll-mode vhost-user backend: VM vNICs (QEMU `-netdev vhost-user`) and DPDK
//! `net_virtio_user` attach to weir as ports.
//!
//! Layer: ports. Depends on `dataplane` (the [`Port`](dataplane::Port) trait,
//! mbufs, stats) and on rust-vmm's `vhost`/`vhost-user-backend` for the protocol.
//!
//! # Design
//!
//! ## Protocol and device logic are separate
//!
//! Bottom to top:
//! - [`guest_mem`]: the only unsafe module; checked access to guest memory,
//!   and its SIGBUS guard against memory files that shrink.
//! - [`vring`]: weir's split-ring fast path (on the packet path).
//! - `shared`: handing rings to workers and confirmed stops.
//! - [`port`]: [`VhostUserPort`], one queue pair as a `Port`.
//! - [`msg`] and `relay` (protocol): framing and weir's own checks of every
//!   frontend message, before the library sees it.
//! - `frontend` (feature `frontend`): the driver side (a virtio-net frontend
//!   in shared memory), for benchmarks and tests: it plays the VM.
//! - `backend` (protocol, virtio-net device model) and `control` (socket,
//!   reconnects): the control side, never on the packet path.
//!
//! The protocol state machine (feature negotiation, memory table, vring
//! messages, REPLY_ACK) is rust-vmm's `VhostUserDaemon`, one per connection.
//! weir's backend does no packet work inside it: `backend::CtlVring` wraps the
//! library's vring state and, around every change the frontend makes, takes
//! the ring away from its worker and republishes it if it is still startable.
//! The data path ([`vring`]) is weir's own: it reads guest memory through
//! [`guest_mem`] only, never through the library.
//!
//! ```text
//!  frontend ──socket──▶ relay ──private socket──▶ VhostUserDaemon ─▶ NetBackend
//!  (QEMU, virtio-user)  (msg::check,               (protocol)          │ CtlVring
//!                        deadline, fds)                                ▼
//!                                                  shared::VqShared (publish / withdraw)
//!                                                                      │ one atomic per burst
//!  worker ── rx_burst/tx_burst ── VhostUserPort ── vring::SplitRing ◀──┘
//! ```
//!
//! ## Ring handoff and the confirmed stop
//!
//! Control publishes a validated `ReadyVring` (ring addresses checked against
//! the memory table, size, call eventfd, start position) into an `ArcSwap`
//! slot and bumps a generation counter. The worker compares the generation
//! once per burst and picks up the change. To stop a ring (GET_VRING_BASE,
//! a new memory table, disconnect, any vring change) control empties the slot,
//! bumps the generation and waits, bounded, until the worker has acked it after
//! storing its ring position; only then does it answer the frontend, so the
//! position reported is the one the worker really reached. Memory safety does
//! not depend on that wait: a ring holds `Arc`s of the mapping it was built
//! on, so an old mapping lives until the last worker drops it.
//!
//! ## Untrusted input
//!
//! Everything from the frontend and the guest is hostile until checked:
//! - Messages: must arrive whole within 2 s of their first byte (else the
//!   connection is dropped; each device has its own control, relay and library
//!   threads, so other devices never wait). Memory regions must be 1..=8, non
//!   empty, not overflowing, not overlapping (guest or frontend address) and
//!   backed by a regular file at least `mmap_offset + size` long (`fstat`
//!   before anything maps it: touching a mapping past its file's end raises
//!   SIGBUS). Queue sizes must be powers of two up to 1024. Vring fd messages
//!   must carry exactly the fds their NOFD flag promises, other messages
//!   none, and no message more than [`msg::MAX_FDS`] however its bytes are
//!   split (else the connection is dropped and the fds closed at once); a
//!   call fd must be an eventfd. Refused messages are answered with a NACK
//!   when the frontend asked for REPLY_ACK, never forwarded, and their fds
//!   closed.
//! - Call eventfds: the frontend shares their O_NONBLOCK flag and counter, so
//!   a write to one may block whatever weir set. Only the device's interrupt
//!   thread (`notify`) writes them; workers ask it with an atomic flag and a
//!   write to weir's own eventfd, and the control thread interrupts a blocked
//!   write (a signal, `sys`) at disconnect and shutdown.
//! - Rings: see [`vring`]: every descriptor is copied before it is checked,
//!   chains are bounded by the table size, buffers must lie inside one region,
//!   and the available index may not run ahead by more than the queue size.
//!   A violation puts that queue in the error state (`PortError` drop, link
//!   Down, `error()` text) until the frontend sets the ring up again; it never
//!   panics.
//! - Memory files that shrink after the table was accepted: every accepted
//!   table is registered with [`guest_mem::guard`], whose SIGBUS handler
//!   replaces a mapping that faulted with zero pages (the access completes
//!   harmlessly) and marks it lost; the worker sees that after its burst and
//!   puts the queue in the error state (`MemoryLost`). Faults outside guest
//!   memory go to the previous handler. Files sealed with `F_SEAL_SHRINK`
//!   (QEMU's memfd backend by default) cannot shrink at all.
//!
//! Errors are reported, not fatal: [`VhostUserDevice::error`] gives the last
//! refused message or broken queue; the device keeps listening (server) or
//! reconnecting with exponential backoff from 100 ms to 1 s (client).
//!
//! ## What is negotiated
//!
//! virtio features: VERSION_1, MRG_RXBUF, EVENT_IDX, INDIRECT_DESC,
//! NOTIFY_ON_EMPTY, STATUS (config `status` reads LINK_UP), CTRL_VQ, CTRL_RX
//! and MQ (up to [`MAX_QUEUE_PAIRS`] pairs; `max_virtqueue_pairs` in the
//! config space), CSUM, GUEST_CSUM and MTU (see below). Protocol features:
//! MQ, REPLY_ACK, CONFIG, NET_MTU. The control queue is served on the
//! control side ([`ctrlq`]): VQ_PAIRS_SET within range and the VLAN table
//! commands are acknowledged, anything else unknown gets VIRTIO_NET_ERR.
//! Packed rings, dirty logging (live migration), IOMMU and postcopy are not
//! offered.
//!
//! ## Receive filters
//!
//! With CTRL_RX negotiated, the guest's PROMISC and ALLMULTI modes, its MAC
//! tables (TABLE_SET) and its address (ADDR_SET, accepted though
//! CTRL_MAC_ADDR is not offered: it only names one more own address) are
//! recorded ([`ctrlq::ctrl_reply`], every length checked; a malformed command
//! is VIRTIO_NET_ERR and changes nothing; a table of more than 64 entries
//! lets its whole class through, as a NIC filter that overflows does). The
//! other RX commands need CTRL_RX_EXTRA, not offered, and are refused; RX and
//! MAC commands without CTRL_RX negotiated too.
//! [`VhostUserDevice::rx_mode`] reports the state with a generation that
//! changes with it; the control plane turns it, with the port's own `mac`,
//! into the switch's receive filter (`dataplane::switch::rxfilter`) and
//! republishes the port's policy when the generation moves: the workers read
//! only published tables, never this state. A driver starts promiscuous
//! until its first RX or MAC command (a Linux driver sends them when the
//! interface comes up); a reset or disconnect forgets everything the guest
//! set.
//!
//! QEMU does not pass the control queue to a vhost-user backend: its
//! virtio-net device serves CTRL_VQ, CTRL_RX and the MAC table itself (they
//! are not among the features it asks the backend about), so the guest's
//! filter commands never reach weir. Frontends that hand weir the control
//! queue as a vring get the filter; QEMU guests get the one the port's
//! `mac` gives (unicast to it, broadcast and all multicast).
//!
//! ## Checksum offload and MTU
//!
//! - Guest TX with VIRTIO_NET_F_CSUM: a header with NEEDS_CSUM has its
//!   `csum_start`/`csum_offset` checked against the frame (the two-byte field
//!   must lie inside it) and recorded on the mbuf
//!   ([`dataplane::Mbuf::partial_csum`]); the checksum is not computed here.
//!   Dropped as `Malformed`: offsets outside the frame, NEEDS_CSUM without
//!   CSUM negotiated, any `gso_type` other than NONE.
//! - The metadata travels through the switch (flood copies keep it) to the
//!   egress port. A vhost-user port whose guest negotiated
//!   VIRTIO_NET_F_GUEST_CSUM gets the frame unchanged with NEEDS_CSUM and the
//!   offsets in its header; one that did not gets the checksum completed by
//!   the vring code just before the copy. Every other port (AF_PACKET,
//!   AF_XDP, TAP, NICs) reports `accepts_partial_csum() == false` and the
//!   worker completes the checksum before `tx_burst`
//!   ([`dataplane::Port`], "Checksum offload"). Either way a frame's checksum
//!   is computed at most once, only when someone needs it; guest-to-guest
//!   traffic between two GUEST_CSUM guests is never summed by weir.
//! - DATA_VALID is never set on guest RX: weir verifies no checksums, and
//!   the frames it finishes itself on the way to a guest go only to guests
//!   without GUEST_CSUM, which may not be sent DATA_VALID (virtio 1.2
//!   §5.1.6.4.1).
//! - VIRTIO_NET_F_MTU: config `mtu` is 1500, lowered so that a frame of that
//!   MTU plus an Ethernet header and one VLAN tag fits an mbuf's data room
//!   ([`defs::guest_mtu`]), and to [`VhostUserConfig::mtu`] when given (the
//!   runtime gives what the bridge's tunnels carry); not offered if that is
//!   below 68. A Linux guest
//!   adopts the value as its interface MTU, which is why it is not the full
//!   data room: guests bridged to 1500-byte kernel ports would send frames
//!   those ports refuse. Larger frames are still dropped as `Malformed`.
//!   QEMU does not take either from the backend: it emulates the virtio-net
//!   config space itself and offers MTU only with its `host_mtu` property,
//!   which it announces with VHOST_USER_NET_SET_MTU to backends offering the
//!   NET_MTU protocol feature. `vhost` 0.18's request handler answers that
//!   message as invalid, so the relay (`relay`) serves the feature: it adds
//!   NET_MTU to the library's protocol features, and accepts an MTU in
//!   68..=[`defs::max_guest_mtu`] (the data room less a VLAN-tagged
//!   Ethernet header, and at most [`VhostUserConfig::mtu`]) or refuses it
//!   like any refused message. The accepted
//!   value is shown by [`VhostUserDevice::mtu`] and enforced towards the
//!   guest: longer frames to it are dropped as `mtu-exceeded` (a tagged frame
//!   may be one tag longer; segmentation offload frames are exempt).
//!   Frontends that read the backend's config space (CONFIG protocol
//!   feature) see the offered `mtu`.
//! - Segmentation offloads: HOST_TSO4/6 and GUEST_TSO4/6 are offered when
//!   the device has a pool of large buffers ([`create_with_tso`]): a guest's
//!   TSO frame of up to 64 KiB is copied into one such buffer, and handed
//!   whole to a guest with GUEST_TSO or cut into segments by the worker for
//!   any other port. UFO and the other GSO types are not offered.
//!
//! Workers busy-poll the rings; kicks from the guest are suppressed and ignored.
//! The guest's call eventfd is kicked at most once per burst, only when the guest
//! asked for it (EVENT_IDX `used_event` or the NO_INTERRUPT flag), by the
//! device's interrupt thread.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod control;
pub mod ctrlq;
pub mod defs;
#[cfg(feature = "frontend")]
pub mod frontend;
pub mod guest_mem;
pub mod msg;
mod notify;
pub mod port;
mod relay;
mod shared;
pub mod socket_path;
mod sys;
#[cfg(feature = "test-utils")]
pub mod testguest;
pub mod vring;

pub use control::{
    create, create_with_owner, create_with_tso, max_fds, ConnectionEvents, Mode, VhostUserConfig,
    VhostUserDevice, VhostUserError, MAX_QUEUE_PAIRS,
};
pub use port::VhostUserPort;
pub use socket_path::SocketOwner;
