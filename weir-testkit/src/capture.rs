//! Captures: every frame an interface receives or sends, recorded by a thread
//! from the moment [`Capture::start`] returns until [`Capture::stop`], tags
//! included ([`crate::packet`]). Tests wait on a capture for the frame they
//! expect ([`Capture::wait_for`]) instead of sleeping, and check at the end
//! that a frame they forbid never came, knowing the capture missed none.
//!
//! Control path only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::frame::View;
use crate::packet::RawSocket;
use crate::{Error, Netns, Result};

/// Bytes kept of each frame: every header of a tagged, tunnelled frame, not
/// the payload of a bulk transfer.
pub const SNAP_BYTES: usize = 256;

/// Receive buffer of a capture's socket: room for the bursts of a TCP
/// transfer while the capture thread waits for a CPU.
const RECV_BUFFER_BYTES: usize = 16 << 20;

/// How long the capture thread blocks in one receive before it checks
/// whether it was asked to stop.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The frame's first [`SNAP_BYTES`] bytes, tag included.
    pub bytes: Vec<u8>,
    /// Length of the whole frame.
    pub wire_len: usize,
    /// Sent by the captured host rather than received by it.
    pub outgoing: bool,
}

impl Captured {
    /// The frame's headers, to read.
    pub fn view(&self) -> View<'_> {
        View(&self.bytes)
    }
}

#[derive(Default)]
struct Shared {
    frames: Mutex<Vec<Captured>>,
    arrived: Condvar,
    stop: AtomicBool,
}

/// A running capture on one interface of a namespace.
pub struct Capture {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<()>>>,
    what: String,
}

impl Capture {
    /// Starts capturing on `iface` in `ns`; every frame from the moment this
    /// returns is recorded.
    ///
    /// # Errors
    /// The packet socket could not be opened.
    pub fn start(ns: &Netns, iface: &str) -> Result<Capture> {
        let sock = RawSocket::open_in(ns, iface)?;
        Capture::with_socket(sock, format!("{iface} in {}", ns.name()))
    }

    /// [`Capture::start`] on `iface` in the calling thread's namespace.
    ///
    /// # Errors
    /// The packet socket could not be opened.
    pub fn start_here(iface: &str) -> Result<Capture> {
        Capture::with_socket(RawSocket::open(iface)?, iface.to_string())
    }

    fn with_socket(sock: RawSocket, what: String) -> Result<Capture> {
        sock.set_recv_buffer(RECV_BUFFER_BYTES)?;
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut buf = vec![0u8; 256 << 10];
            // Relaxed: the flag carries no data; the frames go through the mutex.
            while !s.stop.load(Ordering::Relaxed) {
                record(&sock, &mut buf, &s, POLL_INTERVAL)?;
            }
            // Whatever is queued already belongs to the capture.
            while record(&sock, &mut buf, &s, Duration::from_micros(1))? {}
            match sock.take_drops()? {
                0 => Ok(()),
                n => Err(Error(format!(
                    "the capture missed {n} frames (its receive buffer was full)"
                ))),
            }
        });
        Ok(Capture {
            shared,
            thread: Some(thread),
            what,
        })
    }

    /// Waits up to `timeout` until a recorded frame (one from before the
    /// call included) satisfies `pred`, and returns the first that does.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Captured) -> bool,
    ) -> Option<Captured> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        let mut frames = self.shared.frames.lock().unwrap();
        loop {
            if let Some(f) = frames[seen..].iter().find(|f| pred(f)) {
                return Some(f.clone());
            }
            seen = frames.len();
            let left = deadline.checked_duration_since(Instant::now())?;
            frames = self.shared.arrived.wait_timeout(frames, left).unwrap().0;
        }
    }

    /// The frames recorded so far that satisfy `pred`.
    pub fn matching(&self, mut pred: impl FnMut(&Captured) -> bool) -> Vec<Captured> {
        let frames = self.shared.frames.lock().unwrap();
        frames.iter().filter(|f| pred(f)).cloned().collect()
    }

    /// Stops the capture and returns every frame it recorded.
    ///
    /// # Errors
    /// The socket failed, or the kernel dropped frames for it: then the
    /// capture is incomplete and proves nothing about absent frames.
    pub fn stop(mut self) -> Result<Vec<Captured>> {
        self.finish()?;
        Ok(std::mem::take(&mut *self.shared.frames.lock().unwrap()))
    }

    fn finish(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error(format!("capture on {} panicked", self.what)))?
                .map_err(|e| Error(format!("capture on {}: {e}", self.what))),
            None => Ok(()),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Receives one frame into `shared`, waiting up to `timeout`; whether one came.
fn record(sock: &RawSocket, buf: &mut [u8], shared: &Shared, timeout: Duration) -> Result<bool> {
    let Some(info) = sock.recv(buf, timeout)? else {
        return Ok(false);
    };
    let f = Captured {
        bytes: buf[..info.len.min(SNAP_BYTES)].to_vec(),
        wire_len: info.wire_len,
        outgoing: info.outgoing,
    };
    shared.frames.lock().unwrap().push(f);
    shared.arrived.notify_all();
    Ok(true)
}
