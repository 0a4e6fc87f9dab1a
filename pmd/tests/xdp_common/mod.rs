//! Test fixtures for the AF_XDP driver: a network namespace joined to the root
//! namespace by a veth pair, torn down on drop.
//!
//! Needs root (creating namespaces and veths, attaching XDP). The tests do not
//! skip without it: [`require_root`] fails them with a message saying so.
//!
//! Every address used here lives only inside namespaces these fixtures create;
//! the root-namespace veth ends get no address and no route, so nothing leaves
//! the machine.

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails the test unless running as root.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "AF_XDP tests need root (network namespaces, veth pairs, XDP attach): \
         run `cargo test -p pmd` as root"
    );
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command, ignoring failure (for cleanup).
fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let parts: Vec<_> = s.trim().split(':').collect();
    assert_eq!(parts.len(), 6, "bad MAC {s:?}");
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("bad MAC {s:?}"));
    }
    mac
}

/// A namespace with one veth end (addressed) and its peer in the root namespace
/// (up, no address). Both ends and the namespace are deleted on drop.
pub struct VethNs {
    /// Namespace name.
    pub ns: String,
    /// Root-namespace end, for the AF_XDP port.
    pub host_if: String,
    /// Namespace end.
    pub ns_if: String,
    /// Address of the namespace end, without prefix length.
    pub ns_ip: [u8; 4],
    /// MAC of the namespace end.
    pub ns_mac: [u8; 6],
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl VethNs {
    /// Creates namespace and veth pair; `ns_ip` gets a /24 on the namespace end.
    pub fn new(ns_ip: [u8; 4]) -> VethNs {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // "xh" + pid (at most 7 digits) + "n" + counter stays within 15 bytes.
        let host_if = format!("xh{pid}n{n}");
        let ns_if = format!("xn{pid}n{n}");
        assert!(host_if.len() <= 15, "interface name {host_if} too long");
        let ns = format!("weir-xdp-{pid}-{n}");
        // From here on, Drop cleans up whatever was created.
        let mut v = VethNs {
            ns,
            host_if,
            ns_if,
            ns_ip,
            ns_mac: [0; 6],
        };
        let ip = format!("{}.{}.{}.{}/24", ns_ip[0], ns_ip[1], ns_ip[2], ns_ip[3]);
        run(&["ip", "netns", "add", &v.ns]);
        run(&[
            "ip", "link", "add", &v.host_if, "type", "veth", "peer", "name", &v.ns_if, "netns",
            &v.ns,
        ]);
        // Keep IPv6 autoconfiguration traffic out of the tests.
        run_quiet(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", v.host_if),
        ]);
        v.ns_exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        v.ns_exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        run(&["ip", "link", "set", &v.host_if, "up"]);
        run(&["ip", "-n", &v.ns, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &v.ns, "addr", "add", &ip, "dev", &v.ns_if]);
        run(&["ip", "-n", &v.ns, "link", "set", &v.ns_if, "up"]);
        let mac = v.ns_exec(&["cat", &format!("/sys/class/net/{}/address", v.ns_if)]);
        v.ns_mac = parse_mac(&mac);
        v.wait_up();
        v
    }

    /// Runs a command in the namespace; returns its stdout.
    pub fn ns_exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.ns];
        full.extend_from_slice(args);
        String::from_utf8_lossy(&run(&full).stdout).into_owned()
    }

    /// A command to run in the namespace, for spawning.
    pub fn ns_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// The namespace end's rx packet counter.
    pub fn ns_rx_packets(&self) -> u64 {
        let s = self.ns_exec(&[
            "cat",
            &format!("/sys/class/net/{}/statistics/rx_packets", self.ns_if),
        ]);
        s.trim().parse().expect("rx_packets is a number")
    }

    /// Waits (up to 3 s) for the root end to report operstate "up".
    fn wait_up(&self) {
        let path = format!("/sys/class/net/{}/operstate", self.host_if);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == "up") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not come up", self.host_if);
    }
}

impl Drop for VethNs {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; deleting it explicitly (rather than
        // relying on namespace teardown, which is asynchronous) frees the name now.
        run_quiet(&["ip", "link", "del", &self.host_if]);
        run_quiet(&["ip", "netns", "del", &self.ns]);
    }
}

/// A broadcast ARP request asking for `target_ip`, from `src_mac`/`src_ip`.
pub fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]); // destination: broadcast
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06]); // EtherType ARP
    f.extend_from_slice(&[0x00, 0x01]); // htype Ethernet
    f.extend_from_slice(&[0x08, 0x00]); // ptype IPv4
    f.extend_from_slice(&[6, 4]); // hlen, plen
    f.extend_from_slice(&[0x00, 0x01]); // op request
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f.resize(60, 0); // pad to the Ethernet minimum (without FCS)
    f
}

/// True if `frame` is an ARP reply from `sender_ip` addressed to `dst_mac`.
pub fn is_arp_reply(frame: &[u8], dst_mac: [u8; 6], sender_ip: [u8; 4]) -> bool {
    frame.len() >= 42
        && frame[0..6] == dst_mac
        && frame[12..14] == [0x08, 0x06]
        && frame[20..22] == [0x00, 0x02]
        && frame[28..32] == sender_ip
}
