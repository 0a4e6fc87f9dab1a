//! Socket and capture-file paths against a hostile local user or a careless
//! request: a running `weir run` driven through its CLI, as root, with a
//! second user (`nobody`) where permissions matter.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{add_vhost_args, broadcast_pcap, Daemon, BIN};

/// A fresh directory under the system temp dir, open to every user (a second
/// user must be able to reach the paths inside to be refused by their mode).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        // Relaxed: only uniqueness matters.
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("weir-paths-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BASE: &str = "[dataplane]\nmbufs = 1024\nidle_sleep_us = 50\n[[bridge]]\nname = \"br0\"\n";

/// A daemon with no ports ([`BASE`]) in a fresh [`TempDir`]. Bound as
/// `let (dir, d)`, `d` is dropped first: the daemon stops before its
/// directory is removed.
fn bare_daemon(tag: &str) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    let d = Daemon::start(&dir.0, BASE);
    (dir, d)
}

fn vhost_port(name: &str, sock: &Path, extra: &str) -> String {
    format!(
        "[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nbridge = \"br0\"\n{extra}",
        sock.display()
    )
}

/// Runs `weir ARGS` against `d`, waiting at most `secs`; None if it did not
/// finish (it is killed).
fn cli_within(d: &Daemon, args: &[&str], secs: u64) -> Option<(bool, String)> {
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            return Some((st.success(), text));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd ARGS` as user and group 65534 (`nobody`), without root's groups.
fn as_nobody(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", cmd])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_port_on_the_control_socket_path_is_refused_and_control_keeps_answering() {
    let (_dir, d) = bare_daemon("ctl");
    let before = std::fs::symlink_metadata(&d.socket).unwrap().ino();
    let ctl = d.socket.to_str().unwrap().to_owned();
    for mode in ["server", "client"] {
        let (ok, _, err) = d.cli(&add_vhost_args("evil", &ctl, &["--mode", mode]));
        assert!(!ok, "a {mode} port took the control socket's path");
        assert!(
            err.contains("live socket") || err.contains("control socket's path"),
            "{err}"
        );
    }
    assert_eq!(std::fs::symlink_metadata(&d.socket).unwrap().ino(), before);
    d.ok(&["stats"]);
    assert!(d.ports().as_array().unwrap().is_empty());
}

#[test]
fn two_ports_on_one_socket_path_are_refused() {
    let dir = TempDir::new("dup");
    let a = dir.0.join("a.sock");
    let d = Daemon::start(&dir.0, &(BASE.to_owned() + &vhost_port("a", &a, "")));
    let a_str = a.to_str().unwrap();
    let ino = std::fs::symlink_metadata(&a).unwrap().ino();
    for mode in ["server", "client"] {
        let (ok, _, err) = d.cli(&add_vhost_args("b", a_str, &["--mode", mode]));
        assert!(!ok, "second {mode} port on {a_str} accepted");
        assert!(err.contains("already used as `socket` of port a"), "{err}");
    }
    // Spelled differently, still the same path.
    let alias = format!("{}/./a.sock", dir.0.display());
    assert!(!d.cli(&add_vhost_args("b", &alias, &[])).0);
    assert_eq!(std::fs::symlink_metadata(&a).unwrap().ino(), ino);
    assert_eq!(d.ports().as_array().unwrap().len(), 1);

    // A config with two ports on one path is refused before anything runs.
    let cfg = dir.0.join("dup.toml");
    std::fs::write(
        &cfg,
        BASE.to_owned() + &vhost_port("x", &a, "") + &vhost_port("y", &a, "mode = \"client\"\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already used as `socket` of port `x`"),
        "{err}"
    );
}

#[test]
fn a_socket_appears_with_its_final_mode_from_the_first_moment() {
    let (dir, d) = bare_daemon("mode");
    for i in 0..20 {
        let sock = dir.0.join(format!("m{i}.sock"));
        let watched = sock.clone();
        // Polls the path until it exists and reports the first mode seen.
        let watcher = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(md) = std::fs::symlink_metadata(&watched) {
                    return Some(md.mode() & 0o777);
                }
                if Instant::now() > deadline {
                    return None;
                }
                std::hint::spin_loop();
            }
        });
        let name = format!("m{i}");
        d.ok(&add_vhost_args(
            &name,
            sock.to_str().unwrap(),
            &["--socket-mode", "0640"],
        ));
        let first = watcher.join().unwrap().expect("socket never appeared");
        assert_eq!(
            first, 0o640,
            "round {i}: socket first seen with mode {first:o}"
        );
        d.ok(&["port", "del", &name]);
    }
}

#[test]
fn another_user_cannot_reach_private_sockets_or_read_a_capture() {
    let dir = TempDir::new("user");
    let private = dir.0.join("private.sock");
    let group = dir.0.join("group.sock");
    let open = dir.0.join("open.sock");
    let cap = dir.0.join("cap.pcap");
    let cfg = BASE.to_owned()
        + &vhost_port("p", &private, "")
        + &vhost_port(
            "g",
            &group,
            "socket_mode = \"0660\"\nsocket_group = \"0\"\n",
        )
        + &vhost_port("o", &open, "socket_mode = \"0666\"\n")
        + &format!(
            "[[port]]\nname = \"c\"\ntype = \"pcap\"\ntx_path = \"{}\"\nbridge = \"br0\"\n",
            cap.display()
        );
    let d = Daemon::start(&dir.0, &cfg);
    assert_eq!(std::fs::metadata(&cap).unwrap().mode() & 0o777, 0o600);
    for sock in [&d.socket, &private, &group] {
        let (ok, out) = as_nobody(BIN, &["--socket", sock.to_str().unwrap(), "stats"]);
        assert!(
            !ok && out.contains("permission denied"),
            "{}: {out}",
            sock.display()
        );
    }
    // The check itself works: a socket made open to all is reachable (the
    // vhost-user port closes on the JSON it gets, which is no vhost message).
    let (_, out) = as_nobody(BIN, &["--socket", open.to_str().unwrap(), "stats"]);
    assert!(!out.contains("permission denied"), "{out}");
    let (ok, out) = as_nobody("cat", &[cap.to_str().unwrap()]);
    assert!(!ok, "nobody read the capture: {out}");
    d.ok(&["stats"]);
}

#[test]
fn a_symlink_at_a_socket_or_capture_path_is_not_followed() {
    let (dir, d) = bare_daemon("link");
    let victim = dir.0.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.0.join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let l = link.to_str().unwrap();
    let (ok, _, err) = d.cli(&add_vhost_args("v", l, &["--socket-mode", "0666"]));
    assert!(!ok && err.contains("is not a socket"), "{err}");
    let (ok, _, err) = d.cli(&["port", "add", "c", "--type", "pcap", "--tx-path", l]);
    assert!(!ok && err.contains("not a regular file"), "{err}");
    let (ok, _, err) = d.cli(&["port", "add", "r", "--type", "pcap", "--rx-path", l]);
    assert!(!ok && err.contains("not a regular file"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let md = std::fs::metadata(&victim).unwrap();
    assert_eq!(md.mode() & 0o777, 0o640);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    d.ok(&["stats"]);
}

#[test]
fn a_fifo_as_rx_path_is_refused_without_stalling_the_control_socket() {
    let (dir, d) = bare_daemon("fifo");
    let fifo = dir.0.join("in.pcap");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    let f = fifo.to_str().unwrap();
    let (ok, out) = cli_within(
        &d,
        &["port", "add", "f", "--type", "pcap", "--rx-path", f],
        10,
    )
    .expect("port add on a FIFO did not return");
    assert!(!ok && out.contains("not a regular file"), "{out}");
    let (ok, out) = cli_within(
        &d,
        &["port", "add", "g", "--type", "pcap", "--tx-path", f],
        10,
    )
    .expect("port add on a FIFO did not return");
    assert!(!ok && out.contains("not a regular file"), "{out}");
    let (ok, out) = cli_within(&d, &["port", "list"], 10).expect("control socket stalled");
    assert!(ok, "{out}");
}

#[test]
fn a_capture_stops_at_max_bytes_and_counts_the_rest() {
    let dir = TempDir::new("cap");
    let input = dir.0.join("in.pcap");
    let out = dir.0.join("out.pcap");
    std::fs::write(&input, broadcast_pcap(200, 100)).unwrap();
    let cfg = format!(
        "{BASE}[[port]]\nname = \"out\"\ntype = \"pcap\"\ntx_path = \"{}\"\nmax_bytes = 4096\n\
         bridge = \"br0\"\n",
        out.display(),
    );
    let d = Daemon::start(&dir.0, &cfg);
    // The replay runs once: start it only when the capture port forwards.
    d.wait_up(&["out"]);
    d.add_replay("in", &input);
    // 24-byte header, then 116-byte records: 35 fit in 4096 bytes.
    let fit: u64 = 35;
    let want_len = 24 + fit * 116;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = d.port_json("out");
        let errors = p["stats"]["tx_errors"].as_u64().unwrap();
        let len = std::fs::metadata(&out).unwrap().len();
        assert!(len <= 4096, "capture grew to {len} bytes");
        if errors == 200 - fit && len == want_len {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tx_errors {errors}, file {len} bytes: {p}\nin: {}",
            d.port_json("in")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
