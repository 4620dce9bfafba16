//! Hash buckets: one 64-byte cache line holding seven `(tag, entry index)`
//! ways and a control word, so a lookup reads one line to find its
//! candidate entry.
//!
//! A way is one `AtomicU64`: the key's 32-bit tag (never 0) above the entry
//! index, 0 when empty, so a reader always sees a whole pair. The control
//! word holds the bucket's insert lock (taken only by inserters and the
//! sweep, never by lookups) and the count of keys whose primary bucket this
//! is but which live in their alternative bucket: while it is 0 a lookup
//! that misses here is a miss without reading a second line.

use std::sync::atomic::{AtomicU64, Ordering};

/// Ways per bucket.
pub(super) const WAYS: usize = 7;

/// One bucket line.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(super) struct Bucket {
    ctl: AtomicU64,
    ways: [AtomicU64; WAYS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

const LOCK: u64 = 1 << 63;
const OVERFLOW: u64 = u32::MAX as u64;

/// Spins before a waiting inserter starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1 << 10;

#[inline(always)]
pub(super) const fn way(tag: u32, index: u32) -> u64 {
    ((tag as u64) << 32) | index as u64
}

#[inline(always)]
pub(super) const fn way_tag(w: u64) -> u32 {
    (w >> 32) as u32
}

#[inline(always)]
pub(super) const fn way_index(w: u64) -> u32 {
    w as u32
}

impl Bucket {
    /// The way at `i` (Acquire: the entry it names is initialised).
    #[inline(always)]
    pub fn way(&self, i: usize) -> u64 {
        self.ways[i].load(Ordering::Acquire)
    }

    /// Keys homed here that overflowed to their alternative bucket.
    #[inline(always)]
    pub fn overflow(&self) -> u32 {
        (self.ctl.load(Ordering::Acquire) & OVERFLOW) as u32
    }

    /// The first way whose tag is `tag`, starting at `from`.
    #[inline(always)]
    pub fn find_tag(&self, tag: u32, from: usize) -> Option<(usize, u32)> {
        (from..WAYS).find_map(|i| {
            let w = self.way(i);
            (way_tag(w) == tag).then_some((i, way_index(w)))
        })
    }

    /// Whether some way holds exactly `w`.
    pub fn holds(&self, w: u64) -> bool {
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
        (prev & LOCK == 0).then_some(BucketGuard { bucket: self })
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
pub(super) fn claim(b: &Bucket, w: u64) -> bool {
    debug_assert_ne!(way_tag(w), 0);
    b.ways.iter().any(|slot| {
        slot.load(Ordering::Relaxed) == 0
            && slot
                .compare_exchange(0, w, Ordering::Release, Ordering::Relaxed)
                .is_ok()
    })
}

/// Empties the way of `b` that holds `w`; false when none does. Callers
/// hold the lock of the entry's primary bucket, which may not be `b`.
pub(super) fn unpublish(b: &Bucket, w: u64) -> bool {
    b.ways.iter().any(|slot| {
        slot.compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ways_claim_find_and_unpublish() {
        let b = Bucket::default();
        for i in 0..WAYS as u32 {
            assert!(claim(&b, way(10 + i, i)));
        }
        assert!(!claim(&b, way(99, 99)), "full");
        assert_eq!(b.occupied(), WAYS);
        assert_eq!(b.find_tag(12, 0), Some((2, 2)));
        assert_eq!(b.find_tag(12, 3), None);
        assert!(unpublish(&b, way(12, 2)));
        assert!(!unpublish(&b, way(12, 2)));
        assert_eq!(b.find_tag(12, 0), None);
        assert!(claim(&b, way(7, 42)));
        assert_eq!(b.find_tag(7, 0), Some((2, 42)));
    }

    #[test]
    fn lock_excludes_and_overflow_counts() {
        let b = Bucket::default();
        {
            let g = b.lock();
            assert!(b.try_lock().is_none());
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
        let counter = AtomicU64::new(0);
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
