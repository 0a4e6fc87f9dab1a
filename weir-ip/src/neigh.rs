//! The neighbour table: what the stack learnt by snooping ARP and ND on the
//! port's segment, plus the next hops the runtime wants kept resolved, with
//! their probe schedule.
//!
//! Layer: control (slow path). Not on the packet path; the stack thread
//! updates it under a mutex, readers take a snapshot.
//!
//! Size is bounded ([`Table::new`]'s capacity): when a new address finds the
//! table full, the oldest eighth of the entries that are not wanted (by last
//! confirmation) goes at once, so a flood of ARP from made-up senders costs
//! an occasional sort, never unbounded memory. Wanted entries are never
//! evicted (the runtime bounds them: one per distinct next hop). Unwanted
//! entries not heard from for [`FORGET_AFTER`] are forgotten.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dataplane::MacAddr;

/// Interval between probes of a wanted next hop that has not answered the
/// last one (or was never resolved).
pub const PROBE_RETRY: Duration = Duration::from_secs(1);
/// Interval between probes of a wanted next hop that answered the last one.
pub const PROBE_CONFIRMED: Duration = Duration::from_secs(30);
/// A neighbour confirmed within this long is `reachable`, after it `stale`.
/// Longer than [`PROBE_CONFIRMED`], so a neighbour that answers every probe
/// never goes stale.
pub const REACHABLE_FOR: Duration = Duration::from_secs(40);
/// A neighbour that is not wanted and was not heard from for this long is
/// forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Unanswered probes after which a next hop without a MAC is `failed`, and
/// after which a known MAC is probed by broadcast instead of unicast (the
/// neighbour may have changed its MAC without telling).
pub const UNICAST_PROBES: u32 = 3;

/// The state of a [`Neighbour`], as `weir neigh show` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighbourState {
    /// MAC known and confirmed within [`REACHABLE_FOR`].
    Reachable,
    /// MAC known, not confirmed lately; still used.
    Stale,
    /// Wanted, no MAC yet, being probed.
    Incomplete,
    /// Wanted, no MAC after [`UNICAST_PROBES`] probes (probing goes on).
    Failed,
}

impl NeighbourState {
    /// The lower-case name: `reachable`, `stale`, `incomplete`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            NeighbourState::Reachable => "reachable",
            NeighbourState::Stale => "stale",
            NeighbourState::Incomplete => "incomplete",
            NeighbourState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for NeighbourState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One neighbour, as [`crate::HostStack::neighbours`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Its address.
    pub ip: IpAddr,
    /// Its MAC, once known.
    pub mac: Option<MacAddr>,
    /// See [`NeighbourState`].
    pub state: NeighbourState,
    /// Whole seconds since it last proved its MAC; `None` if never.
    pub confirmed_secs_ago: Option<u64>,
    /// True for a next hop of an address given to
    /// [`crate::HostStack::set_wanted`].
    pub wanted: bool,
}

/// A wanted address and how it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WantedRoute {
    /// The address given to [`crate::HostStack::set_wanted`].
    pub dst: Ipv4Addr,
    /// The neighbour to resolve for it; `None`: unreachable (off-link and no
    /// IPv4 gateway, or one of weir's own addresses).
    pub next_hop: Option<Ipv4Addr>,
}

/// A probe the stack thread must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub ip: Ipv4Addr,
    /// Unicast to this MAC; broadcast when `None`.
    pub dst_mac: Option<MacAddr>,
}

/// What [`Table::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learnt {
    /// A new entry.
    New,
    /// An existing entry, same MAC.
    Confirmed,
    /// An existing entry whose MAC changed.
    Changed,
    /// The table is full of wanted entries: not stored.
    Refused,
}

#[derive(Debug, Clone)]
struct Entry {
    mac: Option<MacAddr>,
    confirmed: Option<Instant>,
    wanted: bool,
    next_probe: Instant,
    unanswered: u32,
}

impl Entry {
    fn state(&self, now: Instant) -> NeighbourState {
        match (self.mac, self.confirmed) {
            (None, _) if self.unanswered >= UNICAST_PROBES => NeighbourState::Failed,
            (None, _) => NeighbourState::Incomplete,
            (Some(_), Some(t)) if now.saturating_duration_since(t) < REACHABLE_FOR => {
                NeighbourState::Reachable
            }
            (Some(_), _) => NeighbourState::Stale,
        }
    }
}

/// The neighbour table. See the module documentation.
#[derive(Debug)]
pub(crate) struct Table {
    entries: HashMap<IpAddr, Entry>,
    capacity: usize,
    routes: Vec<WantedRoute>,
    /// `on_neighbour` calls owed, made by the stack thread outside the lock.
    events: Vec<(Ipv4Addr, MacAddr)>,
    evicted: u64,
    refused: u64,
}

impl Table {
    /// An empty table holding at most `capacity` unwanted entries (at least 8).
    pub fn new(capacity: usize) -> Table {
        let capacity = capacity.max(8);
        Table {
            entries: HashMap::with_capacity(capacity),
            capacity,
            routes: Vec::new(),
            events: Vec::new(),
            evicted: 0,
            refused: 0,
        }
    }

    /// Makes room for one more entry: drops the oldest eighth of the
    /// unwanted ones. False if every entry is wanted.
    fn make_room(&mut self) -> bool {
        let mut unwanted: Vec<(Option<Instant>, IpAddr)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.wanted)
            .map(|(ip, e)| (e.confirmed, *ip))
            .collect();
        if unwanted.is_empty() {
            return false;
        }
        // `None` (never confirmed) sorts first: those go before any other.
        unwanted.sort_unstable();
        let n = (self.capacity / 8).clamp(1, unwanted.len());
        for (_, ip) in &unwanted[..n] {
            self.entries.remove(ip);
        }
        self.evicted += n as u64;
        true
    }

    /// Records that `ip` is at `mac` (it said so in ARP or ND just now). The
    /// caller has checked that the pair is worth keeping
    /// (`Host::snoopable`).
    pub fn learn(&mut self, ip: IpAddr, mac: MacAddr, now: Instant) -> Learnt {
        if let Some(e) = self.entries.get_mut(&ip) {
            let old = e.mac.replace(mac);
            e.confirmed = Some(now);
            e.unanswered = 0;
            if e.wanted {
                e.next_probe = now + PROBE_CONFIRMED;
                if old != Some(mac) {
                    if let IpAddr::V4(v4) = ip {
                        self.events.push((v4, mac));
                    }
                }
            }
            return match old {
                Some(m) if m == mac => Learnt::Confirmed,
                Some(_) => Learnt::Changed,
                None => Learnt::New,
            };
        }
        if self.entries.len() >= self.capacity && !self.make_room() {
            self.refused += 1;
            return Learnt::Refused;
        }
        self.entries.insert(
            ip,
            Entry {
                mac: Some(mac),
                confirmed: Some(now),
                wanted: false,
                next_probe: now,
                unanswered: 0,
            },
        );
        Learnt::New
    }

    /// Replaces the wanted set. Next hops that were not wanted before are
    /// probed at once; one whose MAC is already known is also reported
    /// (an `on_neighbour` event), so the runtime need not wait for a probe.
    /// Entries that are no longer wanted and have no MAC go.
    pub fn set_wanted(&mut self, routes: Vec<WantedRoute>, now: Instant) {
        let mut hops: Vec<Ipv4Addr> = routes.iter().filter_map(|r| r.next_hop).collect();
        hops.sort_unstable();
        hops.dedup();
        for (ip, e) in self.entries.iter_mut() {
            e.wanted = matches!(ip, IpAddr::V4(v4) if hops.binary_search(v4).is_ok()) && e.wanted;
        }
        self.entries.retain(|_, e| e.wanted || e.mac.is_some());
        for hop in hops {
            let ip = IpAddr::V4(hop);
            if !self.entries.contains_key(&ip) && self.entries.len() >= self.capacity {
                // Wanted entries are bounded by the configuration: if only
                // wanted ones are left, the table grows past its capacity.
                self.make_room();
            }
            let e = self.entries.entry(ip).or_insert(Entry {
                mac: None,
                confirmed: None,
                wanted: false,
                next_probe: now,
                unanswered: 0,
            });
            if !e.wanted {
                e.wanted = true;
                e.next_probe = now;
                if let Some(mac) = e.mac {
                    self.events.push((hop, mac));
                }
            }
        }
        self.routes = routes;
    }

    /// Appends the probes due at `now` to `out` and schedules the next ones.
    pub fn due_probes(&mut self, now: Instant, out: &mut Vec<Probe>) {
        for (ip, e) in self.entries.iter_mut() {
            let IpAddr::V4(v4) = *ip else { continue };
            if !e.wanted || e.next_probe > now {
                continue;
            }
            let dst_mac = e.mac.filter(|_| e.unanswered < UNICAST_PROBES);
            out.push(Probe { ip: v4, dst_mac });
            e.unanswered = e.unanswered.saturating_add(1);
            e.next_probe = now + PROBE_RETRY;
        }
    }

    /// Forgets the unwanted entries not confirmed for [`FORGET_AFTER`].
    pub fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, e| {
            e.wanted
                || e.confirmed
                    .is_some_and(|t| now.saturating_duration_since(t) < FORGET_AFTER)
        });
    }

    /// Moves the owed `on_neighbour` calls to `out`.
    pub fn take_events(&mut self, out: &mut Vec<(Ipv4Addr, MacAddr)>) {
        out.append(&mut self.events);
    }

    /// The MAC of `ip`, if known.
    #[cfg(test)]
    pub fn mac(&self, ip: IpAddr) -> Option<MacAddr> {
        self.entries.get(&ip).and_then(|e| e.mac)
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries evicted to make room, and addresses refused for want of it.
    pub fn evictions(&self) -> (u64, u64) {
        (self.evicted, self.refused)
    }

    /// The wanted addresses and their next hops.
    pub fn routes(&self) -> Vec<WantedRoute> {
        self.routes.clone()
    }

    /// Every entry, sorted by address.
    pub fn snapshot(&self, now: Instant) -> Vec<Neighbour> {
        let mut v: Vec<Neighbour> = self
            .entries
            .iter()
            .map(|(ip, e)| Neighbour {
                ip: *ip,
                mac: e.mac,
                state: e.state(now),
                confirmed_secs_ago: e
                    .confirmed
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                wanted: e.wanted,
            })
            .collect();
        v.sort_by_key(|n| n.ip);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    fn route(dst: &str, hop: Option<&str>) -> WantedRoute {
        WantedRoute {
            dst: dst.parse().unwrap(),
            next_hop: hop.map(|h| h.parse().unwrap()),
        }
    }

    #[test]
    fn a_wanted_hop_is_probed_at_once_then_every_second_until_it_answers() {
        let t0 = Instant::now();
        let mut t = Table::new(16);
        t.set_wanted(vec![route("192.0.2.2", Some("192.0.2.2"))], t0);
        let mut p = Vec::new();
        t.due_probes(t0, &mut p);
        assert_eq!(
            p,
            [Probe {
                ip: "192.0.2.2".parse().unwrap(),
                dst_mac: None
            }]
        );
        p.clear();
        t.due_probes(t0 + Duration::from_millis(500), &mut p);
        assert!(p.is_empty(), "not before a second");
        t.due_probes(t0 + PROBE_RETRY, &mut p);
        t.due_probes(t0 + PROBE_RETRY * 2, &mut p);
        assert_eq!(p.len(), 2);
        let now = t0 + PROBE_RETRY * 2;
        assert_eq!(t.snapshot(now)[0].state, NeighbourState::Failed);
        assert_eq!(t.learn(ip("192.0.2.2"), mac(2), now), Learnt::New);
        let mut ev = Vec::new();
        t.take_events(&mut ev);
        assert_eq!(ev, [("192.0.2.2".parse().unwrap(), mac(2))]);
        let s = t.snapshot(now);
        assert_eq!(s[0].state, NeighbourState::Reachable);
        assert!(s[0].wanted);
        p.clear();
        t.due_probes(now + PROBE_CONFIRMED - Duration::from_millis(1), &mut p);
        assert!(p.is_empty(), "answered: next probe in 30 s");
        t.due_probes(now + PROBE_CONFIRMED, &mut p);
        assert_eq!(
            p[0].dst_mac,
            Some(mac(2)),
            "a resolved hop is probed unicast"
        );
    }

    #[test]
    fn a_silent_resolved_hop_goes_stale_and_is_probed_by_broadcast() {
        let t0 = Instant::now();
        let mut t = Table::new(16);
        t.learn(ip("192.0.2.2"), mac(2), t0);
        t.set_wanted(vec![route("192.0.2.2", Some("192.0.2.2"))], t0);
        let mut ev = Vec::new();
        t.take_events(&mut ev);
        assert_eq!(ev.len(), 1, "already known: reported when wanted");
        let mut p = Vec::new();
        for i in 0..5 {
            t.due_probes(t0 + PROBE_RETRY * i, &mut p);
        }
        let macs: Vec<_> = p.iter().map(|p| p.dst_mac).collect();
        assert_eq!(macs, [Some(mac(2)), Some(mac(2)), Some(mac(2)), None, None]);
        assert_eq!(
            t.snapshot(t0 + REACHABLE_FOR)[0].state,
            NeighbourState::Stale
        );
        assert_eq!(t.mac(ip("192.0.2.2")), Some(mac(2)), "MAC kept while stale");
    }

    #[test]
    fn a_changed_mac_is_reported_only_for_wanted_hops() {
        let t0 = Instant::now();
        let mut t = Table::new(16);
        t.set_wanted(vec![route("198.51.100.9", Some("192.0.2.254"))], t0);
        t.learn(ip("192.0.2.254"), mac(1), t0);
        t.learn(ip("192.0.2.254"), mac(1), t0);
        assert_eq!(t.learn(ip("192.0.2.254"), mac(3), t0), Learnt::Changed);
        t.learn(ip("192.0.2.7"), mac(7), t0);
        t.learn(ip("192.0.2.7"), mac(8), t0);
        let mut ev = Vec::new();
        t.take_events(&mut ev);
        let gw: Ipv4Addr = "192.0.2.254".parse().unwrap();
        assert_eq!(ev, [(gw, mac(1)), (gw, mac(3))]);
    }

    #[test]
    fn unwanting_drops_unresolved_hops_and_keeps_learnt_ones() {
        let t0 = Instant::now();
        let mut t = Table::new(16);
        t.set_wanted(
            vec![
                route("192.0.2.2", Some("192.0.2.2")),
                route("192.0.2.3", Some("192.0.2.3")),
            ],
            t0,
        );
        t.learn(ip("192.0.2.3"), mac(3), t0);
        t.set_wanted(vec![], t0);
        let s = t.snapshot(t0);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].ip, ip("192.0.2.3"));
        assert!(!s[0].wanted);
        let mut p = Vec::new();
        t.due_probes(t0 + PROBE_CONFIRMED * 2, &mut p);
        assert!(p.is_empty(), "unwanted entries are not probed");
    }

    #[test]
    fn a_flood_of_senders_stays_bounded_and_keeps_wanted_hops() {
        let t0 = Instant::now();
        let mut t = Table::new(64);
        t.set_wanted(vec![route("10.0.0.1", Some("10.0.0.1"))], t0);
        for i in 0..10_000u32 {
            let a = Ipv4Addr::from(0x0a01_0000 + i);
            t.learn(a.into(), mac(9), t0 + Duration::from_millis(u64::from(i)));
            assert!(t.len() <= 64);
        }
        assert!(
            t.snapshot(t0).iter().any(|n| n.wanted),
            "the wanted hop survives"
        );
        // The newest senders are the ones kept.
        let last = Ipv4Addr::from(0x0a01_0000 + 9_999);
        assert!(t.mac(last.into()).is_some());
        assert!(t.mac(Ipv4Addr::from(0x0a01_0000).into()).is_none());
        assert!(t.evictions().0 >= 10_000 - 64);
    }

    #[test]
    fn silent_unwanted_neighbours_are_forgotten_wanted_ones_kept() {
        let t0 = Instant::now();
        let mut t = Table::new(16);
        t.learn(ip("192.0.2.7"), mac(7), t0);
        t.learn(ip("192.0.2.8"), mac(8), t0);
        t.set_wanted(vec![route("192.0.2.8", Some("192.0.2.8"))], t0);
        t.learn(ip("192.0.2.9"), mac(9), t0 + Duration::from_secs(60));
        t.expire(t0 + FORGET_AFTER - Duration::from_secs(1));
        assert_eq!(t.len(), 3);
        t.expire(t0 + FORGET_AFTER);
        let left: Vec<_> = t.snapshot(t0).iter().map(|n| n.ip).collect();
        assert_eq!(left, [ip("192.0.2.8"), ip("192.0.2.9")]);
    }

    #[test]
    fn a_table_of_wanted_hops_refuses_snooped_senders() {
        let t0 = Instant::now();
        let mut t = Table::new(8);
        let routes: Vec<_> = (1..=8u32)
            .map(|i| {
                let a = Ipv4Addr::from(0x0a00_0000 + i);
                WantedRoute {
                    dst: a,
                    next_hop: Some(a),
                }
            })
            .collect();
        t.set_wanted(routes, t0);
        assert_eq!(t.learn(ip("10.0.0.99"), mac(1), t0), Learnt::Refused);
        assert_eq!(t.len(), 8);
        assert_eq!(t.evictions().1, 1);
    }
}
