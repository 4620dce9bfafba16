//! Housekeeping, off the packet path: expiry of idle flows, eviction of the
//! longest-idle flows when the table is nearly full, and reclamation of
//! unlinked entries once no worker can still hold them.
//!
//! A sweep reads the entry array front to back (a sequential stream the
//! hardware prefetcher keeps ahead of), unlinking every flow idle past its
//! timeout. When more flows than the high watermark remain, the same pass
//! builds a histogram of idle times (not-assured and assured flows apart,
//! log-linear age classes) and a second pass evicts from the oldest class
//! down until the table is back at the low watermark — not-assured flows
//! first, as conntrack's early drop does. Unlinked entries wait in limbo,
//! tagged with the epoch, and return to the free list on a later sweep,
//! after every online worker has announced a quiescent point.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::state::{idle_ticks, tick, FlowTimeouts, StateWord, TimeoutTicks};
use super::table::{Entry, FlowTable};

/// Age classes: four per power of two of ticks.
const AGE_CLASSES: usize = 128;

/// Log-linear class of an age in ticks; grows with the age.
fn age_class(age: u32) -> usize {
    if age < 4 {
        return age as usize;
    }
    let e = 31 - age.leading_zeros();
    ((e << 2) | ((age >> (e - 2)) & 3)) as usize
}

/// Sweep state, behind the table's housekeeping mutex.
#[derive(Debug)]
pub(super) struct Housekeeping {
    timeouts: TimeoutTicks,
    /// Unlinked entries by the epoch they were unlinked in, oldest first.
    limbo: VecDeque<(u64, Vec<u32>)>,
}

impl Housekeeping {
    pub fn new(timeouts: &FlowTimeouts) -> Self {
        Housekeeping {
            timeouts: timeouts.ticks(),
            limbo: VecDeque::new(),
        }
    }
}

/// What one [`FlowTable::sweep`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Flows unlinked for being idle past their timeout.
    pub expired: u32,
    /// Flows unlinked to get under the watermark.
    pub evicted: u32,
    /// Entries returned to the free list.
    pub reclaimed: u32,
    /// Flows left.
    pub live: u32,
    /// Entries still waiting for quiescent points.
    pub limbo: u32,
}

/// Which flows the eviction pass takes: everything ranked before `rank`,
/// and `more` of those ranked exactly `rank`.
#[derive(Debug)]
struct EvictPlan {
    rank: usize,
    more: u32,
}

impl EvictPlan {
    /// Eviction order: not-assured before assured, then oldest first.
    fn rank(assured: bool, age: u32) -> usize {
        usize::from(assured) * AGE_CLASSES + (AGE_CLASSES - 1 - age_class(age))
    }

    /// The plan that takes `excess` flows out of a histogram by rank.
    fn new(hist: &[u32], mut excess: u32) -> EvictPlan {
        for (rank, &n) in hist.iter().enumerate() {
            if n >= excess {
                return EvictPlan { rank, more: excess };
            }
            excess -= n;
        }
        EvictPlan {
            rank: hist.len(),
            more: 0,
        }
    }

    fn take(&mut self, rank: usize) -> bool {
        if rank < self.rank {
            true
        } else if rank == self.rank && self.more > 0 {
            self.more -= 1;
            true
        } else {
            false
        }
    }
}

impl FlowTable {
    /// Expires, evicts and reclaims; called periodically (say every 100 ms
    /// to 1 s) by a housekeeping thread with the workers' clock. A flow
    /// outlives its timeout by up to one sweep period. Cost: one sequential
    /// read of the entry array (128 B per flow of capacity), plus the
    /// unlinks, plus a second read when evicting.
    pub fn sweep(&self, now_ns: u64) -> SweepReport {
        let mut hk = self.housekeeping();
        let now = tick(now_ns);
        let timeouts = hk.timeouts;
        let mut report = SweepReport::default();
        let mut unlinked = Vec::new();
        self.lists.take_retired(&*self.entries, &mut unlinked);

        let over = self.len() > self.evict_above;
        let mut hist = vec![0u32; if over { 2 * AGE_CLASSES } else { 0 }];
        let expired = |s: StateWord, e: &Entry| {
            idle_ticks(now, e.last_seen.load(Ordering::Relaxed)) > timeouts.of(s)
        };
        for (idx, e) in self.entries.iter().enumerate() {
            let s = StateWord(e.state.load(Ordering::Acquire));
            if !s.is_live() {
                continue;
            }
            if expired(s, e) {
                if self.retire(idx as u32, &expired) {
                    unlinked.push(idx as u32);
                    report.expired += 1;
                }
            } else if over {
                let age = idle_ticks(now, e.last_seen.load(Ordering::Relaxed));
                hist[EvictPlan::rank(s.assured(), age)] += 1;
            }
        }
        let live = self.len();
        if over && live > self.evict_above {
            let mut plan = EvictPlan::new(&hist, live - self.evict_to);
            for (idx, e) in self.entries.iter().enumerate() {
                let s = StateWord(e.state.load(Ordering::Acquire));
                if !s.is_live() {
                    continue;
                }
                let age = idle_ticks(now, e.last_seen.load(Ordering::Relaxed));
                if plan.take(EvictPlan::rank(s.assured(), age))
                    && self.retire(idx as u32, &|_, _| true)
                {
                    unlinked.push(idx as u32);
                    report.evicted += 1;
                }
            }
        }
        self.expired
            .fetch_add(u64::from(report.expired), Ordering::Relaxed);
        self.evicted
            .fetch_add(u64::from(report.evicted), Ordering::Relaxed);

        // Everything unlinked so far belongs to the epoch that ends here.
        let epoch = self.epochs.advance();
        if !unlinked.is_empty() {
            hk.limbo.push_back((epoch, unlinked));
        }
        let below = self.epochs.reclaimable_below();
        while hk.limbo.front().is_some_and(|(e, _)| *e < below) {
            let (_, batch) = hk.limbo.pop_front().expect("front checked");
            for &idx in &batch {
                // No thread can reach the entry any more.
                self.entries[idx as usize]
                    .state
                    .store(StateWord::FREE.0, Ordering::Relaxed);
            }
            self.lists.push_free(&*self.entries, &batch);
            report.reclaimed += batch.len() as u32;
        }
        report.limbo = hk.limbo.iter().map(|(_, b)| b.len() as u32).sum();
        report.live = self.len();
        self.limbo.store(report.limbo, Ordering::Relaxed);
        report
    }

    /// Replaces the timeouts; the next sweep applies them to every flow.
    pub fn set_timeouts(&self, timeouts: &FlowTimeouts) {
        self.housekeeping().timeouts = timeouts.ticks();
    }

    /// Unlinks live entry `idx` if `still` holds under its bucket lock.
    fn retire(&self, idx: u32, still: &impl Fn(StateWord, &Entry) -> bool) -> bool {
        // Only this thread reclaims, so the entry's key cannot change
        // while it is live.
        let h = self.hash(&self.entries[idx as usize].key(false));
        let guard = self.lock(&h);
        self.unlink(&guard, &h, idx, still)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_classes_grow_with_age() {
        let mut last = 0;
        for age in (0..100_000u32).chain([u32::MAX / 2, u32::MAX]) {
            let c = age_class(age);
            assert!(c >= last && c < AGE_CLASSES, "age {age}");
            last = c;
        }
        assert_eq!(age_class(7), 11);
        assert_eq!(age_class(8), 12);
    }

    #[test]
    fn plan_takes_oldest_not_assured_first() {
        let mut hist = vec![0u32; 2 * AGE_CLASSES];
        let old = EvictPlan::rank(false, 1000);
        let young = EvictPlan::rank(false, 10);
        let assured_old = EvictPlan::rank(true, 100_000);
        assert!(old < young && young < assured_old);
        hist[old] = 3;
        hist[young] = 5;
        hist[assured_old] = 10;
        let mut p = EvictPlan::new(&hist, 5);
        assert!(p.take(old) && p.take(old) && p.take(old));
        assert!(p.take(young) && p.take(young));
        assert!(!p.take(young));
        assert!(!p.take(assured_old));
        let mut p = EvictPlan::new(&hist, 100);
        assert!(p.take(assured_old));
    }
}
