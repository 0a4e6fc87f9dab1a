//! The feature pipeline: the stages a frame passes on a bridge whose ports
//! use VLAN modes, port security, security groups or rate limits.
//!
//! Layer: switch. Run by [`super::Forwarder::process`] for a whole burst when
//! the ingress port's bridge has any port with a feature on
//! ([`SwitchTables::bridge_features`]); a bridge of ports without features
//! never comes here, so the plain learning path pays one test per burst.
//!
//! Per frame, in order (each stage counts its drops under its own
//! [`DropReason`]):
//!
//! 1. parse L2 (`malformed`);
//! 2. ingress VLAN: the frame's VLAN from the ingress port's mode and the
//!    frame's tag (`vlan-filtered`; an 802.1ad S-tag is refused here too);
//! 3. port security: the source MAC and IP addresses must be the port's
//!    own (`spoofed-mac`, `spoofed-ip`; see [`super::security`]);
//! 4. the port's `acl_in` security group (`acl-deny`; see [`super::acl`]);
//! 5. ingress policing (`policed`; see [`super::police`]);
//! 6. learn the source in that VLAN (a refusal is counted, the frame goes on);
//! 7. link-local destinations (`link-local`);
//! 8. lookup in that VLAN: known unicast to one port (`same-port`,
//!    `no-route`, `port-down`), else flood to the VLAN's other members,
//!    within the ingress port's storm limit (`storm`);
//! 9. per egress port: VLAN membership (a port not in the VLAN gets no
//!    flood copy; a known unicast frame to it is dropped as
//!    `vlan-filtered`), its receive filter (`rx-filter`; see
//!    [`super::rxfilter`]), its `acl_out` security group (`acl-deny`), its
//!    `egress_rate` (`egress-rate`), then the tag: the frame leaves untagged
//!    or tagged with its VLAN.
//!
//! Frames keep the tag they came with until egress decides: a frame from a
//! trunk to a trunk is not touched, one from an access port to a trunk gains
//! a tag in its headroom, one from a trunk to an access port loses it.

use std::sync::{Arc, LazyLock};

use crate::ids::{PortId, VlanId};
use crate::mbuf::Mbuf;
use crate::port::Burst;
use crate::stats::{DropReason, QueueStats};
use crate::wire::ethernet::ethertype;
use crate::wire::parse_l2_addrs;

use crate::capture::{unix_time_ns, PortTaps};

use super::acl::{Acl, Applied, FlowCache};
use super::fdb::FdbKey;
use super::police::{PortLimits, TokenBucket};
use super::rxfilter::RxFilter;
use super::security::PortSecurity;
use super::vlan::{Egress, PortVlan};
use super::{
    discard, learn, open_stage, stage, Bridge, Forwarder, Pending, ProcessSummary, Stage,
    SwitchTables, GROUP_BIT, LINK_LOCAL, LINK_LOCAL_MASK,
};

/// The pipeline stages a port uses, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features(u32);

impl Features {
    /// No stage: the plain learning path.
    pub const NONE: Features = Features(0);
    /// VLAN port mode other than a trunk of every VLAN.
    pub const VLAN: Features = Features(1);
    /// Port security (allowed source MACs and IPs).
    pub const SECURITY: Features = Features(1 << 1);
    /// Ingress policing or storm control.
    pub const POLICE: Features = Features(1 << 2);
    /// A security group on what the port sends into the switch.
    pub const ACL_IN: Features = Features(1 << 3);
    /// A security group on what the switch sends to the port.
    pub const ACL_OUT: Features = Features(1 << 4);
    /// An egress rate.
    pub const EGRESS_RATE: Features = Features(1 << 5);
    /// A capture of the frames the switch drops on the port's way in
    /// ([`crate::capture`]); set from the port's taps, not its policy.
    pub const CAPTURE_DROPS: Features = Features(1 << 6);
    /// A receive filter on what the switch sends to the port.
    pub const RX_FILTER: Features = Features(1 << 7);

    /// The stages that run on a frame's way in, after the VLAN.
    pub const INGRESS_EXTRA: Features =
        Features(Self::SECURITY.0 | Self::POLICE.0 | Self::ACL_IN.0);
    /// The stages that run per egress port, besides the VLAN.
    pub const EGRESS_EXTRA: Features =
        Features(Self::ACL_OUT.0 | Self::EGRESS_RATE.0 | Self::RX_FILTER.0);

    /// Whether any stage of `other` is on.
    #[inline]
    pub fn intersects(self, other: Features) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no stage is on.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every stage of `other` is on.
    pub fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, o: Features) -> Features {
        Features(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for Features {
    fn bitor_assign(&mut self, o: Features) {
        self.0 |= o.0;
    }
}

/// A port's pipeline settings. Published with the tables
/// ([`SwitchTables::set_policy`]); a port without one behaves as
/// [`PortPolicy::default`] (a trunk of every VLAN, no other stage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPolicy {
    /// VLAN port mode.
    pub vlan: PortVlan,
    /// Allowed source addresses, if port security is on.
    pub security: Option<PortSecurity>,
    /// Rate limits.
    pub limits: PortLimits,
    /// Security group for what the port sends into the switch.
    pub acl_in: Option<Arc<Acl>>,
    /// Security group for what the switch sends to the port.
    pub acl_out: Option<Arc<Acl>>,
    /// The destinations the port takes (see [`super::rxfilter`]); None:
    /// every one.
    pub rx_filter: Option<Arc<RxFilter>>,
}

impl Default for PortPolicy {
    fn default() -> Self {
        PortPolicy {
            vlan: PortVlan::trunk_all(),
            security: None,
            limits: PortLimits::default(),
            acl_in: None,
            acl_out: None,
            rx_filter: None,
        }
    }
}

impl PortPolicy {
    /// The stages these settings turn on.
    pub fn features(&self) -> Features {
        let mut f = Features::NONE;
        if !self.vlan.is_trunk_all() {
            f |= Features::VLAN;
        }
        if self.security.is_some() {
            f |= Features::SECURITY;
        }
        if self.limits.ingress.is_some() || self.limits.storm.is_some() {
            f |= Features::POLICE;
        }
        if self.limits.egress.is_some() {
            f |= Features::EGRESS_RATE;
        }
        if self.acl_in.is_some() {
            f |= Features::ACL_IN;
        }
        if self.acl_out.is_some() {
            f |= Features::ACL_OUT;
        }
        if self.rx_filter.is_some() {
            f |= Features::RX_FILTER;
        }
        f
    }
}

/// The settings of ports without any.
pub(super) static DEFAULT_POLICY: LazyLock<Arc<PortPolicy>> =
    LazyLock::new(|| Arc::new(PortPolicy::default()));

/// Gives `m` the form port egress `how` asks for, for a frame of `vlan`
/// that carries an 802.1Q tag with VID `tag` now (`None`: untagged).
///
/// The common cases (a frame that leaves as it came: untagged to an
/// untagged port, or tagged with its own VLAN to a trunk) are decided
/// inline; the edits are out of line.
///
/// # Errors
///
/// [`DropReason::NoBuffers`] if a tag must be added and the buffer has no
/// headroom for it.
#[inline(always)]
fn retag(m: &mut Mbuf, tag: Option<VlanId>, how: Egress, vlan: VlanId) -> Result<(), DropReason> {
    match (tag, how) {
        (None, Egress::Untagged) => Ok(()),
        (Some(v), Egress::Tagged) if v == vlan => Ok(()),
        (_, Egress::Filtered) => Ok(()),
        _ => edit_tag(m, tag.is_some(), how, vlan),
    }
}

/// The edits of [`retag`]: push, pop or rewrite the tag.
#[cold]
#[inline(never)]
fn edit_tag(m: &mut Mbuf, tagged: bool, how: Egress, vlan: VlanId) -> Result<(), DropReason> {
    match (tagged, how) {
        (true, Egress::Untagged) => super::vlan::pop_tag(m),
        (false, Egress::Tagged) => {
            super::vlan::push_tag(m, vlan).map_err(|_| DropReason::NoBuffers)?;
        }
        (true, Egress::Tagged) => {
            // The frame's own VID differs only for a priority tag (VID 0)
            // taken into a native VLAN: keep PCP and DEI, set the VID.
            let d = m.data_mut();
            let tci = u16::from_be_bytes([d[14], d[15]]) & !0x0fff | vlan.0;
            d[14..16].copy_from_slice(&tci.to_be_bytes());
        }
        (false, Egress::Untagged) | (_, Egress::Filtered) => {}
    }
    Ok(())
}

impl SwitchTables {
    /// The pipeline settings of port `id` (the default for a port without).
    #[inline]
    pub fn policy(&self, id: PortId) -> &PortPolicy {
        match self.policies.get(id.index()) {
            Some(Some(p)) => p,
            _ => &DEFAULT_POLICY,
        }
    }

    /// Sets (or with `None` clears) the pipeline settings of port `id`.
    /// Takes effect for workers when the tables are published.
    pub fn set_policy(&mut self, id: PortId, policy: Option<Arc<PortPolicy>>) {
        let i = id.index();
        if self.policies.len() <= i {
            self.policies.resize(i + 1, None);
        }
        self.policies[i] = policy.filter(|p| !p.features().is_empty());
    }

    /// The stages any member port of bridge `id` uses; empty for a bridge
    /// switched by the plain path.
    #[inline]
    pub fn bridge_features(&self, id: crate::ids::BridgeId) -> Features {
        self.bridge_features
            .get(usize::from(id.0))
            .copied()
            .unwrap_or_default()
    }

    /// Recomputes what [`SwitchTables::bridge_features`] reports, and drops
    /// the settings of ports that no longer exist. [`super::Switch::update`]
    /// calls it before every publication.
    pub(super) fn refresh_features(&mut self) {
        for (i, p) in self.policies.iter_mut().enumerate() {
            if self.ports.get(i).is_none_or(Option::is_none) {
                *p = None;
            }
        }
        for (i, p) in self.taps.iter_mut().enumerate() {
            if self.ports.get(i).is_none_or(Option::is_none) {
                *p = None;
            }
        }
        let features = self
            .bridges
            .iter()
            .map(|b| {
                b.as_ref().map_or(Features::NONE, |b| {
                    b.ports.iter().fold(Features::NONE, |f, &p| {
                        let policy = match self.policies.get(p.index()) {
                            Some(Some(pol)) => pol.features(),
                            _ => Features::NONE,
                        };
                        let taps = match self.taps.get(p.index()) {
                            Some(Some(taps)) if taps.wants_drops() => Features::CAPTURE_DROPS,
                            _ => Features::NONE,
                        };
                        f | policy | taps
                    })
                })
            })
            .collect();
        self.bridge_features = features;
    }
}

impl Forwarder {
    /// [`Forwarder::process`] for a bridge with features: every stage of the
    /// module's list, per frame. Picks, once per burst, a copy of the loop
    /// compiled without the ingress stages the ingress port does not use
    /// (port security, security group, policing) and without the egress
    /// stages no port of the bridge uses (security group, rate), so a
    /// bridge with only VLANs does not pay for their tests per frame.
    pub(super) fn process_pipeline(
        &mut self,
        t: &SwitchTables,
        bridge: &Bridge,
        in_port: PortId,
        burst: &mut Burst,
        now: u32,
        in_stats: &QueueStats,
    ) -> ProcessSummary {
        let ingress = t
            .policy(in_port)
            .features()
            .intersects(Features::INGRESS_EXTRA);
        let egress = t
            .bridge_features(bridge.id)
            .intersects(Features::EGRESS_EXTRA);
        match (ingress, egress) {
            (false, false) => {
                self.pipeline::<false, false>(t, bridge, in_port, burst, now, in_stats)
            }
            (true, false) => self.pipeline::<true, false>(t, bridge, in_port, burst, now, in_stats),
            (false, true) => self.pipeline::<false, true>(t, bridge, in_port, burst, now, in_stats),
            (true, true) => self.pipeline::<true, true>(t, bridge, in_port, burst, now, in_stats),
        }
    }

    /// The pipeline loop; `IN`: run the ingress stages after the VLAN,
    /// `OUT`: run the egress stages besides the VLAN.
    #[inline(always)]
    fn pipeline<const IN: bool, const OUT: bool>(
        &mut self,
        t: &SwitchTables,
        bridge: &Bridge,
        in_port: PortId,
        burst: &mut Burst,
        now: u32,
        in_stats: &QueueStats,
    ) -> ProcessSummary {
        let fdb = bridge.fdb.view();
        self.burst_seq += 1;
        let seq = self.burst_seq;
        let stages = &mut self.stages[..];
        let pending = &mut self.pending;
        let flows = &mut self.flows;
        let in_policy = t.policy(in_port);
        let in_vlan = &in_policy.vlan;
        let in_security = in_policy.security.as_ref();
        let in_acl = in_policy.acl_in.as_deref();
        let (policer, storm) = (
            in_policy.limits.ingress.as_ref(),
            in_policy.limits.storm.as_ref(),
        );
        // The rate limits' clock, read once per burst, and only where a
        // limit may be taken from (ingress policing and storm control run
        // only with `IN`, egress rates only with `OUT`).
        let now_ticks = if IN || OUT { crate::time::cycles() } else { 0 };
        let mut sum = ProcessSummary::default();
        // The last known unicast decision of this burst: a frame with the
        // same outer tag, source and destination has the same VLAN, egress
        // port and tag edit; the stage of that port is open for the burst
        // and the source was learned at this `now`. Plain locals, so they
        // stay in registers; MAC words are 48 bits, so `NO_PAIR` matches no
        // frame. Any frame that takes the full path clears it before it
        // learns, so a learn that moves the cached destination is never
        // bypassed.
        const NO_PAIR: u64 = u64::MAX;
        let (mut last_src, mut last_dst, mut last_tag) = (NO_PAIR, NO_PAIR, 0u32);
        let (mut last_vlan, mut last_out, mut last_how) =
            (VlanId::NONE, PortId(0), Egress::Filtered);
        let mut last_policy: &PortPolicy = &DEFAULT_POLICY;
        // A capture of this port's drops, stamped once per burst.
        let drop_tap = t
            .taps(in_port)
            .filter(|taps| taps.wants_drops())
            .map(|taps| DropTap {
                taps,
                port: in_port,
                timestamp_ns: unix_time_ns(),
            });
        let drop_tap = drop_tap.as_ref();
        for m in burst.drain(..) {
            let Some(l2) = parse_l2_addrs(m.data()) else {
                discard_tapped(m, in_stats, drop_tap, DropReason::Malformed);
                sum.dropped += 1;
                continue;
            };
            // Ingress VLAN: the outer tag, an 802.1Q one with the VID
            // `parse_l2_addrs` reported, or an 802.1ad one, refused. One
            // test of the EtherType gives the tag, where the L3 header starts
            // (for the stages that look at it) and the tag's word for the
            // pair cache.
            let tpid = match m.data().get(12..14) {
                Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
                _ => 0, // never: `parse_l2_addrs` checked a full header
            };
            if tpid == ethertype::QINQ {
                discard_tapped(m, in_stats, drop_tap, DropReason::VlanFiltered);
                sum.dropped += 1;
                continue;
            }
            let tagged = tpid == ethertype::VLAN;
            let (tag, l3, tag_word) = if tagged {
                (Some(l2.vlan), 18, u32::from(l2.vlan.0))
            } else {
                (None, 14, 1 << 16)
            };
            // Same tag and addresses as the last known unicast frame: same
            // VLAN, egress port and tag edit. The stages that look past the
            // addresses (security, security groups, rates) still run.
            if l2.src == last_src && l2.dst == last_dst && tag_word == last_tag {
                let mut m = m;
                let out_policy = last_policy;
                let passed = in_stages::<IN>(
                    in_security,
                    in_acl,
                    policer,
                    flows,
                    now_ticks,
                    &m,
                    l2.src,
                    l3,
                )
                .and_then(|()| egress::<OUT>(out_policy, flows, now_ticks, &m, l2.dst, l3))
                .and_then(|()| retag(&mut m, tag, last_how, last_vlan));
                match (passed, stages.get_mut(last_out.index())) {
                    (Ok(()), Some(st)) => {
                        let _ = st.frames.try_push(m);
                        sum.unicast += 1;
                    }
                    (Err(why), _) => {
                        discard_tapped(m, in_stats, drop_tap, why);
                        sum.dropped += 1;
                    }
                    (Ok(()), None) => {} // stages out of step: frame freed
                }
                continue;
            }
            last_src = NO_PAIR;
            let Some(vlan) = in_vlan.ingress(tag) else {
                discard_tapped(m, in_stats, drop_tap, DropReason::VlanFiltered);
                sum.dropped += 1;
                continue;
            };
            if l2.src & GROUP_BIT != 0 {
                discard_tapped(m, in_stats, drop_tap, DropReason::Malformed);
                sum.dropped += 1;
                continue;
            }
            // Port security (before the source is learned), the ingress
            // security group, ingress policing.
            if let Err(why) = in_stages::<IN>(
                in_security,
                in_acl,
                policer,
                flows,
                now_ticks,
                &m,
                l2.src,
                l3,
            ) {
                discard_tapped(m, in_stats, drop_tap, why);
                sum.dropped += 1;
                continue;
            }
            // Learn and look up in the frame's VLAN.
            let Some(m) = learn(
                &fdb,
                FdbKey::from_word(vlan, l2.src),
                in_port,
                now,
                m,
                in_stats,
            ) else {
                continue; // never: see `learn`
            };
            // Group destinations are flooded (link-local ones never
            // forwarded); unicast ones looked up in the frame's VLAN.
            let known = if l2.dst & GROUP_BIT != 0 {
                if l2.dst & LINK_LOCAL_MASK == LINK_LOCAL {
                    discard_tapped(m, in_stats, drop_tap, DropReason::LinkLocal);
                    sum.dropped += 1;
                    continue;
                }
                None
            } else {
                fdb.lookup_key(FdbKey::from_word(vlan, l2.dst))
            };
            let Some(out) = known else {
                if IN && storm.is_some_and(|s| !s.take(now_ticks, 1)) {
                    discard_tapped(m, in_stats, drop_tap, DropReason::Storm);
                    sum.dropped += 1;
                    continue;
                }
                sum.flooded += 1;
                flood_vlan(
                    stages, pending, flows, t, bridge, in_port, vlan, tag, l2.dst, now_ticks, m,
                    in_stats,
                );
                continue;
            };
            // Known unicast: egress VLAN, then the port's stage.
            let out_policy = t.policy(out);
            let how = out_policy.vlan.egress(vlan);
            let mut m = m;
            let fit = match how {
                Egress::Filtered => Err(DropReason::VlanFiltered),
                _ => egress::<OUT>(out_policy, flows, now_ticks, &m, l2.dst, l3)
                    .and_then(|()| retag(&mut m, tag, how, vlan)),
            };
            let opened = fit.and_then(|()| match stages.get(out.index()) {
                Some(st) if st.ready == seq => Ok(()),
                _ => open_stage(stages, pending, t, in_port, out, seq),
            });
            match opened {
                Ok(()) => {
                    if let Some(st) = stages.get_mut(out.index()) {
                        let _ = st.frames.try_push(m);
                    }
                    sum.unicast += 1;
                    (last_src, last_dst, last_tag) = (l2.src, l2.dst, tag_word);
                    (last_vlan, last_out, last_how) = (vlan, out, how);
                    last_policy = out_policy;
                }
                Err(why) => {
                    discard_tapped(m, in_stats, drop_tap, why);
                    sum.dropped += 1;
                }
            }
        }
        sum
    }
}

/// Where a burst's drops are captured: the ingress port's taps.
struct DropTap<'a> {
    taps: &'a PortTaps,
    port: PortId,
    timestamp_ns: u64,
}

/// [`discard`], first copying the frame into the captures of the ingress
/// port's drops, if it has any.
#[cold]
#[inline(never)]
fn discard_tapped(m: Mbuf, in_stats: &QueueStats, tap: Option<&DropTap<'_>>, reason: DropReason) {
    if let Some(tap) = tap {
        tap.taps
            .record_drop(tap.port, reason, tap.timestamp_ns, m.data());
    }
    discard(m, in_stats, reason);
}

/// The ingress stages after the VLAN for `m` (source MAC word `src`, L3
/// header at `l3`): port security, the security group, policing. Each runs
/// only if the port has it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn in_stages<const IN: bool>(
    security: Option<&PortSecurity>,
    acl: Option<&Acl>,
    policer: Option<&TokenBucket>,
    flows: &mut FlowCache,
    now_ticks: u64,
    m: &Mbuf,
    src: u64,
    l3: usize,
) -> Result<(), DropReason> {
    if !IN {
        return Ok(());
    }
    if let Some(sec) = security {
        sec.check(m.data(), src, l3)?;
    }
    if let Some(acl) = acl {
        acl.check_cached(m.data(), l3, Applied::In, flows)?;
    }
    match policer {
        Some(p) if !p.take(now_ticks, m.len() as u64) => Err(DropReason::Policed),
        _ => Ok(()),
    }
}

/// The egress stages of the port with settings `out` for `m` (destination
/// MAC word `dst`, L3 header at `l3`): its receive filter, its security
/// group, then its rate.
#[inline(always)]
fn egress<const OUT: bool>(
    out: &PortPolicy,
    flows: &mut FlowCache,
    now_ticks: u64,
    m: &Mbuf,
    dst: u64,
    l3: usize,
) -> Result<(), DropReason> {
    if !OUT {
        return Ok(());
    }
    if out.rx_filter.as_ref().is_some_and(|f| !f.admits(dst)) {
        return Err(DropReason::RxFilter);
    }
    if let Some(acl) = &out.acl_out {
        acl.check_cached(m.data(), l3, Applied::Out, flows)?;
    }
    match &out.limits.egress {
        Some(b) if !b.take(now_ticks, m.len() as u64) => Err(DropReason::EgressRate),
        _ => Ok(()),
    }
}

/// Floods a frame of `vlan` to every other up port of the bridge that
/// carries the VLAN, each copy tagged or not as its port wants; the last one
/// gets the original buffer.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn flood_vlan(
    stages: &mut [Stage],
    pending: &mut Pending,
    flows: &mut FlowCache,
    t: &SwitchTables,
    bridge: &Bridge,
    in_port: PortId,
    vlan: VlanId,
    tag: Option<VlanId>,
    dst: u64,
    now_ticks: u64,
    m: Mbuf,
    in_stats: &QueueStats,
) {
    let l3 = if tag.is_some() { 18 } else { 14 };
    let mut targets = bridge
        .ports
        .iter()
        .copied()
        .filter(|&p| p != in_port && t.port(p).is_some_and(|e| e.is_up()))
        .filter_map(|p| {
            let policy = t.policy(p);
            // Unknown unicast reaches a secured port only for its own MACs.
            if dst & GROUP_BIT == 0 && policy.security.as_ref().is_some_and(|s| !s.mac_ok(dst)) {
                return None;
            }
            match policy.vlan.egress(vlan) {
                Egress::Filtered => None,
                how => match egress::<true>(policy, flows, now_ticks, &m, dst, l3) {
                    Err(why) => {
                        in_stats.drop_one(why);
                        None
                    }
                    Ok(()) => Some((p, how)),
                },
            }
        });
    let Some(mut prev) = targets.next() else {
        return; // nobody in the VLAN to flood to: the frame has no receiver
    };
    let mut send = |p: PortId, how: Egress, mut c: Mbuf| match retag(&mut c, tag, how, vlan) {
        Ok(()) => stage(stages, pending, p, c),
        Err(why) => in_stats.drop_one(why),
    };
    for next in targets {
        match m.try_clone() {
            Some(c) => send(prev.0, prev.1, c),
            None if m.share_exhausted() => in_stats.drop_one(DropReason::PoolShare),
            None => in_stats.drop_one(DropReason::NoBuffers),
        }
        prev = next;
    }
    send(prev.0, prev.1, m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::Mempool;

    fn mbuf(pool: &'static Mempool, bytes: &[u8]) -> Mbuf {
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(bytes).unwrap();
        m
    }

    const UNTAGGED: [u8; 16] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00, 0x45, 0x00,
    ];
    const TAGGED_10: [u8; 20] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0x00, 10, 0x08, 0x00, 0x45, 0x00,
    ];

    #[test]
    fn retag_pushes_and_pops_an_802_1q_tag_around_the_addresses() {
        let pool = Mempool::for_tests(4);
        let mut m = mbuf(pool, &UNTAGGED);
        retag(&mut m, None, Egress::Tagged, VlanId(10)).unwrap();
        assert_eq!(m.data(), TAGGED_10);
        retag(&mut m, Some(VlanId(10)), Egress::Untagged, VlanId(10)).unwrap();
        assert_eq!(m.data(), UNTAGGED);
        let mut m = mbuf(pool, &TAGGED_10);
        retag(&mut m, Some(VlanId(10)), Egress::Tagged, VlanId(10)).unwrap();
        assert_eq!(m.data(), TAGGED_10, "same VLAN: untouched");
    }

    #[test]
    fn a_priority_tag_gets_the_native_vid_and_keeps_its_priority() {
        let pool = Mempool::for_tests(4);
        let mut prio = TAGGED_10;
        prio[14..16].copy_from_slice(&[0xa0, 0x00]); // PCP 5, VID 0
        let mut m = mbuf(pool, &prio);
        retag(&mut m, Some(VlanId(0)), Egress::Tagged, VlanId(7)).unwrap();
        assert_eq!(&m.data()[14..16], &[0xa0, 0x07]);
    }

    #[test]
    fn features_of_a_port_without_settings_are_empty() {
        assert!(PortPolicy::default().features().is_empty());
        let access = PortPolicy {
            vlan: PortVlan::new(None, Some(10), &[]).unwrap(),
            ..PortPolicy::default()
        };
        assert!(access.features().contains(Features::VLAN));
    }
    /// A 3-port bridge, all up, port `i` with `policies[i]`.
    fn rig(policies: [PortPolicy; 3]) -> Arc<SwitchTables> {
        use super::super::{Bridge, Fdb, FdbConfig, PortEntry, Switch};
        use crate::ids::{BridgeId, WorkerId};
        use std::sync::atomic::Ordering;
        let sw = Switch::new();
        sw.update(|t| {
            t.bridges.push(Some(Bridge {
                id: BridgeId(0),
                name: "br0".into(),
                ports: (0..3).map(PortId).collect(),
                fdb: Arc::new(Fdb::new(&FdbConfig::default())),
            }));
            for (i, p) in policies.into_iter().enumerate() {
                let e = PortEntry::new(PortId(i as u16), "p", Some(BridgeId(0)), WorkerId(0));
                e.link_up.store(true, Ordering::Relaxed);
                t.ports.push(Some(Arc::new(e)));
                t.set_policy(PortId(i as u16), Some(Arc::new(p)));
            }
        });
        sw.load()
    }

    /// Sends `n` frames of `len` bytes from 02::1 to `dst` in on port 0, in
    /// bursts; returns the frames each port got.
    fn blast(t: &SwitchTables, dst: [u8; 6], len: usize, n: usize, st: &QueueStats) -> [usize; 3] {
        // One pool for every call: a process has at most `MAX_POOLS`, and
        // pools are never freed.
        static POOL: std::sync::OnceLock<&'static Mempool> = std::sync::OnceLock::new();
        let pool = *POOL.get_or_init(|| Mempool::for_tests(1024));
        let mut fwd = Forwarder::new();
        fwd.prepare(t);
        let mut frame = vec![0x5a; len];
        frame[..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut got = [0; 3];
        for chunk in (0..n).collect::<Vec<_>>().chunks(crate::port::MAX_BURST) {
            let mut b: Burst = chunk.iter().map(|_| mbuf(pool, &frame)).collect();
            fwd.process(t, PortId(0), &mut b, 1, st);
            fwd.drain(|p, b| {
                got[p.index()] += b.len();
                b.clear();
            });
        }
        got
    }

    #[test]
    fn a_capture_of_drops_moves_the_bridge_to_the_pipeline_and_gets_each_drop_with_its_reason() {
        use crate::capture::{Capture, CaptureFilter, Direction, PortTaps};
        let plain = rig([
            PortPolicy::default(),
            PortPolicy::default(),
            PortPolicy::default(),
        ]);
        assert!(plain.bridge_features(crate::ids::BridgeId(0)).is_empty());
        let cap = Capture::new(
            CaptureFilter {
                drops: true,
                ..CaptureFilter::default()
            },
            64,
            64,
        );
        let mut t = (*plain).clone();
        t.set_taps(
            PortId(0),
            Some(Arc::new(PortTaps {
                captures: vec![Arc::clone(&cap)],
                ..PortTaps::default()
            })),
        );
        t.refresh_features();
        assert_eq!(
            t.bridge_features(crate::ids::BridgeId(0)),
            Features::CAPTURE_DROPS
        );
        let st = QueueStats::default();
        // Link-local destinations are dropped; broadcasts flood and are not
        // captured.
        assert_eq!(
            blast(&t, [0x01, 0x80, 0xc2, 0, 0, 0], 60, 3, &st),
            [0, 0, 0]
        );
        assert_eq!(blast(&t, [0xff; 6], 60, 2, &st), [0, 2, 2]);
        assert_eq!(st.snapshot().drops(DropReason::LinkLocal), 3);
        let got: Vec<_> = std::iter::from_fn(|| cap.take()).collect();
        assert_eq!(got.len(), 3);
        for slot in &got {
            assert_eq!(
                (slot.port, slot.direction, slot.drop, slot.orig_len_bytes),
                (PortId(0), Direction::Rx, Some(DropReason::LinkLocal), 60)
            );
            assert_eq!(&slot.data()[..6], &[0x01, 0x80, 0xc2, 0, 0, 0]);
        }
    }

    #[test]
    fn rate_limits_drop_what_exceeds_them_and_count_it() {
        let limited = |ingress, egress, storm| PortPolicy {
            limits: PortLimits::new(ingress, Some(1), egress, storm),
            ..PortPolicy::default()
        };
        // Storm control: 10 frames/s, so one burst's worth passes at once.
        let t = rig([
            limited(None, None, Some(10)),
            PortPolicy::default(),
            PortPolicy::default(),
        ]);
        let st = QueueStats::default();
        let got = blast(&t, [0xff; 6], 60, 96, &st);
        assert_eq!(got, [0, 32, 32]);
        assert_eq!(st.snapshot().drops(DropReason::Storm), 64);
        // Ingress policing at 8 kbit/s, 1 kbit of burst: the minimum burst (64 KiB and a
        // little) passes 43 frames of 1 500 bytes.
        let t = rig([
            limited(Some(8), None, None),
            PortPolicy::default(),
            PortPolicy::default(),
        ]);
        let st = QueueStats::default();
        let got = blast(&t, [0xff; 6], 1500, 64, &st);
        assert_eq!(got, [0, 43, 43]);
        assert_eq!(st.snapshot().drops(DropReason::Policed), 21);
        // Egress rate on port 2 only: port 1 gets every flood copy. At
        // 8 kbit/s the burst is the policer's default (8000 kbit, 1 MB): 666
        // frames of 1 500 bytes.
        let t = rig([
            PortPolicy::default(),
            PortPolicy::default(),
            limited(None, Some(8), None),
        ]);
        let st = QueueStats::default();
        let got = blast(&t, [0xff; 6], 1500, 700, &st);
        assert_eq!(got, [0, 700, 666]);
        assert_eq!(st.snapshot().drops(DropReason::EgressRate), 34);
    }

    #[test]
    fn a_receive_filter_drops_flood_copies_for_other_addresses_and_counts_them() {
        use super::super::rxfilter::GuestRxMode;
        use crate::ids::MacAddr;
        let own = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
        let group = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
        let guest = GuestRxMode {
            multicast: vec![group],
            ..GuestRxMode::default()
        };
        let t = rig([
            PortPolicy::default(),
            PortPolicy::default(),
            PortPolicy {
                rx_filter: RxFilter::new(&[own], Some(&guest)).map(Arc::new),
                ..PortPolicy::default()
            },
        ]);
        assert!(t
            .bridge_features(crate::ids::BridgeId(0))
            .contains(Features::RX_FILTER));
        let st = QueueStats::default();
        // Unknown unicast for another station: port 1 only.
        assert_eq!(blast(&t, [0x52, 0x54, 0, 0, 0, 9], 60, 40, &st), [0, 40, 0]);
        assert_eq!(st.snapshot().drops(DropReason::RxFilter), 40);
        // For the filtered port's own MAC, broadcast, the group it asked for: both.
        assert_eq!(blast(&t, own.0, 60, 3, &st), [0, 3, 3]);
        assert_eq!(blast(&t, [0xff; 6], 60, 3, &st), [0, 3, 3]);
        assert_eq!(blast(&t, group.0, 60, 3, &st), [0, 3, 3]);
        // A group it did not ask for: port 1 only.
        assert_eq!(blast(&t, [0x01, 0, 0x5e, 0, 0, 1], 60, 5, &st), [0, 5, 0]);
        assert_eq!(st.snapshot().drops(DropReason::RxFilter), 45);
        // Promiscuous: no filter, nothing dropped.
        let promisc = GuestRxMode {
            promisc: true,
            ..GuestRxMode::default()
        };
        assert_eq!(RxFilter::new(&[own], Some(&promisc)), None);
    }

    #[test]
    fn security_groups_filter_what_ports_send_and_receive() {
        use super::super::acl::{proto, AclRule, Action};
        let http = |action| AclRule {
            proto: Some(proto::TCP),
            dst_ports: Some((80, 80)),
            action,
            ..AclRule::default()
        };
        // Port 0 may send only TCP to port 80; port 2 receives none of it.
        let only_http = Arc::new(Acl::new(vec![http(Action::Allow)], Action::Deny).unwrap());
        let no_http = Arc::new(Acl::new(vec![http(Action::Deny)], Action::Allow).unwrap());
        let t = rig([
            PortPolicy {
                acl_in: Some(only_http),
                ..PortPolicy::default()
            },
            PortPolicy::default(),
            PortPolicy {
                acl_out: Some(no_http),
                ..PortPolicy::default()
            },
        ]);
        let st = QueueStats::default();
        let tcp = |dport: u16| {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
            f.extend_from_slice(&[
                0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ]);
            f.extend_from_slice(&[0x9c, 0x40]);
            f.extend_from_slice(&dport.to_be_bytes());
            f.extend_from_slice(&[0; 16]);
            f
        };
        let pool = Mempool::for_tests(16);
        let mut fwd = Forwarder::new();
        fwd.prepare(&t);
        let mut got = Vec::new();
        for dport in [80, 22] {
            let mut b: Burst = [mbuf(pool, &tcp(dport))].into_iter().collect();
            fwd.process(&t, PortId(0), &mut b, 1, &st);
            fwd.drain(|p, b| {
                got.push((dport, p.0));
                b.clear();
            });
        }
        assert_eq!(
            got,
            [(80, 1)],
            "port 22 denied on the way in, 80 on the way out to port 2"
        );
        assert_eq!(st.snapshot().drops(DropReason::AclDeny), 2);
    }

    /// The switching decisions of a bridge with VLAN port modes, checked
    /// against a reference model written from OVS's description of the
    /// modes (and nothing of the code above), for random port settings and
    /// frames.
    mod model {
        use std::collections::HashMap;
        use std::sync::atomic::Ordering;

        use super::super::super::{Bridge, Fdb, FdbConfig, PortEntry, Switch};
        use super::super::*;
        use crate::ids::{BridgeId, MacAddr, WorkerId};
        use crate::mempool::Mempool;
        use crate::switch::vlan::VlanMode;

        /// A port's settings, as the model sees them.
        #[derive(Clone, Debug)]
        enum Cfg {
            None,
            Access(u16),
            Trunk(Vec<u16>),
            NativeTagged(u16, Vec<u16>),
            NativeUntagged(u16, Vec<u16>),
        }

        impl Cfg {
            fn has_feature(&self) -> bool {
                !matches!(self, Cfg::None) && !matches!(self, Cfg::Trunk(s) if s.is_empty())
            }
            fn member(&self, v: u16) -> bool {
                match self {
                    Cfg::None => true,
                    Cfg::Access(t) => v == *t,
                    Cfg::Trunk(s) => s.is_empty() || s.contains(&v),
                    Cfg::NativeTagged(t, s) | Cfg::NativeUntagged(t, s) => {
                        v == *t || s.is_empty() || s.contains(&v)
                    }
                }
            }
            /// The VLAN of a frame received with VID `vid` (0: untagged or
            /// priority-tagged).
            fn vlan_in(&self, vid: u16) -> Option<u16> {
                let v = match (self, vid) {
                    (Cfg::Access(_), 1..) => return None,
                    (Cfg::Access(t) | Cfg::NativeTagged(t, _) | Cfg::NativeUntagged(t, _), 0) => *t,
                    (_, v) => v,
                };
                self.member(v).then_some(v)
            }
            fn tagged_out(&self, v: u16) -> bool {
                match self {
                    _ if v == 0 => false,
                    Cfg::Access(_) => false,
                    Cfg::NativeUntagged(t, _) => v != *t,
                    _ => true,
                }
            }
            fn policy(&self) -> PortPolicy {
                let (mode, tag, trunks) = match self {
                    Cfg::None => return PortPolicy::default(),
                    Cfg::Access(t) => (VlanMode::Access, Some(*t), vec![]),
                    Cfg::Trunk(s) => (VlanMode::Trunk, None, s.clone()),
                    Cfg::NativeTagged(t, s) => (VlanMode::NativeTagged, Some(*t), s.clone()),
                    Cfg::NativeUntagged(t, s) => (VlanMode::NativeUntagged, Some(*t), s.clone()),
                };
                PortPolicy {
                    vlan: PortVlan::new(Some(mode), tag, &trunks).unwrap(),
                    ..PortPolicy::default()
                }
            }
        }

        /// The outer tag of a test frame.
        #[derive(Clone, Copy, Debug)]
        enum Tag {
            None,
            C { pcp: u8, vid: u16 },
            S(u16),
        }

        fn bytes(dst: [u8; 6], src: [u8; 6], tag: Tag) -> Vec<u8> {
            let mut b = Vec::with_capacity(64);
            b.extend_from_slice(&dst);
            b.extend_from_slice(&src);
            match tag {
                Tag::None => {}
                Tag::C { pcp, vid } => {
                    b.extend_from_slice(&[0x81, 0x00]);
                    b.extend_from_slice(&(u16::from(pcp) << 13 | vid).to_be_bytes());
                }
                Tag::S(vid) => {
                    b.extend_from_slice(&[0x88, 0xa8]);
                    b.extend_from_slice(&vid.to_be_bytes());
                }
            }
            b.extend_from_slice(&[0x08, 0x00]);
            b.extend_from_slice(&[0x5a; 46]);
            b
        }

        /// xorshift64*: random enough to pick settings and frames, and the
        /// same on every run.
        struct Rng(u64);
        impl Rng {
            fn below(&mut self, n: u64) -> u64 {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
            }
            fn vids(&mut self) -> Vec<u16> {
                (1..=3).filter(|_| self.below(2) == 0).collect()
            }
            fn cfg(&mut self) -> Cfg {
                let t = 1 + self.below(3) as u16;
                match self.below(5) {
                    0 => Cfg::None,
                    1 => Cfg::Access(t),
                    2 => Cfg::Trunk(self.vids()),
                    3 => Cfg::NativeTagged(t, self.vids()),
                    _ => Cfg::NativeUntagged(t, self.vids()),
                }
            }
        }

        const PORTS: u16 = 5;

        fn station(n: u64) -> [u8; 6] {
            [0x02, 0, 0, 0, 0, n as u8]
        }

        #[test]
        fn pipeline_decisions_equal_the_reference_model() {
            let pool = Mempool::for_tests(512);
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            for round in 0..300 {
                let cfgs: Vec<Cfg> = (0..PORTS).map(|_| rng.cfg()).collect();
                // Port security on some ports: only station `p` may send
                // from port `p` (MAC only: no IPs given).
                let secure: Vec<bool> = (0..PORTS).map(|_| rng.below(3) == 0).collect();
                let pipelined = cfgs.iter().any(Cfg::has_feature) || secure.iter().any(|&s| s);
                let sw = Switch::new();
                sw.update(|t| {
                    t.bridges.push(Some(Bridge {
                        id: BridgeId(0),
                        name: "br0".into(),
                        ports: (0..PORTS).map(PortId).collect(),
                        fdb: Arc::new(Fdb::new(&FdbConfig::default())),
                    }));
                    for (i, c) in cfgs.iter().enumerate() {
                        let e =
                            PortEntry::new(PortId(i as u16), "p", Some(BridgeId(0)), WorkerId(0));
                        e.link_up.store(true, Ordering::Relaxed);
                        t.ports.push(Some(Arc::new(e)));
                        let mut policy = c.policy();
                        if secure[i] {
                            let own = MacAddr(station(i as u64));
                            policy.security = Some(PortSecurity::new(&[own], &[]).unwrap());
                        }
                        t.set_policy(PortId(i as u16), Some(Arc::new(policy)));
                    }
                });
                let t = sw.load();
                assert_eq!(
                    !t.bridge_features(BridgeId(0)).is_empty(),
                    pipelined,
                    "{cfgs:?}"
                );
                let mut fwd = Forwarder::new();
                fwd.prepare(&t);
                let st = QueueStats::default();
                let mut fdb: HashMap<(u16, [u8; 6]), u16> = HashMap::new();
                // Bursts of up to 8 frames from one port, often repeating
                // the frame before (as a station's flow does).
                for _ in 0..16 {
                    let in_port = rng.below(u64::from(PORTS)) as u16;
                    let mut frames: Vec<([u8; 6], [u8; 6], Tag)> = Vec::new();
                    for _ in 0..1 + rng.below(8) {
                        if let (Some(&f), 0) = (frames.last(), rng.below(2)) {
                            frames.push(f);
                            continue;
                        }
                        let src = station(rng.below(6));
                        let dst = if rng.below(4) == 0 {
                            [0xff; 6]
                        } else {
                            station(rng.below(6))
                        };
                        let tag = match rng.below(6) {
                            0 | 1 => Tag::None,
                            2 => Tag::C {
                                pcp: rng.below(8) as u8,
                                vid: 0,
                            },
                            5 => Tag::S(1 + rng.below(3) as u16),
                            _ => Tag::C {
                                pcp: rng.below(8) as u8,
                                vid: 1 + rng.below(4) as u16,
                            },
                        };
                        frames.push((src, dst, tag));
                    }
                    // The model's decisions, frame by frame.
                    let mut want = Vec::new();
                    for &(src, dst, tag) in &frames {
                        let frame = bytes(dst, src, tag);
                        let vlan = if pipelined {
                            match tag {
                                Tag::S(_) => None,
                                Tag::None => cfgs[in_port as usize].vlan_in(0),
                                Tag::C { vid, .. } => cfgs[in_port as usize].vlan_in(vid),
                            }
                        } else {
                            Some(match tag {
                                Tag::None => 0,
                                Tag::C { vid, .. } | Tag::S(vid) => vid,
                            })
                        };
                        let spoofed =
                            secure[in_port as usize] && src != station(u64::from(in_port));
                        let (Some(v), false) = (vlan, spoofed) else {
                            continue;
                        };
                        fdb.insert((v, src), in_port);
                        let out_frame = |p: u16| -> Vec<u8> {
                            if !pipelined {
                                return frame.clone();
                            }
                            let pcp = match tag {
                                Tag::C { pcp, .. } => pcp,
                                _ => 0,
                            };
                            if cfgs[p as usize].tagged_out(v) {
                                bytes(dst, src, Tag::C { pcp, vid: v })
                            } else {
                                bytes(dst, src, Tag::None)
                            }
                        };
                        let floods = |want: &mut Vec<(u16, Vec<u8>)>| {
                            for p in (0..PORTS).filter(|&p| p != in_port) {
                                // A secured port gets unknown unicast only
                                // for its own station.
                                let unicast_not_its =
                                    dst[0] & 1 == 0 && dst != station(u64::from(p));
                                if secure[p as usize] && unicast_not_its {
                                    continue;
                                }
                                if !pipelined || cfgs[p as usize].member(v) {
                                    want.push((p, out_frame(p)));
                                }
                            }
                        };
                        match fdb.get(&(v, dst)) {
                            _ if dst[0] & 1 != 0 => floods(&mut want),
                            Some(&p) if p == in_port => {}
                            Some(&p) => want.push((p, out_frame(p))),
                            None => floods(&mut want),
                        }
                    }
                    // The switch's, for the whole burst.
                    let mut b = Burst::new();
                    for &(src, dst, tag) in &frames {
                        let mut m = pool.alloc().unwrap();
                        m.extend_from_slice(&bytes(dst, src, tag)).unwrap();
                        let _ = b.try_push(m);
                    }
                    fwd.process(&t, PortId(in_port), &mut b, 1, &st);
                    let mut got = Vec::new();
                    fwd.drain(|p, b| {
                        for m in b.drain(..) {
                            got.push((p.0, m.data().to_vec()));
                        }
                    });
                    got.sort();
                    want.sort();
                    assert_eq!(
                        got, want,
                        "round {round}: ports {cfgs:?}, burst {frames:?} on port {in_port}"
                    );
                }
                assert_eq!(pool.in_use(), 0);
            }
        }
    }
}
