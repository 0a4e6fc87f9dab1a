//! End to end: `weir capture` on the real `weir run` daemon. Two quiet
//! namespaces (no frame is sent that the test did not cause) on afpacket
//! ports `p1` and `p2` of one bridge.
//!
//! 1. `weir capture p1 --both -c N` while one namespace pings the other,
//!    and the same on p2 at the same time: `tshark -r` reads each file,
//!    which holds exactly the N frames, and they are exactly what its
//!    port's counters moved by (frames and bytes).
//! 2. A capture without a count during a TCP transfer, ended by SIGINT: the
//!    frames in the file plus those the capture lost are what p1's counters
//!    moved by, and with none lost the bytes match too.
//! 3. A capture ends by itself with "port deleted" when its port goes.
//! 4. `--drops` with a security group that denies ICMP on p1: the file
//!    holds the denied pings, each with the comment `acl-deny`.
//! 5. A mirror of p1 (both ways) to a TAP port: tcpdump on the TAP sees
//!    every request p1 received and every reply it sent.
//!
//! Needs root and tshark (`scripts/setup.sh` installs it); fails, never
//! skips, without them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_testkit::{require_root_and_ip, tcp_transfer, VethHost};

mod common;
use common::{kernel_config, loss_pct, ping, ping_within, reap, test_dir, Daemon, BIN};

/// How long a step waits for an event it expects.
const WAIT: Duration = Duration::from_secs(30);

/// A `weir capture` running in the background, its stderr read line by line.
struct CaptureRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl CaptureRun {
    /// Starts `weir capture ARGS` and waits until it says it captures.
    fn start(d: &Daemon, args: &[&str]) -> CaptureRun {
        CaptureRun::start_with(d, args, Stdio::null())
    }

    /// [`CaptureRun::start`] with its stdout going to `stdout`.
    fn start_with(d: &Daemon, args: &[&str], stdout: Stdio) -> CaptureRun {
        let mut child = Command::new(BIN)
            .arg("--socket")
            .arg(&d.socket)
            .arg("capture")
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting weir capture");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut run = CaptureRun {
            child,
            lines,
            stderr: Vec::new(),
        };
        let started = run.wait_line(|l| l.starts_with("capturing on "));
        assert!(
            started.is_some(),
            "weir capture {args:?} did not start: {:?}\n{}",
            run.stderr,
            d.log()
        );
        run
    }

    /// The next stderr line that `pred` accepts, within [`WAIT`].
    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits for the capture to end by itself; its summary `(captured,
    /// lost, why)`.
    fn finish(mut self) -> (u64, u64, String) {
        let line = self.wait_line(|l| l.contains(" frames captured, "));
        let status = {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(st) = self.child.try_wait().unwrap() {
                    break Some(st);
                }
                if Instant::now() > deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        reap(&mut self.child, Duration::from_secs(1));
        let line =
            line.unwrap_or_else(|| panic!("weir capture printed no summary: {:?}", self.stderr));
        assert!(
            status.is_some_and(|s| s.success()),
            "weir capture: {status:?}: {:?}",
            self.stderr
        );
        summary(&line)
    }

    /// Ends the capture with SIGINT, as Ctrl-C does; its summary.
    fn interrupt(self) -> (u64, u64, String) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.finish()
    }
}

/// `N frames captured, M lost (why)` as `(N, M, why)`.
fn summary(line: &str) -> (u64, u64, String) {
    let mut words = line.split_whitespace();
    let n = words.next().unwrap().parse().unwrap();
    let lost = line
        .split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad summary {line:?}"));
    let why = line
        .split_once('(')
        .map(|(_, w)| w.trim_end_matches(')').to_owned())
        .unwrap_or_default();
    (n, lost, why)
}

/// `tshark -r FILE -T fields -e FIELDS...`: one row per frame.
fn tshark_fields(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("running tshark (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// Frames and their summed wire length in `file`, as tshark reads them.
fn tshark_totals(file: &Path) -> (u64, u64) {
    let rows = tshark_fields(file, &["frame.len"]);
    let bytes = rows.iter().map(|r| r[0].parse::<u64>().unwrap()).sum();
    (rows.len() as u64, bytes)
}

/// p1's counters that a capture of both directions sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    frames: u64,
    bytes: u64,
}

fn seen(d: &Daemon, port: &str) -> Seen {
    let p = d.port_json(port);
    let c = |k: &str| p["stats"][k].as_u64().unwrap_or(0);
    // Frames the switch handed to the port but the driver did not take are
    // seen by a tx capture all the same.
    let tx_full = p["stats"]["drops"]["tx-full"].as_u64().unwrap_or(0);
    Seen {
        frames: c("rx_packets") + c("tx_packets") + tx_full,
        bytes: c("rx_bytes") + c("tx_bytes"),
    }
}

fn delta(a: Seen, b: Seen) -> Seen {
    Seen {
        frames: b.frames - a.frames,
        bytes: b.bytes - a.bytes,
    }
}

/// Waits until `port`'s counters stop moving (no frame in flight).
fn settled(d: &Daemon, port: &str) -> Seen {
    let mut last = seen(d, port);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = seen(d, port);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// `tcpdump -i IFACE -w FILE -c N FILTER` in the background.
struct TcpDump(Child);

impl TcpDump {
    /// Starts it and waits until it listens.
    fn start(iface: &str, file: &Path, filter: &str, count: u64) -> TcpDump {
        let mut child = Command::new("tcpdump")
            .args([
                "-i",
                iface,
                "-U",
                "--immediate-mode",
                "-c",
                &count.to_string(),
                "-w",
            ])
            .arg(file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tcpdump (scripts/setup.sh installs it)");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "tcpdump: {line}");
        TcpDump(child)
    }

    /// Waits for it to exit after its count.
    fn finish(&mut self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(st) = self.0.try_wait().unwrap() {
                assert!(st.success(), "tcpdump: {st}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tcpdump did not see its frames within {WAIT:?}");
    }
}

impl Drop for TcpDump {
    fn drop(&mut self) {
        reap(&mut self.0, Duration::from_millis(10));
    }
}

#[test]
fn capture_writes_what_the_port_counted_and_ends_when_asked() {
    require_root_and_ip().expect("the capture test needs root and iproute2");
    let tag = format!("wc{}", std::process::id() % 100_000);
    let a = VethHost::create_quiet(&format!("{tag}-a"), &format!("{tag}a"), "198.18.31.1").unwrap();
    let b = VethHost::create_quiet(&format!("{tag}-b"), &format!("{tag}b"), "198.18.31.2").unwrap();
    let config = kernel_config(
        "",
        &[
            ("p1", "afpacket", &a.host_if),
            ("p2", "afpacket", &b.host_if),
        ],
    );
    let dir = test_dir(&format!("capture-{tag}"));
    let d = Daemon::start(&dir, &config);
    d.wait_up(&["p1", "p2"]);
    // Addresses resolved before the captures: pings are then the only
    // frames on the links.
    let out = ping(&a.ns, "198.18.31.2", 1, "0.2").unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(loss_pct(&out), 0.0, "{out}");

    // 1. A counted capture of a fixed number of pings.
    const PINGS: u64 = 5;
    let file = dir.join("ping.pcapng");
    let file2 = dir.join("ping-p2.pcapng");
    let before = settled(&d, "p1");
    let before2 = settled(&d, "p2");
    let count = (2 * PINGS).to_string();
    let run = CaptureRun::start(
        &d,
        &["p1", "--both", "-c", &count, "-w", file.to_str().unwrap()],
    );
    // A second capture at the same time, on the other port.
    let run2 = CaptureRun::start(
        &d,
        &["p2", "--both", "-c", &count, "-w", file2.to_str().unwrap()],
    );
    let out = ping(&a.ns, "198.18.31.2", PINGS as u32, "0.2").unwrap();
    assert_eq!(loss_pct(&out), 0.0, "{out}");
    let (captured, lost, why) = run.finish();
    let (captured2, lost2, why2) = run2.finish();
    let moved = delta(before, settled(&d, "p1"));
    let moved2 = delta(before2, settled(&d, "p2"));
    assert_eq!(
        (captured, lost, why.as_str()),
        (2 * PINGS, 0, "count reached")
    );
    assert_eq!(
        (captured2, lost2, why2.as_str()),
        (2 * PINGS, 0, "count reached")
    );
    assert_eq!(
        moved.frames,
        2 * PINGS,
        "p1 moved {moved:?} for {PINGS} pings"
    );
    assert_eq!(
        moved2.frames,
        2 * PINGS,
        "p2 moved {moved2:?} for {PINGS} pings"
    );
    assert_eq!(tshark_totals(&file), (moved.frames, moved.bytes));
    assert_eq!(tshark_totals(&file2), (moved2.frames, moved2.bytes));
    let rows = tshark_fields(&file, &["icmp.type", "frame.interface_name"]);
    let types: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "8").count() as u64,
        PINGS,
        "{rows:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "0").count() as u64,
        PINGS,
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r[1] == "p1"), "{rows:?}");

    // With `-w -` the same goes to stdout.
    let file = dir.join("stdout.pcapng");
    let out = std::fs::File::create(&file).unwrap();
    let run = CaptureRun::start_with(&d, &["p1", "--rx", "-c", "2", "-w", "-"], out.into());
    let out = ping(&a.ns, "198.18.31.2", 2, "0.2").unwrap();
    assert_eq!(loss_pct(&out), 0.0, "{out}");
    assert_eq!(run.finish().0, 2);
    let rows = tshark_fields(&file, &["icmp.type"]);
    assert_eq!(rows, [["8"], ["8"]], "the requests p1 received");

    // 2. An open-ended capture during a transfer, ended with SIGINT.
    let file = dir.join("transfer.pcapng");
    let before = settled(&d, "p1");
    let run = CaptureRun::start(&d, &["p1", "-w", file.to_str().unwrap()]);
    tcp_transfer(&a.ns, &b.ns, "198.18.31.2", 5301, 4_000_000)
        .unwrap_or_else(|e| panic!("transfer: {e:#}\n{}", d.log()));
    let out = ping(&a.ns, "198.18.31.2", 2, "0.2").unwrap();
    assert_eq!(loss_pct(&out), 0.0, "{out}");
    let moved = delta(before, settled(&d, "p1"));
    let (captured, lost, why) = run.interrupt();
    assert_eq!(why, "interrupted");
    eprintln!("transfer: p1 moved {moved:?}; captured {captured}, lost {lost}");
    assert_eq!(
        captured + lost,
        moved.frames,
        "every frame p1 moved is captured or lost"
    );
    let (frames, bytes) = tshark_totals(&file);
    assert_eq!(frames, captured);
    if lost == 0 {
        assert_eq!(bytes, moved.bytes);
    }

    // 3. Deleting the port ends its capture.
    let file = dir.join("deleted.pcapng");
    let run = CaptureRun::start(&d, &["p2", "--rx", "-w", file.to_str().unwrap()]);
    d.ok(&["port", "del", "p2"]);
    let (_, _, why) = run.finish();
    assert_eq!(why, "port deleted");
    tshark_totals(&file);
    d.ok(&[
        "port", "add", "p2", "--type", "afpacket", "--iface", &b.host_if, "--bridge", "br0",
    ]);
    d.wait_up(&["p2"]);

    // 4. --drops: what p1's security group denies, with the reason.
    d.ok(&[
        "acl",
        "add",
        "noping",
        "--default",
        "allow",
        "--rule",
        "in icmp deny",
    ]);
    d.ok(&["port", "set", "p1", "acl_in=noping"]);
    let file = dir.join("drops.pcapng");
    let run = CaptureRun::start(
        &d,
        &["p1", "--drops", "-c", "3", "-w", file.to_str().unwrap()],
    );
    let _ = ping_within(&a.ns, "198.18.31.2", 3, "0.2", 3);
    let (captured, lost, why) = run.finish();
    assert_eq!((captured, lost, why.as_str()), (3, 0, "count reached"));
    let rows = tshark_fields(&file, &["icmp.type", "frame.comment"]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter().all(|r| r[0] == "8" && r[1] == "acl-deny"),
        "denied pings with their reason: {rows:?}"
    );
    d.ok(&["port", "clear", "p1", "acl_in"]);
    d.ok(&["acl", "del", "noping"]);

    // 5. A mirror of p1 both ways to a TAP port: tcpdump on the TAP sees
    //    the requests p1 received and the replies it sent.
    let span = format!("{tag}sp");
    d.ok(&["port", "add", "span", "--type", "tap", "--iface", &span]);
    weir_testkit::sh(&["ip", "link", "set", "dev", &span, "up"]).unwrap();
    d.wait_up(&["span"]);
    d.ok(&[
        "mirror", "add", "m1", "--src", "p1", "--dst", "p1", "--to", "span",
    ]);
    let (ok, _, err) = d.cli(&["port", "del", "span"]);
    assert!(
        !ok && err.contains("mirror m1"),
        "a mirror's port is not deleted: {err}"
    );
    let (ok, _, err) = d.cli(&["mirror", "add", "m2", "--src", "span", "--to", "p1"]);
    assert!(!ok && err.contains("do not chain"), "{err}");
    let dump = dir.join("span.pcap");
    let mut tcpdump = TcpDump::start(&span, &dump, "icmp", 2 * PINGS);
    let out = ping(&a.ns, "198.18.31.2", PINGS as u32, "0.2").unwrap();
    assert_eq!(loss_pct(&out), 0.0, "{out}");
    tcpdump.finish();
    let rows = tshark_fields(&dump, &["icmp.type", "ip.src"]);
    let requests = rows
        .iter()
        .filter(|r| r[0] == "8" && r[1] == "198.18.31.1")
        .count();
    let replies = rows
        .iter()
        .filter(|r| r[0] == "0" && r[1] == "198.18.31.2")
        .count();
    assert_eq!(
        (requests as u64, replies as u64),
        (PINGS, PINGS),
        "{rows:?}"
    );
    let list = d.json(&["mirror", "list"]);
    assert_eq!(list[0]["name"], "m1", "{list}");
    assert!(list[0]["copied"].as_u64().unwrap() >= 2 * PINGS, "{list}");
    d.ok(&["mirror", "del", "m1"]);
    assert_eq!(d.json(&["mirror", "list"]), serde_json::json!([]));
    d.ok(&["port", "del", "span"]);

    // Bad requests are refused with a message.
    let (ok, _, err) = d.cli(&["capture", "nope", "-w", dir.join("x").to_str().unwrap()]);
    assert!(!ok && err.contains("no port named nope"), "{err}");
    let (ok, _, err) = d.cli(&[
        "capture",
        "p1",
        "-c",
        "0",
        "-w",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("-c 0"), "{err}");
}
