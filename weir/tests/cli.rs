//! Runs the built `weir` binary: config checking, client errors, and the
//! control socket of `weir run`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// A unique temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Relaxed: only uniqueness matters.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-cli-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn weir(args: &[&str]) -> Output {
    Command::new(WEIR)
        .args(args)
        .env_remove("WEIR_SOCKET")
        .output()
        .expect("running weir")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_example_config_checks() {
    let mut checked = 0;
    for entry in fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let path_str = path.to_str().unwrap();
        // The veth interfaces of one example, and the overlay hosts' eth1,
        // only exist on a prepared host.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let args: Vec<&str> = if name == "afpacket-veth.toml" || name.starts_with("overlay-") {
            vec!["config", "check", "--no-iface-check", path_str]
        } else {
            vec!["config", "check", path_str]
        };
        let out = weir(&args);
        assert!(out.status.success(), "{path_str}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{path_str}: ok\n"));
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} example configs found");
}

#[test]
fn config_check_json_dumps_defaults() {
    let path = configs_dir().join("minimal.toml");
    let out = weir(&["config", "check", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["dataplane"]["mbufs"], 16384);
    assert_eq!(json["port"][1]["iface"], "weir-tap1");
}

#[test]
fn multi_tenant_example_puts_each_tenant_on_its_vlan() {
    let path = configs_dir().join("multi-tenant.toml");
    let out = weir(&["config", "check", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vlans: Vec<(String, serde_json::Value, serde_json::Value)> = json["port"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["tag"].clone(),
                p["trunks"].clone(),
            )
        })
        .collect();
    let null = serde_json::Value::Null;
    assert_eq!(
        vlans,
        [
            ("vm-a".into(), 10.into(), null.clone()),
            ("ct-a".into(), 10.into(), null.clone()),
            ("vm-b".into(), 20.into(), null.clone()),
            ("ct-b".into(), 20.into(), null.clone()),
            ("uplink".into(), null, serde_json::json!([10, 20])),
        ]
    );
    // Each VM has a security group on what it receives.
    let acl_out: Vec<(&str, &str)> = json["port"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, p["acl_out"].as_str()?)))
        .collect();
    assert_eq!(acl_out, [("vm-a", "tenant-a-vm"), ("vm-b", "ssh-only")]);
    let tables: Vec<&str> = json["acl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["tenant-a-vm", "ssh-only"]);
    // Every tenant port is secured, on a MAC of its own; the uplink is not.
    let ports = json["port"].as_array().unwrap();
    for p in ports {
        let tenant = p["name"] != "uplink";
        assert_eq!(p["port_security"] == true, tenant, "{p}");
        assert_eq!(p["mac"].is_string(), tenant, "{p}");
    }
    let mut macs: Vec<&str> = ports.iter().filter_map(|p| p["mac"].as_str()).collect();
    macs.sort_unstable();
    macs.dedup();
    assert_eq!(macs.len(), 4, "each its own: {macs:?}");
    let ct_b = ports.iter().find(|p| p["name"] == "ct-b").unwrap();
    assert_eq!(ct_b["ingress_policing_rate"], 50000);
    // vm-b receives every frame of its VLAN; vm-a keeps the default filter.
    let rx_filter: Vec<(&str, bool)> = ports
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, p["rx_filter"].as_bool()?)))
        .collect();
    assert_eq!(rx_filter, [("vm-b", false)]);
}

#[test]
fn malformed_configs_fail_naming_the_key() {
    let dir = TempDir::new();
    let cases = [
        (
            "unknown.toml",
            "[[bridge]]\nname = \"br0\"\n\n[[port]]\nname = \"p0\"\ntype = \"tap\"\nifcae = \"t0\"\n",
            ":7:1: ",
            "unknown field `ifcae`",
        ),
        (
            "enum.toml",
            "[[port]]\nname = \"p0\"\ntype = \"bogus\"\n",
            ":3:8: ",
            "`vhost-user`",
        ),
        (
            "type.toml",
            "[dataplane]\nidle_sleep_us = \"many\"\n",
            ":2:17: ",
            "dataplane.idle_sleep_us",
        ),
        (
            "bridge.toml",
            "[[port]]\nname = \"p0\"\ntype = \"ring\"\nbridge = \"nope\"\n",
            ":4:10: ",
            "undefined bridge `nope`",
        ),
        (
            "iface.toml",
            "[[port]]\nname = \"p0\"\ntype = \"afpacket\"\niface = \"weir-no-such0\"\n",
            ":4:9: ",
            "interface `weir-no-such0` does not exist",
        ),
        (
            "mbufs.toml",
            "[dataplane]\nmbufs = 0\n",
            ":2:9: ",
            "dataplane.mbufs",
        ),
        (
            "acl.toml",
            "[[acl]]\nname = \"web\"\n[[acl.rule]]\ndst_ports = 80\naction = \"allow\"\n",
            ":4:13: ",
            "acl `web`: rule 0: ports need protocol tcp, udp or sctp",
        ),
        (
            "acl-name.toml",
            "[[acl]]\nname = \"web\"\n[[port]]\nname = \"p0\"\ntype = \"ring\"\nacl_in = \"webb\"\n",
            ":6:10: ",
            "port `p0`: acl_in: no ACL named `webb`",
        ),
        (
            "security.toml",
            "[[port]]\nname = \"p0\"\ntype = \"ring\"\nport_security = true\n",
            ":4:17: ",
            "port `p0`: port security needs at least one allowed MAC (set mac or allowed_macs)",
        ),
        (
            "mac.toml",
            "[[port]]\nname = \"p0\"\ntype = \"ring\"\nmac = \"52:54:00:00:01\"\n",
            ":4:7: ",
            "port[0].mac: invalid MAC address",
        ),
    ];
    for (name, text, pos, needle) in cases {
        let path = dir.write(name, text);
        let out = weir(&["config", "check", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.starts_with(&format!("weir: {}{pos}", path.display())),
            "{name}: {err}"
        );
        assert!(err.contains(needle), "{name}: {err}");
        assert!(stdout(&out).is_empty(), "{name}");
    }
}

#[test]
fn doctor_prints_every_check() {
    let config = configs_dir().join("minimal.toml");
    let out = weir(&["doctor", "--config", config.to_str().unwrap()]);
    // 0 or 1 depending on the host (hugepages, socket directory); never a crash.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    let text = stdout(&out);
    for check in [
        "iommu:",
        "vfio-pci module:",
        "hugepages:",
        "control socket:",
        "worker CPUs:",
    ] {
        assert!(text.contains(check), "no `{check}` in:\n{text}");
    }
    assert!(
        text.lines()
            .take_while(|l| !l.contains(" checks: "))
            .all(|l| l.starts_with("ok ") || l.starts_with("warn ") || l.starts_with("FAIL ")),
        "{text}"
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    if out.status.code() == Some(1) {
        assert!(text.contains("FAIL"), "{text}");
    }

    let out = weir(&["doctor", "--config", config.to_str().unwrap(), "--json"]);
    let checks: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(checks.as_array().is_some_and(|a| a.len() >= 5), "{checks}");
}

#[test]
fn devbind_and_sriov_need_an_action() {
    let out = weir(&["devbind"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = weir(&["sriov", "0000:03:00.0", "--mac", "52:54:00:00:00:01"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = weir(&["devbind", "0000:ff:1f.7"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("no PCI device 0000:ff:1f.7"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_config_file_fails() {
    let out = weir(&["config", "check", "/nonexistent/weir.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("weir: cannot read config /nonexistent/weir.toml"));
}

#[test]
fn client_without_daemon_says_so() {
    let dir = TempDir::new();
    let socket = dir.0.join("weir.sock");
    let expected = format!(
        "weir: cannot reach weir at {}: is `weir run` running? (set --socket or WEIR_SOCKET)\n",
        socket.display()
    );
    let out = weir(&["port", "list", "--socket", socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), expected);

    let out = Command::new(WEIR)
        .args(["stats", "--json"])
        .env("WEIR_SOCKET", &socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), expected);
}

/// A `weir run` child, terminated on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &TempDir) -> Self {
        let config = dir.write(
            "run.toml",
            "[dataplane]\nworkers = \"0\"\nmbufs = 1024\nhugepages = \"never\"\n",
        );
        let socket = dir.0.join("ctl/weir.sock");
        let child = Command::new(WEIR)
            .args(["run", "--config", config.to_str().unwrap(), "--socket"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !daemon.socket.exists() {
            assert!(Instant::now() < deadline, "weir run never bound its socket");
            thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// `weir --socket SOCKET ARGS...`.
    fn cli(&self, args: &[&str]) -> Output {
        weir(&[&["--socket", self.socket.to_str().unwrap()][..], args].concat())
    }

    /// [`Daemon::cli`], which must succeed; its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// [`Daemon::run`] with `--json`, parsed.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.run(&[args, &["--json"]].concat())).unwrap()
    }

    /// [`Daemon::cli`], which must fail (exit code 1) with an error starting
    /// with `needle`.
    fn fails(&self, args: &[&str], needle: &str) {
        let out = self.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).starts_with(needle),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    /// Sends SIGTERM and waits for exit.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("weir run ignored SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The text of `port`'s row in a `port list` table between the columns
/// headed `from` and `to`.
fn column(list: &str, port: &str, from: &str, to: &str) -> String {
    let header = list.lines().next().unwrap();
    let (at, end) = (header.find(from).unwrap(), header.find(to).unwrap());
    let line = list
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(port))
        .unwrap_or_else(|| panic!("no {port} in\n{list}"));
    line[at..end].trim_end().to_owned()
}

#[test]
fn run_serves_the_control_socket() {
    let dir = TempDir::new();
    let mut daemon = Daemon::start(&dir);
    let socket = daemon.socket.to_str().unwrap().to_owned();

    // Whatever the daemon answers, the client reaches it.
    let out = weir(&["--socket", &socket, "stats", "--json"]);
    let err = stderr(&out);
    assert!(!err.contains("cannot reach"), "{err}");
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(1));
        assert!(err.starts_with("weir: "), "{err}");
    }

    // A second daemon on the same socket is refused.
    let config = dir.0.join("run.toml");
    let out = weir(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--socket",
        &socket,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("another weir daemon is running on {socket}")),
        "{}",
        stderr(&out)
    );

    daemon.terminate();
    assert!(!daemon.socket.exists(), "socket left behind after SIGTERM");
}

#[test]
fn port_vlan_settings_are_set_listed_and_cleared_from_the_command_line() {
    let dir = TempDir::new();
    let mut daemon = Daemon::start(&dir);
    let run = |args: &[&str]| daemon.run(args);
    run(&["bridge", "add", "br0"]);
    run(&[
        "port", "add", "vm1", "--type", "ring", "--bridge", "br0", "--tag", "10",
    ]);
    run(&[
        "port", "add", "up", "--type", "ring", "--bridge", "br0", "--trunks", "20,10",
    ]);
    let list = run(&["port", "list"]);
    let vlan_of = |list: &str, port: &str| column(list, port, "VLAN", "IFACE");
    assert_eq!(vlan_of(&list, "vm1"), "access 10", "{list}");
    assert_eq!(vlan_of(&list, "up"), "trunk 10,20", "{list}");

    let after = daemon.json(&[
        "port",
        "set",
        "vm1",
        "vlan_mode=native-untagged",
        "trunks=30",
    ]);
    assert_eq!(
        after,
        serde_json::json!({"tag": 10, "trunks": [30], "vlan_mode": "native-untagged"})
    );
    assert_eq!(run(&["port", "clear", "vm1", "trunks"]), "");
    let ports = daemon.json(&["port", "list"]);
    let vm1 = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "vm1")
        .unwrap();
    assert_eq!(vm1["vlan_mode"], "native-untagged");
    assert_eq!(vm1["tag"], 10);
    assert_eq!(vm1["trunks"], serde_json::json!([]));

    // Refused settings fail with the reason and change nothing.
    for (args, needle) in [
        (
            &["port", "set", "vm1", "vlan_mode=trunk"][..],
            "weir: port vm1: a trunk port has no native VLAN: tag is not allowed with vlan_mode trunk",
        ),
        (
            &["port", "set", "vm1", "tag=4095"],
            "weir: port vm1: VLAN id 4095 is out of range (1..=4094)",
        ),
        (
            &["port", "set", "vm1", "vlan_mode=hybrid"],
            "weir: port vm1: unknown vlan_mode `hybrid`, expected one of access, trunk, \
             native-tagged, native-untagged",
        ),
        (
            &["port", "clear", "vm1", "bridge"],
            "weir: port vm1: unknown key `bridge`: the keys a port set or clear can change are \
             tag, trunks, vlan_mode",
        ),
        (&["port", "set", "nope", "tag=1"], "weir: no port named nope"),
    ] {
        daemon.fails(args, needle);
    }
    let out = daemon.cli(&["port", "add", "p", "-t", "ring", "--tag", "0"]);
    assert!(
        stderr(&out).contains("port p: VLAN id 0 is out of range"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        vlan_of(&run(&["port", "list"]), "vm1"),
        "native-untagged 10 all"
    );
    daemon.terminate();
}

#[test]
fn acls_are_added_shown_replaced_and_deleted_from_the_command_line() {
    let dir = TempDir::new();
    let mut daemon = Daemon::start(&dir);
    let run = |args: &[&str]| daemon.run(args);
    let json = |args: &[&str]| daemon.json(args);
    run(&["bridge", "add", "br0"]);
    let added = run(&[
        "acl",
        "add",
        "web",
        "--default",
        "deny",
        "--rule",
        "in tcp dst_ports=80 allow",
        "--rule",
        "in ipv6 icmpv6 icmp_type=128 allow",
    ]);
    assert_eq!(added, "", "quiet without --json");
    run(&[
        "port", "add", "vm1", "--type", "ring", "--bridge", "br0", "--acl-in", "web",
    ]);
    run(&["port", "add", "vm2", "--type", "ring", "--bridge", "br0"]);
    assert_eq!(
        json(&["port", "set", "vm2", "acl_out=web"]),
        serde_json::json!({"acl_out": "web"})
    );
    assert_eq!(
        run(&["acl", "list"]),
        "NAME  DEFAULT  RULES  ACL_IN  ACL_OUT\nweb   deny         2  vm1     vm2\n"
    );
    assert_eq!(
        json(&["acl", "show", "web"]),
        serde_json::json!({
            "name": "web", "default": "deny",
            "rule": [
                {"direction": "in", "protocol": "tcp", "dst_ports": 80, "action": "allow"},
                {"direction": "in", "ether_type": "ipv6", "protocol": "icmpv6",
                 "icmp_type": 128, "action": "allow"},
            ],
            "acl_in": ["vm1"], "acl_out": ["vm2"],
        })
    );
    let ports = json(&["port", "list"]);
    let port = |name: &str| {
        ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            port("vm1")["acl_in"].clone(),
            port("vm1")["acl_out"].clone()
        ),
        ("web".into(), serde_json::Value::Null)
    );

    // Replaced from a file: the ports keep it, with the new rules.
    let file = dir.write(
        "web.toml",
        "default = \"allow\"\n\n[[rule]]\nprotocol = \"tcp\"\ndst_ports = 22\n\
         action = \"deny\"\n",
    );
    let replaced = json(&["acl", "add", "web", "--file", file.to_str().unwrap()]);
    assert_eq!(replaced["default"], "allow");
    assert_eq!(replaced["acl_in"], serde_json::json!(["vm1"]));
    let shown = run(&["acl", "show", "web"]);
    assert!(
        shown.starts_with("ACL  DEFAULT  ACL_IN  ACL_OUT\nweb  allow    vm1     vm2\n"),
        "{shown}"
    );
    assert!(
        shown.ends_with("#  RULE\n0  tcp dst_ports=22 deny\n"),
        "{shown}"
    );

    // Mistakes are refused with the reason, and change nothing.
    let bad = dir.write(
        "bad.toml",
        "[[rule]]\nprotocol = \"tcp\"\naction = \"allow\"\n[[rule]]\nsrc = \"10.0.0.0/8\"\n\
         dst = \"fd00::1\"\naction = \"deny\"\n",
    );
    for (args, needle) in [
        (
            &["acl", "add", "web", "--rule", "dst_ports=1 allow"][..],
            "weir: acl web: rule 0: ports need protocol tcp, udp or sctp\n".to_owned(),
        ),
        (
            &["acl", "add", "web", "--file", bad.to_str().unwrap()],
            format!(
                "weir: {}:6:7: acl `web`: rule 1: mixes IPv4 and IPv6",
                bad.display()
            ),
        ),
        (
            &["acl", "del", "web"],
            "weir: ACL web is in use: port vm1 (acl_in), port vm2 (acl_out); clear those \
             settings first (weir port clear PORT KEY)\n"
                .to_owned(),
        ),
        (
            &["port", "add", "x", "--type", "ring", "--acl-out", "nope"],
            "weir: port x: acl_out: no ACL named `nope`\n".to_owned(),
        ),
        (
            &["port", "set", "vm2", "acl_in=nope"],
            "weir: port vm2: acl_in: no ACL named `nope`\n".to_owned(),
        ),
        (
            &["acl", "show", "nope"],
            "weir: no ACL named nope\n".to_owned(),
        ),
    ] {
        daemon.fails(args, &needle);
    }
    assert_eq!(json(&["acl", "show", "web"]), replaced);

    // Detached, it can go.
    run(&["port", "clear", "vm1", "acl_in"]);
    run(&["port", "clear", "vm2", "acl_out"]);
    let gone = json(&["acl", "del", "web"]);
    assert_eq!(gone["name"], "web");
    assert_eq!(run(&["acl", "list"]), "no ACLs\n");
    assert_eq!(json(&["acl", "list"]), serde_json::json!([]));
    daemon.terminate();
}

#[test]
fn port_security_and_limits_are_set_shown_and_cleared_from_the_command_line() {
    let dir = TempDir::new();
    let mut daemon = Daemon::start(&dir);
    let run = |args: &[&str]| daemon.run(args);
    let fails = |args: &[&str], needle: &str| daemon.fails(args, needle);
    run(&["bridge", "add", "br0"]);
    run(&[
        "port",
        "add",
        "vm1",
        "--type",
        "ring",
        "--bridge",
        "br0",
        "--mac",
        "02:00:00:00:00:05",
        "--port-security",
        "--ips",
        "10.0.0.5,fd00::5",
        "--storm-pps",
        "500",
    ]);
    run(&[
        "port",
        "add",
        "ct1",
        "--type",
        "ring",
        "--bridge",
        "br0",
        "--ingress-policing-rate",
        "20000",
        "--ingress-policing-burst",
        "2000",
        "--egress-rate",
        "10000",
    ]);
    let policy_of = |list: &str, port: &str| column(list, port, "POLICY", "STATE");
    let list = run(&["port", "list"]);
    assert_eq!(policy_of(&list, "vm1"), "secured storm=500pps", "{list}");
    assert_eq!(policy_of(&list, "ct1"), "in=20000k out=10000k", "{list}");

    // port show: text and JSON.
    let show = run(&["port", "show", "vm1"]);
    for line in [
        "type              ring",
        "bridge            br0",
        "mac               02:00:00:00:00:05",
        "port security     on: MACs 02:00:00:00:00:05 (mac); IPs 10.0.0.5, fd00::5",
        "ingress policing  off",
        "storm control     500 frames/s",
        "counters          rx 0 packets, 0 bytes, 0 errors",
    ] {
        assert!(show.lines().any(|l| l == line), "no `{line}` in\n{show}");
    }
    let json = daemon.json(&["port", "show", "ct1"]);
    assert_eq!(json["name"], "ct1");
    assert_eq!(
        json["settings"],
        serde_json::json!({
            "ingress_policing_rate": 20000,
            "ingress_policing_burst": 2000,
            "egress_rate": 10000
        })
    );
    assert_eq!(json["queue_workers"], serde_json::json!([0]));
    assert!(json["stats"]["drops"].is_object(), "{json}");
    fails(&["port", "show", "nope"], "weir: no port named nope");

    // port set and clear; --json prints the settings after the change.
    let after = daemon.json(&[
        "port",
        "set",
        "vm1",
        "allowed_macs=02:00:00:00:00:05,02:00:00:00:00:06",
        "ips=",
        "egress_rate=5000",
    ]);
    assert_eq!(
        after,
        serde_json::json!({
            "mac": "02:00:00:00:00:05",
            "port_security": true,
            "allowed_macs": ["02:00:00:00:00:05", "02:00:00:00:00:06"],
            "egress_rate": 5000,
            "storm_pps": 500
        })
    );
    assert!(
        run(&["port", "show", "vm1"]).lines().any(|l| l
            == "port security     on: MACs 02:00:00:00:00:05, 02:00:00:00:00:06; \
                IPs any (MAC checked only)"),
        "{}",
        run(&["port", "show", "vm1"])
    );
    run(&[
        "port",
        "clear",
        "ct1",
        "ingress_policing_rate",
        "egress_rate",
    ]);
    assert_eq!(
        policy_of(&run(&["port", "list"]), "ct1"),
        "-",
        "a burst alone is no limit"
    );

    // Refused settings fail with the reason and change nothing.
    fails(
        &["port", "clear", "vm1", "mac", "allowed_macs"],
        "weir: port vm1: port security needs at least one allowed MAC (set mac or allowed_macs)",
    );
    fails(
        &["port", "set", "vm1", "ips=10.0.0.300"],
        "weir: port vm1: invalid ips `10.0.0.300`: expected IPv4 or IPv6 addresses",
    );
    fails(
        &["port", "set", "vm1", "allowed_macs=01:00:5e:00:00:01"],
        "weir: port vm1: 01:00:5e:00:00:01 is a multicast address and cannot be a source",
    );
    fails(
        &["port", "set", "vm1", "storm_pps=lots"],
        "weir: port vm1: invalid storm_pps `lots`: expected frames per second (0: no limit)",
    );
    assert_eq!(
        policy_of(&run(&["port", "list"]), "vm1"),
        "secured out=5000k storm=500pps"
    );

    // A vhost-user port offers its mac to its guest's device, so it keeps it.
    let vsock = dir.0.join("vm2.sock");
    run(&[
        "port",
        "add",
        "vm2",
        "--type",
        "vhost-user",
        "--socket",
        vsock.to_str().unwrap(),
        "--bridge",
        "br0",
        "--mac",
        "52:54:00:00:00:02",
    ]);
    fails(
        &["port", "set", "vm2", "mac=52:54:00:00:00:03"],
        "weir: port vm2: the mac of a vhost-user port cannot change while the port exists",
    );
    run(&["port", "set", "vm2", "port_security=true"]);
    let show = run(&["port", "show", "vm2"]);
    assert!(
        show.lines().any(|l| l
            == "port security     on: MACs 52:54:00:00:00:02 (mac); IPs any (MAC checked only)"),
        "{show}"
    );
    daemon.terminate();
}

/// The benchmark is a program of its own: the daemon's binary holds none of
/// its plotting, font or progress-display code, and `weir bench` runs it.

#[test]
fn bench_is_a_separate_program_that_weir_bench_runs() {
    let daemon = fs::read(WEIR).unwrap();
    let bench = fs::read(env!("CARGO_BIN_EXE_weir-bench")).unwrap();
    for name in ["plotters", "indicatif", "ab_glyph", "hdrhistogram"] {
        let holds = |bin: &[u8]| bin.windows(name.len()).any(|w| w == name.as_bytes());
        assert!(!holds(&daemon), "the weir binary links {name}");
        assert!(
            holds(&bench),
            "weir-bench does not link {name}: is the check still meaningful?"
        );
    }
    let out = weir(&["bench", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("--catch-up"), "{}", stdout(&out));
    let out = weir(&["bench", "--no-such-flag"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--no-such-flag"), "{}", stderr(&out));
}
