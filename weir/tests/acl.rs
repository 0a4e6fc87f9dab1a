//! End to end: security groups in the real `weir run` daemon. Two
//! namespaces, a client and a server, each with an IPv4 and an IPv6 address,
//! on afpacket ports of one bridge. A TCP server in the server's namespace
//! listens on ports 80, 8080 and 22 (IPv4 and IPv6) and checks every byte
//! it receives against the sender's pattern.
//!
//! 1. Without ACLs, every port and ping work: whatever fails later fails
//!    because of an ACL.
//! 2. ACL `web` (allow TCP to port 80, deny the rest) as the client's
//!    `acl_in`: TCP to port 80 moves verified data over IPv4 and IPv6 (with
//!    the neighbour caches flushed, so ARP and neighbour discovery must pass
//!    the table); TCP to 8080 and 22 and pings fail, and `acl-deny` counts.
//! 3. During a transfer to port 80, `web` is replaced by a table that
//!    denies port 80. Once `weir acl add` returns, the client sends a marker
//!    frame (an ARP request, which the table passes) behind the transfer's
//!    segments: the server's capture holds no segment of the transfer after
//!    the marker, though the client keeps sending (counted as `acl-deny`),
//!    and the server's byte count stands still. The old table back, a new
//!    connection moves data again.
//! 4. The same shape on the server's port as `acl_out`: what the switch
//!    sends to the server is filtered (drops are counted on the port the
//!    frames came in on, the client's).
//!
//! Needs root (CI runs as root); fails, never skips, without it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_testkit::capture::{Capture, Captured};
use weir_testkit::frame::{self, Mac};
use weir_testkit::packet::RawSocket;
use weir_testkit::{enter, pattern_fill, require_root_and_ip, Netns, VethHost};

mod common;
use common::{kernel_config, kernel_port, loss_pct, ping, ping_within, Daemon};

/// The pattern's seed on every connection.
const SEED: u64 = 0xac1_5eed;

/// Bytes of each verified transfer.
const TRANSFER_BYTES: u64 = 2_000_000;

/// How long a step waits for an event it expects.
const WAIT: Duration = Duration::from_secs(15);

/// How long a connection that must fail is given.
const REFUSED: Duration = Duration::from_secs(1);

const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 24, 1);
const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 18, 24, 2);
const CLIENT6: &str = "fd00:18:24::1";
const SERVER6: &str = "fd00:18:24::2";

/// The server's ports.
const PORTS: [u16; 3] = [80, 8080, 22];

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((SERVER4, port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::from((SERVER6.parse::<std::net::Ipv6Addr>().unwrap(), port))
}

/// One connection the server accepted.
struct Conn {
    /// The port it came in on.
    port: u16,
    /// Bytes received and verified so far.
    bytes: AtomicU64,
    /// Why it ended badly, if it did.
    error: Mutex<Option<String>>,
}

/// A TCP server in a namespace: on each of its ports, every connection's
/// bytes are checked against the pattern; at the end of the stream it
/// answers with the count (8 bytes, big-endian).
struct Server {
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, ports: &[u16]) -> Server {
        let conns: Arc<Mutex<Vec<Arc<Conn>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (name, conns, stop) = (ns.name().to_owned(), conns.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let bound = enter(&name)
                    .map_err(|e| e.to_string())
                    // [::] takes IPv4 too (as v4-mapped addresses): the
                    // default `net.ipv6.bindv6only = 0`.
                    .and_then(|()| TcpListener::bind(("::", port)).map_err(|e| e.to_string()))
                    .and_then(|l| {
                        l.set_nonblocking(true)
                            .map(|()| l)
                            .map_err(|e| e.to_string())
                    });
                let listener = match bound {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Relaxed: a stop flag, polled.
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let conn = Arc::new(Conn {
                                port,
                                bytes: AtomicU64::new(0),
                                error: Mutex::new(None),
                            });
                            conns.lock().unwrap().push(conn.clone());
                            let stop = stop.clone();
                            std::thread::spawn(move || serve(s, &conn, &stop));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("accepting on port {port}: {e}"),
                    }
                }
            }));
            ready_rx
                .recv_timeout(WAIT)
                .expect("server thread")
                .unwrap_or_else(|e| panic!("listening on port {port}: {e}"));
        }
        Server {
            conns,
            stop,
            threads,
        }
    }

    /// The connections accepted on `port` so far, oldest first.
    fn conns(&self, port: u16) -> Vec<Arc<Conn>> {
        let conns = self.conns.lock().unwrap();
        conns.iter().filter(|c| c.port == port).cloned().collect()
    }

    /// Every connection that ended badly.
    fn errors(&self) -> Vec<String> {
        let conns = self.conns.lock().unwrap();
        conns
            .iter()
            .filter_map(|c| c.error.lock().unwrap().clone())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads `s` to its end, checking the pattern, and answers with the count.
fn serve(mut s: TcpStream, conn: &Conn, stop: &AtomicBool) {
    let fail = |e: String| *conn.error.lock().unwrap() = Some(e);
    if let Err(e) = s
        .set_nonblocking(false)
        .and_then(|()| s.set_read_timeout(Some(Duration::from_millis(100))))
    {
        return fail(e.to_string());
    }
    let (mut buf, mut want) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                if let Err(e) = s.write_all(&got.to_be_bytes()) {
                    fail(format!("answering: {e}"));
                }
                return;
            }
            Ok(n) => {
                pattern_fill(SEED, got, &mut want[..n]);
                if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
                    return fail(format!(
                        "port {}: byte {} differs",
                        conn.port,
                        got + i as u64
                    ));
                }
                got += n as u64;
                // Relaxed: a count read by the test, no data behind it.
                conn.bytes.store(got, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(e) => return fail(format!("port {}: receiving: {e}", conn.port)),
        }
    }
}

/// Runs `f` on a thread of its own inside namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let name = ns.name().to_owned();
    std::thread::spawn(move || {
        enter(&name).map_err(|e| e.to_string())?;
        f()
    })
    .join()
    .map_err(|_| "client thread panicked".to_owned())?
}

/// Sends `len` bytes of the pattern from `ns` to `to` and checks that the
/// server counted them all.
fn transfer(ns: &Netns, to: SocketAddr, len: u64) -> Result<(), String> {
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .map_err(|e| format!("connecting to {to}: {e}"))?;
        s.set_write_timeout(Some(WAIT))
            .and_then(|()| s.set_read_timeout(Some(WAIT)))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 16];
        let mut sent = 0u64;
        while sent < len {
            let n = (len - sent).min(buf.len() as u64) as usize;
            pattern_fill(SEED, sent, &mut buf[..n]);
            s.write_all(&buf[..n])
                .map_err(|e| format!("sending to {to}: {e}"))?;
            sent += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let mut answer = [0u8; 8];
        s.read_exact(&mut answer)
            .map_err(|e| format!("reading {to}'s count: {e}"))?;
        match u64::from_be_bytes(answer) {
            n if n == len => Ok(()),
            n => Err(format!("{to} verified {n} of {len} bytes")),
        }
    })
}

/// Whether a TCP connection from `ns` to `to` opens within [`REFUSED`].
fn connects(ns: &Netns, to: SocketAddr) -> bool {
    in_ns(ns, move || {
        Ok(TcpStream::connect_timeout(&to, REFUSED).is_ok())
    })
    .unwrap()
}

/// A transfer that runs until stopped.
struct Stream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Stream {
    fn start(ns: &Netns, to: SocketAddr) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let (name, flag) = (ns.name().to_owned(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<(), String> {
            enter(&name).map_err(|e| e.to_string())?;
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .map_err(|e| format!("connecting to {to}: {e}"))?;
            // Short, so that a stuck stream still sees the stop flag.
            s.set_write_timeout(Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 1 << 16];
            let mut sent = 0u64;
            // Relaxed: a stop flag, polled.
            while !flag.load(Ordering::Relaxed) {
                pattern_fill(SEED, sent, &mut buf);
                match s.write(&buf) {
                    Ok(n) => sent += n as u64,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(format!("sending to {to}: {e}")),
                }
            }
            Ok(())
        });
        Stream {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sending and closes the connection.
    fn finish(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .map_err(|_| "stream thread panicked".to_owned())?
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A namespace of the test with both addresses.
fn host(tag: &str, name: &str, ip4: Ipv4Addr, ip6: &str) -> VethHost {
    let h = VethHost::create(
        &format!("{tag}-{name}"),
        &format!("{tag}{name}"),
        &ip4.to_string(),
    )
    .unwrap();
    // No duplicate address detection: the address is usable at once.
    h.ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{ip6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])
    .unwrap();
    h
}

/// Forgets every neighbour in `ns`: its next packets resolve their peer
/// again (ARP, neighbour discovery) through the switch.
fn flush_neighbours(ns: &Netns) {
    ns.exec(&["ip", "neigh", "flush", "dev", "eth0"]).unwrap();
    ns.exec(&["ip", "-6", "neigh", "flush", "dev", "eth0"])
        .unwrap();
}

/// Frames port `name` dropped as `acl-deny` (counted on the port they came
/// in on, whichever of its ACLs refused them).
fn acl_denied(d: &Daemon, name: &str) -> u64 {
    d.port_json(name)["stats"]["drops"]["acl-deny"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until `done` holds; false if it did not within [`WAIT`].
fn wait(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Bytes waiting in the receive queue of `ns`'s established connection on
/// local port `port` (`ss`'s Recv-Q), if there is one.
fn receive_queue(ns: &Netns, port: u16) -> Option<u64> {
    let out = ns
        .exec(&[
            "ss",
            "-tnH",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .ok()?;
    out.split_whitespace().next()?.parse().ok()
}

/// An IPv4 TCP segment from `src` to port `dport` of [`SERVER4`], received.
fn tcp_to(f: &Captured, src: Mac, dport: u16) -> bool {
    let v = f.view();
    let Some(ip) = v.payload() else { return false };
    if f.outgoing || v.src() != Some(src) || v.ethertype() != Some(frame::ETHERTYPE_IPV4) {
        return false;
    }
    let ihl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
    ip.len() >= ihl + 4
        && ip[9] == 6
        && ip[16..20] == SERVER4.octets()
        && u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]) == dport
}

/// Every way of reaching the server that `web` (TCP to port 80 only) must
/// refuse, tried at once from the client: TCP to 8080 and 22 over both IP
/// versions, and pings. Each fails, and `acl-deny` on `counted_on` grows by
/// at least one per attempt.
fn only_port_80_gets_through(d: &Daemon, client: &Netns, counted_on: &str) {
    let before = acl_denied(d, counted_on);
    let refused: Vec<(String, bool)> = std::thread::scope(|s| {
        let tcp: Vec<_> = [v4(8080), v6(8080), v4(22), v6(22)]
            .into_iter()
            .map(|to| s.spawn(move || (to.to_string(), connects(client, to))))
            .collect();
        let pings: Vec<_> = [SERVER4.to_string(), SERVER6.to_owned()]
            .into_iter()
            .map(|ip| {
                s.spawn(move || {
                    let r = ping_within(client, &ip, 1, "0.2", 1);
                    (format!("ping {ip}"), r.is_ok())
                })
            })
            .collect();
        tcp.into_iter()
            .chain(pings)
            .map(|t| t.join().unwrap())
            .collect()
    });
    let through: Vec<&String> = refused.iter().filter(|r| r.1).map(|r| &r.0).collect();
    assert!(
        through.is_empty(),
        "got through the ACL: {through:?}\n{}",
        d.log()
    );
    let counted = wait(|| acl_denied(d, counted_on) >= before + refused.len() as u64);
    assert!(
        counted,
        "acl-deny on {counted_on}: {} before, {} after {} refused attempts",
        before,
        acl_denied(d, counted_on),
        refused.len()
    );
    // Port 80 over both versions, with the neighbours to find again.
    for to in [v4(80), v6(80)] {
        transfer(client, to, TRANSFER_BYTES)
            .unwrap_or_else(|e| panic!("TCP to {to} through the ACL: {e}\n{}", d.log()));
    }
}

#[test]
fn security_groups_filter_tcp_ports_and_pings_and_change_under_traffic() {
    require_root_and_ip().expect("the end-to-end test needs root and iproute2");
    let start = Instant::now();
    let tag = format!("wa{}", std::process::id() % 100_000);
    let client = host(&tag, "c", CLIENT4, CLIENT6);
    let server = host(&tag, "s", SERVER4, SERVER6);
    let client_mac = Mac::parse(&client.mac().unwrap()).unwrap();
    let srv = Server::start(&server.ns, &PORTS);

    // `web` comes from the configuration; the ports start without ACLs.
    let mut config = kernel_config("", &[]);
    config += &kernel_port("client", "afpacket", &client.host_if, "");
    config += &kernel_port("server", "afpacket", &server.host_if, "");
    let web = "default = \"deny\"\n\n[[rule]]\ndirection = \"in\"\nprotocol = \"tcp\"\n\
               dst_ports = 80\naction = \"allow\"\n";
    config += &format!(
        "\n[[acl]]\nname = \"web\"\n{}",
        web.replace("[[rule]]", "[[acl.rule]]")
    );
    let dir = std::env::temp_dir().join(format!("weir-acl-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Daemon::start(&dir, &config);
    d.wait_up(&["client", "server"]);
    let web_file = dir.join("web.toml");
    std::fs::write(&web_file, web).unwrap();

    // 1. No ACL: everything the ACLs will refuse works.
    for to in [v4(80), v6(80), v4(8080), v6(22)] {
        transfer(&client.ns, to, TRANSFER_BYTES)
            .unwrap_or_else(|e| panic!("TCP to {to} without ACLs: {e}\n{}", d.log()));
    }
    for ip in [SERVER4.to_string(), SERVER6.to_owned()] {
        let out = ping(&client.ns, &ip, 2, "0.2")
            .unwrap_or_else(|e| panic!("ping {ip} without ACLs: {e}\n{}", d.log()));
        assert_eq!(loss_pct(&out), 0.0, "{out}");
    }
    assert_eq!(acl_denied(&d, "client"), 0);

    // 2. `web` as the client's acl_in.
    d.ok(&["port", "set", "client", "acl_in=web"]);
    flush_neighbours(&client.ns);
    flush_neighbours(&server.ns);
    only_port_80_gets_through(&d, &client.ns, "client");
    let shown = d.json(&["acl", "show", "web"]);
    assert_eq!(shown["acl_in"], serde_json::json!(["client"]), "{shown}");

    // 3. Replaced during a transfer to port 80 by a table without it.
    let cap = Capture::start(&server.ns, "eth0").unwrap();
    let before = srv.conns(80).len();
    let stream = Stream::start(&client.ns, v4(80));
    assert!(
        wait(|| srv
            .conns(80)
            .get(before)
            .is_some_and(|c| c.bytes.load(Ordering::Relaxed) >= 4 * TRANSFER_BYTES)),
        "the transfer to port 80 did not get going\n{}",
        d.log()
    );
    let conn = srv.conns(80)[before].clone();
    d.ok(&[
        "acl",
        "add",
        "web",
        "--default",
        "deny",
        "--rule",
        "in tcp dst_ports=8080 allow",
    ]);
    // Every worker switches with the new table by now: a frame the client
    // sends from here on comes after every segment the old table let
    // through.
    let denied_at_change = acl_denied(&d, "client");
    let marker_ip = Ipv4Addr::new(198, 18, 24, 99);
    RawSocket::open_in(&client.ns, "eth0")
        .unwrap()
        .send(&frame::arp_request(client_mac, CLIENT4, marker_ip))
        .unwrap();
    let is_marker = |f: &Captured| {
        !f.outgoing
            && f.view()
                .arp()
                .is_some_and(|a| a.op == frame::ARP_REQUEST && a.target_ip == marker_ip)
    };
    assert!(
        cap.wait_for(WAIT, is_marker).is_some(),
        "the marker did not reach the server"
    );
    // What came before the marker is in the server's socket; once the
    // server has read it all, the client keeps sending (new segments, then
    // retransmissions, each denied) and the server gets none of it.
    assert!(
        wait(|| receive_queue(&server.ns, 80) == Some(0)),
        "the server did not read what reached it before the change: {}",
        server
            .ns
            .exec(&["ss", "-tn", "state", "established"])
            .unwrap_or_default()
    );
    let stalled_at = conn.bytes.load(Ordering::Relaxed);
    let denied_at_stall = acl_denied(&d, "client");
    assert!(
        wait(|| acl_denied(&d, "client") >= denied_at_stall + 3),
        "the client's segments are not denied: acl-deny {denied_at_change} at the change, \
         {denied_at_stall} when the server stalled, {} now",
        acl_denied(&d, "client")
    );
    assert_eq!(
        conn.bytes.load(Ordering::Relaxed),
        stalled_at,
        "the server received more of the transfer after the change"
    );
    let frames = cap.stop().unwrap();
    let marker_at = frames.iter().position(is_marker).unwrap();
    let late: Vec<&Captured> = frames[marker_at..]
        .iter()
        .filter(|f| tcp_to(f, client_mac, 80))
        .collect();
    assert!(
        late.is_empty(),
        "{} segments to port 80 reached the server after the table denied them: {:?}",
        late.len(),
        late.first()
    );
    assert!(
        frames[..marker_at]
            .iter()
            .any(|f| tcp_to(f, client_mac, 80)),
        "the capture saw none of the transfer before the change"
    );
    eprintln!(
        "transfer stopped at {stalled_at} bytes; {} segments denied after the change",
        acl_denied(&d, "client") - denied_at_change
    );
    // The table back (from a file): a new connection gets through.
    d.ok(&["acl", "add", "web", "--file", web_file.to_str().unwrap()]);
    transfer(&client.ns, v4(80), TRANSFER_BYTES)
        .unwrap_or_else(|e| panic!("TCP to port 80 after restoring the table: {e}\n{}", d.log()));
    stream.finish().unwrap();

    // 4. acl_out on the server's port, client unfiltered.
    d.ok(&["port", "clear", "client", "acl_in"]);
    d.ok(&[
        "acl",
        "add",
        "web-out",
        "--rule",
        "out tcp dst_ports=80 allow",
    ]);
    d.ok(&["port", "set", "server", "acl_out=web-out"]);
    let (ok, _, err) = d.cli(&["acl", "del", "web-out"]);
    assert!(!ok && err.contains("port server (acl_out)"), "{err}");
    flush_neighbours(&client.ns);
    flush_neighbours(&server.ns);
    let server_denied = acl_denied(&d, "server");
    only_port_80_gets_through(&d, &client.ns, "client");
    assert_eq!(
        acl_denied(&d, "server"),
        server_denied,
        "counted on the ingress port"
    );

    let errors = srv.errors();
    assert!(errors.is_empty(), "the server saw bad streams: {errors:?}");
    eprintln!("{:.1} s in all", start.elapsed().as_secs_f64());
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
