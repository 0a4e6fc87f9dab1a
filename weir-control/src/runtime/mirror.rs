//! `weir mirror add|del|list`: port mirrors (SPAN). A mirror is published
//! in the [`PortTaps`] of each of its source ports; the workers copy what
//! those ports receive (`src`) or send (`dst`) into new buffers and send the
//! copies on its `to` port.
//!
//! Control path only.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataplane::capture::{Mirror, PortTaps};
use dataplane::switch::SwitchTables;
use weir_api::MirrorView;
use weir_config::MirrorSpec;

use super::{ControlError, Dataplane, State};

/// A mirror as the control plane keeps it.
pub(super) struct MirrorRecord {
    pub(super) spec: MirrorSpec,
    pub(super) mirror: Arc<Mirror>,
}

impl Dataplane {
    /// Adds mirror `spec`, or replaces the one of its name; published in one
    /// table update. Returns its view.
    ///
    /// # Errors
    /// A name that is not valid, no source, a port that does not exist, or
    /// an output that is a source (of this mirror or another).
    pub fn mirror_add(&self, spec: MirrorSpec) -> Result<MirrorView, ControlError> {
        let mut st = self.lock();
        let others: Vec<&MirrorSpec> = st.mirrors.values().map(|r| &r.spec).collect();
        spec.check(|p| st.ports.contains_key(p), others)
            .map_err(|source| ControlError::InvalidMirror {
                name: spec.name.clone(),
                source,
            })?;
        let to = st.ports[&spec.to].id;
        let record = MirrorRecord {
            mirror: Mirror::new(&spec.name, to),
            spec,
        };
        let name = record.spec.name.clone();
        st.mirrors.insert(name.clone(), record);
        self.publish_mirrors(&st);
        tracing::info!(mirror = %name, "mirror set");
        Ok(mirror_view(&st.mirrors[&name]))
    }

    /// Deletes mirror `name`; returns its last view.
    ///
    /// # Errors
    /// No mirror of that name.
    pub fn mirror_del(&self, name: &str) -> Result<MirrorView, ControlError> {
        let mut st = self.lock();
        let record = st
            .mirrors
            .remove(name)
            .ok_or_else(|| ControlError::NoSuchMirror { name: name.into() })?;
        self.publish_mirrors(&st);
        tracing::info!(mirror = name, "mirror removed");
        Ok(mirror_view(&record))
    }

    /// Every mirror, by name.
    pub fn mirror_list(&self) -> Vec<MirrorView> {
        self.lock().mirrors.values().map(mirror_view).collect()
    }

    /// Publishes the mirrors of `st` in the taps of their source ports, in
    /// one update, and waits until every worker uses them.
    pub(super) fn publish_mirrors(&self, st: &State) {
        let mut rx: BTreeMap<&str, Vec<Arc<Mirror>>> = BTreeMap::new();
        let mut tx: BTreeMap<&str, Vec<Arc<Mirror>>> = BTreeMap::new();
        for r in st.mirrors.values() {
            for p in &r.spec.src {
                rx.entry(p).or_default().push(Arc::clone(&r.mirror));
            }
            for p in &r.spec.dst {
                tx.entry(p).or_default().push(Arc::clone(&r.mirror));
            }
        }
        let generation = self.switch.update(|t| {
            for (name, rec) in &st.ports {
                let taps = PortTaps {
                    mirror_rx: rx.remove(name.as_str()).unwrap_or_default(),
                    mirror_tx: tx.remove(name.as_str()).unwrap_or_default(),
                    ..captures_of(t, rec.id)
                };
                t.set_taps(rec.id, Some(Arc::new(taps)));
            }
        });
        self.wait_workers(generation);
    }

    /// The mirrors that name port `name`, as `mirror NAME` (refusing its
    /// deletion).
    pub(super) fn mirrors_using(st: &State, name: &str) -> Vec<String> {
        st.mirrors
            .values()
            .filter(|r| r.spec.uses(name))
            .map(|r| format!("mirror {}", r.spec.name))
            .collect()
    }
}

/// Port `id`'s taps with its captures only.
fn captures_of(t: &SwitchTables, id: dataplane::PortId) -> PortTaps {
    PortTaps {
        captures: t.taps(id).map(|x| x.captures.clone()).unwrap_or_default(),
        ..PortTaps::default()
    }
}

fn mirror_view(r: &MirrorRecord) -> MirrorView {
    MirrorView {
        name: r.spec.name.clone(),
        src: r.spec.src.clone(),
        dst: r.spec.dst.clone(),
        to: r.spec.to.clone(),
        copied: r.mirror.copied(),
        lost: r.mirror.lost(),
    }
}
