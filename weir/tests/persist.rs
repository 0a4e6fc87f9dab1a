//! End to end: run-time changes survive a restart through the state file
//! (`[control] state`), and `weir config dump` prints a configuration the
//! daemon starts from as it is.
//!
//! 1. A daemon starts from a config without bridges or ports, its state file
//!    in a directory that does not exist yet. Over the control socket it
//!    gets a bridge, two afpacket ports on veths into namespaces and a tap
//!    port, an ACL, and `port set` (access VLAN, the ACL as `acl_in`); the
//!    namespaces ping each other through it.
//! 2. SIGTERM. The state file is private (0600, in a 0700 directory) and a
//!    configuration `weir config check` accepts. Restarted with the same
//!    config, the daemon has the same bridges, ports (ids, settings) and
//!    ACLs, and the namespaces ping again.
//! 3. A port deleted at run time stays deleted after the next restart.
//! 4. `weir config dump` → file → `weir config check` → `weir run --config`
//!    (state file removed) gives the same `port list`, `bridge list` and
//!    `acl list`, and traffic; a daemon nobody changes writes no state file.
//! 5. A corrupt state file stops `weir run` with an error naming its line
//!    and column, and the file is left as it was.
//!
//! `static_fdb_entries_survive_a_kill_and_restart`: static FDB entries (an
//! `[[fdb.static]]` table, `fdb add` with and without `--remote` on a VXLAN
//! port, `fdb del`) come back after SIGKILL and a restart on the same state
//! file, and a deleted port's entries do not.
//!
//! Needs root (CI runs as root); fails, never skips, without it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use weir_testkit::{require_root_and_ip, Netns, VethHost};

mod common;
use common::{loss_pct, ping, reap, test_dir, Daemon, BIN};

/// The config the daemon starts from: no bridges or ports, a state file.
fn base_config(state: &Path) -> String {
    format!(
        "[dataplane]\nmbufs = 8192\nidle_sleep_us = 20\n\n[control]\nstate = \"{}\"\n",
        state.display()
    )
}

/// What a restart must keep of `port list`, `bridge list` and `acl list`
/// (not counters or link state).
fn shape(d: &Daemon) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = d
        .ports()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let keep = [
                "id",
                "name",
                "kind",
                "bridge",
                "iface",
                "queues",
                "settings",
                "vlan_mode",
                "tag",
                "acl_in",
                "acl_out",
            ];
            keep.iter().map(|k| (k.to_string(), p[k].clone())).collect()
        })
        .collect();
    serde_json::json!({
        "ports": ports,
        "bridges": d.json(&["bridge", "list"]).as_array().unwrap().iter()
            .map(|b| b["name"].clone()).collect::<Vec<_>>(),
        "acls": d.json(&["acl", "list"]),
        "web": d.json(&["acl", "show", "web"])["rules"],
        "mirrors": d.json(&["mirror", "list"]).as_array().unwrap().iter()
            .map(|m| serde_json::json!([m["name"], m["src"], m["dst"], m["to"]]))
            .collect::<Vec<_>>(),
    })
}

/// `from` pings `ip` with no loss.
fn pings(d: &Daemon, from: &Netns, ip: &str, when: &str) {
    // The first round trip may wait for ARP on a loaded machine.
    let _ = ping(from, ip, 1, "0.2");
    let out =
        ping(from, ip, 3, "0.2").unwrap_or_else(|e| panic!("ping {ip} {when}: {e}\n{}", d.log()));
    assert_eq!(loss_pct(&out), 0.0, "{when}: {out}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn run_time_changes_survive_a_restart_and_config_dump_round_trips() {
    require_root_and_ip().expect("the persistence test needs root and iproute2");
    let tag = format!("wp{}", std::process::id() % 100_000);
    let a = VethHost::create(&format!("{tag}-a"), &format!("{tag}a"), "198.18.24.1").unwrap();
    let b = VethHost::create(&format!("{tag}-b"), &format!("{tag}b"), "198.18.24.2").unwrap();
    let tap = format!("{tag}c");
    let dir = test_dir(&format!("persist-{tag}"));
    let state = dir.join("lib/weir/state.toml");
    let mut d = Daemon::start(&dir, &base_config(&state));
    assert!(!state.exists(), "no change yet, nothing saved");

    // 1. Everything at run time.
    d.ok(&["bridge", "add", "br0"]);
    for (name, kind, iface) in [
        ("pa", "afpacket", a.host_if.as_str()),
        ("pb", "afpacket", b.host_if.as_str()),
        ("pc", "tap", tap.as_str()),
    ] {
        d.ok(&[
            "port", "add", name, "--type", kind, "--iface", iface, "--bridge", "br0",
        ]);
    }
    d.ok(&[
        "acl",
        "add",
        "web",
        "--default",
        "deny",
        "--rule",
        "in icmp allow",
        "--rule",
        "in tcp dst_ports=80 allow",
    ]);
    d.ok(&["port", "set", "pa", "tag=10", "acl_in=web"]);
    d.ok(&["port", "set", "pb", "tag=10", "storm_pps=5000"]);
    d.ok(&["mirror", "add", "span", "--src", "pa", "--to", "pc"]);
    d.wait_up(&["pa", "pb", "pc"]);
    pings(&d, &a.ns, "198.18.24.2", "after the run-time changes");
    let before = shape(&d);
    assert_eq!(before["ports"][0]["settings"]["acl_in"], "web", "{before}");

    // 2. SIGTERM, the state file, a restart.
    d.terminate();
    assert_eq!(mode(&state), 0o600);
    assert_eq!(mode(state.parent().unwrap()), 0o700);
    let text = std::fs::read_to_string(&state).unwrap();
    let saved = weir_config::Config::parse(&text, "state.toml")
        .unwrap_or_else(|e| panic!("state file: {e}\n{text}"));
    let names: Vec<&str> = saved.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["pa", "pb", "pc"], "{text}");
    d.ok(&["config", "check", state.to_str().unwrap()]);
    d.restart();
    assert!(
        d.log().contains("come from the state file"),
        "the daemon says where its ports come from: {}",
        d.log()
    );
    d.wait_up(&["pa", "pb", "pc"]);
    assert_eq!(shape(&d), before, "after a restart");
    pings(&d, &a.ns, "198.18.24.2", "after a restart");

    assert_eq!(before["mirrors"][0][0], "span", "{before}");

    // 3. A deletion persists too.
    d.ok(&["mirror", "del", "span"]);
    d.ok(&["port", "del", "pc"]);
    let after_del = shape(&d);
    d.terminate();
    d.restart();
    d.wait_up(&["pa", "pb"]);
    assert_eq!(shape(&d), after_del, "pc and the mirror stay deleted");
    assert_eq!(after_del["mirrors"], serde_json::json!([]));
    assert!(
        d.ports()
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "pc"),
        "pc came back"
    );

    // 4. config dump → check → run.
    let dump = d.ok(&["config", "dump"]);
    let as_json = d.json(&["config", "dump"]);
    assert_eq!(as_json["port"][0]["tag"], 10, "{as_json}");
    assert_eq!(as_json["control"]["state"], state.to_str().unwrap());
    let dump_dir = test_dir(&format!("persist-{tag}-dump"));
    let dump_file = dump_dir.join("dump.toml");
    std::fs::write(&dump_file, &dump).unwrap();
    d.ok(&["config", "check", dump_file.to_str().unwrap()]);
    d.terminate();
    std::fs::remove_file(&state).unwrap();
    let d2 = Daemon::start(&dump_dir, &dump);
    d2.wait_up(&["pa", "pb"]);
    assert_eq!(shape(&d2), after_del, "the dumped configuration, run");
    pings(&d2, &b.ns, "198.18.24.1", "from the dumped configuration");
    // The same text, but for the control socket the test gave each daemon.
    let sock = |dir: &Path| format!("socket = \"{}\"", dir.join("weir.sock").display());
    assert_eq!(
        d2.ok(&["config", "dump"])
            .replace(&sock(&dump_dir), &sock(&dir)),
        dump
    );
    assert!(!state.exists(), "no change, nothing saved");
    drop(d2);
    drop(d);

    // 5. A corrupt state file: no start, and the file stays for repair.
    let corrupt = "[[port]]\nname = \"pa\"\ntype = \"afpacket\"\nbridge = 7\n";
    std::fs::write(&state, corrupt).unwrap();
    let log = dir.join("corrupt.log");
    let mut child = common::weir_run(
        &mut Command::new(BIN),
        &dir.join("corrupt.sock"),
        &dir.join("weir.toml"),
        &log,
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reap(&mut child, Duration::ZERO);
    let out = std::fs::read_to_string(&log).unwrap();
    let status =
        status.unwrap_or_else(|| panic!("weir run started from a corrupt state file: {out}"));
    assert!(!status.success(), "{out}");
    assert!(
        out.contains(&format!("weir: {}:4:10: ", state.display())),
        "the error names the state file, line and column: {out}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), corrupt);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dump_dir);
}

/// `(mac, vlan, port, remote, static)` of each entry of `br0` that is for
/// one of `macs` (the tap may learn others from the kernel's own frames).
fn statics(d: &Daemon, macs: &[&str]) -> Vec<serde_json::Value> {
    d.json(&["fdb", "show", "--bridge", "br0"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| macs.contains(&e["mac"].as_str().unwrap_or("")))
        .map(|e| serde_json::json!([e["mac"], e["vlan"], e["port"], e["remote"], e["is_static"]]))
        .collect()
}

/// Static FDB entries are part of what the state file keeps: one from the
/// config file's `[[fdb.static]]`, `fdb add` with and without `--remote` on
/// a VXLAN port, `fdb del`; the daemon is killed (SIGKILL: only what was
/// saved after each change counts) and restarted on the same state file.
/// A deleted port's entries stay deleted.
#[test]
fn static_fdb_entries_survive_a_kill_and_restart() {
    require_root_and_ip().expect("the persistence test needs root and iproute2");
    let tag = format!("wf{}", std::process::id() % 100_000);
    let under = VethHost::create(&format!("{tag}-u"), &format!("{tag}u"), "198.18.25.9").unwrap();
    let tap = format!("{tag}t");
    let dir = test_dir(&format!("persist-fdb-{tag}"));
    let state = dir.join("state.toml");
    let config = format!(
        "{}\n[[bridge]]\nname = \"br0\"\n\
         [[port]]\nname = \"up\"\ntype = \"afpacket\"\niface = \"{}\"\nip = \"198.18.25.1/24\"\n\
         [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nbridge = \"br0\"\nunderlay = \"up\"\n\
         local_ip = \"198.18.25.1\"\nremote_ips = [\"198.18.25.2\", \"198.18.25.3\"]\nvni = 42\n\
         [[port]]\nname = \"ta\"\ntype = \"tap\"\niface = \"{tap}\"\nbridge = \"br0\"\n\
         [[fdb.static]]\nbridge = \"br0\"\nmac = \"02:00:00:00:00:01\"\nport = \"ta\"\n",
        base_config(&state),
        under.host_if,
    );
    let mut d = Daemon::start(&dir, &config);
    let macs = [
        "02:00:00:00:00:01",
        "02:00:00:00:00:02",
        "02:00:00:00:00:03",
        "02:00:00:00:00:04",
    ];
    let entry = |mac: &str, vlan: u16, port: &str, remote: Option<&str>| {
        serde_json::json!([mac, vlan, port, remote, true])
    };
    assert_eq!(
        statics(&d, &macs),
        [entry("02:00:00:00:00:01", 0, "ta", None)],
        "the config file's entry, set at start"
    );
    assert!(!state.exists(), "no change yet, nothing saved");

    d.ok(&[
        "fdb",
        "add",
        "br0",
        "02:00:00:00:00:02",
        "vx0",
        "--remote",
        "198.18.25.3",
    ]);
    d.ok(&[
        "fdb",
        "add",
        "br0",
        "02:00:00:00:00:03",
        "vx0",
        "--vlan",
        "7",
    ]);
    d.ok(&[
        "fdb",
        "add",
        "br0",
        "02:00:00:00:00:04",
        "ta",
        "--vlan",
        "7",
    ]);
    d.ok(&["fdb", "del", "br0", "02:00:00:00:00:01"]);
    // Refused by the rules a config file's entry is checked by.
    let (ok, _, err) = d.cli(&[
        "fdb",
        "add",
        "br0",
        "02:00:00:00:00:05",
        "vx0",
        "--remote",
        "198.18.25.4",
    ]);
    assert!(
        !ok && err.contains("198.18.25.4 is not one of vx0's remote_ips"),
        "{err}"
    );
    let (ok, _, err) = d.cli(&["fdb", "add", "br0", "02:00:00:00:00:05", "up"]);
    assert!(!ok && err.contains("port up is not on bridge br0"), "{err}");
    let before = statics(&d, &macs);
    assert_eq!(
        before,
        [
            entry("02:00:00:00:00:02", 0, "vx0", Some("198.18.25.3")),
            entry("02:00:00:00:00:03", 7, "vx0", None),
            entry("02:00:00:00:00:04", 7, "ta", None),
        ]
    );
    let dump = d.json(&["config", "dump"]);
    assert_eq!(
        dump["fdb"]["static"].as_array().map(Vec::len),
        Some(3),
        "{dump}"
    );

    d.kill_hard();
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("[[fdb.static]]"), "{text}");
    d.ok(&[
        "config",
        "check",
        "--no-iface-check",
        state.to_str().unwrap(),
    ]);
    d.restart();
    assert_eq!(
        statics(&d, &macs),
        before,
        "after SIGKILL and a restart\n{text}"
    );

    // Deleting a port deletes its entries, for good.
    d.ok(&["port", "del", "ta"]);
    let after_del = statics(&d, &macs);
    assert_eq!(after_del, before[..2], "ta's entry went with it");
    d.terminate();
    d.restart();
    assert_eq!(statics(&d, &macs), after_del, "after the next restart");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
