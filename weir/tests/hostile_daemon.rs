//! A hostile vhost-user frontend against the real `weir run` daemon: three
//! vhost-user ports on one bridge and one worker, two of them healthy guests.
//!
//! The guests are memfds written with `pwrite` and set up through the `vhost`
//! crate's frontend; they ask for interrupts (avail flags 0, no EVENT_IDX), as
//! an interrupt-driven guest does.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::Frontend;
use vhost_user::testguest::{self, wait_until, Guest, Handshake, Layout, RawFrontend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

mod common;
use common::Daemon;

const DESC_F_WRITE: u16 = 2;
const QSIZE: u16 = 8;
/// Guest TX buffers; guest RX buffers follow.
const LAYOUT: Layout = Layout {
    mem_bytes: 0x10_0000,
    queue_size: QSIZE,
    tx_buf: 0x1_0000,
    tx_stride: 0x800,
};
const RX_BUF: u64 = 0x2_0000;
const EVENTFD_FULL: u64 = 0xffff_ffff_ffff_fffe;

/// A guest and its frontend; dropping it disconnects.
struct Vm {
    g: Guest,
    fe: Frontend,
}

impl Vm {
    /// Connects and sets up both rings, RX buffers posted; `flags` for the
    /// eventfds (0: blocking).
    fn attach(sock: &Path, flags: i32) -> Vm {
        let mut g = Guest::new(LAYOUT, flags).unwrap();
        let how = Handshake {
            features: 0,
            protocol: VhostUserProtocolFeatures::REPLY_ACK,
            enable: false,
        };
        let fe = g.attach(sock, &how).unwrap();
        for head in 0..QSIZE {
            g.desc(
                0,
                head,
                RX_BUF + 0x800 * u64::from(head),
                0x800,
                DESC_F_WRITE,
                0,
            );
            g.push(0, head);
        }
        Vm { g, fe }
    }

    fn enable(&mut self) {
        Guest::enable(&mut self.fe).unwrap();
    }

    /// Sends one broadcast frame from guest `src` (at most QSIZE in all: TX
    /// buffers are not recycled).
    fn send(&mut self, src: u8, seq: u8) {
        self.g
            .send_frame(&testguest::frame([0x02, 0, 0, 0, src, seq]));
    }
}

/// Clears O_NONBLOCK on the file description behind `ev` (weir's copy shares
/// it) and fills the counter, so that a write of 1 blocks.
fn make_blocking_and_full(ev: &EventFd) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: `ev` owns the fd and outlives the borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(ev.as_raw_fd()) };
    let fl = rustix::fs::fcntl_getfl(fd).unwrap();
    rustix::fs::fcntl_setfl(fd, fl - rustix::fs::OFlags::NONBLOCK).unwrap();
    ev.write(EVENTFD_FULL).unwrap();
}

/// The first message of a new frontend is answered.
fn answers(sock: &Path) -> bool {
    RawFrontend::connect(sock).unwrap().answers()
}

/// A fresh directory for one test's sockets and logs.
fn test_dir(name: &str) -> std::path::PathBuf {
    common::test_dir(&format!("hostile-{name}-{}", std::process::id()))
}

fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

fn sigterm_exits_within(d: &mut Daemon, secs: u64) -> bool {
    Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status()
        .unwrap();
    wait_until(secs, || !d.alive())
}

#[test]
fn a_guest_that_blocks_its_call_eventfd_stalls_neither_the_worker_nor_sigterm() {
    let dir = test_dir("irq");
    let cfg = common::vhost_config(dir.as_path(), &["a", "b", "h"], "server", 1, 4096);
    let mut d = Daemon::start(dir.as_path(), &cfg);
    let sock = |n: &str| dir.as_path().join(format!("{n}.sock"));
    let mut a = Vm::attach(&sock("a"), EFD_NONBLOCK);
    let mut b = Vm::attach(&sock("b"), EFD_NONBLOCK);
    let mut h = Vm::attach(&sock("h"), EFD_NONBLOCK);
    for g in [&mut a, &mut b, &mut h] {
        g.enable();
    }
    d.wait_up(&["a", "b", "h"]);
    for call in h.g.call.iter().flatten() {
        make_blocking_and_full(call);
    }
    // The hostile guest's frames are flooded to a and b, and it wants an
    // interrupt for them.
    for i in 0..2 {
        h.send(3, i);
    }
    assert!(
        wait_until(5, || h.g.used_idx(1) == 2),
        "hostile frames not taken"
    );
    // Its neighbours on the same worker still forward to each other.
    let before = b.g.used_idx(0);
    for i in 0..2 {
        a.send(1, i);
    }
    assert!(
        wait_until(5, || b.g.used_idx(0) >= before.wrapping_add(2)),
        "a -> b stopped (b got {} frames)",
        b.g.used_idx(0).wrapping_sub(before)
    );
    let t = Instant::now();
    assert!(
        sigterm_exits_within(&mut d, 5),
        "weir run still running 5 s after SIGTERM"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn reconnects_and_closed_eventfds_leave_no_fds_and_no_wedged_port() {
    let dir = test_dir("reconnect");
    let cfg = common::vhost_config(dir.as_path(), &["a", "b"], "server", 1, 4096);
    let d = Daemon::start(dir.as_path(), &cfg);
    let sock = |n: &str| dir.as_path().join(format!("{n}.sock"));
    let mut b = Vm::attach(&sock("b"), EFD_NONBLOCK);
    b.enable();
    let session = |closes: bool, seq: u8| {
        // Blocking eventfds, as a careless or hostile frontend passes them.
        let mut g = Vm::attach(&sock("a"), 0);
        if closes {
            g.g.call = [None, None];
            g.g.kick = [None, None];
        }
        g.enable();
        d.wait_up(&["a"]);
        for i in 0..2 {
            g.send(1, seq.wrapping_add(i));
        }
        assert!(wait_until(5, || g.g.used_idx(1) == 2), "frames not taken");
        drop(g);
        assert!(
            wait_until(5, || d.port_json("a")["link"] == "down"),
            "disconnect not seen"
        );
    };
    session(false, 0);
    let pid = d.pid();
    let (fds, threads) = (fds_of(pid), threads_of(pid));
    for i in 0..10 {
        session(i % 2 == 1, 2 * i);
        assert!(
            answers(&sock("a")),
            "cycle {i}: a new frontend got no reply"
        );
    }
    assert!(
        // At most: the baseline may include a control client's thread.
        wait_until(5, || fds_of(pid) <= fds && threads_of(pid) <= threads),
        "daemon holds {} fds and {} threads, {fds} and {threads} at the baseline",
        fds_of(pid),
        threads_of(pid)
    );
    let a = d.port_json("a");
    assert_eq!(a["state"], "ok", "{a}");
    let mut g = Vm::attach(&sock("a"), EFD_NONBLOCK);
    g.enable();
    d.wait_up(&["a", "b"]);
}

#[test]
fn the_daemon_raises_its_soft_fd_limit_to_what_the_config_needs() {
    let dir = test_dir("nofile");
    let names: Vec<String> = (0..8).map(|i| format!("vm{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = common::vhost_config(dir.as_path(), &names, "server", 8, 4096);
    std::fs::write(dir.as_path().join("weir.toml"), cfg).unwrap();
    let log = File::create(dir.as_path().join("weir.log")).unwrap();
    // The common default soft limit; the hard limit stays as it is.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 1024 && exec \"$@\"", "sh", common::BIN])
        .arg("--socket")
        .arg(dir.as_path().join("weir.sock"))
        .arg("run")
        .arg("--config")
        .arg(dir.as_path().join("weir.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // Ready: the limit is read after `sh` became the daemon and it started.
    let sock = dir.join("weir.sock");
    let ready = wait_until(20, || {
        Command::new(common::BIN)
            .arg("--socket")
            .arg(&sock)
            .arg("stats")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let soft: Option<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
    let hard: u64 = {
        let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        l.maximum.unwrap_or(u64::MAX)
    };
    // 8 devices of 8 queue pairs, whatever their frontends do.
    let need = (8 * vhost_user::max_fds(8)).min(hard);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    common::reap(&mut child, Duration::from_secs(10));
    assert!(ready, "weir run did not come up");
    assert!(
        soft.is_some_and(|s| s >= need),
        "soft RLIMIT_NOFILE {soft:?}, need {need}: {}",
        std::fs::read_to_string(dir.as_path().join("weir.log")).unwrap_or_default()
    );
}
