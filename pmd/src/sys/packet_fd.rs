//! Calls on the descriptor of any `AF_PACKET` socket: `SOL_PACKET` options
//! and binding to an interface. Exported as `pmd::packet_fd` for the
//! sockets of test tools (`weir-testkit`), which need the same calls
//! without this crate's rings.
//!
//! Control path only: options and binding are set-up; the statistics read
//! ([`get_option`]) is housekeeping.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

mod sealed {
    /// Keeps [`super::OptionValue`] to the types this module vouches for.
    pub trait Sealed {}
}

/// A `SOL_PACKET` option value the kernel reads or fills as bytes. Sealed:
/// implemented only here, for types it is sound for.
///
/// # Safety
/// Implement only for `repr(C)` integer-only types without padding, for
/// which every bit pattern is valid.
pub unsafe trait OptionValue: Copy + sealed::Sealed {}

impl sealed::Sealed for libc::c_int {}
// SAFETY: a C int.
unsafe impl OptionValue for libc::c_int {}
impl sealed::Sealed for libc::packet_mreq {}
// SAFETY: i32, u16, u16, [u8; 8]: 16 bytes, no padding.
unsafe impl OptionValue for libc::packet_mreq {}
impl sealed::Sealed for libc::tpacket_req3 {}
// SAFETY: seven u32 fields, no padding.
unsafe impl OptionValue for libc::tpacket_req3 {}
impl sealed::Sealed for libc::tpacket_stats {}
// SAFETY: two u32 fields, no padding.
unsafe impl OptionValue for libc::tpacket_stats {}
impl sealed::Sealed for libc::tpacket_stats_v3 {}
// SAFETY: three u32 fields, no padding.
unsafe impl OptionValue for libc::tpacket_stats_v3 {}

/// Sets `SOL_PACKET` option `opt` of `fd` to `val`.
///
/// # Errors
/// What `setsockopt(2)` reports.
pub fn set_option<T: OptionValue>(fd: BorrowedFd<'_>, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to `size_of::<T>()` initialised bytes (T:
    // OptionValue has no padding) that live for the call; the kernel only
    // reads them.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads `SOL_PACKET` option `opt` of `fd` into `val`.
///
/// # Errors
/// What `getsockopt(2)` reports.
pub fn get_option<T: OptionValue>(
    fd: BorrowedFd<'_>,
    opt: libc::c_int,
    val: &mut T,
) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is valid for writes of `len` bytes and any bit pattern
    // is a valid T (T: OptionValue); `len` is a valid in/out length.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (val as *mut T).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds `fd` to interface `ifindex`, receiving protocol `proto` (host
/// order; `ETH_P_ALL` for every protocol, 0 for none).
///
/// # Errors
/// `InvalidInput` for an `ifindex` beyond `i32`, or what `bind(2)` reports.
pub fn bind(fd: BorrowedFd<'_>, ifindex: u32, proto: u16) -> io::Result<()> {
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: proto.to_be(),
        sll_ifindex: to_c_ifindex(ifindex)?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `sll` is an initialised `sockaddr_ll` that lives for the call,
    // passed with its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts interface `ifindex` into promiscuous mode for as long as `fd` is
/// open (the kernel counts such memberships per interface).
///
/// # Errors
/// `InvalidInput` for an `ifindex` beyond `i32`, or what `setsockopt(2)`
/// reports.
pub fn add_promisc(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    let mreq = libc::packet_mreq {
        mr_ifindex: to_c_ifindex(ifindex)?,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    set_option(fd, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

/// `ifindex` as the kernel's structures hold it.
fn to_c_ifindex(ifindex: u32) -> io::Result<libc::c_int> {
    libc::c_int::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}
