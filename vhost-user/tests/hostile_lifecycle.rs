//! A hostile frontend against the lifecycle of weir's vhost-user device:
//! connections that come and go, eventfds the frontend closes or turns
//! blocking, and messages that carry more fds than any message may.
//!
//! The device's ports are polled by a "worker" thread of the test, as weir's
//! workers poll them. Guest memory is a memfd written with `pwrite`, as in
//! `hostile.rs`. Cases run one at a time: fd, thread and mapping counts need
//! a quiet process.

use std::fs::File;
use std::io::{IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::{Burst, LinkState, Mempool, Port};
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhost_user::{create, Mode, VhostUserConfig, VhostUserDevice, VhostUserPort};
use vmm_sys_util::eventfd::EventFd;

// vhost-user spec message codes.
const GET_FEATURES: u32 = 1;
const SET_OWNER: u32 = 3;
const F_VERSION_1: u64 = 1 << 32;
const F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Guest memory layout: one memfd-backed region at guest address 0.
const MEM_BYTES: u64 = 0x10_0000;
/// The frontend's virtual address of guest address 0 (only translated).
const UADDR: u64 = 0x7f00_0000_0000;
const QSIZE: u16 = 8;
const BUF: u64 = 0x1_0000;
/// The eventfd counter's largest value: a write of 1 onto it blocks.
const EVENTFD_FULL: u64 = 0xffff_ffff_ffff_fffe;

fn pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(2048))
}

/// Cases run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn memfd(len: u64) -> File {
    let fd = rustix::fs::memfd_create("guest", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    File::from(fd)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    f()
}

/// Ring addresses of virtqueue `vq`.
fn ring_at(vq: u16) -> (u64, u64, u64) {
    let base = 0x4000 * u64::from(vq);
    (base, base + 0x1000, base + 0x2000)
}

fn frame(seq: u8) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, seq]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// A guest: memfd memory with one ring per virtqueue, driven through `pwrite`.
/// It asks for interrupts (avail flags 0, no EVENT_IDX).
struct Guest {
    mem: File,
    avail_idx: [u16; 2],
    call: [Option<EventFd>; 2],
    kick: [Option<EventFd>; 2],
}

impl Guest {
    fn new() -> Guest {
        Guest::with_eventfd_flags(libc::EFD_NONBLOCK)
    }

    /// A guest whose eventfds are created with `flags` (0: blocking, as a
    /// careless or hostile frontend passes them).
    fn with_eventfd_flags(flags: i32) -> Guest {
        let ev = || Some(EventFd::new(flags).unwrap());
        Guest {
            mem: memfd(MEM_BYTES),
            avail_idx: [0; 2],
            call: [ev(), ev()],
            kick: [ev(), ev()],
        }
    }

    fn write(&self, addr: u64, b: &[u8]) {
        self.mem.write_all_at(b, addr).unwrap();
    }

    fn read_u16(&self, addr: u64) -> u16 {
        let mut b = [0u8; 2];
        self.mem.read_exact_at(&mut b, addr).unwrap();
        u16::from_le_bytes(b)
    }

    fn desc(&self, vq: u16, i: u16, addr: u64, len: u32, flags: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        self.write(ring_at(vq).0 + 16 * u64::from(i), &b);
    }

    fn push(&mut self, vq: u16, head: u16) {
        let (_, avail, _) = ring_at(vq);
        let k = vq as usize;
        let slot = u64::from(self.avail_idx[k] % QSIZE);
        self.write(avail + 4 + 2 * slot, &head.to_le_bytes());
        self.avail_idx[k] = self.avail_idx[k].wrapping_add(1);
        self.write(avail + 2, &self.avail_idx[k].to_le_bytes());
    }

    fn used_idx(&self, vq: u16) -> u16 {
        self.read_u16(ring_at(vq).2 + 2)
    }

    /// Posts one frame on the guest TX queue (vq 1), once the previous use of
    /// its slot is done (`sent` frames already completed).
    fn send_frame(&mut self, seq: u8) {
        let head = self.avail_idx[1] % QSIZE;
        let at = BUF + 0x1000 * u64::from(head);
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&frame(seq));
        self.write(at, &b);
        self.desc(1, head, at, b.len() as u32, 0);
        self.push(1, head);
    }

    /// Handshake and both rings through the `vhost` crate's frontend.
    fn attach(&self, sock: &Path) -> Frontend {
        let mut fe = Frontend::connect(sock, 3).unwrap();
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        assert_ne!(offered & F_PROTOCOL_FEATURES, 0);
        fe.set_features(F_VERSION_1 | F_PROTOCOL_FEATURES).unwrap();
        let proto = fe.get_protocol_features().unwrap();
        fe.set_protocol_features(
            proto & (VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ),
        )
        .unwrap();
        fe.set_mem_table(&[region(&self.mem, 0, MEM_BYTES)])
            .unwrap();
        for vq in 0..2u16 {
            let (desc, avail, used) = ring_at(vq);
            let i = usize::from(vq);
            fe.set_vring_num(i, QSIZE).unwrap();
            fe.set_vring_addr(
                i,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: UADDR + desc,
                    used_ring_addr: UADDR + used,
                    avail_ring_addr: UADDR + avail,
                    log_addr: None,
                },
            )
            .unwrap();
            fe.set_vring_base(i, 0).unwrap();
            fe.set_vring_call(i, self.call[i].as_ref().unwrap())
                .unwrap();
            fe.set_vring_kick(i, self.kick[i].as_ref().unwrap())
                .unwrap();
        }
        fe
    }

    fn enable(fe: &mut Frontend) {
        for vq in 0..2 {
            fe.set_vring_enable(vq, true).unwrap();
        }
    }
}

fn region(mem: &File, gpa: u64, size: u64) -> VhostUserMemoryRegionInfo {
    use std::os::fd::AsRawFd;
    VhostUserMemoryRegionInfo {
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: UADDR + gpa,
        mmap_offset: 0,
        mmap_handle: mem.as_raw_fd(),
    }
}

/// A device, its socket, and frames its port received (counted by the worker).
struct Dev {
    dev: VhostUserDevice,
    sock: PathBuf,
    rx: Arc<AtomicU64>,
}

/// A test "worker": one thread polling every port it was given, as weir's
/// workers do (frames received are counted and freed).
struct Worker {
    stop: Arc<AtomicBool>,
    /// Rounds completed: proof the thread is not blocked.
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(ports: Vec<(VhostUserPort, Arc<AtomicU64>)>) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (Arc::clone(&stop), Arc::clone(&rounds));
        let thread = std::thread::spawn(move || {
            let mut ports = ports;
            let mut burst = Burst::new();
            while !s.load(Ordering::Relaxed) {
                for (p, n) in &mut ports {
                    let got = p.rx_burst(&mut burst);
                    burst.clear();
                    n.fetch_add(got as u64, Ordering::Relaxed);
                    p.housekeeping();
                }
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
            drop(ports);
            dataplane::mempool::flush_thread_caches();
        });
        Worker {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// True if the thread completes a few more rounds within `secs`.
    fn alive_within(&self, secs: u64) -> bool {
        let r0 = self.rounds.load(Ordering::Relaxed);
        wait_until(secs, || self.rounds.load(Ordering::Relaxed) >= r0 + 3)
    }

    /// Stops the thread; false if it did not end within 5 s (it is then left
    /// behind).
    fn stop(mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().unwrap();
        if !wait_until(5, || t.is_finished()) {
            return false;
        }
        t.join().is_ok()
    }
}

fn device(dir: &Path, name: &str) -> (Dev, VhostUserPort) {
    let sock = dir.join(format!("{name}.sock"));
    let cfg = VhostUserConfig {
        socket: sock.clone(),
        mode: Mode::Server,
        queues: 1,
    };
    let mut dev = create(name, &cfg, pool()).unwrap();
    let port = dev.take_queues().pop().unwrap();
    let d = Dev {
        dev,
        sock,
        rx: Arc::new(AtomicU64::new(0)),
    };
    (d, port)
}

/// A raw frontend: writes any bytes and fds it likes.
struct Raw(UnixStream);

impl Raw {
    fn connect(sock: &Path) -> Raw {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw(s)
    }

    fn header(request: u32, size: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&request.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        b
    }

    /// Sends `b` with `fds` attached; false if the peer is gone.
    fn send_bytes(&self, b: &[u8], fds: &[BorrowedFd<'_>]) -> bool {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(64))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(cmsg.push(SendAncillaryMessage::ScmRights(fds)));
        }
        sendmsg(&self.0, &[IoSlice::new(b)], &mut cmsg, SendFlags::NOSIGNAL)
            .is_ok_and(|n| n == b.len())
    }

    /// GET_FEATURES answered within the read timeout.
    fn answers(&mut self) -> bool {
        if !self.send_bytes(&Raw::header(SET_OWNER, 0), &[])
            || !self.send_bytes(&Raw::header(GET_FEATURES, 0), &[])
        {
            return false;
        }
        let mut h = [0u8; 20];
        self.0.read_exact(&mut h).is_ok()
            && u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == GET_FEATURES
    }

    /// True once the backend closed the connection.
    fn closed_within(&mut self, secs: u64) -> bool {
        self.closed_within_ms(secs * 1000)
    }

    fn closed_within_ms(&mut self, ms: u64) -> bool {
        self.0
            .set_read_timeout(Some(Duration::from_millis(ms)))
            .unwrap();
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

/// One well-behaved session: setup, `frames` frames through the worker,
/// disconnect, and the device seen idle again.
fn session(d: &Dev, frames: u8) {
    let mut g = Guest::new();
    let mut fe = g.attach(&d.sock);
    Guest::enable(&mut fe);
    assert!(
        wait_until(5, || d.dev.link() == LinkState::Up),
        "link not up; error {:?}",
        d.dev.error()
    );
    let before = d.rx.load(Ordering::Relaxed);
    for i in 0..frames {
        g.send_frame(i);
    }
    assert!(
        wait_until(5, || d.rx.load(Ordering::Relaxed)
            == before + u64::from(frames)
            && g.used_idx(1) == u16::from(frames)),
        "frames not received; error {:?}",
        d.dev.error()
    );
    drop(fe);
    assert!(
        wait_until(5, || !d.dev.is_connected()),
        "disconnect not seen"
    );
}

/// What must come back to its baseline after frontends come and go.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Level {
    fds: usize,
    threads: usize,
    mappings: usize,
}

fn level() -> Level {
    Level {
        fds: open_fds(),
        threads: threads(),
        mappings: mappings(),
    }
}

/// Waits (bounded) until the process is back at `base`; the last level seen.
fn settles_at(base: Level) -> Level {
    let mut now = level();
    wait_until(5, || {
        now = level();
        now == base
    });
    now
}

#[test]
fn reconnect_soak_returns_fds_threads_mappings_and_mbufs_to_baseline() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (d, port) = device(dir.path(), "soak");
    let w = Worker::spawn(vec![(port, Arc::clone(&d.rx))]);
    // The first session installs what lives for the process (the SIGBUS
    // handler, the pool's thread caches).
    session(&d, 2);
    settled_fds();
    let base = level();
    let pool_base = pool().available();
    for i in 0..500 {
        session(&d, 2);
        if i == 9 {
            // A leak shows after a few cycles already; fail fast.
            assert_eq!(settles_at(base), base, "after 10 cycles");
        }
    }
    assert_eq!(settles_at(base), base, "after 500 cycles");
    assert!(w.stop(), "worker did not stop");
    assert!(
        wait_until(5, || pool().available() >= pool_base),
        "mbufs not returned: {} free, {pool_base} at baseline",
        pool().available()
    );
    assert_eq!(d.dev.error(), None);
}

#[test]
fn a_frontend_that_closes_its_eventfds_does_not_wedge_the_port() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (d, port) = device(dir.path(), "wedge");
    let w = Worker::spawn(vec![(port, Arc::clone(&d.rx))]);
    for round in 0..3 {
        let mut g = Guest::with_eventfd_flags(0);
        let mut fe = g.attach(&d.sock);
        // The frontend's own copies of kick and call go away before the
        // rings are enabled; weir keeps its own.
        g.call = [None, None];
        g.kick = [None, None];
        Guest::enable(&mut fe);
        assert!(
            wait_until(5, || d.dev.link() == LinkState::Up),
            "round {round}"
        );
        let before = d.rx.load(Ordering::Relaxed);
        for i in 0..4 {
            g.send_frame(i);
        }
        assert!(
            wait_until(5, || d.rx.load(Ordering::Relaxed) == before + 4),
            "round {round}: frames not received"
        );
        drop(fe);
        assert!(wait_until(5, || !d.dev.is_connected()), "round {round}");
        // The next frontend is answered at once.
        let mut r = Raw::connect(&d.sock);
        assert!(
            r.answers(),
            "round {round}: no reply to a new frontend; error {:?}",
            d.dev.error()
        );
        drop(r);
        assert!(wait_until(5, || !d.dev.is_connected()), "round {round}");
    }
    session(&d, 4);
    assert_eq!(d.dev.error(), None);
    assert!(w.stop(), "worker did not stop");
}

/// The fd of `ev`, borrowed.
fn borrow(ev: &EventFd) -> BorrowedFd<'_> {
    use std::os::fd::AsRawFd;
    // SAFETY: `ev` owns the fd and outlives the borrow.
    unsafe { BorrowedFd::borrow_raw(ev.as_raw_fd()) }
}

/// Clears O_NONBLOCK on the file description behind `fd` (shared with weir's
/// copy) and fills its counter.
fn make_blocking_and_full(fd: &EventFd) {
    let fl = rustix::fs::fcntl_getfl(borrow(fd)).unwrap();
    rustix::fs::fcntl_setfl(borrow(fd), fl - rustix::fs::OFlags::NONBLOCK).unwrap();
    fd.write(EVENTFD_FULL).unwrap();
}

#[test]
fn a_blocking_full_call_eventfd_never_blocks_the_worker_or_shutdown() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (b, b_port) = device(dir.path(), "bystander");
    let (h, h_port) = device(dir.path(), "hostile");
    // Both ports on one worker, as two guests on one weir worker.
    let w = Worker::spawn(vec![
        (b_port, Arc::clone(&b.rx)),
        (h_port, Arc::clone(&h.rx)),
    ]);
    let mut bg = Guest::new();
    let mut bfe = bg.attach(&b.sock);
    Guest::enable(&mut bfe);
    assert!(wait_until(5, || b.dev.link() == LinkState::Up));

    let mut g = Guest::new();
    let mut fe = g.attach(&h.sock);
    Guest::enable(&mut fe);
    assert!(wait_until(5, || h.dev.link() == LinkState::Up));
    for call in g.call.iter().flatten() {
        make_blocking_and_full(call);
    }
    // Frames the guest wants an interrupt for.
    for i in 0..4 {
        g.send_frame(i);
    }
    assert!(
        wait_until(5, || h.rx.load(Ordering::Relaxed) == 4),
        "hostile frames not received"
    );
    assert!(w.alive_within(5), "the worker is blocked");
    // The neighbour on the same worker keeps forwarding.
    for i in 0..4 {
        bg.send_frame(i);
    }
    assert!(
        wait_until(5, || b.rx.load(Ordering::Relaxed) == 4),
        "bystander stopped forwarding"
    );
    // The hostile frontend leaves; the port serves the next one.
    drop(fe);
    assert!(wait_until(5, || !h.dev.is_connected()));
    let mut r = Raw::connect(&h.sock);
    assert!(r.answers(), "hostile port wedged");
    drop(r);
    // A guest that keeps its counter full while connected: shutting the
    // device down still completes.
    let mut g2 = Guest::new();
    let mut fe2 = g2.attach(&h.sock);
    Guest::enable(&mut fe2);
    assert!(wait_until(5, || h.dev.link() == LinkState::Up));
    for call in g2.call.iter().flatten() {
        make_blocking_and_full(call);
    }
    for i in 0..4 {
        g2.send_frame(i);
    }
    assert!(wait_until(5, || h.rx.load(Ordering::Relaxed) == 8));
    assert!(w.alive_within(5), "the worker is blocked");
    let t = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let Dev { dev, .. } = h;
    std::thread::spawn(move || {
        drop(dev);
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "device shutdown blocked by a guest eventfd"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(fe2);
    assert!(w.alive_within(5), "the worker is blocked");
    assert!(w.stop(), "worker did not stop");
    drop(bfe);
}

/// The process's fd count once it held still for 50 ms (bounded: 5 s).
fn settled_fds() -> usize {
    let mut last = open_fds();
    let mut since = Instant::now();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && since.elapsed() < Duration::from_millis(50) {
        std::thread::sleep(Duration::from_millis(1));
        let now = open_fds();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// A message spread over many `recvmsg` calls, each carrying fds: weir must
/// not hold more than one message's worth of them, and drops the connection.
#[test]
fn fds_spread_over_one_message_are_bounded_and_closed() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (d, port) = device(dir.path(), "fds");
    let w = Worker::spawn(vec![(port, Arc::clone(&d.rx))]);
    let ev = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    // Idle: after a session, the device has built the library instance for
    // the next connection once the count stops moving.
    session(&d, 2);
    let base = settled_fds();
    let fds: Vec<BorrowedFd<'_>> = (0..32).map(|_| borrow(&ev)).collect();
    let mut r = Raw::connect(&d.sock);
    assert!(wait_until(5, || d.dev.is_connected()));
    // A header promising 4 KiB, then the payload a byte at a time, each byte
    // with 32 fds: on their own, the kernel would let weir collect 131 072.
    let mut peak = 0;
    let mut sent = 0;
    if r.send_bytes(&Raw::header(GET_FEATURES, 4096), &fds) {
        for _ in 0..64 {
            if !r.send_bytes(&[0], &fds) {
                break;
            }
            sent += 1;
            peak = peak.max(open_fds().saturating_sub(base));
        }
    }
    // Until weir drops the connection, sample what it holds.
    let end = Instant::now() + Duration::from_secs(3);
    let mut closed = false;
    while !closed && Instant::now() < end {
        peak = peak.max(open_fds().saturating_sub(base));
        closed = r.closed_within_ms(5);
    }
    assert!(closed, "connection kept after {sent} fd-laden chunks");
    assert!(peak <= 3 * 32, "weir held {peak} fds of one message");
    drop(r);
    assert!(wait_until(5, || !d.dev.is_connected()));
    assert!(
        wait_until(5, || open_fds() <= base),
        "fds not closed: {} open, {base} before",
        open_fds()
    );
    // A message that takes no fds but carries some is refused, its fds closed.
    let mut r = Raw::connect(&d.sock);
    assert!(r.send_bytes(&Raw::header(SET_OWNER, 0), &fds[..8]));
    assert!(r.answers() || r.closed_within(3));
    drop(r);
    assert!(wait_until(5, || !d.dev.is_connected()));
    assert!(
        wait_until(5, || open_fds() <= base),
        "fds not closed: {} open, {base} before",
        open_fds()
    );
    session(&d, 2);
    assert!(w.stop(), "worker did not stop");
}

/// The `eventfd-id` of an open fd (unique among live eventfds).
fn eventfd_id(fd: &str) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("eventfd-id:"))
        .map(|v| v.trim().to_owned())
}

/// How many of this process's fds refer to the eventfd behind `ev`.
fn references(ev: &EventFd) -> usize {
    use std::os::fd::AsRawFd;
    let id = eventfd_id(&ev.as_raw_fd().to_string()).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| eventfd_id(&e.file_name().to_string_lossy()).as_deref() == Some(&*id))
        .count()
}

/// A data queue's kick is never read by weir (workers poll): weir keeps no
/// reference to the guest's eventfd, so a frontend that makes it blocking and
/// reads it first cannot block a thread of weir's in a read.
#[test]
fn weir_keeps_no_reference_to_a_data_queue_kick() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (d, port) = device(dir.path(), "kick");
    let w = Worker::spawn(vec![(port, Arc::clone(&d.rx))]);
    let mut g = Guest::new();
    let mut fe = g.attach(&d.sock);
    Guest::enable(&mut fe);
    assert!(wait_until(5, || d.dev.link() == LinkState::Up));
    for kick in g.kick.iter().flatten() {
        assert_eq!(references(kick), 1, "weir holds the guest's kick eventfd");
        // Kicks are harmless: frames still flow.
        kick.write(1).unwrap();
    }
    for i in 0..2 {
        g.send_frame(i);
    }
    assert!(wait_until(5, || d.rx.load(Ordering::Relaxed) == 2));
    drop(fe);
    assert!(wait_until(5, || !d.dev.is_connected()));
    assert!(w.stop(), "worker did not stop");
}
