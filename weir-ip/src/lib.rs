//! weir as a host on an underlay port's segment: the slow path that answers
//! ARP, IPv6 neighbour discovery and ping for weir's own addresses, and
//! keeps the next hops of remote tunnel endpoints resolved.
//!
//! Layer: control (a slow-path thread per port with an address); depends on
//! `dataplane` (mbufs, rings, `MacAddr`) and smoltcp. Not on the packet path:
//! workers push the frames meant for weir's addresses (ARP, ICMP, ICMPv6
//! and ND) into a [`Ring`], and a [`HostStack`] thread reads them.
//!
//! ```text
//!  worker (underlay rx)                     HostStack thread
//!  ─ ARP / ICMP / ND for weir ─► Ring<Mbuf> ─► snoop (neighbour table)
//!                                              └► smoltcp Interface::poll
//!                                                   (ARP reply, NA, echo reply)
//!  underlay handoff ring ◄── Link::send ◄─────────┘ + ARP probes of wanted
//!                                                    next hops (1 s / 30 s)
//!  runtime ◄── on_neighbour(next hop, MAC) when a wanted hop resolves or moves
//! ```
//!
//! smoltcp answers ARP requests, neighbour solicitations and echo requests
//! (IPv4 and IPv6) itself; the stack opens no sockets. Next hops are probed
//! with ARP requests this crate builds rather than with echo requests through
//! a smoltcp ICMP socket: smoltcp refreshes its own neighbour cache only when
//! an entry expires (60 s) and never from unsolicited ARP, so reachability
//! would hang on the neighbour answering pings (routers often do not). Our
//! own ARP probes are answered by any IPv4 host, go unicast to a known MAC
//! (as Linux confirms a neighbour) and broadcast otherwise.
//!
//! Latency: the thread drains up to [`BURST`] frames per round and sleeps
//! [`IDLE_SLEEP`] (1 ms) when the ring was empty, so a request waits up to
//! about 1.1 ms (the sleep plus timer slack) before smoltcp sees it; a ping
//! of weir's address shows that as RTT. The cost is about a thousand
//! wake-ups a second per port with an address, on a non-worker CPU.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod device;
mod neigh;
mod snoop;
mod stack;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::ring::Ring;
use dataplane::{MacAddr, Mbuf};

pub use config::{link_local, ConfigError, HostConfig, DEFAULT_MTU, MAX_ADDRS};
pub use neigh::{
    Neighbour, NeighbourState, WantedRoute, FORGET_AFTER, PROBE_CONFIRMED, PROBE_RETRY,
    REACHABLE_FOR, UNICAST_PROBES,
};

/// Frames taken from the host ring per round.
pub const BURST: usize = 32;
/// Sleep of the stack thread after a round that found the ring empty.
pub const IDLE_SLEEP: Duration = Duration::from_millis(1);
/// Most neighbour entries kept (wanted next hops may take the table past it).
pub const NEIGHBOUR_CAPACITY: usize = 1024;

/// How the stack sends a frame: the runtime's implementation allocates an
/// mbuf, copies the frame and hands it to the port (its handoff ring).
pub trait Link: Send + 'static {
    /// Sends one Ethernet frame (no FCS). False if it could not (no buffer,
    /// ring full, port gone): the stack counts it as `tx_failed`.
    fn send(&self, frame: &[u8]) -> bool;
}

impl<F: Fn(&[u8]) -> bool + Send + 'static> Link for F {
    fn send(&self, frame: &[u8]) -> bool {
        self(frame)
    }
}

/// Called on the stack thread when a wanted next hop's MAC is first learnt
/// (or already known when it becomes wanted) or changes. It runs between
/// two rounds of the stack: it should publish and return (the stack answers
/// nothing while it runs). Dropping the [`HostStack`] joins the thread, so
/// the hook must not wait for a lock held by whoever drops it.
pub type NeighbourHook = Box<dyn Fn(Ipv4Addr, MacAddr) + Send>;

/// Why [`HostStack::spawn`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The thread could not be started.
    #[error("port {port}: starting the host stack thread")]
    Spawn {
        /// Port name.
        port: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The stack's counters, as read by [`HostStack::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounters {
    /// Frames taken from the host ring.
    pub rx_frames: u64,
    /// Received frames dropped because their headers did not parse
    /// (truncated, bad IPv4 checksum, bad ICMPv6 checksum on ND...).
    pub rx_malformed: u64,
    /// Received frames of a protocol the stack does not speak.
    pub rx_ignored: u64,
    /// Frames the link took.
    pub tx_frames: u64,
    /// Frames the link refused.
    pub tx_failed: u64,
    /// ARP replies sent.
    pub arp_requests_answered: u64,
    /// ICMP and ICMPv6 echo replies sent.
    pub echo_requests_answered: u64,
    /// Neighbour advertisements sent.
    pub neighbour_solicits_answered: u64,
    /// ARP requests sent to resolve or confirm wanted next hops.
    pub arp_probes_sent: u64,
    /// `on_neighbour` calls made.
    pub neighbour_updates: u64,
    /// Neighbour entries evicted to make room.
    pub neighbours_evicted: u64,
    /// Snooped neighbours not stored: the table was full of wanted hops.
    pub neighbours_refused: u64,
    /// ARP or ND from another MAC claiming one of weir's addresses (a
    /// duplicate address on the segment, or spoofing).
    pub address_conflicts: u64,
}

/// The live counters: one writer (the stack thread), any readers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    rx_frames: AtomicU64,
    rx_malformed: AtomicU64,
    rx_ignored: AtomicU64,
    tx_frames: AtomicU64,
    tx_failed: AtomicU64,
    arp_requests_answered: AtomicU64,
    echo_requests_answered: AtomicU64,
    neighbour_solicits_answered: AtomicU64,
    arp_probes_sent: AtomicU64,
    neighbour_updates: AtomicU64,
    neighbours_evicted: AtomicU64,
    neighbours_refused: AtomicU64,
    address_conflicts: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> HostCounters {
        // Relaxed: each counter is an independent statistic.
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HostCounters {
            rx_frames: r(&self.rx_frames),
            rx_malformed: r(&self.rx_malformed),
            rx_ignored: r(&self.rx_ignored),
            tx_frames: r(&self.tx_frames),
            tx_failed: r(&self.tx_failed),
            arp_requests_answered: r(&self.arp_requests_answered),
            echo_requests_answered: r(&self.echo_requests_answered),
            neighbour_solicits_answered: r(&self.neighbour_solicits_answered),
            arp_probes_sent: r(&self.arp_probes_sent),
            neighbour_updates: r(&self.neighbour_updates),
            neighbours_evicted: r(&self.neighbours_evicted),
            neighbours_refused: r(&self.neighbours_refused),
            address_conflicts: r(&self.address_conflicts),
        }
    }
}

/// State shared by the handle and the thread.
pub(crate) struct Shared {
    stop: AtomicBool,
    counters: Counters,
    table: Mutex<neigh::Table>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, neigh::Table> {
        // A panic on the stack thread leaves a table that is still
        // consistent (every update is a few field writes): keep serving it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// weir's host presence on one port: owns the thread that runs smoltcp over
/// the port's host ring. Dropping it stops and joins the thread.
pub struct HostStack {
    host: config::Host,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HostStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostStack")
            .field("port", &self.host.port)
            .field("mac", &self.host.mac)
            .finish_non_exhaustive()
    }
}

impl HostStack {
    /// Starts the host stack of `cfg.port`: a thread that reads `rx` (the
    /// frames workers send to weir's addresses), answers through `link`, and
    /// calls `on_neighbour` when a wanted next hop resolves or moves.
    ///
    /// # Errors
    /// [`HostError::Config`] if `cfg` is refused ([`HostConfig::check`]),
    /// [`HostError::Spawn`] if the thread cannot start.
    pub fn spawn(
        cfg: HostConfig,
        rx: Arc<Ring<Mbuf>>,
        link: Box<dyn Link>,
        on_neighbour: NeighbourHook,
    ) -> Result<HostStack, HostError> {
        let host = cfg.checked()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            table: Mutex::new(neigh::Table::new(NEIGHBOUR_CAPACITY)),
        });
        let runner = stack::Runner::new(host.clone(), Arc::clone(&shared), rx, link, on_neighbour);
        // Thread names are cut at 15 bytes by the kernel; no NUL allowed.
        let name: String = format!("ip-{}", host.port)
            .chars()
            .filter(|&c| c != '\0')
            .collect();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || runner.run())
            .map_err(|source| HostError::Spawn {
                port: host.port.clone(),
                source,
            })?;
        Ok(HostStack {
            host,
            shared,
            thread: Some(thread),
        })
    }

    /// Sets the addresses whose next hops must stay resolved (the remote
    /// tunnel endpoints), replacing the previous set. New next hops are
    /// probed within a few milliseconds; an address with no next hop
    /// ([`HostStack::next_hop`] is `None`) is listed as unreachable by
    /// [`HostStack::wanted`].
    pub fn set_wanted(&self, ips: Vec<Ipv4Addr>) {
        let routes: Vec<WantedRoute> = ips
            .into_iter()
            .map(|dst| WantedRoute {
                dst,
                next_hop: self.host.next_hop(dst),
            })
            .collect();
        for r in routes.iter().filter(|r| r.next_hop.is_none()) {
            tracing::warn!(port = %self.host.port, dst = %r.dst, "no next hop: unreachable");
        }
        self.shared.table().set_wanted(routes, Instant::now());
    }

    /// The neighbour to resolve to reach `ip`: `ip` itself inside one of the
    /// port's IPv4 subnets, else the IPv4 gateway; `None` without a gateway
    /// and for weir's own, broadcast and multicast addresses.
    pub fn next_hop(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.host.next_hop(ip)
    }

    /// The wanted addresses (last [`HostStack::set_wanted`]) with their next
    /// hops; `None` marks an unreachable one.
    pub fn wanted(&self) -> Vec<WantedRoute> {
        self.shared.table().routes()
    }

    /// The neighbour table, sorted by address: senders seen in ARP and ND
    /// inside the port's subnets, and the wanted next hops.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        self.shared.table().snapshot(Instant::now())
    }

    /// weir's addresses on this port with their prefix lengths, IPv4 first,
    /// including the IPv6 link-local address weir adds ([`HostConfig::addrs`]).
    pub fn addresses(&self) -> Vec<(IpAddr, u8)> {
        self.host.addresses()
    }

    /// The host MAC.
    pub fn mac(&self) -> MacAddr {
        self.host.mac
    }

    /// The port's name.
    pub fn port(&self) -> &str {
        &self.host.port
    }

    /// The counters so far.
    pub fn counters(&self) -> HostCounters {
        self.shared.counters.snapshot()
    }

    /// False once the thread has ended (it only does when stopped, or if it
    /// panicked: a bug).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for HostStack {
    fn drop(&mut self) {
        // Release: pairs with the thread's Acquire load; nothing else rides on it.
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(port = %self.host.port, "host stack thread panicked");
            }
        }
    }
}
