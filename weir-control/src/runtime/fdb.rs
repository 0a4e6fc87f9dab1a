//! `weir fdb show|add|del|flush`: the bridges' forwarding tables, and the
//! static entries the running configuration keeps (`[[fdb.static]]`).
//!
//! Control path only. A static entry is in two places that change together
//! under the control lock: the bridge's `Fdb` (and, behind a tunnel remote,
//! the tunnel's), which the workers read, and `State::statics`, which the
//! running configuration and the state file are written from. Removing a
//! port or a bridge removes its static entries from both.

use std::sync::Arc;

use dataplane::switch::{self, SwitchTables};
use dataplane::{PortId, VlanId};
use weir_api::FdbEntryView;
use weir_config::{fdb::station, StaticFdbSpec};

use super::{bridge_named, ControlError, Dataplane, State};

impl Dataplane {
    /// FDB contents, of one bridge or all.
    ///
    /// # Errors
    /// Unknown bridge.
    pub fn fdb_show(&self, bridge: Option<&str>) -> Result<Vec<FdbEntryView>, ControlError> {
        let t = self.switch.load();
        if let Some(b) = bridge {
            bridge_named(&t, b)?;
        }
        let now = self.switch.now_secs();
        let mut out = Vec::new();
        let st = self.lock();
        for b in t.bridges.iter().flatten() {
            if bridge.is_some_and(|n| n != &*b.name) {
                continue;
            }
            let mut entries = b.fdb.entries();
            entries.sort_by_key(|e| (e.vlan, e.mac));
            for e in entries {
                let port = t
                    .port(e.port)
                    .map(|p| p.name.to_string())
                    .unwrap_or_else(|| format!("#{}", e.port.0));
                let remote = Dataplane::tunnel_shared(&st, &port).and_then(|tun| {
                    let r = tun.fdb.lookup(e.vlan, e.mac)?;
                    tun.remote_ip(r.index()).map(|ip| ip.to_string())
                });
                out.push(FdbEntryView {
                    bridge: b.name.to_string(),
                    vlan: e.vlan.0,
                    mac: e.mac.to_string(),
                    remote,
                    port,
                    age_secs: if e.is_static {
                        0
                    } else {
                        now.saturating_sub(e.last_seen_secs)
                    },
                    is_static: e.is_static,
                });
            }
        }
        Ok(out)
    }

    /// Adds a static FDB entry (`fdb add`): `mac` in `vlan` is behind
    /// `port`, and, on a tunnel port, behind its remote endpoint `remote`.
    /// An entry for the same station replaces the one there was. The
    /// running configuration keeps it.
    ///
    /// # Errors
    /// Unknown bridge or port, a port not on the bridge, a bad MAC, VLAN or
    /// remote ([`StaticFdbSpec::check`]), or a full table.
    pub fn fdb_add(
        &self,
        bridge: &str,
        mac: &str,
        port: &str,
        vlan: Option<u16>,
        remote: Option<&str>,
    ) -> Result<(), ControlError> {
        self.static_add(&StaticFdbSpec {
            bridge: bridge.into(),
            mac: mac.into(),
            port: port.into(),
            vlan,
            remote: remote.map(str::to_owned),
        })
    }

    /// Sets static entry `spec` ([`fdb_add`](Self::fdb_add), and the
    /// `[[fdb.static]]` tables at start), checked by the rules a
    /// configuration file's entries are checked by.
    pub(super) fn static_add(&self, spec: &StaticFdbSpec) -> Result<(), ControlError> {
        let mut st = self.lock();
        let t = self.switch.load();
        let entry = spec.check(
            |b| t.bridge_by_name(b).is_some(),
            |p| st.ports.get(p).map(|r| &r.port),
        )?;
        let br = bridge_named(&t, &entry.bridge)?;
        let id = st.ports[&entry.port].id;
        let key = entry.key();
        let fdb_err = |e: switch::FdbError| ControlError::Fdb(e.to_string());
        // The row a tunnel's own table holds for an entry behind a remote:
        // the tunnel and the remote's index.
        let row = |port: &str, remote: Option<std::net::Ipv4Addr>| {
            let ip = remote?;
            let tun = Dataplane::tunnel_shared(&st, port)?;
            let i = tun.remote_index(ip)?;
            Some((tun, PortId(i as u16)))
        };
        let old_row = st
            .statics
            .get(&key)
            .and_then(|old| row(&old.port, old.remote));
        let new_row = match entry.remote {
            // The tunnel's remotes are its port's `remote_ips`, which
            // `check` found the remote in.
            Some(ip) => Some(row(&entry.port, Some(ip)).ok_or_else(|| {
                ControlError::Fdb(format!("{ip} is not a remote of {}", entry.port))
            })?),
            None => None,
        };
        // Both tables take the entry, or neither changes: the new tunnel
        // row first, then the bridge's; if the bridge refuses, the tunnel's
        // row is put back as it was.
        if let Some((tun, r)) = &new_row {
            tun.fdb
                .add_static(entry.vlan, entry.mac, *r)
                .map_err(fdb_err)?;
        }
        if let Err(e) = br.fdb.add_static(entry.vlan, entry.mac, id) {
            if let Some((tun, _)) = &new_row {
                tun.fdb.remove(entry.vlan, entry.mac);
            }
            if let Some((tun, r)) = &old_row {
                let _ = tun.fdb.add_static(entry.vlan, entry.mac, *r);
            }
            return Err(fdb_err(e));
        }
        // A replaced entry behind a remote of another tunnel (or the
        // replacement behind none) leaves that tunnel's table, or the tunnel
        // would keep sending the station to the old remote.
        if let Some((tun, _)) = &old_row {
            if !new_row.as_ref().is_some_and(|(t, _)| Arc::ptr_eq(t, tun)) {
                tun.fdb.remove(entry.vlan, entry.mac);
            }
        }
        tracing::info!(bridge = %entry.bridge, mac = %entry.mac, vlan = entry.vlan.0, port = %entry.port, remote = ?entry.remote, "static fdb entry set");
        st.statics.insert(key, entry);
        Ok(())
    }

    /// Removes an FDB entry (`fdb del`), static or learned, and what a
    /// tunnel knows of the station; a static entry leaves the running
    /// configuration.
    ///
    /// # Errors
    /// Unknown bridge, a bad MAC or VLAN, or no such entry.
    pub fn fdb_del(&self, bridge: &str, mac: &str, vlan: Option<u16>) -> Result<(), ControlError> {
        let mut st = self.lock();
        let t = self.switch.load();
        let br = bridge_named(&t, bridge)?;
        let (mac, vlan) = station(mac, vlan)?;
        let Some(port) = br.fdb.lookup(vlan, mac) else {
            // A static entry the table lost (it cannot, but the running
            // configuration must not keep one `fdb del` cannot reach).
            if let Some(e) = st.statics.remove(&(bridge.to_owned(), vlan, mac)) {
                if let Some(tun) = Dataplane::tunnel_shared(&st, &e.port) {
                    tun.fdb.remove(vlan, mac);
                }
                return Ok(());
            }
            return Err(ControlError::Fdb(format!(
                "no entry for {mac} in VLAN {} of bridge {bridge}",
                vlan.0
            )));
        };
        if let Some(name) = t.port(port).map(|p| p.name.to_string()) {
            if let Some(tun) = Dataplane::tunnel_shared(&st, &name) {
                tun.fdb.remove(vlan, mac);
            }
        }
        br.fdb.remove(vlan, mac);
        st.statics.remove(&(bridge.to_owned(), vlan, mac));
        Ok(())
    }

    /// Flushes dynamic FDB entries of one bridge or all.
    ///
    /// # Errors
    /// Unknown bridge.
    pub fn fdb_flush(&self, bridge: Option<&str>) -> Result<usize, ControlError> {
        let t = self.switch.load();
        if let Some(b) = bridge {
            bridge_named(&t, b)?;
        }
        Ok(t.bridges
            .iter()
            .flatten()
            .filter(|b| bridge.is_none_or(|n| n == &*b.name))
            .map(|b| b.fdb.flush())
            .sum())
    }

    /// Removes the static entries of port `name` (with id `id`, a port
    /// being deleted): from its bridge's table, where a flush would leave
    /// them to send the station to whichever port gets the id next, and
    /// from the running configuration. A tunnel's own table goes with the
    /// tunnel.
    pub(super) fn drop_port_statics(st: &mut State, t: &SwitchTables, name: &str, id: PortId) {
        st.statics.retain(|(bridge, vlan, mac), e| {
            if e.port != name {
                return true;
            }
            if let Some(br) = t.bridge_by_name(bridge) {
                if br.fdb.lookup(*vlan, *mac) == Some(id) {
                    br.fdb.remove(*vlan, *mac);
                }
            }
            tracing::info!(bridge = %bridge, mac = %mac, vlan = vlan.0, port = name, "static fdb entry removed with its port");
            false
        });
    }

    /// Removes bridge `name`'s static entries from the running
    /// configuration (the bridge is going; its table goes with it).
    pub(super) fn drop_bridge_statics(st: &mut State, name: &str) {
        st.statics.retain(|(bridge, _, _), _| bridge != name);
    }
}

/// What identifies a static entry: its bridge, VLAN and MAC.
pub(super) type StaticKey = (String, VlanId, dataplane::MacAddr);
