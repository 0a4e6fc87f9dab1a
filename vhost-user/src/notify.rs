//! Guest interrupts: one thread per device writes the guest's call eventfds,
//! so that no worker and no control thread ever writes a guest's fd.
//!
//! Layer: device. The worker side ([`Doorbell::request`]) is on the packet
//! path: one atomic swap per burst that completed buffers the guest wants an
//! interrupt for, and a write to weir's own eventfd only when no interrupt of
//! that queue is already pending.
//!
//! Why a thread: a call eventfd's O_NONBLOCK flag lives on the open file
//! description that the frontend shares, so a frontend can clear it after weir
//! set it, fill the counter to its maximum, and make the next write block,
//! whatever weir checked before (a poll first is racy). Here only this thread
//! blocks, and only that guest's interrupts wait. At disconnect and at
//! shutdown the control thread interrupts it ([`crate::sys::interrupt`]: a
//! signal whose handler does nothing, so the blocked write returns EINTR) and
//! the interrupt is dropped; the guest, which made its own eventfd unusable,
//! is the only one to miss it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::os::fd::OwnedFd;

use rustix::event::{eventfd, EventfdFlags};

use crate::shared::VqShared;

/// How long the control side keeps interrupting a blocked write before it
/// gives up on the thread (shutdown only).
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the thread looks at its stop flag when idle.
const IDLE_MS: i64 = 100;

/// The workers' side: asks the device's interrupt thread to kick a queue.
#[derive(Debug)]
pub(crate) struct Doorbell {
    /// weir's own eventfd (never shared with a frontend; non-blocking).
    wake: OwnedFd,
}

impl Doorbell {
    /// Asks for an interrupt on `vq` (at most one write to our own eventfd per
    /// pending interrupt; never blocks).
    #[inline]
    pub fn request(&self, vq: &VqShared) {
        if !vq.request_irq() {
            self.ring();
        }
    }

    fn ring(&self) {
        // A full counter (EAGAIN) means the thread has wake-ups pending anyway.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// A device's interrupt thread.
#[derive(Debug)]
pub(crate) struct Notifier {
    bell: Arc<Doorbell>,
    stop: Arc<AtomicBool>,
    /// True while the thread is inside a guest eventfd write.
    busy: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    /// Starts the thread serving `vqs` (every queue of one device).
    pub fn start(name: &str, vqs: Vec<Arc<VqShared>>) -> std::io::Result<Notifier> {
        crate::sys::install_interrupt();
        let bell = Arc::new(Doorbell {
            wake: eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicBool::new(false));
        let (b, s, y) = (Arc::clone(&bell), Arc::clone(&stop), Arc::clone(&busy));
        let thread = std::thread::Builder::new()
            .name(format!("vhost-irq-{name}"))
            .spawn(move || run(&b, &s, &y, &vqs))?;
        Ok(Notifier {
            bell,
            stop,
            busy,
            thread: Some(thread),
        })
    }

    /// The doorbell the device's rings ring.
    pub fn doorbell(&self) -> Arc<Doorbell> {
        Arc::clone(&self.bell)
    }

    /// Makes a write blocked in a guest eventfd return (after the queues'
    /// call fds were taken away, at disconnect). Bounded.
    pub fn unstick(&self) {
        let Some(t) = &self.thread else {
            return;
        };
        let end = Instant::now() + STOP_TIMEOUT;
        // Acquire: pairs with the thread's Release store after its write.
        while self.busy.load(Ordering::Acquire) && Instant::now() < end {
            crate::sys::interrupt(t);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // Relaxed: polled by the thread; the wake-up and signals below follow.
        self.stop.store(true, Ordering::Relaxed);
        self.bell.ring();
        let Some(t) = self.thread.take() else {
            return;
        };
        let end = Instant::now() + STOP_TIMEOUT;
        while !t.is_finished() && Instant::now() < end {
            if self.busy.load(Ordering::Acquire) {
                crate::sys::interrupt(&t);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            // The signal could not be installed (another handler owns it):
            // leave the thread behind rather than block shutdown.
            tracing::warn!("vhost-user interrupt thread blocked in a guest eventfd; left behind");
        }
    }
}

fn run(bell: &Doorbell, stop: &AtomicBool, busy: &AtomicBool, vqs: &[Arc<VqShared>]) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let t = Timespec {
        tv_sec: 0,
        tv_nsec: IDLE_MS * 1_000_000,
    };
    // Relaxed: a flag set before the wake-up that ends the poll.
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(&bell.wake, PollFlags::IN)];
        let _ = poll(&mut fds, Some(&t));
        // Our own non-blocking eventfd: EAGAIN when nothing was asked.
        let _ = rustix::io::read(&bell.wake, &mut [0u8; 8]);
        for vq in vqs {
            if let Some(call) = vq.take_irq() {
                // Release: the control side sees `busy` before it signals.
                busy.store(true, Ordering::Release);
                if stop.load(Ordering::Relaxed) {
                    busy.store(false, Ordering::Release);
                    break;
                }
                // May block (a guest's own doing) until the control side
                // interrupts it; the interrupt is then dropped. One write,
                // never retried: EINTR must end it.
                let _ = crate::sys::signal_call_once(&call);
                busy.store(false, Ordering::Release);
            }
        }
    }
}
