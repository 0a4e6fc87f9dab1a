//! Shared harness for the end-to-end tests: a `weir run` daemon driven through
//! its CLI, stopped with SIGINT (then SIGKILL) on drop.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_testkit::Netns;

/// The `weir` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_weir");

/// A running `weir run` with its config, control socket and logs in `dir`.
pub struct Daemon {
    child: Child,
    /// Control socket.
    pub socket: PathBuf,
    dir: PathBuf,
    starts: u32,
    /// `RLIMIT_AS` of the daemon in KiB, if limited.
    address_space_kib: Option<u64>,
}

impl Daemon {
    /// Writes `config` to `dir/weir.toml`, starts the daemon and waits until it
    /// answers requests (the socket is bound before the ports are opened, and
    /// requests are served only once they all are).
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Daemon::start_limited(dir, config, None)
    }

    /// [`start`](Self::start) with the daemon's address space limited to
    /// `address_space_kib` (`ulimit -v`), so that large allocations fail.
    pub fn start_limited(dir: &Path, config: &str, address_space_kib: Option<u64>) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("weir.toml"), config).unwrap();
        let mut d = Daemon {
            child: Daemon::spawn(dir, 0, address_space_kib),
            socket: dir.join("weir.sock"),
            dir: dir.to_path_buf(),
            starts: 1,
            address_space_kib,
        };
        d.wait_ready();
        d
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(dir: &Path, n: u32, address_space_kib: Option<u64>) -> Child {
        let mut cmd = match address_space_kib {
            None => Command::new(BIN),
            Some(kib) => {
                // The shell sets the limit, then becomes the daemon (same pid).
                let mut c = Command::new("sh");
                c.args(["-c", "ulimit -v \"$1\" && shift && exec \"$@\"", "sh"])
                    .arg(kib.to_string())
                    .arg(BIN);
                c
            }
        };
        weir_run(
            &mut cmd,
            &dir.join("weir.sock"),
            &dir.join("weir.toml"),
            &dir.join(format!("weir.{n}.log")),
        )
        .spawn()
        .expect("starting weir run")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.cli(&["stats"]).0 {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("weir run exited with {st}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "weir run did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no cleanup at all, as after a crash.
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, as a service manager stops the daemon, and waits (up to 20
    /// s) for it to exit; it must exit by itself, with success.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "weir run did not exit on SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "weir run exited with {status}: {}",
            self.log()
        );
    }

    /// Starts the daemon again with the same configuration.
    pub fn restart(&mut self) {
        assert!(self.child.try_wait().unwrap().is_some(), "still running");
        self.child = Daemon::spawn(&self.dir, self.starts, self.address_space_kib);
        self.starts += 1;
        self.wait_ready();
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        let f = self
            .dir
            .join(format!("weir.{}.log", self.starts.saturating_sub(1)));
        std::fs::read_to_string(f).unwrap_or_default()
    }

    /// Runs a CLI verb against this daemon: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a CLI verb that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(ok, "weir {}: {err}\n{}", args.join(" "), self.log());
        out
    }

    /// A show verb with `--json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut v = args.to_vec();
        v.push("--json");
        serde_json::from_str(&self.ok(&v)).unwrap()
    }

    /// `weir port list --json`.
    pub fn ports(&self) -> serde_json::Value {
        self.json(&["port", "list"])
    }

    /// One port's entry of `weir port list --json`.
    pub fn port_json(&self, name: &str) -> serde_json::Value {
        port_entry(&self.ports(), name).clone()
    }

    /// One counter of one port's totals, e.g. `rx_packets`.
    pub fn port_counter(&self, name: &str, key: &str) -> u64 {
        self.port_json(name)["stats"][key].as_u64().unwrap()
    }

    /// `weir port add NAME --type pcap --bridge br0 --rx-path PCAP`: replays
    /// the capture into bridge `br0` once.
    pub fn add_replay(&self, name: &str, pcap: &Path) {
        self.ok(&[
            "port",
            "add",
            name,
            "--type",
            "pcap",
            "--bridge",
            "br0",
            "--rx-path",
            pcap.to_str().unwrap(),
        ]);
    }

    /// Waits until every named port reports link up.
    pub fn wait_up(&self, names: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ports = self.ports();
            let up = names.iter().all(|n| {
                ports
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == *n && p["link"] == "up")
            });
            if up {
                return;
            }
            assert!(Instant::now() < deadline, "ports not up: {ports}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        // SIGINT for a clean shutdown (releases ports, removes the socket), then kill.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        reap(&mut self.child, Duration::from_secs(10));
    }
}

/// The CLI arguments `port add NAME --type vhost-user --socket SOCKET`, then
/// `extra`, for [`Daemon::cli`] or [`Daemon::ok`].
pub fn add_vhost_args<'a>(name: &'a str, socket: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "port",
        "add",
        name,
        "--type",
        "vhost-user",
        "--socket",
        socket,
    ];
    args.extend_from_slice(extra);
    args
}

/// `name`'s entry in `ports`, the array `weir port list --json` prints.
///
/// # Panics
/// If there is none.
pub fn port_entry<'a>(ports: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name} in {ports}"))
}

/// Waits up to `grace` for `child` to exit by itself, then kills it; either
/// way it is reaped.
pub fn reap(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of `text`, for failure messages that quote a log.
pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// A daemon config: one bridge br0 and a vhost-user port per name, socket
/// `<dir>/<name>.sock`, in `mode` with `queues` pairs, over a pool of `mbufs`.
pub fn vhost_config(dir: &Path, names: &[&str], mode: &str, queues: u16, mbufs: u32) -> String {
    let mut cfg =
        format!("[dataplane]\nmbufs = {mbufs}\nidle_sleep_us = 50\n[[bridge]]\nname = \"br0\"\n");
    for name in names {
        cfg += &format!(
            "[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n\
             mode = \"{mode}\"\nbridge = \"br0\"\nqueues = {queues}\n",
            dir.join(format!("{name}.sock")).display()
        );
    }
    cfg
}

/// A daemon config with one bridge `br0` and kernel-interface ports, each
/// `(name, type, iface)`. `extra` goes right after the `[dataplane]` defaults
/// (more `[dataplane]` keys, then any other tables, such as `[fdb]`).
#[allow(dead_code)]
pub fn kernel_config(extra: &str, ports: &[(&str, &str, &str)]) -> String {
    let mut cfg = format!(
        "[dataplane]\nmbufs = 8192\nidle_sleep_us = 20\n{extra}\n[[bridge]]\nname = \"br0\"\n"
    );
    for (name, kind, iface) in ports {
        cfg += &kernel_port(name, kind, iface, "");
    }
    cfg
}

/// The `[[port]]` table of a kernel-interface port on bridge `br0`, for
/// [`kernel_config`]'s output, with `keys` (TOML lines, e.g. `"tag = 10\n"`)
/// added to it.
pub fn kernel_port(name: &str, kind: &str, iface: &str, keys: &str) -> String {
    format!(
        "[[port]]\nname = \"{name}\"\ntype = \"{kind}\"\niface = \"{iface}\"\nbridge = \"br0\"\n{keys}"
    )
}

/// `ping -c count`, waiting (`-w`) until every reply is in or a deadline passes:
/// without `-w`, iputils ping gives the last reply only about twice the fastest
/// round-trip time and counts a reply delayed by a loaded machine as lost.
pub fn ping(from: &Netns, ip: &str, count: u32, interval: &str) -> Result<String, String> {
    let secs = interval.parse::<f64>().unwrap_or(1.0) * f64::from(count);
    ping_within(from, ip, count, interval, secs.ceil() as u64 + 5)
}

/// [`ping`] with the deadline `deadline_secs` (`-w`) given, e.g. a short one
/// for a ping that must fail.
pub fn ping_within(
    from: &Netns,
    ip: &str,
    count: u32,
    interval: &str,
    deadline_secs: u64,
) -> Result<String, String> {
    from.exec(&[
        "ping",
        "-c",
        &count.to_string(),
        "-i",
        interval,
        "-w",
        &deadline_secs.to_string(),
        ip,
    ])
    .map_err(|e| format!("{e:#}"))
}

/// The packet loss in percent from ping's summary (100 if it printed none).
pub fn loss_pct(ping_out: &str) -> f64 {
    let line = ping_out
        .lines()
        .find(|l| l.contains("packet loss"))
        .unwrap_or("");
    line.split(',')
        .find(|f| f.contains("packet loss"))
        .and_then(|f| f.trim().split('%').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(100.0)
}

/// Waits for this test binary's one turn and holds it while the guard
/// lives: `cargo test` runs a binary's tests in parallel, and tests that
/// measure throughput or boot guests would disturb or starve each other. A
/// test that panicked gives up its turn all the same.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty directory `weir-{name}` in the temporary directory, for one
/// test's config, sockets and logs (what an earlier run left there is
/// removed).
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A process started in a network namespace for the length of a test, its
/// output in `log` (killed on drop).
pub struct NsProcess(Child);

impl NsProcess {
    /// Starts `args` in `ns`.
    pub fn start(ns: &Netns, args: &[&str], log: &Path) -> NsProcess {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?} in {}: {e}", ns.name()));
        NsProcess(child)
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A classic pcap of `n` broadcast frames of `len` bytes.
pub fn broadcast_pcap(n: usize, len: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..n {
        for v in [1u32, i as u32, len as u32, len as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.resize(len, i as u8);
        b.extend_from_slice(&f);
    }
    b
}

/// Adds `--socket SOCKET run --config CONFIG` to `cmd` (the `weir` binary,
/// or a wrapper that ends in it), stdin closed and output to `log`.
pub fn weir_run<'a>(
    cmd: &'a mut Command,
    socket: &Path,
    config: &Path,
    log: &Path,
) -> &'a mut Command {
    let log = std::fs::File::create(log).unwrap();
    cmd.arg("--socket")
        .arg(socket)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
}
