//! The AF_XDP socket boundary: one UMEM, its fill and completion rings, and the
//! socket's rx and tx rings, behind a safe interface.
//!
//! Layer: ports, OS boundary. On the packet path. This is the only module of the
//! AF_XDP driver that uses `unsafe`: every `xsk-rs` ring and frame accessor is
//! `unsafe` because the library cannot know who owns a UMEM frame at a given
//! moment. This module tracks that ownership and exposes only operations that
//! respect it.
//!
//! # Frame ownership
//!
//! Every frame of the UMEM is, at any moment, in exactly one of these places:
//!
//! - the **kernel**: on the fill ring or rx ring (receive frames), or on the tx ring
//!   or completion ring (transmit frames);
//! - `rx_spare`: receive frames we hold that did not fit on the fill ring;
//! - `tx_free`: transmit frames we hold, ready to be filled;
//! - a stack scratch array inside one method call of [`Xsk`], between taking a
//!   frame off a ring or stack and handing it on.
//!
//! Frames are split once at start-up: the first `rx_frames` descriptors returned
//! by [`Umem::new`] only ever travel fill ring → rx ring → (us) → fill ring; the
//! rest only travel `tx_free` → tx ring → completion ring → `tx_free`. A descriptor
//! is never duplicated, so a frame is touched by user space only while it is in
//! one of the last three places, which is what the `xsk-rs` accessors require.

#![allow(unsafe_code)]

use std::io::{self, Write};
use std::num::NonZeroU32;

use dataplane::{Mbuf, MAX_BURST};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::socket::{SocketCreateError, XdpStatistics};
use xsk_rs::umem::UmemCreateError;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Sizes and modes for [`Xsk::open`], already validated by the caller.
#[derive(Clone, Copy, Debug)]
pub(super) struct XskParams {
    pub queue_id: u32,
    pub frame_count: NonZeroU32,
    pub frame_size: FrameSize,
    pub rx_size: QueueSize,
    pub tx_size: QueueSize,
    pub fill_size: QueueSize,
    pub comp_size: QueueSize,
    pub zero_copy: bool,
    /// Copy mode with the XDP program in the driver hook (veth).
    pub native_copy: bool,
    pub need_wakeup: bool,
}

/// Why [`Xsk::open`] failed.
#[derive(Debug)]
pub(super) enum OpenError {
    /// The UMEM frame layout was rejected by `xsk-rs`.
    Layout,
    /// Mapping or registering the UMEM failed.
    Umem(UmemCreateError),
    /// Creating or binding the socket (including loading and attaching the
    /// XDP program) failed.
    Socket(SocketCreateError),
    /// The socket shares an existing UMEM and got no fill/completion rings; we never
    /// share, so this means the library state is not what we expect.
    NoFillRing,
}

impl OpenError {
    /// The OS error number behind the failure, if there is one.
    pub(super) fn errno(&self) -> Option<i32> {
        let source = match self {
            OpenError::Umem(e) => std::error::Error::source(e),
            OpenError::Socket(e) => std::error::Error::source(e),
            OpenError::Layout | OpenError::NoFillRing => None,
        };
        source
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error)
    }
}

/// What one transmit call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TxDone {
    /// Frames taken from the front of the input (queued plus dropped).
    pub taken: usize,
    /// Of those, frames dropped because they were empty or larger than a UMEM
    /// frame's data room.
    pub oversize: usize,
    /// Of those, frames dropped because the tx ring refused a reservation it had
    /// advertised room for (never expected).
    pub ring_short: usize,
    /// The wake-up `sendto` failed with an unexpected error.
    pub kick_failed: bool,
}

/// One AF_XDP socket with its own UMEM; see the module docs for frame ownership.
pub(super) struct Xsk {
    // Field order is drop order. The rings and the UMEM hold reference-counted
    // handles to the socket and UMEM internals, so any order is sound; dropping the
    // rings first merely releases the socket (and detaches the XDP program) before
    // the UMEM mapping goes away.
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    umem: Umem,
    /// Receive frames we hold that are waiting for room on the fill ring.
    rx_spare: Vec<FrameDesc>,
    /// Transmit frames we hold. Capacity = number of transmit frames; it never
    /// grows, because only transmit frames are ever pushed.
    tx_free: Vec<FrameDesc>,
    tx_frames: usize,
    tx_ring_size: u32,
    data_room: usize,
    need_wakeup: bool,
}

// Port values move between threads when they are handed to a worker; make sure
// that stays possible.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Xsk>();
};

impl Xsk {
    /// Creates the UMEM, binds a socket to `iface`/`params.queue_id` (which loads
    /// and attaches libxdp's default redirect program), and posts every receive
    /// frame to the fill ring.
    ///
    /// `rx_frames` of the `params.frame_count` frames are used for receiving, the
    /// rest for transmitting; the caller ensures both are non-zero.
    pub(super) fn open(
        iface: &Interface,
        params: &XskParams,
        rx_frames: u32,
    ) -> Result<Xsk, OpenError> {
        let umem_cfg = UmemConfig::builder()
            .frame_size(params.frame_size)
            .fill_queue_size(params.fill_size)
            .comp_queue_size(params.comp_size)
            .frame_headroom(0)
            .build()
            .map_err(|_| OpenError::Layout)?;
        let data_room = umem_cfg.mtu() as usize;
        let (umem, mut frames) =
            Umem::new(umem_cfg, params.frame_count, false).map_err(OpenError::Umem)?;

        // Copy mode runs the XDP program in the generic (skb) hook, which every
        // driver has; on a veth in the driver hook (see the module docs,
        // "Checksums"); zero-copy needs driver support.
        let (xdp_mode, bind_mode) = if params.zero_copy {
            (XdpFlags::XDP_FLAGS_DRV_MODE, BindFlags::XDP_ZEROCOPY)
        } else if params.native_copy {
            (XdpFlags::XDP_FLAGS_DRV_MODE, BindFlags::XDP_COPY)
        } else {
            (XdpFlags::XDP_FLAGS_SKB_MODE, BindFlags::XDP_COPY)
        };
        let mut bind = bind_mode;
        if params.need_wakeup {
            bind |= BindFlags::XDP_USE_NEED_WAKEUP;
        }
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(params.rx_size)
            .tx_queue_size(params.tx_size)
            .libxdp_flags(LibxdpFlags::empty())
            // Refuse to replace an XDP program someone else attached.
            .xdp_flags(xdp_mode | XdpFlags::XDP_FLAGS_UPDATE_IF_NOEXIST)
            .bind_flags(bind)
            .build();

        // SAFETY: `umem` was created just above and is not shared with any other
        // socket, so the (iface, queue) pair is not yet bound through it and
        // leaving XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD unset is allowed.
        let (tx, rx, rings) = unsafe { Socket::new(sock_cfg, &umem, iface, params.queue_id) }
            .map_err(OpenError::Socket)?;
        let (fill, comp) = rings.ok_or(OpenError::NoFillRing)?;

        let tx_descs = frames.split_off(rx_frames as usize);
        let tx_frames = tx_descs.len();
        let mut tx_free = Vec::with_capacity(tx_frames);
        tx_free.extend(tx_descs);
        let mut rx_spare = Vec::with_capacity(frames.len());
        rx_spare.extend(frames);

        let mut xsk = Xsk {
            rx,
            tx,
            fill,
            comp,
            umem,
            rx_spare,
            tx_free,
            tx_frames,
            tx_ring_size: params.tx_size.get(),
            data_room,
            need_wakeup: params.need_wakeup,
        };
        xsk.refill();
        Ok(xsk)
    }

    /// Bytes of packet data one UMEM frame holds.
    pub(super) fn data_room(&self) -> usize {
        self.data_room
    }

    /// Moves held receive frames onto the fill ring, as many as fit.
    fn refill(&mut self) {
        if self.rx_spare.is_empty() {
            return;
        }
        // Producing a descriptor hands it to the kernel; it is removed from
        // `rx_spare` below, untouched until the rx ring returns it.
        // SAFETY: every descriptor in `rx_spare` came from this UMEM (`Umem::new`
        // or this socket's rx ring) and is held by us, not by the kernel.
        let n = unsafe { self.fill.produce(&self.rx_spare) };
        let left = self.rx_spare.len() - n;
        // `produce` takes from the front; keep the tail.
        self.rx_spare.copy_within(n.., 0);
        self.rx_spare.truncate(left);
    }

    /// Wakes the kernel's receive side if it asked to be woken (fill ring
    /// `need_wakeup`). At most one `poll` syscall.
    ///
    /// # Errors
    /// The `poll` error, other than `EINTR`.
    pub(super) fn rx_kick(&mut self) -> io::Result<()> {
        if self.need_wakeup && self.fill.needs_wakeup() {
            self.fill.wakeup(self.rx.fd_mut(), 0)?;
        }
        Ok(())
    }

    /// Receives up to `max` (at most [`MAX_BURST`]) frames, calling `each` with the
    /// bytes of every one, then returns all of them to the fill ring. Returns how
    /// many frames were received.
    pub(super) fn rx(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> usize {
        let mut descs = [FrameDesc::default(); MAX_BURST];
        let want = max.min(MAX_BURST);
        // SAFETY: `descs` are scratch slots we own; the rx ring fills them with
        // descriptors of frames of this UMEM that the kernel has just handed back
        // to us (see the module docs).
        let n = unsafe { self.rx.consume(&mut descs[..want]) };
        for desc in &descs[..n] {
            // SAFETY: `desc` was just consumed from this socket's rx ring, so it
            // names a frame of `self.umem` that the kernel no longer writes; we do
            // not hand it back until after this read.
            let data = unsafe { self.umem.data(desc) };
            each(data.contents());
        }
        if n > 0 {
            // SAFETY: the `n` descriptors were consumed from our rx ring above, are
            // held only here, and are not used after being produced.
            let put = unsafe { self.fill.produce(&descs[..n]) };
            // The fill ring has room for every receive frame when sized as
            // `AfXdpPort::open` sizes it; keep any that do not fit anyway.
            for desc in &descs[put..n] {
                if self.rx_spare.len() < self.rx_spare.capacity() {
                    self.rx_spare.push(*desc);
                }
            }
        }
        self.refill();
        n
    }

    /// Takes finished transmit frames back from the completion ring.
    pub(super) fn reclaim(&mut self) {
        let mut descs = [FrameDesc::default(); MAX_BURST];
        loop {
            let room = (self.tx_free.capacity() - self.tx_free.len()).min(MAX_BURST);
            if room == 0 {
                return;
            }
            // SAFETY: `descs` are scratch slots; the completion ring fills them with
            // transmit frames of this UMEM that the kernel has finished with.
            let n = unsafe { self.comp.consume(&mut descs[..room]) };
            // No reallocation: `room` bounds `n` by the spare capacity.
            self.tx_free.extend_from_slice(&descs[..n]);
            if n < room {
                return;
            }
        }
    }

    /// Transmit frames submitted and not yet completed.
    pub(super) fn tx_outstanding(&self) -> usize {
        self.tx_frames - self.tx_free.len()
    }

    /// Copies frames from the front of `frames` into free transmit frames and
    /// submits them, then kicks the kernel once if needed. Stops at the first frame
    /// for which there is no free UMEM frame or tx ring slot.
    pub(super) fn tx(&mut self, frames: &[Mbuf]) -> TxDone {
        let mut done = TxDone::default();
        self.reclaim();
        let limit = frames
            .len()
            .min(MAX_BURST)
            .min(self.tx_free.len())
            .min(self.tx.nb_free(MAX_BURST as u32) as usize);
        let mut descs = [FrameDesc::default(); MAX_BURST];
        let mut k = 0;
        for m in &frames[..limit] {
            let bytes = m.data();
            if bytes.is_empty() || bytes.len() > self.data_room {
                done.taken += 1;
                done.oversize += 1;
                continue;
            }
            // Always `Some`: `limit <= tx_free.len()` and one pop per frame.
            let Some(desc) = self.tx_free.pop() else {
                break;
            };
            done.taken += 1;
            descs[k] = desc;
            // SAFETY: `descs[k]` was just taken off `tx_free`, so it names a transmit
            // frame of this UMEM that the kernel does not own; it is written here
            // and only handed to the kernel afterwards.
            let mut data = unsafe { self.umem.data_mut(&mut descs[k]) };
            let mut cursor = data.cursor();
            cursor.set_pos(0);
            // Cannot fail: `bytes.len() <= data_room`, the frame's data capacity.
            if cursor.write_all(bytes).is_err() {
                self.tx_free.push(descs[k]);
                done.oversize += 1;
                continue;
            }
            k += 1;
        }
        if k == 0 {
            return done;
        }
        // SAFETY: the `k` descriptors were filled above from frames we held; after
        // this call the submitted ones belong to the kernel until the completion
        // ring returns them, and we keep no copy of them.
        let sent = unsafe { self.tx.produce(&descs[..k]) };
        if sent < k {
            // We are the only producer and checked for room above, so this does
            // not happen; if it does, take the frames back and count them.
            self.tx_free.extend_from_slice(&descs[sent..k]);
            done.ring_short = k - sent;
        }
        if sent > 0 && self.kick_tx().is_err() {
            done.kick_failed = true;
        }
        done
    }

    /// Submitted descriptors the kernel has not yet taken off the tx ring.
    pub(super) fn tx_ring_pending(&mut self) -> u32 {
        self.tx_ring_size - self.tx.nb_free_exact().min(self.tx_ring_size)
    }

    /// One `sendto` wake-up, if the kernel needs one. Copy mode transmits only from
    /// `sendto`, so without `need_wakeup` every submission is kicked.
    ///
    /// # Errors
    /// The `sendto` error, other than the transient ones (`EAGAIN`, `EBUSY`,
    /// `ENOBUFS`, `ENETDOWN`) that `xsk-rs` already ignores.
    pub(super) fn kick_tx(&mut self) -> io::Result<()> {
        if !self.need_wakeup || self.tx.needs_wakeup() {
            self.tx.wakeup()?;
        }
        Ok(())
    }

    /// The kernel's counters for this socket (one `getsockopt`).
    ///
    /// # Errors
    /// The `getsockopt` error.
    pub(super) fn statistics(&self) -> io::Result<XdpStatistics> {
        self.rx.fd().xdp_statistics()
    }
}

/// Silences libbpf's and libxdp's default printers, which write to stderr from
/// inside the library: harmless notes ("skipping unrecognized data section") and
/// fallbacks that succeed (no multi-program dispatcher) read like failures to an
/// operator. Real failures still reach the caller as errors with context. Set
/// `WEIR_BPF_DEBUG=1` to keep the libraries' own messages. Called once, before the
/// first socket is opened.
pub(super) fn quiet_bpf_library_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("WEIR_BPF_DEBUG").is_some() {
            return;
        }
        // SAFETY: both setters only store a function pointer in the library's global
        // state, which `Once` makes us do before any other thread of ours uses the
        // library; the callbacks ignore their arguments (never touch the va_list).
        unsafe {
            libbpf_sys::libbpf_set_print(Some(quiet_libbpf));
            libxdp_sys::libxdp_set_print(Some(quiet_libxdp));
        }
    });
}

unsafe extern "C" fn quiet_libbpf(
    _level: libbpf_sys::libbpf_print_level,
    _fmt: *const std::os::raw::c_char,
    _args: *mut libbpf_sys::__va_list_tag,
) -> std::os::raw::c_int {
    0
}

unsafe extern "C" fn quiet_libxdp(
    _level: libxdp_sys::libxdp_print_level,
    _fmt: *const std::os::raw::c_char,
    _args: *mut libxdp_sys::__va_list_tag,
) -> std::os::raw::c_int {
    0
}
