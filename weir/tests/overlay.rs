//! End to end: the overlay. weir hosts joined by VXLAN tunnels across an
//! underlay, each a real `weir run` daemon.
//!
//! The underlay is a Linux bridge in a namespace of its own, standing in for
//! the physical network between hosts. Each weir host's underlay port is an
//! afpacket port on a veth whose peer is a port of that bridge, with weir's
//! host address (`ip = "198.18.0.<i>/24"`) on it. The underlay veths have an
//! MTU of 1550, the usual "jumbo" underlay of an overlay network: a tenant
//! frame of 1500 bytes of IP (1514 with its Ethernet header) leaves inside
//! 50 bytes of outer headers (Ethernet 14, IPv4 20, UDP 8, VXLAN 8), that is
//! an outer IPv4 packet of 1550 bytes. Nothing else about the host is
//! tuned: the tenants keep MTU 1500 and the kernel's offloads.
//!
//! - `three_hosts_carry_two_tenants_apart`: three hosts, two tenants (VLAN
//!   10 as VNI 5010, VLAN 20 as VNI 5020) that use the same IPv4 subnet, so
//!   that a frame crossing from one tenant to the other would be answered
//!   and seen. Every namespace's interface is captured throughout, and the
//!   test ends by checking every frame each received. One host's daemon
//!   dies while the other two talk; they take it off their flood lists
//!   while they run (`port set vx0 remote_ips=...`), and put it back on
//!   once it is up again.
//! - `linux_vxlan_interoperates`: weir and a Linux `vxlan` device as the two
//!   ends of one tunnel; tshark decodes the underlay's packets; weir's host
//!   address answers ping and arping; crafted packets with a wrong VNI, a
//!   wrong address or a bad header are dropped and counted.
//!
//! Needs root (CI runs as root), tcpdump, tshark and arping (iputils);
//! fails, never skips, without them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vhost_user::testguest::wait_until;
use weir_testkit::capture::{Capture, Captured};
use weir_testkit::frame::{self, Mac};
use weir_testkit::packet::RawSocket;
use weir_testkit::{require_root_and_ip, sh, tcp_transfer, Netns, VethHost};

mod common;
use common::{
    kernel_config, kernel_port, loss_pct, ping, ping_within, test_dir, Daemon, NsProcess,
};

/// Bytes of each verified TCP transfer.
const TRANSFER_BYTES: u64 = 10_000_000;

/// How long a step waits for a frame, a counter or a neighbour it expects.
const WAIT: Duration = Duration::from_secs(15);

/// MTU of every underlay link: a tenant's 1500 bytes of IP plus 50 bytes of
/// outer headers (see the module comment).
const UNDERLAY_MTU: &str = "1550";

/// The underlay bridge's own address, from which the test pings and arpings
/// weir's host addresses.
///
/// The underlay is 198.18.0.0/24 (RFC 2544's benchmarking range), not a
/// documentation range a test machine may itself use: weir's daemons run
/// in the root namespace, whose kernel answers ARP on every interface for
/// its own addresses (`arp_ignore` 0), so an underlay address the machine
/// also has would be claimed twice. [`Underlay::create`] checks it.
const UNDERLAY_SELF: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

/// Host `i`'s underlay address.
fn underlay_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, i)
}

/// The underlay: namespace `ns` with bridge `br0` (address
/// [`UNDERLAY_SELF`]), and veths whose one end is a port of `br0`.
struct Underlay {
    ns: Netns,
}

impl Underlay {
    fn create(name: &str) -> Underlay {
        let host_addrs = weir_testkit::sh(&["ip", "-4", "-o", "addr", "show"]).unwrap();
        assert!(
            !host_addrs.contains(" 198.18.0."),
            "this machine has an address in the tests' underlay 198.18.0.0/24:\n{host_addrs}"
        );
        let ns = Netns::create(name).unwrap();
        ns.exec(&["ip", "link", "add", "br0", "type", "bridge"])
            .unwrap();
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{UNDERLAY_SELF}/24"),
            "dev",
            "br0",
        ])
        .unwrap();
        ns.exec(&["ip", "link", "set", "br0", "up"]).unwrap();
        Underlay { ns }
    }

    /// A veth `outer` ↔ `port` with the underlay MTU: `port` becomes a port
    /// of the bridge, `outer` is left in namespace `into` (or the root
    /// namespace, for weir), down and without an address.
    fn attach(&self, outer: &str, port: &str, into: Option<&Netns>) {
        let _ = sh(&["ip", "link", "del", outer]);
        let _ = sh(&["ip", "link", "del", port]);
        sh(&[
            "ip",
            "link",
            "add",
            outer,
            "mtu",
            UNDERLAY_MTU,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.ns.name(),
            "mtu",
            UNDERLAY_MTU,
        ])
        .unwrap();
        self.ns
            .exec(&["ip", "link", "set", port, "master", "br0", "up"])
            .unwrap();
        if let Some(ns) = into {
            sh(&["ip", "link", "set", outer, "netns", ns.name()]).unwrap();
        }
    }

    /// A veth for weir's underlay port: `outer` in the root namespace, up,
    /// IPv6 off so that the kernel sends nothing of its own through it.
    fn attach_weir(&self, outer: &str, port: &str) {
        self.attach(outer, port, None);
        if Path::new("/proc/sys/net/ipv6").exists() {
            sh(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{outer}.disable_ipv6=1"),
            ])
            .unwrap();
        }
        sh(&["ip", "link", "set", outer, "up"]).unwrap();
    }

    /// The MAC address that answers for `ip` on the underlay, after pinging
    /// it from the bridge's address: weir's host stack must answer both the
    /// ARP request and the echo request.
    fn resolve(&self, ip: Ipv4Addr) -> Mac {
        let out = ping(&self.ns, &ip.to_string(), 3, "0.2")
            .unwrap_or_else(|e| panic!("ping {ip} from the underlay: {e}"));
        assert_eq!(loss_pct(&out), 0.0, "ping {ip} from the underlay: {out}");
        let neigh = self
            .ns
            .exec(&["ip", "neigh", "show", &ip.to_string(), "dev", "br0"])
            .unwrap();
        let mac = neigh
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .and_then(Mac::parse);
        mac.unwrap_or_else(|| panic!("no neighbour entry for {ip}: {neigh}"))
    }
}

/// Waits until the link `dev` in `ns` can carry frames (up, with a queue:
/// see `VethHost::create`).
fn wait_link_ready(ns: &Netns, dev: &str) {
    let ready = wait_until(WAIT.as_secs(), || {
        ns.exec(&["ip", "-o", "link", "show", "dev", dev])
            .is_ok_and(|l| l.contains("state UP") && !l.contains("qdisc noop"))
    });
    assert!(ready, "{dev} in {} is not up", ns.name());
}

/// The `[[port]]` tables of a weir host's underlay port `uplink` (afpacket
/// on `iface`, host address `ip/24`) and its VXLAN tunnel `vx0` on bridge
/// `br0` to `remotes`, with `vni_keys` (`vni = N` or `vlan_vni = {...}`).
fn overlay_ports(iface: &str, ip: Ipv4Addr, remotes: &[Ipv4Addr], vni_keys: &str) -> String {
    let remotes: Vec<String> = remotes.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[port]]\nname = \"uplink\"\ntype = \"afpacket\"\niface = \"{iface}\"\nip = \"{ip}/24\"\n\
         [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nbridge = \"br0\"\nunderlay = \"uplink\"\n\
         local_ip = \"{ip}\"\nremote_ips = [{}]\n{vni_keys}\n",
        remotes.join(", ")
    )
}

/// Waits until `d` has resolved the underlay neighbour `ip` to `mac`
/// (`weir neigh show`), which it does by itself for every remote VTEP.
fn wait_resolved(d: &Daemon, ip: Ipv4Addr, mac: Mac) {
    let (ip, mac) = (ip.to_string(), mac.to_string());
    let has = |v: &serde_json::Value| {
        let s = v.to_string();
        s.contains(&format!("\"{ip}\"")) && s.contains(&mac)
    };
    let resolved = wait_until(WAIT.as_secs(), || {
        let n = d.json(&["neigh", "show"]);
        match n.as_array() {
            Some(entries) => entries.iter().any(has),
            None => has(&n),
        }
    });
    assert!(
        resolved,
        "{ip} is not resolved to {mac}: {}\n{}",
        d.json(&["neigh", "show"]),
        d.log()
    );
}

/// A drop counter of a port (0 while it has never counted).
fn drops(d: &Daemon, port: &str, reason: &str) -> u64 {
    d.json(&["port", "show", port])["stats"]["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// The (VLAN, port) entries bridge br0 has learned for `mac`.
fn learned(d: &Daemon, mac: Mac) -> Vec<(u64, String)> {
    d.json(&["fdb", "show", "--bridge", "br0"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mac"] == mac.to_string().as_str())
        .map(|e| {
            (
                e["vlan"].as_u64().unwrap(),
                e["port"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Received by the captured host (not sent by it).
fn incoming(f: &Captured) -> bool {
    !f.outgoing
}

/// A tenant's namespace on one host.
struct Tenant {
    /// e.g. "A2": tenant A on host 2.
    name: String,
    /// Tenant letter, 'A' or 'B'.
    tenant: char,
    /// weir's access port for it ("ta" or "tb").
    port: &'static str,
    vlan: u16,
    ip: Ipv4Addr,
    host: VethHost,
    mac: Mac,
    cap: Capture,
}

impl Tenant {
    fn create(tag: &str, tenant: char, i: u8) -> Tenant {
        let (port, vlan, last) = match tenant {
            'A' => ("ta", 10, i),
            _ => ("tb", 20, 10 + i),
        };
        let ip = Ipv4Addr::new(10, 0, 0, last);
        let lower = tenant.to_ascii_lowercase();
        let host = VethHost::create_quiet(
            &format!("{tag}-{lower}{i}"),
            &format!("{tag}{lower}{i}"),
            &ip.to_string(),
        )
        .unwrap();
        let mac = Mac::parse(&host.mac().unwrap()).unwrap();
        let cap = Capture::start(&host.ns, "eth0").unwrap();
        Tenant {
            name: format!("{tenant}{i}"),
            tenant,
            port,
            vlan,
            ip,
            host,
            mac,
            cap,
        }
    }

    fn ns(&self) -> &Netns {
        &self.host.ns
    }

    fn kernel_rx(&self) -> u64 {
        self.ns().counter("eth0", "rx_packets").unwrap()
    }
}

/// One weir host of the three-host test.
struct Host {
    i: u8,
    a: Tenant,
    b: Tenant,
    d: Daemon,
}

/// `from` pings `to` and must get no answer within two seconds (a reply
/// takes milliseconds once ARP is answered).
fn ping_unanswered(from: &Tenant, to: &Tenant) {
    let r = ping_within(from.ns(), &to.ip.to_string(), 2, "0.2", 2);
    assert!(r.is_err(), "{} reached {}: {r:?}", from.name, to.name);
}

/// Pings without loss, small and of the full MTU, then a verified TCP
/// transfer, `x` → `y`.
fn ping_and_transfer(x: &Tenant, y: &Tenant, port: u16, d: &Daemon) {
    let out = ping(x.ns(), &y.ip.to_string(), 3, "0.2")
        .unwrap_or_else(|e| panic!("ping {} -> {}: {e}\n{}", x.name, y.name, d.log()));
    assert_eq!(loss_pct(&out), 0.0, "{} -> {}: {out}", x.name, y.name);
    full_size_ping(x.ns(), &y.ip.to_string(), d);
    let t = tcp_transfer(x.ns(), y.ns(), &y.ip.to_string(), port, TRANSFER_BYTES)
        .unwrap_or_else(|e| panic!("TCP {} -> {}: {e:#}\n{}", x.name, y.name, d.log()));
    eprintln!(
        "{} -> {}: {TRANSFER_BYTES} B in {:.2} s",
        x.name,
        y.name,
        t.as_secs_f64()
    );
}

/// Pings of the tenants' full MTU (1500-byte IPv4 packets, DF set) from
/// `from` to `ip`, none lost: what the 1550-byte underlay is for.
fn full_size_ping(from: &Netns, ip: &str, d: &Daemon) {
    let out = from
        .exec(&[
            "ping", "-c", "3", "-i", "0.2", "-w", "6", "-M", "do", "-s", "1472", ip,
        ])
        .unwrap_or_else(|e| panic!("1500-byte ping {} -> {ip}: {e}\n{}", from.name(), d.log()));
    assert_eq!(
        loss_pct(&out),
        0.0,
        "1500-byte ping {} -> {ip}: {out}",
        from.name()
    );
}

/// Every host's tenant-`other` ports: weir's transmit counter and the
/// namespace's receive counter.
fn other_tenant_counts(hosts: &[&Host], other: char) -> Vec<(String, u64, u64)> {
    hosts
        .iter()
        .map(|h| {
            let t = if other == 'A' { &h.a } else { &h.b };
            (
                t.name.clone(),
                h.d.port_counter(t.port, "tx_packets"),
                t.kernel_rx(),
            )
        })
        .collect()
}

/// `from` (on host `from_host`) pings the other tenant's namespace on every
/// host, and reaches none: its ARP requests reach its own tenant on the
/// other hosts, through the tunnel, and no port or namespace of the other
/// tenant anywhere.
fn tenants_stay_apart(hosts: &[&Host], from_host: usize, tenant: char) {
    let h = hosts[from_host];
    let (from, other) = if tenant == 'A' {
        (&h.a, 'B')
    } else {
        (&h.b, 'A')
    };
    let before = other_tenant_counts(hosts, other);
    let targets: Vec<&Tenant> = hosts
        .iter()
        .map(|h| if other == 'A' { &h.a } else { &h.b })
        .collect();
    std::thread::scope(|s| {
        for to in &targets {
            s.spawn(move || ping_unanswered(from, to));
        }
    });
    for to in &targets {
        // The stack keeps asking after ping gives up: wait until it has
        // given up too, so that no request comes after the counts below.
        let given_up = wait_until(WAIT.as_secs(), || {
            from.ns()
                .exec(&["ip", "neigh", "show", &to.ip.to_string(), "dev", "eth0"])
                .is_ok_and(|s| s.contains("FAILED"))
        });
        assert!(given_up, "{} still resolving {}", from.name, to.name);
        // The request did cross the tunnel, in its own tenant: the test
        // would prove nothing if the tunnel carried no broadcast at all.
        for peer in hosts.iter().filter(|p| p.i != h.i) {
            let same = if tenant == 'A' { &peer.a } else { &peer.b };
            same.cap
                .wait_for(WAIT, |f| {
                    incoming(f)
                        && f.view().src() == Some(from.mac)
                        && f.view().arp().is_some_and(|a| a.target_ip == to.ip)
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{}'s ARP request for {} did not reach {} across the tunnel\n{}",
                        from.name,
                        to.ip,
                        same.name,
                        h.d.log()
                    )
                });
        }
    }
    let after = other_tenant_counts(hosts, other);
    for ((name, tx0, rx0), (_, tx1, rx1)) in before.iter().zip(&after) {
        assert_eq!(
            (tx1 - tx0, rx1 - rx0),
            (0, 0),
            "{name} (tenant {other}): weir sent it {} frames and its namespace received {} \
             while only {} (tenant {tenant}) spoke",
            tx1 - tx0,
            rx1 - rx0,
            from.name
        );
    }
}

#[test]
fn three_hosts_carry_two_tenants_apart() {
    require_root_and_ip().expect("the overlay test needs root and iproute2");
    let _turn = common::serial();
    let start = std::time::Instant::now();
    let tag = format!("wo{}", std::process::id() % 100_000);
    let under = Underlay::create(&format!("{tag}-u"));

    let ips: Vec<Ipv4Addr> = (1..=3).map(underlay_ip).collect();
    let mut hosts = Vec::new();
    let mut dirs = Vec::new();
    for i in 1..=3u8 {
        let uplink = format!("{tag}u{i}");
        under.attach_weir(&uplink, &format!("{tag}p{i}"));
        let a = Tenant::create(&tag, 'A', i);
        let b = Tenant::create(&tag, 'B', i);
        let remotes: Vec<Ipv4Addr> = ips
            .iter()
            .copied()
            .filter(|&r| r != ips[i as usize - 1])
            .collect();
        let mut config = kernel_config("", &[]);
        config += &overlay_ports(
            &uplink,
            underlay_ip(i),
            &remotes,
            "vlan_vni = { 10 = 5010, 20 = 5020 }",
        );
        config += &kernel_port("ta", "afpacket", &a.host.host_if, "tag = 10\n");
        config += &kernel_port("tb", "afpacket", &b.host.host_if, "tag = 20\n");
        let dir = test_dir(&format!("overlay-{tag}-h{i}"));
        let d = Daemon::start(&dir, &config);
        dirs.push(dir);
        d.wait_up(&["uplink", "ta", "tb"]);
        hosts.push(Host { i, a, b, d });
    }

    // 1. The underlay: each host's address answers, from a MAC address of
    //    its own (all three underlay ports have the same name, "uplink");
    //    `weir ip show` lists it; each host resolves the other two.
    let macs: Vec<Mac> = ips.iter().map(|&ip| under.resolve(ip)).collect();
    let distinct: BTreeSet<Mac> = macs.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "the hosts' underlay MACs: {macs:?}");
    for h in &hosts {
        let me = underlay_ip(h.i).to_string();
        let shown = h.d.json(&["ip", "show"]).to_string();
        assert!(shown.contains(&me), "host {}: weir ip show: {shown}", h.i);
        for (j, (&ip, &mac)) in ips.iter().zip(&macs).enumerate() {
            if j + 1 != usize::from(h.i) {
                wait_resolved(&h.d, ip, mac);
            }
        }
    }
    let all: Vec<&Host> = hosts.iter().collect();

    // 2. Across tenants: nothing, although both use 10.0.0.0/24. A1 asks
    //    for every B, then B2 for every A.
    tenants_stay_apart(&all, 0, 'A');
    tenants_stay_apart(&all, 1, 'B');

    // 3. Within a tenant, every ordered pair of hosts: ping and verified
    //    TCP, both tenants at once.
    let mut port = 5201;
    for x in &hosts {
        for y in &hosts {
            if x.i == y.i {
                continue;
            }
            std::thread::scope(|s| {
                s.spawn(|| ping_and_transfer(&x.a, &y.a, port, &x.d));
                s.spawn(|| ping_and_transfer(&x.b, &y.b, port + 1, &x.d));
            });
            port += 2;
        }
    }
    // Each host learned the others' tenants behind the tunnel, in the
    // tenant's VLAN.
    for x in &hosts {
        for y in hosts.iter().filter(|y| y.i != x.i) {
            for t in [&y.a, &y.b] {
                assert_eq!(
                    learned(&x.d, t.mac),
                    [(u64::from(t.vlan), "vx0".to_string())],
                    "host {}: {}",
                    x.i,
                    t.name
                );
            }
        }
    }

    // 4. Host 3's daemon dies while host 1 and host 2 talk: their traffic
    //    goes on without a loss.
    let mut h3 = hosts.pop().unwrap();
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let tx_before = h2.d.port_counter("ta", "tx_packets");
    std::thread::scope(|s| {
        let pinger = s.spawn(|| ping(h1.a.ns(), &h2.a.ip.to_string(), 40, "0.05"));
        let mover = s.spawn(|| {
            tcp_transfer(
                h1.b.ns(),
                h2.b.ns(),
                &h2.b.ip.to_string(),
                5301,
                4 * TRANSFER_BYTES,
            )
        });
        let flowing = wait_until(WAIT.as_secs(), || {
            h2.d.port_counter("ta", "tx_packets") > tx_before
        });
        assert!(flowing, "A1's pings do not reach A2");
        h3.d.kill_hard();
        let out = pinger
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("A1 -> A2: {e}"));
        assert_eq!(loss_pct(&out), 0.0, "A1 -> A2 while host 3 died: {out}");
        mover
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("TCP B1 -> B2 while host 3 died: {e:#}"));
    });
    for (x, y, p) in [(h2, h1, 5401), (h1, h2, 5403)] {
        std::thread::scope(|s| {
            s.spawn(|| ping_and_transfer(&x.a, &y.a, p, &x.d));
            s.spawn(|| ping_and_transfer(&x.b, &y.b, p + 1, &x.d));
        });
    }

    // 5. The two left take host 3 off their flood lists while A1 pings A2
    //    (`port set vx0 remote_ips=...` on running tunnels): not a ping
    //    lost, and each tunnel lists the one remote left.
    let flood_list = |h: &Host, remotes: &[Ipv4Addr]| {
        let list: Vec<String> = remotes.iter().map(Ipv4Addr::to_string).collect();
        h.d.ok(&[
            "port",
            "set",
            "vx0",
            &format!("remote_ips={}", list.join(",")),
        ]);
        let shown: Vec<String> = h.d.json(&["port", "show", "vx0"])["tunnel"]["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ip"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(shown, list, "host {}: vx0's remotes", h.i);
    };
    let tx_before = h2.d.port_counter("ta", "tx_packets");
    std::thread::scope(|s| {
        let pinger = s.spawn(|| ping(h1.a.ns(), &h2.a.ip.to_string(), 40, "0.05"));
        let flowing = wait_until(WAIT.as_secs(), || {
            h2.d.port_counter("ta", "tx_packets") > tx_before
        });
        assert!(flowing, "A1's pings do not reach A2");
        flood_list(h1, &[ips[1]]);
        flood_list(h2, &[ips[0]]);
        let out = pinger
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("A1 -> A2: {e}"));
        assert_eq!(
            loss_pct(&out),
            0.0,
            "A1 -> A2 while the flood lists changed: {out}"
        );
    });

    // 6. Host 3 comes back and the others put it on their flood lists
    //    again: it is resolved afresh, and its tenants reach theirs on both.
    h3.d.restart();
    h3.d.wait_up(&["uplink", "ta", "tb"]);
    flood_list(h1, &[ips[1], ips[2]]);
    flood_list(h2, &[ips[0], ips[2]]);
    for h in [h1, h2] {
        wait_resolved(&h.d, ips[2], macs[2]);
    }
    for (x, y, p) in [(h1, &h3, 5501), (&h3, h2, 5503)] {
        std::thread::scope(|s| {
            s.spawn(|| ping_and_transfer(&x.a, &y.a, p, &x.d));
            s.spawn(|| ping_and_transfer(&x.b, &y.b, p + 1, &x.d));
        });
    }

    // 7. Everything each namespace received, from before the daemons
    //    started (stopped now, so that whatever they still had to send is
    //    in): untagged frames from its own tenant's namespaces only.
    hosts.push(h3);
    let tenant_of: BTreeMap<Mac, char> = hosts
        .iter()
        .flat_map(|h| [(h.a.mac, 'A'), (h.b.mac, 'B')])
        .collect();
    let mut tenants = Vec::new();
    for h in hosts {
        drop(h.d);
        tenants.push(h.a);
        tenants.push(h.b);
    }
    for t in tenants {
        let frames = t.cap.stop().unwrap();
        let got: Vec<_> = frames.iter().filter(|f| incoming(f)).collect();
        assert!(!got.is_empty(), "{} received nothing", t.name);
        let bad: Vec<_> = got
            .iter()
            .filter(|f| {
                f.view().tag().is_some()
                    || f.view().src() == Some(t.mac)
                    || f.view().src().and_then(|m| tenant_of.get(&m)) != Some(&t.tenant)
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{} (tenant {}) received {} of {} frames it must not: {bad:?}",
            t.name,
            t.tenant,
            bad.len(),
            got.len()
        );
        eprintln!(
            "{}: {} frames received, all from tenant {}",
            t.name,
            got.len(),
            t.tenant
        );
    }
    eprintln!("{:.1} s in all", start.elapsed().as_secs_f64());
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The VXLAN packets of a capture file as tshark decodes them: (outer
/// source, outer destination, UDP source port, UDP destination port, VNI,
/// DF), of every whole packet the file holds so far.
fn tshark_vxlan(pcap: &Path) -> Vec<(String, String, u16, u16, u32, bool)> {
    // A file still being written may end in half a packet: tshark then
    // complains and fails, after printing every whole one, so its status
    // is not looked at.
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-Y", "vxlan", "-T", "fields"])
        .args(["-e", "ip.src", "-e", "ip.dst", "-e", "udp.srcport"])
        .args(["-e", "udp.dstport", "-e", "vxlan.vni", "-e", "ip.flags.df"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("running tshark (apt-get install tshark)");
    // Fields repeat for the inner packet ("outer,inner"): the first is the
    // outer header's.
    let first = |f: &str| f.split(',').next().unwrap_or("").to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<String> = l.split('\t').map(first).collect();
            Some((
                f.first()?.clone(),
                f.get(1)?.clone(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
                f.get(4)?.parse().ok()?,
                matches!(f.get(5)?.as_str(), "1" | "True"),
            ))
        })
        .collect()
}

#[test]
fn linux_vxlan_interoperates() {
    require_root_and_ip().expect("the overlay test needs root and iproute2");
    let _turn = common::serial();
    let tag = format!("wv{}", std::process::id() % 100_000);
    let dir = test_dir(&format!("overlay-linux-{tag}"));
    let under = Underlay::create(&format!("{tag}-u"));
    let weir_ip = underlay_ip(1);
    let linux_ip = underlay_ip(9);

    // The Linux end: a namespace whose eth0 is on the underlay, with a
    // VXLAN device of VNI 5000 to weir over it (its MTU follows: 1500).
    let linux = Netns::create(&format!("{tag}-l")).unwrap();
    under.attach(&format!("{tag}l"), &format!("{tag}pl"), Some(&linux));
    linux
        .exec(&["ip", "link", "set", &format!("{tag}l"), "name", "eth0"])
        .unwrap();
    linux
        .exec(&[
            "ip",
            "addr",
            "add",
            &format!("{linux_ip}/24"),
            "dev",
            "eth0",
        ])
        .unwrap();
    linux.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
    let (lip, wip) = (linux_ip.to_string(), weir_ip.to_string());
    linux
        .exec(&[
            "ip", "link", "add", "vx", "type", "vxlan", "id", "5000", "local", &lip, "remote",
            &wip, "dstport", "4789", "dev", "eth0",
        ])
        .unwrap();
    linux
        .exec(&["ip", "addr", "add", "10.0.0.9/24", "dev", "vx"])
        .unwrap();
    linux.exec(&["ip", "link", "set", "vx", "up"]).unwrap();
    wait_link_ready(&linux, "eth0");
    let linux_mac =
        Mac::parse(&linux.exec(&["cat", "/sys/class/net/eth0/address"]).unwrap()).unwrap();
    let linux_vx_mac =
        Mac::parse(&linux.exec(&["cat", "/sys/class/net/vx/address"]).unwrap()).unwrap();

    // The weir end: the underlay port, the tunnel and one tenant.
    under.attach_weir(&format!("{tag}u1"), &format!("{tag}p1"));
    let t = VethHost::create_quiet(&format!("{tag}-t"), &format!("{tag}t"), "10.0.0.1").unwrap();
    let t_cap = Capture::start(&t.ns, "eth0").unwrap();

    // Everything on the underlay bridge, as an operator would capture it.
    let pcap = dir.join("underlay.pcap");
    let tcpdump_log = dir.join("tcpdump.log");
    let tcpdump = NsProcess::start(
        &under.ns,
        &[
            "tcpdump",
            "-n",
            "-U",
            "-i",
            "br0",
            "-w",
            pcap.to_str().unwrap(),
            "udp",
        ],
        &tcpdump_log,
    );
    let listening = wait_until(WAIT.as_secs(), || {
        std::fs::read_to_string(&tcpdump_log).is_ok_and(|l| l.contains("listening on"))
    });
    assert!(
        listening,
        "tcpdump did not start: {}",
        std::fs::read_to_string(&tcpdump_log).unwrap_or_default()
    );

    let mut config = kernel_config("", &[]);
    config += &overlay_ports(&format!("{tag}u1"), weir_ip, &[linux_ip], "vni = 5000");
    config += &kernel_port("t", "afpacket", &t.host_if, "");
    let mut d = Daemon::start(&dir.join("weir"), &config);
    d.wait_up(&["uplink", "t"]);

    // 1. weir's host address answers ping and arping on the underlay, and
    //    weir resolves the Linux end.
    let weir_mac = under.resolve(weir_ip);
    let arping = under
        .ns
        .exec(&["arping", "-c", "2", "-w", "5", "-I", "br0", &wip])
        .unwrap_or_else(|e| panic!("arping {wip}: {e}\n{}", d.log()));
    assert!(
        arping.contains("Received 2 response(s)")
            && arping.contains(&weir_mac.to_string().to_uppercase()),
        "arping {wip}: {arping}"
    );
    let shown = d.json(&["ip", "show"]).to_string();
    assert!(shown.contains(&wip), "weir ip show: {shown}");
    wait_resolved(&d, linux_ip, linux_mac);

    // 2. Through the tunnel, both ways: ping, then verified TCP.
    for (from, to, ip) in [(&t.ns, &linux, "10.0.0.9"), (&linux, &t.ns, "10.0.0.1")] {
        let out = ping(from, ip, 3, "0.2")
            .unwrap_or_else(|e| panic!("ping {} -> {ip}: {e}\n{}", from.name(), d.log()));
        assert_eq!(loss_pct(&out), 0.0, "{} -> {ip}: {out}", from.name());
        full_size_ping(from, ip, &d);
        tcp_transfer(from, to, ip, 5201, TRANSFER_BYTES)
            .unwrap_or_else(|e| panic!("TCP {} -> {ip}: {e:#}\n{}", from.name(), d.log()));
    }
    let vx_learned: Vec<String> = learned(&d, linux_vx_mac)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(vx_learned, ["vx0"], "the Linux end's inner MAC");

    // 3. tshark reads the underlay's packets as VXLAN of VNI 5000 on port
    //    4789, both ways; weir's have the outer header of the design: DF
    //    set, a source port from the dynamic range (flow entropy).
    let mut seen = Vec::new();
    let both_ways = wait_until(WAIT.as_secs(), || {
        seen = tshark_vxlan(&pcap);
        let from = |a: Ipv4Addr| seen.iter().any(|p| p.0 == a.to_string());
        from(weir_ip) && from(linux_ip)
    });
    drop(tcpdump);
    assert!(both_ways, "VXLAN both ways in the capture: {seen:?}");
    for p in &seen {
        assert_eq!((p.3, p.4), (4789, 5000), "{p:?}");
        if p.0 == wip {
            assert_eq!(p.1, lip, "{p:?}");
            assert!(p.2 >= 49152 && p.5, "weir's outer header: {p:?}");
        }
    }
    eprintln!("tshark: {} VXLAN packets, all of VNI 5000", seen.len());

    // 4. Crafted packets from the underlay: one that is right, delivered,
    //    and one wrong in one respect each, dropped and counted, their inner
    //    frames never reaching the tenant.
    let sock = RawSocket::open_in(&under.ns, "br0").unwrap();
    let src_mac = Mac([0x02, 0x77, 0x6c, 0, 0, 0x99]);
    let vxlan_to = |src_ip: Ipv4Addr, dst_ip: Ipv4Addr, flags: u8, vni: u32, inner_src: Mac| {
        let inner = frame::arp_request(
            inner_src,
            Ipv4Addr::new(10, 0, 0, 99),
            Ipv4Addr::new(10, 0, 0, 1),
        );
        frame::udp_ipv4(
            (src_mac, src_ip, 50_000),
            (weir_mac, dst_ip, frame::VXLAN_PORT),
            &frame::vxlan(flags, vni, &inner),
        )
    };
    let inner_mac = |n: u8| Mac([0x02, 0x77, 0x6c, 0, 1, n]);
    let from_inner = |m: Mac| move |f: &Captured| incoming(f) && f.view().src() == Some(m);
    // Right: delivered (so the others differ from it in their one fault).
    sock.send(&vxlan_to(linux_ip, weir_ip, 0x08, 5000, inner_mac(0)))
        .unwrap();
    t_cap
        .wait_for(WAIT, from_inner(inner_mac(0)))
        .unwrap_or_else(|| panic!("a crafted VXLAN packet was not delivered\n{}", d.log()));
    let reasons = ["tunnel-vni", "not-local", "tunnel-remote", "tunnel-header"];
    let before: Vec<u64> = reasons.iter().map(|r| drops(&d, "uplink", r)).collect();
    let wrong = [
        // VNI 5999: no tunnel carries it.
        (vxlan_to(linux_ip, weir_ip, 0x08, 5999, inner_mac(1)), 3, 0),
        // To weir's MAC, for an address that is not weir's.
        (
            vxlan_to(linux_ip, underlay_ip(77), 0x08, 5000, inner_mac(2)),
            2,
            1,
        ),
        // From an address that is no remote of the tunnel.
        (
            vxlan_to(underlay_ip(8), weir_ip, 0x08, 5000, inner_mac(3)),
            1,
            2,
        ),
        // Without the I flag.
        (vxlan_to(linux_ip, weir_ip, 0x00, 5000, inner_mac(4)), 1, 3),
    ];
    for (f, n, _) in &wrong {
        for _ in 0..*n {
            sock.send(f).unwrap();
        }
    }
    let want: Vec<u64> = (0..reasons.len())
        .map(|k| before[k] + wrong.iter().filter(|w| w.2 == k).map(|w| w.1).sum::<u64>())
        .collect();
    let now = || -> Vec<u64> { reasons.iter().map(|r| drops(&d, "uplink", r)).collect() };
    let counted = wait_until(WAIT.as_secs(), || now() == want);
    assert!(
        counted,
        "drops {reasons:?}: {:?}, want {want:?}\n{}",
        now(),
        d.json(&["port", "show", "uplink"])
    );
    // `weir stats` reports the same.
    let stats = d.json(&["stats"]);
    let uplink = common::port_entry(&stats["ports"], "uplink");
    for (r, w) in reasons.iter().zip(&want) {
        assert_eq!(
            uplink["stats"]["drops"][*r].as_u64(),
            Some(*w),
            "{r}: {stats}"
        );
    }

    // 5. Truncated and garbled packets: no harm, and the tunnel still works.
    let good = vxlan_to(linux_ip, weir_ip, 0x08, 5000, inner_mac(5));
    let mut garbage: Vec<Vec<u8>> = [15, 20, 34, 38, 42, 49, 50, 56]
        .iter()
        .map(|&n| good[..n].to_vec())
        .collect();
    // Header lengths that lie: IHL 15 (60 bytes), total length over the
    // frame, UDP length over the datagram.
    let mut lie = good.clone();
    lie[14] = 0x4f;
    garbage.push(lie);
    let mut lie = good.clone();
    lie[16..18].copy_from_slice(&9000u16.to_be_bytes());
    garbage.push(lie);
    let mut lie = good.clone();
    lie[38..40].copy_from_slice(&9000u16.to_be_bytes());
    garbage.push(lie);
    // A VXLAN header with nothing inside it, and one with half a frame.
    garbage.push(vxlan_to(linux_ip, weir_ip, 0x08, 5000, inner_mac(6))[..50].to_vec());
    garbage.push(vxlan_to(linux_ip, weir_ip, 0x08, 5000, inner_mac(6))[..57].to_vec());
    for g in &garbage {
        sock.send(g).unwrap();
    }
    let out = ping(&t.ns, "10.0.0.9", 3, "0.2")
        .unwrap_or_else(|e| panic!("ping after garbage: {e}\n{}", d.log()));
    assert_eq!(loss_pct(&out), 0.0, "after garbage: {out}");
    assert!(d.alive(), "weir died on garbage: {}", d.log());
    for n in [1, 2, 3, 4, 5] {
        assert!(
            t_cap.matching(from_inner(inner_mac(n))).is_empty(),
            "the inner frame of dropped packet {n} reached the tenant"
        );
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
