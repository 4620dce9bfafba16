//! Epoch-based reclamation of flow entries, in its quiescent-state form
//! (QSBR, as VPP and DPDK's `rte_rcu_qsbr` do it).
//!
//! Every thread that reads the table registers a slot. A worker announces a
//! quiescent point once per poll loop — a moment it holds no flow reference
//! — by copying the global epoch into its slot (two plain moves on x86); a
//! worker about to sleep goes offline instead, so it never holds up
//! reclamation. The sweep unlinks entries, tags them with the current epoch
//! `e` and advances the epoch; the entries may be reused once every online
//! slot shows an epoch above `e`, since each of those workers has passed a
//! quiescent point after the unlink and so can neither hold nor find them.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// A slot nobody registered.
const UNUSED: u64 = u64::MAX;
/// A registered slot whose owner holds no references (asleep).
const OFFLINE: u64 = u64::MAX - 1;

/// One participant: its announced epoch and the insert counters its owner
/// alone writes, on a cache line of its own.
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct Participant {
    epoch: AtomicU64,
    pub inserts: AtomicU64,
    pub existing: AtomicU64,
    pub full: AtomicU64,
    pub bucket_evictions: AtomicU64,
}

impl Participant {
    fn new() -> Self {
        Participant {
            epoch: AtomicU64::new(UNUSED),
            inserts: AtomicU64::new(0),
            existing: AtomicU64::new(0),
            full: AtomicU64::new(0),
            bucket_evictions: AtomicU64::new(0),
        }
    }

    /// Adds one to a counter only its owner writes (no locked instruction).
    #[inline]
    pub fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// The global epoch and every participant's slot.
#[derive(Debug)]
pub(super) struct Epochs {
    global: AtomicU64,
    slots: Box<[Participant]>,
}

impl Epochs {
    pub fn new(max_participants: usize) -> Self {
        Epochs {
            global: AtomicU64::new(1),
            slots: (0..max_participants).map(|_| Participant::new()).collect(),
        }
    }

    pub fn slots(&self) -> &[Participant] {
        &self.slots
    }

    /// Claims a slot, online; `None` when all are taken.
    pub fn register(&self) -> Option<usize> {
        let i = self.slots.iter().position(|s| {
            s.epoch
                .compare_exchange(UNUSED, OFFLINE, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })?;
        self.online(i);
        Some(i)
    }

    /// Gives a slot back; its counters stay for the statistics.
    pub fn unregister(&self, i: usize) {
        self.slots[i].epoch.store(UNUSED, Ordering::Release);
    }

    /// Slot `i` holds no references from before this call.
    #[inline]
    pub fn quiescent(&self, i: usize) {
        // An online slot only moves forward, and the sweep only frees what
        // every slot has moved past: no store-load fence needed.
        let e = self.global.load(Ordering::Acquire);
        self.slots[i].epoch.store(e, Ordering::Release);
    }

    /// Slot `i` goes to sleep holding nothing.
    pub fn offline(&self, i: usize) {
        self.slots[i].epoch.store(OFFLINE, Ordering::Release);
    }

    /// Slot `i` wakes up and may read the table after this returns.
    pub fn online(&self, i: usize) {
        let e = self.global.load(Ordering::Acquire);
        self.slots[i].epoch.store(e, Ordering::Relaxed);
        // Pairs with the fence in `reclaimable_below`: either the sweep
        // sees this slot online, or this thread sees every unlink made
        // before the sweep looked.
        fence(Ordering::SeqCst);
    }

    /// Ends the current epoch and returns it: entries unlinked before this
    /// call are tagged with it.
    pub fn advance(&self) -> u64 {
        self.global.fetch_add(1, Ordering::AcqRel)
    }

    /// Entries tagged with an epoch below the returned one may be reused.
    pub fn reclaimable_below(&self) -> u64 {
        fence(Ordering::SeqCst);
        let global = self.global.load(Ordering::Acquire);
        self.slots
            .iter()
            .map(|s| s.epoch.load(Ordering::Acquire))
            .filter(|&e| e != UNUSED && e != OFFLINE)
            .fold(global, u64::min)
    }

    pub fn current(&self) -> u64 {
        self.global.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_online_slot_holds_back_reclamation_until_quiescent() {
        let ep = Epochs::new(2);
        let a = ep.register().unwrap();
        let b = ep.register().unwrap();
        assert_eq!(ep.register(), None);
        let tag = ep.advance(); // something unlinked in epoch `tag`
        assert!(
            ep.reclaimable_below() <= tag,
            "both slots predate the unlink"
        );
        ep.quiescent(a);
        assert!(ep.reclaimable_below() <= tag, "b still may hold it");
        ep.offline(b);
        assert!(ep.reclaimable_below() > tag);
        ep.online(b);
        assert!(ep.reclaimable_below() > tag, "b came back after the unlink");
        ep.unregister(a);
        ep.unregister(b);
        assert_eq!(ep.reclaimable_below(), ep.current());
        assert!(ep.register().is_some());
    }
}
