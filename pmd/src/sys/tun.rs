//! TUN/TAP queues: opening `/dev/net/tun` and attaching it to an interface with
//! `TUNSETIFF`.
//!
//! The `tun-tap` crate was considered; it does not expose `IFF_MULTI_QUEUE` and
//! goes through a C shim, so the one ioctl needed is issued here directly.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

use super::netdev::{ifreq_ioctl, IfName};

/// Where attaching a TAP queue failed.
#[derive(Debug)]
pub(crate) enum TunError {
    /// Opening `/dev/net/tun`.
    Open(io::Error),
    /// The `TUNSETIFF` ioctl.
    SetIff(io::Error),
}

/// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`, linux/if_tun.h).
const TUNSETOFFLOAD: libc::Ioctl = 0x4004_54d0;
/// `TUN_F_*` offload bits (linux/if_tun.h): partial checksums, TSO over IPv4
/// and IPv6, TSO frames with the ECN bit.
pub(crate) const TUN_F_CSUM: u32 = 0x01;
/// See [`TUN_F_CSUM`].
pub(crate) const TUN_F_TSO4: u32 = 0x02;
/// See [`TUN_F_CSUM`].
pub(crate) const TUN_F_TSO6: u32 = 0x04;
/// See [`TUN_F_CSUM`].
pub(crate) const TUN_F_TSO_ECN: u32 = 0x08;

/// Opens a non-blocking `/dev/net/tun` descriptor and attaches it as a queue of
/// TAP interface `name` (`IFF_TAP | IFF_NO_PI`, plus `IFF_MULTI_QUEUE` and
/// `IFF_VNET_HDR` if asked), creating the interface if it does not exist.
/// Returns the descriptor and the interface's final name.
pub(crate) fn open_tap(
    name: &IfName,
    multi_queue: bool,
    vnet_hdr: bool,
) -> Result<(OwnedFd, IfName), TunError> {
    let fd = rustix::fs::open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| TunError::Open(e.into()))?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    if vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    let mut req = name.to_ifreq();
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads the name and `ifru_flags` from `req` and writes the
    // final name back into it; `fd` is an open `/dev/net/tun` descriptor.
    unsafe { ifreq_ioctl(fd.as_fd(), libc::TUNSETIFF, &mut req) }.map_err(TunError::SetIff)?;
    let actual = IfName::from_c(&req.ifr_name)
        .ok_or_else(|| TunError::SetIff(io::Error::from(io::ErrorKind::InvalidData)))?;
    Ok((fd, actual))
}

/// Tells the kernel which offloads the reader of `fd` handles (`TUNSETOFFLOAD`
/// with `TUN_F_*` bits): frames it sends may then carry partial checksums and
/// be TSO super-frames, described in their virtio-net header.
pub(crate) fn set_offload(fd: &OwnedFd, flags: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long) and
    // touches no memory of ours; `fd` is an open `/dev/net/tun` descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
