//! Security groups as configured: an `[[acl]]` table of a configuration
//! file, the body of an `acl add` request, or a rule written on the command
//! line, and how each becomes the switch's [`Acl`].
//!
//! Control plane only. The keys are typed as they are read ([`EtherType`],
//! [`Protocol`], [`Prefix`], [`PortRange`]), so a value that cannot be one
//! is refused with its position by the parser; whether a rule makes sense as
//! a whole (ports without TCP, UDP or SCTP, IPv4 and IPv6 prefixes in one
//! rule, ...) is the switch's own check, [`Acl::new`], and [`AclSpec::compile`]
//! only names the key its error is about.
//!
//! ```toml
//! [[acl]]
//! name = "web"
//! default = "deny"          # allow | deny; absent: deny
//!
//! [[acl.rule]]
//! direction = "in"          # in | out | both; absent: both
//! protocol = "tcp"
//! dst_ports = 80            # a port, or a range "8000-8080"
//! action = "allow"
//! ```
//!
//! The same rule on the command line (`weir acl add web --rule ...`) is
//! `in tcp dst_ports=80 allow` ([`AclRuleSpec`]'s `FromStr` and `Display`).

use std::fmt;
use std::str::FromStr;

use dataplane::switch::acl::{proto, Acl, AclError, AclRule, Action, Cidr, Direction};
use dataplane::wire::ethernet::ethertype;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{is_valid_name, NAME_RULE};

/// What a rule does to the frames it matches, or a table to those no rule
/// matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    /// The frame goes on.
    Allow,
    /// The frame is dropped and counted as `acl-deny`. A table's default
    /// when none is given, as in OpenStack security groups.
    #[default]
    Deny,
}

impl AclAction {
    /// The name used in configs and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            AclAction::Allow => "allow",
            AclAction::Deny => "deny",
        }
    }

    fn action(self) -> Action {
        match self {
            AclAction::Allow => Action::Allow,
            AclAction::Deny => Action::Deny,
        }
    }
}

impl fmt::Display for AclAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AclAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(AclAction::Allow),
            "deny" => Ok(AclAction::Deny),
            _ => Err(format!("unknown action `{s}`, expected allow or deny")),
        }
    }
}

/// Which of a port's traffic a rule applies to, seen from the switch: `in`
/// is what the port sends (the table attached as the port's `acl_in`),
/// `out` what the switch sends to it (`acl_out`). OpenStack's `ingress`
/// (into the VM) is `out`, its `egress` is `in`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclDirection {
    /// What the port sends into the switch.
    In,
    /// What the switch sends to the port.
    Out,
    /// Both (the default).
    #[default]
    Both,
}

impl AclDirection {
    /// The name used in configs and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            AclDirection::In => "in",
            AclDirection::Out => "out",
            AclDirection::Both => "both",
        }
    }

    fn is_both(&self) -> bool {
        *self == AclDirection::Both
    }
}

impl FromStr for AclDirection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "in" => Ok(AclDirection::In),
            "out" => Ok(AclDirection::Out),
            "both" => Ok(AclDirection::Both),
            _ => Err(format!("unknown direction `{s}`, expected in, out or both")),
        }
    }
}

/// A value written as text or as a number in a config or request.
trait Scalar: FromStr<Err = String> {
    /// What a value looks like, for errors.
    const EXPECTING: &'static str;
    /// The value of a number.
    fn from_number(n: i128) -> Result<Self, String>;
}

/// Deserializes a [`Scalar`] from a string or an integer.
fn deserialize_scalar<'de, D: Deserializer<'de>, T: Scalar>(d: D) -> Result<T, D::Error> {
    struct Visitor<T>(std::marker::PhantomData<T>);
    impl<T: Scalar> serde::de::Visitor<'_> for Visitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            T::from_number(v.into()).map_err(E::custom)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            T::from_number(v.into()).map_err(E::custom)
        }
    }
    d.deserialize_any(Visitor(std::marker::PhantomData))
}

/// Implements `Deserialize` through [`Scalar`].
macro_rules! scalar_deserialize {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_scalar(d)
            }
        }
    };
}

/// An EtherType: `ipv4`, `ipv6`, `arp`, or a number (`0x88cc`, `35020`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

/// EtherTypes known by name.
const ETHER_TYPES: [(&str, u16); 3] = [
    ("ipv4", ethertype::IPV4),
    ("ipv6", ethertype::IPV6),
    ("arp", ethertype::ARP),
];

impl EtherType {
    fn name(self) -> Option<&'static str> {
        ETHER_TYPES.iter().find(|e| e.1 == self.0).map(|e| e.0)
    }
}

impl Scalar for EtherType {
    const EXPECTING: &'static str = "an EtherType: ipv4, ipv6, arp or a number such as 0x88cc";

    fn from_number(n: i128) -> Result<Self, String> {
        u16::try_from(n)
            .map(EtherType)
            .map_err(|_| format!("EtherType {n} is out of range (0..=0xffff)"))
    }
}

impl FromStr for EtherType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(&(_, t)) = ETHER_TYPES.iter().find(|e| e.0 == s) {
            return Ok(EtherType(t));
        }
        parse_number(s)
            .ok_or_else(|| format!("unknown ether_type `{s}`, expected {}", Self::EXPECTING))
            .and_then(Self::from_number)
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{:#06x}", self.0),
        }
    }
}

impl Serialize for EtherType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

scalar_deserialize!(EtherType);

/// An IP protocol: `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, or its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

/// Protocols known by name.
const PROTOCOLS: [(&str, u8); 5] = [
    ("tcp", proto::TCP),
    ("udp", proto::UDP),
    ("icmp", proto::ICMP),
    ("icmpv6", proto::ICMPV6),
    ("sctp", proto::SCTP),
];

impl Protocol {
    fn name(self) -> Option<&'static str> {
        PROTOCOLS.iter().find(|p| p.1 == self.0).map(|p| p.0)
    }
}

impl Scalar for Protocol {
    const EXPECTING: &'static str = "a protocol: tcp, udp, icmp, icmpv6, sctp or a number 0..=255";

    fn from_number(n: i128) -> Result<Self, String> {
        u8::try_from(n)
            .map(Protocol)
            .map_err(|_| format!("protocol {n} is out of range (0..=255)"))
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(&(_, p)) = PROTOCOLS.iter().find(|p| p.0 == s) {
            return Ok(Protocol(p));
        }
        parse_number(s)
            .ok_or_else(|| format!("unknown protocol `{s}`, expected {}", Self::EXPECTING))
            .and_then(Self::from_number)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_u8(self.0),
        }
    }
}

scalar_deserialize!(Protocol);

/// A decimal or `0x` hexadecimal number.
fn parse_number(s: &str) -> Option<i128> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// An IP prefix (`10.0.0.0/24`, `fd00::/64`) or address (a host prefix):
/// the switch's [`Cidr`], written as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix(pub Cidr);

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Prefix)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A range of TCP, UDP or SCTP ports: one port (`80`) or `first-last`
/// (`"1024-65535"`). An empty range (`"90-80"`) is read as written and
/// refused by [`Acl::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port (the first, for a single port).
    pub last: u16,
}

impl Scalar for PortRange {
    const EXPECTING: &'static str = "a port or a range of ports such as \"1024-65535\"";

    fn from_number(n: i128) -> Result<Self, String> {
        u16::try_from(n)
            .map(|p| PortRange { first: p, last: p })
            .map_err(|_| format!("port {n} is out of range (0..=65535)"))
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{s}` is not {}", Self::EXPECTING))
        };
        match s.split_once('-') {
            Some((a, b)) => Ok(PortRange {
                first: port(a)?,
                last: port(b)?,
            }),
            None => port(s).map(|p| PortRange { first: p, last: p }),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

scalar_deserialize!(PortRange);

/// One rule as written: an `[[acl.rule]]` table, an element of an `acl add`
/// request's `rule` list, or the text of a `--rule` ([`FromStr`]). Absent
/// keys match anything; `action` is required.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRuleSpec {
    /// Which of the port's traffic the rule applies to; absent: both.
    #[serde(default, skip_serializing_if = "AclDirection::is_both")]
    pub direction: AclDirection,
    /// EtherType; absent: IPv4 and IPv6 (or the version the prefixes name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ether_type: Option<EtherType>,
    /// IP protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Source prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Prefix>,
    /// Destination prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Prefix>,
    /// Source ports (TCP, UDP, SCTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<PortRange>,
    /// Destination ports (TCP, UDP, SCTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<PortRange>,
    /// ICMP or ICMPv6 type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP or ICMPv6 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// What a match does.
    pub action: AclAction,
}

impl AclRuleSpec {
    /// A rule that matches everything and does `action`.
    pub fn new(action: AclAction) -> AclRuleSpec {
        AclRuleSpec {
            direction: AclDirection::Both,
            ether_type: None,
            protocol: None,
            src: None,
            dst: None,
            src_ports: None,
            dst_ports: None,
            icmp_type: None,
            icmp_code: None,
            action,
        }
    }

    /// The switch's form of the rule.
    pub fn to_rule(&self) -> AclRule {
        AclRule {
            direction: match self.direction {
                AclDirection::In => Direction::In,
                AclDirection::Out => Direction::Out,
                AclDirection::Both => Direction::Both,
            },
            ether_type: self.ether_type.map(|e| e.0),
            proto: self.protocol.map(|p| p.0),
            src: self.src.map(|p| p.0),
            dst: self.dst.map(|p| p.0),
            src_ports: self.src_ports.map(|r| (r.first, r.last)),
            dst_ports: self.dst_ports.map(|r| (r.first, r.last)),
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            action: self.action.action(),
        }
    }

    /// The key an [`AclError`] about this rule is about, if one.
    fn key_of(&self, error: &AclError) -> Option<&'static str> {
        let first = |keys: [(&'static str, bool); 2]| keys.into_iter().find(|k| k.1).map(|k| k.0);
        match error {
            AclError::PortsWithoutProto { .. } => first([
                ("dst_ports", self.dst_ports.is_some()),
                ("src_ports", self.src_ports.is_some()),
            ]),
            AclError::IcmpWithoutProto { .. } => first([
                ("icmp_type", self.icmp_type.is_some()),
                ("icmp_code", self.icmp_code.is_some()),
            ]),
            AclError::EmptyRange { lo, hi, .. } => {
                let empty =
                    |r: Option<PortRange>| r.is_some_and(|r| (r.first, r.last) == (*lo, *hi));
                first([
                    ("src_ports", empty(self.src_ports)),
                    ("dst_ports", empty(self.dst_ports)),
                ])
            }
            AclError::MixedVersions { .. } => {
                first([("dst", self.dst.is_some()), ("src", self.src.is_some())])
            }
            AclError::FieldsOnNonIp { .. } => Some("ether_type"),
            AclError::TooManyRules { .. } => None,
        }
    }
}

/// Bare words a rule's text may use for a key's value.
fn bare_word(rule: &mut AclRuleSpec, word: &str) -> Option<&'static str> {
    if let Ok(d) = word.parse::<AclDirection>() {
        rule.direction = d;
        return Some("direction");
    }
    if let Ok(a) = word.parse::<AclAction>() {
        rule.action = a;
        return Some("action");
    }
    if let Some(&(_, p)) = PROTOCOLS.iter().find(|p| p.0 == word) {
        rule.protocol = Some(Protocol(p));
        return Some("protocol");
    }
    if let Some(&(_, t)) = ETHER_TYPES.iter().find(|e| e.0 == word) {
        rule.ether_type = Some(EtherType(t));
        return Some("ether_type");
    }
    None
}

/// The keys of a rule, in the order its text lists them.
const RULE_KEYS: [&str; 10] = [
    "direction",
    "ether_type",
    "protocol",
    "src",
    "dst",
    "src_ports",
    "dst_ports",
    "icmp_type",
    "icmp_code",
    "action",
];

/// Sets `key` of `rule` from its text form.
fn set_key(rule: &mut AclRuleSpec, key: &str, value: &str) -> Result<&'static str, String> {
    let byte = |v: &str| {
        v.parse::<u8>()
            .map_err(|_| format!("{key} `{v}` is not a number 0..=255"))
    };
    let key: &'static str = RULE_KEYS.into_iter().find(|k| *k == key).ok_or_else(|| {
        format!(
            "unknown key `{key}`, expected one of {}",
            RULE_KEYS.join(", ")
        )
    })?;
    match key {
        "direction" => rule.direction = value.parse()?,
        "ether_type" => rule.ether_type = Some(value.parse()?),
        "protocol" => rule.protocol = Some(value.parse()?),
        "src" => rule.src = Some(value.parse()?),
        "dst" => rule.dst = Some(value.parse()?),
        "src_ports" => rule.src_ports = Some(value.parse()?),
        "dst_ports" => rule.dst_ports = Some(value.parse()?),
        "icmp_type" => rule.icmp_type = Some(byte(value)?),
        "icmp_code" => rule.icmp_code = Some(byte(value)?),
        _ => rule.action = value.parse()?,
    }
    Ok(key)
}

impl FromStr for AclRuleSpec {
    type Err = String;

    /// A rule written as words separated by spaces, in any order: `KEY=VALUE`
    /// for any key of an `[[acl.rule]]` table, or a bare `in`, `out`,
    /// `both` (direction), `allow`, `deny` (action), `tcp`, `udp`, `icmp`,
    /// `icmpv6`, `sctp` (protocol), `ipv4`, `ipv6`, `arp` (EtherType):
    /// `in tcp dst_ports=80 allow`. The action is required; a key may be
    /// given once.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut rule = AclRuleSpec::new(AclAction::Deny);
        let mut seen: Vec<&'static str> = Vec::new();
        for word in s.split_whitespace() {
            let key = match word.split_once('=') {
                Some((k, v)) => set_key(&mut rule, k, v)?,
                None => bare_word(&mut rule, word).ok_or_else(|| {
                    format!(
                        "unknown word `{word}`: expected KEY=VALUE or one of in, out, both, \
                         allow, deny, tcp, udp, icmp, icmpv6, sctp, ipv4, ipv6, arp"
                    )
                })?,
            };
            if seen.contains(&key) {
                return Err(format!("`{word}`: {key} is given twice"));
            }
            seen.push(key);
        }
        if !seen.contains(&"action") {
            return Err(format!("rule `{s}` has no action: add allow or deny"));
        }
        Ok(rule)
    }
}

impl fmt::Display for AclRuleSpec {
    /// The rule's text, as [`FromStr`] reads it: the keys that are set, in
    /// order of an `[[acl.rule]]` table's keys, named values as bare words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        if !self.direction.is_both() {
            words.push(self.direction.as_str().into());
        }
        if let Some(e) = self.ether_type {
            words.push(match e.name() {
                Some(n) => n.into(),
                None => format!("ether_type={e}"),
            });
        }
        if let Some(p) = self.protocol {
            words.push(match p.name() {
                Some(n) => n.into(),
                None => format!("protocol={p}"),
            });
        }
        let mut kv = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                words.push(format!("{k}={v}"));
            }
        };
        kv("src", self.src.map(|p| p.to_string()));
        kv("dst", self.dst.map(|p| p.to_string()));
        kv("src_ports", self.src_ports.map(|p| p.to_string()));
        kv("dst_ports", self.dst_ports.map(|p| p.to_string()));
        kv("icmp_type", self.icmp_type.map(|p| p.to_string()));
        kv("icmp_code", self.icmp_code.map(|p| p.to_string()));
        words.push(self.action.as_str().into());
        f.write_str(&words.join(" "))
    }
}

/// A security group as written: an `[[acl]]` table, or the body of an
/// `acl add` request (the same keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSpec {
    /// The table's name ([`NAME_RULE`]); ports name it in `acl_in` and
    /// `acl_out`.
    pub name: String,
    /// What happens to frames no rule matches; absent: deny.
    #[serde(default)]
    pub default: AclAction,
    /// The rules, in order: the first that matches decides.
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AclRuleSpec>,
}

/// Why an [`AclSpec`] is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclSpecError {
    /// The name does not match [`NAME_RULE`].
    #[error("invalid ACL name `{name}`: must be {NAME_RULE}")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The switch refuses a rule, or the number of rules.
    #[error("{error}")]
    Rules {
        /// The key of the rule at fault, if the error is about one.
        key: Option<&'static str>,
        /// The switch's reason, naming the rule by its index (from 0).
        error: AclError,
    },
}

/// The index of the rule an [`AclError`] is about, if one.
fn rule_index(error: &AclError) -> Option<usize> {
    match error {
        AclError::PortsWithoutProto { rule }
        | AclError::IcmpWithoutProto { rule }
        | AclError::EmptyRange { rule, .. }
        | AclError::MixedVersions { rule }
        | AclError::FieldsOnNonIp { rule, .. } => Some(*rule),
        AclError::TooManyRules { .. } => None,
    }
}

impl AclSpecError {
    /// The index of the rule at fault (from 0) and its key, if known.
    pub fn rule_key(&self) -> (Option<usize>, Option<&'static str>) {
        match self {
            AclSpecError::InvalidName { .. } => (None, Some("name")),
            AclSpecError::Rules { key, error } => (rule_index(error), *key),
        }
    }
}

impl AclSpec {
    /// An empty table named `name` with default `default`.
    pub fn new(name: impl Into<String>, default: AclAction) -> AclSpec {
        AclSpec {
            name: name.into(),
            default,
            rules: Vec::new(),
        }
    }

    /// Checks the table and compiles it for the switch: the name, then
    /// every rule with the switch's own checks ([`Acl::new`]).
    ///
    /// # Errors
    ///
    /// [`AclSpecError`], naming the rule and key at fault.
    pub fn compile(&self) -> Result<Acl, AclSpecError> {
        if !is_valid_name(&self.name) {
            return Err(AclSpecError::InvalidName {
                name: self.name.clone(),
            });
        }
        let rules = self.rules.iter().map(AclRuleSpec::to_rule).collect();
        Acl::new(rules, self.default.action()).map_err(|error| {
            let key = rule_index(&error)
                .and_then(|r| self.rules.get(r))
                .and_then(|r| r.key_of(&error));
            AclSpecError::Rules { key, error }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_text_reads_bare_words_and_keys_and_prints_back() {
        let r: AclRuleSpec = "in tcp dst_ports=80 allow".parse().unwrap();
        assert_eq!(r.direction, AclDirection::In);
        assert_eq!(r.protocol, Some(Protocol(proto::TCP)));
        assert_eq!(
            r.dst_ports,
            Some(PortRange {
                first: 80,
                last: 80
            })
        );
        assert_eq!(r.action, AclAction::Allow);
        assert_eq!(r.to_string(), "in tcp dst_ports=80 allow");
        for text in [
            "deny",
            "out ipv6 icmpv6 src=fd00::/64 icmp_type=128 icmp_code=0 allow",
            "ether_type=0x88cc deny",
            "ipv4 protocol=47 dst=10.0.0.5/32 allow",
            "udp src=10.0.0.0/24 src_ports=1024-65535 dst_ports=53 allow",
        ] {
            let r: AclRuleSpec = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.to_string(), text);
        }
        // Keys for everything, in any order, the same rule.
        let keyed: AclRuleSpec = "action=allow dst_ports=80 protocol=6 direction=in"
            .parse()
            .unwrap();
        assert_eq!(keyed, r_in_tcp_80());
    }

    fn r_in_tcp_80() -> AclRuleSpec {
        "in tcp dst_ports=80 allow".parse().unwrap()
    }

    #[test]
    fn bad_rule_text_says_what_is_wrong() {
        for (text, msg) in [
            ("tcp dst_ports=80", "has no action"),
            ("in out allow", "direction is given twice"),
            ("tcp udp allow", "protocol is given twice"),
            ("gre allow", "unknown word `gre`"),
            ("port=80 allow", "unknown key `port`"),
            ("tcp dst_ports=http allow", "`http` is not a port"),
            ("dst=10.0.0.0/33 allow", "prefix length must be 0..=32"),
            ("protocol=256 allow", "protocol 256 is out of range"),
            (
                "icmp icmp_type=300 allow",
                "icmp_type `300` is not a number 0..=255",
            ),
            ("ether_type=0x10000 deny", "EtherType 65536 is out of range"),
        ] {
            let err = text.parse::<AclRuleSpec>().unwrap_err();
            assert!(err.contains(msg), "{text}: {err}");
        }
    }

    #[test]
    fn compile_names_the_rule_and_key_the_switch_refuses() {
        let mut spec = AclSpec::new("web", AclAction::Deny);
        spec.rules.push(r_in_tcp_80());
        spec.rules.push("dst_ports=22 deny".parse().unwrap());
        let err = spec.compile().unwrap_err();
        assert_eq!(err.rule_key(), (Some(1), Some("dst_ports")));
        assert_eq!(
            err.to_string(),
            "rule 1: ports need protocol tcp, udp or sctp"
        );
        spec.rules[1] = "src=10.0.0.0/8 dst=fd00::1 deny".parse().unwrap();
        assert_eq!(
            spec.compile().unwrap_err().rule_key(),
            (Some(1), Some("dst"))
        );
        spec.rules[1] = "udp src_ports=9-3 deny".parse().unwrap();
        assert_eq!(
            spec.compile().unwrap_err().rule_key(),
            (Some(1), Some("src_ports"))
        );
        spec.rules[1] = "arp tcp deny".parse().unwrap();
        assert_eq!(
            spec.compile().unwrap_err().rule_key(),
            (Some(1), Some("ether_type"))
        );
        spec.rules.truncate(1);
        let acl = spec.compile().unwrap();
        assert_eq!(acl.rules(), [r_in_tcp_80().to_rule()]);
        assert_eq!(acl.default_action(), Action::Deny);
        spec.name = "no spaces".into();
        assert_eq!(spec.compile().unwrap_err().rule_key(), (None, Some("name")));
    }

    #[test]
    fn specs_read_numbers_or_text_and_write_names() {
        let spec: AclSpec = serde_json::from_str(
            r#"{"name":"x","rule":[{"ether_type":"0x88cc","action":"deny"},
                {"protocol":6,"dst_ports":"8000-8080","src_ports":"22","action":"allow"},
                {"protocol":"132","ether_type":2048,"action":"allow"}]}"#,
        )
        .unwrap();
        assert_eq!(spec.default, AclAction::Deny, "deny by default");
        assert_eq!(spec.rules[0].ether_type, Some(EtherType(0x88cc)));
        assert_eq!(
            spec.rules[1].dst_ports,
            Some(PortRange {
                first: 8000,
                last: 8080
            })
        );
        assert_eq!(spec.rules[2].protocol, Some(Protocol(proto::SCTP)));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "x", "default": "deny", "rule": [
                {"ether_type": "0x88cc", "action": "deny"},
                {"protocol": "tcp", "src_ports": 22, "dst_ports": "8000-8080", "action": "allow"},
                {"ether_type": "ipv4", "protocol": "sctp", "action": "allow"},
            ]})
        );
        let err = serde_json::from_str::<AclSpec>(
            r#"{"name":"x","rule":[{"protocol":"tcp","action":"permit"}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `permit`"),
            "{err}"
        );
        let err = serde_json::from_str::<AclSpec>(r#"{"name":"x","rule":[{"protocol":"tcp"}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("missing field `action`"), "{err}");
    }
}
