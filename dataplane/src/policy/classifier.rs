//! The published, immutable classifier and its lookups.
//!
//! A [`Classifier`] is two `Arc`s (one tuple space per address family);
//! cloning it is two reference-count increments. Workers hold one per
//! endpoint and direction inside their table snapshot and call
//! [`Classifier::classify_batch`] once per vector with the keys of the
//! packets that missed the flow table.
//!
//! The batch lookup walks the tables in priority order, each table over all
//! still-undecided keys of the batch: the masks stay in registers, the
//! probes of different keys are independent loads the core overlaps, and a
//! key drops out of the batch as soon as no later table can beat the rule
//! it matched.

use std::fmt;
use std::sync::Arc;

use super::family::Family;
use super::rule::{Hit, PacketKey, Priority};
use super::table::{Table, NO_MATCH};

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
    /// Classifies up to [`CHUNK`] keys.
    #[inline]
    fn classify_chunk(&self, keys: &[PacketKey<A>], out: &mut [Option<Hit>]) {
        debug_assert!(keys.len() <= CHUNK && keys.len() == out.len());
        let mut best = [NO_MATCH; CHUNK];
        let mut active = [0u8; CHUNK];
        for (i, a) in active.iter_mut().enumerate().take(keys.len()) {
            *a = i as u8;
        }
        let mut live = keys.len();
        out.fill(None);
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

    fn classify_from(&self, key: &PacketKey<A>, from: u32) -> Option<Hit> {
        let mut best = NO_MATCH;
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

/// An immutable snapshot of one endpoint's rules for one direction.
/// Cheap to clone; shares every unchanged part with older and newer
/// snapshots (see the [module docs](super)).
#[derive(Clone, Default)]
pub struct Classifier {
    pub(crate) v4: Arc<Space<u32>>,
    pub(crate) v6: Arc<Space<u128>>,
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
}

impl Classifier {
    /// The first matching rule for every key: `out[i]` is the verdict for
    /// `keys[i]`, `None` if no rule matches. No allocation, no lock.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn classify_batch<A: Family>(&self, keys: &[PacketKey<A>], out: &mut [Option<Hit>]) {
        assert_eq!(keys.len(), out.len(), "one verdict per key");
        let space = A::space(self);
        for (keys, out) in keys.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            space.classify_chunk(keys, out);
        }
    }

    /// The first matching rule for one key.
    pub fn classify<A: Family>(&self, key: &PacketKey<A>) -> Option<Hit> {
        A::space(self).classify_from(key, 0)
    }

    /// The first matching rule after priority `after`: how a caller goes on
    /// past a [`Log`](super::Action::Log) rule (after its priority) or a
    /// [`Pass`](super::Action::Pass) rule (after the last priority of its
    /// tier).
    pub fn classify_after<A: Family>(&self, key: &PacketKey<A>, after: Priority) -> Option<Hit> {
        let from = after.0.checked_add(1)?;
        A::space(self).classify_from(key, from)
    }

    pub fn stats(&self) -> ClassifierStats {
        ClassifierStats {
            tables4: self.v4.tables.len(),
            tables6: self.v6.tables.len(),
            rows4: self.v4.rows(),
            rows6: self.v6.rows(),
            memory_bytes: std::mem::size_of::<Self>()
                + self.v4.memory_bytes()
                + self.v6.memory_bytes(),
        }
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Classifier").field(&self.stats()).finish()
    }
}
