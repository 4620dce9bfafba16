//! The published, immutable classifier and its lookups.
//!
//! A [`Classifier`] holds, per address family, the tuple space of every
//! row and, once compiled, the forest with its stale bitmap and delta
//! tuple space: a few `Arc`s, so cloning it is a few reference-count
//! increments. Workers hold one per endpoint and direction inside their
//! table snapshot and call [`Classifier::classify_batch`] once per vector
//! with the keys of the packets that missed the flow table.
//!
//! The batch lookup walks the forest's trees level by level over all keys
//! of the batch, then lets the delta improve on what they found; without a
//! forest it walks the tables in priority order, each table over all
//! still-undecided keys of the batch: the masks stay in registers, the
//! probes of different keys are independent loads the core overlaps, and a
//! key drops out of the batch as soon as no later table can beat the rule
//! it matched.

use std::fmt;
use std::sync::Arc;

use super::family::Family;
use super::rule::{Hit, PacketKey, Priority};
use super::table::{Table, NO_MATCH};
use super::tree::Forest;

/// Keys classified together; bounds the stack arrays of a batch.
const CHUNK: usize = 64;

/// One address family's tables, sorted by their best priority.
#[derive(Debug, Clone)]
pub struct Space<A> {
    pub(crate) tables: Vec<Table<A>>,
}

impl<A> Default for Space<A> {
    fn default() -> Self {
        Space { tables: Vec::new() }
    }
}

impl<A: Family> Space<A> {
    /// Improves the verdicts of up to [`CHUNK`] keys: `out[i]` becomes
    /// the best row below `best[i]` (which it lowers), if there is one.
    #[inline]
    fn classify_chunk(&self, keys: &[PacketKey<A>], best: &mut [u32], out: &mut [Option<Hit>]) {
        debug_assert!(keys.len() <= CHUNK && keys.len() == out.len() && best.len() == out.len());
        let mut active = [0u8; CHUNK];
        for (i, a) in active.iter_mut().enumerate().take(keys.len()) {
            *a = i as u8;
        }
        let mut live = keys.len();
        for t in &self.tables {
            // Keep the keys this table can still improve; the tables after
            // it have worse best priorities, so the others are decided.
            let mut kept = 0;
            for j in 0..live {
                let i = active[j];
                active[kept] = i;
                kept += usize::from(best[usize::from(i)] > t.min_prio);
            }
            live = kept;
            if live == 0 {
                break;
            }
            for &i in &active[..live] {
                let i = usize::from(i);
                if let Some(r) = t.probe(&keys[i], 0, best[i]) {
                    best[i] = r.prio;
                    out[i] = Some(r.hit());
                }
            }
        }
    }

    /// The best row for `key` with a priority in `from..best`.
    fn classify_from(&self, key: &PacketKey<A>, from: u32, mut best: u32) -> Option<Hit> {
        let mut hit = None;
        for t in &self.tables {
            if t.min_prio >= best {
                break;
            }
            if let Some(r) = t.probe(key, from, best) {
                best = r.prio;
                hit = Some(r.hit());
            }
        }
        hit
    }

    fn rows(&self) -> usize {
        self.tables.iter().map(|t| t.len).sum()
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.tables.capacity() * std::mem::size_of::<Table<A>>()
            + self.tables.iter().map(Table::memory_bytes).sum::<usize>()
    }
}

impl<A: Family> Compiled<A> {
    fn memory_bytes(&self) -> usize {
        self.forest.memory_bytes() + self.stale.bits.len() * 8 + self.delta.memory_bytes()
    }
}

/// A bitmap of the rows of a forest (by origin) removed since it was
/// built.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stale {
    bits: Vec<u64>,
    count: usize,
}

impl Stale {
    pub fn new(rows: usize) -> Self {
        Stale {
            bits: vec![0; rows.div_ceil(64)],
            count: 0,
        }
    }

    #[inline(always)]
    pub fn contains(&self, origin: u32) -> bool {
        let o = origin as usize;
        self.bits[o / 64] & (1 << (o % 64)) != 0
    }

    /// Marks or clears a row; false if it already was so.
    pub fn set(&mut self, origin: u32, stale: bool) -> bool {
        let o = origin as usize;
        let bit = 1 << (o % 64);
        let word = &mut self.bits[o / 64];
        if (*word & bit != 0) == stale {
            return false;
        }
        *word ^= bit;
        if stale {
            self.count += 1;
        } else {
            self.count -= 1;
        }
        true
    }

    pub fn count(&self) -> usize {
        self.count
    }
}

/// A compiled forest and what changed since it was built.
#[derive(Debug, Clone)]
pub(crate) struct Compiled<A> {
    pub forest: Arc<Forest<A>>,
    /// Rows of the forest since removed.
    pub stale: Arc<Stale>,
    /// Rows added since (a tuple space of its own, usually empty).
    pub delta: Arc<Space<A>>,
}

/// One family's half of a classifier.
#[derive(Debug, Clone)]
pub struct Half<A> {
    /// Every row: the whole answer while nothing is compiled, and the
    /// answer for a key whose compiled match has since been removed.
    pub(crate) space: Arc<Space<A>>,
    pub(crate) compiled: Option<Compiled<A>>,
}

impl<A> Default for Half<A> {
    fn default() -> Self {
        Half {
            space: Arc::default(),
            compiled: None,
        }
    }
}

impl<A: Family> Half<A> {
    /// Classifies up to [`CHUNK`] keys: through the forest and the rows
    /// added since it was built, or the tuple space alone.
    #[inline]
    fn classify_chunk(&self, keys: &[PacketKey<A>], out: &mut [Option<Hit>]) {
        let n = keys.len();
        let mut best = [NO_MATCH; CHUNK];
        out.fill(None);
        let Some(c) = &self.compiled else {
            self.space.classify_chunk(keys, &mut best[..n], out);
            return;
        };
        let mut found = [None; CHUNK];
        c.forest.lookup_batch(keys, &mut best[..n], &mut found);
        let mut stale = 0u64;
        for (i, (o, f)) in out.iter_mut().zip(&found).enumerate() {
            if let Some(f) = f {
                let f = c.forest.row(*f);
                *o = Some(f.row.hit());
                if c.stale.count() > 0 && c.stale.contains(f.origin) {
                    stale |= 1 << i;
                }
            }
        }
        if !c.delta.tables.is_empty() {
            c.delta.classify_chunk(keys, &mut best[..n], out);
        }
        // A removed row decided: the next best may be anywhere.
        while stale != 0 {
            let i = stale.trailing_zeros() as usize;
            out[i] = self.space.classify_from(&keys[i], 0, NO_MATCH);
            stale &= stale - 1;
        }
    }

    fn classify(&self, key: &PacketKey<A>) -> Option<Hit> {
        let Some(c) = &self.compiled else {
            return self.space.classify_from(key, 0, NO_MATCH);
        };
        let mut best = NO_MATCH;
        let mut hit = None;
        if let Some(f) = c.forest.lookup(key, NO_MATCH) {
            if c.stale.count() > 0 && c.stale.contains(f.origin) {
                return self.space.classify_from(key, 0, NO_MATCH);
            }
            best = f.row.prio;
            hit = Some(f.row.hit());
        }
        c.delta.classify_from(key, 0, best).or(hit)
    }
}

/// An immutable snapshot of one endpoint's rules for one direction.
/// Cheap to clone; shares every unchanged part with older and newer
/// snapshots (see the [module docs](super)).
#[derive(Clone, Default)]
pub struct Classifier {
    pub(crate) v4: Half<u32>,
    pub(crate) v6: Half<u128>,
}

/// Sizes of a classifier, for counters and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassifierStats {
    pub tables4: usize,
    pub tables6: usize,
    /// Compiled rows (a rule with several prefixes per side is several
    /// rows; a rule matching both families is a row in each).
    pub rows4: usize,
    pub rows6: usize,
    /// Heap and inline bytes of the lookup structure, shared parts counted
    /// in full.
    pub memory_bytes: usize,
    /// Decision trees compiled (both families; 0 while the tuple space
    /// answers alone).
    pub trees: usize,
    /// Rows changed since the trees were built: added (answered by a small
    /// tuple space beside them) and removed.
    pub rows_added: usize,
    pub rows_removed: usize,
}

impl Classifier {
    /// The first matching rule for every key: `out[i]` is the verdict for
    /// `keys[i]`, `None` if no rule matches. No allocation, no lock.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn classify_batch<A: Family>(&self, keys: &[PacketKey<A>], out: &mut [Option<Hit>]) {
        assert_eq!(keys.len(), out.len(), "one verdict per key");
        let half = A::half(self);
        for (keys, out) in keys.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            half.classify_chunk(keys, out);
        }
    }

    /// The first matching rule for one key.
    pub fn classify<A: Family>(&self, key: &PacketKey<A>) -> Option<Hit> {
        A::half(self).classify(key)
    }

    /// The first matching rule after priority `after`: how a caller goes on
    /// past a [`Log`](super::Action::Log) rule (after its priority) or a
    /// [`Pass`](super::Action::Pass) rule (after the last priority of its
    /// tier).
    pub fn classify_after<A: Family>(&self, key: &PacketKey<A>, after: Priority) -> Option<Hit> {
        let from = after.0.checked_add(1)?;
        A::half(self).space.classify_from(key, from, NO_MATCH)
    }

    pub fn stats(&self) -> ClassifierStats {
        let c4 = self.v4.compiled.as_ref();
        let c6 = self.v6.compiled.as_ref();
        let compiled = |f4: fn(&Compiled<u32>) -> usize, f6: fn(&Compiled<u128>) -> usize| {
            c4.map_or(0, f4) + c6.map_or(0, f6)
        };
        ClassifierStats {
            tables4: self.v4.space.tables.len(),
            tables6: self.v6.space.tables.len(),
            rows4: self.v4.space.rows(),
            rows6: self.v6.space.rows(),
            memory_bytes: std::mem::size_of::<Self>()
                + self.v4.space.memory_bytes()
                + self.v6.space.memory_bytes()
                + compiled(Compiled::memory_bytes, Compiled::memory_bytes),
            trees: compiled(|c| c.forest.trees().len(), |c| c.forest.trees().len()),
            rows_added: compiled(|c| c.delta.rows(), |c| c.delta.rows()),
            rows_removed: compiled(|c| c.stale.count(), |c| c.stale.count()),
        }
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Classifier").field(&self.stats()).finish()
    }
}
