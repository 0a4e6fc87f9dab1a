//! Network-interface names and the `SIOC*` interface ioctls (flags, MTU), issued
//! on any socket of the namespace the interface lives in.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// A validated Linux interface name: 1 to 15 bytes, no NUL, `/`, `:` or
/// whitespace, not `.` or `..` (the kernel's `dev_valid_name` rules).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct IfName {
    /// NUL-padded, as in `struct ifreq`.
    bytes: [u8; libc::IFNAMSIZ],
    len: usize,
}

impl IfName {
    /// Checks `name`; `None` if the kernel would refuse it.
    pub(crate) fn new(name: &str) -> Option<IfName> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() >= libc::IFNAMSIZ || name == "." || name == ".." {
            return None;
        }
        if b.iter()
            .any(|&c| c == 0 || c == b'/' || c == b':' || c.is_ascii_whitespace())
        {
            return None;
        }
        let mut bytes = [0u8; libc::IFNAMSIZ];
        bytes[..b.len()].copy_from_slice(b);
        Some(IfName {
            bytes,
            len: b.len(),
        })
    }

    /// Reads a name the kernel wrote into an `ifr_name` field.
    pub(super) fn from_c(raw: &[libc::c_char; libc::IFNAMSIZ]) -> Option<IfName> {
        let mut bytes = [0u8; libc::IFNAMSIZ];
        for (d, s) in bytes.iter_mut().zip(raw) {
            *d = *s as u8;
        }
        let len = bytes.iter().position(|&c| c == 0)?;
        IfName::new(std::str::from_utf8(&bytes[..len]).ok()?)
    }

    /// The name.
    pub(crate) fn as_str(&self) -> &str {
        // Only ever built from a `&str` prefix (see `new`).
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    pub(super) fn to_ifreq(self) -> libc::ifreq {
        // SAFETY: `ifreq` is plain old data (a char array and a union of integers,
        // sockaddrs and a raw pointer); all-zero bytes are a valid value of each.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(self.bytes) {
            *d = s as libc::c_char;
        }
        req
    }
}

impl std::fmt::Debug for IfName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Interface flags as read by `SIOCGIFFLAGS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IfFlags(u32);

impl IfFlags {
    /// Administratively up (`IFF_UP`).
    pub(crate) fn up(self) -> bool {
        self.0 & libc::IFF_UP as u32 != 0
    }

    /// Operationally up: carrier present (`IFF_RUNNING`).
    pub(crate) fn running(self) -> bool {
        self.0 & libc::IFF_RUNNING as u32 != 0
    }
}

/// A datagram socket for interface ioctls in the caller's network namespace.
/// `AF_UNIX` needs no protocol module and no privilege; the kernel falls through
/// to the generic device ioctls for commands the family does not handle.
pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Index of interface `name` (`ENODEV` if there is none).
pub(crate) fn ifindex(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<u32> {
    Ok(rustix::net::netdevice::name_to_index(sock, name.as_str())?)
}

/// Issues an `ifreq` ioctl in place.
///
/// # Safety
/// `request` must be an ioctl that reads and/or writes a `struct ifreq` and
/// nothing else (no pointer inside the request is followed).
pub(super) unsafe fn ifreq_ioctl(
    sock: BorrowedFd<'_>,
    request: libc::Ioctl,
    req: &mut libc::ifreq,
) -> io::Result<()> {
    // SAFETY: `req` is a valid, exclusively borrowed `ifreq` for the duration of
    // the call, and the caller guarantees `request` accesses only that struct.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the interface flags (`SIOCGIFFLAGS`).
pub(crate) fn if_flags(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<IfFlags> {
    let mut req = name.to_ifreq();
    // SAFETY: SIOCGIFFLAGS reads the name from and writes `ifru_flags` into `req`.
    unsafe { ifreq_ioctl(sock, libc::SIOCGIFFLAGS, &mut req)? };
    // SAFETY: the kernel filled `ifru_flags` (a c_short, valid for any bits).
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(IfFlags(u32::from(flags as u16)))
}

/// Sets `IFF_UP` on the interface (`SIOCGIFFLAGS` then `SIOCSIFFLAGS`; needs
/// `CAP_NET_ADMIN`).
pub(crate) fn set_if_up(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<()> {
    let mut req = name.to_ifreq();
    // SAFETY: SIOCGIFFLAGS reads the name from and writes `ifru_flags` into `req`.
    unsafe { ifreq_ioctl(sock, libc::SIOCGIFFLAGS, &mut req)? };
    // SAFETY: `ifru_flags` was just written by the kernel; reading and updating
    // a c_short union field is valid for any bits.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and `ifru_flags` from `req`.
    unsafe { ifreq_ioctl(sock, libc::SIOCSIFFLAGS, &mut req) }
}

/// Reads the interface MTU (`SIOCGIFMTU`).
pub(crate) fn if_mtu(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<u32> {
    let mut req = name.to_ifreq();
    // SAFETY: SIOCGIFMTU reads the name from and writes `ifru_mtu` into `req`.
    unsafe { ifreq_ioctl(sock, libc::SIOCGIFMTU, &mut req)? };
    // SAFETY: the kernel filled `ifru_mtu` (a c_int, valid for any bits).
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as u32)
}

/// `ETHTOOL_GDRVINFO` (linux/ethtool.h).
const ETHTOOL_GDRVINFO: u32 = 3;
/// Size of `struct ethtool_drvinfo`: `cmd`, five 32-byte strings, 12
/// reserved bytes, five u32 counts.
const DRVINFO_BYTES: usize = 4 + 5 * 32 + 12 + 5 * 4;

/// True if interface `name` is driven by the veth driver (`SIOCETHTOOL`
/// `ETHTOOL_GDRVINFO`, what `ethtool -i` shows).
pub(crate) fn is_veth(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<bool> {
    let mut info = [0u8; DRVINFO_BYTES];
    info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    let mut req = name.to_ifreq();
    req.ifr_ifru.ifru_data = info.as_mut_ptr().cast();
    // SAFETY: SIOCETHTOOL reads the name and `ifru_data` from `req`, then
    // reads `cmd` from and writes at most `sizeof(struct ethtool_drvinfo)`
    // bytes into the buffer `ifru_data` points to; `info` is that large,
    // 4-aligned enough for the kernel's byte copies, and outlives the call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCETHTOOL,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let driver = &info[4..36];
    Ok(driver.starts_with(b"veth\0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_kernel_rules() {
        assert_eq!(IfName::new("veth0").map(|n| n.as_str().len()), Some(5));
        assert!(IfName::new("abcdefghijklmno").is_some());
        for bad in [
            "",
            "abcdefghijklmnop",
            "a/b",
            "a:b",
            "a b",
            ".",
            "..",
            "a\0",
        ] {
            assert!(IfName::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn kernel_written_names_round_trip() {
        let mut raw = [0 as libc::c_char; libc::IFNAMSIZ];
        for (d, s) in raw.iter_mut().zip(b"tap7") {
            *d = *s as libc::c_char;
        }
        assert_eq!(IfName::from_c(&raw).unwrap().as_str(), "tap7");
    }
}
