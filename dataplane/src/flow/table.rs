//! The shared flow table and the per-thread handle that reads and writes
//! it: staged vector lookups, inserts, per-packet tracking and the flow's
//! verdict and forwarding slots.
//!
//! Memory is two arrays allocated once: 64-byte buckets (one per ten
//! flows of capacity) and 128-byte entries, whose first cache line holds
//! everything a lookup reads (key, state, last-seen tick, verdict,
//! forwarding) and whose second what tracking writes (counters), so a
//! lookup and the tracking of its packet touch one random 128-byte block
//! besides the bucket. Nothing grows afterwards.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use caracal_wire::TcpFlags;

use super::bucket::{self, Bucket, BucketGuard, WayFormat, WAYS};
use super::epoch::{Epochs, Participant};
use super::freelist::{IndexLists, Links};
use super::hint::{self, prefetch};
use super::key::{FlowDir, FlowKey, KeyHash, KeyHasher, KEY_WORDS};
use super::state::{
    idle_ticks, tick, ticks_to_ns, FlowStatus, FlowTimeouts, StateWord, Tracked, Verdict,
};
use super::sweep::Housekeeping;
use super::Padded;

/// Flows of capacity per bucket: 10 in 15 ways keeps ~97 % of keys in
/// their primary bucket even when the table is full, and a full bucket
/// pair needs no eviction (simulated over a million inserts).
const FLOWS_PER_BUCKET: u32 = 10;
/// A key goes to its alternative bucket only once its primary holds this
/// many ways and the alternative is emptier.
const PRIMARY_PREFERRED: usize = 13;
/// Largest capacity: 28 index bits leave 4 tag bits in a way.
pub const MAX_CAPACITY: u32 = 1 << 28;

/// Packets per stage group of a vector lookup: while one group is hashed
/// and its buckets prefetched, the previous group probes its (now cached)
/// buckets and prefetches its entries, and the one before compares keys.
const STAGE: usize = 16;
/// Keys one staged pass handles (a graph vector).
const PASS: usize = 256;
/// Stage results beside entry indices.
const CAND_MISS: u32 = u32::MAX;
const CAND_ALT: u32 = u32::MAX - 1;

/// How a [`FlowTable`] is sized and behaves.
#[derive(Debug, Clone)]
pub struct FlowTableConfig {
    /// Most flows held at once, up to [`MAX_CAPACITY`]. The entry index
    /// takes the bits the capacity needs in a bucket's 32-bit ways and the
    /// tag the rest: 11 tag bits at a million flows, fewer (more key
    /// compares of false candidates) for much larger tables.
    pub capacity: u32,
    /// Most [`FlowHandle`]s registered at once (workers plus readers).
    pub max_handles: usize,
    pub timeouts: FlowTimeouts,
    /// When a sweep finds more than this fraction of the capacity in use it
    /// evicts the longest-idle flows...
    pub evict_above: f64,
    /// ...down to this fraction.
    pub evict_to: f64,
    /// Hash seed; `None` draws a random one (the default: pods choose
    /// their tuples and must not be able to aim them at one bucket).
    pub seed: Option<u64>,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        FlowTableConfig {
            capacity: 1 << 20,
            max_handles: 64,
            timeouts: FlowTimeouts::default(),
            evict_above: 0.9,
            evict_to: 0.85,
            seed: None,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum FlowTableError {
    #[error("flow table capacity must be between 1 and 2^28, not {0}")]
    BadCapacity(u32),
    #[error(
        "eviction watermarks must satisfy 0 <= evict_to <= evict_above <= 1, not {to} and {above}"
    )]
    BadWatermarks { above: f64, to: f64 },
    #[error("a flow table needs at least one handle slot")]
    NoHandles,
    #[error("all {0} flow table handles are in use")]
    TooManyHandles(usize),
}

/// Why an insert created nothing. The packet is still forwarded or
/// dropped by policy; only its flow is not remembered.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum FlowError {
    #[error("flow table full")]
    Full,
    #[error("both buckets of the flow are full and no entry in them could be evicted")]
    BucketFull,
    #[error("this packet cannot open a flow (a TCP segment other than SYN or ACK)")]
    NotInitial,
}

/// Index of a flow's entry; valid until its handle's next quiescent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId(pub u32);

/// A lookup's answer: the flow and the packet's direction in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowHit {
    pub id: FlowId,
    pub dir: FlowDir,
}

/// What the table needs from a flow's first packet.
#[derive(Debug, Clone, Copy)]
pub struct NewFlow {
    /// Bytes of the packet, counted in the original direction.
    pub bytes: u32,
    /// TCP flags (only SYN or a bare ACK can open a TCP flow); ignored for
    /// other protocols.
    pub tcp_flags: TcpFlags,
    /// The policy decision for the flow, if already taken.
    pub verdict: Option<Verdict>,
    /// Forwarding for the original direction (e.g. an adjacency id).
    pub forwarding: Option<u32>,
}

/// A successful insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub hit: FlowHit,
    /// False when the flow was already there (another worker inserted it,
    /// maybe from the other direction, since the lookup): handle the
    /// packet as a hit, [`track`](FlowHandle::track) included.
    pub created: bool,
}

/// A copy of one flow, for dumps, flow logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub id: FlowId,
    /// The key as the originator sent its first packet.
    pub key: FlowKey,
    pub status: FlowStatus,
    pub verdict: Option<Verdict>,
    /// By [`FlowDir::index`].
    pub forwarding: [Option<u32>; 2],
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Time since the last packet that refreshed the flow (tick precision).
    pub idle_ns: u64,
}

/// Table-wide statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub capacity: u32,
    /// Flows that lookups can find.
    pub live: u32,
    /// Unlinked entries waiting for every worker to pass a quiescent point.
    pub limbo: u32,
    pub inserts: u64,
    /// Inserts that found the flow already there.
    pub insert_existing: u64,
    /// Inserts refused for want of a free entry or bucket way.
    pub insert_full: u64,
    /// Flows evicted by inserts whose two buckets were full.
    pub bucket_evictions: u64,
    /// Flows removed by the sweep for being idle past their timeout.
    pub expired: u64,
    /// Flows removed by the sweep to bring the table under its watermark.
    pub evicted: u64,
    pub epoch: u64,
}

/// One flow: a lookup's cache line, then tracking's line.
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub(super) struct Entry {
    key: [AtomicU64; KEY_WORDS],
    /// A [`StateWord`].
    pub state: AtomicU32,
    /// Tick of the last packet that refreshed the flow.
    pub last_seen: AtomicU32,
    /// [`Verdict::pack`]ed.
    verdict: AtomicU64,
    /// By direction: forwarding value + 1, 0 for none.
    forward: [AtomicU32; 2],
    // Second line.
    /// By direction.
    packets: [AtomicU64; 2],
    /// By direction.
    bytes: [AtomicU64; 2],
    /// Next entry on the free or retired list, as index + 1, while the
    /// entry is on one. The line's remaining 28 bytes are spare (room for
    /// TCP window tracking or NAT state).
    link: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 128);
const _: () = assert!(std::mem::offset_of!(Entry, packets) == 64);

impl Entry {
    pub fn key(&self, swapped: bool) -> FlowKey {
        FlowKey::from_words(
            std::array::from_fn(|i| self.key[i].load(Ordering::Relaxed)),
            swapped,
        )
    }
}

impl Links for [Entry] {
    #[inline]
    fn link(&self, index: u32) -> &AtomicU32 {
        &self[index as usize].link
    }
}

/// The flow table (conntrack) shared by every worker.
///
/// Lookups take no lock, allocate nothing and make no system call. An
/// insert takes the insert lock of the key's primary bucket for the tens
/// of nanoseconds it needs to re-probe, pop a free entry, fill it and
/// publish it (a whole miss plus insert costs ~240 cycles); lookups never
/// look at that lock, and only inserters of keys homed in the same bucket
/// ever wait for it. Serialising inserts per
/// key's bucket is what makes two workers inserting one connection at once
/// (even from its two directions) end with one entry, which the lock-free
/// alternative (claim a way, re-scan, back off) cannot guarantee without a
/// second round of coordination. The sweep takes the same lock to unlink.
#[derive(Debug)]
pub struct FlowTable {
    buckets: Box<[Bucket]>,
    pub(super) entries: Box<[Entry]>,
    pub(super) lists: IndexLists,
    format: WayFormat,
    pub(super) epochs: Epochs,
    hasher: KeyHasher,
    live: Padded<AtomicU32>,
    capacity: u32,
    /// Watermarks, in entries.
    pub(super) evict_above: u32,
    pub(super) evict_to: u32,
    pub(super) housekeeping: Mutex<Housekeeping>,
    pub(super) expired: AtomicU64,
    pub(super) evicted: AtomicU64,
    pub(super) limbo: AtomicU32,
}

impl FlowTable {
    pub fn new(config: &FlowTableConfig) -> Result<Arc<FlowTable>, FlowTableError> {
        Self::with_buckets(config, config.capacity.div_ceil(FLOWS_PER_BUCKET))
    }

    /// A table with `buckets` buckets (at least 2) whatever its capacity.
    pub(super) fn with_buckets(
        config: &FlowTableConfig,
        buckets: u32,
    ) -> Result<Arc<FlowTable>, FlowTableError> {
        let cap = config.capacity;
        if cap == 0 || cap > MAX_CAPACITY {
            return Err(FlowTableError::BadCapacity(cap));
        }
        let (above, to) = (config.evict_above, config.evict_to);
        if !(0.0..=1.0).contains(&above) || !(0.0..=above).contains(&to) {
            return Err(FlowTableError::BadWatermarks { above, to });
        }
        if config.max_handles == 0 {
            return Err(FlowTableError::NoHandles);
        }
        let nb = buckets.max(2);
        let seed = config.seed.unwrap_or_else(random_seed);
        let format = WayFormat::new(cap);
        let entries = array(cap, Entry::default);
        Ok(Arc::new(FlowTable {
            buckets: array(nb, Bucket::default),
            lists: IndexLists::new(cap, &*entries),
            entries,
            format,
            epochs: Epochs::new(config.max_handles),
            hasher: KeyHasher::new(seed, nb, format),
            live: Padded(AtomicU32::new(0)),
            capacity: cap,
            evict_above: (f64::from(cap) * above) as u32,
            evict_to: (f64::from(cap) * to) as u32,
            housekeeping: Mutex::new(Housekeeping::new(&config.timeouts)),
            expired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            limbo: AtomicU32::new(0),
        }))
    }

    /// Registers a handle for the calling thread (or the worker it is
    /// moved to), online.
    pub fn register(self: &Arc<Self>) -> Result<FlowHandle, FlowTableError> {
        let slot = self
            .epochs
            .register()
            .ok_or(FlowTableError::TooManyHandles(self.epochs.slots().len()))?;
        Ok(FlowHandle {
            table: self.clone(),
            slot,
            _not_sync: PhantomData,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Flows lookups can find.
    pub fn len(&self) -> u32 {
        self.live.0.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the table allocated, all of it up front.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets) + std::mem::size_of_val(&*self.entries)
    }

    /// [`memory_bytes`](Self::memory_bytes) per flow of capacity: a
    /// 128-byte entry and a tenth of a 64-byte bucket, ~134.4.
    pub fn bytes_per_flow(&self) -> f64 {
        self.memory_bytes() as f64 / f64::from(self.capacity)
    }

    pub fn stats(&self) -> FlowStats {
        let mut s = FlowStats {
            capacity: self.capacity,
            live: self.len(),
            limbo: self.limbo.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            epoch: self.epochs.current(),
            ..FlowStats::default()
        };
        for p in self.epochs.slots() {
            s.inserts += p.inserts.load(Ordering::Relaxed);
            s.insert_existing += p.existing.load(Ordering::Relaxed);
            s.insert_full += p.full.load(Ordering::Relaxed);
            s.bucket_evictions += p.bucket_evictions.load(Ordering::Relaxed);
        }
        s
    }

    /// Calls `f` with a copy of every live flow. Takes the housekeeping
    /// lock (so nothing is reclaimed meanwhile): an API-thread call, not a
    /// packet-path one.
    pub fn for_each_flow(&self, now_ns: u64, mut f: impl FnMut(&FlowInfo)) {
        let _hk = self.housekeeping();
        for i in 0..self.capacity {
            if let Some(info) = self.info(FlowId(i), now_ns) {
                f(&info);
            }
        }
    }

    pub(super) fn housekeeping(&self) -> std::sync::MutexGuard<'_, Housekeeping> {
        self.housekeeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Occupied ways of bucket `b`.
    #[cfg(test)]
    pub(super) fn bucket_occupancy(&self, b: u32) -> usize {
        self.buckets[b as usize].occupied()
    }

    #[inline(always)]
    pub(super) fn hash(&self, key: &FlowKey) -> KeyHash {
        self.hasher.hash(key)
    }

    /// The direction of `key` in entry `idx`, if the entry is live and
    /// holds `key`'s flow.
    #[inline(always)]
    fn matches(&self, idx: u32, key: &FlowKey) -> Option<FlowDir> {
        let e = &self.entries[idx as usize];
        let w = key.words();
        let diff = (0..KEY_WORDS).fold(0, |d, i| d | (e.key[i].load(Ordering::Relaxed) ^ w[i]));
        if diff != 0 {
            return None;
        }
        let s = StateWord(e.state.load(Ordering::Acquire));
        s.is_live().then(|| s.dir_of(key.swapped()))
    }

    /// Looks for `key` among the ways of `b` tagged `tag`.
    #[inline]
    fn probe(&self, b: &Bucket, key: &FlowKey, tag: u32) -> Option<FlowHit> {
        let mut from = 0;
        while let Some((i, idx)) = b.find_tag(self.format, tag, from) {
            if let Some(dir) = self.matches(idx, key) {
                return Some(FlowHit {
                    id: FlowId(idx),
                    dir,
                });
            }
            from = i + 1;
        }
        None
    }

    /// Full lookup: the primary bucket, then the alternative when keys
    /// homed in the primary overflowed there.
    #[inline]
    fn find(&self, key: &FlowKey, h: &KeyHash) -> Option<FlowHit> {
        let b = &self.buckets[h.primary as usize];
        if let Some(hit) = self.probe(b, key, h.tag) {
            return Some(hit);
        }
        if b.overflow() > 0 {
            return self.probe(&self.buckets[h.alt as usize], key, h.tag);
        }
        None
    }

    /// Locks the primary bucket of a key hashing to `h`.
    pub(super) fn lock(&self, h: &KeyHash) -> BucketGuard<'_> {
        self.buckets[h.primary as usize].lock()
    }

    /// Unlinks live entry `idx` whose key hashes to `h`, holding the lock
    /// of its primary bucket (`guard`), if `still` holds for its state.
    /// Lookups stop finding it at once; the caller hands it to
    /// reclamation. False when it is no longer linked or `still` failed.
    pub(super) fn unlink(
        &self,
        guard: &BucketGuard<'_>,
        h: &KeyHash,
        idx: u32,
        still: impl Fn(StateWord, &Entry) -> bool,
    ) -> bool {
        let w = self.format.way(h.tag, idx);
        let primary = &self.buckets[h.primary as usize];
        let alt = &self.buckets[h.alt as usize];
        let in_primary = primary.holds(w);
        if !in_primary && !alt.holds(w) {
            return false;
        }
        let e = &self.entries[idx as usize];
        let mut s = e.state.load(Ordering::Acquire);
        loop {
            let sw = StateWord(s);
            if !sw.is_live() || !still(sw, e) {
                return false;
            }
            match e.state.compare_exchange_weak(
                s,
                s | StateWord::DEAD,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(x) => s = x,
            }
        }
        if in_primary {
            bucket::unpublish(primary, w);
        } else {
            bucket::unpublish(alt, w);
            guard.remove_overflow();
        }
        self.live.0.fetch_sub(1, Ordering::Relaxed);
        true
    }

    fn init_entry(&self, idx: u32, key: &FlowKey, state: StateWord, now_ns: u64, first: &NewFlow) {
        let e = &self.entries[idx as usize];
        for (slot, &w) in e.key.iter().zip(key.words()) {
            slot.store(w, Ordering::Relaxed);
        }
        e.last_seen.store(tick(now_ns), Ordering::Relaxed);
        e.verdict
            .store(Verdict::pack(first.verdict), Ordering::Relaxed);
        e.forward[0].store(encode_fwd(first.forwarding), Ordering::Relaxed);
        e.forward[1].store(0, Ordering::Relaxed);
        e.packets[0].store(1, Ordering::Relaxed);
        e.bytes[0].store(u64::from(first.bytes), Ordering::Relaxed);
        e.packets[1].store(0, Ordering::Relaxed);
        e.bytes[1].store(0, Ordering::Relaxed);
        // Release: whoever sees the state sees the fields above.
        e.state.store(state.0, Ordering::Release);
    }

    /// Publishes entry `idx` in one of the key's buckets; when both are
    /// full, first moves a flow out of the way, else evicts the longest-idle
    /// flow of the two.
    fn place(
        &self,
        guard: &BucketGuard<'_>,
        h: &KeyHash,
        idx: u32,
        now: u32,
        me: &Participant,
    ) -> Result<(), FlowError> {
        let primary = &self.buckets[h.primary as usize];
        let alt = &self.buckets[h.alt as usize];
        let w = self.format.way(h.tag, idx);
        // Another inserter may take the way an eviction freed: a few rounds.
        for _ in 0..4 {
            let np = primary.occupied();
            let to_alt = np >= PRIMARY_PREFERRED && alt.occupied() < np;
            let put = |in_alt: bool| {
                if !in_alt {
                    return bucket::claim(primary, w);
                }
                guard.add_overflow();
                let ok = bucket::claim(alt, w);
                if !ok {
                    guard.remove_overflow();
                }
                ok
            };
            let placed = put(to_alt) || put(!to_alt);
            if placed {
                return Ok(());
            }
            if !self.relocate_from_pair(guard, h) && !self.evict_from_pair(guard, h, now, me) {
                break;
            }
        }
        Err(FlowError::BucketFull)
    }

    /// Makes room in the key's two full buckets by moving one of their
    /// flows to its own other bucket (one cuckoo kick), holding that flow's
    /// primary lock. The flow is published in its new bucket before it
    /// leaves the old one, so lookups find it throughout. With one kick a
    /// full pair stays rare enough that a table filled to capacity needs no
    /// eviction (simulated: none in a million inserts).
    fn relocate_from_pair(&self, guard: &BucketGuard<'_>, h: &KeyHash) -> bool {
        for from in [h.primary, h.alt] {
            let from_b = &self.buckets[from as usize];
            for i in 0..WAYS {
                let w = from_b.way(i);
                if w == 0 {
                    continue;
                }
                let idx = self.format.index(w);
                // Not reclaimable under us: this thread is not quiescent.
                let vh = self.hash(&self.entries[idx as usize].key(false));
                let (to, homeward) = if from == vh.primary {
                    (vh.alt, false)
                } else if from == vh.alt {
                    (vh.primary, true)
                } else {
                    continue;
                };
                let to_b = &self.buckets[to as usize];
                if to_b.occupied() == WAYS {
                    continue;
                }
                let other;
                let vguard = if vh.primary == h.primary {
                    guard
                } else {
                    match self.buckets[vh.primary as usize].try_lock() {
                        Some(g) => {
                            other = g;
                            &other
                        }
                        None => continue,
                    }
                };
                // Under its lock the flow cannot be unlinked or moved.
                if !from_b.holds(w) {
                    continue;
                }
                if !homeward {
                    vguard.add_overflow();
                }
                if bucket::claim(to_b, w) {
                    bucket::unpublish(from_b, w);
                    if homeward {
                        vguard.remove_overflow();
                    }
                    return true;
                }
                if !homeward {
                    vguard.remove_overflow();
                }
            }
        }
        false
    }

    /// Evicts one flow from the key's two full buckets: the longest-idle
    /// one, not-assured flows first, among those whose primary lock can be
    /// had without waiting.
    fn evict_from_pair(
        &self,
        guard: &BucketGuard<'_>,
        h: &KeyHash,
        now: u32,
        me: &Participant,
    ) -> bool {
        let mut victims: [(bool, u32, u32); 2 * WAYS] = [(true, 0, 0); 2 * WAYS];
        let mut n = 0;
        for b in [h.primary, h.alt] {
            let b = &self.buckets[b as usize];
            for i in 0..WAYS {
                let w = b.way(i);
                if w == 0 {
                    continue;
                }
                let e = &self.entries[self.format.index(w) as usize];
                let s = StateWord(e.state.load(Ordering::Relaxed));
                let age = idle_ticks(now, e.last_seen.load(Ordering::Relaxed));
                victims[n] = (s.assured(), age, w);
                n += 1;
            }
        }
        let victims = &mut victims[..n];
        // Not assured before assured, then oldest first.
        victims.sort_unstable_by_key(|&(assured, age, _)| (assured, std::cmp::Reverse(age)));
        for &(_, _, w) in victims.iter() {
            let idx = self.format.index(w);
            // The entry cannot be reclaimed under us (this thread has not
            // passed a quiescent point), so its key is its key.
            let vh = self.hash(&self.entries[idx as usize].key(false));
            let other;
            let vguard = if vh.primary == h.primary {
                guard
            } else {
                match self.buckets[vh.primary as usize].try_lock() {
                    Some(g) => {
                        other = g;
                        &other
                    }
                    None => continue,
                }
            };
            if self.unlink(vguard, &vh, idx, |_, _| true) {
                self.lists.push_retired(&*self.entries, idx);
                Participant::bump(&me.bucket_evictions);
                return true;
            }
        }
        false
    }
}

/// `n` values of `f`, on huge pages where the kernel has them.
fn array<T>(n: u32, f: impl FnMut() -> T) -> Box<[T]> {
    let mut v = Vec::with_capacity(n as usize);
    hint::advise_hugepages(v.spare_capacity_mut());
    v.extend(std::iter::repeat_with(f).take(n as usize));
    v.into_boxed_slice()
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0x5eed_u64)
}

#[inline]
fn encode_fwd(f: Option<u32>) -> u32 {
    f.map_or(0, |v| v.wrapping_add(1))
}

#[inline]
fn decode_fwd(v: u32) -> Option<u32> {
    v.checked_sub(1)
}

/// One thread's access to a [`FlowTable`]: lookups, inserts, tracking, and
/// the quiescent-point announcements that let the sweep reclaim entries.
///
/// A [`FlowHit`] stays valid until this handle's next
/// [`quiescent`](Self::quiescent) or [`offline`](Self::offline): a worker
/// calls `quiescent` once per poll loop, between vectors, and `offline`
/// before it sleeps. A handle is `Send` (made on one thread, moved to its
/// worker) but not `Sync`.
#[derive(Debug)]
pub struct FlowHandle {
    table: Arc<FlowTable>,
    slot: usize,
    _not_sync: PhantomData<Cell<()>>,
}

impl Drop for FlowHandle {
    fn drop(&mut self) {
        self.table.epochs.unregister(self.slot);
    }
}

impl FlowHandle {
    pub fn table(&self) -> &Arc<FlowTable> {
        &self.table
    }

    /// Announces that this thread holds no flow reference: every
    /// [`FlowHit`] obtained before is dead. Once per poll loop.
    #[inline]
    pub fn quiescent(&mut self) {
        self.table.epochs.quiescent(self.slot);
    }

    /// Stops holding up reclamation while this thread sleeps.
    pub fn offline(&mut self) {
        self.table.epochs.offline(self.slot);
    }

    /// Resumes after [`offline`](Self::offline); lookups may follow.
    pub fn online(&mut self) {
        self.table.epochs.online(self.slot);
    }

    /// Finds the flow of one packet.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<FlowHit> {
        let t = &*self.table;
        t.find(key, &t.hash(key))
    }

    /// Finds the flows of a vector of packets: `out[i]` answers `keys[i]`.
    ///
    /// Staged as VPP's bihash users do, in groups of 16 packets: one group
    /// is hashed and its buckets prefetched while the group before probes
    /// its (now cached) buckets and prefetches its entries — both lines:
    /// the lookup's and the one [`track`](Self::track) writes — and the
    /// group before that compares keys. A whole vector's cache misses
    /// overlap instead of stalling one after another.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn lookup_batch(&self, keys: &[FlowKey], out: &mut [Option<FlowHit>]) {
        assert_eq!(keys.len(), out.len(), "one answer per key");
        for (keys, out) in keys.chunks(PASS).zip(out.chunks_mut(PASS)) {
            self.lookup_pass(keys, out);
        }
    }

    /// [`lookup_batch`](Self::lookup_batch) of at most [`PASS`] keys.
    #[inline]
    fn lookup_pass(&self, keys: &[FlowKey], out: &mut [Option<FlowHit>]) {
        let t = &*self.table;
        let n = keys.len();
        let mut hashes = [KeyHash::default(); PASS];
        let mut cands = [CAND_MISS; PASS];
        let groups = n.div_ceil(STAGE);
        let group = |g: usize| g * STAGE..((g + 1) * STAGE).min(n);
        for g in 0..groups + 2 {
            if g < groups {
                for i in group(g) {
                    let h = t.hash(&keys[i]);
                    prefetch(&t.buckets[h.primary as usize]);
                    hashes[i] = h;
                }
            }
            if let Some(g) = g.checked_sub(1).filter(|&g| g < groups) {
                for j in group(g) {
                    let h = &hashes[j];
                    let b = &t.buckets[h.primary as usize];
                    cands[j] = match b.first_tagged(t.format, h.tag) {
                        Some(idx) => {
                            let e = &t.entries[idx as usize];
                            prefetch(&e.key);
                            prefetch(&e.packets);
                            idx
                        }
                        None if b.overflow() > 0 => {
                            prefetch(&t.buckets[h.alt as usize]);
                            CAND_ALT
                        }
                        None => CAND_MISS,
                    };
                }
            }
            if let Some(g) = g.checked_sub(2) {
                for k in group(g) {
                    let (h, key) = (&hashes[k], &keys[k]);
                    out[k] = match cands[k] {
                        CAND_MISS => None,
                        CAND_ALT => t.probe(&t.buckets[h.alt as usize], key, h.tag),
                        idx => match t.matches(idx, key) {
                            Some(dir) => Some(FlowHit {
                                id: FlowId(idx),
                                dir,
                            }),
                            // A tag collision or a dying entry: the slow way.
                            None => t.find(key, h),
                        },
                    };
                }
            }
        }
    }

    /// Creates the flow of a packet that missed (after policy let it
    /// through, or to remember a deny), unless another thread created it
    /// meanwhile — then that flow is returned whatever the packet is. The
    /// packet itself is counted and starts the state machine when the flow
    /// is created.
    pub fn insert(
        &self,
        key: &FlowKey,
        now_ns: u64,
        first: &NewFlow,
    ) -> Result<Inserted, FlowError> {
        let t = &*self.table;
        let me = &t.epochs.slots()[self.slot];
        let h = t.hash(key);
        let guard = t.lock(&h);
        if let Some(hit) = t.find(key, &h) {
            Participant::bump(&me.existing);
            return Ok(Inserted {
                hit,
                created: false,
            });
        }
        let state = StateWord::initial(key, first.tcp_flags).ok_or(FlowError::NotInitial)?;
        let Some(idx) = t.lists.pop_free(&*t.entries) else {
            Participant::bump(&me.full);
            return Err(FlowError::Full);
        };
        t.init_entry(idx, key, state, now_ns, first);
        if let Err(e) = t.place(&guard, &h, idx, tick(now_ns), me) {
            // Never published: straight to reclamation, like any entry.
            t.entries[idx as usize]
                .state
                .store(state.0 | StateWord::DEAD, Ordering::Relaxed);
            t.lists.push_retired(&*t.entries, idx);
            Participant::bump(&me.full);
            return Err(e);
        }
        t.live.0.fetch_add(1, Ordering::Relaxed);
        Participant::bump(&me.inserts);
        Ok(Inserted {
            hit: FlowHit {
                id: FlowId(idx),
                dir: FlowDir::Original,
            },
            created: true,
        })
    }

    /// Accounts a packet of `bytes` bytes to its flow and moves the flow's
    /// state (TCP `tcp_flags`; ignored for other protocols).
    #[inline]
    pub fn track(&self, hit: FlowHit, now_ns: u64, bytes: u32, tcp_flags: TcpFlags) -> Tracked {
        let t = &*self.table;
        let e = &t.entries[hit.id.0 as usize];
        let mut s = e.state.load(Ordering::Acquire);
        let outcome = loop {
            let sw = StateWord(s);
            if !sw.is_live() {
                return Tracked::Gone;
            }
            let (next, outcome) = sw.advance(hit.dir, tcp_flags);
            if next == sw {
                break outcome;
            }
            match e
                .state
                .compare_exchange_weak(s, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break outcome,
                Err(x) => s = x,
            }
        };
        let d = if outcome == Tracked::Reopened {
            // Only the thread whose compare-and-swap reopened gets here.
            e.verdict.store(0, Ordering::Relaxed);
            for f in &e.forward {
                f.store(0, Ordering::Relaxed);
            }
            for a in e.packets.iter().chain(&e.bytes) {
                a.store(0, Ordering::Relaxed);
            }
            FlowDir::Original.index()
        } else {
            hit.dir.index()
        };
        e.packets[d].fetch_add(1, Ordering::Relaxed);
        e.bytes[d].fetch_add(u64::from(bytes), Ordering::Relaxed);
        if matches!(outcome, Tracked::Ok | Tracked::Reopened) {
            let now = tick(now_ns);
            // Written once per tick at most, so two workers carrying the
            // two directions do not bounce the line on every packet.
            if e.last_seen.load(Ordering::Relaxed) != now {
                e.last_seen.store(now, Ordering::Relaxed);
            }
        }
        outcome
    }

    #[inline]
    pub fn verdict(&self, id: FlowId) -> Option<Verdict> {
        Verdict::unpack(
            self.table.entries[id.0 as usize]
                .verdict
                .load(Ordering::Relaxed),
        )
    }

    /// Records a policy decision (e.g. after re-evaluating a flow whose
    /// verdict predates the current policy generation).
    #[inline]
    pub fn set_verdict(&self, id: FlowId, verdict: Option<Verdict>) {
        self.table.entries[id.0 as usize]
            .verdict
            .store(Verdict::pack(verdict), Ordering::Relaxed);
    }

    /// Forwarding for packets going in `hit.dir`.
    #[inline]
    pub fn forwarding(&self, hit: FlowHit) -> Option<u32> {
        decode_fwd(
            self.table.entries[hit.id.0 as usize].forward[hit.dir.index()].load(Ordering::Relaxed),
        )
    }

    /// Sets the forwarding for packets going in `hit.dir` (`u32::MAX` is
    /// not representable and reads back as `None`).
    #[inline]
    pub fn set_forwarding(&self, hit: FlowHit, forwarding: Option<u32>) {
        self.table.entries[hit.id.0 as usize].forward[hit.dir.index()]
            .store(encode_fwd(forwarding), Ordering::Relaxed);
    }

    /// A copy of a live flow.
    pub fn info(&self, id: FlowId, now_ns: u64) -> Option<FlowInfo> {
        self.table.info(id, now_ns)
    }
}

impl FlowTable {
    /// A copy of entry `id` if it is live. Callers hold a handle or the
    /// housekeeping lock, so the entry is not reused while it is read.
    fn info(&self, id: FlowId, now_ns: u64) -> Option<FlowInfo> {
        let e = self.entries.get(id.0 as usize)?;
        let s = StateWord(e.state.load(Ordering::Acquire));
        if !s.is_live() {
            return None;
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let idle = idle_ticks(tick(now_ns), e.last_seen.load(Ordering::Relaxed));
        Some(FlowInfo {
            id,
            key: e.key(s.orig_high()),
            status: s.status(),
            verdict: Verdict::unpack(e.verdict.load(Ordering::Relaxed)),
            forwarding: [0, 1].map(|d| decode_fwd(e.forward[d].load(Ordering::Relaxed))),
            packets: [load(&e.packets[0]), load(&e.packets[1])],
            bytes: [load(&e.bytes[0]), load(&e.bytes[1])],
            idle_ns: ticks_to_ns(idle),
        })
    }
}
