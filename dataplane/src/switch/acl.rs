//! Security groups: ordered, stateless allow/deny rules over a frame's IP
//! header and ports, attached to a port for what it sends (`acl_in`) or
//! receives (`acl_out`).
//!
//! Layer: switch. The [`super::pipeline`] runs a port's `acl_in` after port
//! security and its `acl_out` per egress port; a frame a rule denies (or no
//! rule allows, under a deny default) is dropped as `acl-deny`.
//!
//! # Matching
//!
//! The first rule that matches decides; if none does, the table's default
//! action does. A rule matches on any of: direction, EtherType (IPv4, IPv6,
//! or another EtherType), IP protocol, source and destination prefix, source
//! and destination port ranges (TCP, UDP, SCTP), ICMP type and code. ARP and
//! IPv6 neighbour discovery (ICMPv6 133 to 136) pass whatever the default,
//! unless a rule names them (ARP by its EtherType, neighbour discovery by
//! protocol ICMPv6: the first such rule that matches decides), so that a
//! deny-by-default group, or one that ends with a rule denying everything,
//! does not cut a port off its neighbours. Fragments after the first carry
//! no ports: they match only rules without ports. An IPv6 packet whose first
//! next header is an extension header is classified on that header's number,
//! without ports.
//!
//! # Classifier
//!
//! Each direction and IP version has a bit-vector classifier: for every
//! field (source, destination, protocol, source port, destination port; ICMP
//! type and code take the ports' places, as in Open vSwitch) the field's
//! value space is cut into the intervals where the set of rules that match
//! it is constant, each with that set as a bit vector, one bit per rule in
//! order. A lookup finds each field's interval (a binary search for the
//! addresses, two table steps for the 16-bit fields) and ANDs the five
//! vectors a word at a time, stopping at the first word with a bit set: its
//! lowest bit is the first matching rule. Growing from 10 to 1 000 rules
//! adds about 7 steps to each address search and at most 15 words to the
//! AND, so the cost per frame stays within a small factor
//! (`benches/callgrind.sh`, cases `acl-10-new` and the like, where every
//! frame is a new flow). The vectors take about `5 × 2 × rules² / 8` bytes
//! per direction and IP version, built when the table changes (1 000
//! rules: about 1.2 MB each).
//!
//! # Flow cache
//!
//! The pipeline checks IPv4 frames through a [`FlowCache`] per worker
//! ([`Acl::check_cached`]): an exact-match, 2-way cache of 4 096 verdicts
//! keyed on the table's identity (its `id`, new for every compiled
//! table), the direction and the classifier's key (addresses, protocol,
//! ports or ICMP type and code). A frame of a flow seen recently skips the
//! classifier; a replaced table has a new identity, so none of the old
//! table's verdicts is ever used for it. IPv6 and other EtherTypes go to
//! the classifier every time.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::stats::DropReason;
use crate::wire::ethernet::ethertype;

/// Most rules one table may hold. The classifier's memory and build time
/// grow with the square of the rules: 1 024 rules take about 5 MB and tens
/// of milliseconds to compile (on the control thread, never a worker).
pub const MAX_RULES: usize = 1024;

/// IP protocol numbers the classifier knows the layout of.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// What a rule or a default does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Action {
    /// The frame goes on.
    #[default]
    Allow,
    /// The frame is dropped (`acl-deny`).
    Deny,
}

/// Which traffic of the port a rule applies to, seen from the switch: `In`
/// is what the port sends into the switch (its table attached as
/// `acl_in`), `Out` what the switch sends to it (`acl_out`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Frames entering the switch from the port.
    In,
    /// Frames leaving the switch to the port.
    Out,
    /// Both.
    #[default]
    Both,
}

/// An IP prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address (bits past `len` are ignored).
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub len: u8,
}

impl Cidr {
    /// The lowest and highest address of the prefix, as 128-bit numbers
    /// (IPv4 in the low 32 bits).
    fn range(&self) -> (u128, u128) {
        let (value, bits) = match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        let host = bits - u32::from(self.len.min(bits as u8));
        let mask = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        (value & !mask, value | mask)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/64`, or an address alone (a host prefix).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One rule. `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct AclRule {
    /// Traffic the rule applies to.
    pub direction: Direction,
    /// EtherType: IPv4 (0x0800), IPv6 (0x86dd) or another; `None`: IPv4 and
    /// IPv6 (or whichever the prefixes name).
    pub ether_type: Option<u16>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Source prefix.
    pub src: Option<Cidr>,
    /// Destination prefix.
    pub dst: Option<Cidr>,
    /// Source port range (TCP, UDP, SCTP).
    pub src_ports: Option<(u16, u16)>,
    /// Destination port range (TCP, UDP, SCTP).
    pub dst_ports: Option<(u16, u16)>,
    /// ICMP or ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP or ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// What a match does.
    pub action: Action,
}

/// Why a rule or table is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// Ports on a protocol without them.
    #[error("rule {rule}: ports need protocol tcp, udp or sctp")]
    PortsWithoutProto {
        /// Rule index (0-based).
        rule: usize,
    },
    /// ICMP fields on another protocol.
    #[error("rule {rule}: icmp_type and icmp_code need protocol icmp (IPv4) or icmpv6 (IPv6)")]
    IcmpWithoutProto {
        /// Rule index.
        rule: usize,
    },
    /// A port range whose start is past its end.
    #[error("rule {rule}: port range {lo}-{hi} is empty")]
    EmptyRange {
        /// Rule index.
        rule: usize,
        /// Start.
        lo: u16,
        /// End.
        hi: u16,
    },
    /// Prefixes or EtherType of different IP versions in one rule.
    #[error("rule {rule}: mixes IPv4 and IPv6 (prefixes and ether_type must agree)")]
    MixedVersions {
        /// Rule index.
        rule: usize,
    },
    /// IP fields on a non-IP EtherType.
    #[error("rule {rule}: ether_type {ether_type:#06x} is not IP: only action and direction may go with it")]
    FieldsOnNonIp {
        /// Rule index.
        rule: usize,
        /// The EtherType.
        ether_type: u16,
    },
    /// More than [`MAX_RULES`].
    #[error("{rules} rules: at most {MAX_RULES} per table")]
    TooManyRules {
        /// How many were given.
        rules: usize,
    },
}

/// The IP versions a rule applies to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Versions {
    V4,
    V6,
    Both,
    NonIp(u16),
}

impl AclRule {
    fn check(&self, i: usize) -> Result<Versions, AclError> {
        let v_of = |c: &Option<Cidr>| c.map(|c| c.addr.is_ipv4());
        let mut v4 = match self.ether_type {
            None => None,
            Some(ethertype::IPV4) => Some(true),
            Some(ethertype::IPV6) => Some(false),
            Some(other) => {
                let plain = AclRule {
                    direction: self.direction,
                    ether_type: self.ether_type,
                    action: self.action,
                    ..AclRule::default()
                };
                if *self != plain {
                    return Err(AclError::FieldsOnNonIp {
                        rule: i,
                        ether_type: other,
                    });
                }
                return Ok(Versions::NonIp(other));
            }
        };
        for c in [v_of(&self.src), v_of(&self.dst)].into_iter().flatten() {
            if v4.is_some_and(|v| v != c) {
                return Err(AclError::MixedVersions { rule: i });
            }
            v4 = Some(c);
        }
        let has_ports = self.src_ports.is_some() || self.dst_ports.is_some();
        if has_ports && !matches!(self.proto, Some(proto::TCP | proto::UDP | proto::SCTP)) {
            return Err(AclError::PortsWithoutProto { rule: i });
        }
        for (lo, hi) in [self.src_ports, self.dst_ports].into_iter().flatten() {
            if lo > hi {
                return Err(AclError::EmptyRange { rule: i, lo, hi });
            }
        }
        if self.icmp_type.is_some() || self.icmp_code.is_some() {
            match (self.proto, v4) {
                (Some(proto::ICMP), None | Some(true)) => v4 = Some(true),
                (Some(proto::ICMPV6), None | Some(false)) => v4 = Some(false),
                _ => return Err(AclError::IcmpWithoutProto { rule: i }),
            }
        }
        Ok(match v4 {
            None => Versions::Both,
            Some(true) => Versions::V4,
            Some(false) => Versions::V6,
        })
    }

    /// The rule's range on each classifier field: source, destination,
    /// protocol, source port (or ICMP type), destination port (or code).
    fn ranges(&self) -> [(u128, u128); 5] {
        let full = |bits: u32| {
            (
                0,
                if bits == 128 {
                    u128::MAX
                } else {
                    (1 << bits) - 1
                },
            )
        };
        let cidr = |c: &Option<Cidr>| c.map_or(full(128), |c| c.range());
        let one = |v: Option<u8>, bits| v.map_or(full(bits), |v| (u128::from(v), u128::from(v)));
        let port =
            |p: Option<(u16, u16)>| p.map_or(full(16), |(a, b)| (u128::from(a), u128::from(b)));
        let (sp, dp) = if self.icmp_type.is_some() || self.icmp_code.is_some() {
            (one(self.icmp_type, 16), one(self.icmp_code, 16))
        } else {
            (port(self.src_ports), port(self.dst_ports))
        };
        [cidr(&self.src), cidr(&self.dst), one(self.proto, 8), sp, dp]
    }
}

/// A field value as the classifier stores it: `u32` for IPv4 addresses,
/// protocols and ports, `u128` for IPv6 addresses. Narrow types keep the
/// binary searches cheap.
trait FieldValue: Copy + Ord + Default + std::fmt::Debug {
    /// `v`, or the type's largest value if it does not fit.
    fn saturate(v: u128) -> Self;
    /// The value as a `u128`.
    fn widen(self) -> u128;
}

impl FieldValue for u32 {
    fn saturate(v: u128) -> u32 {
        u32::try_from(v).unwrap_or(u32::MAX)
    }
    fn widen(self) -> u128 {
        u128::from(self)
    }
}

impl FieldValue for u128 {
    fn saturate(v: u128) -> u128 {
        v
    }
    fn widen(self) -> u128 {
        self
    }
}

/// One field's intervals and their rule sets.
#[derive(Clone, Debug, Default)]
struct Field<K> {
    /// Start of each interval, ascending; the first is 0.
    starts: Vec<K>,
    /// `words` words per interval: bit `r` set if rule `r` matches the
    /// interval's values.
    sets: Vec<u64>,
}

impl<K: FieldValue> Field<K> {
    fn build(ranges: &[(u128, u128)], words: usize) -> Field<K> {
        let max = K::saturate(u128::MAX);
        let ranges: Vec<(K, K)> = ranges
            .iter()
            .map(|&(lo, hi)| (K::saturate(lo), K::saturate(hi)))
            .collect();
        let mut starts: Vec<u128> = std::iter::once(0)
            .chain(
                ranges
                    .iter()
                    .flat_map(|&(lo, hi)| {
                        let lo = lo.widen();
                        let after = (hi < max).then(|| hi.widen() + 1);
                        [Some(lo), after]
                    })
                    .flatten(),
            )
            .collect();
        starts.sort_unstable();
        starts.dedup();
        let starts: Vec<K> = starts.into_iter().map(K::saturate).collect();
        let mut sets = vec![0u64; starts.len() * words];
        for (i, &s) in starts.iter().enumerate() {
            for (r, &(lo, hi)) in ranges.iter().enumerate() {
                if lo <= s && s <= hi {
                    sets[i * words + r / 64] |= 1 << (r % 64);
                }
            }
        }
        Field { starts, sets }
    }

    /// The index of `value`'s interval.
    #[inline]
    fn interval(&self, value: K) -> usize {
        self.starts
            .partition_point(|&s| s <= value)
            .saturating_sub(1)
    }
}

/// A field of 16-bit values (protocol, ports, ICMP type and code) looked up
/// by table instead of by search: each value's interval in two steps, by
/// its high byte (one interval for the whole block of 256 values, the usual
/// case) and, for blocks cut by some rule, by its low byte.
#[derive(Clone, Debug, Default)]
struct SmallField {
    /// Per high byte: an interval index, or [`SPLIT`] plus a block index.
    top: Vec<u32>,
    /// Interval index per low byte, for the blocks that need one.
    blocks: Vec<[u32; 256]>,
    /// The intervals' rule sets, as in [`Field::sets`].
    sets: Vec<u64>,
}

/// Marks a [`SmallField::top`] entry that names a block.
const SPLIT: u32 = 1 << 31;

impl SmallField {
    fn build(ranges: &[(u128, u128)], words: usize) -> SmallField {
        let f = Field::<u32>::build(ranges, words);
        let interval = |v: u32| f.starts.partition_point(|&s| s <= v).saturating_sub(1) as u32;
        let mut top = Vec::with_capacity(256);
        let mut blocks = Vec::new();
        for hi in 0..256u32 {
            let (first, last) = (interval(hi << 8), interval(hi << 8 | 0xff));
            if first == last {
                top.push(first);
            } else {
                top.push(SPLIT | blocks.len() as u32);
                blocks.push(std::array::from_fn(|lo| interval(hi << 8 | lo as u32)));
            }
        }
        SmallField {
            top,
            blocks,
            sets: f.sets,
        }
    }

    /// The index of `value`'s interval (`value` < 65 536).
    #[inline]
    fn interval(&self, value: u32) -> usize {
        let t = self.top.get((value >> 8) as usize).copied().unwrap_or(0);
        (if t & SPLIT == 0 {
            t
        } else {
            self.blocks
                .get((t & !SPLIT) as usize)
                .map_or(0, |b| b[(value & 0xff) as usize])
        }) as usize
    }
}

/// What the classifier looks up: source and destination address (`A`:
/// `u32` or `u128`), protocol, source port (or ICMP type), destination
/// port (or ICMP code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key<A> {
    src: A,
    dst: A,
    proto: u32,
    sport: u32,
    dport: u32,
}

/// The classifier of one direction and IP version.
#[derive(Clone, Debug, Default)]
struct Classifier<A> {
    /// Rule index in the table for each bit.
    rules: Vec<u32>,
    words: usize,
    src: Field<A>,
    dst: Field<A>,
    proto: SmallField,
    sport: SmallField,
    dport: SmallField,
}

impl<A: FieldValue> Classifier<A> {
    /// The classifier of the rules of `table` whose index `pick` accepts.
    fn build(table: &[AclRule], pick: impl Fn(usize) -> bool) -> Classifier<A> {
        let rules: Vec<u32> = (0..table.len() as u32)
            .filter(|&i| pick(i as usize))
            .collect();
        let words = rules.len().div_ceil(64).max(1);
        let ranges: Vec<[(u128, u128); 5]> =
            rules.iter().map(|&i| table[i as usize].ranges()).collect();
        let field = |f: usize| -> Vec<(u128, u128)> { ranges.iter().map(|x| x[f]).collect() };
        Classifier {
            src: Field::build(&field(0), words),
            dst: Field::build(&field(1), words),
            proto: SmallField::build(&field(2), words),
            sport: SmallField::build(&field(3), words),
            dport: SmallField::build(&field(4), words),
            rules,
            words,
        }
    }

    /// The table index of the first rule matching `key`, if any.
    #[inline]
    fn first<'a>(&'a self, key: &Key<A>) -> Option<usize> {
        // Each field's rule set starts `words` words times its interval
        // into the field's `sets`: one bounds check per field, and the AND
        // runs over slices of one length.
        let w = self.words;
        let set = |sets: &'a [u64], i: usize| sets.get(i * w..i * w + w);
        let a = set(&self.src.sets, self.src.interval(key.src))?;
        let b = set(&self.dst.sets, self.dst.interval(key.dst))?;
        let c = set(&self.proto.sets, self.proto.interval(key.proto))?;
        let d = set(&self.sport.sets, self.sport.interval(key.sport))?;
        let e = set(&self.dport.sets, self.dport.interval(key.dport))?;
        let words = a.iter().zip(b).zip(c).zip(d).zip(e);
        for (i, ((((a, b), c), d), e)) in words.enumerate() {
            let x = a & b & c & d & e;
            if x != 0 {
                let bit = i * 64 + x.trailing_zeros() as usize;
                return self.rules.get(bit).map(|&r| r as usize);
            }
        }
        None
    }
}

/// Source of the `id` of [`Acl`]s: one per compiled table, never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A security group: ordered rules and a default, compiled for lookup.
///
/// Immutable once compiled: a changed table is a new `Acl` (with a new
/// `id`), published with the switch's tables.
#[derive(Clone, Debug)]
pub struct Acl {
    /// This compilation's identity, which [`FlowCache`] keys verdicts on: a
    /// table built later never has the id of one a worker cached verdicts
    /// of, even at the same address. A clone keeps it (same rules, same
    /// verdicts).
    id: u64,
    rules: Vec<AclRule>,
    default: Action,
    /// IPv4 classifiers by direction (in, out).
    ip4: [Classifier<u32>; 2],
    /// IPv6 classifiers by direction (in, out).
    ip6: [Classifier<u128>; 2],
    /// IPv6 classifiers by direction of the rules with protocol ICMPv6: the
    /// only ones that decide neighbour discovery.
    nd: [Classifier<u128>; 2],
    /// Non-IP rules by direction: (EtherType, table index), in order.
    non_ip: [Vec<(u16, usize)>; 2],
}

impl PartialEq for Acl {
    fn eq(&self, o: &Acl) -> bool {
        self.rules == o.rules && self.default == o.default
    }
}

impl Eq for Acl {}

/// Which way a table is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// As a port's `acl_in`.
    In = 0,
    /// As a port's `acl_out`.
    Out = 1,
}

impl Acl {
    /// Compiles `rules` with `default` for frames no rule matches.
    ///
    /// # Errors
    ///
    /// The first rule that cannot be satisfied as written, or too many rules.
    pub fn new(rules: Vec<AclRule>, default: Action) -> Result<Acl, AclError> {
        if rules.len() > MAX_RULES {
            return Err(AclError::TooManyRules { rules: rules.len() });
        }
        let versions = rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.check(i))
            .collect::<Result<Vec<_>, _>>()?;
        let applies = |r: &AclRule, d: Applied| {
            matches!(
                (r.direction, d),
                (Direction::Both, _)
                    | (Direction::In, Applied::In)
                    | (Direction::Out, Applied::Out)
            )
        };
        let pick = |d: Applied, v4: bool| {
            let (rules, versions) = (&rules, &versions);
            move |i: usize| {
                applies(&rules[i], d)
                    && match versions[i] {
                        Versions::Both => true,
                        Versions::V4 => v4,
                        Versions::V6 => !v4,
                        Versions::NonIp(_) => false,
                    }
            }
        };
        let ip4 = [Applied::In, Applied::Out].map(|d| Classifier::build(&rules, pick(d, true)));
        let ip6 = [Applied::In, Applied::Out].map(|d| Classifier::build(&rules, pick(d, false)));
        let nd = [Applied::In, Applied::Out].map(|d| {
            let v6 = pick(d, false);
            let rules = &rules;
            Classifier::build(rules, move |i| {
                v6(i) && rules[i].proto == Some(proto::ICMPV6)
            })
        });
        let non_ip = [Applied::In, Applied::Out].map(|d| {
            versions
                .iter()
                .enumerate()
                .filter_map(|(i, v)| match v {
                    Versions::NonIp(t) if applies(&rules[i], d) => Some((*t, i)),
                    _ => None,
                })
                .collect()
        });
        Ok(Acl {
            // Relaxed: only uniqueness matters; the table itself is
            // published with the switch's tables.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            rules,
            default,
            ip4,
            ip6,
            nd,
            non_ip,
        })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[AclRule] {
        &self.rules
    }

    /// The default action.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// Decides a frame whose L3 header starts at `l3` (its EtherType in the
    /// two bytes before), applied as `dir`.
    ///
    /// # Errors
    ///
    /// [`DropReason::AclDeny`] if the frame may not pass.
    #[inline]
    pub fn check(&self, data: &[u8], l3: usize, dir: Applied) -> Result<(), DropReason> {
        let Some(&[hi, lo]) = data.get(l3.wrapping_sub(2)..l3) else {
            return Err(DropReason::Malformed);
        };
        let ether_type = u16::from_be_bytes([hi, lo]);
        let ip = data.get(l3..).unwrap_or_default();
        let first = match ether_type {
            ethertype::IPV4 => match ipv4_key(ip) {
                Some(k) => self.ip4[dir as usize].first(&k),
                None => return Err(DropReason::Malformed),
            },
            ethertype::IPV6 => match ipv6_key(ip) {
                Some(k) if is_nd(&k) => {
                    return match self.nd[dir as usize].first(&k) {
                        Some(i) => verdict(self.rules[i].action),
                        None => Ok(()),
                    }
                }
                Some(k) => self.ip6[dir as usize].first(&k),
                None => return Err(DropReason::Malformed),
            },
            other => {
                let hit = self.non_ip[dir as usize]
                    .iter()
                    .find(|&&(t, _)| t == other)
                    .map(|&(_, i)| self.rules[i].action);
                return match hit {
                    Some(a) => verdict(a),
                    None if other == ethertype::ARP => Ok(()),
                    None => verdict(self.default),
                };
            }
        };
        verdict(first.map_or(self.default, |i| self.rules[i].action))
    }
}

impl Acl {
    /// [`Acl::check`] through `flows`, a worker's cache of IPv4 verdicts:
    /// the same decision, without the classifier for a flow seen recently.
    ///
    /// # Errors
    ///
    /// As [`Acl::check`].
    #[inline(always)]
    pub fn check_cached(
        &self,
        data: &[u8],
        l3: usize,
        dir: Applied,
        flows: &mut FlowCache,
    ) -> Result<(), DropReason> {
        match data.get(l3.wrapping_sub(2)..l3) {
            Some(&[hi, lo]) if u16::from_be_bytes([hi, lo]) == ethertype::IPV4 => {}
            _ => return self.check_uncached(data, l3, dir),
        }
        let Some(k) = ipv4_key(data.get(l3..).unwrap_or_default()) else {
            return Err(DropReason::Malformed);
        };
        // An IPv4 verdict is a function of the table, the direction and the
        // classifier's key alone (see `check`): those are the cache's key.
        let table = self.id << 1 | dir as u64;
        let addrs = u64::from(k.src) << 32 | u64::from(k.dst);
        let ports = u64::from(k.proto) << 32 | u64::from(k.sport) << 16 | u64::from(k.dport);
        let allow = flows.get_or_insert(table, addrs, ports, || self.allows_ipv4(&k, dir));
        if allow {
            Ok(())
        } else {
            Err(DropReason::AclDeny)
        }
    }
}

impl Acl {
    /// [`Acl::check`], out of line: the frames [`Acl::check_cached`] does
    /// not cache.
    #[inline(never)]
    fn check_uncached(&self, data: &[u8], l3: usize, dir: Applied) -> Result<(), DropReason> {
        self.check(data, l3, dir)
    }

    /// Whether the classifier allows an IPv4 key: a flow cache miss, out
    /// of line.
    #[inline(never)]
    fn allows_ipv4(&self, k: &Key<u32>, dir: Applied) -> bool {
        self.ip4[dir as usize]
            .first(k)
            .map_or(self.default, |i| self.rules[i].action)
            == Action::Allow
    }
}

/// Sets of [`FlowCache`]: 2 048 of 2 ways, 128 KiB.
const FLOW_SETS: usize = 2048;

/// One [`FlowCache`] entry: the key (`table` 0 marks an empty one) and the
/// verdict.
#[derive(Clone, Copy, Debug, Default)]
struct FlowSlot {
    /// The table's `id` and the direction: `id << 1 | dir`.
    table: u64,
    /// Source and destination address.
    addrs: u64,
    /// Protocol, source port (or ICMP type), destination port (or code).
    ports: u64,
    allow: bool,
}

/// A worker's exact-match cache of recent IPv4 security group verdicts,
/// keyed on the table's identity (its `id`), the direction and the
/// fields the classifier looks at, so that a frame of a flow seen recently
/// skips the classifier.
///
/// Single writer (the worker that owns it), no lock, allocated once. Tables
/// are never changed in place: a changed table is compiled anew with a new
/// identity, so an entry of the old one is simply never matched again (and
/// is overwritten in time), and a rule change cannot be seen half-applied.
/// Two ways per set, the most recent first; a miss inserts at the front.
#[derive(Clone, Debug)]
pub struct FlowCache {
    slots: Box<[FlowSlot]>,
}

impl Default for FlowCache {
    fn default() -> Self {
        FlowCache::new()
    }
}

impl FlowCache {
    /// An empty cache (allocates; not for the packet path).
    pub fn new() -> FlowCache {
        FlowCache {
            slots: vec![FlowSlot::default(); FLOW_SETS * 2].into_boxed_slice(),
        }
    }

    /// The cached verdict of the key, or `decide`'s, then cached.
    #[inline]
    fn get_or_insert(
        &mut self,
        table: u64,
        addrs: u64,
        ports: u64,
        decide: impl FnOnce() -> bool,
    ) -> bool {
        let h = (addrs ^ ports.rotate_left(29) ^ table.rotate_left(47))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let set = (h >> (64 - FLOW_SETS.trailing_zeros())) as usize * 2;
        let Some([a, b]) = self.slots.get_mut(set..set + 2) else {
            return decide(); // never: `set` < FLOW_SETS
        };
        let hit = |s: &FlowSlot| s.table == table && s.addrs == addrs && s.ports == ports;
        if hit(a) {
            return a.allow;
        }
        if hit(b) {
            return b.allow;
        }
        let allow = decide();
        *b = *a;
        *a = FlowSlot {
            table,
            addrs,
            ports,
            allow,
        };
        allow
    }
}

#[inline]
fn verdict(a: Action) -> Result<(), DropReason> {
    match a {
        Action::Allow => Ok(()),
        Action::Deny => Err(DropReason::AclDeny),
    }
}

/// Source and destination port, or ICMP type and code, of a transport
/// header; zeros for a protocol without them.
#[inline]
fn l4_fields(proto_no: u8, l4: &[u8]) -> Option<(u32, u32)> {
    Some(match proto_no {
        proto::TCP | proto::UDP | proto::SCTP => {
            let p = l4.get(..4)?;
            (
                u32::from(u16::from_be_bytes([p[0], p[1]])),
                u32::from(u16::from_be_bytes([p[2], p[3]])),
            )
        }
        proto::ICMP | proto::ICMPV6 => {
            let p = l4.get(..2)?;
            (u32::from(p[0]), u32::from(p[1]))
        }
        _ => (0, 0),
    })
}

#[inline]
fn ipv4_key(ip: &[u8]) -> Option<Key<u32>> {
    let h = ip.first_chunk::<20>()?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let proto_no = h[9];
    // A fragment after the first has no transport header.
    let later_fragment = u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0;
    let (sport, dport) = if later_fragment {
        (0, 0)
    } else {
        l4_fields(proto_no, ip.get(ihl.max(20)..)?)?
    };
    Some(Key {
        src: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
        dst: u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
        proto: proto_no.into(),
        sport,
        dport,
    })
}

#[inline]
fn ipv6_key(ip: &[u8]) -> Option<Key<u128>> {
    let h = ip.first_chunk::<40>()?;
    let next = h[6];
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[at..at + 16]);
        u128::from_be_bytes(a)
    };
    let (sport, dport) = l4_fields(next, &ip[40..])?;
    Some(Key {
        src: addr(8),
        dst: addr(24),
        proto: next.into(),
        sport,
        dport,
    })
}

/// Router and neighbour solicitations and advertisements (ICMPv6 133..=136).
fn is_nd(key: &Key<u128>) -> bool {
    key.proto == u32::from(proto::ICMPV6) && (133..=136).contains(&key.sport)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0; 12];
        f.extend_from_slice(&ethertype::IPV4.to_be_bytes());
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto::TCP, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    fn icmp6(src: &str, ty: u8) -> Vec<u8> {
        let mut f = vec![0; 12];
        f.extend_from_slice(&ethertype::IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, proto::ICMPV6, 64]);
        f.extend_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&[ty, 0, 0, 0, 0, 0, 0, 0]);
        f
    }

    fn rule(f: impl FnOnce(&mut AclRule)) -> AclRule {
        let mut r = AclRule::default();
        f(&mut r);
        r
    }

    fn allow_http() -> Acl {
        Acl::new(
            vec![rule(|r| {
                r.proto = Some(proto::TCP);
                r.dst_ports = Some((80, 80));
            })],
            Action::Deny,
        )
        .unwrap()
    }

    #[test]
    fn first_matching_rule_decides_else_the_default() {
        let acl = allow_http();
        let f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80);
        assert_eq!(acl.check(&f, 14, Applied::In), Ok(()));
        let f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 81);
        assert_eq!(acl.check(&f, 14, Applied::In), Err(DropReason::AclDeny));
        // A deny before a broader allow wins.
        let acl = Acl::new(
            vec![
                rule(|r| {
                    r.src = Some("10.0.0.0/24".parse().unwrap());
                    r.action = Action::Deny;
                }),
                rule(|r| r.proto = Some(proto::TCP)),
            ],
            Action::Deny,
        )
        .unwrap();
        assert_eq!(
            acl.check(&tcp4([10, 0, 0, 9], [1, 1, 1, 1], 1, 80), 14, Applied::In),
            Err(DropReason::AclDeny)
        );
        assert_eq!(
            acl.check(&tcp4([10, 0, 1, 9], [1, 1, 1, 1], 1, 80), 14, Applied::In),
            Ok(())
        );
    }

    #[test]
    fn neighbour_discovery_and_arp_pass_a_deny_default() {
        let acl = allow_http();
        assert_eq!(acl.check(&icmp6("fe80::1", 135), 14, Applied::In), Ok(()));
        assert_eq!(
            acl.check(&icmp6("fe80::1", 128), 14, Applied::In),
            Err(DropReason::AclDeny)
        );
        let mut arp = vec![0; 12];
        arp.extend_from_slice(&ethertype::ARP.to_be_bytes());
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(acl.check(&arp, 14, Applied::In), Ok(()));
        // Unless a rule names ARP.
        let deny_arp = Acl::new(
            vec![rule(|r| {
                r.ether_type = Some(ethertype::ARP);
                r.action = Action::Deny;
            })],
            Action::Allow,
        )
        .unwrap();
        assert_eq!(
            deny_arp.check(&arp, 14, Applied::In),
            Err(DropReason::AclDeny)
        );
    }

    #[test]
    fn only_rules_with_protocol_icmpv6_decide_neighbour_discovery() {
        let deny = |f: fn(&mut AclRule)| {
            rule(|r| {
                f(r);
                r.action = Action::Deny;
            })
        };
        let (ns, na, echo) = (
            icmp6("fe80::1", 135),
            icmp6("fe80::1", 136),
            icmp6("fe80::1", 128),
        );
        // A table that ends denying everything, or all of IPv6, keeps its
        // neighbours, as a deny default does (and as ARP is kept).
        for last in [deny(|_| {}), deny(|r| r.ether_type = Some(ethertype::IPV6))] {
            let acl = Acl::new(vec![allow_http().rules()[0].clone(), last], Action::Allow).unwrap();
            assert_eq!(acl.check(&ns, 14, Applied::In), Ok(()));
            assert_eq!(acl.check(&na, 14, Applied::Out), Ok(()));
            assert_eq!(acl.check(&echo, 14, Applied::In), Err(DropReason::AclDeny));
        }
        // A rule naming ICMPv6 decides, wherever it stands: here after one
        // that matches every packet from link-local sources.
        let acl = Acl::new(
            vec![
                rule(|r| r.src = Some("fe80::/10".parse().unwrap())),
                deny(|r| {
                    r.proto = Some(proto::ICMPV6);
                    r.icmp_type = Some(135);
                }),
                deny(|r| r.proto = Some(proto::ICMPV6)),
            ],
            Action::Allow,
        )
        .unwrap();
        assert_eq!(acl.check(&ns, 14, Applied::In), Err(DropReason::AclDeny));
        assert_eq!(acl.check(&na, 14, Applied::In), Err(DropReason::AclDeny));
        assert_eq!(acl.check(&echo, 14, Applied::In), Ok(()), "the first rule");
    }

    #[test]
    fn direction_picks_the_rules() {
        let acl = Acl::new(
            vec![rule(|r| {
                r.direction = Direction::Out;
                r.action = Action::Deny;
            })],
            Action::Allow,
        )
        .unwrap();
        let f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2);
        assert_eq!(acl.check(&f, 14, Applied::In), Ok(()));
        assert_eq!(acl.check(&f, 14, Applied::Out), Err(DropReason::AclDeny));
    }

    #[test]
    fn bad_rules_are_refused_with_their_index() {
        let bad = [
            (
                rule(|r| r.dst_ports = Some((80, 80))),
                AclError::PortsWithoutProto { rule: 0 },
            ),
            (
                rule(|r| {
                    r.proto = Some(proto::TCP);
                    r.icmp_type = Some(8);
                }),
                AclError::IcmpWithoutProto { rule: 0 },
            ),
            (
                rule(|r| {
                    r.proto = Some(proto::UDP);
                    r.src_ports = Some((9, 3));
                }),
                AclError::EmptyRange {
                    rule: 0,
                    lo: 9,
                    hi: 3,
                },
            ),
            (
                rule(|r| {
                    r.src = Some("10.0.0.0/8".parse().unwrap());
                    r.dst = Some("fd00::/8".parse().unwrap());
                }),
                AclError::MixedVersions { rule: 0 },
            ),
            (
                rule(|r| {
                    r.ether_type = Some(ethertype::ARP);
                    r.proto = Some(6);
                }),
                AclError::FieldsOnNonIp {
                    rule: 0,
                    ether_type: ethertype::ARP,
                },
            ),
        ];
        for (r, e) in bad {
            assert_eq!(Acl::new(vec![r], Action::Allow).unwrap_err(), e);
        }
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().len, 32);
    }

    #[test]
    fn a_full_table_compiles_and_one_rule_more_is_refused() {
        let rule = |i: usize| AclRule {
            proto: Some(proto::UDP),
            dst_ports: Some((i as u16, i as u16)),
            action: Action::Deny,
            ..AclRule::default()
        };
        let full: Vec<AclRule> = (0..MAX_RULES).map(rule).collect();
        let acl = Acl::new(full.clone(), Action::Allow).unwrap();
        let mut f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 5, 1023);
        f[23] = proto::UDP;
        assert_eq!(acl.check(&f, 14, Applied::In), Err(DropReason::AclDeny));
        let mut over = full;
        over.push(rule(0));
        assert_eq!(
            Acl::new(over, Action::Allow).unwrap_err(),
            AclError::TooManyRules {
                rules: MAX_RULES + 1
            }
        );
    }

    #[test]
    fn truncated_ip_headers_are_malformed() {
        let acl = allow_http();
        let f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80);
        for len in 14..38 {
            assert_eq!(
                acl.check(&f[..len], 14, Applied::In),
                Err(DropReason::Malformed),
                "{len}"
            );
        }
    }

    /// Random tables and frames, many of them repeated: the flow cache gives
    /// the classifier's verdict, also after the table is replaced by one with
    /// the opposite actions (compiled after the old one is freed, so it may
    /// take its place in memory) while the cache still holds the old
    /// table's verdicts.
    #[test]
    fn flow_cache_gives_the_classifiers_verdicts_across_table_changes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut flows = FlowCache::new();
        for _ in 0..100 {
            let n = 1 + next(40) as usize;
            let rules: Vec<AclRule> = (0..n)
                .map(|_| {
                    let direction = [Direction::In, Direction::Out, Direction::Both];
                    let mut r = AclRule {
                        direction: direction[next(3) as usize],
                        ..AclRule::default()
                    };
                    if next(2) == 0 {
                        r.src = Some(Cidr {
                            addr: IpAddr::from([10, 0, 0, next(4) as u8]),
                            len: [24, 31, 32][next(3) as usize],
                        });
                    }
                    match next(4) {
                        0 => {
                            r.proto = Some(proto::TCP);
                            let lo = next(6) as u16;
                            r.dst_ports = Some((lo, lo + next(3) as u16));
                        }
                        1 => {
                            r.proto = Some(proto::ICMP);
                            r.icmp_type = Some(next(3) as u8);
                        }
                        2 => r.proto = Some(proto::UDP),
                        _ => {}
                    }
                    r.action = [Action::Allow, Action::Deny][next(2) as usize];
                    r
                })
                .collect();
            let frames: Vec<Vec<u8>> = (0..300)
                .map(|_| {
                    let src = [10, 0, 0, next(4) as u8];
                    let mut f = tcp4(src, [10, 0, 0, 9], next(3) as u16, next(8) as u16);
                    f[23] = [proto::TCP, proto::UDP, proto::ICMP][next(3) as usize];
                    if next(8) == 0 {
                        f[21] = 1; // a later fragment: no ports
                    }
                    f
                })
                .collect();
            let old = Acl::new(rules.clone(), Action::Deny).unwrap();
            for f in &frames {
                for dir in [Applied::In, Applied::Out] {
                    let want = old.check(f, 14, dir);
                    assert_eq!(old.check_cached(f, 14, dir, &mut flows), want, "{rules:?}");
                }
            }
            drop(old);
            let flipped: Vec<AclRule> = rules
                .into_iter()
                .map(|mut r| {
                    r.action = match r.action {
                        Action::Allow => Action::Deny,
                        Action::Deny => Action::Allow,
                    };
                    r
                })
                .collect();
            let new = Acl::new(flipped.clone(), Action::Allow).unwrap();
            for f in &frames {
                for dir in [Applied::In, Applied::Out] {
                    let want = new.check(f, 14, dir);
                    assert_eq!(
                        new.check_cached(f, 14, dir, &mut flows),
                        want,
                        "{flipped:?}"
                    );
                }
            }
        }
    }

    /// Random tables and packets: the classifier's first match equals a
    /// plain scan of the rules in order.
    #[test]
    fn classifier_equals_a_linear_scan() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200 {
            let n = 1 + next(150) as usize;
            let rules: Vec<AclRule> = (0..n)
                .map(|_| {
                    let mut r = AclRule::default();
                    if next(2) == 0 {
                        r.src = Some(Cidr {
                            addr: IpAddr::from([10, 0, next(4) as u8, next(4) as u8]),
                            len: [8, 16, 24, 30, 32][next(5) as usize],
                        });
                    }
                    if next(3) == 0 {
                        r.dst = Some(Cidr {
                            addr: IpAddr::from([10, 0, next(4) as u8, 0]),
                            len: [0, 16, 24][next(3) as usize],
                        });
                    }
                    if next(2) == 0 {
                        r.proto = Some([proto::TCP, proto::UDP][next(2) as usize]);
                        if next(2) == 0 {
                            let lo = next(100) as u16;
                            r.dst_ports = Some((lo, lo + next(20) as u16));
                        }
                        if next(4) == 0 {
                            let lo = next(100) as u16;
                            r.src_ports = Some((lo, lo + next(5) as u16));
                        }
                    }
                    r.action = if next(2) == 0 {
                        Action::Allow
                    } else {
                        Action::Deny
                    };
                    r
                })
                .collect();
            let acl = Acl::new(rules.clone(), Action::Deny).unwrap();
            for _ in 0..200 {
                let src = [10, 0, next(4) as u8, next(8) as u8];
                let dst = [10, 0, next(4) as u8, next(8) as u8];
                let (sp, dp) = (next(110) as u16, next(130) as u16);
                let f = tcp4(src, dst, sp, dp);
                let key = (src, dst, sp, dp);
                let in_prefix = |c: &Option<Cidr>, a: [u8; 4]| {
                    c.is_none_or(|c| {
                        let IpAddr::V4(net) = c.addr else {
                            return false;
                        };
                        let mask = u32::MAX.checked_shl(32 - u32::from(c.len)).unwrap_or(0);
                        u32::from(net) & mask == u32::from_be_bytes(a) & mask
                    })
                };
                let in_range =
                    |r: Option<(u16, u16)>, p: u16| r.is_none_or(|(lo, hi)| lo <= p && p <= hi);
                let scan = rules.iter().find(|r| {
                    in_prefix(&r.src, src)
                        && in_prefix(&r.dst, dst)
                        && r.proto.is_none_or(|p| p == proto::TCP)
                        && in_range(r.src_ports, sp)
                        && in_range(r.dst_ports, dp)
                });
                let want = verdict(scan.map_or(Action::Deny, |r| r.action));
                assert_eq!(acl.check(&f, 14, Applied::In), want, "{rules:?} {key:?}");
            }
        }
    }
}
