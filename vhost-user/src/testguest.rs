//! A guest and two frontends for tests that drive a vhost-user device from
//! outside, as a VM or a hostile tenant would (feature `test-utils`).
//!
//! [`Guest`] is guest memory in one memfd shared with the device as one region
//! at guest address 0, its rings and frames written with `pwrite`, so that no
//! test needs `unsafe`. It sets itself up through the `vhost` crate's
//! `Frontend`. [`RawFrontend`] writes any message the library's frontend
//! refuses to send: a 12-byte header, a payload, and fds as SCM_RIGHTS.
//!
//! Layer: ports (test and benchmark traffic only, never linked into weir).
//!
//! # Memory
//!
//! ```text
//!  0x0000  vq 0 (rx): descriptors | +0x1000 avail | +0x2000 used
//!  0x4000  vq 1 (tx): descriptors | +0x1000 avail | +0x2000 used
//!  ....    tx buffers from `Layout::tx_buf`, one per descriptor
//! ```
//!
//! Queues of up to 256 descriptors fit this layout.

use std::fs::File;
use std::io::{self, IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use crate::defs::{
    F_PROTOCOL_FEATURES, F_VERSION_1, NET_HDR_BYTES, NET_HDR_F_NEEDS_CSUM, NET_HDR_GSO_TCPV4,
    NET_HDR_GSO_TCPV6,
};

/// The frontend's virtual address of guest address 0 (only translated, never
/// mapped).
pub const UADDR: u64 = 0x7f00_0000_0000;

/// vhost-user spec: the message flag asking for a reply to any request.
pub const NEED_REPLY: u32 = 0x8;

/// Message codes and feature bits as the vhost-user and virtio specs number
/// them, written out here rather than taken from the library, so that tests
/// hold the library to the spec.
pub mod spec {
    /// `VHOST_USER_GET_FEATURES`.
    pub const GET_FEATURES: u32 = 1;
    /// `VHOST_USER_SET_FEATURES`.
    pub const SET_FEATURES: u32 = 2;
    /// `VHOST_USER_SET_OWNER`.
    pub const SET_OWNER: u32 = 3;
    /// `VHOST_USER_SET_MEM_TABLE`.
    pub const SET_MEM_TABLE: u32 = 5;
    /// `VHOST_USER_SET_VRING_NUM`.
    pub const SET_VRING_NUM: u32 = 8;
    /// `VHOST_USER_SET_VRING_CALL`.
    pub const SET_VRING_CALL: u32 = 13;
    /// `VHOST_USER_GET_PROTOCOL_FEATURES`.
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    /// `VHOST_USER_SET_PROTOCOL_FEATURES`.
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    /// `VHOST_USER_NET_SET_MTU`.
    pub const NET_SET_MTU: u32 = 20;
    /// `VIRTIO_F_VERSION_1` (virtio 1.1, 6).
    pub const F_VERSION_1: u64 = 1 << 32;
    /// `VHOST_USER_F_PROTOCOL_FEATURES`.
    pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
    /// Protocol feature `MQ`.
    pub const PROTO_MQ: u64 = 1 << 0;
    /// Protocol feature `REPLY_ACK`.
    pub const PROTO_REPLY_ACK: u64 = 1 << 3;
    /// Protocol feature `NET_MTU`.
    pub const PROTO_NET_MTU: u64 = 1 << 4;
}

/// The largest number of fds one SCM_RIGHTS message carries (Linux
/// `SCM_MAX_FD`).
const MAX_FDS: usize = 253;

/// Ring addresses (descriptors, available, used) of virtqueue `vq`.
pub fn ring_at(vq: u16) -> (u64, u64, u64) {
    let base = 0x4000 * u64::from(vq);
    (base, base + 0x1000, base + 0x2000)
}

/// A split-ring descriptor as a driver writes it (virtio 1.1, 2.6.5): buffer
/// address, length, flags and next, little-endian.
pub fn desc_bytes(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&flags.to_le_bytes());
    b[14..].copy_from_slice(&next.to_le_bytes());
    b
}

/// The virtio-net header a driver with HOST_TSO4/6 puts before a TCP frame
/// whose TCP header starts `l4` bytes in (virtio 1.1, 5.1.6.2): NEEDS_CSUM,
/// GSO TCPV4 or, for `v6`, TCPV6, `hdr_len` up to the end of a 20-byte TCP
/// header, `gso_size` `mss`, and the checksum at `l4` + 16.
pub fn tso_net_hdr(v6: bool, l4: usize, mss: u16) -> [u8; NET_HDR_BYTES] {
    let mut h = [0u8; NET_HDR_BYTES];
    h[0] = NET_HDR_F_NEEDS_CSUM;
    h[1] = if v6 {
        NET_HDR_GSO_TCPV6
    } else {
        NET_HDR_GSO_TCPV4
    };
    h[2..4].copy_from_slice(&((l4 + 20) as u16).to_le_bytes());
    h[4..6].copy_from_slice(&mss.to_le_bytes());
    h[6..8].copy_from_slice(&(l4 as u16).to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    h
}

/// A 64-byte broadcast frame (EtherType 0x88b5, local experimental) from
/// `src`.
pub fn frame(src: [u8; 6]) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// An anonymous memfd of `len` bytes.
pub fn memfd(len: u64) -> io::Result<File> {
    let fd = rustix::fs::memfd_create("guest", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, len)?;
    Ok(File::from(fd))
}

/// The one memory region of guest address `gpa` and `size` bytes, backed by
/// `mem` from its start.
pub fn region(mem: &File, gpa: u64, size: u64) -> VhostUserMemoryRegionInfo {
    VhostUserMemoryRegionInfo {
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: UADDR + gpa,
        mmap_offset: 0,
        mmap_handle: mem.as_raw_fd(),
    }
}

/// Where a [`Guest`] keeps what.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Bytes of guest memory.
    pub mem_bytes: u64,
    /// Descriptors per virtqueue (at most 256).
    pub queue_size: u16,
    /// Guest address of the first TX buffer.
    pub tx_buf: u64,
    /// Bytes from one TX buffer to the next.
    pub tx_stride: u64,
}

/// How [`Guest::attach`] sets the device up.
#[derive(Debug, Clone, Copy)]
pub struct Handshake {
    /// Features acked on top of VERSION_1 and PROTOCOL_FEATURES, where offered.
    pub features: u64,
    /// Protocol features acked, where offered.
    pub protocol: VhostUserProtocolFeatures,
    /// Enable each ring once it is set up; otherwise see [`Guest::enable`].
    pub enable: bool,
}

/// A guest: memfd memory with one ring per virtqueue (RX and TX), driven
/// through `pwrite`. It asks for interrupts (avail flags 0, no EVENT_IDX).
#[derive(Debug)]
pub struct Guest {
    /// The guest memory.
    pub mem: File,
    /// Where things are in it.
    pub layout: Layout,
    /// The next available index per virtqueue.
    pub avail_idx: [u16; 2],
    /// Call eventfds per virtqueue; a test may drop them once passed.
    pub call: [Option<EventFd>; 2],
    /// Kick eventfds per virtqueue; a test may drop them once passed.
    pub kick: [Option<EventFd>; 2],
}

impl Guest {
    /// A guest with zeroed memory; its eventfds are created with
    /// `eventfd_flags` (0: blocking, as a careless frontend passes them).
    pub fn new(layout: Layout, eventfd_flags: i32) -> io::Result<Guest> {
        let ev = || EventFd::new(eventfd_flags).map(Some);
        Ok(Guest {
            mem: memfd(layout.mem_bytes)?,
            layout,
            avail_idx: [0; 2],
            call: [ev()?, ev()?],
            kick: [ev()?, ev()?],
        })
    }

    /// Writes `b` at guest address `addr`.
    ///
    /// # Panics
    /// If the write fails (an address outside the memfd's size).
    pub fn write(&self, addr: u64, b: &[u8]) {
        self.mem.write_all_at(b, addr).expect("guest memory write");
    }

    /// Reads the little-endian u16 at guest address `addr`.
    ///
    /// # Panics
    /// If the read fails.
    pub fn read_u16(&self, addr: u64) -> u16 {
        let mut b = [0u8; 2];
        self.mem
            .read_exact_at(&mut b, addr)
            .expect("guest memory read");
        u16::from_le_bytes(b)
    }

    /// Writes a descriptor at guest address `at` (a ring's or an indirect
    /// table's entry).
    pub fn put_desc(&self, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
        self.write(at, &desc_bytes(addr, len, flags, next));
    }

    /// Writes descriptor `i` of virtqueue `vq`.
    pub fn desc(&self, vq: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.put_desc(ring_at(vq).0 + 16 * u64::from(i), addr, len, flags, next);
    }

    /// Makes chain `head` of virtqueue `vq` available.
    pub fn push(&mut self, vq: u16, head: u16) {
        let (_, avail, _) = ring_at(vq);
        let k = usize::from(vq);
        let slot = u64::from(self.avail_idx[k] % self.layout.queue_size);
        self.write(avail + 4 + 2 * slot, &head.to_le_bytes());
        self.avail_idx[k] = self.avail_idx[k].wrapping_add(1);
        self.write(avail + 2, &self.avail_idx[k].to_le_bytes());
    }

    /// The device's used index of virtqueue `vq`.
    pub fn used_idx(&self, vq: u16) -> u16 {
        self.read_u16(ring_at(vq).2 + 2)
    }

    /// Signals the kick eventfd of virtqueue `vq`, if the guest still has it.
    pub fn kick(&self, vq: u16) {
        if let Some(k) = &self.kick[usize::from(vq)] {
            let _ = k.write(1);
        }
    }

    /// Posts `f` on the TX queue (vq 1) behind a zeroed virtio-net header, in
    /// one descriptor: the next slot's and its buffer (TX buffers are reused
    /// once the ring wraps, completed or not).
    pub fn send_frame(&mut self, f: &[u8]) {
        let head = self.avail_idx[1] % self.layout.queue_size;
        let at = self.layout.tx_buf + self.layout.tx_stride * u64::from(head);
        let mut b = vec![0u8; NET_HDR_BYTES];
        b.extend_from_slice(f);
        self.write(at, &b);
        self.desc(1, head, at, b.len() as u32, 0, 0);
        self.push(1, head);
    }

    /// Posts `n` frames with [`Guest::send_frame`]: frame `i` is [`frame`]
    /// from 02:00:00:00:00:`i`.
    pub fn send_frames(&mut self, n: u8) {
        for i in 0..n {
            self.send_frame(&frame([0x02, 0, 0, 0, 0, i]));
        }
    }

    /// Connects to `sock` and sets the device up (see [`Guest::attach_with`]).
    pub fn attach(&self, sock: &Path, how: &Handshake) -> Result<Frontend, vhost::Error> {
        self.attach_with(Frontend::connect(sock, 3)?, how)
    }

    /// The handshake through `fe`: owner, features, protocol features, the
    /// memory table, and both rings with the guest's eventfds. A device that
    /// does not offer PROTOCOL_FEATURES is a `FeatureMismatch`; a guest
    /// whose eventfds are gone, `InvalidParam` (both vhost-user protocol
    /// errors).
    pub fn attach_with(&self, mut fe: Frontend, how: &Handshake) -> Result<Frontend, vhost::Error> {
        use vhost::vhost_user::Error;
        let protocol = |e: Error| vhost::Error::VhostUserProtocol(e);
        fe.set_owner()?;
        let offered = fe.get_features()?;
        if offered & F_PROTOCOL_FEATURES == 0 {
            return Err(protocol(Error::FeatureMismatch));
        }
        fe.set_features(F_VERSION_1 | F_PROTOCOL_FEATURES | (offered & how.features))?;
        let proto = fe.get_protocol_features()?;
        fe.set_protocol_features(proto & how.protocol)?;
        fe.set_mem_table(&[region(&self.mem, 0, self.layout.mem_bytes)])?;
        let size = self.layout.queue_size;
        for vq in 0..2u16 {
            let (desc, avail, used) = ring_at(vq);
            let i = usize::from(vq);
            let (Some(call), Some(kick)) = (&self.call[i], &self.kick[i]) else {
                return Err(protocol(Error::InvalidParam));
            };
            fe.set_vring_num(i, size)?;
            fe.set_vring_addr(
                i,
                &VringConfigData {
                    queue_max_size: size,
                    queue_size: size,
                    flags: 0,
                    desc_table_addr: UADDR + desc,
                    used_ring_addr: UADDR + used,
                    avail_ring_addr: UADDR + avail,
                    log_addr: None,
                },
            )?;
            fe.set_vring_base(i, 0)?;
            fe.set_vring_call(i, call)?;
            fe.set_vring_kick(i, kick)?;
            if how.enable {
                fe.set_vring_enable(i, true)?;
            }
        }
        Ok(fe)
    }

    /// Enables both rings.
    pub fn enable(fe: &mut Frontend) -> Result<(), vhost::Error> {
        for vq in 0..2 {
            fe.set_vring_enable(vq, true)?;
        }
        Ok(())
    }
}

/// A raw frontend: writes any bytes and fds it likes.
#[derive(Debug)]
pub struct RawFrontend(pub UnixStream);

impl RawFrontend {
    /// Connects to `sock`; replies are waited for 5 s at most.
    pub fn connect(sock: &Path) -> io::Result<RawFrontend> {
        let s = UnixStream::connect(sock)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(RawFrontend(s))
    }

    /// A message header: `request`, version 1 with `flags`, and a payload of
    /// `size` bytes.
    pub fn header(request: u32, flags: u32, size: u32) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&request.to_le_bytes());
        b[4..8].copy_from_slice(&(1 | flags).to_le_bytes());
        b[8..].copy_from_slice(&size.to_le_bytes());
        b
    }

    /// Sends `b` with `fds` attached (at most 253), all in one `sendmsg`.
    pub fn send_bytes(&self, b: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} fds do not fit one message", fds.len()),
            ));
        }
        let n = sendmsg(&self.0, &[IoSlice::new(b)], &mut cmsg, SendFlags::NOSIGNAL)?;
        if n != b.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("{n} of {} bytes sent", b.len()),
            ));
        }
        Ok(())
    }

    /// Sends one message: header and `payload`, `fds` attached.
    pub fn send(
        &self,
        request: u32,
        flags: u32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<()> {
        let mut b = RawFrontend::header(request, flags, payload.len() as u32).to_vec();
        b.extend_from_slice(payload);
        self.send_bytes(&b, fds)
    }

    /// Reads one reply: (request, payload).
    pub fn reply(&mut self) -> io::Result<(u32, Vec<u8>)> {
        let mut h = [0u8; 12];
        self.0.read_exact(&mut h)?;
        let size = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let mut p = vec![0u8; size];
        self.0.read_exact(&mut p)?;
        Ok((u32::from_le_bytes([h[0], h[1], h[2], h[3]]), p))
    }

    /// Reads one reply to `request` that carries a u64: features, or an ack
    /// (0 for success).
    ///
    /// # Errors
    /// The read failed or timed out, or the reply is to another request or
    /// is not 8 bytes long.
    pub fn reply_u64(&mut self, request: u32) -> io::Result<u64> {
        let (r, p) = self.reply()?;
        match <[u8; 8]>::try_from(p.as_slice()) {
            Ok(value) if r == request => Ok(u64::from_le_bytes(value)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a reply of {} bytes to request {r}, not 8 to {request}",
                    p.len()
                ),
            )),
        }
    }

    /// Sends `request` without payload and reads the u64 it returns
    /// (GET_FEATURES, GET_PROTOCOL_FEATURES).
    ///
    /// # Errors
    /// As [`RawFrontend::send`] and [`RawFrontend::reply_u64`].
    pub fn get_u64(&mut self, request: u32) -> io::Result<u64> {
        self.send(request, 0, &[], &[])?;
        self.reply_u64(request)
    }

    /// Sends `request` with NEED_REPLY; true if the backend acked success.
    ///
    /// # Errors
    /// As [`RawFrontend::send`] and [`RawFrontend::reply_u64`].
    pub fn request_acked(
        &mut self,
        request: u32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<bool> {
        self.send(request, NEED_REPLY, payload, fds)?;
        Ok(self.reply_u64(request)? == 0)
    }

    /// A session's start as a frontend that plays by the rules: SET_OWNER,
    /// GET_FEATURES, SET_FEATURES with `features`, GET_PROTOCOL_FEATURES,
    /// then SET_PROTOCOL_FEATURES with `protocol`, acked if `protocol` has
    /// REPLY_ACK (`features` needs F_PROTOCOL_FEATURES for the last two).
    ///
    /// # Errors
    /// As [`RawFrontend::send`] and [`RawFrontend::reply_u64`];
    /// `InvalidData` if the backend does not offer every bit of `features`
    /// and `protocol`, or refuses `protocol`.
    pub fn negotiate(&mut self, features: u64, protocol: u64) -> io::Result<()> {
        self.send(spec::SET_OWNER, 0, &[], &[])?;
        let offered = self.get_u64(spec::GET_FEATURES)?;
        check_offered("features", offered, features)?;
        self.send(spec::SET_FEATURES, 0, &features.to_le_bytes(), &[])?;
        let offered = self.get_u64(spec::GET_PROTOCOL_FEATURES)?;
        check_offered("protocol features", offered, protocol)?;
        let payload = protocol.to_le_bytes();
        if protocol & spec::PROTO_REPLY_ACK == 0 {
            self.send(spec::SET_PROTOCOL_FEATURES, 0, &payload, &[])
        } else if self.request_acked(spec::SET_PROTOCOL_FEATURES, &payload, &[])? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("protocol features {protocol:#x} refused"),
            ))
        }
    }

    /// SET_OWNER, then GET_FEATURES: true if a well-formed reply came within the read
    /// timeout.
    pub fn answers(&mut self) -> bool {
        self.send(spec::SET_OWNER, 0, &[], &[]).is_ok() && self.get_u64(spec::GET_FEATURES).is_ok()
    }

    /// True once the backend closed the connection within `wait`; what it
    /// sent before is skipped.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        if self.0.set_read_timeout(Some(wait)).is_err() {
            return false;
        }
        let mut b = [0u8; 64];
        loop {
            match self.0.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// `InvalidData` unless `offered` has every bit of `wanted`.
fn check_offered(what: &str, offered: u64, wanted: u64) -> io::Result<()> {
    let missing = wanted & !offered;
    if missing == 0 {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} {missing:#x} not offered (offered: {offered:#x})"),
    ))
}

/// The payload of a SET_MEM_TABLE message: a region count, padding, then each
/// region as (guest address, size, user address, mmap offset).
pub fn mem_table_payload(regions: &[(u64, u64, u64, u64)]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&(regions.len() as u32).to_le_bytes());
    p.extend_from_slice(&[0; 4]);
    for &(gpa, size, uaddr, off) in regions {
        for v in [gpa, size, uaddr, off] {
            p.extend_from_slice(&v.to_le_bytes());
        }
    }
    p
}

/// A device listening on `socket` with one queue pair.
pub fn server_config(socket: PathBuf) -> crate::VhostUserConfig {
    crate::VhostUserConfig {
        socket,
        mode: crate::Mode::Server,
        queues: 1,
        mac: None,
        mtu: None,
    }
}

/// Panics with the packages to install unless DPDK's `dpdk-testpmd` (a
/// virtio-user frontend for end-to-end tests) is on the `PATH`.
pub fn require_testpmd() {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v dpdk-testpmd"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "dpdk-testpmd is not installed: apt-get install dpdk-dev librte-net-vhost23 \
         librte-mempool-ring23 librte-net-virtio23 (scripts/setup.sh)"
    );
}

/// The EAL arguments of a `dpdk-testpmd` whose one port is a virtio-user
/// frontend on `socket`: lcores 0 and 1, 512 MB of ordinary memory (no PCI,
/// hugepages or telemetry), runtime files in `/var/run/dpdk/<prefix>`, and
/// the vdev `net_virtio_user0,path=<socket>,<vdev_options>`. The
/// application's own arguments follow after a `--`.
pub fn testpmd_eal_args(prefix: &str, socket: &Path, vdev_options: &str) -> Vec<String> {
    [
        "-l",
        "0,1",
        "--no-pci",
        "--no-huge",
        "-m",
        "512",
        "--no-telemetry",
        &format!("--file-prefix={prefix}"),
        "--vdev",
        &format!("net_virtio_user0,path={},{vdev_options}", socket.display()),
    ]
    .map(String::from)
    .to_vec()
}

/// Holds the process's test cases to one at a time (fd, thread and mapping
/// counts need a quiet process); a panicked case does not poison it.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls `f` every 5 ms until it returns true or `secs` pass, then once more;
/// whether it held. The bounded wait of tests that synchronise on a condition
/// rather than sleep.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// File descriptors the process holds.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
