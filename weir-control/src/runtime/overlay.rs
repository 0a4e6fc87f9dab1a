//! Overlays on the control side: weir's own addresses on a port (a host
//! stack thread per port with an `ip`) and tunnel ports (their shared state,
//! outer headers rebuilt when a neighbour changes). See docs/overlay.md.
//!
//! Control path only: the workers see a [`HostPort`] per underlay port in
//! the switch tables and a [`TunnelShared`] per tunnel, both published
//! whole.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};

use dataplane::ring::Ring;
use dataplane::switch::{PortEntry, Switch};
use dataplane::tunnel::{HostPort, Remote, TunnelShared, TunnelState, Vnis, HOST_RX_RING};
use dataplane::wire::ethernet;
use dataplane::wire::tunnel::{OuterHeader, MTU_OVERHEAD, OUTER_LEN};
use dataplane::{Burst, MacAddr, Mbuf, Mempool, PortId};
use weir_api::{HostIpView, NeighView, TunnelRemoteView, TunnelView};
use weir_config::{HostIp, PortConfig, PortKind, TunnelConfig, VniMap};

use super::{ControlError, Dataplane, State};

/// MTU assumed for an underlay whose interface MTU cannot be read.
const DEFAULT_MTU: usize = 1500;

/// A port with an `ip`: its host stack and the tunnels over it.
pub(super) struct Underlay {
    id: PortId,
    bridged: bool,
    host: HostIp,
    to_host: Arc<Ring<Mbuf>>,
    stack: weir_ip::HostStack,
    shared: Arc<Mutex<UnderlayShared>>,
}

/// What the host stack's neighbour callback and the control requests share.
struct UnderlayShared {
    mac: MacAddr,
    /// Each tunnel remote's next hop, as the host stack works it out
    /// (None: unreachable); refreshed with the wanted set.
    routes: HashMap<Ipv4Addr, Option<Ipv4Addr>>,
    /// The underlay's entry, once published.
    entry: Option<Arc<PortEntry>>,
    /// The underlay's IP MTU.
    mtu: usize,
    /// Tunnels over the port, by name.
    tunnels: BTreeMap<String, Arc<TunnelShared>>,
    /// Next hop → MAC, as the host stack resolved them.
    neighbours: HashMap<Ipv4Addr, MacAddr>,
}

impl UnderlayShared {
    /// The next hop towards tunnel remote `ip` (see `routes`).
    fn next_hop(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.routes.get(&ip).copied().flatten()
    }

    /// Rebuilds every tunnel's outer headers and publishes them.
    fn republish(&self) {
        for t in self.tunnels.values() {
            self.publish_tunnel(t);
        }
    }

    fn publish_tunnel(&self, t: &TunnelShared) {
        let remotes = t
            .remote_slots()
            .iter()
            .map(|&slot| {
                let Some(ip) = slot else {
                    return Remote {
                        ip: Ipv4Addr::UNSPECIFIED,
                        header: None,
                    };
                };
                Remote {
                    ip,
                    header: self
                        .next_hop(ip)
                        .and_then(|nh| self.neighbours.get(&nh))
                        .map(|&dst| {
                            OuterHeader::new(t.kind, self.mac, dst, t.local_ip, ip, t.dst_port)
                        }),
                }
            })
            .collect();
        t.publish(TunnelState::new(
            self.entry.clone(),
            remotes,
            self.mtu.saturating_sub(MTU_OVERHEAD),
        ));
    }

    /// The remote endpoints whose next hops the host stack must resolve.
    fn wanted(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .tunnels
            .values()
            .flat_map(|t| t.remote_slots().into_iter().flatten())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// How the host stack sends: a frame copied into a new buffer and handed to
/// the port's handoff ring (drained by the worker that owns the port).
struct PortLink {
    switch: Arc<Switch>,
    id: PortId,
    pool: &'static Mempool,
}

impl weir_ip::Link for PortLink {
    fn send(&self, frame: &[u8]) -> bool {
        let t = self.switch.load();
        let Some(entry) = t.port(self.id) else {
            return false;
        };
        let Some(mut m) = self.pool.alloc() else {
            return false;
        };
        if m.extend_from_slice(frame).is_err() {
            return false;
        }
        m.set_port(self.id.0);
        let mut b = Burst::new();
        b.push(m);
        entry.hand_off(&mut b) == 1
    }
}

/// A stable locally administered MAC for weir's address on a port that
/// has neither a `mac` nor an interface of its own to take one from: a
/// hash of the port's name and its first address, so that hosts naming
/// their uplinks alike still differ on the segment.
pub(super) fn derived_mac(name: &str, host: &HostIp) -> MacAddr {
    // FNV-1a: stable across restarts and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let first = host
        .addrs
        .first()
        .map(|a| a.addr.to_string())
        .unwrap_or_default();
    for b in name.bytes().chain([0]).chain(first.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // Locally administered (bit 1), unicast (bit 0 clear).
    MacAddr([0x02 | (b[0] & 0xfc), b[1], b[2], b[3], b[4], b[5]])
}

impl Dataplane {
    /// weir's MAC on a port with an `ip`: its `mac`; else the MAC of the
    /// interface an afpacket or afxdp port attaches to (weir speaks for the
    /// interface, as a DPDK application does for its NIC); else one derived
    /// from the port ([`derived_mac`]).
    fn host_mac(&self, port: &PortConfig, host: &HostIp) -> MacAddr {
        if let Some(m) = port.settings.mac {
            return m;
        }
        if let PortKind::AfPacket { iface } | PortKind::AfXdp { iface } = &port.kind {
            let path = self
                .host
                .sysfs
                .join("class/net")
                .join(iface)
                .join("address");
            if let Some(m) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<MacAddr>().ok())
                .filter(|m| m.is_unicast() && *m != MacAddr([0; 6]))
            {
                return m;
            }
        }
        derived_mac(&port.name, host)
    }

    /// The IP MTU of the interface a port attaches to, or 1500.
    fn port_mtu(&self, port: &PortConfig) -> usize {
        let iface = match &port.kind {
            PortKind::AfPacket { iface } | PortKind::AfXdp { iface } | PortKind::Tap { iface } => {
                iface
            }
            _ => return DEFAULT_MTU,
        };
        std::fs::read_to_string(self.host.sysfs.join("class/net").join(iface).join("mtu"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_MTU)
    }

    /// Starts weir's host presence on a new port with an `ip` (before the
    /// port is published): the ring the workers fill and the host stack
    /// thread. Returns what the port's publication carries.
    pub(super) fn start_underlay(
        &self,
        id: PortId,
        port: &PortConfig,
    ) -> Result<Option<(Underlay, Arc<HostPort>)>, ControlError> {
        let Some(host) = &port.host else {
            return Ok(None);
        };
        let mac = self.host_mac(port, host);
        let mtu = self.port_mtu(port);
        let to_host = Arc::new(Ring::new(HOST_RX_RING));
        let shared = Arc::new(Mutex::new(UnderlayShared {
            mac,
            routes: HashMap::new(),
            entry: None,
            mtu,
            tunnels: BTreeMap::new(),
            neighbours: HashMap::new(),
        }));
        let on_neighbour = {
            let shared = Arc::clone(&shared);
            Box::new(move |ip: Ipv4Addr, neigh: MacAddr| {
                let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
                if s.neighbours.insert(ip, neigh) != Some(neigh) {
                    s.republish();
                }
            })
        };
        let cfg = weir_ip::HostConfig {
            port: port.name.clone(),
            mac,
            addrs: host.addrs.iter().map(|a| (a.addr, a.prefix)).collect(),
            gateway4: host.gateway4,
            gateway6: host.gateway6,
            mtu,
        };
        let link = PortLink {
            switch: Arc::clone(&self.switch),
            id,
            pool: self.pool,
        };
        let stack =
            weir_ip::HostStack::spawn(cfg, Arc::clone(&to_host), Box::new(link), on_neighbour)
                .map_err(|source| ControlError::HostStack {
                    port: port.name.clone(),
                    source,
                })?;
        let underlay = Underlay {
            id,
            bridged: port.bridge.is_some(),
            host: host.clone(),
            to_host,
            stack,
            shared,
        };
        let published = underlay.host_port();
        Ok(Some((underlay, published)))
    }

    /// After the underlay's port is published: gives its tunnels the entry.
    pub(super) fn underlay_published(&self, u: &Underlay) {
        let entry = self.switch.load().port(u.id).cloned();
        let mut s = u.shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.entry = entry;
        s.republish();
    }

    /// Checks a new tunnel port against its underlay and builds its shared
    /// state (not yet registered with the underlay).
    pub(super) fn new_tunnel(
        &self,
        st: &State,
        id: PortId,
        port: &PortConfig,
        t: &TunnelConfig,
    ) -> Result<Arc<TunnelShared>, ControlError> {
        let bad = |reason: String| ControlError::Tunnel {
            port: port.name.clone(),
            reason,
        };
        let u = st.underlays.get(&t.underlay).ok_or_else(|| {
            if st.ports.contains_key(&t.underlay) {
                bad(format!(
                    "underlay {} has no `ip`: give it weir's address on the underlay network",
                    t.underlay
                ))
            } else {
                bad(format!("no port named {} (the underlay)", t.underlay))
            }
        })?;
        if !u.host.has(IpAddr::V4(t.local_ip)) {
            let have: Vec<String> = u.host.v4().map(|a| a.to_string()).collect();
            return Err(bad(format!(
                "local_ip {} is not one of {}'s addresses ({})",
                t.local_ip,
                t.underlay,
                have.join(", ")
            )));
        }
        for other in st.tunnels.values() {
            let o = &other.shared;
            let clash = other.underlay == t.underlay
                && o.dst_port == t.dst_port
                && o.local_ip == t.local_ip
                && t.vni.vnis().iter().any(|v| other.vnis.contains(v));
            if clash {
                return Err(bad(format!(
                    "tunnel {} already carries one of these VNIs at {}:{}",
                    o.name, t.local_ip, t.dst_port
                )));
            }
        }
        let vnis = match &t.vni {
            VniMap::Single(v) => Vnis::Single(*v),
            VniMap::ByVlan(m) => Vnis::ByVlan(m.clone()),
        };
        Ok(TunnelShared::new(
            &port.name,
            id,
            t.kind,
            t.dst_port,
            t.local_ip,
            t.remote_ips.clone(),
            vnis,
            &self.fdb_cfg,
        ))
    }

    /// Registers a published tunnel port with its underlay: the workers
    /// start decapsulating for it, its outer headers are built, and the host
    /// stack resolves its remotes.
    pub(super) fn tunnel_published(
        &self,
        st: &mut State,
        name: &str,
        t: &TunnelConfig,
        shared: Arc<TunnelShared>,
    ) {
        let Some(u) = st.underlays.get(&t.underlay) else {
            return;
        };
        {
            let mut s = u.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.tunnels.insert(name.to_owned(), Arc::clone(&shared));
            u.want(&mut s);
            s.publish_tunnel(&shared);
        }
        let hp = u.host_port();
        let id = u.id;
        self.switch.update(|tables| tables.set_host(id, Some(hp)));
        st.tunnels.insert(
            name.to_owned(),
            TunnelRecord {
                underlay: t.underlay.clone(),
                vnis: t.vni.vnis(),
                shared,
            },
        );
    }

    /// Checks `port set NAME remote_ips=...` for port `name`: the new flood
    /// list, which [`Dataplane::tunnel_remotes_set`] then puts in place.
    /// Nothing changes here.
    ///
    /// # Errors
    /// Not a tunnel, a list a tunnel cannot have, or a static FDB entry
    /// behind a remote the list leaves out.
    pub(super) fn tunnel_remotes_check(
        st: &State,
        name: &str,
        value: &str,
    ) -> Result<Vec<Ipv4Addr>, ControlError> {
        let rec = st
            .ports
            .get(name)
            .ok_or_else(|| ControlError::NoSuchPort { name: name.into() })?;
        let invalid = |source| ControlError::InvalidPort {
            port: name.into(),
            source,
        };
        let ips = weir_config::parse_remote_ips(value).map_err(invalid)?;
        rec.port.with_remote_ips(&ips).map_err(invalid)?;
        let pinned: Vec<String> = st
            .statics
            .values()
            .filter(|e| e.port == name && e.remote.is_some_and(|r| !ips.contains(&r)))
            .map(|e| {
                format!(
                    "{} behind {}",
                    e.mac,
                    e.remote.unwrap_or(Ipv4Addr::UNSPECIFIED)
                )
            })
            .collect();
        if !pinned.is_empty() {
            return Err(ControlError::Tunnel {
                port: name.into(),
                reason: format!(
                    "static FDB entries are behind remotes the new list leaves out ({}): \
                     delete them first (weir fdb del)",
                    pinned.join(", ")
                ),
            });
        }
        Ok(ips)
    }

    /// Gives tunnel port `name` the flood list `ips` (from
    /// [`Dataplane::tunnel_remotes_check`]) while it runs: a remote that
    /// stays keeps its slot, its outer headers and the stations learned
    /// behind it; a new one is resolved and flooded to; the stations behind
    /// one that goes are forgotten once no worker decapsulates from it. The
    /// port's other keys and settings stay as they are now.
    pub(super) fn tunnel_remotes_set(&self, st: &mut State, name: &str, ips: &[Ipv4Addr]) {
        // `tunnel_remotes_check` took the list as a config file's.
        let port = match st.ports.get(name).map(|r| r.port.with_remote_ips(ips)) {
            Some(Ok(port)) => port,
            Some(Err(e)) => {
                tracing::error!(port = name, "tunnel remotes not changed: {e}");
                return;
            }
            None => return,
        };
        let PortKind::Tunnel(t) = &port.kind else {
            return;
        };
        let Some(shared) = st.tunnels.get(&port.name).map(|r| Arc::clone(&r.shared)) else {
            return;
        };
        let gone = match shared.set_remotes(&t.remote_ips) {
            Ok(gone) => gone,
            Err(e) => {
                tracing::error!(port = %port.name, "tunnel remotes not changed: {e}");
                return;
            }
        };
        if let Some(u) = st.underlays.get(&t.underlay) {
            let mut s = u.shared.lock().unwrap_or_else(PoisonError::into_inner);
            u.want(&mut s);
            s.publish_tunnel(&shared);
        }
        if !gone.is_empty() {
            // Decapsulation reads the slots in place: once every worker has
            // started a round on tables published after the change, none
            // learns behind a slot gone, and the slots' stations go.
            let generation = self.switch.update(|_| {});
            self.wait_workers(generation);
            for slot in &gone {
                shared.fdb.flush_port(PortId(*slot as u16));
            }
        }
        tracing::info!(port = %port.name, remotes = ?t.remote_ips, "tunnel remotes changed");
        if let Some(rec) = st.ports.get_mut(&port.name) {
            rec.port = port;
        }
    }

    /// Takes a tunnel port being deleted off its underlay.
    pub(super) fn tunnel_removed(&self, st: &mut State, name: &str) {
        let Some(rec) = st.tunnels.remove(name) else {
            return;
        };
        let Some(u) = st.underlays.get(&rec.underlay) else {
            return;
        };
        {
            let mut s = u.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.tunnels.remove(name);
            u.want(&mut s);
        }
        let hp = u.host_port();
        let id = u.id;
        self.switch.update(|tables| tables.set_host(id, Some(hp)));
    }

    /// The MTU a guest on `bridge` may have for its frames to cross every
    /// tunnel port of the bridge: the least of their underlays' IP MTUs less
    /// the outer headers ([`OUTER_LEN`]). None if the bridge has no tunnel.
    pub(super) fn tunnel_guest_mtu(st: &State, bridge: &str) -> Option<u16> {
        st.tunnels
            .iter()
            .filter(|(name, _)| {
                st.ports
                    .get(*name)
                    .is_some_and(|p| p.port.bridge.as_deref() == Some(bridge))
            })
            .filter_map(|(_, r)| st.underlays.get(&r.underlay))
            .map(|u| {
                let mtu = u.shared.lock().unwrap_or_else(PoisonError::into_inner).mtu;
                mtu.saturating_sub(OUTER_LEN).min(usize::from(u16::MAX)) as u16
            })
            .min()
    }

    /// The tunnels over underlay `name`, which must go before it.
    pub(super) fn tunnels_over(st: &State, name: &str) -> Vec<String> {
        st.tunnels
            .iter()
            .filter(|(_, r)| r.underlay == name)
            .map(|(n, _)| format!("tunnel {n}"))
            .collect()
    }

    /// `weir ip show`: weir's addresses on each port.
    pub fn ip_show(&self) -> Vec<HostIpView> {
        let st = self.lock();
        st.underlays.iter().map(|(name, u)| u.view(name)).collect()
    }

    /// For `port show`: weir's addresses on port `name` if it has an `ip`,
    /// and the state of tunnel port `name` (`t`, its keys) if it is one.
    pub(super) fn overlay_views(
        st: &State,
        name: &str,
        t: Option<&TunnelConfig>,
    ) -> (Option<HostIpView>, Option<TunnelView>) {
        let host = st.underlays.get(name).map(|u| u.view(name));
        let tunnel = t.and_then(|t| {
            let rec = st.tunnels.get(name)?;
            Some(tunnel_view(t, &rec.shared, st.underlays.get(&t.underlay)))
        });
        (host, tunnel)
    }

    /// `weir neigh show`: the neighbours weir's host stacks know.
    pub fn neigh_show(&self) -> Vec<NeighView> {
        let st = self.lock();
        let mut out = Vec::new();
        for (name, u) in &st.underlays {
            for n in u.stack.neighbours() {
                out.push(NeighView {
                    port: name.clone(),
                    ip: n.ip.to_string(),
                    mac: n.mac.map(|m| m.to_string()),
                    state: n.state.as_str().to_owned(),
                    age_secs: n.confirmed_secs_ago,
                    wanted: n.wanted,
                });
            }
        }
        out
    }

    /// The tunnel `port` is, if it is one: its remote for an inner address,
    /// for `fdb show`.
    pub(super) fn tunnel_shared(st: &State, port: &str) -> Option<Arc<TunnelShared>> {
        st.tunnels.get(port).map(|r| Arc::clone(&r.shared))
    }
}

/// A tunnel port as the control plane keeps it.
pub(super) struct TunnelRecord {
    underlay: String,
    vnis: Vec<u32>,
    pub(super) shared: Arc<TunnelShared>,
}

/// A tunnel's keys `t` and where its remotes stand: next hops from
/// underlay `u`'s rule and neighbours, resolution from the headers the
/// tunnel port uses now.
fn tunnel_view(t: &TunnelConfig, shared: &TunnelShared, u: Option<&Underlay>) -> TunnelView {
    let state = shared.state();
    let s = u.map(|u| u.shared.lock().unwrap_or_else(PoisonError::into_inner));
    let remotes = t
        .remote_ips
        .iter()
        .map(|&ip| {
            let next_hop = s.as_ref().and_then(|s| s.next_hop(ip));
            let next_hop_mac = s
                .as_ref()
                .zip(next_hop)
                .and_then(|(s, nh)| s.neighbours.get(&nh))
                .map(ToString::to_string);
            TunnelRemoteView {
                ip: ip.to_string(),
                next_hop: next_hop.map(|nh| nh.to_string()),
                next_hop_mac,
                resolved: state
                    .remotes
                    .iter()
                    .any(|r| r.ip == ip && r.header.is_some())
                    && state.underlay.is_some(),
            }
        })
        .collect();
    let (vni, vlan_vni) = match &t.vni {
        VniMap::Single(v) => (Some(*v), Vec::new()),
        VniMap::ByVlan(m) => (None, m.clone()),
    };
    TunnelView {
        kind: t.kind.name().to_owned(),
        underlay: t.underlay.clone(),
        local_ip: t.local_ip.to_string(),
        dst_port: t.dst_port,
        vni,
        vlan_vni,
        underlay_mtu: s.as_ref().map_or(0, |s| s.mtu as u32),
        max_frame_bytes: state.max_frame as u32,
        inner_mtu: state.max_frame.saturating_sub(ethernet::HEADER_LEN) as u32,
        remotes,
    }
}

impl Underlay {
    /// Has the host stack keep the next hops of `s`'s tunnel remotes
    /// resolved, and takes the routes it works out for them. Called with
    /// `s` locked, so the stack's neighbour callback, which locks it too,
    /// never sees remotes without their routes.
    fn want(&self, s: &mut UnderlayShared) {
        self.stack.set_wanted(s.wanted());
        s.routes = self
            .stack
            .wanted()
            .into_iter()
            .map(|r| (r.dst, r.next_hop))
            .collect();
    }

    /// `ip show`'s view of the port `name`.
    fn view(&self, name: &str) -> HostIpView {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let c = self.stack.counters();
        HostIpView {
            port: name.to_owned(),
            mac: s.mac.to_string(),
            addrs: self.host.addrs.iter().map(|a| a.to_string()).collect(),
            gateway: self.host.gateway4.map(|g| g.to_string()),
            gateway6: self.host.gateway6.map(|g| g.to_string()),
            mtu: s.mtu as u32,
            tunnels: s.tunnels.keys().cloned().collect(),
            rx_frames: c.rx_frames,
            tx_frames: c.tx_frames,
            tx_failed: c.tx_failed,
        }
    }

    /// What the workers read for this port.
    fn host_port(&self) -> Arc<HostPort> {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::new(HostPort {
            mac: s.mac,
            v4: self.host.v4().collect(),
            v6: self
                .host
                .addrs
                .iter()
                .filter_map(|a| match a.addr {
                    IpAddr::V6(v6) => Some(v6),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            bridged: self.bridged,
            to_host: Arc::clone(&self.to_host),
            tunnels: s.tunnels.values().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weir_config::{Config, PortSpec, PortType, ValidConfig};

    use super::*;

    fn dataplane() -> Dataplane {
        let mut cfg = Config::default();
        cfg.dataplane.mbufs = 256;
        cfg.dataplane.tso_mbufs = 0;
        cfg.dataplane.hugepages = weir_config::HugepageMode::Never;
        cfg.dataplane.idle_sleep_us = 50;
        let host = weir_config::Host::system();
        let mut dp = Dataplane::start(ValidConfig::new(cfg, host).unwrap()).unwrap();
        dp.worker_timeout = Duration::from_millis(300);
        dp
    }

    fn ring(name: &str, bridge: Option<&str>, ip: &[&str]) -> PortSpec {
        PortSpec {
            bridge: bridge.map(str::to_owned),
            ip: ip.iter().map(|s| (*s).to_owned()).collect(),
            ..PortSpec::new(name, PortType::Ring)
        }
    }

    fn vxlan(name: &str, underlay: &str, local: &str) -> PortSpec {
        PortSpec {
            bridge: Some("br0".into()),
            underlay: Some(underlay.into()),
            local_ip: Some(local.parse().unwrap()),
            remote_ips: vec!["198.18.0.2".parse().unwrap()],
            vni: Some(7),
            ..PortSpec::new(name, PortType::Vxlan)
        }
    }

    #[test]
    fn tunnels_need_their_underlay_and_keep_it() {
        let dp = dataplane();
        dp.bridge_add("br0").unwrap();
        dp.port_add(ring("up", None, &["198.18.0.1/24"])).unwrap();
        dp.port_add(ring("t0", Some("br0"), &[])).unwrap();
        let e = dp.port_add(vxlan("vx0", "up", "198.18.0.5")).unwrap_err();
        assert!(e.to_string().contains("not one of up's addresses"), "{e}");
        let e = dp.port_add(vxlan("vx0", "t0", "198.18.0.1")).unwrap_err();
        assert!(e.to_string().contains("has no `ip`"), "{e}");
        let e = dp.port_add(vxlan("vx0", "nope", "198.18.0.1")).unwrap_err();
        assert!(e.to_string().contains("no port named nope"), "{e}");
        dp.port_add(vxlan("vx0", "up", "198.18.0.1")).unwrap();
        let e = dp.port_add(vxlan("vx1", "up", "198.18.0.1")).unwrap_err();
        assert!(e.to_string().contains("already carries"), "{e}");

        let shown = dp.ip_show();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].port, "up");
        assert_eq!(shown[0].addrs, vec!["198.18.0.1/24".to_owned()]);
        assert_eq!(shown[0].tunnels, vec!["vx0".to_owned()]);
        // The remote's next hop is wanted (and, with nobody to answer on a
        // ring port, not resolved).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let wanted = loop {
            let n = dp.neigh_show();
            if let Some(w) = n.into_iter().find(|n| n.ip == "198.18.0.2") {
                break w;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "198.18.0.2 never wanted"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(wanted.wanted && wanted.mac.is_none(), "{wanted:?}");

        let e = dp.port_del("up").unwrap_err();
        assert!(matches!(e, ControlError::UnderlayInUse { .. }), "{e}");
        assert!(e.to_string().contains("tunnel vx0"), "{e}");

        // Static entries behind a remote.
        let mac = "02:00:00:00:00:99";
        let e = dp
            .fdb_add("br0", mac, "vx0", None, Some("198.18.0.3"))
            .unwrap_err();
        assert!(e.to_string().contains("not one of vx0's remote_ips"), "{e}");
        let e = dp
            .fdb_add("br0", mac, "t0", None, Some("198.18.0.2"))
            .unwrap_err();
        assert!(e.to_string().contains("applies to tunnel ports"), "{e}");
        assert!(dp
            .fdb_add("br0", "01:00:5e:00:00:01", "t0", None, None)
            .is_err());
        assert!(
            dp.fdb_add("br0", mac, "up", None, None).is_err(),
            "up is on no bridge"
        );
        dp.fdb_add("br0", mac, "vx0", Some(10), Some("198.18.0.2"))
            .unwrap();
        let fdb = dp.fdb_show(Some("br0")).unwrap();
        let e = fdb.iter().find(|e| e.mac == mac).unwrap();
        assert_eq!((e.port.as_str(), e.vlan, e.is_static), ("vx0", 10, true));
        assert_eq!(e.remote.as_deref(), Some("198.18.0.2"));
        dp.fdb_del("br0", mac, Some(10)).unwrap();
        assert!(dp.fdb_del("br0", mac, Some(10)).is_err(), "already gone");

        dp.port_del("vx0").unwrap();
        assert!(dp.ip_show()[0].tunnels.is_empty());
        dp.port_del("up").unwrap();
        assert!(dp.ip_show().is_empty());
        dp.shutdown();
    }
}
