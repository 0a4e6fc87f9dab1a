//! Static FDB entries as configured: an `[[fdb.static]]` table of a
//! configuration file, or the arguments of an `fdb add` request. The
//! daemon checks both with [`StaticFdbSpec::check`], so the file and the
//! command accept the same entries.
//!
//! Control plane only. A static entry pins a station's MAC (in a VLAN) to a
//! port of a bridge, and on a tunnel port to one of its remote endpoints;
//! it is never aged, flushed or moved by learning:
//!
//! ```toml
//! [[fdb.static]]
//! bridge = "br0"
//! mac = "02:00:00:00:00:0b"
//! port = "vx0"
//! vlan = 10                 # optional; 0 (untagged) by default
//! remote = "198.18.0.2"     # optional; a tunnel port's remote endpoint
//! ```

use std::net::Ipv4Addr;

use dataplane::{MacAddr, VlanId};
use serde::{Deserialize, Serialize};

use crate::{PortConfig, PortKind};

/// Largest VLAN id an entry may have (4095 is reserved).
pub const MAX_FDB_VLAN: u16 = 4094;

/// One static entry as written: the keys of an `[[fdb.static]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFdbSpec {
    /// The bridge whose table holds the entry.
    pub bridge: String,
    /// The station's MAC (a unicast address).
    pub mac: String,
    /// The port of `bridge` the station is behind.
    pub port: String,
    /// The VLAN (`0..=4094`); none is 0, untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// On a tunnel port: the remote endpoint (one of its `remote_ips`) the
    /// station is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// A checked static entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticFdb {
    /// The bridge.
    pub bridge: String,
    /// The port.
    pub port: String,
    /// The station.
    pub mac: MacAddr,
    /// The VLAN (0: untagged).
    pub vlan: VlanId,
    /// The tunnel remote, on a tunnel port.
    pub remote: Option<Ipv4Addr>,
}

impl StaticFdb {
    /// The entry as the running configuration writes it: MAC in lower
    /// case, no `vlan` for VLAN 0, so one entry has one form.
    pub fn spec(&self) -> StaticFdbSpec {
        StaticFdbSpec {
            bridge: self.bridge.clone(),
            mac: self.mac.to_string(),
            port: self.port.clone(),
            vlan: (self.vlan.0 != 0).then_some(self.vlan.0),
            remote: self.remote.map(|ip| ip.to_string()),
        }
    }

    /// What identifies the entry in its bridge's table: a second entry with
    /// the same key replaces the first.
    pub fn key(&self) -> (String, VlanId, MacAddr) {
        (self.bridge.clone(), self.vlan, self.mac)
    }
}

/// Why a static entry is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StaticFdbError {
    /// `mac` does not parse.
    #[error("{mac} is not a MAC address")]
    BadMac {
        /// As given.
        mac: String,
    },
    /// `mac` is a multicast or broadcast address.
    #[error("{mac} is a group address: only stations have entries")]
    GroupMac {
        /// As given.
        mac: String,
    },
    /// `vlan` is above [`MAX_FDB_VLAN`].
    #[error("VLAN {vlan} is not 0..={MAX_FDB_VLAN}")]
    BadVlan {
        /// As given.
        vlan: u16,
    },
    /// No bridge of that name.
    #[error("no bridge named {bridge}")]
    NoSuchBridge {
        /// The name.
        bridge: String,
    },
    /// No port of that name.
    #[error("no port named {port}")]
    NoSuchPort {
        /// The name.
        port: String,
    },
    /// The port is on another bridge, or on none.
    #[error("port {port} is not on bridge {bridge}")]
    NotOnBridge {
        /// The port.
        port: String,
        /// The bridge.
        bridge: String,
    },
    /// A remote for a port that is not a tunnel.
    #[error("remote applies to tunnel ports; {port} is not one")]
    RemoteNotTunnel {
        /// The port.
        port: String,
    },
    /// `remote` does not parse.
    #[error("remote {remote} is not an IPv4 address")]
    BadRemote {
        /// As given.
        remote: String,
    },
    /// `remote` is not one of the tunnel's remote endpoints.
    #[error("{remote} is not one of {port}'s remote_ips ({})", listed.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", "))]
    UnknownRemote {
        /// The address.
        remote: Ipv4Addr,
        /// The tunnel port.
        port: String,
        /// Its `remote_ips`.
        listed: Vec<Ipv4Addr>,
    },
}

impl StaticFdbError {
    /// The key the error is about, to locate it in a file.
    pub fn key(&self) -> &'static str {
        match self {
            StaticFdbError::BadMac { .. } | StaticFdbError::GroupMac { .. } => "mac",
            StaticFdbError::BadVlan { .. } => "vlan",
            StaticFdbError::NoSuchBridge { .. } => "bridge",
            StaticFdbError::NoSuchPort { .. } | StaticFdbError::NotOnBridge { .. } => "port",
            StaticFdbError::RemoteNotTunnel { .. }
            | StaticFdbError::BadRemote { .. }
            | StaticFdbError::UnknownRemote { .. } => "remote",
        }
    }
}

/// The station an entry is for, as `fdb add`, `fdb del` and an
/// `[[fdb.static]]` table give it: a unicast MAC and a VLAN (none: 0).
///
/// # Errors
/// A MAC that does not parse or is a group address, or a VLAN above
/// [`MAX_FDB_VLAN`].
pub fn station(mac: &str, vlan: Option<u16>) -> Result<(MacAddr, VlanId), StaticFdbError> {
    let m: MacAddr = mac
        .parse()
        .map_err(|_| StaticFdbError::BadMac { mac: mac.into() })?;
    if !m.is_unicast() {
        return Err(StaticFdbError::GroupMac { mac: mac.into() });
    }
    let v = vlan.unwrap_or(0);
    if v > MAX_FDB_VLAN {
        return Err(StaticFdbError::BadVlan { vlan: v });
    }
    Ok((m, VlanId(v)))
}

impl StaticFdbSpec {
    /// Checks the entry against the bridges (`bridge_exists`) and ports
    /// (`port`: a port by name) it names: a unicast MAC, a VLAN in range, a
    /// port of the bridge, and a `remote` only on a tunnel port and among
    /// its `remote_ips`.
    ///
    /// # Errors
    /// The first problem found.
    pub fn check<'p>(
        &self,
        bridge_exists: impl Fn(&str) -> bool,
        port: impl Fn(&str) -> Option<&'p PortConfig>,
    ) -> Result<StaticFdb, StaticFdbError> {
        let (mac, vlan) = station(&self.mac, self.vlan)?;
        if !bridge_exists(&self.bridge) {
            return Err(StaticFdbError::NoSuchBridge {
                bridge: self.bridge.clone(),
            });
        }
        let p = port(&self.port).ok_or_else(|| StaticFdbError::NoSuchPort {
            port: self.port.clone(),
        })?;
        if p.bridge.as_deref() != Some(self.bridge.as_str()) {
            return Err(StaticFdbError::NotOnBridge {
                port: self.port.clone(),
                bridge: self.bridge.clone(),
            });
        }
        let remote = match &self.remote {
            None => None,
            Some(r) => {
                let PortKind::Tunnel(t) = &p.kind else {
                    return Err(StaticFdbError::RemoteNotTunnel {
                        port: self.port.clone(),
                    });
                };
                let ip: Ipv4Addr = r
                    .parse()
                    .map_err(|_| StaticFdbError::BadRemote { remote: r.clone() })?;
                if !t.remote_ips.contains(&ip) {
                    return Err(StaticFdbError::UnknownRemote {
                        remote: ip,
                        port: self.port.clone(),
                        listed: t.remote_ips.clone(),
                    });
                }
                Some(ip)
            }
        };
        Ok(StaticFdb {
            bridge: self.bridge.clone(),
            port: self.port.clone(),
            mac,
            vlan,
            remote,
        })
    }
}
