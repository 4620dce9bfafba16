//! Hash buckets: one 64-byte cache line holding fifteen 32-bit ways and a
//! control word, so a lookup reads one line to find its candidate entry,
//! and the whole index of a million flows is ~8 MB — small enough to stay
//! largely in the last-level cache while the entries come from DRAM.
//!
//! A way packs the key's tag (the high bits) above the entry index (the
//! low bits, as many as the capacity needs: [`WayFormat`]); 0 is empty, and
//! a tag is never 0, so a reader always sees a whole pair. The control
//! word holds the bucket's insert lock (taken only by inserters and the
//! sweep, never by lookups) and the count of keys whose primary bucket this
//! is but which live in their alternative bucket: while it is 0 a lookup
//! that misses here is a miss without reading a second line.

use std::sync::atomic::{AtomicU32, Ordering};

/// Ways per bucket.
pub(super) const WAYS: usize = 15;

/// One bucket line.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(super) struct Bucket {
    ctl: AtomicU32,
    ways: [AtomicU32; WAYS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

const LOCK: u32 = 1 << 31;
const OVERFLOW: u32 = LOCK - 1;

/// Spins before a waiting inserter starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1 << 10;

/// How a way splits into tag and entry index: the index takes the bits the
/// capacity needs, the tag the rest (11 bits for a million flows, so a
/// probe meets a false candidate for ~0.5 % of lookups; the key compare
/// catches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WayFormat {
    index_bits: u32,
}

impl WayFormat {
    /// The format for entry indices below `capacity` (at most 2^28, which
    /// leaves 4 tag bits).
    pub const fn new(capacity: u32) -> Self {
        let bits = 32 - (capacity.saturating_sub(1)).leading_zeros();
        WayFormat {
            index_bits: if bits == 0 { 1 } else { bits },
        }
    }

    /// A non-zero tag from 32 hash bits, in the way's tag position.
    #[inline(always)]
    pub const fn tag(self, hash: u32) -> u32 {
        let t = hash & !self.index_mask();
        if t == 0 {
            1 << self.index_bits
        } else {
            t
        }
    }

    #[inline(always)]
    const fn index_mask(self) -> u32 {
        (1 << self.index_bits) - 1
    }

    #[inline(always)]
    pub const fn way(self, tag: u32, index: u32) -> u32 {
        tag | index
    }

    #[inline(always)]
    pub const fn index(self, way: u32) -> u32 {
        way & self.index_mask()
    }

    #[inline(always)]
    pub const fn tag_of(self, way: u32) -> u32 {
        way & !self.index_mask()
    }
}

impl Bucket {
    /// The way at `i` (Acquire: the entry it names is initialised).
    #[inline(always)]
    pub fn way(&self, i: usize) -> u32 {
        self.ways[i].load(Ordering::Acquire)
    }

    /// Keys homed here that overflowed to their alternative bucket.
    #[inline(always)]
    pub fn overflow(&self) -> u32 {
        self.ctl.load(Ordering::Acquire) & OVERFLOW
    }

    /// The first way tagged `tag`, starting at `from`: its position and
    /// entry index.
    #[inline(always)]
    pub fn find_tag(&self, f: WayFormat, tag: u32, from: usize) -> Option<(usize, u32)> {
        (from..WAYS).find_map(|i| {
            let w = self.way(i);
            (f.tag_of(w) == tag).then(|| (i, f.index(w)))
        })
    }

    /// The entry index in the first way tagged `tag`, scanning every way
    /// without a data-dependent branch (the vector lookup's probe). A way
    /// changed meanwhile yields a wrong candidate, which the key compare
    /// rejects.
    #[inline(always)]
    pub fn first_tagged(&self, f: WayFormat, tag: u32) -> Option<u32> {
        let tag_bits = !f.index_mask();
        let mut mask = 0u32;
        for i in 0..WAYS {
            mask |= u32::from((self.way(i) ^ tag) & tag_bits == 0) << i;
        }
        (mask != 0).then(|| f.index(self.way(mask.trailing_zeros() as usize % WAYS)))
    }

    /// Whether some way holds exactly `w`.
    pub fn holds(&self, w: u32) -> bool {
        (0..WAYS).any(|i| self.way(i) == w)
    }

    /// Occupied ways.
    pub fn occupied(&self) -> usize {
        (0..WAYS).filter(|&i| self.way(i) != 0).count()
    }

    /// Takes the insert lock, spinning (then yielding) while another
    /// inserter or the sweep holds it.
    pub fn lock(&self) -> BucketGuard<'_> {
        let mut spins = 0u32;
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            while self.ctl.load(Ordering::Relaxed) & LOCK != 0 {
                spins += 1;
                if spins < SPINS_BEFORE_YIELD {
                    std::hint::spin_loop();
                } else {
                    // The holder was preempted; stop burning its core.
                    std::thread::yield_now();
                }
            }
        }
    }

    pub fn try_lock(&self) -> Option<BucketGuard<'_>> {
        let prev = self.ctl.fetch_or(LOCK, Ordering::Acquire);
        // `then`, not `then_some`: a guard built while the lock is taken
        // would be dropped at once, releasing the holder's lock.
        (prev & LOCK == 0).then(|| BucketGuard { bucket: self })
    }
}

/// The insert lock of one bucket; released on drop.
#[derive(Debug)]
pub(super) struct BucketGuard<'a> {
    bucket: &'a Bucket,
}

impl BucketGuard<'_> {
    /// Notes that a key homed here is about to go to its alternative
    /// bucket (before it is published there, so a lookup never skips it).
    pub fn add_overflow(&self) {
        self.bucket.ctl.fetch_add(1, Ordering::Release);
    }

    /// Undoes [`add_overflow`](Self::add_overflow) once the key left its
    /// alternative bucket (after it was unpublished there).
    pub fn remove_overflow(&self) {
        let prev = self.bucket.ctl.fetch_sub(1, Ordering::Release);
        debug_assert!(prev & OVERFLOW > 0, "overflow count underflow");
    }
}

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        self.bucket.ctl.fetch_and(!LOCK, Ordering::Release);
    }
}

/// Claims an empty way of `b` for `w`; false when the bucket is full.
/// Callers hold the lock of the key's primary bucket, which may not be
/// `b`: inserters of keys homed elsewhere may claim ways of `b` at the same
/// time (it is their alternative), hence the compare-and-swap.
pub(super) fn claim(b: &Bucket, w: u32) -> bool {
    debug_assert_ne!(w, 0);
    b.ways.iter().any(|slot| {
        slot.load(Ordering::Relaxed) == 0
            && slot
                .compare_exchange(0, w, Ordering::Release, Ordering::Relaxed)
                .is_ok()
    })
}

/// Empties the way of `b` that holds `w`; false when none does. Callers
/// hold the lock of the entry's primary bucket, which may not be `b`.
pub(super) fn unpublish(b: &Bucket, w: u32) -> bool {
    b.ways.iter().any(|slot| {
        slot.compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: WayFormat = WayFormat::new(1 << 20);

    #[test]
    fn way_format_splits_tag_and_index() {
        assert_eq!(WayFormat::new(1), WayFormat { index_bits: 1 });
        assert_eq!(WayFormat::new(1 << 20).index_bits, 20);
        assert_eq!(WayFormat::new((1 << 20) + 1).index_bits, 21);
        let t = F.tag(0xabcd_ef12);
        assert_eq!(t, 0xabc0_0000);
        assert_ne!(F.tag(0x000f_ffff), 0, "a tag is never 0");
        let w = F.way(t, 0x1_2345);
        assert_eq!((F.tag_of(w), F.index(w)), (t, 0x1_2345));
    }

    #[test]
    fn ways_claim_find_and_unpublish() {
        let b = Bucket::default();
        let tag = |i: u32| F.tag((i + 1) << 24);
        for i in 0..WAYS as u32 {
            assert!(claim(&b, F.way(tag(i), i)));
        }
        assert!(!claim(&b, F.way(tag(99), 99)), "full");
        assert_eq!(b.occupied(), WAYS);
        assert_eq!(b.find_tag(F, tag(2), 0), Some((2, 2)));
        assert_eq!(b.find_tag(F, tag(2), 3), None);
        assert_eq!(b.first_tagged(F, tag(9)), Some(9));
        assert!(unpublish(&b, F.way(tag(2), 2)));
        assert!(!unpublish(&b, F.way(tag(2), 2)));
        assert_eq!(b.find_tag(F, tag(2), 0), None);
        assert_eq!(b.first_tagged(F, tag(2)), None);
        assert!(claim(&b, F.way(tag(2), 42)));
        assert_eq!(b.find_tag(F, tag(2), 0), Some((2, 42)));
        assert!(b.holds(F.way(tag(2), 42)));
    }

    #[test]
    fn lock_excludes_and_overflow_counts() {
        let b = Bucket::default();
        {
            let g = b.lock();
            assert!(b.try_lock().is_none());
            assert!(
                b.try_lock().is_none(),
                "a failed try_lock leaves the lock held"
            );
            g.add_overflow();
            g.add_overflow();
            assert_eq!(b.overflow(), 2);
            g.remove_overflow();
        }
        assert_eq!(b.overflow(), 1);
        assert!(b.try_lock().is_some());
        assert_eq!(b.overflow(), 1);
    }

    #[test]
    fn lock_is_mutual_exclusion() {
        let b = Bucket::default();
        let counter = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let _g = b.lock();
                        // A non-atomic read-modify-write made safe by the lock.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), 40_000);
    }
}
