//! OS boundary of the connection lifecycle: taking back an fd the protocol
//! library leaks, and interrupting a thread blocked in a guest's eventfd.
//!
//! Layer: control. Never on the packet path.
//!
//! - `vhost-user-backend` 0.24 registers the consumer side of the exit event
//!   ([`VhostUserBackend::exit_event`](vhost_user_backend::VhostUserBackend::exit_event))
//!   with its epoll with `into_raw_fd` and never closes it: one fd per
//!   connection. [`ExitEvent`] remembers which fd that is and closes it once
//!   the library is gone, after checking (through `/proc/self/fdinfo`'s
//!   `eventfd-id`) that the fd still refers to our eventfd, so a library that
//!   starts closing it itself is never double-closed.
//! - A guest's call eventfd shares its file description, and so its
//!   O_NONBLOCK flag, with the frontend: a write to it can block whatever weir
//!   does first. Only the device's interrupt thread (`crate::notify`) writes
//!   it; [`interrupt`] sends that thread a signal whose handler does nothing
//!   and is installed without SA_RESTART, so a blocked `write` returns EINTR.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmm_sys_util::eventfd::{EventFd, EFD_CLOEXEC, EFD_NONBLOCK};

/// The `eventfd-id` the kernel shows for `fd` in `/proc/self/fdinfo` (unique
/// among live eventfds), if `fd` is an open eventfd.
fn eventfd_id(fd: RawFd) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("eventfd-id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The exit event handed to the library for one connection, and the fd of it
/// that the library keeps without closing.
#[derive(Debug)]
pub(crate) struct ExitEvent {
    /// Our own reference to the eventfd: keeps its id unique while we check.
    keep: EventFd,
    /// The consumer fd given to the library.
    handed: Option<(RawFd, u64)>,
}

impl ExitEvent {
    /// A new exit eventfd (non-blocking, close-on-exec).
    pub fn new() -> std::io::Result<ExitEvent> {
        Ok(ExitEvent {
            keep: EventFd::new(EFD_NONBLOCK | EFD_CLOEXEC)?,
            handed: None,
        })
    }

    /// The (consumer, notifier) pair for the library. Once only: later calls
    /// return None.
    pub fn hand_out(&mut self) -> Option<(EventConsumer, EventNotifier)> {
        if self.handed.is_some() {
            return None;
        }
        let consumer = self.keep.try_clone().ok()?;
        let notifier = self.keep.try_clone().ok()?;
        let id = eventfd_id(consumer.as_raw_fd())?;
        let (c, n) = (consumer.into_raw_fd(), notifier.into_raw_fd());
        self.handed = Some((c, id));
        // SAFETY: `into_raw_fd` released fresh fds from `try_clone`; each now
        // gets exactly one owner.
        Some(unsafe { (EventConsumer::from_raw_fd(c), EventNotifier::from_raw_fd(n)) })
    }

    /// Closes the consumer fd the library kept, if it still is ours. Call only
    /// once the library's daemon (and its epoll threads) are gone.
    pub fn reclaim(mut self) {
        let Some((fd, id)) = self.handed.take() else {
            return;
        };
        if eventfd_id(fd) == Some(id) && fd != self.keep.as_raw_fd() {
            // SAFETY: `fd` is open and refers to our eventfd (same id, and
            // `keep` holds that eventfd so its id cannot have been reused);
            // the only fds of it are `keep` (excluded above), the notifier
            // (closed with the library's epoll handler) and the consumer the
            // library leaked. Nobody else will close it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

/// The signal that interrupts a thread blocked in a guest eventfd write.
fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMAX() - 3
}

extern "C" fn on_interrupt(_sig: libc::c_int) {}

/// Installs the do-nothing handler (once). False if it cannot be, or if the
/// signal already has a handler that is not ours (then blocked writes cannot
/// be interrupted and the thread is left behind instead).
pub(crate) fn install_interrupt() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let sig = interrupt_signal();
        // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, no flags,
        // empty mask) for the kernel to fill in.
        let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: queries the disposition into a local.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut prev) } != 0
            || prev.sa_sigaction != libc::SIG_DFL
        {
            return false;
        }
        // SAFETY: as above.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_interrupt as *const () as libc::sighandler_t;
        // No SA_RESTART: the interrupted write must return EINTR.
        act.sa_flags = 0;
        // SAFETY: `act.sa_mask` is a valid sigset_t to clear.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: installs a handler that does nothing (async-signal-safe).
        unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) == 0 }
    })
}

/// Adds 1 to the guest's call eventfd `call` with exactly one `write(2)`.
/// An [`interrupt`] ends a write blocked in a full counter with EINTR, which
/// is returned here: `EventNotifier::notify` goes through `write_all`,
/// which retries on EINTR and so would block again, for good.
pub(crate) fn signal_call_once(call: &EventNotifier) -> std::io::Result<()> {
    let one = 1u64.to_ne_bytes();
    // SAFETY: `call` owns the fd and is borrowed for the whole call, so the
    // fd stays open; the buffer is 8 initialised bytes.
    let n = unsafe { libc::write(call.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    if n == one.len() as isize {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Interrupts whatever blocking call `thread` is in (see the module docs).
pub(crate) fn interrupt(thread: &std::thread::JoinHandle<()>) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the handle is not joined or detached while borrowed, so its
    // pthread_t is valid; the signal's handler was installed by
    // `install_interrupt` (the caller checked) and does nothing.
    unsafe {
        libc::pthread_kill(thread.as_pthread_t(), interrupt_signal());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_out_exit_event_is_reclaimed_once() {
        let mut e = ExitEvent::new().unwrap();
        let (c, n) = e.hand_out().unwrap();
        assert!(e.hand_out().is_none());
        // What the library does: registers the consumer and never closes it.
        let leaked = c.into_raw_fd();
        drop(n);
        let id = eventfd_id(e.keep.as_raw_fd()).unwrap();
        assert_eq!(eventfd_id(leaked), Some(id));
        e.reclaim();
        // Closed (or, with tests running in parallel, reused for another
        // eventfd): no longer ours.
        assert_ne!(eventfd_id(leaked), Some(id));
    }
}
