//! Running weir as a service: readiness and stop notifications to a service
//! manager (`$NOTIFY_SOCKET`), log filtering and formats, the control
//! socket's group, `weir version`, `weir stats clear`, shell completions and
//! man pages. A real `weir run` driven through its CLI.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{broadcast_pcap, test_dir, weir_run, Daemon, BIN};

const BASE: &str = "[dataplane]\nmbufs = 1024\nidle_sleep_us = 50\n[[bridge]]\nname = \"br0\"\n";

/// `weir run` on `dir/weir.toml` with extra environment, output to
/// `dir/weir.log` (stderr is a file: not a terminal).
fn spawn(dir: &Path, config: &str, env: &[(&str, &str)], args: &[&str]) -> Child {
    std::fs::write(dir.join("weir.toml"), config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WEIR_LOG_FORMAT")
        .envs(env.iter().copied())
        .args(args);
    weir_run(
        &mut cmd,
        &dir.join("weir.sock"),
        &dir.join("weir.toml"),
        &dir.join("weir.log"),
    )
    .spawn()
    .expect("starting weir run")
}

fn weir(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("RUST_LOG")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "weir run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("weir.log")).unwrap_or_default()
}

#[test]
fn ready_is_notified_once_the_control_socket_answers_and_stopping_on_sigterm() {
    let dir = test_dir("svc-notify");
    let notify = dir.join("notify");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = spawn(
        &dir,
        BASE,
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
        &[],
    );
    let mut buf = [0u8; 1024];
    let n = listener
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 ({e}): {}", log(&dir)));
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert!(
        msg.lines().any(|l| l == format!("MAINPID={}", child.id())),
        "{msg}"
    );
    assert!(msg.contains("STATUS=0 ports, 1 bridges"), "{msg}");
    // Ready means ready: the very next request is answered.
    let out = weir(&dir.join("weir.sock"), &["bridge", "list"]);
    assert!(out.status.success(), "{out:?}");

    let st = sigterm(&mut child);
    assert!(st.success(), "exit {st}: {}", log(&dir));
    let n = listener.recv(&mut buf).expect("STOPPING=1");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg}");
    assert!(
        !dir.join("weir.sock").exists(),
        "control socket left behind"
    );
}

#[test]
fn logs_follow_rust_log_carry_no_colour_off_a_terminal_and_can_be_json() {
    // Default: info, plain text, no escape codes (stderr is a file).
    let dir = test_dir("svc-log-text");
    let mut child = spawn(&dir, BASE, &[], &[]);
    wait_socket(&dir.join("weir.sock"), &mut child);
    assert!(sigterm(&mut child).success());
    let text = log(&dir);
    assert!(
        text.contains("INFO") && text.contains("control socket ready"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log file: {text:?}"
    );

    // RUST_LOG=warn: the info lines are gone.
    let dir = test_dir("svc-log-warn");
    let mut child = spawn(&dir, BASE, &[("RUST_LOG", "warn")], &[]);
    wait_socket(&dir.join("weir.sock"), &mut child);
    assert!(sigterm(&mut child).success());
    let text = log(&dir);
    assert!(!text.contains("INFO"), "{text}");

    // A bad RUST_LOG is reported, and the default level kept.
    let dir = test_dir("svc-log-bad");
    let mut child = spawn(&dir, BASE, &[("RUST_LOG", "weir=loud")], &[]);
    wait_socket(&dir.join("weir.sock"), &mut child);
    assert!(sigterm(&mut child).success());
    let text = log(&dir);
    assert!(text.contains("ignoring RUST_LOG"), "{text}");
    assert!(text.contains("control socket ready"), "{text}");

    // JSON: one object per line, with a level and the message.
    let dir = test_dir("svc-log-json");
    let mut child = spawn(&dir, BASE, &[], &["--log-format", "json"]);
    wait_socket(&dir.join("weir.sock"), &mut child);
    assert!(sigterm(&mut child).success());
    let text = log(&dir);
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "INFO" && e["fields"]["message"] == "control socket ready"),
        "{text}"
    );
}

#[test]
fn the_control_socket_group_lets_its_members_in() {
    let dir = test_dir("svc-group");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // gid 1 (`daemon` on Debian) is a group nobody (65534) is not in.
    let cfg = format!("[control]\nsocket_group = \"1\"\n{BASE}");
    let mut child = spawn(&dir, &cfg, &[], &[]);
    let socket = dir.join("weir.sock");
    wait_socket(&socket, &mut child);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 1);
    let as_user = |groups: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", groups, BIN, "--socket"])
            .arg(&socket)
            .args(["bridge", "list"])
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux)")
    };
    let member = as_user("--groups=1");
    assert!(
        member.status.success(),
        "a member of the group is refused: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    let outsider = as_user("--clear-groups");
    assert!(!outsider.status.success(), "an outsider got in");
    assert!(sigterm(&mut child).success());

    // A group that does not exist stops the start with the key named.
    let dir = test_dir("svc-group-bad");
    let cfg = format!("[control]\nsocket_group = \"no-such-group-weir\"\n{BASE}");
    let mut child = spawn(&dir, &cfg, &[], &[]);
    let st = child.wait().unwrap();
    assert!(!st.success());
    let text = log(&dir);
    assert!(
        text.contains("socket_group") && text.contains("no-such-group-weir"),
        "{text}"
    );
}

#[test]
fn version_names_the_client_and_the_daemon() {
    let dir = test_dir("svc-version");
    let d = Daemon::start(&dir, BASE);
    let out = d.ok(&["version"]);
    let want = env!("CARGO_PKG_VERSION");
    assert!(out.contains(&format!("client: weir {want}")), "{out}");
    assert!(out.contains(&format!("daemon: weir {want}")), "{out}");
    let v = d.json(&["version"]);
    assert_eq!(v["client"]["version"], want);
    assert_eq!(v["daemon"]["version"], want);
    drop(d);
    // No daemon: the client's version, then an error and status 1.
    let out = weir(&dir.join("weir.sock"), &["version"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("client: weir {want}")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon"));
}

fn wait_counter(d: &Daemon, port: &str, key: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = d.port_counter(port, key);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{port} {key} = {got}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stats_clear_starts_one_port_or_everything_again_from_zero() {
    let dir = test_dir("svc-clear");
    let cfg = format!(
        "{BASE}[[port]]\nname = \"out\"\ntype = \"pcap\"\ntx_path = \"{}\"\nbridge = \"br0\"\n",
        dir.join("out.pcap").display()
    );
    let d = Daemon::start(&dir, &cfg);
    d.wait_up(&["out"]);
    let replay = |name: &str, n: usize| {
        let input = dir.join(format!("{name}.pcap"));
        std::fs::write(&input, broadcast_pcap(n, 100)).unwrap();
        d.add_replay(name, &input);
    };
    replay("in", 200);
    wait_counter(&d, "in", "rx_packets", 200);
    wait_counter(&d, "out", "tx_packets", 200);

    d.ok(&["stats", "clear", "in"]);
    assert_eq!(d.port_counter("in", "rx_packets"), 0);
    assert_eq!(d.port_counter("in", "rx_bytes"), 0);
    assert_eq!(
        d.port_counter("out", "tx_packets"),
        200,
        "only `in` cleared"
    );
    let show = d.json(&["port", "show", "in"]);
    assert_eq!(show["stats"]["rx_packets"], 0);
    assert!(show["queue_stats"]
        .as_array()
        .unwrap()
        .iter()
        .all(|q| q["rx_packets"] == 0));

    d.ok(&["stats", "clear"]);
    assert_eq!(d.port_counter("out", "tx_packets"), 0);
    let stats = d.json(&["stats"]);
    for w in stats["workers"].as_array().unwrap() {
        assert_eq!(w["rx_packets"], 0, "{w}");
    }
    // Counting goes on from the new zero.
    replay("in2", 50);
    wait_counter(&d, "out", "tx_packets", 50);
    assert_eq!(d.port_counter("in", "rx_packets"), 0);

    let (ok, _, err) = d.cli(&["stats", "clear", "nope"]);
    assert!(!ok && err.contains("nope"), "{err}");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("stats") && script.contains("--log-format"));
    let dir = test_dir("svc-man");
    let path = dir.join("weir.bash");
    std::fs::write(&path, &script).unwrap();
    let st = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(st.success(), "bash cannot parse the completion script");
    for shell in ["zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }

    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH weir 1"));
    let pages = dir.join("man");
    let out = Command::new(BIN)
        .arg("man")
        .arg("--dir")
        .arg(&pages)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in [
        "weir.1",
        "weir-run.1",
        "weir-port-add.1",
        "weir-stats-clear.1",
    ] {
        assert!(pages.join(page).is_file(), "{page} missing");
    }
    // man renders the page.
    let out = Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(pages.join("weir-port-add.1"))
        .env("MANWIDTH", "80")
        .output()
        .expect("man (man-db)");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--bridge"));
}

/// Waits until a `weir run` started by [`spawn`] answers on `socket`;
/// panics with its status if it exits first.
fn wait_socket(socket: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !weir(socket, &["bridge", "list"]).status.success() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("weir run exited with {st}");
        }
        assert!(Instant::now() < deadline, "weir run did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_systemd_unit_verifies_against_this_build() {
    let dir = test_dir("svc-unit");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/weir.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify"), "weir notifies readiness");
    // The unit as installed, with its binary where this build put it.
    let path = dir.join("weir.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/weir", BIN)).unwrap();
    // Its Documentation= pages, generated by this build.
    let man = dir.join("man");
    let out = Command::new(BIN)
        .arg("man")
        .arg("--dir")
        .arg(man.join("man1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", &man)
        .output()
        .expect("systemd-analyze (systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
