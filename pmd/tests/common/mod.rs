//! Throw-away network namespaces and veth pairs for tests on real kernel
//! interfaces. Needs root (`CAP_NET_ADMIN`, `CAP_NET_RAW`, `ip` from iproute2).
//!
//! Names carry a fixed prefix and the test process id, so parallel test
//! processes do not clash and leftovers of dead processes can be recognised and
//! removed.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Prefix of every namespace and interface made here.
const PREFIX: &str = "wkp";

static NEXT: AtomicU32 = AtomicU32::new(0);
static CLEANUP: Once = Once::new();

/// Fails the test unless running as root: these tests must not be skipped.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "pmd kernel-interface tests create network namespaces, veth pairs and TAP \
         interfaces and must run as root (CAP_NET_ADMIN + CAP_NET_RAW)"
    );
    CLEANUP.call_once(remove_leftovers);
}

/// Runs a command; panics with its output if it fails.
pub fn run(args: &[&str]) -> String {
    let out = try_run(args);
    assert!(
        out.status.success(),
        "`{}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, returning its output whatever the status.
pub fn try_run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", args.join(" ")))
}

/// A unique name: prefix, pid, a tag letter and a counter; at most 15 bytes.
pub fn unique_name(tag: char) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{PREFIX}{}{tag}{n}", std::process::id());
    assert!(name.len() <= 15, "interface name {name} too long");
    name
}

/// Deletes namespaces and interfaces left by test processes that no longer run.
fn remove_leftovers() {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u32>() {
            Ok(pid) => {
                pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            }
            Err(_) => false,
        }
    };
    let ns = try_run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&ns.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if dead(name) {
            let _ = try_run(&["ip", "netns", "del", name]);
        }
    }
    let links = try_run(&["ip", "-o", "link", "show"]);
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        // "12: name@peer: <...>"
        let name = line
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        if dead(name) {
            let _ = try_run(&["ip", "link", "del", name]);
        }
    }
}

/// A network namespace, deleted on drop (with every interface inside it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        require_root();
        let name = unique_name('n');
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics if it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Reads a counter of interface `dev` in the namespace.
    pub fn counter(&self, dev: &str, name: &str) -> u64 {
        let path = format!("/sys/class/net/{dev}/statistics/{name}");
        self.exec(&["cat", &path])
            .trim()
            .parse()
            .expect("numeric counter")
    }

    /// MAC address of interface `dev` in the namespace, as six bytes.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        parse_mac(
            self.exec(&["cat", &format!("/sys/class/net/{dev}/address")])
                .trim(),
        )
    }

    /// Sends one UDP datagram from the namespace (bash's `/dev/udp`), which makes
    /// the kernel resolve `ip` with an ARP request first.
    pub fn send_udp(&self, ip: &str) {
        let script = format!("echo x > /dev/udp/{ip}/9");
        // An unresolvable neighbour is not an error for a datagram send.
        let _ = try_run(&["ip", "netns", "exec", &self.name, "bash", "-c", &script]);
    }

    /// A counter from the namespace's `/proc/net/snmp`, e.g. ("Udp", "NoPorts").
    pub fn snmp(&self, group: &str, name: &str) -> u64 {
        let text = self.exec(&["cat", "/proc/net/snmp"]);
        let prefix = format!("{group}:");
        let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = (
            rows.next().expect("header row"),
            rows.next().expect("value row"),
        );
        let col = names
            .split_whitespace()
            .position(|n| n == name)
            .expect("known counter");
        values
            .split_whitespace()
            .nth(col)
            .and_then(|v| v.parse().ok())
            .expect("numeric counter")
    }

    /// Forgets every neighbour entry, so the next send ARPs again.
    pub fn flush_neighbours(&self) {
        self.exec(&["ip", "neigh", "flush", "all"]);
    }

    /// The MAC the namespace has resolved `ip` to, if the entry is complete.
    pub fn neighbour(&self, ip: &str) -> Option<[u8; 6]> {
        let out = self.exec(&["ip", "neigh", "show", ip]);
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().map(parse_mac);
            }
        }
        None
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = try_run(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair: `outer` stays in the root namespace, up, without an address;
/// `inner` is moved into `ns` with address `ip/24`, up. Deleted on drop.
pub struct Veth {
    pub outer: String,
    pub inner: String,
    pub ip: String,
}

impl Veth {
    pub fn new(ns: &Netns, ip: &str) -> Veth {
        require_root();
        let outer = unique_name('a');
        let inner = unique_name('b');
        run(&[
            "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        let veth = Veth {
            outer,
            inner,
            ip: ip.to_owned(),
        };
        // No IPv6 on the switch side: keeps the host stack from sending on it.
        disable_ipv6(&veth.outer);
        run(&["ip", "link", "set", &veth.inner, "netns", &ns.name]);
        run(&["ip", "link", "set", &veth.outer, "up"]);
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &veth.inner]);
        ns.exec(&["ip", "link", "set", &veth.inner, "up"]);
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting one end deletes both; the inner end also goes with its namespace.
        let _ = try_run(&["ip", "link", "del", &self.outer]);
    }
}

/// A veth pair with both ends in the root namespace, up, without addresses (and
/// without IPv6, so the host stack stays quiet on them). Deleted on drop.
pub struct LocalVeth {
    pub a: String,
    pub b: String,
}

impl LocalVeth {
    pub fn new() -> LocalVeth {
        require_root();
        let (a, b) = (unique_name('a'), unique_name('b'));
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        let pair = LocalVeth { a, b };
        for end in [&pair.a, &pair.b] {
            disable_ipv6(end);
            run(&["ip", "link", "set", end, "up"]);
        }
        pair
    }
}

impl Drop for LocalVeth {
    fn drop(&mut self) {
        let _ = try_run(&["ip", "link", "del", &self.a]);
    }
}

/// Turns IPv6 off on a root-namespace interface (best effort: the kernel may lack
/// IPv6), so the host stack does not send on a switch-side interface.
fn disable_ipv6(dev: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).expect("hex octet"))
        .collect();
    assert_eq!(parts.len(), 6, "bad MAC {s:?}");
    mac.copy_from_slice(&parts);
    mac
}

/// Polls `f` every 10 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A broadcast ARP request "who has `target_ip`? tell `sender_ip`" from
/// `sender_mac`.
pub fn arp_request(sender_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f.resize(60, 0); // minimum frame without FCS
    f
}

/// Parses "a.b.c.d".
pub fn ipv4(s: &str) -> [u8; 4] {
    let v: Vec<u8> = s.split('.').map(|p| p.parse().expect("octet")).collect();
    v.try_into().expect("four octets")
}

/// A /24 prefix "10.X.Y" for test addresses; varies with the process so that
/// captures from parallel runs are easy to tell apart.
pub fn subnet() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("10.{}.{}", 100 + pid % 100, (pid / 100 + n) % 250 + 1)
}
