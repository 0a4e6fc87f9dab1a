//! `weir capture` on the daemon side: puts a [`Capture`] on a port's taps,
//! streams what the workers copy into it back to the client, and takes it
//! off again when the capture ends.
//!
//! Control path: runs on the control connection's own thread, which drains
//! the capture's ring. A client that reads slowly (or a slow disk behind it)
//! leaves the ring full, and the workers count the copies they could not
//! make as lost; forwarding does not wait for it.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::capture::{Capture, CaptureFilter, CaptureSlot, Direction, PortTaps, SNAPLEN_RANGE};
use dataplane::switch::{PortEntry, SwitchTables};
use dataplane::PortId;
use weir_api::{
    hex_encode, CaptureChunk, CaptureSpec, CapturedFrame, Response, CAPTURE_HEARTBEAT_MS,
    CAPTURE_SNAPLEN_DEFAULT,
};

use super::Dataplane;

/// Most slots of one capture's ring: 8 MiB at the default snap length.
pub(crate) const CAPTURE_SLOTS: usize = 4096;

/// Most memory of one capture's slots: a large snap length gets fewer.
const CAPTURE_BYTES: usize = 16 << 20;

/// Slots of a capture of `snaplen` bytes per frame.
fn slots_for(snaplen: usize) -> usize {
    (CAPTURE_BYTES / snaplen.max(1)).clamp(64, CAPTURE_SLOTS)
}

/// Most frames in one chunk of the stream.
const CHUNK_FRAMES: usize = 256;

/// How long the reader sleeps when the ring is empty.
const IDLE_POLL: Duration = Duration::from_millis(2);

impl Dataplane {
    /// Runs the capture `spec` asks for, sending its stream with `send`
    /// (see [`weir_api::Request::Capture`]); returns when it ends.
    pub fn capture(&self, spec: CaptureSpec, send: &mut dyn FnMut(&Response) -> io::Result<()>) {
        let filter = CaptureFilter {
            rx: spec.rx,
            tx: spec.tx,
            drops: spec.drops,
        };
        if filter == CaptureFilter::default() {
            let _ = send(&Response::error(
                "capture: nothing to capture (ask for rx, tx or drops)",
            ));
            return;
        }
        let snaplen = spec.snaplen.unwrap_or(CAPTURE_SNAPLEN_DEFAULT) as usize;
        if !SNAPLEN_RANGE.contains(&snaplen) {
            let _ = send(&Response::error(format!(
                "capture: snap length {snaplen} out of range ({}-{} bytes)",
                SNAPLEN_RANGE.start(),
                SNAPLEN_RANGE.end()
            )));
            return;
        }
        if spec.count == Some(0) {
            let _ = send(&Response::error(
                "capture: a count of 0 frames captures nothing",
            ));
            return;
        }
        let cap = Capture::new(filter, slots_for(snaplen), snaplen);
        let Some((id, entry)) = self.tap_on(&spec.port, &cap) else {
            let _ = send(&Response::error(format!("no port named {}", spec.port)));
            return;
        };
        tracing::info!(port = %spec.port, ?filter, "capture started");
        let first = CaptureChunk {
            interfaces: vec![spec.port.clone()],
            snaplen: Some(snaplen as u32),
            ..CaptureChunk::default()
        };
        let mut reader = Reader {
            cap: &cap,
            port: id,
            sent: 0,
            limit: spec.count.unwrap_or(u64::MAX),
        };
        let deadline = spec
            .duration_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let ended = if send(&Response::with_data(&first)).is_err() {
            "client closed the connection"
        } else {
            self.stream(&mut reader, &entry, deadline, send)
        };
        // Off the tables; once every worker runs without it no copy is made
        // any more, and what is left in the ring goes out with the last chunk.
        cap.stop();
        let generation = self.switch.update(|t| untap(t, id, &cap));
        self.wait_workers(generation);
        let mut last = reader.chunk();
        while last.frames.len() == CHUNK_FRAMES {
            if send(&Response::with_data(&last)).is_err() {
                break;
            }
            last = reader.chunk();
        }
        last.done = Some(ended.to_owned());
        tracing::info!(port = %spec.port, captured = last.captured, lost = last.lost, ended, "capture ended");
        let _ = send(&Response::with_data(&last));
    }

    /// Adds `cap` to the taps of port `name`; its id and entry, or `None`
    /// if there is no such port.
    fn tap_on(
        &self,
        name: &str,
        cap: &Arc<Capture>,
    ) -> Option<(PortId, std::sync::Weak<PortEntry>)> {
        let mut found = None;
        self.switch.update(|t| {
            let Some(entry) = t.port_by_name(name) else {
                return;
            };
            let id = entry.id;
            found = Some((id, Arc::downgrade(entry)));
            let mut taps = t.taps(id).cloned().unwrap_or_default();
            taps.captures.push(Arc::clone(cap));
            t.set_taps(id, Some(Arc::new(taps)));
        });
        found
    }

    /// Sends chunks until the capture has its count, its time is up, the
    /// port is gone or the client left; returns which.
    fn stream(
        &self,
        reader: &mut Reader<'_>,
        entry: &std::sync::Weak<PortEntry>,
        deadline: Option<Instant>,
        send: &mut dyn FnMut(&Response) -> io::Result<()>,
    ) -> &'static str {
        let heartbeat = Duration::from_millis(CAPTURE_HEARTBEAT_MS);
        let mut last_sent = Instant::now();
        loop {
            let chunk = reader.chunk();
            let got = !chunk.frames.is_empty();
            if got || last_sent.elapsed() >= heartbeat {
                if send(&Response::with_data(&chunk)).is_err() {
                    return "client closed the connection";
                }
                last_sent = Instant::now();
            }
            if reader.sent >= reader.limit {
                return "count reached";
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return "duration reached";
            }
            let t = self.switch.load();
            let same = t
                .port(reader.port)
                .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e), entry.as_ptr()));
            if !same {
                return "port deleted";
            }
            if !got {
                std::thread::sleep(IDLE_POLL);
            }
        }
    }
}

/// Takes `cap` off the taps of port `id`.
fn untap(t: &mut SwitchTables, id: PortId, cap: &Arc<Capture>) {
    let Some(taps) = t.taps(id) else {
        return;
    };
    let mut taps: PortTaps = taps.clone();
    taps.captures.retain(|c| !Arc::ptr_eq(c, cap));
    t.set_taps(id, Some(Arc::new(taps)));
}

/// Drains a capture's ring into chunks.
struct Reader<'a> {
    cap: &'a Capture,
    port: PortId,
    /// Frames sent so far.
    sent: u64,
    /// Frames to send in all.
    limit: u64,
}

impl Reader<'_> {
    /// The frames in the ring (up to [`CHUNK_FRAMES`] and the count), with
    /// the counts so far. Frames past the count are given back unsent.
    fn chunk(&mut self) -> CaptureChunk {
        let mut frames = Vec::new();
        while frames.len() < CHUNK_FRAMES {
            let Some(slot) = self.cap.take() else {
                break;
            };
            if self.sent < self.limit {
                frames.push(frame(&slot, self.port));
                self.sent += 1;
            }
            self.cap.recycle(slot);
        }
        CaptureChunk {
            frames,
            captured: self.sent,
            lost: self.cap.lost(),
            ..CaptureChunk::default()
        }
    }
}

fn frame(slot: &CaptureSlot, port: PortId) -> CapturedFrame {
    debug_assert_eq!(slot.port, port);
    CapturedFrame {
        interface: 0,
        direction: match slot.direction {
            Direction::Rx => "rx",
            Direction::Tx => "tx",
        }
        .to_owned(),
        drop: slot.drop.map(|r| r.name().to_owned()),
        timestamp_ns: slot.timestamp_ns,
        orig_len: slot.orig_len_bytes,
        data: hex_encode(slot.data()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_snap_lengths_get_fewer_slots() {
        assert_eq!(slots_for(2048), CAPTURE_SLOTS);
        assert_eq!(slots_for(65535), 256);
        assert!(slots_for(65535) * 65535 <= CAPTURE_BYTES);
        assert_eq!(slots_for(64), CAPTURE_SLOTS);
    }
}
