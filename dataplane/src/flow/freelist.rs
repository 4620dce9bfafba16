//! Lock-free lists of entry indices: the free list inserters allocate from
//! and the retired list inserters hand evicted entries to the sweep by.
//!
//! Both are intrusive stacks linked through one `u32` in each entry (an
//! entry is on at most one list at a time, and never while it is live). The free list pops from many threads
//! at once, so its head carries a 32-bit version bumped by every change
//! (no ABA); the retired list is only ever emptied whole, which needs none.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::Padded;

/// Link value meaning "end of list" (links store index + 1).
const END: u32 = 0;

/// Where the link of each entry lives.
pub(super) trait Links {
    fn link(&self, index: u32) -> &AtomicU32;
}

impl Links for [AtomicU32] {
    fn link(&self, index: u32) -> &AtomicU32 {
        &self[index as usize]
    }
}

/// The heads of the free and retired lists of one table.
#[derive(Debug)]
pub(super) struct IndexLists {
    /// Version (high 32 bits) and first free index + 1 (low 32 bits).
    free: Padded<AtomicU64>,
    /// First retired index + 1.
    retired: Padded<AtomicU32>,
}

impl IndexLists {
    /// Lists for `n` entries linked through `links`, all of them free,
    /// lowest index first.
    pub fn new(n: u32, links: &(impl Links + ?Sized)) -> Self {
        for i in 0..n {
            links
                .link(i)
                .store(if i + 1 < n { i + 2 } else { END }, Ordering::Relaxed);
        }
        IndexLists {
            free: Padded(AtomicU64::new(if n > 0 { 1 } else { 0 })),
            retired: Padded(AtomicU32::new(END)),
        }
    }

    /// Takes a free index.
    #[inline]
    pub fn pop_free(&self, links: &(impl Links + ?Sized)) -> Option<u32> {
        let mut head = self.free.0.load(Ordering::Acquire);
        loop {
            let first = head as u32;
            if first == END {
                return None;
            }
            // If another thread pops `first` meanwhile and reuses its link,
            // the version makes the compare-and-swap below fail.
            let next = links.link(first - 1).load(Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            match self
                .free
                .0
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Some(first - 1),
                Err(h) => head = h,
            }
        }
    }

    /// Returns indices to the free list (one compare-and-swap for all).
    pub fn push_free(&self, links: &(impl Links + ?Sized), indices: &[u32]) {
        let Some((&first, rest)) = indices.split_first() else {
            return;
        };
        let mut last = first;
        for &i in rest {
            links.link(last).store(i + 1, Ordering::Relaxed);
            last = i;
        }
        let mut head = self.free.0.load(Ordering::Relaxed);
        loop {
            links.link(last).store(head as u32, Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(first + 1);
            match self
                .free
                .0
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Hands an unlinked entry to the sweep.
    pub fn push_retired(&self, links: &(impl Links + ?Sized), index: u32) {
        let mut head = self.retired.0.load(Ordering::Relaxed);
        loop {
            links.link(index).store(head, Ordering::Relaxed);
            match self.retired.0.compare_exchange_weak(
                head,
                index + 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Entries on the free list; only meaningful while nobody pops or pushes.
    #[cfg(test)]
    pub fn free_len(&self, links: &(impl Links + ?Sized)) -> usize {
        let mut n = 0;
        let mut next = self.free.0.load(Ordering::Acquire) as u32;
        while next != END {
            n += 1;
            next = links.link(next - 1).load(Ordering::Relaxed);
        }
        n
    }

    /// Empties the retired list into `out`.
    pub fn take_retired(&self, links: &(impl Links + ?Sized), out: &mut Vec<u32>) {
        let mut next = self.retired.0.swap(END, Ordering::Acquire);
        while next != END {
            out.push(next - 1);
            next = links.link(next - 1).load(Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn links(n: u32) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn pops_every_index_once_then_none() {
        let k = links(5);
        let k = &k[..];
        let l = IndexLists::new(5, k);
        assert_eq!(l.free_len(k), 5);
        let got: Vec<u32> = std::iter::from_fn(|| l.pop_free(k)).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        l.push_free(k, &[3, 1]);
        assert_eq!(l.pop_free(k), Some(3));
        assert_eq!(l.pop_free(k), Some(1));
        assert_eq!(l.pop_free(k), None);
        assert_eq!(IndexLists::new(0, k).pop_free(k), None);
    }

    #[test]
    fn retired_list_takes_all() {
        let k = links(4);
        let k = &k[..];
        let l = IndexLists::new(4, k);
        while l.pop_free(k).is_some() {}
        l.push_retired(k, 2);
        l.push_retired(k, 0);
        let mut out = Vec::new();
        l.take_retired(k, &mut out);
        assert_eq!(out, [0, 2]);
        out.clear();
        l.take_retired(k, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn concurrent_pop_push_loses_and_duplicates_nothing() {
        const N: u32 = 1024;
        let k = links(N);
        let k = &k[..];
        let l = IndexLists::new(N, k);
        let held: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        for round in 0..20_000u32 {
                            if round % 3 == 2 && !mine.is_empty() {
                                let n = mine.len().min(3);
                                let back: Vec<u32> = mine.drain(..n).collect();
                                l.push_free(k, &back);
                            } else if let Some(i) = l.pop_free(k) {
                                mine.push(i);
                            }
                        }
                        mine
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut seen = HashSet::new();
        for i in held
            .into_iter()
            .flatten()
            .chain(std::iter::from_fn(|| l.pop_free(k)))
        {
            assert!(seen.insert(i), "index {i} handed out twice");
        }
        assert_eq!(seen.len(), N as usize);
    }
}
