//! A port backed by pcap files: receive replays a capture, transmit writes one.
//!
//! Layer: ports. Depends on `dataplane` and the `pcap-file` crate. For tests,
//! benchmarks and debugging (feed a recorded trace through the switch, capture what
//! a port would have sent), not for line rate: replay copies every frame into an
//! mbuf and capture goes through a buffered file.
//!
//! The receive file is read whole into memory at [`PcapPort::open`] (up to
//! [`PcapConfig::max_rx_file_bytes`]) and indexed once, so `rx_burst` does no I/O
//! and no allocation besides mbufs. Replay ignores the recorded timestamps: frames
//! come as fast as the worker polls. The capture file is written in the classic
//! pcap format (little-endian, microsecond timestamps, Ethernet link type) by a
//! thread of its own: `tx_burst` only moves the mbufs into a bounded ring
//! ([`CAPTURE_RING`]), so a slow or stuck file never holds up the worker; what
//! does not fit is dropped as [`DropReason::TxFull`]. The writer stamps frames
//! with the time it takes them (within a millisecond of their transmission),
//! writes through a `BufWriter`, and flushes whenever the ring runs dry and on
//! drop.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::ring::Ring;
use dataplane::{Burst, DropReason, Mbuf, Mempool, Port, QueueStats};
use pcap_file::pcap::{PcapHeader, PcapParser};
use pcap_file::{DataLink, Endianness, TsResolution};

/// Bytes of a pcap record header: seconds, sub-second part, captured length,
/// original length, each a `u32`.
const RECORD_HEADER_BYTES: usize = 16;

/// Bytes of the pcap file header.
const PCAP_HEADER_BYTES: u64 = 24;

/// Frames waiting for the capture writer, at most (mbufs held from the pool).
pub const CAPTURE_RING: usize = 256;

/// How long the capture writer sleeps when it finds nothing to write.
const WRITER_IDLE: Duration = Duration::from_millis(1);

/// How long [`PcapPort::flush`] waits for the writer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest frame written to a capture (the file header's snaplen). Mbuf lengths
/// are `u16`, so nothing a port transmits is ever cut.
const TX_SNAPLEN: u32 = 65535;

/// Settings of a [`PcapPort`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcapConfig {
    /// Start the replay again after the last frame instead of going quiet.
    pub loop_rx: bool,
    /// Refuse receive files larger than this, since they are read into memory.
    pub max_rx_file_bytes: u64,
    /// Size of the capture file's write buffer.
    pub tx_buffer_bytes: usize,
    /// Largest the capture file may grow, header included. Frames that would
    /// take it past this are not written and are counted in `tx_errors`.
    pub max_tx_file_bytes: u64,
}

/// Default [`PcapConfig::max_tx_file_bytes`]: 1 GiB.
pub const DEFAULT_MAX_TX_FILE_BYTES: u64 = 1 << 30;

impl Default for PcapConfig {
    fn default() -> Self {
        PcapConfig {
            loop_rx: false,
            max_rx_file_bytes: 256 << 20,
            tx_buffer_bytes: 1 << 20,
            max_tx_file_bytes: DEFAULT_MAX_TX_FILE_BYTES,
        }
    }
}

/// Errors opening or flushing a [`PcapPort`]. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The receive file could not be opened or read.
    #[error("reading pcap file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The receive file exceeds [`PcapConfig::max_rx_file_bytes`].
    #[error("pcap file {} is larger than the {max_bytes}-byte limit", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max_bytes: u64,
    },
    /// The receive file does not start with a valid pcap header (not a pcap
    /// file, a pcapng file, or cut short).
    #[error("{} is not a pcap file", .path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: pcap_file::PcapError,
    },
    /// The receive file holds something other than Ethernet frames.
    #[error("pcap file {} has link type {linktype}, only Ethernet (1) is supported", .path.display())]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The file's link type.
        linktype: u32,
    },
    /// The path is not a regular file (a FIFO, a device, a directory, a
    /// socket, or a symlink, which is never followed).
    #[error("pcap file {} is not a regular file (symlinks are not followed); refusing it", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// An existing capture file belongs to another user, who could read what
    /// weir writes into it.
    #[error("pcap file {} belongs to another user; refusing to write traffic into it", .path.display())]
    NotOwned {
        /// The file.
        path: PathBuf,
    },
    /// The capture file could not be created.
    #[error("creating pcap file {}", .path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The capture writer did not catch up in time.
    #[error("pcap file {}: the writer did not catch up within {} s", .path.display(), FLUSH_TIMEOUT.as_secs())]
    FlushTimeout {
        /// The file.
        path: PathBuf,
    },
    /// Writing to the capture file failed.
    #[error("writing pcap file {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The frames of a receive file, indexed.
#[derive(Debug)]
struct Replay {
    bytes: Vec<u8>,
    /// Where each complete record's frame lies in `bytes`.
    frames: Vec<Range<usize>>,
    /// The file ends inside a record (after `frames`).
    truncated: bool,
    /// Index of the next frame to deliver.
    next: usize,
    /// The truncation has been counted in `rx_errors` (once, not on every loop).
    truncation_counted: bool,
}

/// The capture side, as the worker holds it.
#[derive(Debug)]
struct Capture {
    path: PathBuf,
    ring: Arc<Ring<Mbuf>>,
    shared: Arc<CaptureShared>,
    thread: Option<JoinHandle<()>>,
    /// Frames put into the ring so far.
    queued: u64,
    /// `shared.failed` already added to `tx_errors`.
    failed_counted: u64,
}

/// What the worker and the writer share.
#[derive(Debug, Default)]
struct CaptureShared {
    /// Set to end the writer once the ring is empty.
    stop: AtomicBool,
    /// Frames the writer has taken from the ring and either written and
    /// flushed, or failed.
    done: AtomicU64,
    /// Frames not written: past `max_bytes`, or a write error.
    failed: AtomicU64,
    /// Tests: the writer takes nothing while set (a file that does not
    /// accept writes).
    #[cfg(test)]
    paused: AtomicBool,
}

/// The capture file, owned by the writer thread.
#[derive(Debug)]
struct CaptureFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// Bytes written to the file so far (header included).
    written: u64,
    /// [`PcapConfig::max_tx_file_bytes`].
    max_bytes: u64,
    /// The cap has been reached (logged once).
    full: bool,
}

/// Opens `path` without following a final symlink and without blocking (a
/// FIFO would otherwise block `open` until a peer appears), and refuses it
/// unless it is a regular file. `create` creates it with mode 0600 if absent.
fn open_regular(path: &Path, write: bool) -> Result<File, std::io::Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    if write {
        o.write(true).create(true).mode(0o600);
    } else {
        o.read(true);
    }
    o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    o.open(path)
}

/// Whether `e` says the path is not a regular file: `ELOOP` is what
/// `O_NOFOLLOW` reports for a symlink, `ENXIO` what a non-blocking write open
/// of a FIFO without a reader reports.
fn is_not_regular_refusal(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENXIO))
}

/// A port that replays one pcap file on receive and writes another on transmit.
/// Either side is optional: without a receive file the port receives nothing;
/// without a capture file it discards what it transmits. The link is always up.
///
/// Receive: frames are delivered in file order, once or in a loop
/// ([`PcapConfig::loop_rx`]). A frame longer than an mbuf is skipped and counted as
/// [`DropReason::Malformed`]; a file that ends inside a record delivers every
/// complete frame, then counts one `rx_errors`. When the pool is empty the frame
/// waits for the next poll (a replay loses nothing).
///
/// Transmit: every frame is taken and appended to the capture with the time of
/// its burst; a failed write counts `tx_errors` and loses that frame.
#[derive(Debug)]
pub struct PcapPort {
    pool: &'static Mempool,
    loop_rx: bool,
    replay: Option<Replay>,
    capture: Option<Capture>,
    stats: Arc<QueueStats>,
}

impl PcapPort {
    /// Opens `rx_path` for replay (read and indexed now) and creates or truncates
    /// `tx_path` for capture (the file header is written now). Received frames
    /// are copied into buffers from `pool`.
    ///
    /// # Errors
    /// [`PcapError`] naming the file: unreadable, too large, not a pcap file, not
    /// Ethernet, or a capture file that cannot be created.
    pub fn open(
        rx_path: Option<&Path>,
        tx_path: Option<&Path>,
        pool: &'static Mempool,
        cfg: PcapConfig,
    ) -> Result<PcapPort, PcapError> {
        let replay = rx_path
            .map(|p| Replay::load(p, cfg.max_rx_file_bytes))
            .transpose()?;
        let capture = tx_path
            .map(|p| Capture::create(p, cfg.tx_buffer_bytes, cfg.max_tx_file_bytes))
            .transpose()?;
        Ok(PcapPort {
            pool,
            loop_rx: cfg.loop_rx,
            replay,
            capture,
            stats: Arc::new(QueueStats::default()),
        })
    }

    /// Number of complete frames in the receive file (0 without one).
    pub fn rx_frames(&self) -> usize {
        self.replay.as_ref().map_or(0, |r| r.frames.len())
    }

    /// True if the receive file ends inside a record.
    pub fn rx_truncated(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| r.truncated)
    }

    /// Waits until every frame transmitted so far is in the file (or counted
    /// as failed) and the file is flushed, then counts the failures in
    /// `tx_errors`. Blocks: for the control thread and tests, never a worker.
    ///
    /// # Errors
    /// [`PcapError::FlushTimeout`] if the writer does not catch up within
    /// 10 s (a stuck file).
    pub fn flush(&mut self) -> Result<(), PcapError> {
        let Some(c) = &mut self.capture else {
            return Ok(());
        };
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        // Acquire: pairs with the writer's Release after its flush.
        while c.shared.done.load(Ordering::Acquire) < c.queued {
            if Instant::now() > deadline || c.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(PcapError::FlushTimeout {
                    path: c.path.clone(),
                });
            }
            std::thread::sleep(WRITER_IDLE);
        }
        c.count_failures(&self.stats);
        Ok(())
    }
}

impl Replay {
    fn load(path: &Path, max_bytes: u64) -> Result<Replay, PcapError> {
        let read_err = |source| PcapError::Read {
            path: path.to_owned(),
            source,
        };
        let file = match open_regular(path, false) {
            Ok(f) => f,
            Err(e) if is_not_regular_refusal(&e) => {
                return Err(PcapError::NotRegular {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(read_err(e)),
        };
        if !file.metadata().map_err(read_err)?.is_file() {
            return Err(PcapError::NotRegular {
                path: path.to_owned(),
            });
        }
        let mut bytes = Vec::new();
        // Read one byte past the limit, so an oversized file is detected without
        // trusting its metadata (it may be a pipe or still growing).
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > max_bytes {
            return Err(PcapError::TooLarge {
                path: path.to_owned(),
                max_bytes,
            });
        }
        let (mut rest, parser) =
            PcapParser::new(&bytes).map_err(|source| PcapError::BadHeader {
                path: path.to_owned(),
                source,
            })?;
        let datalink = parser.header().datalink;
        if datalink != DataLink::ETHERNET {
            return Err(PcapError::LinkType {
                path: path.to_owned(),
                linktype: datalink.into(),
            });
        }
        let mut frames = Vec::new();
        let mut truncated = false;
        while !rest.is_empty() {
            let start = bytes.len() - rest.len() + RECORD_HEADER_BYTES;
            // Raw records: the frame is all we need, and a record header that is
            // odd but complete (a bad timestamp, orig_len < incl_len) still frames
            // the data correctly. The only failure left is running out of bytes.
            match parser.next_raw_packet(rest) {
                Ok((rem, raw)) => {
                    frames.push(start..start + raw.data.len());
                    rest = rem;
                }
                Err(_) => {
                    truncated = true;
                    break;
                }
            }
        }
        Ok(Replay {
            bytes,
            frames,
            truncated,
            next: 0,
            truncation_counted: false,
        })
    }
}

impl Capture {
    /// Opens the file (here, on the caller's thread) and starts its writer.
    fn create(path: &Path, buffer_bytes: usize, max_bytes: u64) -> Result<Capture, PcapError> {
        let mut file = CaptureFile::create(path, buffer_bytes, max_bytes)?;
        let ring = Arc::new(Ring::new(CAPTURE_RING));
        let shared = Arc::new(CaptureShared::default());
        let (r, sh) = (Arc::clone(&ring), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("weir-pcap".into())
            .spawn(move || file.run(&r, &sh))
            .map_err(|source| PcapError::Create {
                path: path.to_owned(),
                source,
            })?;
        Ok(Capture {
            path: path.to_owned(),
            ring,
            shared,
            thread: Some(thread),
            queued: 0,
            failed_counted: 0,
        })
    }

    /// Adds the writer's new failures to `tx_errors` (worker or control, the
    /// port's one writer of its counters).
    fn count_failures(&mut self, stats: &QueueStats) {
        // Relaxed: a statistic.
        let failed = self.shared.failed.load(Ordering::Relaxed);
        stats.tx_errors.add(failed - self.failed_counted);
        self.failed_counted = failed;
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Relaxed: the writer polls the flag; join() synchronises.
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl CaptureFile {
    fn create(path: &Path, buffer_bytes: usize, max_bytes: u64) -> Result<CaptureFile, PcapError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let create_err = |source| PcapError::Create {
            path: path.to_owned(),
            source,
        };
        let file = match open_regular(path, true) {
            Ok(f) => f,
            Err(e) if is_not_regular_refusal(&e) => {
                return Err(PcapError::NotRegular {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(create_err(e)),
        };
        // Everything from here on goes through the descriptor, so nothing
        // swapped in at the path since the open is touched.
        let md = file.metadata().map_err(create_err)?;
        if !md.is_file() {
            return Err(PcapError::NotRegular {
                path: path.to_owned(),
            });
        }
        if md.uid() != rustix::process::geteuid().as_raw() {
            return Err(PcapError::NotOwned {
                path: path.to_owned(),
            });
        }
        // Tenant traffic: an existing file's wider mode is narrowed too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(create_err)?;
        file.set_len(0).map_err(create_err)?;
        let mut out = BufWriter::with_capacity(buffer_bytes, file);
        let header = PcapHeader {
            snaplen: TX_SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        header.write_to(&mut out).map_err(|e| PcapError::Write {
            path: path.to_owned(),
            source: match e {
                pcap_file::PcapError::IoError(io) => io,
                other => std::io::Error::other(other),
            },
        })?;
        Ok(CaptureFile {
            path: path.to_owned(),
            out,
            written: PCAP_HEADER_BYTES,
            max_bytes,
            full: false,
        })
    }

    /// The writer thread: drains the ring into the file until stopped and
    /// empty, flushing whenever the ring runs dry.
    fn run(&mut self, ring: &Ring<Mbuf>, shared: &CaptureShared) {
        let mut batch = Burst::new();
        let mut done = 0u64;
        // The file header is still in the buffer.
        let mut dirty = true;
        loop {
            #[cfg(test)]
            if shared.paused.load(Ordering::Relaxed) {
                std::thread::sleep(WRITER_IDLE);
                continue;
            }
            let n = ring.dequeue_burst(&mut batch, dataplane::MAX_BURST);
            if n > 0 {
                // One clock read per batch: every frame of it gets its time.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                // The classic format's seconds field runs out in 2106; saturate.
                let secs = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
                let micros = now.subsec_micros();
                for m in batch.drain(..) {
                    if self.write_record(secs, micros, m.data()).is_err() {
                        // Relaxed: a statistic.
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done += n as u64;
                dirty = true;
                continue;
            }
            if dirty {
                if let Err(e) = self.out.flush() {
                    tracing::warn!(file = %self.path.display(), error = %e, "pcap capture not fully written");
                }
                dirty = false;
            }
            // Release: the frames counted are in the file (flushed) and their
            // mbufs are back in the pool.
            shared.done.store(done, Ordering::Release);
            // Relaxed: see Capture::drop.
            if shared.stop.load(Ordering::Relaxed) && ring.is_empty() {
                return;
            }
            std::thread::sleep(WRITER_IDLE);
        }
    }

    /// Appends one record. Written by hand rather than through
    /// `pcap_file::pcap::PcapWriter` because that writer gives no access to the
    /// underlying `BufWriter`, which the writer flushes when idle. The layout is the
    /// file header's: little-endian `u32` seconds, microseconds, captured length
    /// and original length, then the frame.
    fn write_record(&mut self, secs: u32, micros: u32, frame: &[u8]) -> std::io::Result<()> {
        let record = (RECORD_HEADER_BYTES + frame.len()) as u64;
        if self.written + record > self.max_bytes {
            if !self.full {
                self.full = true;
                tracing::warn!(
                    file = %self.path.display(),
                    max_bytes = self.max_bytes,
                    "pcap capture reached its size limit; further frames are counted in tx_errors"
                );
            }
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        self.written += record;
        let len = (frame.len() as u32).to_le_bytes();
        let mut hdr = [0u8; RECORD_HEADER_BYTES];
        hdr[0..4].copy_from_slice(&secs.to_le_bytes());
        hdr[4..8].copy_from_slice(&micros.to_le_bytes());
        hdr[8..12].copy_from_slice(&len);
        hdr[12..16].copy_from_slice(&len);
        self.out.write_all(&hdr)?;
        self.out.write_all(frame)
    }
}

impl Port for PcapPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let Some(r) = &mut self.replay else { return 0 };
        let mut n = 0;
        // Oversized frames are skipped without filling the burst; bound the work
        // of one call even if every frame of a looping file is oversized.
        let mut budget = burst.remaining_capacity() + dataplane::MAX_BURST;
        while !burst.is_full() && budget > 0 {
            budget -= 1;
            if r.next == r.frames.len() {
                if r.truncated && !r.truncation_counted {
                    self.stats.rx_errors.inc();
                    r.truncation_counted = true;
                }
                if !self.loop_rx || r.frames.is_empty() {
                    break;
                }
                r.next = 0;
            }
            let frame = &r.bytes[r.frames[r.next].clone()];
            let Some(mut m) = self.pool.alloc() else {
                break;
            };
            r.next += 1;
            if m.extend_from_slice(frame).is_err() {
                self.stats.drop_one(DropReason::Malformed);
                continue;
            }
            burst.push(m);
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len();
        let Some(c) = &mut self.capture else {
            burst.clear();
            return n;
        };
        // The writer thread does the I/O; a full ring (a slow file) drops.
        let moved = c.ring.enqueue_burst(burst);
        c.queued += moved as u64;
        if !burst.is_empty() {
            self.stats.drop_n(DropReason::TxFull, burst.len() as u64);
            burst.clear();
        }
        n
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn housekeeping(&mut self) {
        if let Some(c) = &mut self.capture {
            c.count_failures(&self.stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::testutil::{burst_of, eth_frame, mac};
    use dataplane::wire::ethertype;
    use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A file in the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(tag: &str) -> TempFile {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            // Relaxed: only uniqueness matters.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("weir-pcap-{}-{tag}-{n}.pcap", std::process::id());
            TempFile(std::env::temp_dir().join(name))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn frames(n: u32) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| eth_frame(mac(1), mac(100 + i), ethertype::IPV4, 46 + i as usize))
            .collect()
    }

    /// Writes `frames` as a pcap with `pcap-file`; returns the file's bytes.
    fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for (i, f) in frames.iter().enumerate() {
            let ts = Duration::from_micros(1_000_000 + i as u64);
            w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
                .unwrap();
        }
        let bytes = w.into_writer();
        std::fs::write(path, &bytes).unwrap();
        bytes
    }

    fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
        let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        let mut out = Vec::new();
        while let Some(p) = r.next_packet() {
            out.push(p.unwrap().data.into_owned());
        }
        out
    }

    fn rx_all(port: &mut PcapPort, max_polls: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut burst = Burst::new();
        for _ in 0..max_polls {
            if port.rx_burst(&mut burst) == 0 {
                break;
            }
            out.extend(burst.drain(..).map(|m| m.data().to_vec()));
        }
        out
    }

    #[test]
    fn replay_delivers_identical_bytes_once() {
        let pool = Mempool::for_tests(64);
        let file = TempFile::new("replay");
        let want = frames(70);
        write_pcap(&file.0, &want);
        let mut port = PcapPort::open(Some(&file.0), None, pool, PcapConfig::default()).unwrap();
        assert_eq!(port.rx_frames(), 70);
        assert_eq!(port.link(), dataplane::LinkState::Up);
        assert_eq!(rx_all(&mut port, 100), want);
        assert_eq!(port.rx_burst(&mut Burst::new()), 0);
        assert_eq!(port.stats().snapshot(), Default::default());
    }

    #[test]
    fn loop_mode_repeats_the_file() {
        let pool = Mempool::for_tests(64);
        let file = TempFile::new("loop");
        let want = frames(5);
        write_pcap(&file.0, &want);
        let cfg = PcapConfig {
            loop_rx: true,
            ..PcapConfig::default()
        };
        let mut port = PcapPort::open(Some(&file.0), None, pool, cfg).unwrap();
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut burst), 32);
        for (i, m) in burst.iter().enumerate() {
            assert_eq!(m.data(), &want[i % 5][..]);
        }
        assert_eq!(port.rx_burst(&mut Burst::new()), 32);
    }

    #[test]
    fn transmitted_frames_are_captured_byte_exact() {
        let pool = Mempool::for_tests(64);
        let file = TempFile::new("tx");
        let want = frames(40);
        let mut port = PcapPort::open(None, Some(&file.0), pool, PcapConfig::default()).unwrap();
        for chunk in want.chunks(32) {
            let mut burst = burst_of(pool, chunk);
            assert_eq!(port.tx_burst(&mut burst), chunk.len());
            assert!(burst.is_empty());
        }
        port.flush().unwrap();
        assert_eq!(read_pcap(&file.0), want);
        assert_eq!(pool.in_use(), 0);
        // Drop writes what is still queued.
        let mut burst = Burst::new();
        burst.push(pool.alloc().unwrap());
        burst[0].extend_from_slice(&want[0]).unwrap();
        port.tx_burst(&mut burst);
        drop(port);
        assert_eq!(read_pcap(&file.0).len(), 41);
    }

    #[test]
    fn capture_replays_through_a_second_port() {
        let pool = Mempool::for_tests(64);
        let (input, output) = (TempFile::new("in"), TempFile::new("out"));
        let want = frames(10);
        write_pcap(&input.0, &want);
        let mut port =
            PcapPort::open(Some(&input.0), Some(&output.0), pool, PcapConfig::default()).unwrap();
        let mut burst = Burst::new();
        port.rx_burst(&mut burst);
        port.tx_burst(&mut burst);
        drop(port);
        let mut again = PcapPort::open(Some(&output.0), None, pool, PcapConfig::default()).unwrap();
        assert_eq!(rx_all(&mut again, 10), want);
    }

    #[test]
    fn garbage_file_is_a_clear_error_naming_it() {
        let pool = Mempool::for_tests(4);
        let file = TempFile::new("garbage");
        std::fs::write(&file.0, b"this is not a capture, just some text\n").unwrap();
        let err = PcapPort::open(Some(&file.0), None, pool, PcapConfig::default()).unwrap_err();
        assert!(matches!(err, PcapError::BadHeader { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&*file.0.to_string_lossy()) && msg.contains("not a pcap"),
            "{msg}"
        );

        std::fs::write(&file.0, [0xd4, 0xc3, 0xb2]).unwrap();
        let err = PcapPort::open(Some(&file.0), None, pool, PcapConfig::default()).unwrap_err();
        assert!(matches!(err, PcapError::BadHeader { .. }), "{err:?}");

        let missing = TempFile::new("missing");
        let err = PcapPort::open(Some(&missing.0), None, pool, PcapConfig::default()).unwrap_err();
        assert!(matches!(err, PcapError::Read { .. }), "{err:?}");
    }

    #[test]
    fn oversized_and_non_ethernet_files_are_refused() {
        let pool = Mempool::for_tests(4);
        let file = TempFile::new("limits");
        write_pcap(&file.0, &frames(10));
        let cfg = PcapConfig {
            max_rx_file_bytes: 100,
            ..PcapConfig::default()
        };
        let err = PcapPort::open(Some(&file.0), None, pool, cfg).unwrap_err();
        assert!(
            matches!(err, PcapError::TooLarge { max_bytes: 100, .. }),
            "{err:?}"
        );

        let header = PcapHeader {
            datalink: DataLink::RAW,
            ..PcapHeader::default()
        };
        let w = PcapWriter::with_header(Vec::new(), header).unwrap();
        std::fs::write(&file.0, w.into_writer()).unwrap();
        let err = PcapPort::open(Some(&file.0), None, pool, PcapConfig::default()).unwrap_err();
        assert!(matches!(err, PcapError::LinkType { .. }), "{err}");
    }

    #[test]
    fn truncated_file_delivers_complete_frames_then_counts_one_error() {
        let pool = Mempool::for_tests(64);
        let file = TempFile::new("trunc");
        let want = frames(4);
        let bytes = write_pcap(&file.0, &want);
        // Cut the last record in the middle of its frame.
        std::fs::write(&file.0, &bytes[..bytes.len() - 10]).unwrap();
        let cfg = PcapConfig {
            loop_rx: true,
            ..PcapConfig::default()
        };
        let mut port = PcapPort::open(Some(&file.0), None, pool, cfg).unwrap();
        assert!(port.rx_truncated());
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut burst), 32);
        assert_eq!(burst[0].data(), &want[0][..]);
        assert_eq!(burst[2].data(), &want[2][..]);
        assert_eq!(burst[3].data(), &want[0][..]);
        drop(burst);
        assert_eq!(port.rx_burst(&mut Burst::new()), 32);
        assert_eq!(
            port.stats().rx_errors.get(),
            1,
            "counted once, not per loop"
        );

        // Cut inside a record header, without looping.
        std::fs::write(&file.0, &bytes[..24 + 16 + want[0].len() + 5]).unwrap();
        let mut port = PcapPort::open(Some(&file.0), None, pool, PcapConfig::default()).unwrap();
        assert_eq!(rx_all(&mut port, 10), want[..1]);
        assert_eq!(port.stats().rx_errors.get(), 1);
    }

    #[test]
    fn frame_larger_than_an_mbuf_is_dropped_as_malformed() {
        let pool = Mempool::for_tests(16);
        let file = TempFile::new("big");
        let big = eth_frame(mac(1), mac(2), ethertype::IPV4, 3000);
        let small = frames(2);
        write_pcap(&file.0, &[small[0].clone(), big, small[1].clone()]);
        let mut port = PcapPort::open(Some(&file.0), None, pool, PcapConfig::default()).unwrap();
        assert_eq!(rx_all(&mut port, 10), small);
        assert_eq!(port.stats().drops(DropReason::Malformed), 1);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn looping_over_only_oversized_frames_returns() {
        let pool = Mempool::for_tests(16);
        let file = TempFile::new("allbig");
        write_pcap(&file.0, &[eth_frame(mac(1), mac(2), ethertype::IPV4, 3000)]);
        let cfg = PcapConfig {
            loop_rx: true,
            ..PcapConfig::default()
        };
        let mut port = PcapPort::open(Some(&file.0), None, pool, cfg).unwrap();
        assert_eq!(port.rx_burst(&mut Burst::new()), 0);
        assert_eq!(
            port.stats().drops(DropReason::Malformed),
            (2 * dataplane::MAX_BURST) as u64
        );
    }

    fn tx_frames(port: &mut PcapPort, pool: &'static Mempool, frames: &[Vec<u8>]) {
        for chunk in frames.chunks(32) {
            let mut burst = burst_of(pool, chunk);
            port.tx_burst(&mut burst);
        }
    }

    #[test]
    fn capture_file_is_private_and_a_symlink_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let pool = Mempool::for_tests(64);
        let file = TempFile::new("private");
        let port = PcapPort::open(None, Some(&file.0), pool, PcapConfig::default()).unwrap();
        let mode = std::fs::metadata(&file.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(port);
        // An existing file's wider mode is narrowed.
        std::fs::set_permissions(&file.0, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(PcapPort::open(None, Some(&file.0), pool, PcapConfig::default()).unwrap());
        let mode = std::fs::metadata(&file.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let target = TempFile::new("victim");
        std::fs::write(&target.0, b"precious").unwrap();
        let link = TempFile::new("link");
        std::os::unix::fs::symlink(&target.0, &link.0).unwrap();
        let err = PcapPort::open(None, Some(&link.0), pool, PcapConfig::default()).unwrap_err();
        assert!(matches!(err, PcapError::NotRegular { .. }), "{err}");
        let err = PcapPort::open(Some(&link.0), None, pool, PcapConfig::default()).unwrap_err();
        assert!(matches!(err, PcapError::NotRegular { .. }), "{err}");
        assert_eq!(std::fs::read(&target.0).unwrap(), b"precious");
    }

    #[test]
    fn fifo_is_refused_at_once_on_either_side() {
        let pool = Mempool::for_tests(64);
        let fifo = TempFile::new("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo.0,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Opening a FIFO without O_NONBLOCK waits for a peer forever: run it
        // on a thread and bound the wait.
        let path = fifo.0.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rx_side = PcapPort::open(Some(&path), None, pool, PcapConfig::default());
            let tx_side = PcapPort::open(None, Some(&path), pool, PcapConfig::default());
            let _ = tx.send((rx_side.err(), tx_side.err()));
        });
        let (rx_err, tx_err) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("opening a FIFO blocked");
        assert!(
            matches!(rx_err, Some(PcapError::NotRegular { .. })),
            "{rx_err:?}"
        );
        assert!(
            matches!(tx_err, Some(PcapError::NotRegular { .. })),
            "{tx_err:?}"
        );
    }

    #[test]
    fn capture_stops_at_max_bytes_and_counts_the_rest() {
        let pool = Mempool::for_tests(64);
        let file = TempFile::new("cap");
        let want = frames(40);
        // Room for the header and exactly the first 10 records.
        let max: u64 = 24
            + want[..10]
                .iter()
                .map(|f| (RECORD_HEADER_BYTES + f.len()) as u64)
                .sum::<u64>();
        let cfg = PcapConfig {
            max_tx_file_bytes: max,
            ..PcapConfig::default()
        };
        let mut port = PcapPort::open(None, Some(&file.0), pool, cfg).unwrap();
        tx_frames(&mut port, pool, &want);
        port.flush().unwrap();
        assert_eq!(read_pcap(&file.0), want[..10].to_vec());
        assert_eq!(std::fs::metadata(&file.0).unwrap().len(), max);
        assert_eq!(port.stats().tx_errors.get(), 30);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_stalled_capture_file_never_holds_up_transmit() {
        let pool = Mempool::for_tests(1024);
        let file = TempFile::new("stall");
        let mut port = PcapPort::open(None, Some(&file.0), pool, PcapConfig::default()).unwrap();
        let shared = Arc::clone(&port.capture.as_ref().unwrap().shared);
        // Relaxed: a test flag.
        shared.paused.store(true, Ordering::Relaxed);
        let want = frames(32);
        for _ in 0..20 {
            tx_frames(&mut port, pool, &want);
        }
        // Transmit returned every time: the worker only queued. What did not
        // fit is dropped, and only the queue's worth of mbufs is held.
        assert_eq!(pool.in_use() as usize, CAPTURE_RING);
        assert_eq!(
            port.stats().drops(DropReason::TxFull),
            (20 * 32 - CAPTURE_RING) as u64
        );
        shared.paused.store(false, Ordering::Relaxed);
        port.flush().unwrap();
        assert_eq!(read_pcap(&file.0).len(), CAPTURE_RING);
        assert_eq!(pool.in_use(), 0);
    }
}
