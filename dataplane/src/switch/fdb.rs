//! The forwarding database (FDB): a fixed-size, lock-free MAC table keyed by
//! (VLAN, MAC) that maps a station to the port it was last seen on.
//!
//! Layer: switch. Depends only on [`crate::ids`]. [`Fdb::learn`] and
//! [`Fdb::lookup`] are on the packet path (no allocation, no locks, no
//! syscalls); aging, flushing, dumping and rebuilding are control-side and may
//! allocate.
//!
//! # Layout
//!
//! Open addressing with linear probing over a power-of-two array of 16-byte
//! slots, allocated once in [`Fdb::new`] and sized for a load factor of at most
//! one half. A key lives within [`MAX_PROBE`] slots of its home slot; a probe
//! that finds no room within that bound reports the table full.
//!
//! ```text
//!   key word                         val word
//!   u64::MAX   EMPTY                 0             claimed, not yet valid
//!   ..MAX-1    mac << 16 | vlan      bit 63        valid
//!   u64::MAX-1 TOMBSTONE             bit 62        static (never aged or moved)
//!                                    bit 61        dead (being deleted)
//!                                    bits 32..48   port
//!                                    bits 0..32    last seen, seconds
//!
//!   key: EMPTY ──claim (CAS)──▶ K ──delete──▶ TOMBSTONE
//!   val: 0 ──insert──▶ VALID ◀─refresh/move (CAS)─▶ VALID ──delete (CAS)──▶ DEAD
//! ```
//!
//! A slot is claimed once in its life and never goes back to EMPTY: tombstones
//! are not reused. That rules out ABA on the key and duplicate keys (see
//! [`Fdb::learn`]); the price is that tombstones pile up until the control
//! plane swaps in [`Fdb::rebuilt`] when [`Fdb::needs_rebuild`] says so.
//!
//! # Counts
//!
//! The table size and the per-port counts are owned by the val word: moving a
//! val into VALID brings counts reserved beforehand, a successful val CAS that
//! changes the port moves one count between ports, and only the thread whose
//! CAS turns a val DEAD gives its counts back. So every count changes exactly
//! once per state change, however threads race.
//!
//! # Memory ordering
//!
//! Every atomic access is `Relaxed`. Each word is self-contained (no other
//! memory is published through it), a slot only ever holds one key, so a val
//! read can never belong to a different key than the one just compared, and the
//! decisions that must be exclusive (claiming a slot, changing or killing a
//! val, reserving a count) are read-modify-writes, which always act on the
//! latest value. A new table is published by the caller (e.g. `ArcSwap`),
//! which provides its own release/acquire.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

use crate::ids::{MacAddr, PortId, VlanId};

/// Number of ports the per-port counters cover; `PortId`s at or above this are
/// refused.
pub const MAX_PORTS: usize = 4096;

/// Longest probe sequence, in slots, for lookups and inserts.
pub const MAX_PROBE: usize = 32;

/// The two key words no (VLAN, MAC) pair can take: the VLAN part of a key
/// is at most 0xff0f in its low 16 bits (see `vlan_bits`). At the top of the
/// range rather than at 0, so that a key needs no offset to stay clear of
/// them: one instruction less per tagged frame.
const EMPTY: u64 = u64::MAX;
const TOMBSTONE: u64 = u64::MAX - 1;

const VALID: u64 = 1 << 63;
const STATIC: u64 = 1 << 62;
const DEAD: u64 = 1 << 61;
const PORT_SHIFT: u32 = 32;

/// A learning budget word that matches no second (see
/// [`Fdb::take_learn_token`]): the first learn of a port starts a new one.
const NO_BUDGET: u64 = u64::MAX;

/// Multiplier for Fibonacci hashing of keys laid out as `mac << 16 | vlan`.
///
/// The MAC sits 16 bits up, so the product's MAC part is the MAC times the
/// multiplier's low 48 bits, shifted: those are 2^48/φ (rounded to odd),
/// the Fibonacci multiplier of a 48-bit word. The whole word multiplies the
/// VLAN part; its top 16 bits (the same digits again) carry the VLAN into
/// the top of the product. The 64-bit 2^64/φ would put a poor multiplier,
/// its low 48 bits, on the MAC: sequential addresses then fill a 2 M-slot
/// table in long runs, and a million of them do not fit.
const HASH_MUL: u64 = 0x9E37_9E37_79B9_7F4B;

/// The hash key of every table [`Fdb::new`] makes in this process: random,
/// drawn once from std's `RandomState` (which the OS seeds).
///
/// XORed into a key before the multiply. The multiplier is public, so
/// without a key anyone can compute which addresses share a home slot and
/// aim a few dozen of them at a station's probe window to keep it out of the
/// table. With it, where an address lands depends on bits a guest never
/// sees. An XOR keeps the multiplier's spread of structured address sets
/// (sequential addresses stay sequential, only their base moves), which a
/// random multiplier would not; and it costs one instruction per key.
fn process_hash_key() -> u64 {
    static KEY: OnceLock<u64> = OnceLock::new();
    *KEY.get_or_init(|| RandomState::new().hash_one(0u64))
}

/// Sizing and limits for an [`Fdb`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbConfig {
    /// Most live entries the table holds; learning beyond it is refused.
    pub max_entries: usize,
    /// Most dynamic and static entries one port may own; 0 means unlimited.
    pub max_per_port: u32,
    /// Age after which the control plane should expire a dynamic entry. The
    /// table itself only stores it; pass it to [`Fdb::age`].
    pub aging_secs: u32,
    /// Most new addresses plus station moves one port may learn per second
    /// (of the caller's clock); 0 means unlimited. Refreshing a known
    /// station is never limited.
    pub learn_per_sec: u32,
}

/// Default of [`FdbConfig::max_per_port`]: a sixteenth of the default table,
/// so that no fewer than 16 ports can fill it, and far more than one VM,
/// container or host uplink shows in practice.
pub const DEFAULT_MAX_PER_PORT: u32 = 4096;

/// Default of [`FdbConfig::learn_per_sec`]: fills a port's default share in
/// four seconds; a MAC flood learns no faster.
pub const DEFAULT_LEARN_PER_SEC: u32 = 1024;

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            max_entries: 65536,
            max_per_port: DEFAULT_MAX_PER_PORT,
            aging_secs: 300,
            learn_per_sec: DEFAULT_LEARN_PER_SEC,
        }
    }
}

/// What [`Fdb::learn`] did with a source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port; its last-seen time is up to date.
    Refreshed,
    /// A new entry was added.
    Learned,
    /// The station moved here from another port.
    Moved {
        /// The port the entry pointed to before.
        from: PortId,
    },
    /// Not learned: the table holds `max_entries`, or no free slot lies within
    /// [`MAX_PROBE`] of the key's home slot.
    TableFull,
    /// Not learned: the port already owns `max_per_port` entries, or the port
    /// is at or beyond [`MAX_PORTS`].
    PortLimit,
    /// Not learned: a static entry pins this address to another port.
    Static,
    /// Not learned: the port has used up [`FdbConfig::learn_per_sec`] for
    /// this second (new addresses and moves alike).
    RateLimited,
}

impl Learn {
    /// True if the address was not learned for lack of room or budget
    /// ([`Learn::TableFull`], [`Learn::PortLimit`], [`Learn::RateLimited`]):
    /// the frame is still forwarded, its source just stays unknown.
    #[inline]
    pub fn is_refused(self) -> bool {
        matches!(
            self,
            Learn::TableFull | Learn::PortLimit | Learn::RateLimited
        )
    }
}

/// Why [`Fdb::add_static`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    /// No room for another entry.
    #[error(
        "forwarding table full: {max_entries} entries, or no free slot within {MAX_PROBE} probes"
    )]
    TableFull {
        /// The configured table size.
        max_entries: usize,
    },
    /// The port already owns as many entries as it may.
    #[error("port {port} already owns its limit of {limit} forwarding entries")]
    PortLimit {
        /// The port that is at its limit.
        port: PortId,
        /// The configured per-port limit.
        limit: u32,
    },
    /// The port number is outside the range the table counts.
    #[error("port {port} is outside the forwarding table's {MAX_PORTS} ports")]
    PortOutOfRange {
        /// The offending port.
        port: PortId,
    },
}

/// One live entry, as reported by [`Fdb::entries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// VLAN the address was learned on.
    pub vlan: VlanId,
    /// The station's address.
    pub mac: MacAddr,
    /// Port the station was last seen on.
    pub port: PortId,
    /// The caller's clock, in seconds, when the station was last seen; 0 for
    /// static entries.
    pub last_seen_secs: u32,
    /// Added by [`Fdb::add_static`]: never aged, moved or flushed.
    pub is_static: bool,
}

/// One hash slot: the key and the val word, 16 bytes, never straddling a cache
/// line.
#[repr(C, align(16))]
struct Slot {
    key: AtomicU64,
    val: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<Slot>() == 16);

/// The MAC table. Share it between workers with `Arc`; all methods take
/// `&self`.
pub struct Fdb {
    slots: Box<[Slot]>,
    mask: usize,
    /// `64 - log2(slots.len())`: keeps the top bits of the hash product.
    shift: u32,
    probe_limit: usize,
    /// Live entries plus in-flight insert reservations. Padded so learners
    /// bumping it do not evict the read-mostly fields above from lookup cores.
    len: CachePadded<AtomicUsize>,
    tombstones: CachePadded<AtomicUsize>,
    port_counts: Box<[AtomicU32]>,
    /// Per port: the second of its learning budget (high half) and the
    /// learns left in it (low half); see [`Fdb::take_learn_token`].
    learn_budget: Box<[AtomicU64]>,
    /// Set by learners when a refusal calls for the control plane (see
    /// [`Pressure`]); read by [`Fdb::needs_rebuild`] and cleared by [`Fdb::make_room`].
    pressure: CachePadded<Pressure>,
    hash_key: u64,
    cfg: FdbConfig,
}

/// What learners could not fix themselves. Each flag is written only when it
/// is not already set, so a flood of refusals does not keep a shared cache
/// line bouncing.
#[derive(Default)]
struct Pressure {
    /// A new address was refused because the table holds `max_entries`:
    /// room should be made by evicting from the port with most entries.
    full: AtomicBool,
    /// A new address found its whole probe window taken while some of it
    /// was tombstones: a rebuild would let it in.
    window: AtomicBool,
}

/// The packet-path face of an [`Fdb`]: the table plus copies of the fields
/// every probe needs (slot array, hash shift), made once per burst.
///
/// [`Fdb::learn`] and [`Fdb::lookup`] go through a fresh view, so results are
/// the same either way. A caller handling a burst takes one view up front:
/// the copies then stay in registers across the burst, where the table's own
/// fields would be reloaded after every atomic slot access.
#[derive(Clone, Copy)]
pub struct FdbView<'a> {
    fdb: &'a Fdb,
    slots: &'a [Slot],
    hash_key: u64,
    shift: u32,
}

impl std::fmt::Debug for FdbView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbView").field("fdb", self.fdb).finish()
    }
}

impl<'a> FdbView<'a> {
    /// Home slot of `key`; same as `Fdb::home`.
    #[inline]
    fn home(&self, key: u64) -> usize {
        home_slot(key, self.hash_key, self.shift)
    }

    /// The port `mac` was last seen on in `vlan`, if known.
    ///
    /// Loads only; never writes shared memory. At the table's load factor
    /// most keys sit in their home slot, so that slot is checked inline and
    /// the rest of the probe runs out of line, which keeps the caller's loop
    /// small.
    #[inline]
    pub fn lookup(&self, vlan: VlanId, mac: MacAddr) -> Option<PortId> {
        self.lookup_key(FdbKey::new(vlan, mac))
    }

    /// [`FdbView::lookup`] for a key already made.
    #[inline]
    pub fn lookup_key(&self, key: FdbKey) -> Option<PortId> {
        let key = key.0;
        let home = self.home(key);
        match Fdb::lookup_at(&self.slots[home], key) {
            Probe::Found(port) => Some(port),
            Probe::Absent => None,
            Probe::Next => self.fdb.lookup_rest(key, home),
        }
    }

    /// Records that `mac` in `vlan` sent a frame on `port` at `now` (seconds,
    /// read once per burst by the caller).
    ///
    /// The common case, a known station on the same port within the same
    /// second, costs the probe plus one load and one compare, and writes
    /// nothing, so the slot's cache line stays shared between cores.
    ///
    /// A station seen while its entry is still being inserted by another
    /// thread reports [`Learn::Refreshed`]. A move onto a port that is at its
    /// limit is refused with [`Learn::PortLimit`] and leaves the entry where
    /// it was.
    #[inline]
    pub fn learn(&self, vlan: VlanId, mac: MacAddr, port: PortId, now: u32) -> Learn {
        self.learn_key(FdbKey::new(vlan, mac), port, now)
    }

    /// [`FdbView::learn`] for a key already made.
    #[inline(always)]
    pub fn learn_key(&self, key: FdbKey, port: PortId, now: u32) -> Learn {
        // A port at or beyond MAX_PORTS is refused in `learn_slow`: no val
        // word ever holds such a port (learn and `add_static` refuse it), so
        // the fast check below cannot pass for one.
        let key = key.0;
        let want = encode_val(port, now, false);
        let home = self.home(key);
        // The common case, checked inline: the key in its home slot, nothing
        // to change. Exactly what `claim` and `learn_hit` would conclude from
        // the same two loads.
        let slot = &self.slots[home];
        // Relaxed: as in `claim` and `learn_hit`.
        if slot.key.load(Ordering::Relaxed) == key && slot.val.load(Ordering::Relaxed) == want {
            return Learn::Refreshed;
        }
        self.fdb.learn_slow(key, home, port, now, want)
    }
}

/// What one probed slot says to a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// The key, live, on this port.
    Found(PortId),
    /// The key is not in the table (or not visible yet).
    Absent,
    /// Not here; go on probing.
    Next,
}

/// What a learner should do about a slot already holding its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hit {
    /// Another thread claimed the slot and has not stored the val yet.
    Pending,
    /// Being deleted; a live copy, if any, lies further along the probe.
    Dead,
    /// Nothing to write.
    Done(Learn),
    /// Same port, newer time: CAS the val to this.
    Refresh(u64),
    /// Different port: CAS the val to `new`, moving one count from `from`.
    Move { from: PortId, new: u64 },
}

/// See `Fdb::home`.
#[inline]
fn home_slot(key: u64, hash_key: u64, shift: u32) -> usize {
    ((key ^ hash_key).wrapping_mul(HASH_MUL) >> shift) as usize
}

/// A (VLAN, MAC) pair in the table's key form. Made once per address on the
/// packet path and passed to [`FdbView::learn_key`] / [`FdbView::lookup_key`],
/// so a caller that already holds the address as a number (see
/// [`crate::wire::parse_l2_addrs`]) never converts it back to bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbKey(u64);

impl FdbKey {
    /// A word no key takes ([`FdbKey::raw`] never returns it), for callers
    /// that keep a key in a plain word and need a "no key" value.
    pub const NONE_RAW: u64 = EMPTY;

    /// The key as a word: never [`FdbKey::NONE_RAW`].
    #[inline]
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The key for `mac` in `vlan`.
    #[inline]
    pub fn new(vlan: VlanId, mac: MacAddr) -> FdbKey {
        // Same value as `mac.to_u64()`, written as one 6-byte load and a byte
        // swap: the per-byte shifts the compiler makes of that cost a dozen
        // instructions per key on the packet path.
        let mut word = [0u8; 8];
        word[2..].copy_from_slice(&mac.0);
        FdbKey::from_word(vlan, u64::from_be_bytes(word))
    }

    /// The key for the address `mac` in [`MacAddr::to_u64`] form (the top 16
    /// bits must be clear) in `vlan`.
    #[inline]
    pub fn from_word(vlan: VlanId, mac: u64) -> FdbKey {
        debug_assert!(mac >> 48 == 0, "MAC word {mac:#x} wider than 48 bits");
        FdbKey(mac << 16 | vlan_bits(vlan))
    }

    /// The keys of two addresses (a frame's source and destination) in one
    /// VLAN, same as two [`FdbKey::from_word`] calls; the VLAN part is built
    /// once.
    #[inline]
    pub fn pair(vlan: VlanId, a: u64, b: u64) -> (FdbKey, FdbKey) {
        debug_assert!(
            (a | b) >> 48 == 0,
            "MAC words {a:#x}, {b:#x} wider than 48 bits"
        );
        let v = vlan_bits(vlan);
        (FdbKey(a << 16 | v), FdbKey(b << 16 | v))
    }
}

/// The VLAN part of a key: the 12-bit id in the low 16 bits, byte-swapped;
/// the MAC sits above it, in the top 48.
///
/// Both halves fall out of a frame's bytes as they are: a big-endian load of
/// its first eight bytes holds the destination in its top 48 bits, one of
/// bytes 4..12 the source in its low 48 (one shift away), and the tag's
/// bytes loaded little-endian are the id swapped, which the swap here
/// matches. So the switch builds a key with no shift of the destination or
/// of the tag. Masking to 12 bits keeps the low 16 bits at or below 0xff0f,
/// and with them every key below `TOMBSTONE`, even for an out-of-range
/// VlanId.
#[inline]
fn vlan_bits(vlan: VlanId) -> u64 {
    u64::from((vlan.0 & 0x0fff).swap_bytes())
}

#[inline]
fn encode_key(vlan: VlanId, mac: MacAddr) -> u64 {
    FdbKey::new(vlan, mac).0
}

fn decode_key(key: u64) -> (VlanId, MacAddr) {
    (
        VlanId((key as u16).swap_bytes()),
        MacAddr::from_u64(key >> 16),
    )
}

#[inline]
fn encode_val(port: PortId, last_seen: u32, is_static: bool) -> u64 {
    let s = if is_static { STATIC } else { 0 };
    VALID | s | (u64::from(port.0) << PORT_SHIFT) | u64::from(last_seen)
}

#[inline]
fn val_port(val: u64) -> PortId {
    PortId((val >> PORT_SHIFT) as u16)
}

#[inline]
fn val_last_seen(val: u64) -> u32 {
    val as u32
}

/// Seconds from `last_seen` to `now`, or 0 if `last_seen` is ahead (workers
/// and control read their clocks at slightly different moments).
#[inline]
fn age_of(now: u32, last_seen: u32) -> u32 {
    let d = now.wrapping_sub(last_seen);
    if (d as i32) < 0 {
        0
    } else {
        d
    }
}

/// Sets `flag` unless it is set already: the load keeps a stream of
/// refusals from writing the shared line again and again.
#[inline]
fn raise(flag: &AtomicBool) {
    // Relaxed: a hint for the control plane, nothing is published with it.
    if !flag.load(Ordering::Relaxed) {
        // Relaxed: as above.
        flag.store(true, Ordering::Relaxed);
    }
}

/// Decides a learn that found its key, from the val word alone. Pure, so the
/// "no write when nothing changed" rule is testable.
#[inline]
fn plan_hit(cur: u64, port: PortId, now: u32) -> Hit {
    if cur == 0 {
        return Hit::Pending;
    }
    if cur & VALID == 0 {
        return Hit::Dead;
    }
    let at = val_port(cur);
    if cur & STATIC != 0 {
        return Hit::Done(if at == port {
            Learn::Refreshed
        } else {
            Learn::Static
        });
    }
    if at != port {
        return Hit::Move {
            from: at,
            new: encode_val(port, now, false),
        };
    }
    // Only move time forward: a worker whose burst clock lags another's must
    // not write an older time (or write at all).
    if age_of(now, val_last_seen(cur)) > 0 {
        Hit::Refresh(encode_val(port, now, false))
    } else {
        Hit::Done(Learn::Refreshed)
    }
}

impl Fdb {
    /// Allocates an empty table for `cfg`: the next power of two at or above
    /// `2 * max_entries` slots (at least 2), 16 bytes each.
    ///
    /// # Panics
    ///
    /// If the slot count overflows `usize`.
    pub fn new(cfg: &FdbConfig) -> Fdb {
        Fdb::with_hash_key(cfg, process_hash_key())
    }

    /// [`Fdb::new`] with a given hash key instead of the process's random
    /// one: for tests and benchmarks that need the same layout on every run.
    /// A table facing untrusted senders must use [`Fdb::new`].
    ///
    /// # Panics
    ///
    /// As [`Fdb::new`].
    pub fn with_hash_key(cfg: &FdbConfig, hash_key: u64) -> Fdb {
        let slot_count = cfg
            .max_entries
            .max(1)
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .expect("FdbConfig::max_entries too large");
        let slots: Box<[Slot]> = (0..slot_count)
            .map(|_| Slot {
                key: AtomicU64::new(EMPTY),
                val: AtomicU64::new(0),
            })
            .collect();
        let port_counts: Box<[AtomicU32]> = (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect();
        let learn_budget: Box<[AtomicU64]> =
            (0..MAX_PORTS).map(|_| AtomicU64::new(NO_BUDGET)).collect();
        Fdb {
            slots,
            mask: slot_count - 1,
            shift: 64 - slot_count.trailing_zeros(),
            probe_limit: MAX_PROBE.min(slot_count),
            len: CachePadded::new(AtomicUsize::new(0)),
            tombstones: CachePadded::new(AtomicUsize::new(0)),
            port_counts,
            learn_budget,
            pressure: CachePadded::new(Pressure::default()),
            hash_key,
            cfg: cfg.clone(),
        }
    }

    /// The configuration the table was built with.
    pub fn config(&self) -> &FdbConfig {
        &self.cfg
    }

    /// Number of hash slots (a power of two).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Home slot of `key`: Fibonacci hashing, the top log2(slot count) bits
    /// of the key, XORed with the table's hash key, times [`HASH_MUL`]. Every key bit reaches those top bits,
    /// the VLAN and OUI bits included (a product's bit i depends on every key
    /// bit at or below i), so no folding step is needed; the tests
    /// `structured_mac_families_fill_the_table` and
    /// `a_million_sequential_stations_fit` hold the spread to that.
    /// Always below the slot count: the shift keeps exactly log2(slot count)
    /// bits.
    #[inline]
    fn home(&self, key: u64) -> usize {
        home_slot(key, self.hash_key, self.shift)
    }

    #[inline]
    fn slot(&self, home: usize, i: usize) -> &Slot {
        &self.slots[(home + i) & self.mask]
    }

    /// The port `mac` was last seen on in `vlan`, if known.
    ///
    /// Loads only; never writes shared memory. See [`FdbView::lookup`].
    #[inline]
    pub fn lookup(&self, vlan: VlanId, mac: MacAddr) -> Option<PortId> {
        self.view().lookup(vlan, mac)
    }

    /// The packet-path view of the table, for a run of lookups (a burst).
    #[inline]
    pub fn view(&self) -> FdbView<'_> {
        FdbView {
            fdb: self,
            slots: &self.slots,
            hash_key: self.hash_key,
            shift: self.shift,
        }
    }

    /// What one slot says about `key` for a lookup.
    #[inline]
    fn lookup_at(slot: &Slot, key: u64) -> Probe {
        // Relaxed: a slot only ever holds one key, so no ordering with the val is needed.
        let k = slot.key.load(Ordering::Relaxed);
        if k == key {
            // Relaxed: the val word is self-contained; nothing else is published with it.
            let v = slot.val.load(Ordering::Relaxed);
            if v & VALID != 0 {
                return Probe::Found(val_port(v));
            }
            if v == 0 {
                // Still being inserted: the only copy, not visible yet.
                return Probe::Absent;
            }
            // DEAD: a re-learned copy may follow.
            Probe::Next
        } else if k == EMPTY {
            Probe::Absent
        } else {
            Probe::Next
        }
    }

    /// The lookup probe after the home slot. Cold: at the table's load
    /// factor most keys sit in their home slot, and marking it so keeps the
    /// caller's loop state out of the registers a call preserves.
    #[cold]
    #[inline(never)]
    fn lookup_rest(&self, key: u64, home: usize) -> Option<PortId> {
        for i in 1..self.probe_limit {
            match Fdb::lookup_at(self.slot(home, i), key) {
                Probe::Found(port) => return Some(port),
                Probe::Absent => return None,
                Probe::Next => {}
            }
        }
        None
    }

    /// Records that `mac` in `vlan` sent a frame on `port` at `now` (seconds,
    /// read once per burst by the caller). See [`FdbView::learn`].
    #[inline]
    pub fn learn(&self, vlan: VlanId, mac: MacAddr, port: PortId, now: u32) -> Learn {
        self.view().learn(vlan, mac, port, now)
    }

    /// Everything but the inline fast path of [`Fdb::learn`]: the full probe
    /// from the home slot, inserting if the key is absent.
    #[cold]
    #[inline(never)]
    fn learn_slow(&self, key: u64, home: usize, port: PortId, now: u32, want: u64) -> Learn {
        if port.index() >= MAX_PORTS {
            return Learn::PortLimit;
        }
        self.claim(key, home, port, want, Some(now), |slot| {
            self.learn_hit(slot, port, now, want)
        })
    }

    /// Learn on a slot holding the key. `None` if the slot is dead and the
    /// probe should go on.
    #[inline]
    fn learn_hit(&self, slot: &Slot, port: PortId, now: u32, want: u64) -> Option<Learn> {
        // Relaxed: the val word is self-contained; changes below are CASes on it.
        let mut cur = slot.val.load(Ordering::Relaxed);
        if cur == want {
            return Some(Learn::Refreshed);
        }
        // A move is paid for once, however often its CAS is retried.
        let mut paid = false;
        loop {
            match plan_hit(cur, port, now) {
                Hit::Pending => return Some(Learn::Refreshed),
                Hit::Dead => return None,
                Hit::Done(outcome) => return Some(outcome),
                // Relaxed: the CAS only has to be atomic against a concurrent delete or move.
                Hit::Refresh(new) => match slot.val.compare_exchange_weak(
                    cur,
                    new,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(Learn::Refreshed),
                    Err(seen) => cur = seen,
                },
                Hit::Move { from, new } => {
                    if !paid && !self.take_learn_token(port, now) {
                        return Some(Learn::RateLimited);
                    }
                    paid = true;
                    if !self.reserve_port(port) {
                        return Some(Learn::PortLimit);
                    }
                    // Relaxed: exclusivity comes from the CAS; the counts are plain tallies.
                    match slot
                        .val
                        .compare_exchange(cur, new, Ordering::Relaxed, Ordering::Relaxed)
                    {
                        Ok(_) => {
                            self.release_port(from);
                            return Some(Learn::Moved { from });
                        }
                        Err(seen) => {
                            self.release_port(port);
                            cur = seen;
                        }
                    }
                }
            }
        }
    }

    /// Finds `key` or inserts it with `new_val`, reserving the counts for
    /// `port` first. `hit` handles a slot already holding the key and returns
    /// `None` if that slot is dead, in which case probing continues. With
    /// `learn_now`, an insert also takes one of the port's learning tokens
    /// for that second (see [`Fdb::take_learn_token`]).
    ///
    /// No duplicates: a key is only inserted into the first EMPTY slot of its
    /// probe sequence, after every earlier slot was seen holding something
    /// else. Slots never return to EMPTY, so for two racing inserters of the
    /// same key every slot before that first EMPTY one is, and stays,
    /// non-EMPTY, and both reach the same slot. Their CASes on it are ordered;
    /// the loser re-reads the slot, finds the key and takes the `hit` path.
    /// (If an earlier slot was claimed by the other inserter before we read
    /// it, we read the key there.) Reusing tombstones would break this: the
    /// two could pick different tombstones.
    #[inline]
    fn claim(
        &self,
        key: u64,
        home: usize,
        port: PortId,
        new_val: u64,
        learn_now: Option<u32>,
        mut hit: impl FnMut(&Slot) -> Option<Learn>,
    ) -> Learn {
        let mut reserved = false;
        let mut tombstones = false;
        let mut i = 0;
        while i < self.probe_limit {
            let slot = self.slot(home, i);
            // Relaxed: the key word is self-contained; claiming is a CAS below.
            let k = slot.key.load(Ordering::Relaxed);
            tombstones |= k == TOMBSTONE;
            if k == key {
                if reserved {
                    self.release(port);
                    reserved = false;
                }
                match hit(slot) {
                    Some(outcome) => return outcome,
                    None => {
                        i += 1;
                        continue;
                    }
                }
            }
            if k == EMPTY {
                if !reserved {
                    // The port's rate first: a port over it then never
                    // touches the shared table count.
                    if let Some(now) = learn_now {
                        if !self.take_learn_token(port, now) {
                            return Learn::RateLimited;
                        }
                    }
                    if let Err(refused) = self.reserve(port) {
                        if refused == Learn::TableFull {
                            raise(&self.pressure.full);
                        }
                        return refused;
                    }
                    reserved = true;
                }
                // Relaxed: the CAS decides ownership of the slot; no other data rides on it.
                match slot
                    .key
                    .compare_exchange(EMPTY, key, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => {
                        // Relaxed: only this thread writes a claimed slot's first val; readers
                        // treat 0 as a miss until then.
                        slot.val.store(new_val, Ordering::Relaxed);
                        return Learn::Learned;
                    }
                    // Lost the race for this slot: look at it again, it may now hold our key.
                    Err(_) => continue,
                }
            }
            i += 1;
        }
        if reserved {
            self.release(port);
        }
        if tombstones {
            raise(&self.pressure.window);
        }
        Learn::TableFull
    }

    /// Takes one of `port`'s [`FdbConfig::learn_per_sec`] learns for second
    /// `now`; false if the port has used them all.
    ///
    /// A fixed window per second of the workers' coarse clock: cheap (one
    /// CAS on the learning path only; refreshes never come here) and exact
    /// enough. A worker whose clock lags a second behind another's spends
    /// from the newer second rather than starting the old one again.
    #[inline]
    fn take_learn_token(&self, port: PortId, now: u32) -> bool {
        let rate = self.cfg.learn_per_sec;
        if rate == 0 {
            return true;
        }
        let budget = &self.learn_budget[port.index()];
        // Relaxed: the word is self-contained; the decision is the CAS below.
        let mut cur = budget.load(Ordering::Relaxed);
        loop {
            let next = if cur == NO_BUDGET || age_of(now, (cur >> PORT_SHIFT) as u32) > 0 {
                u64::from(now) << PORT_SHIFT | u64::from(rate - 1)
            } else if cur as u32 == 0 {
                return false;
            } else {
                cur - 1
            };
            // Relaxed: as above.
            match budget.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Reserves one table entry and one entry for `port`.
    #[inline]
    fn reserve(&self, port: PortId) -> Result<(), Learn> {
        // Relaxed: the RMW alone makes the reservation exact; no data is published.
        if self.len.fetch_add(1, Ordering::Relaxed) >= self.cfg.max_entries {
            // Relaxed: undoing our own reservation.
            self.len.fetch_sub(1, Ordering::Relaxed);
            return Err(Learn::TableFull);
        }
        if !self.reserve_port(port) {
            // Relaxed: undoing our own reservation.
            self.len.fetch_sub(1, Ordering::Relaxed);
            return Err(Learn::PortLimit);
        }
        Ok(())
    }

    #[inline]
    fn release(&self, port: PortId) {
        // Relaxed: a plain tally.
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.release_port(port);
    }

    /// Reserves one entry for `port`; false if it is at its limit.
    #[inline]
    fn reserve_port(&self, port: PortId) -> bool {
        let count = &self.port_counts[port.index()];
        let limit = self.cfg.max_per_port;
        // Relaxed: the RMW alone makes the reservation exact; no data is published.
        let before = count.fetch_add(1, Ordering::Relaxed);
        if limit != 0 && before >= limit {
            // Relaxed: undoing our own reservation.
            count.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    #[inline]
    fn release_port(&self, port: PortId) {
        // Relaxed: a plain tally.
        self.port_counts[port.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// Kills the entry in `slot` if it is valid and `doomed` holds for its
    /// val, then gives back its counts. Returns whether this call killed it.
    fn kill(&self, slot: &Slot, doomed: impl Fn(u64) -> bool) -> bool {
        // Relaxed: the val word is self-contained; the kill is a CAS below.
        let mut cur = slot.val.load(Ordering::Relaxed);
        loop {
            if cur & VALID == 0 || !doomed(cur) {
                return false;
            }
            // Relaxed: the CAS picks the single thread that owns the kill; it re-checks a
            // refreshed or moved val.
            match slot
                .val
                .compare_exchange_weak(cur, DEAD, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
        // Only the thread whose CAS made the val DEAD gets here, so the key is
        // tombstoned and the counts returned exactly once.
        // Relaxed: nobody else writes a claimed key; a reader seeing either K+DEAD or
        // TOMBSTONE skips the slot.
        slot.key.store(TOMBSTONE, Ordering::Relaxed);
        // Relaxed: plain tallies.
        self.tombstones.fetch_add(1, Ordering::Relaxed);
        self.release(val_port(cur));
        true
    }

    /// Kills every entry whose (key, val) satisfies `doomed`.
    fn sweep(&self, doomed: impl Fn(u64, u64) -> bool) -> usize {
        let mut killed = 0;
        for slot in self.slots.iter() {
            // Relaxed: see `lookup`.
            let k = slot.key.load(Ordering::Relaxed);
            if k != EMPTY && k != TOMBSTONE && self.kill(slot, |v| doomed(k, v)) {
                killed += 1;
            }
        }
        killed
    }

    /// Slot holding a live entry for (`vlan`, `mac`), if any.
    fn find(&self, vlan: VlanId, mac: MacAddr) -> Option<&Slot> {
        let key = encode_key(vlan, mac);
        let home = self.home(key);
        for i in 0..self.probe_limit {
            let slot = self.slot(home, i);
            // Relaxed: see `lookup`.
            let k = slot.key.load(Ordering::Relaxed);
            if k == key {
                // Relaxed: see `lookup`.
                if slot.val.load(Ordering::Relaxed) & VALID != 0 {
                    return Some(slot);
                }
            } else if k == EMPTY {
                return None;
            }
        }
        None
    }

    /// Expires dynamic entries last seen more than `max_age_secs` before
    /// `now`; returns how many. Entries refreshed while the sweep runs
    /// survive. Control-side.
    pub fn age(&self, now: u32, max_age_secs: u32) -> usize {
        self.sweep(|_, v| v & STATIC == 0 && age_of(now, val_last_seen(v)) > max_age_secs)
    }

    /// Removes every dynamic entry; returns how many. Control-side.
    pub fn flush(&self) -> usize {
        self.sweep(|_, v| v & STATIC == 0)
    }

    /// Removes the dynamic entries pointing to `port` (e.g. on link down);
    /// returns how many. Control-side.
    pub fn flush_port(&self, port: PortId) -> usize {
        self.sweep(|_, v| v & STATIC == 0 && val_port(v) == port)
    }

    /// Removes the dynamic entries in `vlan`; returns how many. Control-side.
    pub fn flush_vlan(&self, vlan: VlanId) -> usize {
        self.sweep(|k, v| v & STATIC == 0 && decode_key(k).0 == VlanId(vlan.0 & 0x0fff))
    }

    /// Removes the entry for (`vlan`, `mac`), static or dynamic; returns
    /// whether there was one. Control-side.
    pub fn remove(&self, vlan: VlanId, mac: MacAddr) -> bool {
        match self.find(vlan, mac) {
            Some(slot) => self.kill(slot, |_| true),
            None => false,
        }
    }

    /// Pins (`vlan`, `mac`) to `port`: the entry is never aged, moved by
    /// learning or flushed; only [`Fdb::remove`] deletes it. Replaces a
    /// dynamic or static entry for the same address. Control-side.
    ///
    /// # Errors
    ///
    /// [`FdbError::TableFull`] or [`FdbError::PortLimit`] if the entry does
    /// not fit, [`FdbError::PortOutOfRange`] if `port` is not below
    /// [`MAX_PORTS`].
    pub fn add_static(&self, vlan: VlanId, mac: MacAddr, port: PortId) -> Result<(), FdbError> {
        if port.index() >= MAX_PORTS {
            return Err(FdbError::PortOutOfRange { port });
        }
        let want = encode_val(port, 0, true);
        let key = encode_key(vlan, mac);
        let outcome = self.claim(key, self.home(key), port, want, None, |slot| {
            self.pin(slot, port, want)
        });
        match outcome {
            Learn::TableFull => Err(FdbError::TableFull {
                max_entries: self.cfg.max_entries,
            }),
            Learn::PortLimit => Err(FdbError::PortLimit {
                port,
                limit: self.cfg.max_per_port,
            }),
            _ => Ok(()),
        }
    }

    /// Turns the entry in `slot` into the static `want` for `port`.
    fn pin(&self, slot: &Slot, port: PortId, want: u64) -> Option<Learn> {
        // Relaxed: the val word is self-contained; the change is a CAS below.
        let mut cur = slot.val.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                // A learner is between claiming this slot and storing its val,
                // a few instructions; wait rather than lose the static entry.
                std::thread::yield_now();
                // Relaxed: see above.
                cur = slot.val.load(Ordering::Relaxed);
                continue;
            }
            if cur & VALID == 0 {
                return None;
            }
            if cur == want {
                return Some(Learn::Static);
            }
            let from = val_port(cur);
            if from != port && !self.reserve_port(port) {
                return Some(Learn::PortLimit);
            }
            // Relaxed: exclusivity comes from the CAS; the counts are plain tallies.
            match slot
                .val
                .compare_exchange(cur, want, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    if from != port {
                        self.release_port(from);
                    }
                    return Some(Learn::Static);
                }
                Err(seen) => {
                    if from != port {
                        self.release_port(port);
                    }
                    cur = seen;
                }
            }
        }
    }

    /// Live entries, including inserts still reserving their slot. Exact when
    /// no learner runs.
    pub fn len(&self) -> usize {
        // Relaxed: a statistic.
        self.len.load(Ordering::Relaxed)
    }

    /// True if [`Fdb::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deleted slots not yet reclaimed by a rebuild.
    pub fn tombstones(&self) -> usize {
        // Relaxed: a statistic.
        self.tombstones.load(Ordering::Relaxed)
    }

    /// Entries (dynamic and static) pointing to `port`; 0 for ports at or
    /// beyond [`MAX_PORTS`].
    pub fn port_count(&self, port: PortId) -> u32 {
        // Relaxed: a statistic.
        self.port_counts
            .get(port.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// A snapshot of the live entries, in slot order. Allocates; control-side.
    ///
    /// While learners run, the snapshot is not atomic: an address deleted and
    /// re-learned during the scan may appear twice.
    pub fn entries(&self) -> Vec<FdbEntry> {
        let mut out = Vec::with_capacity(self.len());
        for slot in self.slots.iter() {
            // Relaxed: see `lookup`.
            let k = slot.key.load(Ordering::Relaxed);
            if k == EMPTY || k == TOMBSTONE {
                continue;
            }
            // Relaxed: see `lookup`.
            let v = slot.val.load(Ordering::Relaxed);
            if v & VALID == 0 {
                continue;
            }
            let (vlan, mac) = decode_key(k);
            out.push(FdbEntry {
                vlan,
                mac,
                port: val_port(v),
                last_seen_secs: val_last_seen(v),
                is_static: v & STATIC != 0,
            });
        }
        out
    }

    /// True when tombstones fill more than a quarter of the slots, lengthening
    /// probes and eventually refusing inserts, or when a new address found
    /// its probe window full and tombstones in it (or [`Fdb::make_room`]
    /// just evicted): time to publish [`Fdb::rebuilt`].
    pub fn needs_rebuild(&self) -> bool {
        let tombstones = self.tombstones();
        // Relaxed: a hint; a flag raised just after this read is seen next tick.
        tombstones > self.slots.len() / 4
            || (tombstones > 0 && self.pressure.window.load(Ordering::Relaxed))
    }

    /// If a learner was refused for a full table since the last call, evicts
    /// dynamic entries until a sixty-fourth of `max_entries` (at least one)
    /// is free again, each from the port that then owns the most entries,
    /// oldest first (as Open vSwitch evicts from its busiest port). A port
    /// that floods the table with addresses so loses its own entries, not
    /// those of the stations on other ports. Returns how many were evicted;
    /// when any were, [`Fdb::needs_rebuild`] turns true so that their slots
    /// become usable. Control-side; allocates.
    pub fn make_room(&self) -> usize {
        // Relaxed: a hint; see `Pressure`.
        if !self.pressure.full.swap(false, Ordering::Relaxed) {
            return 0;
        }
        let headroom = (self.cfg.max_entries / 64).max(1);
        let free = self.cfg.max_entries.saturating_sub(self.len());
        if free >= headroom {
            return 0;
        }
        let evicted = self.evict_fair(headroom - free);
        if evicted > 0 {
            raise(&self.pressure.window);
        }
        evicted
    }

    /// Evicts up to `n` dynamic entries, one at a time from the port owning
    /// the most entries (static ones count, but are never evicted), oldest
    /// first. Returns how many.
    fn evict_fair(&self, n: usize) -> usize {
        use std::collections::{BinaryHeap, HashMap};
        let mut dynamic: HashMap<PortId, Vec<FdbEntry>> = HashMap::new();
        let mut owned: HashMap<PortId, u32> = HashMap::new();
        for e in self.entries() {
            *owned.entry(e.port).or_default() += 1;
            if !e.is_static {
                dynamic.entry(e.port).or_default().push(e);
            }
        }
        for list in dynamic.values_mut() {
            // Newest first, so that `pop` takes the oldest.
            list.sort_unstable_by_key(|e| std::cmp::Reverse(e.last_seen_secs));
        }
        let mut heap: BinaryHeap<(u32, PortId)> = dynamic
            .keys()
            .map(|p| (owned.get(p).copied().unwrap_or(0), *p))
            .collect();
        let mut evicted = 0;
        while evicted < n {
            let Some((count, port)) = heap.pop() else {
                break;
            };
            let Some(list) = dynamic.get_mut(&port) else {
                continue;
            };
            let Some(e) = list.pop() else {
                continue;
            };
            // Only if still dynamic and on that port: a learner may have
            // moved it since the snapshot.
            if let Some(slot) = self.find(e.vlan, e.mac) {
                if self.kill(slot, |v| v & STATIC == 0 && val_port(v) == port) {
                    evicted += 1;
                }
            }
            if !list.is_empty() {
                heap.push((count.saturating_sub(1), port));
            }
        }
        evicted
    }

    /// A fresh table with the same configuration holding this table's live
    /// entries and no tombstones. Control-side; allocates.
    ///
    /// The caller publishes the result (e.g. with `ArcSwap`) and drops the old
    /// table once workers have moved on. Entries learned, moved or refreshed
    /// in the old table after they were copied are not carried over; workers
    /// simply learn them again from the next frame. Static entries are copied
    /// first so they keep their place if the new table is tight; a dynamic
    /// entry that no longer fits within [`MAX_PROBE`] is dropped and
    /// re-learned later.
    pub fn rebuilt(&self) -> Fdb {
        let next = Fdb::with_hash_key(&self.cfg, self.hash_key);
        let live = self.entries();
        let statics = live.iter().filter(|e| e.is_static);
        let dynamics = live.iter().filter(|e| !e.is_static);
        for e in statics.chain(dynamics) {
            let val = encode_val(e.port, e.last_seen_secs, e.is_static);
            // A duplicate can only come from a racy snapshot; keep the first copy.
            let key = encode_key(e.vlan, e.mac);
            next.claim(key, next.home(key), e.port, val, None, |_| {
                Some(Learn::Refreshed)
            });
        }
        next
    }
}

impl core::fmt::Debug for Fdb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fdb")
            .field("len", &self.len())
            .field("tombstones", &self.tombstones())
            .field("slots", &self.slots.len())
            .field("cfg", &self.cfg)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
    }

    /// A table with the key of the unkeyed hash (0), so that layouts are the
    /// same on every run, and no learning rate limit.
    fn fdb(max_entries: usize, max_per_port: u32) -> Fdb {
        Fdb::with_hash_key(
            &FdbConfig {
                max_entries,
                max_per_port,
                learn_per_sec: 0,
                ..FdbConfig::default()
            },
            0,
        )
    }

    /// Checks the invariants that must hold whenever no thread is learning.
    fn assert_consistent(t: &Fdb) {
        let entries = t.entries();
        let keys: HashSet<(VlanId, MacAddr)> = entries.iter().map(|e| (e.vlan, e.mac)).collect();
        assert_eq!(keys.len(), entries.len(), "duplicate keys");
        assert_eq!(t.len(), entries.len());
        let port_sum: u64 = (0..MAX_PORTS)
            .map(|p| u64::from(t.port_count(PortId(p as u16))))
            .sum();
        assert_eq!(port_sum, t.len() as u64);
        for e in &entries {
            assert_eq!(t.lookup(e.vlan, e.mac), Some(e.port));
        }
        let dead = t
            .slots
            .iter()
            .filter(|s| s.key.load(Ordering::Relaxed) == TOMBSTONE)
            .count();
        assert_eq!(t.tombstones(), dead);
    }

    #[test]
    fn fdb_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Fdb>();
    }

    #[test]
    fn keys_and_vals_round_trip_and_avoid_the_markers() {
        let m = MacAddr([0xff; 6]);
        let k = encode_key(VlanId(4095), m);
        assert_ne!(k, EMPTY);
        assert_ne!(k, TOMBSTONE);
        assert_eq!(decode_key(k), (VlanId(4095), m));
        // The zero address in VLAN 0 is an ordinary key.
        let zero = encode_key(VlanId(0), MacAddr([0; 6]));
        assert_eq!(decode_key(zero), (VlanId(0), MacAddr([0; 6])));
        // An out-of-range VLAN is masked instead of colliding with a marker.
        for marker in [EMPTY, TOMBSTONE, FdbKey::NONE_RAW] {
            assert_ne!(encode_key(VlanId(u16::MAX), m), marker);
            assert_ne!(zero, marker);
        }
        let v = encode_val(PortId(4095), u32::MAX, true);
        assert_eq!(val_port(v), PortId(4095));
        assert_eq!(val_last_seen(v), u32::MAX);
        assert_ne!(v & STATIC, 0);
        assert_eq!(v & DEAD, 0);
    }

    /// The key words at the ends of the range: the zero address in VLAN 0
    /// (key 0) and the all-ones address in VLAN 4095 (the largest key) are
    /// learned, found, aged and deleted like any other.
    #[test]
    fn the_extreme_keys_are_ordinary_stations() {
        let t = fdb(16, 0);
        let low = (VlanId(0), MacAddr([0; 6]));
        let high = (VlanId(4095), MacAddr([0xff; 6]));
        assert_eq!(t.learn(low.0, low.1, PortId(1), 5), Learn::Learned);
        assert_eq!(t.learn(high.0, high.1, PortId(2), 5), Learn::Learned);
        assert_eq!(t.lookup(low.0, low.1), Some(PortId(1)));
        assert_eq!(t.lookup(high.0, high.1), Some(PortId(2)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.age(400, 300), 2);
        assert_eq!(t.lookup(low.0, low.1), None);
        assert_eq!(t.lookup(high.0, high.1), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn slots_are_sized_for_half_load() {
        assert_eq!(fdb(65536, 0).slot_count(), 131072);
        assert_eq!(fdb(100, 0).slot_count(), 256);
        assert_eq!(fdb(0, 0).slot_count(), 2);
    }

    /// How many slots past its home slot the learned (`vlan`, `mac`) sits.
    fn home_distance(t: &Fdb, vlan: VlanId, mac: MacAddr) -> usize {
        let key = encode_key(vlan, mac);
        (0..MAX_PROBE)
            .find(|&i| t.slot(t.home(key), i).key.load(Ordering::Relaxed) == key)
            .expect("a learned key is within the probe limit")
    }

    /// Address sets the way real tables fill up: sequential and random NIC
    /// parts under one OUI (QEMU's 52:54:00), fully random locally
    /// administered addresses, addresses differing only in their OUI or in
    /// one middle byte, and one MAC in many VLANs. Each fills a table to its
    /// limit (half its slots); with a hash that spreads them, every address
    /// is learned, and the mean distance from the home slot stays near the
    /// 0.5 of a uniform hash at half load.
    #[test]
    fn structured_mac_families_fill_the_table() {
        const N: u32 = 4096;
        let mut seed = 0x2545_f491u32;
        let mut random24 = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed & 0x00ff_ffff
        };
        let word = |w: u64| MacAddr::from_u64(w & 0xffff_ffff_ffff);
        let families: Vec<(&str, Vec<(VlanId, MacAddr)>)> = vec![
            ("sequential", (0..N).map(|i| (VlanId(1), mac(i))).collect()),
            (
                "qemu random",
                (0..N)
                    .map(|_| (VlanId(1), word(0x5254_0000_0000 | u64::from(random24()))))
                    .collect(),
            ),
            (
                "random",
                (0..N)
                    .map(|_| {
                        let w = u64::from(random24()) << 24 | u64::from(random24());
                        (VlanId(1), word((w | 0x0200_0000_0000) & !0x0100_0000_0000))
                    })
                    .collect(),
            ),
            (
                "oui only",
                (0..N)
                    .map(|i| (VlanId(1), word(u64::from(i * 2) << 32 | 0x0102)))
                    .collect(),
            ),
            (
                "middle byte",
                (0..N)
                    .map(|i| (VlanId(1), word(0x0200_0000_0000 | u64::from(i) << 16)))
                    .collect(),
            ),
            (
                "vlans",
                (0..N)
                    .map(|i| (VlanId((i % 4094 + 1) as u16), mac(i / 4094)))
                    .collect(),
            ),
        ];
        for (name, keys) in families {
            let t = fdb(N as usize, 0);
            let mut distance = 0usize;
            for (n, &(vlan, m)) in keys.iter().enumerate() {
                let learned = t.learn(vlan, m, PortId((n % 8) as u16), 1);
                assert!(
                    matches!(learned, Learn::Learned | Learn::Refreshed),
                    "{name}: {m:?} in {vlan:?} refused: {learned:?}"
                );
                distance += home_distance(&t, vlan, m);
            }
            let mean = distance as f64 / keys.len() as f64;
            assert!(mean <= 1.0, "{name}: mean distance {mean:.2}");
        }
    }

    /// The benchmarks' 1 M station case at full size: a million sequential
    /// addresses under one OUI fill a table sized for them (2 M slots) with
    /// every one learned and found, and stay close to their home slots. A
    /// multiplier that is poor for the MAC's part of the key fails this long
    /// before the smaller families above notice.
    #[test]
    fn a_million_sequential_stations_fit() {
        const N: u32 = 1 << 20;
        let t = fdb(N as usize, 0);
        let station = |i: u32| MacAddr::from_u64(0x0200_0000_0000 | u64::from(i));
        let mut distance = 0usize;
        for i in 0..N {
            let m = station(i);
            assert_eq!(t.learn(VlanId(0), m, PortId(1), 1), Learn::Learned, "{m:?}");
            distance += home_distance(&t, VlanId(0), m);
        }
        assert!((0..N).all(|i| t.lookup(VlanId(0), station(i)) == Some(PortId(1))));
        let mean = distance as f64 / f64::from(N);
        assert!(mean <= 1.0, "mean distance {mean:.2}");
    }

    #[test]
    fn learns_and_looks_up_by_vlan_and_mac() {
        let t = fdb(1024, 0);
        let m = mac(1);
        assert_eq!(t.lookup(VlanId(1), m), None);
        assert_eq!(t.learn(VlanId(1), m, PortId(3), 10), Learn::Learned);
        assert_eq!(t.learn(VlanId(2), m, PortId(4), 10), Learn::Learned);
        assert_eq!(t.lookup(VlanId(1), m), Some(PortId(3)));
        assert_eq!(t.lookup(VlanId(2), m), Some(PortId(4)));
        assert_eq!(t.lookup(VlanId(3), m), None);
        assert_eq!(t.lookup(VlanId(1), mac(2)), None);
        assert_eq!(t.learn(VlanId(1), m, PortId(3), 11), Learn::Refreshed);
        assert_eq!(t.len(), 2);
        assert_eq!(t.port_count(PortId(3)), 1);
        assert_eq!(t.port_count(PortId(4)), 1);
        assert_consistent(&t);
    }

    #[test]
    fn refresh_does_not_write_when_time_unchanged() {
        let cur = encode_val(PortId(3), 100, false);
        assert_eq!(plan_hit(cur, PortId(3), 100), Hit::Done(Learn::Refreshed));
        // A lagging clock does not write an older time either.
        assert_eq!(plan_hit(cur, PortId(3), 99), Hit::Done(Learn::Refreshed));
        assert_eq!(
            plan_hit(cur, PortId(3), 101),
            Hit::Refresh(encode_val(PortId(3), 101, false))
        );
        assert_eq!(plan_hit(0, PortId(3), 100), Hit::Pending);
        assert_eq!(plan_hit(DEAD, PortId(3), 100), Hit::Dead);

        let t = fdb(16, 0);
        assert_eq!(t.learn(VlanId(1), mac(7), PortId(3), 100), Learn::Learned);
        let slot = t.find(VlanId(1), mac(7)).unwrap();
        let before = slot.val.load(Ordering::Relaxed);
        assert_eq!(t.learn(VlanId(1), mac(7), PortId(3), 100), Learn::Refreshed);
        assert_eq!(t.learn(VlanId(1), mac(7), PortId(3), 90), Learn::Refreshed);
        assert_eq!(slot.val.load(Ordering::Relaxed), before);
        assert_eq!(t.learn(VlanId(1), mac(7), PortId(3), 105), Learn::Refreshed);
        assert_eq!(t.entries()[0].last_seen_secs, 105);
    }

    #[test]
    fn station_move_updates_port_and_counts() {
        let t = fdb(16, 0);
        let m = mac(9);
        assert_eq!(t.learn(VlanId(5), m, PortId(1), 1), Learn::Learned);
        assert_eq!(
            t.learn(VlanId(5), m, PortId(2), 1),
            Learn::Moved { from: PortId(1) }
        );
        assert_eq!(t.lookup(VlanId(5), m), Some(PortId(2)));
        assert_eq!(t.port_count(PortId(1)), 0);
        assert_eq!(t.port_count(PortId(2)), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.entries()[0].last_seen_secs, 1);
        assert_consistent(&t);
    }

    #[test]
    fn table_full_refuses_new_macs_but_keeps_old() {
        let t = fdb(4, 0);
        for n in 0..4 {
            assert_eq!(t.learn(VlanId(1), mac(n), PortId(1), 0), Learn::Learned);
        }
        assert_eq!(t.learn(VlanId(1), mac(4), PortId(1), 0), Learn::TableFull);
        assert_eq!(t.learn(VlanId(2), mac(0), PortId(1), 0), Learn::TableFull);
        assert_eq!(
            t.add_static(VlanId(1), mac(5), PortId(1)),
            Err(FdbError::TableFull { max_entries: 4 })
        );
        assert_eq!(t.lookup(VlanId(1), mac(4)), None);
        for n in 0..4 {
            assert_eq!(t.lookup(VlanId(1), mac(n)), Some(PortId(1)));
            assert_eq!(t.learn(VlanId(1), mac(n), PortId(1), 1), Learn::Refreshed);
        }
        // Moves do not need a new entry.
        assert_eq!(
            t.learn(VlanId(1), mac(0), PortId(2), 1),
            Learn::Moved { from: PortId(1) }
        );
        assert_eq!(t.len(), 4);
        assert!(t.remove(VlanId(1), mac(3)));
        assert_eq!(t.learn(VlanId(1), mac(4), PortId(1), 2), Learn::Learned);
        assert_consistent(&t);
    }

    #[test]
    fn per_port_limit_refuses_only_that_port() {
        let t = fdb(64, 2);
        assert_eq!(t.learn(VlanId(1), mac(1), PortId(1), 0), Learn::Learned);
        assert_eq!(t.learn(VlanId(1), mac(2), PortId(1), 0), Learn::Learned);
        assert_eq!(t.learn(VlanId(1), mac(3), PortId(1), 0), Learn::PortLimit);
        assert_eq!(t.learn(VlanId(1), mac(3), PortId(2), 0), Learn::Learned);
        assert_eq!(t.learn(VlanId(1), mac(4), PortId(2), 0), Learn::Learned);
        // A move onto a full port is refused and leaves the entry in place.
        assert_eq!(t.learn(VlanId(1), mac(3), PortId(1), 0), Learn::PortLimit);
        assert_eq!(t.lookup(VlanId(1), mac(3)), Some(PortId(2)));
        assert_eq!(
            t.add_static(VlanId(1), mac(5), PortId(1)),
            Err(FdbError::PortLimit {
                port: PortId(1),
                limit: 2
            })
        );
        assert_eq!(t.learn(VlanId(1), mac(1), PortId(1), 1), Learn::Refreshed);
        assert_eq!(t.port_count(PortId(1)), 2);
        assert_eq!(t.port_count(PortId(2)), 2);
        // Freeing a slot on the port lets it learn again.
        assert!(t.remove(VlanId(1), mac(1)));
        assert_eq!(
            t.learn(VlanId(1), mac(3), PortId(1), 2),
            Learn::Moved { from: PortId(2) }
        );
        assert_consistent(&t);
    }

    #[test]
    fn ports_beyond_the_counted_range_are_refused() {
        let t = fdb(16, 0);
        let far = PortId(MAX_PORTS as u16);
        assert_eq!(t.learn(VlanId(1), mac(1), far, 0), Learn::PortLimit);
        assert_eq!(
            t.add_static(VlanId(1), mac(1), far),
            Err(FdbError::PortOutOfRange { port: far })
        );
        assert_eq!(t.port_count(far), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn aging_removes_only_old_dynamic_entries() {
        let t = fdb(64, 0);
        t.learn(VlanId(1), mac(1), PortId(1), 0);
        t.learn(VlanId(1), mac(2), PortId(1), 250);
        t.learn(VlanId(1), mac(3), PortId(2), 0);
        t.learn(VlanId(1), mac(3), PortId(2), 200);
        // Seen "after" the control clock: a worker's clock ran slightly ahead.
        t.learn(VlanId(1), mac(4), PortId(2), 305);
        t.add_static(VlanId(1), mac(5), PortId(3)).unwrap();

        assert_eq!(t.age(301, 300), 1);
        assert_eq!(t.lookup(VlanId(1), mac(1)), None);
        for n in 2..=5 {
            assert!(t.lookup(VlanId(1), mac(n)).is_some(), "mac {n} aged early");
        }
        assert_eq!(t.tombstones(), 1);
        assert_eq!(t.port_count(PortId(1)), 1);
        assert_eq!(t.age(301, 300), 0);
        assert_eq!(t.age(501, 300), 1);
        assert_eq!(t.age(100_000, 300), 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(VlanId(1), mac(5)), Some(PortId(3)));
        assert_consistent(&t);
    }

    #[test]
    fn static_entries_never_age_or_move() {
        let t = fdb(64, 0);
        let m = mac(1);
        t.learn(VlanId(1), m, PortId(1), 0);
        // Pinning an existing dynamic entry converts it and moves its count.
        t.add_static(VlanId(1), m, PortId(2)).unwrap();
        assert_eq!(t.port_count(PortId(1)), 0);
        assert_eq!(t.port_count(PortId(2)), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.learn(VlanId(1), m, PortId(3), 10), Learn::Static);
        assert_eq!(t.learn(VlanId(1), m, PortId(2), 10), Learn::Refreshed);
        assert_eq!(t.lookup(VlanId(1), m), Some(PortId(2)));
        assert_eq!(t.age(u32::MAX / 2, 0), 0);
        assert_eq!(t.flush(), 0);
        assert_eq!(t.flush_port(PortId(2)), 0);
        assert_eq!(t.flush_vlan(VlanId(1)), 0);
        assert_eq!(t.lookup(VlanId(1), m), Some(PortId(2)));
        let e = t.entries()[0];
        assert!(e.is_static);
        assert_eq!(e.last_seen_secs, 0);
        // Re-pinning elsewhere is allowed; removal is the only way out.
        t.add_static(VlanId(1), m, PortId(4)).unwrap();
        assert_eq!(t.lookup(VlanId(1), m), Some(PortId(4)));
        assert_eq!(t.port_count(PortId(2)), 0);
        assert_consistent(&t);
        assert!(t.remove(VlanId(1), m));
        assert!(!t.remove(VlanId(1), m));
        assert!(t.is_empty());
        assert_consistent(&t);
    }

    #[test]
    fn flush_port_removes_only_that_port() {
        let t = fdb(256, 0);
        for n in 0..30 {
            t.learn(VlanId(1), mac(n), PortId((n % 3) as u16), 0);
        }
        t.add_static(VlanId(1), mac(100), PortId(1)).unwrap();
        assert_eq!(t.flush_port(PortId(1)), 10);
        assert_eq!(t.port_count(PortId(1)), 1);
        for n in 0..30 {
            let want = (n % 3 != 1).then_some(PortId((n % 3) as u16));
            assert_eq!(t.lookup(VlanId(1), mac(n)), want);
        }
        assert_eq!(t.lookup(VlanId(1), mac(100)), Some(PortId(1)));
        assert_eq!(t.flush(), 20);
        assert_eq!(t.len(), 1);
        assert_consistent(&t);
    }

    #[test]
    fn flush_vlan_removes_only_that_vlan() {
        let t = fdb(256, 0);
        for n in 0..20 {
            t.learn(VlanId(10), mac(n), PortId(1), 0);
            t.learn(VlanId(20), mac(n), PortId(1), 0);
        }
        assert_eq!(t.flush_vlan(VlanId(10)), 20);
        for n in 0..20 {
            assert_eq!(t.lookup(VlanId(10), mac(n)), None);
            assert_eq!(t.lookup(VlanId(20), mac(n)), Some(PortId(1)));
        }
        assert_consistent(&t);
    }

    #[test]
    fn tombstones_are_skipped_by_lookup() {
        let t = fdb(64, 0);
        let vlan = VlanId(7);
        let home = t.home(encode_key(vlan, mac(0)));
        let chain: Vec<MacAddr> = (0..100_000)
            .map(mac)
            .filter(|m| t.home(encode_key(vlan, *m)) == home)
            .take(3)
            .collect();
        assert_eq!(chain.len(), 3, "no colliding keys found");
        for m in &chain {
            assert_eq!(t.learn(vlan, *m, PortId(1), 0), Learn::Learned);
        }
        // They sit in consecutive slots from the shared home.
        for (i, m) in chain.iter().enumerate() {
            let k = t.slot(home, i).key.load(Ordering::Relaxed);
            assert_eq!(k, encode_key(vlan, *m));
        }

        assert!(t.remove(vlan, chain[1]));
        assert_eq!(t.tombstones(), 1);
        assert_eq!(t.lookup(vlan, chain[1]), None);
        assert_eq!(t.lookup(vlan, chain[2]), Some(PortId(1)));
        // Learning past the tombstone finds the existing entry, not a new slot.
        assert_eq!(t.learn(vlan, chain[2], PortId(1), 1), Learn::Refreshed);
        assert!(t.remove(vlan, chain[0]));
        assert_eq!(t.lookup(vlan, chain[2]), Some(PortId(1)));
        assert_eq!(
            t.learn(vlan, chain[2], PortId(2), 1),
            Learn::Moved { from: PortId(1) }
        );
        // A removed key comes back in a fresh slot, never in its tombstone.
        assert_eq!(t.learn(vlan, chain[1], PortId(1), 2), Learn::Learned);
        assert_eq!(t.slot(home, 1).key.load(Ordering::Relaxed), TOMBSTONE);
        assert_eq!(t.len(), 2);
        assert_consistent(&t);
    }

    #[test]
    fn rebuilt_table_keeps_live_entries_and_drops_tombstones() {
        let t = fdb(16, 0);
        for n in 0..16 {
            t.learn(VlanId(1), mac(n), PortId((n % 4) as u16), n);
        }
        t.remove(VlanId(1), mac(15));
        t.add_static(VlanId(2), mac(15), PortId(9)).unwrap();
        for n in 0..9 {
            assert!(t.remove(VlanId(1), mac(n)));
        }
        assert_eq!(t.tombstones(), 10);
        assert!(t.needs_rebuild());

        let r = t.rebuilt();
        assert_eq!(r.tombstones(), 0);
        assert!(!r.needs_rebuild());
        assert_eq!(r.len(), 7);
        assert_eq!(r.config(), t.config());
        for n in 0..9 {
            assert_eq!(r.lookup(VlanId(1), mac(n)), None);
        }
        for n in 9..15 {
            assert_eq!(r.lookup(VlanId(1), mac(n)), Some(PortId((n % 4) as u16)));
        }
        assert_eq!(r.learn(VlanId(2), mac(15), PortId(1), 0), Learn::Static);
        for p in 0..16 {
            assert_eq!(r.port_count(PortId(p)), t.port_count(PortId(p)));
        }
        let mut before = t.entries();
        let mut after = r.entries();
        before.sort_by_key(|e| (e.vlan, e.mac));
        after.sort_by_key(|e| (e.vlan, e.mac));
        assert_eq!(before, after);
        assert_consistent(&r);
    }

    /// `count` addresses in VLAN 0 whose home slot, under the public hash
    /// with no key (0), is that of the key `victim` in a table of `slots`
    /// slots: what anyone who reads the multiplier can compute.
    fn crafted_collisions(victim: u64, slots: usize, count: usize) -> Vec<MacAddr> {
        let shift = 64 - slots.trailing_zeros();
        let home = |k: u64| k.wrapping_mul(HASH_MUL) >> shift;
        (0u64..1 << 40)
            .map(|i| MacAddr::from_u64(0x0200_0000_0000 | i))
            .map(|m| (m, encode_key(VlanId(0), m)))
            .filter(|&(_, k)| k != victim && home(k) == home(victim))
            .map(|(m, _)| m)
            .take(count)
            .collect()
    }

    fn attack_config() -> FdbConfig {
        FdbConfig {
            max_entries: 4096,
            max_per_port: 0,
            learn_per_sec: 0,
            ..FdbConfig::default()
        }
    }

    /// An attacker fills a station's probe window with addresses that share
    /// its home slot under the unkeyed hash: with no key the station cannot
    /// be learned; with the process's key the same addresses scatter.
    #[test]
    fn crafted_collisions_cannot_keep_a_station_out() {
        let cfg = attack_config();
        let victim = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let slots = Fdb::new(&cfg).slot_count();
        let crafted = crafted_collisions(encode_key(VlanId(0), victim), slots, MAX_PROBE);
        assert_eq!(crafted.len(), MAX_PROBE);

        let unkeyed = Fdb::with_hash_key(&cfg, 0);
        for m in &crafted {
            assert_eq!(unkeyed.learn(VlanId(0), *m, PortId(1), 0), Learn::Learned);
        }
        assert_eq!(
            unkeyed.learn(VlanId(0), victim, PortId(2), 0),
            Learn::TableFull,
            "the crafted set does not attack the unkeyed hash"
        );

        let keyed = Fdb::new(&cfg);
        for m in &crafted {
            assert_eq!(keyed.learn(VlanId(0), *m, PortId(1), 0), Learn::Learned);
        }
        assert_eq!(keyed.learn(VlanId(0), victim, PortId(2), 0), Learn::Learned);
        assert_eq!(keyed.lookup(VlanId(0), victim), Some(PortId(2)));
    }

    /// The crafted addresses age out, leaving tombstones in the station's
    /// window: the refused learn asks for a rebuild, which lets it in.
    #[test]
    fn tombstones_filling_a_window_ask_for_a_rebuild() {
        let cfg = attack_config();
        let victim = MacAddr([0x52, 0x54, 0x00, 0x65, 0x43, 0x21]);
        let t = Fdb::with_hash_key(&cfg, 0);
        let crafted = crafted_collisions(encode_key(VlanId(0), victim), t.slot_count(), MAX_PROBE);
        for m in &crafted {
            assert_eq!(t.learn(VlanId(0), *m, PortId(1), 0), Learn::Learned);
        }
        assert_eq!(t.age(1000, 300), MAX_PROBE);
        assert_eq!(t.tombstones(), MAX_PROBE);
        assert!(!t.needs_rebuild());
        assert_eq!(
            t.learn(VlanId(0), victim, PortId(2), 1000),
            Learn::TableFull
        );
        assert!(
            t.needs_rebuild(),
            "a window of tombstones refused a station"
        );
        let r = t.rebuilt();
        assert!(!r.needs_rebuild());
        assert_eq!(r.learn(VlanId(0), victim, PortId(2), 1000), Learn::Learned);
    }

    #[test]
    fn make_room_evicts_the_oldest_of_the_busiest_ports() {
        let t = fdb(256, 0);
        let station = |p: u32, i: u32| mac(p * 1000 + i);
        for (p, n) in [(1u32, 101u32), (2, 100), (3, 55)] {
            for i in 0..n {
                assert_eq!(
                    t.learn(VlanId(1), station(p, i), PortId(p as u16), i),
                    Learn::Learned
                );
            }
        }
        assert_eq!(t.len(), 256);
        assert_eq!(t.make_room(), 0, "nobody was refused yet");
        assert_eq!(
            t.learn(VlanId(1), station(4, 0), PortId(4), 200),
            Learn::TableFull
        );
        // A sixty-fourth of the table: 4, taken from ports 1 and 2 in turn
        // as each becomes the largest; port 3 keeps all its entries.
        assert_eq!(t.make_room(), 4);
        assert_eq!(t.port_count(PortId(1)), 99);
        assert_eq!(t.port_count(PortId(2)), 98);
        assert_eq!(t.port_count(PortId(3)), 55);
        assert_eq!(t.lookup(VlanId(1), station(1, 0)), None);
        assert_eq!(t.lookup(VlanId(1), station(1, 1)), None);
        assert_eq!(t.lookup(VlanId(1), station(1, 2)), Some(PortId(1)));
        assert_eq!(t.lookup(VlanId(1), station(2, 1)), None);
        assert_eq!(t.lookup(VlanId(1), station(2, 2)), Some(PortId(2)));
        assert_eq!(t.make_room(), 0, "one round per refusal");
        assert!(t.needs_rebuild());
        assert_consistent(&t);
        let r = t.rebuilt();
        assert_eq!(
            r.learn(VlanId(1), station(4, 0), PortId(4), 200),
            Learn::Learned
        );
        assert_consistent(&r);
    }

    #[test]
    fn learning_rate_limits_new_addresses_and_moves_per_port() {
        let t = Fdb::with_hash_key(
            &FdbConfig {
                learn_per_sec: 3,
                ..FdbConfig::default()
            },
            0,
        );
        for i in 0..3 {
            assert_eq!(t.learn(VlanId(1), mac(i), PortId(1), 7), Learn::Learned);
        }
        assert_eq!(t.learn(VlanId(1), mac(3), PortId(1), 7), Learn::RateLimited);
        assert_eq!(t.learn(VlanId(1), mac(3), PortId(2), 7), Learn::Learned);
        assert_eq!(t.learn(VlanId(1), mac(3), PortId(1), 7), Learn::RateLimited);
        assert_eq!(t.lookup(VlanId(1), mac(3)), Some(PortId(2)));
        // Refreshes are free, even a second later.
        assert_eq!(t.learn(VlanId(1), mac(0), PortId(1), 8), Learn::Refreshed);
        // A lagging clock spends from the newer second.
        assert_eq!(
            t.learn(VlanId(1), mac(3), PortId(1), 8),
            Learn::Moved { from: PortId(2) }
        );
        assert_eq!(t.learn(VlanId(1), mac(4), PortId(1), 7), Learn::Learned);
        assert_eq!(t.learn(VlanId(1), mac(5), PortId(1), 8), Learn::Learned);
        assert_eq!(t.learn(VlanId(1), mac(6), PortId(1), 8), Learn::RateLimited);
        assert_consistent(&t);
    }

    #[test]
    fn concurrent_learning_from_two_threads_loses_nothing() {
        const PER_THREAD: u32 = 20_000;
        const OVERLAP: u32 = 5_000;
        let t = Arc::new(fdb(100_000, 0));
        let start = Arc::new(Barrier::new(2));
        let workers: Vec<_> = (0..2u32)
            .map(|w| {
                let t = Arc::clone(&t);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    // Thread 1's range starts inside thread 0's, so OVERLAP MACs race.
                    let first = w * (PER_THREAD - OVERLAP);
                    start.wait();
                    for n in first..first + PER_THREAD {
                        let r = t.learn(VlanId(1), mac(n), PortId(w as u16 + 1), 0);
                        assert!(
                            matches!(r, Learn::Learned | Learn::Refreshed | Learn::Moved { .. }),
                            "{r:?}"
                        );
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let distinct = 2 * PER_THREAD - OVERLAP;
        assert_eq!(t.len(), distinct as usize);
        for n in 0..distinct {
            assert!(t.lookup(VlanId(1), mac(n)).is_some(), "lost mac {n}");
        }
        assert_eq!(t.entries().len(), distinct as usize);
        assert_eq!(t.port_count(PortId(1)) + t.port_count(PortId(2)), distinct);
        assert_consistent(&t);
    }

    #[test]
    fn concurrent_learn_age_and_lookup_stay_consistent() {
        const MACS: u32 = 6_000;
        let table = Arc::new(arc_swap::ArcSwap::from_pointee(fdb(4096, 1500)));
        let clock = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..2u32 {
            let (table, clock, stop) = (table.clone(), clock.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut x = 0x9E37_79B9u32.wrapping_mul(w + 1);
                while !stop.load(Ordering::Relaxed) {
                    let t = table.load();
                    let now = clock.load(Ordering::Relaxed);
                    for _ in 0..32 {
                        // xorshift32: a cheap stream of MACs and ports.
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        let m = mac(x % MACS);
                        let port = PortId((x >> 20) as u16 % 6);
                        t.learn(VlanId((x >> 28) as u16 % 2), m, port, now);
                        t.lookup(VlanId(0), m);
                    }
                }
            }));
        }
        {
            let (table, stop) = (table.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let t = table.load();
                    for i in 0..MACS {
                        if let Some(p) = t.lookup(VlanId(1), mac(i)) {
                            assert!(p.0 < 6);
                        }
                    }
                    n = n.wrapping_add(1);
                    let _ = t.remove(VlanId(0), mac(n % MACS));
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut rebuilds = 0;
        while Instant::now() < deadline {
            let now = clock.fetch_add(1, Ordering::Relaxed) + 1;
            let t = table.load_full();
            t.age(now, 3);
            if now % 7 == 3 {
                t.flush_port(PortId((now % 6) as u16));
            }
            if now % 11 == 5 {
                let _ = t.add_static(VlanId(1), mac(now % MACS), PortId(5));
            }
            for p in 0..6 {
                // Each learner may hold one reservation it is about to roll back.
                assert!(t.port_count(PortId(p)) <= 1500 + 2);
            }
            if t.needs_rebuild() {
                table.store(Arc::new(t.rebuilt()));
                rebuilds += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        for th in threads {
            th.join().unwrap();
        }
        assert!(
            rebuilds > 0,
            "stress never filled the table with tombstones"
        );
        let t = table.load_full();
        assert!(t.len() <= 4096);
        assert_consistent(&t);
    }
}
